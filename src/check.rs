//! `pisgate check`: the operator's pre-flight. One line per check, `--json` for machines, and
//! an exit code that names the first failure (0 only when every check is OK):
//!
//! | check | fails with exit code |
//! |---|---|
//! | settings (every setting loads and validates) | 2 |
//! | production (no sandbox host, no http, no sandbox-only features) | 3 |
//! | key (the signing key reads, 2048 bits or more) | 4 |
//! | certificate (parses, matches the key, valid now) | 5 |
//! | database (reachable, migrations applied) | 6 |
//! | network (the bank answers at all) | 7 |
//! | credentials (client id and secret accepted) | 8 |
//! | signature (our signature and digest accepted) | 9 |
//! | clock (our clock against the bank's `Date`, and the bank accepts our date) | 10 |
//! | banks (every other configured bank: its client builds, and one signed status read of an unknown payment answers 404) | 11 |
//!
//! The bank checks are one harmless signed call: the status of a payment id nobody has (a 404
//! is the right answer). It never creates, changes or reads anything real, and nothing it
//! prints holds a secret.

use crate::bank::BankError;
use crate::bank::nordea::SigningKey;
use crate::bank::nordea::certificate::EidasCertificate;
use crate::config::{BankEnvironment, Settings};
use secrecy::ExposeSecret as _;
use serde::Serialize;
use std::time::{Duration, SystemTime};

/// More than this between our clock and the bank's fails the clock check.
pub const MAX_CLOCK_DIFFERENCE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Warn,
    Fail,
    Skip,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckLine {
    pub name: &'static str,
    pub outcome: Outcome,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ok: bool,
    pub exit_code: u8,
    pub checks: Vec<CheckLine>,
}

fn exit_code(name: &str) -> u8 {
    match name {
        "settings" => 2,
        "production" => 3,
        "key" => 4,
        "certificate" => 5,
        "database" => 6,
        "network" => 7,
        "credentials" => 8,
        "signature" => 9,
        "clock" => 10,
        "banks" => 11,
        _ => 1,
    }
}

impl Report {
    fn new(checks: Vec<CheckLine>) -> Report {
        let first_failure = checks.iter().find(|c| c.outcome == Outcome::Fail);
        Report {
            ok: first_failure.is_none(),
            exit_code: first_failure.map_or(0, |c| exit_code(c.name)),
            checks,
        }
    }

    /// One line per check: `ok   name  detail`.
    pub fn lines(&self) -> Vec<String> {
        self.checks
            .iter()
            .map(|c| {
                let word = match c.outcome {
                    Outcome::Ok => "ok",
                    Outcome::Warn => "warn",
                    Outcome::Fail => "FAIL",
                    Outcome::Skip => "skip",
                };
                format!("{word:<4} {:<11} {}", c.name, c.detail)
            })
            .collect()
    }
}

fn line(name: &'static str, outcome: Outcome, detail: impl Into<String>) -> CheckLine {
    CheckLine {
        name,
        outcome,
        detail: detail.into(),
    }
}

/// A report for settings that did not load.
pub fn settings_failed(error: &dyn std::fmt::Display) -> Report {
    Report::new(vec![line("settings", Outcome::Fail, error.to_string())])
}

/// Hosts that are not Nordea's production API.
fn looks_like_sandbox(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    host.contains("sandbox")
        || host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified() || is_private(&ip))
}

fn is_private(ip: &std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_private() || v4.is_link_local(),
        std::net::IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

fn production_check(settings: &Settings) -> CheckLine {
    // The deployment's environment is Nordea's where it is configured; without it, production
    // when any of its banks is.
    match &settings.nordea {
        Some(n) if n.environment != BankEnvironment::Production => {
            return line("production", Outcome::Skip, "nordea.environment is sandbox");
        }
        None if !settings
            .banks
            .iter()
            .any(|b| b.protocol.environment() == BankEnvironment::Production) =>
        {
            return line(
                "production",
                Outcome::Skip,
                "every configured bank's environment is sandbox",
            );
        }
        _ => {}
    }
    let mut problems = Vec::new();
    match settings
        .nordea
        .as_ref()
        .map(|n| url::Url::parse(&n.base_url))
    {
        None => {}
        Some(Ok(url)) => {
            if url.scheme() != "https" {
                problems.push("nordea.base_url is not https".to_owned());
            }
            if url.host_str().is_some_and(looks_like_sandbox) {
                problems.push(format!(
                    "nordea.base_url points at a sandbox or local host ({})",
                    url.host_str().unwrap_or_default()
                ));
            }
        }
        Some(Err(_)) => problems.push("nordea.base_url is not a URL".to_owned()),
    }
    if settings.webhooks.allow_insecure_urls {
        problems.push("webhooks.allow_insecure_urls is a local-development feature".to_owned());
    }
    if problems.is_empty() {
        line(
            "production",
            Outcome::Ok,
            "no sandbox hosts or sandbox-only features",
        )
    } else {
        line("production", Outcome::Fail, problems.join("; "))
    }
}

/// What the Nordea lines say when the deployment has no `[nordea]` bank.
const NO_NORDEA: &str = "no [nordea] bank configured";

/// The `[nordea]` bank's signing key and eIDAS certificate.
fn nordea_key_lines(n: &crate::config::NordeaSettings) -> Vec<CheckLine> {
    let mut lines = Vec::new();
    let key = SigningKey::from_text(n.private_key.expose_secret());
    match &key {
        Ok(k) => lines.push(line("key", Outcome::Ok, format!("RSA {} bits", k.bits()))),
        Err(e) => lines.push(line(
            "key",
            Outcome::Fail,
            format!("PISGATE__NORDEA__PRIVATE_KEY_FILE: {e}"),
        )),
    }
    lines.push(match (&n.certificate, &key) {
        (None, _) if n.environment == BankEnvironment::Production => line(
            "certificate",
            Outcome::Warn,
            "no eIDAS certificate configured (PISGATE__NORDEA__CERTIFICATE_FILE)",
        ),
        (None, _) => line("certificate", Outcome::Skip, "none configured"),
        (Some(_), Err(_)) => line("certificate", Outcome::Skip, "no usable key to match"),
        (Some(text), Ok(k)) => {
            match EidasCertificate::from_text(text).and_then(|c| c.check(k, SystemTime::now())) {
                Err(e) => line(
                    "certificate",
                    Outcome::Fail,
                    format!("PISGATE__NORDEA__CERTIFICATE_FILE: {e}"),
                ),
                Ok(c) if !c.qc_statements => line(
                    "certificate",
                    Outcome::Warn,
                    format!("{}: no qcStatements extension (not a QSealC)", c.subject),
                ),
                Ok(c) => line(
                    "certificate",
                    Outcome::Ok,
                    format!(
                        "{}, expires in {} days",
                        c.subject,
                        c.expires_in.as_secs() / 86_400
                    ),
                ),
            }
        }
    });
    lines
}

/// Runs every check on loaded settings.
pub async fn run(settings: &Settings) -> Report {
    let mut checks = vec![line(
        "settings",
        Outcome::Ok,
        "every setting loads and validates",
    )];
    checks.push(production_check(settings));

    match &settings.nordea {
        Some(n) => checks.extend(nordea_key_lines(n)),
        None => {
            for name in ["key", "certificate"] {
                checks.push(line(name, Outcome::Skip, NO_NORDEA));
            }
        }
    }

    let mut database = settings.database.clone();
    let resolved = crate::ledger::resolve_pooler(&mut database).await;
    let mode = match (settings.database.pooler, database.pooler) {
        (crate::config::Pooler::Auto, found) => format!("pooler auto: {}", found.as_str()),
        (given, _) => format!("pooler {}", given.as_str()),
    };
    checks.push(match resolved {
        Err(e) => line("database", Outcome::Fail, format!("{e:#}")),
        Ok(()) => match crate::ledger::connect(&database).await {
            Err(e) => line("database", Outcome::Fail, format!("{e:#}")),
            Ok(pool) => {
                let l = match crate::ledger::pending_migrations(&pool).await {
                    Ok(p) if p.is_empty() => line(
                        "database",
                        Outcome::Ok,
                        format!("reachable ({mode}), migrations applied"),
                    ),
                    Ok(p) => line(
                        "database",
                        Outcome::Fail,
                        format!("{} unapplied migration(s): run `pisgate migrate`", p.len()),
                    ),
                    Err(e) => line("database", Outcome::Fail, format!("{e:#}")),
                };
                pool.close().await;
                l
            }
        },
    });

    let skipped = match settings
        .nordea
        .as_ref()
        .map(crate::app::nordea_client_concrete)
    {
        None => Some(NO_NORDEA.to_owned()),
        Some(Err(e)) => Some(format!("no client: {e:#}")),
        Some(Ok(client)) => {
            checks.extend(bank_checks(&client).await);
            None
        }
    };
    if let Some(why) = skipped {
        for name in ["network", "credentials", "signature", "clock"] {
            checks.push(line(name, Outcome::Skip, why.clone()));
        }
    }
    checks.extend(other_banks(settings).await);
    Report::new(checks)
}

/// One line per configured bank besides `nordea`: the client builds from its settings, and a
/// signed status read of a payment id nobody has is answered 404 (network, certificate or
/// credentials, signature and clock all accepted).
async fn other_banks(settings: &Settings) -> Vec<CheckLine> {
    let others: Vec<_> = settings.banks.iter().filter(|b| b.id != "nordea").collect();
    if others.is_empty() {
        return Vec::new();
    }
    let banks = match crate::app::banks(settings) {
        Ok(b) => b,
        Err(e) => return vec![line("banks", Outcome::Fail, format!("{e:#}"))],
    };
    let probe = crate::bank::BankRef::id_only(
        crate::bank::BankPaymentId::parse("pisgate-check-0000").expect("a valid id"),
    );
    let mut out = Vec::new();
    for b in others {
        let client = banks.client(&b.id);
        let protocol = b.protocol.name();
        if let crate::config::BankProtocolSettings::Op(op) = &b.protocol {
            // OP: a client-credentials token from its token endpoint proves the mutual TLS
            // (our QWAC), the client id and the secret; payment calls are not made.
            let probe = match crate::bank::registry::op_client(&b.id, op) {
                Ok(c) => c.probe().await,
                Err(e) => Err(BankError::Unexpected {
                    status: None,
                    detail: e.to_string(),
                }),
            };
            out.push(match probe {
                Ok(()) => line(
                    "banks",
                    Outcome::Ok,
                    format!(
                        "{} ({protocol}): token endpoint answers over mutual TLS, our client accepted",
                        b.id
                    ),
                ),
                Err(e) => line(
                    "banks",
                    Outcome::Fail,
                    format!("{} ({protocol}): {e}", b.id),
                ),
            });
            continue;
        }
        if client.traits().shopper_token_required {
            // No status read without a shopper's token (SEB): ask for the tokens of an
            // order nobody started instead. SEB refuses the order (400/404) only once the
            // TLS client certificate and our client id and secret are accepted.
            out.push(match client.identification_tokens("pisgate-check-0000").await {
                Err(BankError::Validation { .. } | BankError::NotFound) => line(
                    "banks",
                    Outcome::Ok,
                    format!(
                        "{} ({protocol}): answers over mutual TLS, our client accepted (payment calls need a shopper's token: not checked)",
                        b.id
                    ),
                ),
                Ok(_) => line(
                    "banks",
                    Outcome::Warn,
                    format!("{} ({protocol}): tokens for an order nobody started", b.id),
                ),
                Err(e) => line(
                    "banks",
                    Outcome::Fail,
                    format!("{} ({protocol}): {e}", b.id),
                ),
            });
            continue;
        }
        out.push(match client.status(&probe, None).await {
            Err(BankError::NotFound) => line(
                "banks",
                Outcome::Ok,
                format!("{} ({protocol}): answers, our request accepted", b.id),
            ),
            Ok(_) => line(
                "banks",
                Outcome::Warn,
                format!("{} ({protocol}): a status for a payment nobody made", b.id),
            ),
            Err(e) => line(
                "banks",
                Outcome::Fail,
                format!("{} ({protocol}): {e}", b.id),
            ),
        });
    }
    out
}

async fn bank_checks(client: &crate::bank::nordea::NordeaClient) -> Vec<CheckLine> {
    let (result, bank_date) = client.probe().await;
    let skip = |name| line(name, Outcome::Skip, "not reached");
    let mut out = Vec::new();
    match &result {
        Err(BankError::Unavailable { detail, .. }) => {
            out.push(line(
                "network",
                Outcome::Fail,
                format!("the bank did not answer: {detail}"),
            ));
            out.extend([skip("credentials"), skip("signature"), skip("clock")]);
            return out;
        }
        _ => out.push(line("network", Outcome::Ok, "the bank answers")),
    }
    match &result {
        Err(BankError::BadCredentials { code }) => {
            out.push(line(
                "credentials",
                Outcome::Fail,
                format!(
                    "refused ({code}): client id or secret is wrong; sandbox credentials against production?"
                ),
            ));
            out.extend([skip("signature"), skip("clock")]);
            return out;
        }
        _ => out.push(line(
            "credentials",
            Outcome::Ok,
            "client id and secret accepted",
        )),
    }
    match &result {
        Err(BankError::BadSignature { code }) => {
            out.push(line(
                "signature",
                Outcome::Fail,
                format!(
                    "refused ({code}): the key is not the one registered for this app (or the certificate at Nordea is another)"
                ),
            ));
            out.push(skip("clock"));
            return out;
        }
        _ => out.push(line("signature", Outcome::Ok, "signature accepted")),
    }
    let difference = bank_date.map(|bank| {
        let now = SystemTime::now();
        now.duration_since(bank)
            .or_else(|_| bank.duration_since(now))
            .unwrap_or_default()
    });
    out.push(match (&result, difference) {
        (Err(BankError::ClockRejected { code }), _) => line(
            "clock",
            Outcome::Fail,
            format!("the bank refused our date ({code}): fix this host's clock (NTP)"),
        ),
        (_, Some(d)) if d > MAX_CLOCK_DIFFERENCE => line(
            "clock",
            Outcome::Fail,
            format!(
                "{} s away from the bank's Date header: fix this host's clock (NTP)",
                d.as_secs()
            ),
        ),
        (_, Some(d)) => line(
            "clock",
            Outcome::Ok,
            format!("{} s from the bank's clock", d.as_secs()),
        ),
        (_, None) => line("clock", Outcome::Warn, "the bank sent no Date header"),
    });
    if let Err(e) = &result {
        if !matches!(e, BankError::ClockRejected { .. }) {
            out.push(line(
                "bank",
                Outcome::Fail,
                format!("unexpected answer: {e}"),
            ));
        }
    }
    out
}
