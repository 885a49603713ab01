//! What ties the mutable rows around the ledger to it: a payment's immutable facts, the
//! shopper key it was bound to, and each webhook event's payload.
//!
//! * The `created` event carries `facts`, the digest of [`PaymentFacts`] (merchant, amount,
//!   currency, country, return URL, the merchant's shopper id, bank, and the whole validated
//!   request with its creditor and debtor). The
//!   event is inside the keyed chain, so whoever rewrites the payment row without the ledger
//!   key cannot make the row match its chain again. [`facts_digest`] is the one function
//!   creation (both the in-memory `seal` path and any appended path) and `ledger verify` use.
//! * A deferred payment's `created` event binds the bank `""` (none yet); its
//!   `bank_chosen` event binds the bank the shopper chose and its `debtor_account_given`
//!   event the digest of the IBAN the shopper gave ([`debtor_account_digest`]), so an edited
//!   choice is seen like an edited fact.
//! * The `token_exchanged` event carries `psu_key_sha256`, the digest of the shopper key the
//!   payment's bank token is stored under, so a row pointed at another shopper's token is
//!   seen.
//! * Every `webhook_events` row carries `payload_mac` = HMAC-SHA256(ledger key[mac_key_id],
//!   [`webhook_mac_input`]): the event's id, merchant, payment, type, time and the canonical
//!   JSON of its payload, so an edited payload (a `payment.paid` forged, an amount changed
//!   in what merchants read back from `GET /v1/events`) is caught by `ledger verify`.
//!
//! * Every answer an idempotency key replays carries `response_mac` = HMAC-SHA256(ledger
//!   key[response_mac_key_id], [`idempotency_answer_mac_input`]): the merchant, the key, the
//!   status and the canonical JSON of the answer, checked before each replay.
//!
//! * A payment's bank reference once the bank answered: its bank payment id and `bank_links`
//!   (the links a Berlin Group bank handed out, `{}` for Nordea, which pisgate follows for the
//!   shopper and for the bank's word) carry `bank_links_mac` =
//!   HMAC-SHA256(ledger key[bank_links_mac_key_id], [`bank_links_mac_input`]): the payment,
//!   its bank payment id and the canonical links, checked before every use
//!   ([`bank_links_problem`]): an authorisation server or status link edited in SQL is never
//!   followed.
//!
//! * Every webhook endpoint carries `url_mac` = HMAC-SHA256(ledger key[url_mac_key_id],
//!   [`endpoint_url_mac_input`]): the endpoint, its merchant and its URL, checked before each
//!   delivery is signed and sent ([`endpoint_url_problem`]): an endpoint pointed elsewhere in
//!   SQL does not receive events signed with the merchant's secret.
//!
//! * Every API key carries `key_mac` = HMAC-SHA256(ledger key[key_mac_key_id],
//!   [`api_key_mac_input`]): its public id, its merchant and the hash of its secret, checked
//!   when a key authenticates ([`api_key_problem`]): a key row added in SQL opens nothing.
//!   Its end carries `lifetime_mac` = HMAC-SHA256(ledger key[lifetime_mac_key_id],
//!   [`api_key_lifetime_mac_input`]): its public id, when it expires and when it was rotated
//!   away, resealed by each rotation ([`api_key_lifetime_problem`]): a rotated-away or
//!   expiring key given back its full life in SQL opens nothing. A revoked key needs no MAC:
//!   revoking overwrites the hash of its secret (and drops its MACs), so clearing
//!   `revoked_at` gives back no key anybody holds.
//!
//! - **A merchant's payee policy and payees** carry `payees_mac` = HMAC-SHA256(ledger
//!   key[payees_mac_key_id], [`payee_policy_mac_input`]): the merchant and its policy, and
//!   each registered payee `mac` = HMAC-SHA256(ledger key[mac_key_id], [`payee_mac_input`]):
//!   the merchant and the account. Creating a payment trusts only those whose MAC holds
//!   (`payments::create_with_key` gets the MACs of the payment's own facts under every usable
//!   key, [`PayeeMacs`]): a payee added in SQL, or a policy set back to `open` in SQL, lets
//!   no payment through.
//!
//! The digests are SHA-256, unkeyed: they sit inside a keyed chain. This module computes;
//! it never reads or writes the database and never sees a secret other than the ring.

use crate::ledger::canonical::canonical_json;
use crate::ledger::keys::LedgerKeys;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The version of [`facts_digest`]'s input, hashed with it.
const FACTS_VERSION: i64 = 1;
const WEBHOOK_TAG: &str = "pisgate/webhook_event/v1";
const IDEMPOTENCY_TAG: &str = "pisgate/idempotency_answer/v1";
const BANK_LINKS_TAG: &str = "pisgate/bank_links/v1";
const ENDPOINT_URL_TAG: &str = "pisgate/webhook_endpoint_url/v1";
const API_KEY_TAG: &str = "pisgate/api_key/v1";
const API_KEY_LIFETIME_TAG: &str = "pisgate/api_key_lifetime/v1";
const PAYEE_POLICY_TAG: &str = "pisgate/payee_policy/v1";
const PAYEE_TAG: &str = "pisgate/payee/v1";
const OPERATOR_TAG: &str = "pisgate/operator/v1";
const OPERATOR_SESSION_TAG: &str = "pisgate/operator_session/v1";

/// Whose cancel request a `cancel_requested` event records (`merchant` or `shopper`): a
/// request recorded before requests said whose is the merchant's (the only rule then). One
/// rule for the check before pisgate deletes a signed payment and for `ledger verify`.
pub fn cancel_requested_by(detail: &Value) -> &str {
    detail
        .get("by")
        .and_then(Value::as_str)
        .unwrap_or("merchant")
}

/// The facts of a payment that never change after creation.
#[derive(Debug, Clone, Copy)]
pub struct PaymentFacts<'a> {
    pub merchant_id: Uuid,
    pub amount_minor: i64,
    pub currency: &'a str,
    pub country: &'a str,
    pub bank: &'a str,
    pub return_url: &'a str,
    /// The merchant's stable id for the shopper (`psu_id`).
    pub psu_id: Option<&'a str>,
    /// The stored canonical request, bound whole (creditor, debtor and all).
    pub request: &'a Value,
}

/// The hex SHA-256 of the canonical JSON of the facts (see the module docs).
pub fn facts_digest(f: &PaymentFacts<'_>) -> String {
    let doc = json!({
        "v": FACTS_VERSION,
        "merchant_id": f.merchant_id.to_string(),
        "amount_minor": f.amount_minor,
        "currency": f.currency,
        "country": f.country,
        "bank": f.bank,
        "return_url": f.return_url,
        "psu_id": f.psu_id,
        // The whole validated request: creditor, debtor, amount text, dates, references.
        "request": f.request,
    });
    hex::encode(Sha256::digest(canonical_json(&doc).as_bytes()))
}

/// The hex SHA-256 of the debtor IBAN a shopper gave on pisgate's page (the
/// `debtor_account_given` event binds it; the event shows the account only masked).
pub fn debtor_account_digest(iban: &str) -> String {
    hex::encode(Sha256::digest(iban.as_bytes()))
}

/// The hex SHA-256 of the bank's signing page the hop sends shoppers to, "" for none: the
/// `initiated` and `authorisation_started` events bind it (`authorization_url_sha256`), so a
/// page swapped in SQL (a phishing page at the hop) fails verify.
pub fn authorization_url_digest(url: Option<&str>) -> String {
    url.map(|u| hex::encode(Sha256::digest(u.as_bytes())))
        .unwrap_or_default()
}

/// The kinds of payment events that may record that a payment's bank link went out (see
/// [`event_says_link_went_out`]).
pub const LINK_OUT_EVENT_KINDS: &[&str] = &[
    "authorization_opened",
    "authorisation_starting",
    "bankid_order_starting",
    "initiated",
];

/// Whether a payment event records that the bank's link went out, or that the bank may act
/// without it: the hop opened, a Berlin Group authorisation or a BankID signing order
/// started, or an `initiated` whose answer said the bank may act without the hop
/// (`"hop_opened": true`). The one rule the runtime
/// ([`crate::ledger::payments::link_may_be_out`]) and `ledger verify` apply.
pub fn event_says_link_went_out(kind: &str, detail: &Value) -> bool {
    match kind {
        "authorization_opened" | "authorisation_starting" => true,
        "bankid_order_starting" => detail.get("purpose").and_then(Value::as_str) == Some("sign"),
        "initiated" => detail.get("hop_opened") == Some(&Value::Bool(true)),
        _ => false,
    }
}

/// The detail field in which the events that set a payment's late-signing horizon record
/// it: `created`, `initiation_attempt` (a retry with the same key starts a new horizon) and
/// `bank_payment_attached` (an operator's attach extends it). Past the horizon an open
/// payment nobody could sign is ended, and its next poll never lies further ahead than the
/// horizon: the row's `sign_horizon_at` pushed out in SQL would hide a payment from the
/// frozen-schedule alert and keep it open for ever, so `ledger verify` holds the row to the
/// last horizon its ledger recorded, and the alert reads the ledger's.
pub const HORIZON_FIELD: &str = "sign_horizon_at";

/// The kinds of events that record a horizon ([`HORIZON_FIELD`]); the SQL function
/// `pisgate_ledger_horizon` is given them by its callers.
pub const HORIZON_EVENT_KINDS: &[&str] =
    &["created", "initiation_attempt", "bank_payment_attached"];

/// A horizon as [`HORIZON_FIELD`] records it: RFC 3339 UTC with microseconds (PostgreSQL's
/// precision, so that the row's value and the ledger's compare as equal).
pub fn horizon_text(at: chrono::DateTime<chrono::Utc>) -> String {
    crate::ledger::events::format_timestamp(at)
}

/// The horizon an event recorded, if it is of a kind that records one and did.
pub fn recorded_horizon<'a>(kind: &str, detail: &'a Value) -> Option<&'a str> {
    if !HORIZON_EVENT_KINDS.contains(&kind) {
        return None;
    }
    detail.get(HORIZON_FIELD).and_then(Value::as_str)
}

/// `str(tag) || str(key_id) || merchant_id || str(idempotency key) || status (2 bytes,
/// big-endian) || str(canonical JSON of the answer)`, with the encodings of
/// [`crate::ledger::events`].
pub fn idempotency_answer_mac_input(
    key_id: &str,
    merchant_id: Uuid,
    key: &str,
    status: u16,
    body: &Value,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    put_str(&mut out, IDEMPOTENCY_TAG);
    put_str(&mut out, key_id);
    out.extend_from_slice(merchant_id.as_bytes());
    put_str(&mut out, key);
    out.extend_from_slice(&status.to_be_bytes());
    put_str(&mut out, &canonical_json(body));
    out
}

/// The MAC of the answer an idempotency key replays, under `key_id`, or `None` when the
/// ring has no such key. Stored with the answer (`idempotency_keys.response_mac`) and
/// checked before every replay: an answer edited in SQL (another payment's id, a phishing
/// `authorization_url`) is never handed to a merchant.
pub fn idempotency_answer_mac(
    keys: &LedgerKeys,
    key_id: &str,
    merchant_id: Uuid,
    key: &str,
    status: u16,
    body: &Value,
) -> Option<[u8; 32]> {
    keys.seal_mac(
        key_id,
        &[&idempotency_answer_mac_input(
            key_id,
            merchant_id,
            key,
            status,
            body,
        )],
    )
}

/// `str(tag) || str(key_id) || payment_id || str(bank payment id) || str(canonical JSON of
/// the links)`, with the encodings of [`crate::ledger::events`].
pub fn bank_links_mac_input(
    key_id: &str,
    payment_id: Uuid,
    bank_payment_id: &str,
    links: &Value,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    put_str(&mut out, BANK_LINKS_TAG);
    put_str(&mut out, key_id);
    out.extend_from_slice(payment_id.as_bytes());
    put_str(&mut out, bank_payment_id);
    put_str(&mut out, &canonical_json(links));
    out
}

/// The MAC of a payment's bank links under `key_id`, or `None` when the ring has no such key.
pub fn bank_links_mac(
    keys: &LedgerKeys,
    key_id: &str,
    payment_id: Uuid,
    bank_payment_id: &str,
    links: &Value,
) -> Option<[u8; 32]> {
    keys.seal_mac(
        key_id,
        &[&bank_links_mac_input(
            key_id,
            payment_id,
            bank_payment_id,
            links,
        )],
    )
}

/// Why a payment's stored bank reference (bank payment id and links) may not be used, or
/// `None` when it may (or when there is none: no bank id): it needs the MAC of exactly this payment, bank payment id and links
/// under a key of the ring, empty links (Nordea's) included, so that links emptied in SQL
/// are seen as well as links rewritten.
pub fn bank_links_problem(
    keys: Option<&LedgerKeys>,
    payment_id: Uuid,
    bank_payment_id: Option<&str>,
    links: &Value,
    mac: Option<&[u8]>,
    key_id: Option<&str>,
) -> Option<&'static str> {
    // No bank id: no reference to use (and `ledger verify` holds the id to its ledger).
    let bank_payment_id = bank_payment_id?;
    stored_mac_problem(keys, mac, key_id, |keys, key_id| {
        bank_links_mac(keys, key_id, payment_id, bank_payment_id, links)
    })
    .map(|p| match p {
        MacProblem::Missing => "the links have no ledger MAC (added, or never sealed)",
        MacProblem::NoRing => "no ledger key is installed to check the links' MAC",
        MacProblem::Edited => "the links or the bank payment id are not what was written (edited)",
        MacProblem::UnknownKey => {
            "the links' MAC key is not in the ledger key ring (PISGATE__LEDGER__PREVIOUS_KEYS)"
        }
        MacProblem::Retired => {
            "the links are sealed under a retired ledger key (PISGATE__LEDGER__RETIRED_KEY_IDS; `pisgate ledger reseal` moves them)"
        }
    })
}

/// `str(tag) || str(key_id) || endpoint_id || merchant_id || str(url)`, with the encodings
/// of [`crate::ledger::events`].
pub fn endpoint_url_mac_input(
    key_id: &str,
    endpoint_id: Uuid,
    merchant_id: Uuid,
    url: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    put_str(&mut out, ENDPOINT_URL_TAG);
    put_str(&mut out, key_id);
    out.extend_from_slice(endpoint_id.as_bytes());
    out.extend_from_slice(merchant_id.as_bytes());
    put_str(&mut out, url);
    out
}

/// The MAC of a webhook endpoint's URL under `key_id`, or `None` when the ring has no such key.
pub fn endpoint_url_mac(
    keys: &LedgerKeys,
    key_id: &str,
    endpoint_id: Uuid,
    merchant_id: Uuid,
    url: &str,
) -> Option<[u8; 32]> {
    keys.seal_mac(
        key_id,
        &[&endpoint_url_mac_input(
            key_id,
            endpoint_id,
            merchant_id,
            url,
        )],
    )
}

/// Why events may not be sent to a webhook endpoint's stored URL, or `None` when they may:
/// the URL must carry the MAC of exactly this endpoint, merchant and URL under a key of the
/// ring.
pub fn endpoint_url_problem(
    keys: Option<&LedgerKeys>,
    endpoint_id: Uuid,
    merchant_id: Uuid,
    url: &str,
    mac: Option<&[u8]>,
    key_id: Option<&str>,
) -> Option<&'static str> {
    stored_mac_problem(keys, mac, key_id, |keys, key_id| endpoint_url_mac(keys, key_id, endpoint_id, merchant_id, url))
        .map(|p| match p {
            MacProblem::Missing => "the endpoint's URL has no ledger MAC (removed, or never sealed)",
            MacProblem::NoRing => "no ledger key is installed to check the endpoint URL's MAC",
            MacProblem::Edited => "the endpoint's URL or merchant is not what was written (edited)",
            MacProblem::UnknownKey => "the endpoint URL's MAC key is not in the ledger key ring (PISGATE__LEDGER__PREVIOUS_KEYS)",
            MacProblem::Retired => "the endpoint's URL is sealed under a retired ledger key (PISGATE__LEDGER__RETIRED_KEY_IDS; `pisgate ledger reseal` moves it)",
        })
}

/// `str(tag) || str(key_id) || merchant_id || str(policy)`, with the encodings of
/// [`crate::ledger::events`].
pub fn payee_policy_mac_input(key_id: &str, merchant_id: Uuid, policy: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    put_str(&mut out, PAYEE_POLICY_TAG);
    put_str(&mut out, key_id);
    out.extend_from_slice(merchant_id.as_bytes());
    put_str(&mut out, policy);
    out
}

/// The MAC of a merchant's payee policy under `key_id`, or `None` when the ring has no such
/// key (or it is retired).
pub fn payee_policy_mac(
    keys: &LedgerKeys,
    key_id: &str,
    merchant_id: Uuid,
    policy: &str,
) -> Option<[u8; 32]> {
    keys.seal_mac(
        key_id,
        &[&payee_policy_mac_input(key_id, merchant_id, policy)],
    )
}

/// `str(tag) || str(key_id) || merchant_id || str(account type) || str(account)` (the
/// account in the domain's normalised form), with the encodings of [`crate::ledger::events`].
pub fn payee_mac_input(
    key_id: &str,
    merchant_id: Uuid,
    account_type: &str,
    account: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    put_str(&mut out, PAYEE_TAG);
    put_str(&mut out, key_id);
    out.extend_from_slice(merchant_id.as_bytes());
    put_str(&mut out, account_type);
    put_str(&mut out, account);
    out
}

/// The MAC of a registered payee under `key_id`, or `None` when the ring has no such key (or
/// it is retired).
pub fn payee_mac(
    keys: &LedgerKeys,
    key_id: &str,
    merchant_id: Uuid,
    account_type: &str,
    account: &str,
) -> Option<[u8; 32]> {
    keys.seal_mac(
        key_id,
        &[&payee_mac_input(key_id, merchant_id, account_type, account)],
    )
}

/// Why a merchant's stored payee policy is not to be trusted, or `None` when it is.
pub fn payee_policy_problem(
    keys: Option<&LedgerKeys>,
    merchant_id: Uuid,
    policy: &str,
    mac: Option<&[u8]>,
    key_id: Option<&str>,
) -> Option<&'static str> {
    stored_mac_problem(keys, mac, key_id, |keys, key_id| {
        payee_policy_mac(keys, key_id, merchant_id, policy)
    })
    .map(|p| match p {
        MacProblem::Missing => "the payee policy has no ledger MAC (removed, or never sealed)",
        MacProblem::NoRing => "no ledger key is installed to check the payee policy's MAC",
        MacProblem::Edited => "the payee policy is not what an operator set (edited)",
        MacProblem::UnknownKey => "the payee policy's MAC key is not in the ledger key ring (PISGATE__LEDGER__PREVIOUS_KEYS)",
        MacProblem::Retired => "the payee policy is sealed under a retired ledger key (PISGATE__LEDGER__RETIRED_KEY_IDS; `pisgate ledger reseal` moves it)",
    })
}

/// Why a registered payee is not to be trusted, or `None` when it is.
pub fn payee_problem(
    keys: Option<&LedgerKeys>,
    merchant_id: Uuid,
    account_type: &str,
    account: &str,
    mac: Option<&[u8]>,
    key_id: Option<&str>,
) -> Option<&'static str> {
    stored_mac_problem(keys, mac, key_id, |keys, key_id| {
        payee_mac(keys, key_id, merchant_id, account_type, account)
    })
    .map(|p| match p {
        MacProblem::Missing => "the payee has no ledger MAC (added in SQL, or never sealed)",
        MacProblem::NoRing => "no ledger key is installed to check the payee's MAC",
        MacProblem::Edited => "the payee's account or merchant is not what an operator registered (edited)",
        MacProblem::UnknownKey => "the payee's MAC key is not in the ledger key ring (PISGATE__LEDGER__PREVIOUS_KEYS)",
        MacProblem::Retired => "the payee is sealed under a retired ledger key (PISGATE__LEDGER__RETIRED_KEY_IDS; `pisgate ledger reseal` moves it)",
    })
}

/// `str(tag) || str(key_id) || id || str(email) || str(password hash) || disabled (1 byte)`,
/// with the encodings of [`crate::ledger::events`]. A disabled operator's MAC says so:
/// clearing `disabled_at` in SQL enables nobody, and `enable` seals no hash set meanwhile.
pub fn operator_mac_input(
    key_id: &str,
    id: Uuid,
    email: &str,
    password_hash: &str,
    disabled: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(192);
    put_str(&mut out, OPERATOR_TAG);
    put_str(&mut out, key_id);
    out.extend_from_slice(id.as_bytes());
    put_str(&mut out, email);
    put_str(&mut out, password_hash);
    out.push(u8::from(disabled));
    out
}

/// The MAC of an operator's account under `key_id`, or `None` when the ring has no such key
/// (or it is retired).
pub fn operator_mac(
    keys: &LedgerKeys,
    key_id: &str,
    id: Uuid,
    email: &str,
    password_hash: &str,
    disabled: bool,
) -> Option<[u8; 32]> {
    keys.seal_mac(
        key_id,
        &[&operator_mac_input(
            key_id,
            id,
            email,
            password_hash,
            disabled,
        )],
    )
}

/// Why an operator's stored account is not to be trusted (no sign-in), or `None` when it is.
pub fn operator_problem(
    keys: Option<&LedgerKeys>,
    id: Uuid,
    email: &str,
    password_hash: &str,
    disabled: bool,
    mac: Option<&[u8]>,
    key_id: Option<&str>,
) -> Option<&'static str> {
    stored_mac_problem(keys, mac, key_id, |keys, key_id| {
        operator_mac(keys, key_id, id, email, password_hash, disabled)
    })
    .map(|p| match p {
        MacProblem::Missing => "the operator has no ledger MAC (inserted in SQL, or written by the previous version)",
        MacProblem::NoRing => "no ledger key is installed to check the operator's MAC",
        MacProblem::Edited => "the operator's email, password hash or enabled state is not what `pisgate operator` wrote (edited)",
        MacProblem::UnknownKey => "the operator's MAC key is not in the ledger key ring (PISGATE__LEDGER__PREVIOUS_KEYS)",
        MacProblem::Retired => "the operator is sealed under a retired ledger key (PISGATE__LEDGER__RETIRED_KEY_IDS; `pisgate ledger reseal` moves it)",
    })
}

/// `str(tag) || str(key_id) || str(hex of the token's hash) || operator_id || str(CSRF
/// token) || expires_at (microseconds since the epoch, 8 bytes big-endian)`.
pub fn operator_session_mac_input(
    key_id: &str,
    token_hash: &[u8],
    operator_id: Uuid,
    csrf_token: &str,
    expires_at: DateTime<Utc>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(192);
    put_str(&mut out, OPERATOR_SESSION_TAG);
    put_str(&mut out, key_id);
    put_str(&mut out, &hex::encode(token_hash));
    out.extend_from_slice(operator_id.as_bytes());
    put_str(&mut out, csrf_token);
    out.extend_from_slice(&expires_at.timestamp_micros().to_be_bytes());
    out
}

/// The MAC of a console session under `key_id`, or `None` when the ring has no such key (or
/// it is retired).
pub fn operator_session_mac(
    keys: &LedgerKeys,
    key_id: &str,
    token_hash: &[u8],
    operator_id: Uuid,
    csrf_token: &str,
    expires_at: DateTime<Utc>,
) -> Option<[u8; 32]> {
    keys.seal_mac(
        key_id,
        &[&operator_session_mac_input(
            key_id,
            token_hash,
            operator_id,
            csrf_token,
            expires_at,
        )],
    )
}

/// Why a stored console session is not to be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionProblem {
    pub why: &'static str,
    /// It can never be trusted again (no MAC, edited, or under a retired key): end it. A
    /// session under a key this replica lacks (a key rotation rolling out) is only refused
    /// here.
    pub ends: bool,
    /// Nothing pisgate does explains it (no MAC, edited): a binding mismatch. A retired key
    /// is expected after a key's retirement; a key this replica lacks, during a rotation.
    pub mismatch: bool,
}

/// Why a stored console session is not to be trusted, or `None` when it is.
pub fn operator_session_problem(
    keys: Option<&LedgerKeys>,
    token_hash: &[u8],
    operator_id: Uuid,
    csrf_token: &str,
    expires_at: DateTime<Utc>,
    mac: Option<&[u8]>,
    key_id: Option<&str>,
) -> Option<SessionProblem> {
    stored_mac_problem(keys, mac, key_id, |keys, key_id| {
        operator_session_mac(keys, key_id, token_hash, operator_id, csrf_token, expires_at)
    })
    .map(|p| {
        let (why, ends, mismatch) = match p {
            MacProblem::Missing => (
                "the session has no ledger MAC (inserted in SQL, or opened by the previous version)",
                true,
                true,
            ),
            MacProblem::NoRing => (
                "no ledger key is installed to check the session's MAC",
                false,
                false,
            ),
            MacProblem::Edited => ("the session is not what a sign-in wrote (edited)", true, true),
            MacProblem::UnknownKey => (
                "the session's MAC key is not in this replica's ledger key ring",
                false,
                false,
            ),
            MacProblem::Retired => ("the session is sealed under a retired ledger key", true, false),
        };
        SessionProblem {
            why,
            ends,
            mismatch,
        }
    })
}

/// What the creating statement compares a merchant's stored policy and payees with: for each
/// usable key of the ring (not retired), the MAC an operator's `open` policy and an
/// operator's registration of the payment's own creditor account would carry. A stored MAC
/// is trusted when it equals the one of its key here, so the statement judges without a
/// round trip of its own.
#[derive(Debug, Default)]
pub struct PayeeMacs {
    pub key_ids: Vec<String>,
    pub open_policy: Vec<Vec<u8>>,
    pub payee: Vec<Vec<u8>>,
}

impl PayeeMacs {
    pub fn new(keys: &LedgerKeys, merchant_id: Uuid, account_type: &str, account: &str) -> Self {
        let mut out = PayeeMacs::default();
        for key_id in keys.usable_ids() {
            let (Some(open), Some(payee)) = (
                payee_policy_mac(keys, key_id, merchant_id, "open"),
                payee_mac(keys, key_id, merchant_id, account_type, account),
            ) else {
                continue;
            };
            out.key_ids.push(key_id.to_owned());
            out.open_policy.push(open.to_vec());
            out.payee.push(payee.to_vec());
        }
        out
    }
}

/// `str(tag) || str(key_id) || str(API key id) || merchant_id || str(hex of the secret's
/// hash)`, with the encodings of [`crate::ledger::events`].
pub fn api_key_mac_input(
    key_id: &str,
    api_key_id: &str,
    merchant_id: Uuid,
    key_hash: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(192);
    put_str(&mut out, API_KEY_TAG);
    put_str(&mut out, key_id);
    put_str(&mut out, api_key_id);
    out.extend_from_slice(merchant_id.as_bytes());
    put_str(&mut out, &hex::encode(key_hash));
    out
}

/// The MAC of an API key's row under `key_id`, or `None` when the ring has no such key.
pub fn api_key_mac(
    keys: &LedgerKeys,
    key_id: &str,
    api_key_id: &str,
    merchant_id: Uuid,
    key_hash: &[u8],
) -> Option<[u8; 32]> {
    keys.seal_mac(
        key_id,
        &[&api_key_mac_input(
            key_id,
            api_key_id,
            merchant_id,
            key_hash,
        )],
    )
}

/// Why an API key's row may not authenticate anyone, or `None` when it may: it must carry the
/// MAC of exactly this key id, merchant and secret hash under a key of the ring.
pub fn api_key_problem(
    keys: Option<&LedgerKeys>,
    api_key_id: &str,
    merchant_id: Uuid,
    key_hash: &[u8],
    mac: Option<&[u8]>,
    key_id: Option<&str>,
) -> Option<&'static str> {
    stored_mac_problem(keys, mac, key_id, |keys, key_id| {
        api_key_mac(keys, key_id, api_key_id, merchant_id, key_hash)
    })
    .map(|p| match p {
        MacProblem::Missing => "the API key has no ledger MAC (added, or never sealed)",
        MacProblem::NoRing => "no ledger key is installed to check the API key's MAC",
        MacProblem::Edited => "the API key's merchant or secret is not what was written (edited)",
        MacProblem::UnknownKey => {
            "the API key's MAC key is not in the ledger key ring (PISGATE__LEDGER__PREVIOUS_KEYS)"
        }
        MacProblem::Retired => {
            "the API key is sealed under a retired ledger key (PISGATE__LEDGER__RETIRED_KEY_IDS; `pisgate ledger reseal` moves it)"
        }
    })
}

/// `t` cut to whole microseconds, the precision PostgreSQL stores: a time sealed before it
/// is written must be the one read back.
pub fn to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

fn put_opt_time(out: &mut Vec<u8>, t: Option<DateTime<Utc>>) {
    match t {
        None => out.push(0),
        Some(t) => {
            out.push(1);
            out.extend_from_slice(&t.timestamp_micros().to_be_bytes());
        }
    }
}

/// `str(tag) || str(key_id) || str(API key id) || opt(expires_at) || opt(rotated_away_at)`,
/// each time as `0` for none or `1` and its microseconds since the epoch (8 bytes,
/// big-endian; PostgreSQL's own precision, so a read gives back what was sealed).
pub fn api_key_lifetime_mac_input(
    key_id: &str,
    api_key_id: &str,
    expires_at: Option<DateTime<Utc>>,
    rotated_away_at: Option<DateTime<Utc>>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    put_str(&mut out, API_KEY_LIFETIME_TAG);
    put_str(&mut out, key_id);
    put_str(&mut out, api_key_id);
    put_opt_time(&mut out, expires_at);
    put_opt_time(&mut out, rotated_away_at);
    out
}

/// The MAC of an API key's end (expiry and rotation) under `key_id`, or `None` when the ring
/// has no such key.
pub fn api_key_lifetime_mac(
    keys: &LedgerKeys,
    key_id: &str,
    api_key_id: &str,
    expires_at: Option<DateTime<Utc>>,
    rotated_away_at: Option<DateTime<Utc>>,
) -> Option<[u8; 32]> {
    keys.seal_mac(
        key_id,
        &[&api_key_lifetime_mac_input(
            key_id,
            api_key_id,
            expires_at,
            rotated_away_at,
        )],
    )
}

/// Why an API key's expiry and rotation are not the ones pisgate wrote, or `None` when they
/// are: a key rotated away (payments only, until its grace ends) or expiring must not be
/// made full or endless in SQL.
pub fn api_key_lifetime_problem(
    keys: Option<&LedgerKeys>,
    api_key_id: &str,
    expires_at: Option<DateTime<Utc>>,
    rotated_away_at: Option<DateTime<Utc>>,
    mac: Option<&[u8]>,
    key_id: Option<&str>,
) -> Option<&'static str> {
    stored_mac_problem(keys, mac, key_id, |keys, key_id| {
        api_key_lifetime_mac(keys, key_id, api_key_id, expires_at, rotated_away_at)
    })
    .map(|p| match p {
        MacProblem::Missing => "the API key's expiry has no ledger MAC (removed, or never sealed)",
        MacProblem::NoRing => "no ledger key is installed to check the API key's expiry MAC",
        MacProblem::Edited => {
            "the API key's expiry or rotation is not what was written (edited)"
        }
        MacProblem::UnknownKey => {
            "the API key's expiry MAC key is not in the ledger key ring (PISGATE__LEDGER__PREVIOUS_KEYS)"
        }
        MacProblem::Retired => {
            "the API key's expiry is sealed under a retired ledger key (PISGATE__LEDGER__RETIRED_KEY_IDS; `pisgate ledger reseal` moves it)"
        }
    })
}

/// An API key's row as stored: what its two MACs cover, and the MACs.
#[derive(Debug, Clone, Copy)]
pub struct StoredApiKey<'a> {
    pub api_key_id: &'a str,
    pub merchant_id: Uuid,
    pub key_hash: &'a [u8],
    pub key_mac: Option<&'a [u8]>,
    pub key_mac_key_id: Option<&'a str>,
    pub expires_at: Option<DateTime<Utc>>,
    pub rotated_away_at: Option<DateTime<Utc>>,
    pub lifetime_mac: Option<&'a [u8]>,
    pub lifetime_mac_key_id: Option<&'a str>,
}

/// Why an API key's row may not authenticate anyone (nor be rotated into a grace), or
/// `None` when it may: [`api_key_problem`], then [`api_key_lifetime_problem`]. The one rule
/// of authentication, rotation and `ledger verify`.
pub fn api_key_row_problem(
    keys: Option<&LedgerKeys>,
    k: &StoredApiKey<'_>,
) -> Option<&'static str> {
    api_key_problem(
        keys,
        k.api_key_id,
        k.merchant_id,
        k.key_hash,
        k.key_mac,
        k.key_mac_key_id,
    )
    .or_else(|| {
        api_key_lifetime_problem(
            keys,
            k.api_key_id,
            k.expires_at,
            k.rotated_away_at,
            k.lifetime_mac,
            k.lifetime_mac_key_id,
        )
    })
}

/// Why a row's stored ledger MAC does not vouch for it.
enum MacProblem {
    /// No MAC or no key id stored.
    Missing,
    /// This process has no ring to check it with.
    NoRing,
    /// The MAC is not the one of the row's content.
    Edited,
    /// The ring lacks the key it was made with.
    UnknownKey,
    /// It was made with a retired key (`ledger.retired_key_ids`), which vouches for no live
    /// row: `pisgate ledger reseal` moves such rows to the current key before it is retired.
    Retired,
}

/// The one rule of a stored MAC: present with its key id, under a key of the ring, and
/// equal (in constant time) to `expected`, computed from the row's content under that key.
fn stored_mac_problem(
    keys: Option<&LedgerKeys>,
    mac: Option<&[u8]>,
    key_id: Option<&str>,
    expected: impl FnOnce(&LedgerKeys, &str) -> Option<[u8; 32]>,
) -> Option<MacProblem> {
    let (Some(mac), Some(key_id)) = (mac, key_id) else {
        return Some(MacProblem::Missing);
    };
    let Some(keys) = keys else {
        return Some(MacProblem::NoRing);
    };
    if keys.is_retired(key_id) {
        return Some(MacProblem::Retired);
    }
    match expected(keys, key_id) {
        None => Some(MacProblem::UnknownKey),
        Some(e) if aws_lc_rs::constant_time::verify_slices_are_equal(&e, mac).is_ok() => None,
        Some(_) => Some(MacProblem::Edited),
    }
}

/// The hex SHA-256 of a shopper key (the key names a shopper; the digest does not).
pub fn psu_key_digest(psu_key: &str) -> String {
    hex::encode(Sha256::digest(psu_key.as_bytes()))
}

/// A webhook event as stored, the fields its MAC covers.
#[derive(Debug, Clone, Copy)]
pub struct WebhookEventFacts<'a> {
    pub id: Uuid,
    pub merchant_id: Uuid,
    pub payment_id: Option<Uuid>,
    pub event_type: &'a str,
    pub created_at: DateTime<Utc>,
    /// The payload as jsonb gives it back.
    pub payload: &'a Value,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// `str(tag) || str(key_id) || id || merchant_id || opt(payment_id) || str(event_type) ||
/// str(created_at, RFC 3339 with microseconds) || str(canonical JSON of payload)`, with the
/// encodings of [`crate::ledger::events`].
pub fn webhook_mac_input(key_id: &str, e: &WebhookEventFacts<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    put_str(&mut out, WEBHOOK_TAG);
    put_str(&mut out, key_id);
    out.extend_from_slice(e.id.as_bytes());
    out.extend_from_slice(e.merchant_id.as_bytes());
    match e.payment_id {
        None => out.push(0),
        Some(p) => {
            out.push(1);
            out.extend_from_slice(p.as_bytes());
        }
    }
    put_str(&mut out, e.event_type);
    put_str(
        &mut out,
        &e.created_at.to_rfc3339_opts(SecondsFormat::Micros, true),
    );
    put_str(&mut out, &canonical_json(e.payload));
    out
}

/// The MAC of a webhook event under `key_id`, or `None` when the ring has no such key.
pub fn webhook_mac(keys: &LedgerKeys, key_id: &str, e: &WebhookEventFacts<'_>) -> Option<[u8; 32]> {
    keys.seal_mac(key_id, &[&webhook_mac_input(key_id, e)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(request: &Value) -> PaymentFacts<'_> {
        PaymentFacts {
            merchant_id: Uuid::from_u128(7),
            amount_minor: 1050,
            currency: "EUR",
            country: "FI",
            bank: "nordea",
            return_url: "https://shop.example/done",
            psu_id: Some("shopper-1"),
            request,
        }
    }

    #[test]
    fn the_facts_digest_changes_with_every_bound_fact_and_not_with_key_order() {
        let request = json!({"creditor": {"name": "Kauppa", "account": {"type": "IBAN", "value": "FI14"}},
                             "debtor": null, "urgency": "standard"});
        let base = facts_digest(&facts(&request));
        let reordered: Value = serde_json::from_str(
            r#"{"urgency":"standard","debtor":null,"creditor":{"account":{"value":"FI14","type":"IBAN"},"name":"Kauppa"}}"#,
        )
        .unwrap();
        assert_eq!(facts_digest(&facts(&reordered)), base);
        let other_creditor =
            json!({"creditor": {"name": "Kauppa", "account": {"type": "IBAN", "value": "FI15"}}});
        assert_ne!(facts_digest(&facts(&other_creditor)), base);
        let mut f = facts(&request);
        f.amount_minor = 105_000;
        assert_ne!(facts_digest(&f), base);
        let mut f = facts(&request);
        f.merchant_id = Uuid::from_u128(8);
        assert_ne!(facts_digest(&f), base);
        let mut f = facts(&request);
        f.psu_id = None;
        assert_ne!(facts_digest(&f), base);
    }

    #[test]
    fn a_stored_mac_vouches_only_for_the_row_it_was_made_for_under_a_key_of_the_ring() {
        let ring = LedgerKeys::new(
            "l1",
            &secrecy::SecretString::from(LedgerKeys::generate_key_base64()),
        )
        .unwrap();
        let (endpoint, merchant) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let url = "https://shop.example/hooks";
        let mac = endpoint_url_mac(&ring, "l1", endpoint, merchant, url).unwrap();
        let problem = |keys: Option<&LedgerKeys>,
                       url: &str,
                       merchant: Uuid,
                       mac: Option<&[u8]>,
                       key: Option<&str>| {
            endpoint_url_problem(keys, endpoint, merchant, url, mac, key)
        };
        assert_eq!(
            problem(Some(&ring), url, merchant, Some(&mac), Some("l1")),
            None
        );
        assert!(
            problem(
                Some(&ring),
                "https://evil.example/hooks",
                merchant,
                Some(&mac),
                Some("l1")
            )
            .is_some_and(|w| w.contains("edited"))
        );
        assert!(
            problem(Some(&ring), url, Uuid::from_u128(3), Some(&mac), Some("l1"))
                .is_some_and(|w| w.contains("edited"))
        );
        assert!(
            problem(Some(&ring), url, merchant, None, None)
                .is_some_and(|w| w.contains("no ledger MAC"))
        );
        assert!(
            problem(Some(&ring), url, merchant, Some(&mac), Some("l0"))
                .is_some_and(|w| w.contains("not in the ledger key ring"))
        );
        assert!(
            problem(None, url, merchant, Some(&mac), Some("l1"))
                .is_some_and(|w| w.contains("no ledger key"))
        );
        assert!(problem(Some(&ring), url, merchant, Some(&mac[..31]), Some("l1")).is_some());
        // A bank reference needs one, empty links (Nordea's) included; no bank id, none.
        let payment = Uuid::from_u128(4);
        assert!(
            bank_links_problem(Some(&ring), payment, Some("b1"), &json!({}), None, None).is_some()
        );
        assert_eq!(
            bank_links_problem(Some(&ring), payment, None, &json!({}), None, None),
            None
        );
        let links = json!({"status": "/v1/payments/sepa-credit-transfers/b1/status"});
        assert!(bank_links_problem(Some(&ring), payment, Some("b1"), &links, None, None).is_some());
        let mac = bank_links_mac(&ring, "l1", payment, "b1", &links).unwrap();
        assert_eq!(
            bank_links_problem(
                Some(&ring),
                payment,
                Some("b1"),
                &links,
                Some(&mac),
                Some("l1")
            ),
            None
        );
        assert!(
            bank_links_problem(
                Some(&ring),
                payment,
                Some("b2"),
                &links,
                Some(&mac),
                Some("l1")
            )
            .is_some()
        );
    }

    #[test]
    fn an_api_keys_lifetime_mac_holds_only_for_the_end_it_was_sealed_with() {
        let ring = LedgerKeys::new(
            "l1",
            &secrecy::SecretString::from(LedgerKeys::generate_key_base64()),
        )
        .unwrap();
        let at = |s: i64| DateTime::<Utc>::from_timestamp_micros(s * 1_000_000 + 123_456);
        let (ends, rotated) = (at(1_800_000_000), at(1_799_000_000));
        let mac = api_key_lifetime_mac(&ring, "l1", "k1", ends, rotated).unwrap();
        let problem = |id: &str, e, r| {
            api_key_lifetime_problem(Some(&ring), id, e, r, Some(&mac[..]), Some("l1"))
        };
        assert_eq!(problem("k1", ends, rotated), None);
        // Given back a full life, a longer one, a microsecond more, or to another key.
        for (id, e, r) in [
            ("k1", None, None),
            ("k1", None, rotated),
            ("k1", ends, None),
            ("k1", at(1_900_000_000), rotated),
            (
                "k1",
                ends.map(|t| t + chrono::Duration::microseconds(1)),
                rotated,
            ),
            ("k2", ends, rotated),
        ] {
            assert!(
                problem(id, e, r).is_some_and(|w| w.contains("edited")),
                "{id} {e:?} {r:?}"
            );
        }
        // A none and a time never read as each other.
        assert_ne!(
            api_key_lifetime_mac_input("l1", "k1", None, rotated),
            api_key_lifetime_mac_input("l1", "k1", rotated, None)
        );
        assert!(
            api_key_lifetime_problem(Some(&ring), "k1", ends, rotated, None, None)
                .is_some_and(|w| w.contains("no ledger MAC"))
        );
    }
}
