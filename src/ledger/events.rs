//! TEMPORARY stand-in for the append-only ledger (replaced by the hash-chained version).
use crate::domain::PaymentStatus;
use sqlx::PgConnection;
use uuid::Uuid;

pub struct NewEvent {
    pub kind: String,
    pub old_status: Option<PaymentStatus>,
    pub new_status: Option<PaymentStatus>,
    pub bank_status: Option<String>,
    pub detail: serde_json::Value,
}

pub async fn append(
    _conn: &mut PgConnection,
    _payment_id: Uuid,
    _event: NewEvent,
) -> Result<(), sqlx::Error> {
    unimplemented!("replaced by the ledger branch")
}
