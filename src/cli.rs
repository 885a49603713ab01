//! The command line: `serve`, `migrate`, `check`, `sandbox`, `openapi`, `keys ...`,
//! `ledger ...`, `merchant ...`. Each command loads only the settings it uses (`migrate` and `merchant`
//! the database, `ledger` the database and the ledger key, `keys` none), does one thing, and
//! reports failure as one clear line on stderr with a non-zero exit code (2 for bad
//! settings, 1 for anything else). Every argument says what it is for and, where one
//! exists, its environment variable. A key is printed once and never logged.

use crate::config::{Settings, SettingsError, Sources, ToolSettings};
use crate::ledger::crypto::TokenCipher;
use crate::{app, ledger, telemetry};
use anyhow::Context as _;
use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;
use std::process::ExitCode;
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(
    name = "pisgate",
    version,
    about = "PSD2 payment initiation for Nordea (single SCA)",
    after_help = "Settings: config/default.toml, then config/$PISGATE_ENV.toml, then PISGATE__SECTION__KEY \
                  environment variables (secrets also as *_FILE). Each command reads only the settings it uses."
)]
pub struct Cli {
    /// The folder holding default.toml and the environment files [default: ./config].
    #[arg(long, global = true, env = "PISGATE_CONFIG_DIR", value_name = "DIR")]
    pub config_dir: Option<std::path::PathBuf>,
    /// The environment file to layer over default.toml: config/NAME.toml (e.g. sandbox,
    /// production).
    #[arg(long = "env", global = true, env = "PISGATE_ENV", value_name = "NAME")]
    pub environment: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the merchant API (public listener, PISGATE__SERVER__LISTEN) and health, readiness
    /// and metrics (admin listener, PISGATE__ADMIN__LISTEN). Needs every setting.
    Serve {
        /// Apply pending database migrations before serving (as
        /// PISGATE__DATABASE__MIGRATE_ON_START=true does).
        #[arg(long)]
        migrate: bool,
    },
    /// Apply pending database migrations and exit. Needs only PISGATE__DATABASE__URL.
    Migrate,
    /// Check every setting, the key and certificate, the database, the clock and one harmless
    /// signed call to the bank; one line per check; exit 0 only when all are OK.
    Check {
        /// One JSON object instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Serve a bank simulator (for local runs and tests; never in production): Nordea
    /// (reads PISGATE__SANDBOX__*), the strict Berlin Group ASPSP (reads
    /// PISGATE__SANDBOX_BERLIN_GROUP__*), the strict SEB simulator (reads
    /// PISGATE__SANDBOX_SEB__*) or the strict OP (FAPI) simulator (reads
    /// PISGATE__SANDBOX_OP__*).
    Sandbox {
        /// Which bank protocol to simulate: nordea (the default), berlin-group, seb or op.
        #[arg(long, value_enum, default_value_t = SandboxProtocol::Nordea)]
        protocol: SandboxProtocol,
    },
    /// Print the OpenAPI document of the merchant API (as served at /openapi.json); refresh
    /// the committed copy with `cargo run -q -- openapi > openapi.json`. Needs no settings.
    Openapi,
    /// Make keys: signing key pairs, certificate requests, token and ledger keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The append-only payment ledger. Needs PISGATE__DATABASE__URL and the ledger key
    /// (PISGATE__LEDGER__KEY_FILE).
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
    /// Manage merchants and their API keys. Needs only PISGATE__DATABASE__URL.
    Merchant {
        #[command(subcommand)]
        command: MerchantCommand,
    },
    /// Manage the operators who sign in to the console (/console on the admin listener).
    /// Needs only PISGATE__DATABASE__URL.
    Operator {
        #[command(subcommand)]
        command: OperatorCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// List operators as JSON lines: id, email, created_at, disabled, locked (with until
    /// when), failed_attempts, last_sign_in_at (null if never). Never a password hash.
    List,
    /// Create an operator. The password is read from the first line of standard input (it
    /// is never an argument, so it stays out of shell history and process lists), at least
    /// 12 characters; only its Argon2id hash is stored.
    Create {
        /// The operator's email, their sign-in name (stored lower-cased).
        #[arg(long)]
        email: String,
    },
    /// Disable an operator: no sign-in, and every session of theirs ends at once. Audited.
    Disable {
        /// The operator's email, their sign-in name.
        #[arg(long)]
        email: String,
    },
    /// Enable a disabled operator again, with no lock and a fresh failure count. Audited.
    Enable {
        /// The operator's email, their sign-in name.
        #[arg(long)]
        email: String,
    },
    /// Set a new password, read from the first line of standard input like `create`; clears
    /// the lock and ends every session of theirs. Audited.
    ResetPassword {
        /// The operator's email, their sign-in name.
        #[arg(long)]
        email: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Write a new RSA key pair as PEM: DIR/private.pem (mode 0600) and DIR/public.pem.
    Generate {
        /// The folder to write the key pair to (created if missing). Point
        /// PISGATE__NORDEA__PRIVATE_KEY_FILE at DIR/private.pem; register DIR/public.pem with
        /// the bank.
        #[arg(long, value_name = "DIR")]
        out: std::path::PathBuf,
        /// RSA modulus size in bits (2048 or more).
        #[arg(long, default_value_t = 2048)]
        bits: usize,
    },
    /// Write a new RSA key (DIR/private.pem, mode 0600) and a PKCS#10 certificate signing
    /// request for it (DIR/request.csr) to send to a qualified trust service provider for the
    /// eIDAS QSealC.
    Csr {
        /// The folder to write the key and the request to (created if missing). The key is
        /// for PISGATE__NORDEA__PRIVATE_KEY_FILE, the certificate you get back for
        /// PISGATE__NORDEA__CERTIFICATE_FILE.
        #[arg(long, value_name = "DIR")]
        out: std::path::PathBuf,
        /// The certificate's subject, e.g. "CN=Shop Oy,O=Shop Oy,C=FI,2.5.4.97=PSDFI-FINFSA-1234567-8".
        #[arg(long)]
        subject: String,
        /// RSA modulus size in bits (2048 or more).
        #[arg(long, default_value_t = 2048)]
        bits: usize,
    },
    /// Write a throwaway test PKI for the Berlin Group simulator: DIR/ca.pem (for
    /// PISGATE__SANDBOX_BERLIN_GROUP__TPP_CA_FILE), DIR/tpp-key.pem (mode 0600) and
    /// DIR/tpp-cert.pem (a bank's PRIVATE_KEY_FILE and CERTIFICATE_FILE), and for the SEB
    /// simulator DIR/server-cert.pem and DIR/server-key.pem (its TLS server certificate, SAN
    /// localhost and 127.0.0.1, from the same CA). Local runs and tests only: never a real
    /// certificate.
    TestPki {
        /// The folder to write to (created if missing).
        #[arg(long, value_name = "DIR")]
        out: std::path::PathBuf,
    },
    /// Print a fresh token-encryption key (base64 of 32 random bytes), the value of
    /// PISGATE__TOKENS__ENCRYPTION_KEY (or the content of its _FILE).
    TokenKey,
    /// Print a fresh ledger key (base64 of 32 random bytes), the value of PISGATE__LEDGER__KEY
    /// (or the content of its _FILE).
    LedgerKey,
}

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Recompute every payment's chain, cross-check payments' heads and statuses and prove
    /// the ledger extends the last checkpoint; exits 1 naming the first problem.
    Verify {
        /// A checkpoint the auditor recorded (`ledger checkpoint` prints it and logs it):
        /// `ID` or `ID:MAC` (hex). It must still be there, with that MAC, and no older than
        /// the newest one: deleting checkpoints (and with them what they proved) then fails.
        #[arg(long, value_name = "ID[:MAC]")]
        expect_checkpoint: Option<String>,
    },
    /// Record a signed checkpoint of every payment's chain head (also written to the log).
    Checkpoint,
    /// Seal, with the ledger key, the rows of the bound kinds (webhook events, idempotency
    /// answers, payments' bank references, webhook endpoint URLs, API keys, payee policies
    /// and payees) that have no MAC: those an upgrade's migrations left when run without the
    /// key, or that replicas of the version before wrote during a rolling update. It trusts
    /// every such row: run `ledger verify` first and seal only when what it names is the
    /// upgrade's. Never console operators (`pisgate operator reset-password` seals one, with
    /// a password an operator chose). Prints the counts as JSON.
    Seal,
    /// Move every live row sealed under an older ledger key (webhook events, idempotency
    /// answers, payments' bank references, webhook endpoint URLs, API keys, payee policies
    /// and payees, console operators) to the current key, after checking it under its own; then that key can be retired
    /// (PISGATE__LEDGER__RETIRED_KEY_IDS). History (chains, checkpoints) is not rewritten.
    /// Prints the counts as JSON; exits 1 naming the first row it refused (its MAC does not
    /// hold under its key), which stays refused.
    Reseal,
}

#[derive(Debug, Subcommand)]
pub enum MerchantCommand {
    /// Create a merchant; prints {"id", "api_key"} once. The key is never shown again.
    Create {
        /// The merchant's name as shoppers see it on the consent page (1 to 200 characters).
        #[arg(long)]
        name: String,
        /// An origin (scheme://host[:port]) that payment return URLs may point to. Repeatable.
        #[arg(long = "return-origin", value_name = "ORIGIN")]
        return_origins: Vec<String>,
    },
    /// List merchants as JSON lines (never their keys).
    List,
    /// Disable a merchant: its API keys stop working at once.
    Disable {
        /// The merchant's id (from `merchant create` or `merchant list`).
        #[arg(value_name = "ID")]
        id: Uuid,
    },
    /// Enable a disabled merchant: its API keys (those not expired) work again.
    Enable {
        /// The merchant's id (from `merchant create` or `merchant list`).
        #[arg(value_name = "ID")]
        id: Uuid,
    },
    /// Give a merchant a new API key; prints {"id", "api_key", "old_keys_expire_at"} once.
    /// The merchant's current keys keep working for the grace period, then stop.
    RotateKey {
        /// The merchant's id (from `merchant create` or `merchant list`).
        #[arg(value_name = "ID")]
        id: Uuid,
        /// How long the current keys keep working: e.g. 24h, 30m, 7d; 0s stops them at once.
        /// Until then they may create and read payments only (403 key_in_grace otherwise).
        #[arg(long, default_value = "24h", value_parser = grace_period, value_name = "DURATION")]
        grace: std::time::Duration,
    },
    /// Revoke every API key of a merchant at once, with no grace (a leaked key); prints
    /// {"id", "revoked"}. The merchant has no key until `rotate-key` gives it one. Recorded
    /// in the operator audit log.
    RevokeKeys {
        /// The merchant's id (from `merchant create` or `merchant list`).
        #[arg(value_name = "ID")]
        id: Uuid,
    },
    /// Change a merchant's settings; prints {"id", "payees"}. Recorded in the operator
    /// audit log.
    Set {
        /// The merchant's id (from `merchant create` or `merchant list`).
        #[arg(value_name = "ID")]
        id: Uuid,
        /// Which creditor accounts its payments may pay: `open` (any valid account, the
        /// default) or `registered` (only its payees, see `merchant payee`; a stolen API key
        /// then cannot redirect money).
        #[arg(long, value_parser = ["open", "registered"], value_name = "POLICY")]
        payees: String,
    },
    /// A merchant's payees: the creditor accounts it may pay when set to
    /// `--payees registered`. Only operators register them, never the merchant's API key.
    Payee {
        #[command(subcommand)]
        command: PayeeCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum PayeeCommand {
    /// Register a creditor account for a merchant; prints the payee as JSON (the account
    /// in its normalised form). Recorded in the operator audit log.
    Add {
        /// The merchant's id (from `merchant create` or `merchant list`).
        #[arg(value_name = "ID")]
        id: Uuid,
        /// The account's type: IBAN, BBAN_DK, BBAN_SE, BBAN_NO, BGNR or PGNR.
        #[arg(long = "type", value_name = "TYPE")]
        account_type: String,
        /// The account number, in any formatting the API accepts (spaces, hyphens, case).
        #[arg(long, value_name = "ACCOUNT")]
        account: String,
        /// A note for operators (e.g. "main payout account").
        #[arg(long)]
        label: Option<String>,
    },
    /// Remove a payee; payments to it are refused from now on (under `registered`).
    /// Recorded in the operator audit log.
    Remove {
        /// The merchant's id.
        #[arg(value_name = "ID")]
        id: Uuid,
        /// The account's type: IBAN, BBAN_DK, BBAN_SE, BBAN_NO, BGNR or PGNR.
        #[arg(long = "type", value_name = "TYPE")]
        account_type: String,
        /// The account number, in any formatting; or exactly as `payee list` shows a row
        /// it flags as malformed (written outside pisgate).
        #[arg(long, value_name = "ACCOUNT")]
        account: String,
    },
    /// List a merchant's payees as JSON lines, and its policy on standard error.
    List {
        /// The merchant's id.
        #[arg(value_name = "ID")]
        id: Uuid,
    },
}

/// A grace period: a duration as settings take them (`0s` allowed), at most 90 days.
fn grace_period(text: &str) -> Result<std::time::Duration, String> {
    let grace = crate::config::parse_duration(text)?;
    if grace > std::time::Duration::from_secs(90 * 86_400) {
        return Err(format!("{text:?} is longer than 90 days"));
    }
    Ok(grace)
}

/// Runs the command line; the binary's whole `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Check { json } = cli.command {
        return check_main(&cli.sources(), json);
    }
    if let Command::Openapi = cli.command {
        print!("{}", crate::api::openapi::json());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(settings_error) = e.downcast_ref::<SettingsError>() {
                eprintln!("error: {settings_error}");
                ExitCode::from(2)
            } else {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        }
    }
}

/// `pisgate check`: prints the report and exits with its code.
fn check_main(sources: &Sources, json: bool) -> ExitCode {
    let report = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Err(e) => crate::check::settings_failed(&format!("cannot start the async runtime: {e}")),
        Ok(runtime) => match Settings::load_from(sources) {
            Err(e) => crate::check::settings_failed(&e),
            Ok(settings) => runtime.block_on(crate::check::run(&settings)),
        },
    };
    if json {
        println!(
            "{}",
            serde_json::to_string(&report).unwrap_or_else(|_| "{}".into())
        );
    } else {
        for line in report.lines() {
            println!("{line}");
        }
    }
    ExitCode::from(report.exit_code)
}

impl Cli {
    /// The settings' sources: the process environment, with `--config-dir` and `--env`.
    fn sources(&self) -> Sources {
        let mut sources = Sources::from_process();
        if let Some(dir) = &self.config_dir {
            sources.config_dir = dir.clone();
        }
        if let Some(environment) = self.environment.as_ref().filter(|e| !e.is_empty()) {
            sources.environment = Some(environment.clone());
        }
        sources
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let sources = cli.sources();
    match cli.command {
        Command::Check { .. } => anyhow::bail!("`check` runs from `main`"),
        Command::Openapi => anyhow::bail!("`openapi` runs from `main`"),
        Command::Serve { migrate } => {
            let mut settings = Settings::load_from(&sources)?;
            settings.database.migrate_on_start |= migrate;
            let _guard = telemetry::init(&settings.telemetry)?;
            let application = match app::Application::build(settings).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "cannot start");
                    return Err(e);
                }
            };
            application.run_until_stopped(app::shutdown_signal()).await
        }
        Command::Sandbox { protocol } => match protocol {
            SandboxProtocol::Nordea => run_sandbox(&sources).await,
            SandboxProtocol::BerlinGroup => run_sandbox_berlin_group(&sources).await,
            SandboxProtocol::Seb => run_sandbox_seb(&sources).await,
            SandboxProtocol::Op => run_sandbox_op(&sources).await,
        },
        Command::Keys {
            command: KeysCommand::TokenKey | KeysCommand::LedgerKey,
        } => {
            // The same shape for both: base64 of 32 random bytes from the OS.
            println!("{}", TokenCipher::generate_key_base64().expose_secret());
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::Generate { out, bits },
        } => {
            let (private, public) = crate::bank::nordea::write_key_pair(&out, bits)
                .with_context(|| format!("cannot write a key pair to {}", out.display()))?;
            eprintln!(
                "wrote {} (keep it secret) and {} (register it with the bank)",
                private.display(),
                public.display()
            );
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::TestPki { out },
        } => {
            let (pki, server) = crate::sandbox::berlin_group::test_pki::generate_with_server(
                "CN=pisgate local TPP,O=pisgate,C=FI",
            )
            .map_err(|e| anyhow::anyhow!("cannot make a test PKI: {e}"))?;
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            let write = |name: &str, text: &str, mode: u32| -> anyhow::Result<()> {
                use std::io::Write as _;
                use std::os::unix::fs::OpenOptionsExt as _;
                let path = out.join(name);
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(mode)
                    .open(&path)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                f.write_all(text.as_bytes())?;
                Ok(())
            };
            write("ca.pem", &pki.ca_pem, 0o644)?;
            write("tpp-key.pem", &pki.tpp_key_pem, 0o600)?;
            write("tpp-cert.pem", &pki.tpp_cert_pem, 0o644)?;
            // The SEB simulator's TLS server certificate (SAN localhost, 127.0.0.1).
            write("server-cert.pem", &server.cert_pem, 0o644)?;
            write("server-key.pem", &server.key_pem, 0o600)?;
            eprintln!(
                "wrote a test CA, a TPP certificate and a server certificate (SAN localhost, 127.0.0.1) to {} (keyId {})",
                out.display(),
                pki.key_id
            );
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::Csr { out, subject, bits },
        } => {
            let (private, csr) =
                crate::bank::nordea::certificate::write_key_and_csr(&out, &subject, bits)
                    .with_context(|| {
                        format!("cannot write a key and a CSR to {}", out.display())
                    })?;
            eprintln!(
                "wrote {} (keep it secret; PISGATE__NORDEA__PRIVATE_KEY_FILE) and {} (send it to your certificate authority)",
                private.display(),
                csr.display()
            );
            Ok(())
        }
        Command::Ledger { command } => {
            let mut settings = ToolSettings::load_from(&sources)?;
            ledger::resolve_pooler(&mut settings.database).await?;
            let keys = app::ledger_keys(&settings.ledger)?;
            let pool = ledger::connect(&settings.database).await?;
            ledger_command(&pool, &settings.database, &keys, command).await
        }
        Command::Migrate => {
            let mut settings = ToolSettings::load_from(&sources)?;
            ledger::resolve_pooler(&mut settings.database).await?;
            let session = ledger::connect_session(&settings.database).await?;
            let pending = ledger::pending_migrations(&ledger::Db::direct(session.clone())).await?;
            ledger::migrate(&session)
                .await
                .context("migration failed")?;
            eprintln!(
                "applied {} migration(s); the database is up to date",
                pending.len()
            );
            if ledger::seal::binds(&pending) {
                match app::ledger_keys(&settings.ledger) {
                    Ok(keys) => {
                        let sealed = ledger::seal::seal_newly_bound(&session, &keys, &pending)
                            .await
                            .context("sealing the rows written before binding failed")?;
                        eprintln!(
                            "sealed with the ledger key: {} webhook event(s), {} idempotency answer(s), {} payment(s)' bank links, {} webhook endpoint(s), {} API key(s), {} payee polic(ies), {} payee(s), {} operator(s) written before binding",
                            sealed.webhook_events,
                            sealed.idempotency_answers,
                            sealed.bank_links,
                            sealed.webhook_endpoints,
                            sealed.api_keys,
                            sealed.payee_policies,
                            sealed.payees,
                            sealed.operators
                        );
                    }
                    Err(_) => eprintln!(
                        "warning: no ledger key (PISGATE__LEDGER__KEY): webhook events, idempotency answers, payments' bank links, webhook endpoints' URLs, API keys, merchants' payee policies and payees and console operators written before this upgrade were not sealed; they will not be sent, replayed, followed or accepted (every payment to a merchant whose policy is not sealed is refused with payee_not_registered; an operator not sealed cannot sign in) and `ledger verify` reports them. Run `pisgate ledger seal` with the ledger key; for each console operator, `pisgate operator reset-password` and then `enable` (ledger seal never seals operators)."
                    ),
                }
            }
            Ok(())
        }
        Command::Operator {
            command: OperatorCommand::Create { email },
        } => {
            let email = operator_email(&email)?;
            let hash = read_operator_password(&email)?;
            let mut settings = ToolSettings::load_from(&sources)?;
            // The account is sealed with the ledger key: one written without it signs in
            // nowhere.
            ledger::keys::install(app::ledger_keys(&settings.ledger)?);
            ledger::resolve_pooler(&mut settings.database).await?;
            let pool = ledger::connect(&settings.database).await?;
            let id = match ledger::operators::create(&pool, &email, &hash).await {
                Ok(id) => id,
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                    anyhow::bail!("--email {email:?}: an operator with this email exists already")
                }
                Err(e) => return Err(anyhow::Error::new(e).context("creating the operator")),
            };
            println!("{}", serde_json::json!({ "id": id, "email": email }));
            Ok(())
        }
        Command::Operator {
            command: OperatorCommand::List,
        } => {
            let mut settings = ToolSettings::load_from(&sources)?;
            ledger::resolve_pooler(&mut settings.database).await?;
            let pool = ledger::connect(&settings.database).await?;
            for o in ledger::operators::list(&pool).await? {
                println!("{}", serde_json::to_string(&o)?);
            }
            Ok(())
        }
        Command::Operator { command } => {
            let (email, change_hash) = match &command {
                OperatorCommand::ResetPassword { email } => {
                    let email = operator_email(email)?;
                    let hash = read_operator_password(&email)?;
                    (email, Some(hash))
                }
                OperatorCommand::Disable { email } | OperatorCommand::Enable { email } => {
                    (operator_email(email)?, None)
                }
                OperatorCommand::Create { .. } | OperatorCommand::List => {
                    unreachable!("handled above")
                }
            };
            let change = match (&command, &change_hash) {
                (OperatorCommand::Disable { .. }, _) => ledger::operators::AccountChange::Disable,
                (OperatorCommand::Enable { .. }, _) => ledger::operators::AccountChange::Enable,
                (_, Some(hash)) => ledger::operators::AccountChange::ResetPassword {
                    password_hash: hash,
                },
                _ => unreachable!("a reset has its hash"),
            };
            let mut settings = ToolSettings::load_from(&sources)?;
            if !matches!(change, ledger::operators::AccountChange::Disable) {
                // Enabling and a new password seal the account with the ledger key.
                ledger::keys::install(app::ledger_keys(&settings.ledger)?);
            } else {
                // Disabling seals the disabled state when it can; without the key it still
                // disables (the account then keeps no MAC until a new password).
                match app::ledger_keys(&settings.ledger) {
                    Ok(ring) => ledger::keys::install(ring),
                    Err(e) => eprintln!(
                        "warning: no ledger key ({e:#}): the account is disabled without a seal; to let it back in later: `pisgate operator reset-password`, then `enable`, with the key"
                    ),
                }
            }
            ledger::resolve_pooler(&mut settings.database).await?;
            let pool = ledger::connect(&settings.database).await?;
            let (ended, disabled) = match ledger::operators::change_account(&pool, &email, change)
                .await?
            {
                ledger::operators::Changed::Done {
                    sessions_ended,
                    disabled,
                } => (sessions_ended, disabled),
                ledger::operators::Changed::NoSuchOperator => {
                    anyhow::bail!("--email {email:?}: no such operator")
                }
                ledger::operators::Changed::SealFails(problem) => anyhow::bail!(
                    "--email {email:?}: not enabled: {problem}. Its password hash is not one pisgate wrote under this ledger ring: give it a new password with `pisgate operator reset-password --email {email}` (the account stays disabled), then enable it"
                ),
            };
            println!(
                "{}",
                serde_json::json!({ "email": email, "sessions_ended": ended, "disabled": disabled })
            );
            Ok(())
        }
        Command::Merchant { command } => {
            if let MerchantCommand::Create { return_origins, .. } = &command {
                // Refuse bad input before touching the database.
                for o in return_origins {
                    crate::ledger::merchants::normalize_origin(o)
                        .map_err(|e| anyhow::anyhow!("--return-origin {o:?}: {e}"))?;
                }
            }
            if let MerchantCommand::Payee {
                command:
                    PayeeCommand::Add {
                        account_type,
                        account,
                        ..
                    },
            } = &command
            {
                // (`remove` also takes a row as `payee list` shows it, which may not parse.)
                payee_account(account_type, account)?;
            }
            let mut settings = ToolSettings::load_from(&sources)?;
            if matches!(
                command,
                MerchantCommand::Create { .. }
                    | MerchantCommand::RotateKey { .. }
                    | MerchantCommand::Set { .. }
                    | MerchantCommand::Payee {
                        command: PayeeCommand::Add { .. }
                    }
            ) {
                // A new API key's row, a merchant's payee policy and a payee are sealed with
                // the ledger key.
                ledger::keys::install(app::ledger_keys(&settings.ledger)?);
            } else if matches!(
                command,
                MerchantCommand::Payee {
                    command: PayeeCommand::List { .. }
                }
            ) {
                // The list checks each row's seal; without a ring it says it cannot.
                match app::ledger_keys(&settings.ledger) {
                    Ok(ring) => ledger::keys::install(ring),
                    Err(e) => eprintln!("cannot check the payees' seals: {e:#}"),
                }
            }
            ledger::resolve_pooler(&mut settings.database).await?;
            let pool = ledger::connect(&settings.database).await?;
            merchant_command(&pool, command).await
        }
    }
}

/// An operator's sign-in name as stored (lower-cased), or why it is not one.
fn operator_email(email: &str) -> anyhow::Result<String> {
    let email = email.trim().to_lowercase();
    anyhow::ensure!(
        email.contains('@') && !email.starts_with('@') && !email.ends_with('@'),
        "--email {email:?} is not an email address"
    );
    Ok(email)
}

/// Reads an operator's password from the first line of standard input (never an argument)
/// and returns its Argon2id hash.
fn read_operator_password(email: &str) -> anyhow::Result<String> {
    use crate::api::console::password;
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprint!(
            "password for {email} (at least {} characters): ",
            password::MIN_LENGTH
        );
    }
    let mut buf = String::new();
    std::io::stdin()
        .read_line(&mut buf)
        .context("reading the password from standard input")?;
    let line = secrecy::SecretString::from(buf);
    let given = secrecy::ExposeSecret::expose_secret(&line).trim_end_matches(['\r', '\n']);
    anyhow::ensure!(
        given.chars().count() >= password::MIN_LENGTH,
        "the password must be at least {} characters",
        password::MIN_LENGTH
    );
    password::hash(given)
}

/// `ID` or `ID:MAC` (hex), as `ledger verify --expect-checkpoint` takes it.
fn parse_expected_checkpoint(text: &str) -> anyhow::Result<(i64, Option<Vec<u8>>)> {
    let (id, mac) = match text.split_once(':') {
        Some((id, mac)) => (id, Some(mac)),
        None => (text, None),
    };
    let id: i64 = id.trim().parse().map_err(|_| {
        anyhow::anyhow!("--expect-checkpoint: {id:?} is not a checkpoint id (ID or ID:MAC)")
    })?;
    let mac = mac
        .map(|m| hex::decode(m.trim()))
        .transpose()
        .map_err(|_| anyhow::anyhow!("--expect-checkpoint: the MAC is not hex (ID:MAC)"))?;
    Ok((id, mac))
}

async fn ledger_command(
    pool: &crate::ledger::Db,
    database: &crate::config::DatabaseSettings,
    keys: &ledger::keys::LedgerKeys,
    command: LedgerCommand,
) -> anyhow::Result<()> {
    match command {
        LedgerCommand::Verify { expect_checkpoint } => {
            let expected = expect_checkpoint
                .as_deref()
                .map(parse_expected_checkpoint)
                .transpose()?;
            let report = ledger::verify::verify_all(pool, keys).await?;
            if let Some((id, mac)) = &expected {
                let pinned: Option<Vec<u8>> =
                    sqlx::query_scalar("SELECT mac FROM ledger_checkpoints WHERE id = $1")
                        .bind(id)
                        .fetch_optional(pool)
                        .await?;
                match (pinned, report.checkpoint) {
                    (None, _) => anyhow::bail!(
                        "the ledger is broken: checkpoint {id}, which you expect, is gone (checkpoints deleted)"
                    ),
                    (Some(stored), _) if mac.as_ref().is_some_and(|m| *m != stored) => {
                        anyhow::bail!(
                            "the ledger is broken: checkpoint {id} is not the one you recorded (its MAC differs: replaced)"
                        )
                    }
                    (Some(_), newest) if newest.is_none_or(|n| n < *id) => anyhow::bail!(
                        "the ledger is broken: the newest checkpoint verified is {}, older than checkpoint {id} you expect (checkpoints deleted)",
                        newest.map_or("none".to_owned(), |n| n.to_string())
                    ),
                    _ => {}
                }
            }
            if let Some(broken) = &report.first_broken {
                anyhow::bail!(
                    "the ledger is broken: {} payment(s) affected; first problem: {broken}",
                    report.broken_payments
                );
            }
            if let Some(problem) = &report.checkpoint_problem {
                anyhow::bail!("the ledger is broken: {problem}");
            }
            if let Some(broken) = &report.first_broken_webhook_event {
                anyhow::bail!(
                    "the ledger is broken: {} webhook event(s) affected; first problem: {broken}",
                    report.broken_webhook_events
                );
            }
            if let Some(broken) = &report.first_broken_idempotency_answer {
                anyhow::bail!(
                    "the ledger is broken: {} idempotency answer(s) affected; first problem: {broken}",
                    report.broken_idempotency_answers
                );
            }
            if let Some(broken) = &report.first_broken_webhook_endpoint {
                anyhow::bail!(
                    "the ledger is broken: {} webhook endpoint(s) affected; first problem: {broken}",
                    report.broken_webhook_endpoints
                );
            }
            if let Some(broken) = &report.first_broken_api_key {
                anyhow::bail!(
                    "the ledger is broken: {} API key(s) affected; first problem: {broken}",
                    report.broken_api_keys
                );
            }
            if let Some(broken) = &report.first_broken_payee {
                anyhow::bail!(
                    "the ledger is broken: {} payee polic(ies) or payee(s) affected; first problem: {broken}",
                    report.broken_payees
                );
            }
            if let Some(broken) = &report.first_broken_operator {
                anyhow::bail!(
                    "the ledger is broken: {} operator(s) affected (they cannot sign in); first problem: {broken}",
                    report.broken_operators
                );
            }
            let checkpoint = match report.checkpoint {
                Some(id) => format!("checkpoint {id}"),
                None => "no checkpoint yet".to_owned(),
            };
            println!(
                "ledger ok: {} payment(s), {} event(s), {checkpoint} verified",
                report.payments_checked, report.events_checked
            );
            if report.webhook_events_checked > 0 {
                println!(
                    "webhook events ok: {} checked",
                    report.webhook_events_checked
                );
            }
            if report.unbound_payments > 0 {
                // Written before payments were bound: their chains, heads, statuses and bank
                // ids are checked, their facts cannot be. Not a failure, but said on every run.
                eprintln!(
                    "note: written before binding, so amount, merchant and creditor are not checkable: {} payment(s)",
                    report.unbound_payments
                );
            }
            Ok(())
        }
        LedgerCommand::Checkpoint => {
            let checkpoint = ledger::checkpoints::create(pool, keys).await?;
            println!("{}", serde_json::to_string(&checkpoint)?);
            Ok(())
        }
        LedgerCommand::Seal => {
            // Batched reads and writes on a session straight to the primary, as `migrate`
            // seals (its queries are prepared: never through a transaction pooler).
            let session = ledger::connect_session(database)
                .await
                .context("ledger seal needs a session straight to the primary")?;
            let sealed = ledger::seal::seal_unbound(&session, keys).await?;
            session.close().await;
            sealed.log("sealed rows that had no ledger MAC (ledger seal)");
            println!("{}", serde_json::to_string(&sealed)?);
            Ok(())
        }
        LedgerCommand::Reseal => {
            let session = ledger::connect_session(database)
                .await
                .context("ledger reseal needs a session straight to the primary")?;
            let resealed = ledger::reseal::reseal(&session, keys).await;
            session.close().await;
            let resealed = resealed?;
            resealed.log();
            println!("{}", serde_json::to_string(&resealed)?);
            if let Some(first) = &resealed.first_refused {
                anyhow::bail!(
                    "{} row(s) under an older ledger key were not resealed (their MAC does not hold; `ledger verify` names them); first: {first}",
                    resealed.refused
                );
            }
            Ok(())
        }
    }
}

async fn merchant_command(
    pool: &crate::ledger::Db,
    command: MerchantCommand,
) -> anyhow::Result<()> {
    match command {
        MerchantCommand::Create {
            name,
            return_origins,
        } => {
            let origins = return_origins
                .iter()
                .map(|o| {
                    crate::ledger::merchants::normalize_origin(o)
                        .map_err(|e| anyhow::anyhow!("--return-origin {o:?}: {e}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let (merchant, key) = ledger::merchants::create(pool, &name, &origins).await?;
            println!(
                "{}",
                serde_json::json!({ "id": merchant.id, "api_key": key.expose_secret() })
            );
            Ok(())
        }
        MerchantCommand::List => {
            for m in ledger::merchants::list(pool).await? {
                println!("{}", serde_json::to_string(&m)?);
            }
            Ok(())
        }
        MerchantCommand::Disable { id } => {
            print_merchant(id, ledger::merchants::disable(pool, id).await?)
        }
        MerchantCommand::Enable { id } => {
            print_merchant(id, ledger::merchants::enable(pool, id).await?)
        }
        MerchantCommand::RotateKey { id, grace } => {
            let rotated = ledger::merchants::rotate_key(pool, id, grace)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no merchant with id {id}"))?;
            println!(
                "{}",
                serde_json::json!({
                    "id": rotated.merchant_id,
                    "api_key": rotated.api_key.expose_secret(),
                    "old_keys_expire_at": rotated.old_keys_expire_at,
                })
            );
            eprintln!(
                "the new key is shown only this once; {} older key(s) work until {} \
                 (for payments only)",
                rotated.old_keys,
                rotated.old_keys_expire_at.to_rfc3339()
            );
            Ok(())
        }
        MerchantCommand::RevokeKeys { id } => {
            let mut tx = pool.begin().await?;
            let revoked = ledger::merchants::revoke_all_keys(&mut tx, id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no merchant with id {id}"))?;
            cli_audit(
                &mut tx,
                "revoke_all_keys",
                id,
                serde_json::json!({ "revoked": revoked }),
            )
            .await?;
            tx.commit().await?;
            println!("{}", serde_json::json!({ "id": id, "revoked": revoked }));
            eprintln!("every key of the merchant is refused now; give it one with rotate-key");
            Ok(())
        }
        MerchantCommand::Set { id, payees } => {
            let policy = ledger::payees::Policy::parse(&payees)
                .ok_or_else(|| anyhow::anyhow!("--payees must be open or registered"))?;
            let mut tx = pool.begin().await?;
            if !ledger::payees::set_policy(&mut tx, id, policy).await? {
                anyhow::bail!("no merchant with id {id}");
            }
            cli_audit(
                &mut tx,
                "set_payees",
                id,
                serde_json::json!({ "payees": policy.as_str() }),
            )
            .await?;
            tx.commit().await?;
            println!(
                "{}",
                serde_json::json!({ "id": id, "payees": policy.as_str() })
            );
            Ok(())
        }
        MerchantCommand::Payee { command } => payee_command(pool, command).await,
    }
}

/// An account as an operator typed it, parsed and normalised as the API would.
fn payee_account(account_type: &str, account: &str) -> anyhow::Result<crate::domain::Account> {
    let t = crate::domain::AccountType::parse(&account_type.trim().to_ascii_uppercase())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--type {account_type:?}: must be IBAN, BBAN_DK, BBAN_SE, BBAN_NO, BGNR or PGNR"
            )
        })?;
    crate::domain::Account::parse(t, account).map_err(|e| anyhow::anyhow!("--account: {e}"))
}

async fn payee_command(pool: &crate::ledger::Db, command: PayeeCommand) -> anyhow::Result<()> {
    use ledger::payees;
    match command {
        PayeeCommand::Add {
            id,
            account_type,
            account,
            label,
        } => {
            let account = payee_account(&account_type, &account)?;
            let label = label.map(|l| l.trim().to_owned()).filter(|l| !l.is_empty());
            if label.as_ref().is_some_and(|l| l.chars().count() > 200) {
                anyhow::bail!("--label: at most 200 characters");
            }
            let mut tx = pool.begin().await?;
            let added = match payees::add(&mut tx, id, &account, label.as_deref()).await? {
                payees::Added::UnknownMerchant => anyhow::bail!("no merchant with id {id}"),
                payees::Added::Added | payees::Added::Vouched => true,
                payees::Added::AlreadyRegistered => false,
            };
            if added {
                cli_audit(
                    &mut tx,
                    "add_payee",
                    id,
                    serde_json::json!({ "account": account.masked() }),
                )
                .await?;
            }
            tx.commit().await?;
            println!(
                "{}",
                serde_json::json!({
                    "merchant_id": id,
                    "account": account,
                    "label": label,
                    "added": added,
                })
            );
            Ok(())
        }
        PayeeCommand::Remove {
            id,
            account_type,
            account,
        } => {
            // Its normalised form first; then the number exactly as typed, which removes a
            // row `payee list` shows as malformed (written outside pisgate).
            let parsed = payee_account(&account_type, &account);
            let mut tx = pool.begin().await?;
            let removed = match &parsed {
                Ok(a) => payees::remove(&mut tx, id, a).await?,
                Err(_) => false,
            } || payees::remove_stored(&mut tx, id, &account_type, &account).await?;
            let masked = match &parsed {
                Ok(a) => a.masked(),
                Err(_) => payees::masked_stored(&account_type, &account),
            };
            if !removed {
                if let Err(e) = parsed {
                    return Err(e);
                }
                anyhow::bail!("{masked} is not a payee of merchant {id}");
            }
            cli_audit(
                &mut tx,
                "remove_payee",
                id,
                serde_json::json!({ "account": masked }),
            )
            .await?;
            tx.commit().await?;
            let shown = match parsed {
                Ok(a) => serde_json::json!(a),
                Err(_) => serde_json::json!({ "type": account_type, "value": account }),
            };
            println!(
                "{}",
                serde_json::json!({ "merchant_id": id, "account": shown, "removed": true })
            );
            Ok(())
        }
        PayeeCommand::List { id } => {
            let policy = payees::policy_state(pool, id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no merchant with id {id}"))?;
            // Without the ledger key nothing can be checked: "trusted" is null (unchecked),
            // never a false alarm that would teach an operator to vouch for every row.
            let checked = crate::ledger::keys::installed().is_some();
            let mut untrusted = 0;
            for p in payees::list(pool, id).await? {
                // A malformed row is known untrusted without the key.
                let known = checked || p.malformed.is_some();
                untrusted += usize::from(known && p.problem.is_some());
                println!(
                    "{}",
                    serde_json::json!({
                        "account": { "type": p.account_type, "value": p.account },
                        "label": p.label,
                        "created_at": p.created_at,
                        "trusted": known.then_some(p.problem.is_none()),
                        "problem": p.problem.filter(|_| known),
                    })
                );
            }
            match policy.problem {
                None => eprintln!("payees policy: {}", policy.stored.as_str()),
                Some(_) if !checked => eprintln!(
                    "payees policy: {} (not checked: no ledger key)",
                    policy.stored.as_str()
                ),
                Some(problem) => eprintln!(
                    "payees policy: {} NOT TRUSTED ({problem}): payments go to trusted payees only; `pisgate merchant set {id} --payees <policy>` vouches for it",
                    policy.stored.as_str()
                ),
            }
            if untrusted > 0 {
                eprintln!(
                    "{untrusted} payee(s) NOT TRUSTED (\"trusted\": false): no payment goes to them; `pisgate merchant payee add` of the same account vouches for a well-formed one, `payee remove` with the account as listed removes it"
                );
            }
            Ok(())
        }
    }
}

/// Records a merchant change made from the command line in the operator audit log, in the
/// change's own transaction. The operator is whoever runs the tool (`cli:$USER`).
async fn cli_audit(
    conn: &mut sqlx::PgConnection,
    action: &str,
    merchant: Uuid,
    detail: serde_json::Value,
) -> anyhow::Result<()> {
    let who = format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    );
    ledger::operators::audit_in(
        conn,
        None,
        &who,
        action,
        Some(&format!("merchant {merchant}")),
        detail,
    )
    .await?;
    Ok(())
}

/// Prints a merchant as JSON, or fails for an unknown id.
fn print_merchant(id: Uuid, found: Option<ledger::merchants::Merchant>) -> anyhow::Result<()> {
    let merchant = found.ok_or_else(|| anyhow::anyhow!("no merchant with id {id}"))?;
    println!("{}", serde_json::to_string(&merchant)?);
    Ok(())
}

/// The protocol `pisgate sandbox` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SandboxProtocol {
    /// Nordea's PIS API (`/personal`).
    Nordea,
    /// Berlin Group NextGenPSD2 1.3.12 (`/psd2/v1/...`).
    BerlinGroup,
    /// SEB's PSD2 API with Mobilt BankID (mutual TLS; reads PISGATE__SANDBOX_SEB__*).
    Seb,
    /// OP's PSD2 payment API (FAPI: mutual TLS, signed request objects, submit after
    /// authorization; reads PISGATE__SANDBOX_OP__*).
    Op,
}

async fn run_sandbox_op(sources: &Sources) -> anyhow::Result<()> {
    use crate::sandbox::op::{OpSandboxConfig, OpSim};
    use crate::sandbox::seb::tls;
    use secrecy::ExposeSecret as _;
    let s = crate::config::SandboxOpSettings::load_from(sources)?;
    let _guard = telemetry::init(&crate::config::TelemetrySettings {
        log_format: crate::config::LogFormat::Auto,
        log_level: std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        service_name: "pisgate-sandbox-op".into(),
    })?;
    let tls = tls::server_config(
        &s.tls_certificate_pem,
        s.tls_private_key_pem.expose_secret(),
        &s.tpp_ca_pem,
    )
    .map_err(|e| {
        SettingsError::Load(format!(
            "invalid OP sandbox TLS settings (PISGATE__SANDBOX_OP__TLS_CERTIFICATE_FILE, TLS_PRIVATE_KEY_FILE, TPP_CA_FILE): {e}"
        ))
    })?;
    let mut config = OpSandboxConfig::new(
        s.client_id.clone(),
        s.client_secret.expose_secret(),
        s.api_key.expose_secret(),
        s.redirect_uris.clone(),
    );
    config.tpp_signing_certificate_pem = s.tpp_signing_certificate_pem.clone();
    config.tpp_signing_key_id = s.tpp_signing_key_id.clone();
    config.client_certificate_pem = s.client_certificate_pem.clone();
    config.issuer = Some(s.issuer.clone());
    config.audience = Some(s.audience.clone());
    config.id_token_key_pem = s
        .id_token_key_pem
        .as_ref()
        .map(|k| k.expose_secret().to_owned());
    config.answer_key_pem = s
        .answer_key_pem
        .as_ref()
        .map(|k| k.expose_secret().to_owned());
    let api_url = format!("https://{}", s.listen);
    let app_url = format!("http://{}", s.app_listen);
    let sim = OpSim::new(config, &api_url, &app_url).map_err(|e| {
        SettingsError::Load(format!(
            "invalid OP sandbox settings (PISGATE__SANDBOX_OP__*): {e}"
        ))
    })?;
    let api = tokio::net::TcpListener::bind(s.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (PISGATE__SANDBOX_OP__LISTEN)",
                s.listen
            )
        })?;
    let app_listener = tokio::net::TcpListener::bind(s.app_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (PISGATE__SANDBOX_OP__APP_LISTEN)",
                s.app_listen
            )
        })?;
    tracing::info!(
        api = %s.listen,
        app = %s.app_listen,
        issuer = %s.issuer,
        "OP sandbox is listening: API https://{} (mutual TLS), authorization page http://{}/oauth/authorize",
        s.listen,
        s.app_listen
    );
    crate::sandbox::op::serve(api, app_listener, sim, tls, app::shutdown_signal()).await?;
    Ok(())
}

async fn run_sandbox_seb(sources: &Sources) -> anyhow::Result<()> {
    use crate::sandbox::seb::{SebSandboxConfig, SebSim, tls};
    use secrecy::ExposeSecret as _;
    let s = crate::config::SandboxSebSettings::load_from(sources)?;
    let _guard = telemetry::init(&crate::config::TelemetrySettings {
        log_format: crate::config::LogFormat::Auto,
        log_level: std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        service_name: "pisgate-sandbox-seb".into(),
    })?;
    let tls = tls::server_config(
        &s.tls_certificate_pem,
        s.tls_private_key_pem.expose_secret(),
        &s.client_ca_pem,
    )
    .map_err(|e| SettingsError::Load(format!("invalid SEB sandbox TLS settings: {e}")))?;
    let mut config = SebSandboxConfig::new(s.client_id.clone(), s.client_secret.expose_secret());
    config.order_timeout = s.order_timeout;
    config.signing_timeout = s.signing_timeout;
    config.access_token_lifetime = s.access_token_lifetime;
    config.status_step = s.status_step;
    config.redirect_uris = s.redirect_uris.clone();
    let sim = SebSim::new(config)
        .map_err(|e| SettingsError::Load(format!("invalid SEB sandbox settings: {e}")))?;
    let api = tokio::net::TcpListener::bind(s.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (PISGATE__SANDBOX_SEB__LISTEN)",
                s.listen
            )
        })?;
    let app_listener = tokio::net::TcpListener::bind(s.app_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (PISGATE__SANDBOX_SEB__APP_LISTEN)",
                s.app_listen
            )
        })?;
    tracing::info!(
        api = %s.listen,
        app = %s.app_listen,
        "SEB sandbox is listening: API https://{} (mutual TLS), test BankID app http://{}/test-bankid",
        s.listen,
        s.app_listen
    );
    crate::sandbox::seb::serve(api, app_listener, sim, tls, app::shutdown_signal()).await?;
    Ok(())
}

async fn run_sandbox_berlin_group(sources: &Sources) -> anyhow::Result<()> {
    use crate::sandbox::berlin_group::{BgSandbox, BgSandboxConfig, verify};
    let s = crate::config::SandboxBerlinGroupSettings::load_from(sources)?;
    let _guard = telemetry::init(&crate::config::TelemetrySettings {
        log_format: crate::config::LogFormat::Auto,
        log_level: std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        service_name: "pisgate-sandbox-berlin-group".into(),
    })?;
    let cas = match &s.tpp_ca_pem {
        Some(pem) => verify::parse_cas(pem).map_err(|e| {
            SettingsError::Load(format!(
                "invalid setting PISGATE__SANDBOX_BERLIN_GROUP__TPP_CA_FILE: {e}"
            ))
        })?,
        None => Vec::new(),
    };
    let mut config = BgSandboxConfig::new(s.public_url.clone(), cas);
    config.base_path = s.base_path.clone();
    config.products = s.products;
    config.signature_required = s.signature_required;
    config.max_clock_skew = s.max_clock_skew;
    config.decoupled_timeout = s.decoupled_timeout;
    config.status_step = s.status_step;
    config.allow_request_id_reuse = s.allow_request_id_reuse;
    let sandbox = BgSandbox::new(config)
        .map_err(|e| SettingsError::Load(format!("invalid Berlin Group sandbox settings: {e}")))?;
    let listener = tokio::net::TcpListener::bind(s.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (PISGATE__SANDBOX_BERLIN_GROUP__LISTEN)",
                s.listen
            )
        })?;
    tracing::info!(addr = %s.listen, "Berlin Group sandbox is listening; base URL {}{}", s.public_url, s.base_path);
    crate::sandbox::berlin_group::serve(listener, sandbox, app::shutdown_signal()).await?;
    Ok(())
}

async fn run_sandbox(sources: &Sources) -> anyhow::Result<()> {
    use crate::sandbox::{Sandbox, SandboxConfig};
    let s = crate::config::SandboxSettings::load_from(sources)?;
    let _guard = telemetry::init(&crate::config::TelemetrySettings {
        log_format: crate::config::LogFormat::Auto,
        log_level: std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        service_name: "pisgate-sandbox".into(),
    })?;
    let mut config = SandboxConfig::new(
        s.client_id,
        s.client_secret,
        s.public_key_pem,
        s.public_url.clone(),
    );
    config.confirm_delay = s.confirm_delay;
    config.paid_delay = s.paid_delay;
    config.recurring_interval = s.recurring_interval;
    config.approval_timeout = s.approval_timeout;
    config.access_token_lifetime = s.access_token_lifetime;
    config.token_identity = s.token_identity;
    if let Some(faults) = &s.faults_json {
        config.faults = serde_json::from_str(faults).map_err(|e| {
            SettingsError::Load(format!("invalid setting PISGATE__SANDBOX__FAULTS: {e}"))
        })?;
    }
    let sandbox = Sandbox::new(config).map_err(|e| {
        SettingsError::Load(format!(
            "invalid setting PISGATE__SANDBOX__PUBLIC_KEY_FILE: {e}"
        ))
    })?;
    let listener = tokio::net::TcpListener::bind(s.listen)
        .await
        .with_context(|| format!("cannot listen on {} (PISGATE__SANDBOX__LISTEN)", s.listen))?;
    tracing::info!(addr = %s.listen, "Nordea sandbox is listening; base URL {}/personal", s.public_url);
    crate::sandbox::serve_on_one_thread(listener, sandbox, app::shutdown_signal()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    fn undocumented(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            if arg
                .get_help()
                .is_none_or(|h| h.to_string().trim().is_empty())
            {
                missing.push(format!("{path} <{id}>"));
            }
        }
        for sub in cmd.get_subcommands() {
            let sub_path = format!("{path} {}", sub.get_name());
            if sub.get_about().is_none() && sub.get_name() != "help" {
                missing.push(sub_path.clone());
            }
            undocumented(sub, &sub_path, missing);
        }
    }

    #[test]
    fn every_command_and_argument_has_help() {
        Cli::command().debug_assert();
        let mut missing = Vec::new();
        undocumented(&Cli::command(), "pisgate", &mut missing);
        assert!(missing.is_empty(), "without help: {missing:?}");
    }

    #[test]
    fn arguments_that_have_an_environment_variable_name_it() {
        let cmd = Cli::command();
        let env = |id: &str| {
            cmd.get_arguments()
                .find(|a| a.get_id() == id)
                .and_then(|a| a.get_env())
                .map(|e| e.to_string_lossy().into_owned())
        };
        assert_eq!(env("config_dir").as_deref(), Some("PISGATE_CONFIG_DIR"));
        assert_eq!(env("environment").as_deref(), Some("PISGATE_ENV"));
        let serve = cmd.find_subcommand("serve").unwrap();
        let migrate = serve
            .get_arguments()
            .find(|a| a.get_id() == "migrate")
            .unwrap();
        assert!(
            migrate
                .get_help()
                .unwrap()
                .to_string()
                .contains("PISGATE__DATABASE__MIGRATE_ON_START")
        );
    }

    #[test]
    fn grace_periods_read_like_settings_and_are_bounded() {
        assert_eq!(
            grace_period("24h").unwrap(),
            std::time::Duration::from_secs(86_400)
        );
        assert_eq!(grace_period("0s").unwrap(), std::time::Duration::ZERO);
        assert!(grace_period("91d").is_err());
        assert!(grace_period("soon").is_err());
    }
}
