//! `GET /v1/banks`: the banks a merchant can send its shoppers to, and what each needs.
//!
//! Never: list a credential, a URL or anything else of a bank's configuration beyond what a
//! merchant chooses by.

use crate::api::AppState;
use crate::api::auth::AuthedMerchant;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

pub fn router() -> Router<AppState> {
    Router::new().route("/banks", get(list_banks))
}

/// One bank a payment can go to.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct BankView {
    /// Its id: `"bank"` in `POST /v1/payments`.
    #[schema(examples("nordea"))]
    id: String,
    /// Its name, as the shopper sees it.
    #[schema(examples("Nordea"))]
    name: String,
    /// The debtor countries it serves (ISO 3166-1 alpha-2).
    #[schema(examples(json!(["DK", "FI", "NO", "SE"])))]
    countries: Vec<String>,
    /// The protocol pisgate speaks with it.
    #[schema(examples("nordea"))]
    protocol: String,
    /// What it needs from the merchant.
    needs: BankNeeds,
}

/// What a bank needs in the payment request.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct BankNeeds {
    /// The shopper's own account (`debtor.account`). Without it, the shopper is asked for
    /// their IBAN on pisgate's page before the bank is called.
    debtor_account: bool,
}

/// Every bank the merchant's payments can go to.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct BankList {
    data: Vec<BankView>,
}

/// The banks payments can go to
///
/// Without `bank` in a payment, a country served by one bank uses it; where several serve
/// the country, the shopper chooses on pisgate's page.
#[utoipa::path(
    get,
    path = "/v1/banks",
    operation_id = "listBanks",
    tag = "Banks",
    responses((status = 200, description = "The configured banks, by id", body = BankList)),
)]
pub(crate) async fn list_banks(
    State(state): State<AppState>,
    AuthedMerchant(_merchant): AuthedMerchant,
) -> Json<BankList> {
    let data = state
        .banks
        .all()
        .map(|b| {
            let traits = b.client.traits();
            BankView {
                id: b.id.clone(),
                name: b.name.clone(),
                countries: b.countries.iter().map(|c| c.code().to_owned()).collect(),
                protocol: traits.protocol.to_owned(),
                needs: BankNeeds {
                    debtor_account: traits.needs_debtor_account,
                },
            }
        })
        .collect();
    Json(BankList { data })
}
