//! Merchant webhooks: the merchants' endpoints, the outbox (one event per change, written in
//! the transaction of the change) and its deliveries to each endpoint.
//!
//! [`enqueue`] is called by [`crate::ledger::payments::transition`] and friends inside their
//! transaction, so a status change and its webhook are committed together or not at all;
//! the dispatcher (`crate::workers::webhooks`) delivers them afterwards, at least once.
//!
//! Deliveries are claimed like the poller claims payments: [`claim_due`] moves
//! `next_attempt_at` to the end of a lease and names the owner in one statement, and every
//! outcome is recorded only while the row is still that owner's (`WHERE owner = $me`), so a
//! delivery whose lease ran out, whose endpoint was deleted or that was replayed meanwhile is
//! never overwritten by a late answer. A delivery is `pending` exactly while it has a
//! `next_attempt_at`.
//!
//! Endpoint secrets are stored sealed (see [`crate::ledger::crypto`]); nothing here ever
//! sees them in the clear, and nothing here calls the network.

use super::Db;
use crate::ledger::api_keys::{ManageError, Manager, lock_for};
use crate::ledger::binding::{self, WebhookEventFacts};
use crate::ledger::crypto::Sealed;
use crate::ledger::payments::PaymentRecord;
use crate::ledger::view::PaymentView;
use crate::ledger::{events, keys};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use sqlx::PgConnection;
use std::time::Duration;
use uuid::Uuid;

/// The channel the dispatcher listens on; a notification means "deliveries are due".
pub const NOTIFY_CHANNEL: &str = "pisgate_webhooks";

/// Every event type a merchant can subscribe to.
pub const EVENT_TYPES: &[&str] = &[
    "payment.authorized",
    "payment.paid",
    "payment.rejected",
    "payment.authorization_failed",
    "payment.cancelled",
    "payment.expired",
    "payment.failed",
    "payment.occurrence_paid",
];

/// The `webhook-id` of an event: stable across retries and endpoints.
pub fn webhook_id(event_id: Uuid) -> String {
    format!("evt_{}", event_id.simple())
}

/// Writes an event about `payment` (as it is after the change) and one pending delivery per
/// enabled endpoint of the merchant subscribed to `event_type`, in the caller's transaction.
/// `extra` is merged into `data` (e.g. `previous_status`, `ledger_seq`).
pub async fn enqueue(
    conn: &mut PgConnection,
    payment: &PaymentRecord,
    event_type: &str,
    extra: Value,
) -> Result<Uuid, sqlx::Error> {
    debug_assert!(EVENT_TYPES.contains(&event_type), "{event_type}");
    let id = Uuid::now_v7();
    let created_at = now_millis();
    let mut data = serde_json::to_value(PaymentView::from(payment)).unwrap_or_else(|_| json!({}));
    if let (Some(data), Value::Object(extra)) = (data.as_object_mut(), extra) {
        data.extend(extra);
    }
    let payload = json!({
        "id": webhook_id(id),
        "type": event_type,
        "timestamp": created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "data": data,
    });
    let (mac_key_id, payload_mac) = payload_mac(
        conn,
        &WebhookEventFacts {
            id,
            merchant_id: payment.merchant_id,
            payment_id: Some(payment.id),
            event_type,
            created_at,
            payload: &payload,
        },
    )
    .await?;
    let queued = sqlx::query_scalar!(
        r#"WITH ev AS (
               INSERT INTO webhook_events (id, merchant_id, payment_id, event_type, payload, created_at,
                                           trace_parent, payload_mac, mac_key_id)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
               RETURNING id, merchant_id, event_type, created_at
           ), d AS (
               INSERT INTO webhook_deliveries (endpoint_id, event_id, next_attempt_at, created_at)
               SELECT e.id, ev.id, ev.created_at, ev.created_at
               FROM ev JOIN webhook_endpoints e
                 ON e.merchant_id = ev.merchant_id
                AND e.status = 'enabled'
                AND (cardinality(e.event_types) = 0 OR ev.event_type = ANY (e.event_types))
               RETURNING 1
           )
           SELECT count(*) AS "n!" FROM d"#,
        id,
        payment.merchant_id,
        payment.id,
        event_type,
        payload,
        created_at,
        payment.trace_parent,
        &payload_mac[..],
        mac_key_id,
    )
    .fetch_one(&mut *conn)
    .await?;
    if queued > 0 {
        // Delivered at commit, so the dispatcher wakes only for committed work.
        sqlx::query!("SELECT pg_notify($1, '') AS \"n: ()\"", NOTIFY_CHANNEL)
            .fetch_one(&mut *conn)
            .await?;
    }
    Ok(id)
}

/// The webhook event's MAC under the installed ledger key ([`binding::webhook_mac`]) over the
/// payload as jsonb will give it back (one round trip only when jsonb could rewrite it).
async fn payload_mac(
    conn: &mut PgConnection,
    e: &WebhookEventFacts<'_>,
) -> Result<(String, [u8; 32]), sqlx::Error> {
    let keys = keys::installed().ok_or_else(|| {
        sqlx::Error::Configuration("no ledger key is installed (ledger::keys::install)".into())
    })?;
    let key_id = keys.current_id().to_owned();
    let stored;
    let payload = if events::jsonb_stable(e.payload) {
        e.payload
    } else {
        stored = sqlx::query_scalar!(r#"SELECT $1::jsonb AS "p!""#, e.payload)
            .fetch_one(&mut *conn)
            .await?;
        &stored
    };
    let mac = binding::webhook_mac(&keys, &key_id, &WebhookEventFacts { payload, ..*e })
        .expect("the current key is in its own ring");
    Ok((key_id, mac))
}

fn now_millis() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}

/// The ports a webhook may be sent to in production (unless insecure URLs are allowed).
pub const ALLOWED_PORTS: [u16; 2] = [443, 8443];

/// Whether an IP address is one a webhook may be sent to in production: not loopback,
/// private, link-local, shared (CGNAT), unspecified, multicast, broadcast, documentation,
/// benchmarking or reserved, and not an IPv6 form of one of those. Used on endpoint URLs at
/// creation and on every address the dispatcher resolves before it connects.
pub fn is_public_ip(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_ip(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // unique local fc00::/7, link-local fe80::/10, site-local fec0::/10
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                // documentation 2001:db8::/32
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                // NAT64 64:ff9b::/96 (and the local-use 64:ff9b:1::/48) and the deprecated
                // IPv4-compatible ::/96 embed IPv4
                || (s[0] == 0x0064 && s[1] == 0xff9b)
                || s[..6].iter().all(|x| *x == 0)
                // 6to4 2002::/16 and Teredo 2001::/32 embed an IPv4 address (of a relay or
                // of the target) that may be a private one: never a webhook destination
                || s[0] == 0x2002
                || (s[0] == 0x2001 && s[1] == 0x0000)
                // ORCHID 2001:10::/28, 2001:20::/28; discard-only 100::/64
                || (s[0] == 0x2001 && (s[1] & 0xffe0) == 0x0000)
                || (s[0] == 0x2001 && (s[1] & 0xfff0) == 0x0010)
                || (s[0] == 0x2001 && (s[1] & 0xfff0) == 0x0020)
                || (s[0] == 0x0100 && s[1..4].iter().all(|x| *x == 0)))
        }
    }
}

/// `evt_<uuid simple>` back to the event id; anything else is no event of ours.
pub fn parse_webhook_id(text: &str) -> Option<Uuid> {
    let simple = text.strip_prefix("evt_")?;
    if simple.len() != 32 {
        return None;
    }
    Uuid::try_parse(simple).ok()
}

/// A merchant's webhook endpoint, without its secret.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: Uuid,
    pub merchant_id: Uuid,
    pub url: String,
    pub description: Option<String>,
    /// Empty: every event type.
    pub event_types: Vec<String>,
    /// `enabled`, `disabled` (by the dispatcher, e.g. after a 410) or `deleted`.
    pub status: String,
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Until when the secret replaced by the last rotation still signs (may be past).
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
}

/// What the API hands over to create an endpoint; the secret is already sealed.
pub struct NewEndpoint<'a> {
    pub id: Uuid,
    pub merchant_id: Uuid,
    pub url: &'a str,
    pub description: Option<&'a str>,
    pub event_types: &'a [String],
    pub secret: &'a Sealed,
}

/// The answer to a create (or re-enable) that respects the per-merchant cap.
#[derive(Debug)]
pub enum CapOutcome<T> {
    Done(T),
    /// The merchant already has `limit` enabled endpoints.
    TooMany {
        limit: i64,
    },
}

/// Serialises cap checks of one merchant (the merchant row, without blocking the foreign-key
/// checks of concurrent inserts that reference it) and counts its enabled endpoints.
async fn lock_and_count_enabled(
    conn: &mut PgConnection,
    merchant_id: Uuid,
) -> Result<i64, sqlx::Error> {
    sqlx::query!(
        r#"SELECT id FROM merchants WHERE id = $1 FOR NO KEY UPDATE"#,
        merchant_id
    )
    .fetch_optional(&mut *conn)
    .await?;
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM webhook_endpoints
           WHERE merchant_id = $1 AND status = 'enabled'"#,
        merchant_id
    )
    .fetch_one(&mut *conn)
    .await
}

/// The MAC of a webhook endpoint's URL under the installed ring's current key, and that
/// key's id: what creating an endpoint and changing its URL store beside it.
fn seal_endpoint_url(
    endpoint_id: Uuid,
    merchant_id: Uuid,
    url: &str,
) -> Result<(Vec<u8>, String), sqlx::Error> {
    let ring = crate::ledger::keys::installed().ok_or_else(|| {
        sqlx::Error::Configuration("no ledger key is installed (ledger::keys::install)".into())
    })?;
    let key_id = ring.current_id().to_owned();
    let mac = binding::endpoint_url_mac(&ring, &key_id, endpoint_id, merchant_id, url).ok_or_else(
        || sqlx::Error::Configuration("the ledger ring lacks its current key".into()),
    )?;
    Ok((mac.to_vec(), key_id))
}

/// Creates an endpoint unless the merchant already has `max_enabled` enabled ones.
pub async fn create_endpoint(
    pool: &Db,
    by: Manager<'_>,
    new: NewEndpoint<'_>,
    max_enabled: i64,
) -> Result<CapOutcome<Endpoint>, ManageError> {
    debug_assert_eq!(by.merchant_id, new.merchant_id);
    let mut tx = pool.begin().await?;
    lock_for(&mut tx, by).await?;
    if lock_and_count_enabled(&mut tx, new.merchant_id).await? >= max_enabled {
        return Ok(CapOutcome::TooMany { limit: max_enabled });
    }
    let (url_mac, url_mac_key_id) = seal_endpoint_url(new.id, new.merchant_id, new.url)?;
    let endpoint = sqlx::query_as!(
        Endpoint,
        r#"INSERT INTO webhook_endpoints (id, merchant_id, url, description, event_types, key_id,
                                          secret, url_mac, url_mac_key_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           RETURNING id, merchant_id, url, description, event_types, status, disabled_reason,
                     created_at, updated_at, previous_secret_expires_at"#,
        new.id,
        new.merchant_id,
        new.url,
        new.description,
        new.event_types,
        new.secret.key_id,
        new.secret.bytes,
        url_mac,
        url_mac_key_id,
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(CapOutcome::Done(endpoint))
}

/// A merchant's endpoint (deleted ones included); another merchant's id is not found.
pub async fn get_endpoint(
    pool: &Db,
    merchant_id: Uuid,
    id: Uuid,
) -> Result<Option<Endpoint>, sqlx::Error> {
    sqlx::query_as!(
        Endpoint,
        r#"SELECT id, merchant_id, url, description, event_types, status, disabled_reason,
                  created_at, updated_at, previous_secret_expires_at
           FROM webhook_endpoints WHERE id = $1 AND merchant_id = $2"#,
        id,
        merchant_id,
    )
    .fetch_optional(pool)
    .await
}

/// Newest first, at most `limit`, after the keyset cursor `(created_at, id)`. Without a
/// `status`, deleted endpoints are left out.
pub async fn list_endpoints(
    pool: &Db,
    merchant_id: Uuid,
    status: Option<&str>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<Endpoint>, sqlx::Error> {
    let (after_ts, after_id) = after.unzip();
    sqlx::query_as!(
        Endpoint,
        r#"SELECT id, merchant_id, url, description, event_types, status, disabled_reason,
                  created_at, updated_at, previous_secret_expires_at
           FROM webhook_endpoints
           WHERE merchant_id = $1
             AND (CASE WHEN $2::text IS NULL THEN status <> 'deleted' ELSE status = $2 END)
             AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4::uuid))
           ORDER BY created_at DESC, id DESC
           LIMIT $5"#,
        merchant_id,
        status,
        after_ts,
        after_id,
        limit,
    )
    .fetch_all(pool)
    .await
}

/// Soft-deletes an endpoint; its pending deliveries die with it. False when the merchant has
/// no such endpoint. Deleting a deleted endpoint changes nothing.
pub async fn delete_endpoint(pool: &Db, by: Manager<'_>, id: Uuid) -> Result<bool, ManageError> {
    let merchant_id = by.merchant_id;
    let mut tx = pool.begin().await?;
    lock_for(&mut tx, by).await?;
    let status = sqlx::query_scalar!(
        r#"SELECT status FROM webhook_endpoints
           WHERE id = $1 AND merchant_id = $2 FOR UPDATE"#,
        id,
        merchant_id,
    )
    .fetch_optional(&mut *tx)
    .await?;
    match status.as_deref() {
        None => return Ok(false),
        Some("deleted") => return Ok(true),
        Some(_) => {}
    }
    sqlx::query!(
        "UPDATE webhook_endpoints SET status = 'deleted' WHERE id = $1",
        id
    )
    .execute(&mut *tx)
    .await?;
    kill_pending(&mut tx, id, "endpoint deleted").await?;
    tx.commit().await?;
    Ok(true)
}

/// Turns a disabled endpoint back on (not a deleted one), within the cap. `None` when the
/// merchant has no such endpoint or it is deleted.
pub async fn enable_endpoint_in(
    tx: &mut PgConnection,
    merchant_id: Uuid,
    id: Uuid,
    max_enabled: i64,
) -> Result<Option<CapOutcome<Endpoint>>, sqlx::Error> {
    let enabled = lock_and_count_enabled(tx, merchant_id).await?;
    let current = sqlx::query_scalar!(
        r#"SELECT status FROM webhook_endpoints
           WHERE id = $1 AND merchant_id = $2 FOR UPDATE"#,
        id,
        merchant_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    match current.as_deref() {
        None | Some("deleted") => return Ok(None),
        Some("disabled") if enabled >= max_enabled => {
            return Ok(Some(CapOutcome::TooMany { limit: max_enabled }));
        }
        _ => {}
    }
    let endpoint = sqlx::query_as!(
        Endpoint,
        r#"UPDATE webhook_endpoints SET status = 'enabled', disabled_reason = NULL
           WHERE id = $1
           RETURNING id, merchant_id, url, description, event_types, status, disabled_reason,
                     created_at, updated_at, previous_secret_expires_at"#,
        id,
    )
    .fetch_one(&mut *tx)
    .await?;
    Ok(Some(CapOutcome::Done(endpoint)))
}

/// [`enable_endpoint_in`] in a transaction of its own.
pub async fn enable_endpoint(
    pool: &Db,
    by: Manager<'_>,
    id: Uuid,
    max_enabled: i64,
) -> Result<Option<CapOutcome<Endpoint>>, ManageError> {
    let mut tx = pool.begin().await?;
    lock_for(&mut tx, by).await?;
    let out = enable_endpoint_in(&mut tx, by.merchant_id, id, max_enabled).await?;
    tx.commit().await?;
    Ok(out)
}

/// Replaces an endpoint's signing secret with `secret` (already sealed). The secret it
/// replaces keeps signing beside it until `overlap` has passed; with no overlap it stops at
/// once. `None` when the merchant has no such endpoint or it is deleted.
pub async fn rotate_secret(
    pool: &Db,
    by: Manager<'_>,
    id: Uuid,
    secret: &Sealed,
    overlap: Duration,
) -> Result<Option<Endpoint>, ManageError> {
    let merchant_id = by.merchant_id;
    let mut tx = pool.begin().await?;
    lock_for(&mut tx, by).await?;
    let endpoint = sqlx::query_as!(
        Endpoint,
        r#"UPDATE webhook_endpoints
           SET previous_key_id = CASE WHEN $5 > 0 THEN key_id END,
               previous_secret = CASE WHEN $5 > 0 THEN secret END,
               previous_secret_expires_at =
                   CASE WHEN $5 > 0 THEN now() + $5 * interval '1 millisecond' END,
               key_id = $3,
               secret = $4
           WHERE id = $1 AND merchant_id = $2 AND status <> 'deleted'
           RETURNING id, merchant_id, url, description, event_types, status, disabled_reason,
                     created_at, updated_at, previous_secret_expires_at"#,
        id,
        merchant_id,
        secret.key_id,
        secret.bytes,
        millis(overlap) as f64,
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(endpoint)
}

/// What a merchant may change of an endpoint; `None` leaves a field as it is.
pub struct EndpointChange<'a> {
    pub url: Option<&'a str>,
    pub event_types: Option<&'a [String]>,
    /// `Some(None)` clears the description.
    pub description: Option<Option<&'a str>>,
}

/// Changes an endpoint's URL, event types or description; deliveries still pending go to
/// the new URL, new events follow the new subscription. `None` when the merchant has no
/// such endpoint or it is deleted.
pub async fn update_endpoint(
    pool: &Db,
    by: Manager<'_>,
    id: Uuid,
    change: EndpointChange<'_>,
) -> Result<Option<Endpoint>, ManageError> {
    let merchant_id = by.merchant_id;
    let mut tx = pool.begin().await?;
    lock_for(&mut tx, by).await?;
    let (set_description, description) = match change.description {
        Some(d) => (true, d),
        None => (false, None),
    };
    let (url_mac, url_mac_key_id) = match change.url {
        Some(url) => {
            let (mac, key_id) = seal_endpoint_url(id, merchant_id, url)?;
            (Some(mac), Some(key_id))
        }
        None => (None, None),
    };
    let endpoint = sqlx::query_as!(
        Endpoint,
        r#"UPDATE webhook_endpoints
           SET url = COALESCE($3, url),
               url_mac = COALESCE($7, url_mac),
               url_mac_key_id = COALESCE($8, url_mac_key_id),
               event_types = COALESCE($4, event_types),
               description = CASE WHEN $5 THEN $6 ELSE description END
           WHERE id = $1 AND merchant_id = $2 AND status <> 'deleted'
           RETURNING id, merchant_id, url, description, event_types, status, disabled_reason,
                     created_at, updated_at, previous_secret_expires_at"#,
        id,
        merchant_id,
        change.url,
        change.event_types,
        set_description,
        description,
        url_mac,
        url_mac_key_id,
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(endpoint)
}

/// Every pending delivery of an endpoint becomes dead with `reason`, whoever holds it.
async fn kill_pending(
    conn: &mut PgConnection,
    endpoint_id: Uuid,
    reason: &str,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        r#"UPDATE webhook_deliveries
           SET status = 'dead', next_attempt_at = NULL, owner = NULL, last_error = $2
           WHERE endpoint_id = $1 AND status = 'pending'"#,
        endpoint_id,
        reason,
    )
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// One delivery of one event to one endpoint, as merchants see it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub endpoint_id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub payment_id: Option<Uuid>,
    pub status: String,
    pub attempts: i32,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub last_response_status: Option<i32>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// An endpoint's deliveries, newest first, after the keyset cursor `(created_at, event_id)`.
pub async fn list_deliveries(
    pool: &Db,
    endpoint_id: Uuid,
    status: Option<&str>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<Delivery>, sqlx::Error> {
    let (after_ts, after_id) = after.unzip();
    sqlx::query_as!(
        Delivery,
        r#"SELECT d.endpoint_id, d.event_id, ev.event_type, ev.payment_id, d.status, d.attempts,
                  d.last_attempt_at, d.last_response_status, d.last_error, d.next_attempt_at,
                  d.delivered_at, d.created_at
           FROM webhook_deliveries d JOIN webhook_events ev ON ev.id = d.event_id
           WHERE d.endpoint_id = $1
             AND ($2::text IS NULL OR d.status = $2)
             AND ($3::timestamptz IS NULL OR (d.created_at, d.event_id) < ($3, $4::uuid))
           ORDER BY d.created_at DESC, d.event_id DESC
           LIMIT $5"#,
        endpoint_id,
        status,
        after_ts,
        after_id,
        limit,
    )
    .fetch_all(pool)
    .await
}

/// What a replay did.
#[derive(Debug, Clone)]
pub enum Replay {
    /// Pending again, due now, attempts counted afresh: the delivery as the replay left it.
    Queued(Box<Delivery>),
    /// It is still pending: nothing to replay.
    AlreadyPending,
    /// The endpoint is not enabled (disabled or deleted).
    EndpointNotEnabled,
    NotFound,
}

/// Makes a dead or delivered delivery pending again, due now, with its attempts reset. The
/// endpoint row is share-locked so that a concurrent disable or delete (which updates it
/// first, then kills its pending deliveries) either sees this replay or is seen by it.
pub async fn replay_delivery_in(
    tx: &mut PgConnection,
    endpoint_id: Uuid,
    event_id: Uuid,
) -> Result<Replay, sqlx::Error> {
    let endpoint = sqlx::query_scalar!(
        r#"SELECT status FROM webhook_endpoints WHERE id = $1 FOR SHARE"#,
        endpoint_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    match endpoint.as_deref() {
        None => return Ok(Replay::NotFound),
        Some("enabled") => {}
        Some(_) => return Ok(Replay::EndpointNotEnabled),
    }
    let status = sqlx::query_scalar!(
        r#"SELECT status FROM webhook_deliveries
           WHERE endpoint_id = $1 AND event_id = $2 FOR UPDATE"#,
        endpoint_id,
        event_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    let outcome = match status.as_deref() {
        None => Replay::NotFound,
        Some("pending") => Replay::AlreadyPending,
        Some(_) => {
            let queued = sqlx::query_as!(
                Delivery,
                r#"UPDATE webhook_deliveries d
                   SET status = 'pending', next_attempt_at = now(), owner = NULL, attempts = 0,
                       delivered_at = NULL
                   FROM webhook_events ev
                   WHERE d.endpoint_id = $1 AND d.event_id = $2 AND ev.id = d.event_id
                   RETURNING d.endpoint_id, d.event_id, ev.event_type, ev.payment_id, d.status,
                             d.attempts, d.last_attempt_at, d.last_response_status, d.last_error,
                             d.next_attempt_at, d.delivered_at, d.created_at"#,
                endpoint_id,
                event_id,
            )
            .fetch_one(&mut *tx)
            .await?;
            notify(tx).await?;
            Replay::Queued(Box::new(queued))
        }
    };
    Ok(outcome)
}

/// [`replay_delivery_in`] in a transaction of its own.
pub async fn replay_delivery(
    pool: &Db,
    endpoint_id: Uuid,
    event_id: Uuid,
) -> Result<Replay, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let out = replay_delivery_in(&mut tx, endpoint_id, event_id).await?;
    tx.commit().await?;
    Ok(out)
}

/// Replays every dead delivery of an enabled endpoint; `None` if it is not enabled.
pub async fn replay_dead(pool: &Db, endpoint_id: Uuid) -> Result<Option<u64>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let enabled = sqlx::query_scalar!(
        r#"SELECT status FROM webhook_endpoints WHERE id = $1 FOR SHARE"#,
        endpoint_id
    )
    .fetch_optional(&mut *tx)
    .await?
    .is_some_and(|s| s == "enabled");
    if !enabled {
        return Ok(None);
    }
    let n = sqlx::query!(
        r#"UPDATE webhook_deliveries
           SET status = 'pending', next_attempt_at = now(), owner = NULL, attempts = 0,
               delivered_at = NULL
           WHERE endpoint_id = $1 AND status = 'dead'"#,
        endpoint_id,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n > 0 {
        notify(&mut tx).await?;
    }
    tx.commit().await?;
    Ok(Some(n))
}

/// Wakes the dispatchers when the caller's transaction commits.
async fn notify(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query!("SELECT pg_notify($1, '') AS \"n: ()\"", NOTIFY_CHANNEL)
        .fetch_one(&mut *conn)
        .await?;
    Ok(())
}

/// A delivery claimed by a dispatcher: everything one attempt needs.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub endpoint_id: Uuid,
    pub event_id: Uuid,
    pub merchant_id: Uuid,
    /// Attempts made before this one.
    pub attempts: i32,
    pub url: String,
    /// The URL's ledger MAC ([`binding::endpoint_url_mac`]) and its key.
    pub url_mac: Option<Vec<u8>>,
    pub url_mac_key_id: Option<String>,
    pub key_id: String,
    pub sealed_secret: Vec<u8>,
    /// The secret replaced by a rotation, while its overlap lasts: it signs too.
    pub previous_key_id: Option<String>,
    pub previous_sealed_secret: Option<Vec<u8>>,
    pub event_type: String,
    pub payload: Value,
    pub event_created_at: DateTime<Utc>,
    /// The `traceparent` of the payment's creation: the attempt's span links to it.
    pub trace_parent: Option<String>,
    pub payment_id: Option<Uuid>,
    /// The event's ledger MAC ([`binding::webhook_mac`]); `None` only if removed (or never
    /// sealed: `ledger::seal`).
    pub payload_mac: Option<Vec<u8>>,
    pub mac_key_id: Option<String>,
}

impl Claimed {
    /// Whether the payload is the one written (its MAC verifies under `keys`); `None` when
    /// the event has no MAC (removed, or never sealed) or its key is not in the ring.
    pub fn payload_intact(&self, keys: &keys::LedgerKeys) -> Option<bool> {
        let (mac, key_id) = (self.payload_mac.as_ref()?, self.mac_key_id.as_deref()?);
        let facts = WebhookEventFacts {
            id: self.event_id,
            merchant_id: self.merchant_id,
            payment_id: self.payment_id,
            event_type: &self.event_type,
            created_at: self.event_created_at,
            payload: &self.payload,
        };
        binding::webhook_mac(keys, key_id, &facts).map(|h| h[..] == mac[..])
    }
}

/// Milliseconds for an SQL interval (`$n * interval '1 millisecond'`).
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// How many deliveries one endpoint, and one merchant, may have in flight at once (leased,
/// across replicas, as far as one statement can see).
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub per_endpoint: i64,
    pub per_merchant: i64,
}

/// Claims up to `limit` due pending deliveries of enabled endpoints for `owner`, oldest due
/// first, within `caps`: each moves to the end of the lease and names the owner, in one
/// statement.
///
/// Walks each enabled endpoint's own due deliveries (index `webhook_deliveries_endpoint_due`)
/// and takes at most its free slots, so one endpoint's backlog costs that endpoint's slots,
/// not a ranking of the whole backlog on every claim; then the merchant's cap, over all of
/// its endpoints (a merchant with many blackholed endpoints cannot hold every slot).
pub async fn claim_due(
    pool: &Db,
    owner: &str,
    lease: Duration,
    limit: i64,
    caps: Caps,
) -> Result<Vec<Claimed>, sqlx::Error> {
    sqlx::query_as!(
        Claimed,
        r#"WITH busy AS (
               SELECT endpoint_id, count(*) AS n FROM webhook_deliveries
               WHERE owner IS NOT NULL AND status = 'pending' AND next_attempt_at > now()
               GROUP BY endpoint_id
           ), merchant_busy AS (
               SELECT e.merchant_id, sum(b.n)::bigint AS n
               FROM busy b JOIN webhook_endpoints e ON e.id = b.endpoint_id
               GROUP BY e.merchant_id
           ), candidates AS (
               SELECT c.endpoint_id, c.event_id, c.next_attempt_at,
                      row_number() OVER (PARTITION BY e.merchant_id ORDER BY c.next_attempt_at)
                          AS in_merchant,
                      COALESCE(mb.n, 0) AS merchant_busy
               FROM webhook_endpoints e
               LEFT JOIN busy b ON b.endpoint_id = e.id
               LEFT JOIN merchant_busy mb ON mb.merchant_id = e.merchant_id
               CROSS JOIN LATERAL (
                   SELECT d.endpoint_id, d.event_id, d.next_attempt_at
                   FROM webhook_deliveries d
                   WHERE d.endpoint_id = e.id AND d.status = 'pending'
                     AND d.next_attempt_at <= now()
                   ORDER BY d.next_attempt_at
                   LIMIT greatest($4 - COALESCE(b.n, 0), 0)
               ) c
               WHERE e.status = 'enabled' AND COALESCE(mb.n, 0) < $5
           ), due AS (
               SELECT d.endpoint_id, d.event_id
               FROM webhook_deliveries d
               JOIN candidates c ON c.endpoint_id = d.endpoint_id AND c.event_id = d.event_id
               -- Again on d itself: when the row lock is taken, PostgreSQL re-checks only
               -- this level's conditions on the row's latest version, so a delivery another
               -- dispatcher claimed since this statement's snapshot is skipped, not claimed twice.
               WHERE c.in_merchant <= $5 - c.merchant_busy
                 AND d.status = 'pending' AND d.next_attempt_at <= now()
               ORDER BY c.next_attempt_at
               LIMIT $3
               FOR UPDATE OF d SKIP LOCKED
           )
           UPDATE webhook_deliveries d
           SET next_attempt_at = now() + $2 * interval '1 millisecond', owner = $1
           FROM due, webhook_endpoints e, webhook_events ev
           WHERE d.endpoint_id = due.endpoint_id AND d.event_id = due.event_id
             AND e.id = d.endpoint_id AND ev.id = d.event_id
           RETURNING d.endpoint_id, d.event_id, e.merchant_id, d.attempts, e.url, e.url_mac,
                     e.url_mac_key_id, e.key_id,
                     e.secret AS sealed_secret,
                     CASE WHEN e.previous_secret_expires_at > now() THEN e.previous_key_id END
                         AS previous_key_id,
                     CASE WHEN e.previous_secret_expires_at > now() THEN e.previous_secret END
                         AS previous_sealed_secret,
                     ev.event_type, ev.payload,
                     -- clamped: an event time set to 'infinity' in SQL made sqlx panic and
                     -- stopped every replica's dispatcher in turn; read so, it fails its MAC
                     pisgate_readable_time(ev.created_at) AS "event_created_at!",
                     ev.trace_parent, ev.payment_id,
                     ev.payload_mac, ev.mac_key_id"#,
        owner,
        millis(lease) as f64,
        limit,
        caps.per_endpoint,
        caps.per_merchant,
    )
    .fetch_all(pool)
    .await
}

/// When a claim within `caps` could next take something, if any delivery is pending: per
/// enabled endpoint, its first pending delivery not in flight, or the end of an in-flight
/// one's lease (its delivery is due again then, if its dispatcher died); an endpoint or
/// merchant with no free slot counts only from the first lease end that frees one. A
/// slot freed earlier by this dispatcher's own attempt wakes it without this.
pub async fn next_due(pool: &Db, caps: Caps) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"WITH busy AS (
               SELECT endpoint_id, count(*) AS n, min(next_attempt_at) AS frees_at
               FROM webhook_deliveries
               WHERE owner IS NOT NULL AND status = 'pending' AND next_attempt_at > now()
               GROUP BY endpoint_id
           ), merchant_busy AS (
               SELECT e.merchant_id, sum(b.n)::bigint AS n, min(b.frees_at) AS frees_at
               FROM busy b JOIN webhook_endpoints e ON e.id = b.endpoint_id
               GROUP BY e.merchant_id
           ), per_endpoint AS (
               SELECT CASE WHEN COALESCE(b.n, 0) >= $1 THEN b.frees_at
                           ELSE least(f.at, b.frees_at) END AS at,
                      CASE WHEN COALESCE(mb.n, 0) >= $2 THEN mb.frees_at END AS merchant_frees_at
               FROM webhook_endpoints e
               LEFT JOIN busy b ON b.endpoint_id = e.id
               LEFT JOIN merchant_busy mb ON mb.merchant_id = e.merchant_id
               LEFT JOIN LATERAL (
                   SELECT d.next_attempt_at AS at
                   FROM webhook_deliveries d
                   WHERE d.endpoint_id = e.id AND d.status = 'pending'
                     AND (d.owner IS NULL OR d.next_attempt_at <= now())
                   ORDER BY d.next_attempt_at
                   LIMIT 1
               ) f ON true
               WHERE e.status = 'enabled'
           )
           -- Clamped (`pisgate_readable_time`): a delivery's time set to 'infinity' in SQL is
           -- never claimed, so once nothing else is pending it is the earliest; decoded as
           -- is, sqlx panicked and the dispatcher of every replica stopped.
           SELECT pisgate_readable_time(min(greatest(at, merchant_frees_at))) AS at
           FROM per_endpoint WHERE at IS NOT NULL"#,
        caps.per_endpoint,
        caps.per_merchant,
    )
    .fetch_one(pool)
    .await
}

/// Pending deliveries that are due now and not leased: the backlog.
pub async fn queue_depth(pool: &Db) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM webhook_deliveries
           WHERE status = 'pending' AND next_attempt_at <= now()"#
    )
    .fetch_one(pool)
    .await
}

/// Kills pending deliveries whose endpoint is no longer enabled (an event enqueued while its
/// endpoint was being disabled or deleted). Returns how many.
pub async fn sweep_orphans(pool: &Db) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        r#"UPDATE webhook_deliveries d
           SET status = 'dead', next_attempt_at = NULL, owner = NULL,
               last_error = CASE e.status WHEN 'deleted' THEN 'endpoint deleted'
                                          ELSE 'endpoint disabled' END
           FROM webhook_endpoints e
           WHERE e.id = d.endpoint_id AND d.status = 'pending' AND e.status <> 'enabled'"#
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// The result of one attempt, as the dispatcher records it.
#[derive(Debug, Clone)]
pub enum Attempt<'a> {
    /// A 2xx answer.
    Delivered { response_status: i32 },
    /// Not delivered; try again after `retry_in`.
    Retry {
        response_status: Option<i32>,
        error: &'a str,
        retry_in: Duration,
    },
    /// Not delivered and the retry schedule is exhausted.
    Dead {
        response_status: Option<i32>,
        error: &'a str,
    },
}

/// Records one attempt, only if `owner` still holds the delivery. False when it does not
/// (lease lost, endpoint deleted, replayed): the result is then dropped.
pub async fn record_attempt(
    pool: &Db,
    endpoint_id: Uuid,
    event_id: Uuid,
    owner: &str,
    attempt: Attempt<'_>,
) -> Result<bool, sqlx::Error> {
    let (status, response_status, error, retry_in): (&str, Option<i32>, Option<&str>, Option<f64>) =
        match attempt {
            Attempt::Delivered { response_status } => {
                ("delivered", Some(response_status), None, None)
            }
            Attempt::Retry {
                response_status,
                error,
                retry_in,
            } => (
                "pending",
                response_status,
                Some(error),
                Some(millis(retry_in) as f64),
            ),
            Attempt::Dead {
                response_status,
                error,
            } => ("dead", response_status, Some(error), None),
        };
    let done = sqlx::query!(
        r#"UPDATE webhook_deliveries
           SET status = $4,
               attempts = attempts + 1,
               last_attempt_at = now(),
               last_response_status = $5,
               last_error = $6,
               next_attempt_at = CASE WHEN $4 = 'pending'
                                      THEN now() + $7 * interval '1 millisecond' END,
               delivered_at = CASE WHEN $4 = 'delivered' THEN now() END,
               owner = NULL
           WHERE endpoint_id = $1 AND event_id = $2 AND owner = $3 AND status = 'pending'"#,
        endpoint_id,
        event_id,
        owner,
        status,
        response_status,
        error,
        retry_in,
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The endpoint answered 410 Gone at `url`: this delivery is dead (if still ours), the
/// endpoint is disabled with `reason` (unless already disabled or deleted) and its pending
/// deliveries die. Only an answer to a delivery still ours, from the URL the endpoint still
/// has, disables it: a merchant who moved the endpoint away from a host that now answers
/// 410 while an attempt was in flight keeps it, and that delivery is tried again at the new
/// URL. Returns whether the endpoint was disabled by this call.
pub async fn endpoint_gone(
    pool: &Db,
    endpoint_id: Uuid,
    event_id: Uuid,
    owner: &str,
    url: &str,
    reason: &str,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let moved = sqlx::query_scalar!(
        r#"UPDATE webhook_deliveries d
           SET attempts = attempts + 1, last_attempt_at = now(), last_response_status = 410,
               last_error = 'the endpoint''s previous URL answered 410 Gone; tried again at its new URL',
               next_attempt_at = now(), owner = NULL
           FROM webhook_endpoints e
           WHERE d.endpoint_id = $1 AND d.event_id = $2 AND d.owner = $3 AND d.status = 'pending'
             AND e.id = d.endpoint_id AND e.url <> $4
           RETURNING d.event_id"#,
        endpoint_id,
        event_id,
        owner,
        url,
    )
    .fetch_optional(&mut *tx)
    .await?
    .is_some();
    if moved {
        tx.commit().await?;
        return Ok(false);
    }
    let disabled = sqlx::query_scalar!(
        r#"UPDATE webhook_endpoints SET status = 'disabled', disabled_reason = $2
           WHERE id = $1 AND status = 'enabled' AND url = $4
             AND EXISTS (SELECT 1 FROM webhook_deliveries
                         WHERE endpoint_id = $1 AND event_id = $3 AND owner = $5
                           AND status = 'pending')
           RETURNING id"#,
        endpoint_id,
        reason,
        event_id,
        url,
        owner,
    )
    .fetch_optional(&mut *tx)
    .await?
    .is_some();
    // Not disabled by this answer while the endpoint is still enabled: the delivery was no
    // longer ours (its lease passed), so this answer decides nothing.
    let enabled = sqlx::query_scalar!(
        r#"SELECT status = 'enabled' AS "enabled!" FROM webhook_endpoints WHERE id = $1"#,
        endpoint_id
    )
    .fetch_optional(&mut *tx)
    .await?
    .unwrap_or(false);
    if !disabled && enabled {
        tx.commit().await?;
        return Ok(false);
    }
    sqlx::query!(
        r#"UPDATE webhook_deliveries
           SET status = 'dead', attempts = attempts + 1, last_attempt_at = now(),
               last_response_status = 410, last_error = $4, next_attempt_at = NULL,
               owner = NULL
           WHERE endpoint_id = $1 AND event_id = $2 AND owner = $3 AND status = 'pending'"#,
        endpoint_id,
        event_id,
        owner,
        reason,
    )
    .execute(&mut *tx)
    .await?;
    kill_pending(
        &mut tx,
        endpoint_id,
        &format!("endpoint disabled: {reason}"),
    )
    .await?;
    tx.commit().await?;
    Ok(disabled)
}

/// Hands back every pending delivery `owner` holds, due now (a stopping dispatcher).
pub async fn release(pool: &Db, owner: &str) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        r#"UPDATE webhook_deliveries SET next_attempt_at = now(), owner = NULL
           WHERE owner = $1 AND status = 'pending'"#,
        owner,
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "::7f00:1",
        ] {
            assert!(!is_public_ip(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public_ip(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn a_webhook_id_parses_back_to_its_event() {
        let id = Uuid::now_v7();
        assert_eq!(parse_webhook_id(&webhook_id(id)), Some(id));
        assert_eq!(parse_webhook_id(&id.to_string()), None);
        assert_eq!(parse_webhook_id(&format!("evt_{id}")), None);
        assert_eq!(parse_webhook_id("evt_"), None);
        assert_eq!(parse_webhook_id("evt_zz"), None);
    }
}
