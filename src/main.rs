/// The binary's allocator is mimalloc, not glibc's malloc: under the 32-connection creation
/// load glibc's malloc/free were ~11% of serve's CPU (docs/perf/README.md). The library and
/// its tests keep the system allocator; only the binary (serve, the sandbox, the workers)
/// uses this one.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    pisgate::cli::main()
}
