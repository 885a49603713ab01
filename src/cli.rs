//! The command line: `serve`, `migrate`, `ledger ...`, `merchant ...`. Each command loads the settings
//! it needs, does one thing, and reports failure as one clear line on stderr with a
//! non-zero exit code (2 for bad settings, 1 for anything else).

use crate::config::{Settings, SettingsError};
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
    about = "PSD2 payment initiation for Nordea (single SCA)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the merchant API.
    Serve {
        /// Apply pending database migrations before serving.
        #[arg(long)]
        migrate: bool,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Check every setting, the key and certificate, the database, the clock and one harmless
    /// signed call to the bank; one line per check; exit 0 only when all are OK.
    Check {
        /// One JSON object instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Serve the Nordea sandbox simulator (for local runs and tests; never in production).
    Sandbox,
    /// Key pairs for signing Nordea requests.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The append-only payment ledger.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
    /// Manage merchants.
    Merchant {
        #[command(subcommand)]
        command: MerchantCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Write a new RSA key pair as PEM: DIR/private.pem (mode 0600) and DIR/public.pem.
    Generate {
        #[arg(long)]
        out: std::path::PathBuf,
        #[arg(long, default_value_t = 2048)]
        bits: usize,
    },
    /// Write a new RSA key (DIR/private.pem, mode 0600) and a PKCS#10 certificate signing
    /// request for it (DIR/request.csr) to send to a qualified trust service provider for the
    /// eIDAS QSealC.
    Csr {
        #[arg(long)]
        out: std::path::PathBuf,
        /// The certificate's subject, e.g. "CN=Shop Oy,O=Shop Oy,C=FI,2.5.4.97=PSDFI-FINFSA-1234567-8".
        #[arg(long)]
        subject: String,
        #[arg(long, default_value_t = 2048)]
        bits: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Recompute every payment's chain, cross-check payments' heads and statuses and prove
    /// the ledger extends the last checkpoint; exits 1 naming the first problem.
    Verify,
    /// Record a signed checkpoint of every payment's chain head (also written to the log).
    Checkpoint,
}

#[derive(Debug, Subcommand)]
pub enum MerchantCommand {
    /// Create a merchant; prints {"id", "api_key"} once. The key is never shown again.
    Create {
        #[arg(long)]
        name: String,
        /// An origin (scheme://host[:port]) that payment return URLs may point to. Repeatable.
        #[arg(long = "return-origin")]
        return_origins: Vec<String>,
    },
    /// List merchants as JSON lines.
    List,
    /// Disable a merchant: its API key stops working at once.
    Disable { id: Uuid },
}

/// Runs the command line; the binary's whole `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Check { json } = cli.command {
        return check_main(json);
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
fn check_main(json: bool) -> ExitCode {
    let report = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Err(e) => crate::check::settings_failed(&format!("cannot start the async runtime: {e}")),
        Ok(runtime) => match Settings::load() {
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

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Check { .. } => anyhow::bail!("`check` runs from `main`"),
        Command::Serve { migrate } => {
            let mut settings = Settings::load()?;
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
        Command::Sandbox => run_sandbox().await,
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
            let settings = crate::config::ToolSettings::load()?;
            let keys = app::ledger_keys(&settings.ledger)?;
            let pool = ledger::connect(&settings.database).await?;
            ledger_command(&pool, &keys, command).await
        }
        Command::Migrate => {
            let settings = crate::config::ToolSettings::load()?;
            let pool = ledger::connect(&settings.database).await?;
            let pending = ledger::pending_migrations(&pool).await?;
            ledger::migrate(&pool).await.context("migration failed")?;
            eprintln!(
                "applied {} migration(s); the database is up to date",
                pending.len()
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
            let settings = crate::config::ToolSettings::load()?;
            let pool = ledger::connect(&settings.database).await?;
            merchant_command(&pool, command).await
        }
    }
}

async fn ledger_command(
    pool: &sqlx::PgPool,
    keys: &ledger::keys::LedgerKeys,
    command: LedgerCommand,
) -> anyhow::Result<()> {
    match command {
        LedgerCommand::Verify => {
            let report = ledger::verify::verify_all(pool, keys).await?;
            if let Some(broken) = &report.first_broken {
                anyhow::bail!(
                    "the ledger is broken: {} payment(s) affected; first problem: {broken}",
                    report.broken_payments
                );
            }
            if let Some(problem) = &report.checkpoint_problem {
                anyhow::bail!("the ledger is broken: {problem}");
            }
            let checkpoint = match report.checkpoint {
                Some(id) => format!("checkpoint {id}"),
                None => "no checkpoint yet".to_owned(),
            };
            println!(
                "ledger ok: {} payment(s), {} event(s), {checkpoint} verified",
                report.payments_checked, report.events_checked
            );
            Ok(())
        }
        LedgerCommand::Checkpoint => {
            let checkpoint = ledger::checkpoints::create(pool, keys).await?;
            println!("{}", serde_json::to_string(&checkpoint)?);
            Ok(())
        }
    }
}

async fn merchant_command(pool: &sqlx::PgPool, command: MerchantCommand) -> anyhow::Result<()> {
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
            let merchant = ledger::merchants::disable(pool, id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no merchant with id {id}"))?;
            println!("{}", serde_json::to_string(&merchant)?);
            Ok(())
        }
    }
}

async fn run_sandbox() -> anyhow::Result<()> {
    use crate::sandbox::{Sandbox, SandboxConfig};
    let s = crate::config::SandboxSettings::load()?;
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
    crate::sandbox::serve(listener, sandbox, app::shutdown_signal()).await?;
    Ok(())
}
