//! The webhook dispatcher: delivers the outbox to merchants' endpoints, at least once, with
//! Standard Webhooks headers.
//!
//! Loop: wake on `LISTEN pisgate_webhooks`, at the next due time, or after `idle_wait`;
//! claim due pending deliveries of enabled endpoints (`FOR UPDATE SKIP LOCKED`, lease and
//! owner set in the same statement, at most as many as there are free concurrency slots);
//! send each outside any transaction; record the outcome only while the row is still ours.
//!
//! One attempt: the body is the event's payload serialised once, and those exact bytes are
//! both signed and sent. Headers: `webhook-id` (the event's `evt_…`, the same on every
//! retry and every endpoint), `webhook-timestamp` (unix seconds of this attempt) and
//! `webhook-signature: v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>`, where
//! the key is the base64-decoded part of the endpoint's `whsec_…` secret; while a rotated
//! endpoint's overlap lasts the header carries two, `v1,<new> v1,<previous>`. Redirects are not
//! followed. Outcomes: 2xx delivered; 410 disables the endpoint and kills its pending
//! deliveries; anything else (other status, timeout, connection error) is retried after
//! `retry_schedule[attempts - 1]` ±20% and is dead once the schedule is exhausted.
//!
//! Unless `allow_insecure_urls` is set, only https on port 443 or 8443 is used and a host name
//! must resolve to a public address (the addresses it resolves to are checked before
//! connecting, so a name that points at a private network is refused at send time as well
//! as at creation; addresses that embed or map others, such as 6to4, Teredo, NAT64 and
//! IPv4-mapped, count as private). Proxy settings from the environment are ignored; only
//! `webhooks.proxy` is used. At most `per_endpoint_concurrency` deliveries of one endpoint,
//! and `per_merchant_concurrency` of one merchant's endpoints, are in flight, so one slow or
//! blackholed endpoint, or one merchant's many, cannot take every slot; an endpoint with no
//! free slot does not wake the dispatcher for its backlog (see `store::next_due`).
//!
//! On stop it lets in-flight sends finish within `request_timeout`, then hands its leases
//! back (due now, no owner) for another replica.
//!
//! This module must never log, store or return a signing secret, and never log an endpoint
//! URL (its query string may carry a merchant's token): log lines carry the webhook id, the
//! endpoint id, the attempt, the outcome and the response status only.

use super::{WorkerContext, backoff, jitter, stopped};
use crate::config::WebhookSettings;
use crate::ledger::crypto::WebhookSecretAad;
use crate::ledger::webhooks::{self as store, Attempt, Claimed, NOTIFY_CHANNEL};
use base64::Engine as _;
use chrono::Utc;
use secrecy::zeroize::Zeroize;
use secrecy::{ExposeSecret, SecretString};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// The `user-agent` of every delivery.
pub const USER_AGENT: &str = concat!("pisgate-webhooks/", env!("CARGO_PKG_VERSION"));
/// The `disabled_reason` of an endpoint that answered 410.
pub const GONE_REASON: &str = "410 Gone from endpoint";
const SECRET_PREFIX: &str = "whsec_";
/// `last_error` is cut to this many characters.
const ERROR_MAX_CHARS: usize = 300;
/// How often the queue-depth gauge is refreshed.
const DEPTH_EVERY: Duration = Duration::from_secs(5);
/// How often deliveries stranded on a disabled or deleted endpoint are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// The shortest nap when work is due but none could be claimed (another replica holds it).
const MIN_NAP: Duration = Duration::from_millis(100);

/// The `webhook-signature` header: one `v1,…` per secret, space-separated, as Standard
/// Webhooks specifies for rotations (receivers accept the request if any one verifies).
pub fn signatures<'a>(
    secrets: impl IntoIterator<Item = &'a SecretString>,
    webhook_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, SignError> {
    let signed: Result<Vec<String>, SignError> = secrets
        .into_iter()
        .map(|s| sign(s, webhook_id, timestamp, body))
        .collect();
    Ok(signed?.join(" "))
}

/// Why a signature could not be made. Never contains the secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignError {
    #[error("the signing secret is not `whsec_` followed by base64")]
    MalformedSecret,
}

/// The `webhook-signature` value for one attempt: `v1,<base64 HMAC-SHA256>` over
/// `"{webhook_id}.{timestamp}.{body}"`, keyed with the decoded part of `whsec_<base64>`.
pub fn sign(
    secret: &SecretString,
    webhook_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, SignError> {
    let text = secret.expose_secret();
    let encoded = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
    let mut key_bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| SignError::MalformedSecret)?;
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key_bytes);
    key_bytes.zeroize();
    let mut ctx = aws_lc_rs::hmac::Context::with_key(&key);
    ctx.update(webhook_id.as_bytes());
    ctx.update(b".");
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    Ok(format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
    ))
}

/// Resolves host names and keeps only public addresses; none left is an error, so a name
/// pointing at a private network is never connected to. The one exception is the egress
/// proxy the operator configured (`proxy_host`), which usually sits on the private network:
/// through it, the endpoint's name is resolved by the proxy, whose own destination policy
/// then applies (README, "Webhooks").
struct PublicOnlyResolver {
    proxy_host: Option<String>,
}

impl reqwest::dns::Resolve for PublicOnlyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let trusted = self
            .proxy_host
            .as_deref()
            .is_some_and(|p| p.eq_ignore_ascii_case(&host));
        Box::pin(async move {
            let public: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| trusted || store::is_public_ip(a.ip()))
                .collect();
            if public.is_empty() {
                return Err("the endpoint's host name resolves to no public address".into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// One client for every delivery of this dispatcher.
pub fn http_client(settings: &WebhookSettings) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .timeout(settings.request_timeout)
        .connect_timeout(settings.request_timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(USER_AGENT);
    // Never a proxy from the environment (HTTPS_PROXY & co.): the public-address check would
    // then only see the proxy. Only the one the operator names in pisgate's own settings.
    builder = match &settings.proxy {
        Some(proxy) => builder.proxy(reqwest::Proxy::all(proxy.as_str())?),
        None => builder.no_proxy(),
    };
    if !settings.allow_insecure_urls {
        let proxy_host = settings
            .proxy
            .as_deref()
            .and_then(|p| reqwest::Url::parse(p).ok())
            .and_then(|u| u.host_str().map(str::to_owned));
        builder = builder
            .https_only(true)
            .dns_resolver(PublicOnlyResolver { proxy_host });
    }
    builder.build()
}

pub async fn run(ctx: WorkerContext, mut stop: watch::Receiver<bool>) {
    let settings = ctx.settings.webhooks.clone();
    let client = match http_client(&settings) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook HTTP client; the dispatcher is not running");
            stopped(&mut stop).await;
            return;
        }
    };
    let wake = ctx.listener.wake(NOTIFY_CHANNEL);
    let slots = Arc::new(Semaphore::new(settings.concurrency));
    let mut inflight: JoinSet<()> = JoinSet::new();
    let mut depth_tick = tokio::time::interval(DEPTH_EVERY);
    depth_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweep_tick = tokio::time::interval(SWEEP_EVERY);
    sweep_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut db_failures = 0u32;
    let caps = store::Caps {
        per_endpoint: i64::from(settings.per_endpoint_concurrency),
        per_merchant: i64::from(settings.per_merchant_concurrency),
    };
    tracing::info!(owner = %ctx.owner, "webhook dispatcher started");

    loop {
        if *stop.borrow() {
            break;
        }
        while let Some(done) = inflight.try_join_next() {
            reap(done);
        }
        let free = slots.available_permits().min(settings.batch_size as usize);
        let mut nap = settings.idle_wait;
        if free > 0 {
            let claimed =
                store::claim_due(&ctx.pool, &ctx.owner, settings.lease, free as i64, caps).await;
            match claimed {
                Ok(batch) => {
                    db_failures = 0;
                    let filled = batch.len() == free;
                    for delivery in batch {
                        let Ok(permit) = slots.clone().try_acquire_owned() else {
                            // Cannot happen (we claimed no more than the free slots); the
                            // lease brings the delivery back if it ever does.
                            tracing::error!("no free slot for a claimed webhook delivery");
                            break;
                        };
                        let (ctx, client) = (ctx.clone(), client.clone());
                        inflight.spawn(async move {
                            attempt(&ctx, &client, delivery).await;
                            drop(permit);
                        });
                    }
                    if filled {
                        // There may be more due: claim again as soon as a slot is free.
                        continue;
                    }
                    nap = match store::next_due(&ctx.pool, caps).await {
                        Ok(Some(at)) => (at - Utc::now())
                            .to_std()
                            .unwrap_or(Duration::ZERO)
                            .clamp(MIN_NAP, settings.idle_wait),
                        Ok(None) => settings.idle_wait,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot read when the next webhook is due");
                            settings.idle_wait
                        }
                    };
                }
                Err(e) => {
                    db_failures += 1;
                    nap = backoff(Duration::from_secs(1), Duration::from_secs(30), db_failures);
                    tracing::warn!(error = %e, retry_in = ?nap, "cannot claim webhook deliveries");
                }
            }
        }
        let has_free = slots.available_permits() > 0;
        tokio::select! {
            () = stopped(&mut stop) => break,
            () = wake.notified(), if has_free => {}
            () = tokio::time::sleep(nap), if has_free => {}
            // A finished attempt frees a slot and may have set an earlier due time.
            Some(done) = inflight.join_next(), if !inflight.is_empty() => reap(done),
            _ = depth_tick.tick() => refresh_depth(&ctx).await,
            _ = sweep_tick.tick() => sweep(&ctx).await,
        }
    }

    // Stopping: let in-flight sends finish (each is bounded by request_timeout), then hand
    // the leases back so another replica can take them at once.
    let drain = settings.request_timeout + Duration::from_secs(2);
    let drained = tokio::time::timeout(drain, async {
        while let Some(done) = inflight.join_next().await {
            reap(done);
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            in_flight = inflight.len(),
            "webhook sends did not finish in time; abandoning them"
        );
        inflight.shutdown().await;
    }
    match store::release(&ctx.pool, &ctx.owner).await {
        Ok(n) => tracing::info!(released = n, "webhook dispatcher stopped"),
        Err(e) => {
            tracing::warn!(error = %e, "cannot release webhook leases; they will run out on their own");
        }
    }
}

fn reap(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        tracing::error!(error = %e, "a webhook delivery task panicked; its lease will run out");
    }
}

async fn refresh_depth(ctx: &WorkerContext) {
    match store::queue_depth(&ctx.pool).await {
        Ok(n) => metrics::gauge!("pisgate_webhook_queue_depth").set(n as f64),
        Err(e) => tracing::warn!(error = %e, "cannot read the webhook queue depth"),
    }
}

async fn sweep(ctx: &WorkerContext) {
    match store::sweep_orphans(&ctx.pool).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            count = n,
            "pending webhook deliveries of disabled or deleted endpoints marked dead"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot sweep webhook deliveries"),
    }
}

/// What one attempt came to.
#[derive(Debug)]
enum Outcome {
    Delivered(u16),
    Gone,
    Failed { status: Option<u16>, error: String },
}

/// Sends one claimed delivery and records what happened.
#[tracing::instrument(
    skip_all,
    fields(
        webhook_id = %store::webhook_id(d.event_id),
        endpoint_id = %d.endpoint_id,
        event_type = %d.event_type,
        attempt = d.attempts + 1,
    )
)]
async fn attempt(ctx: &WorkerContext, client: &reqwest::Client, d: Claimed) {
    crate::telemetry::link_to_creation(&tracing::Span::current(), d.trace_parent.as_deref());
    let settings = &ctx.settings.webhooks;
    let webhook_id = store::webhook_id(d.event_id);
    let outcome = send(ctx, client, &d, &webhook_id).await;
    let owner: &str = &ctx.owner;
    let (label, status, recorded) = match &outcome {
        Outcome::Delivered(status) => {
            let recorded = store::record_attempt(
                &ctx.pool,
                d.endpoint_id,
                d.event_id,
                owner,
                Attempt::Delivered {
                    response_status: i32::from(*status),
                },
            )
            .await;
            let lag = (Utc::now() - d.event_created_at)
                .to_std()
                .unwrap_or_default();
            metrics::histogram!("pisgate_webhook_delivery_lag_seconds").record(lag.as_secs_f64());
            ("delivered", Some(*status), recorded)
        }
        Outcome::Gone => {
            let recorded = store::endpoint_gone(
                &ctx.pool,
                d.endpoint_id,
                d.event_id,
                owner,
                &d.url,
                GONE_REASON,
            )
            .await;
            if let Ok(true) = recorded {
                tracing::warn!("webhook endpoint answered 410 Gone; endpoint disabled");
            }
            ("gone", Some(410), recorded.map(|_| true))
        }
        Outcome::Failed { status, error } => {
            let next = usize::try_from(d.attempts)
                .ok()
                .and_then(|i| settings.retry_schedule.get(i));
            let response_status = status.map(i32::from);
            let (label, attempt) = match next {
                Some(wait) => (
                    "failed",
                    Attempt::Retry {
                        response_status,
                        error,
                        retry_in: jitter(*wait, 20),
                    },
                ),
                None => (
                    "dead",
                    Attempt::Dead {
                        response_status,
                        error,
                    },
                ),
            };
            let recorded =
                store::record_attempt(&ctx.pool, d.endpoint_id, d.event_id, owner, attempt).await;
            (label, *status, recorded)
        }
    };
    metrics::counter!("pisgate_webhook_deliveries_total", "outcome" => label).increment(1);
    let error = match &outcome {
        Outcome::Failed { error, .. } => Some(error.as_str()),
        _ => None,
    };
    match (label, recorded) {
        ("delivered", Ok(true)) => {
            tracing::info!(outcome = label, status, "webhook attempt");
        }
        (_, Ok(true)) => {
            tracing::warn!(outcome = label, status, error, "webhook attempt");
        }
        (_, Ok(false)) => tracing::info!(
            outcome = label,
            status,
            error,
            "webhook attempt; the delivery is no longer ours (lease lost, endpoint deleted or replayed), result not recorded"
        ),
        (_, Err(e)) => tracing::error!(
            outcome = label,
            status,
            error = %e,
            "webhook attempt; cannot record it (the lease will bring it back)"
        ),
    }
}

/// Signs and sends one attempt. No transaction is open here.
async fn send(
    ctx: &WorkerContext,
    client: &reqwest::Client,
    d: &Claimed,
    webhook_id: &str,
) -> Outcome {
    let failed = |error: String| Outcome::Failed {
        status: None,
        error: truncate(error),
    };
    let settings = &ctx.settings.webhooks;
    if let Err(why) = destination_allowed(&d.url, settings.allow_insecure_urls) {
        return failed(format!("the endpoint URL is not allowed: {why}"));
    }
    // Never sign and send a payload that is not the one written (edited in the database),
    // nor one without its ledger MAC: every event is written with one, and those from before
    // the binding were sealed at that upgrade (`ledger::seal`); a missing MAC was removed,
    // e.g. to forge a `payment.paid` with a date from before, whatever its `created_at`.
    let ring = crate::ledger::keys::installed();
    // Never sign with the merchant's secret for a URL the merchant did not give: an
    // endpoint pointed elsewhere in SQL fails its ledger MAC.
    if let Some(why) = crate::ledger::binding::endpoint_url_problem(
        ring.as_deref(),
        d.endpoint_id,
        d.merchant_id,
        &d.url,
        d.url_mac.as_deref(),
        d.url_mac_key_id.as_deref(),
    ) {
        tracing::error!(endpoint_id = %d.endpoint_id, why, "webhook event not sent: run `pisgate ledger verify`");
        metrics::counter!("pisgate_ledger_binding_mismatches_total").increment(1);
        return failed(format!("{why}: not sent"));
    }
    if let Some(keys) = ring {
        let why = match (d.payload_mac.is_some(), d.payload_intact(&keys)) {
            (false, _) => Some("the event has no ledger MAC (removed, or never sealed)"),
            (true, Some(true)) => None,
            (true, Some(false)) => {
                Some("the event's payload does not match its ledger MAC (edited)")
            }
            (true, None) if d.mac_key_id.as_deref().is_some_and(|k| keys.is_retired(k)) => Some(
                "the event is sealed under a retired ledger key (PISGATE__LEDGER__RETIRED_KEY_IDS; `pisgate ledger reseal` moves it)",
            ),
            (true, None) => Some(
                "the event's MAC key is not in the ledger key ring (PISGATE__LEDGER__PREVIOUS_KEYS)",
            ),
        };
        if let Some(why) = why {
            tracing::error!(event_id = %d.event_id, why, "webhook event not sent");
            metrics::counter!("pisgate_ledger_binding_mismatches_total").increment(1);
            return failed(format!("{why}: not sent"));
        }
    }
    let aad = WebhookSecretAad {
        merchant_id: d.merchant_id,
        endpoint_id: d.endpoint_id,
    };
    let secret = match ctx
        .cipher
        .decrypt_webhook_secret(&d.key_id, &d.sealed_secret, &aad)
    {
        Ok(s) => s,
        Err(e) => return failed(format!("cannot open the endpoint's signing secret: {e}")),
    };
    // During a rotation's overlap the replaced secret signs too, after the new one.
    let previous = match (&d.previous_key_id, &d.previous_sealed_secret) {
        (Some(key_id), Some(sealed)) => {
            match ctx.cipher.decrypt_webhook_secret(key_id, sealed, &aad) {
                Ok(s) => Some(s),
                Err(e) => {
                    return failed(format!(
                        "cannot open the endpoint's previous signing secret: {e}"
                    ));
                }
            }
        }
        _ => None,
    };
    let body = match serde_json::to_vec(&d.payload) {
        Ok(b) => b,
        Err(e) => return failed(format!("cannot serialise the event: {e}")),
    };
    let timestamp = Utc::now().timestamp();
    let signature = match signatures(
        std::iter::once(&secret).chain(previous.as_ref()),
        webhook_id,
        timestamp,
        &body,
    ) {
        Ok(s) => s,
        Err(e) => return failed(e.to_string()),
    };
    drop(secret);
    drop(previous);
    let sent = client
        .post(&d.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", webhook_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    match sent {
        Ok(response) => {
            let status = response.status();
            if status.is_success() {
                Outcome::Delivered(status.as_u16())
            } else if status == reqwest::StatusCode::GONE {
                Outcome::Gone
            } else {
                Outcome::Failed {
                    status: Some(status.as_u16()),
                    error: truncate(format!("the endpoint answered {status}")),
                }
            }
        }
        Err(e) => failed(describe(e, settings.request_timeout)),
    }
}

/// The same rules as at creation, checked again at send time (settings may have changed
/// since): https and no non-public IP literal unless insecure URLs are allowed.
fn destination_allowed(url: &str, allow_insecure: bool) -> Result<(), &'static str> {
    let url = url::Url::parse(url).map_err(|_| "not a URL")?;
    if allow_insecure {
        return Ok(());
    }
    if url.scheme() != "https" {
        return Err("https is required");
    }
    if !url
        .port_or_known_default()
        .is_some_and(|p| store::ALLOWED_PORTS.contains(&p))
    {
        return Err("only ports 443 and 8443 are allowed");
    }
    let ip = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
        Some(url::Host::Domain(_)) => None,
        None => return Err("no host"),
    };
    match ip {
        Some(ip) if !store::is_public_ip(ip) => Err("not a public address"),
        _ => Ok(()),
    }
}

/// A transport error as `last_error`: its kind and innermost cause, without the URL.
fn describe(e: reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("timed out after {timeout:?}");
    }
    let kind = if e.is_connect() {
        "connection failed"
    } else if e.is_redirect() {
        "redirect refused"
    } else if e.is_body() || e.is_decode() {
        "the answer could not be read"
    } else {
        "request failed"
    };
    let e = e.without_url();
    let mut innermost: Option<String> = None;
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        innermost = Some(s.to_string());
        source = s.source();
    }
    match innermost {
        Some(cause) => truncate(format!("{kind}: {cause}")),
        None => truncate(format!("{kind}: {e}")),
    }
}

fn truncate(mut text: String) -> String {
    if let Some((i, _)) = text.char_indices().nth(ERROR_MAX_CHARS) {
        text.truncate(i);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The configured egress proxy usually has a private address (a Service in the cluster):
    /// the resolver's public-only rule must not refuse the proxy itself, or no webhook ever
    /// leaves. Through the proxy, the endpoint's name goes to the proxy in the CONNECT.
    #[tokio::test]
    async fn webhooks_reach_a_configured_proxy_on_a_private_address() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 1024];
            let n = socket.read(&mut buf).await.unwrap();
            let _ = socket
                .write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
                .await;
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let settings = WebhookSettings {
            enabled: true,
            request_timeout: Duration::from_secs(3),
            retry_schedule: vec![],
            lease: Duration::from_secs(10),
            batch_size: 1,
            concurrency: 1,
            idle_wait: Duration::from_secs(1),
            allow_insecure_urls: false,
            per_endpoint_concurrency: 1,
            per_merchant_concurrency: 1,
            proxy: Some(format!("http://localhost:{port}")),
        };
        let client = http_client(&settings).unwrap();
        let _ = client.post("https://hooks.example/pisgate").send().await;
        let request = tokio::time::timeout(Duration::from_secs(3), seen)
            .await
            .expect("the proxy was never reached")
            .unwrap();
        assert!(
            request.starts_with("CONNECT hooks.example:443 "),
            "{request}"
        );
    }

    /// The example of the Standard Webhooks specification's reference libraries.
    #[test]
    fn signatures_match_the_standard_webhooks_reference_vector() {
        let secret = SecretString::from("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned());
        let signature = sign(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn during_an_overlap_both_secrets_sign_space_separated_new_first() {
        let new = SecretString::from("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned());
        let old = SecretString::from("whsec_c2VjcmV0LW9mLXRoZS1wcmV2aW91cy1vbmU=".to_owned());
        let one = |s: &SecretString| sign(s, "msg_x", 1_614_265_330, b"{}").unwrap();
        let both = signatures([&new, &old], "msg_x", 1_614_265_330, b"{}").unwrap();
        assert_eq!(both, format!("{} {}", one(&new), one(&old)));
        assert_eq!(
            signatures([&new], "msg_x", 1_614_265_330, b"{}").unwrap(),
            one(&new)
        );
    }

    #[test]
    fn a_malformed_secret_is_an_error_that_does_not_quote_it() {
        let secret = SecretString::from("whsec_not*base64*at*all".to_owned());
        let err = sign(&secret, "evt_x", 1, b"{}").unwrap_err();
        assert!(!err.to_string().contains("not*base64"), "{err}");
    }

    #[test]
    fn long_errors_are_cut() {
        let cut = truncate("é".repeat(1000));
        assert_eq!(cut.chars().count(), ERROR_MAX_CHARS + 1);
        assert_eq!(truncate("short".into()), "short");
    }

    #[test]
    fn destinations_are_checked_again_at_send_time() {
        assert!(destination_allowed("https://example.com/h", false).is_ok());
        assert!(destination_allowed("http://example.com/h", false).is_err());
        assert!(destination_allowed("https://127.0.0.1/h", false).is_err());
        assert!(destination_allowed("https://[::1]/h", false).is_err());
        assert!(destination_allowed("http://127.0.0.1:9/h", true).is_ok());
    }

    #[tokio::test]
    async fn names_that_resolve_only_to_private_addresses_are_refused() {
        use reqwest::dns::Resolve as _;
        let refused = PublicOnlyResolver { proxy_host: None }
            .resolve("localhost".parse().unwrap())
            .await;
        assert!(refused.is_err());
        // Only the configured proxy's own name is exempt, not every private name.
        let resolver = PublicOnlyResolver {
            proxy_host: Some("egress.internal".into()),
        };
        assert!(
            resolver
                .resolve("localhost".parse().unwrap())
                .await
                .is_err()
        );
        let proxy = PublicOnlyResolver {
            proxy_host: Some("LocalHost".into()),
        };
        assert!(proxy.resolve("localhost".parse().unwrap()).await.is_ok());
    }
}
