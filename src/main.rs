fn main() -> std::process::ExitCode {
    pisgate::cli::main()
}
