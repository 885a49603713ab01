//! BankID's order machinery as the simulator plays it: the animated QR data (BankID's
//! published algorithm: `bankid.<qrStartToken>.<seconds since the order started>.<hex
//! HMAC-SHA256(key = qrStartSecret, message = the seconds in decimal)>`, new every second)
//! and the hint codes with the user message SEB's signing API answers in `psuMessage`.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How old (seconds since the order started) a QR code may be when scanned.
pub const QR_MAX_AGE_SECS: i64 = 30;

/// The QR code's authentication code for `secs`.
pub fn qr_auth_code(qr_start_secret: &str, secs: i64) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(qr_start_secret.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(secs.to_string().as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The QR data at `secs` seconds after the order started.
pub fn qr_data(qr_start_token: &str, qr_start_secret: &str, secs: i64) -> String {
    format!(
        "bankid.{qr_start_token}.{secs}.{}",
        qr_auth_code(qr_start_secret, secs)
    )
}

/// A scanned QR data string split into its parts (`None`: not BankID QR data).
pub fn parse_qr(data: &str) -> Option<(&str, i64, &str)> {
    let rest = data.strip_prefix("bankid.")?;
    let mut parts = rest.split('.');
    let token = parts.next()?;
    let secs: i64 = parts.next()?.parse().ok()?;
    let code = parts.next()?;
    if parts.next().is_some() || token.is_empty() || code.len() != 64 || secs < 0 {
        return None;
    }
    Some((token, secs, code))
}

/// The message shown to the shopper for a hint code (English; SEB's `psuMessage`).
pub fn psu_message(hint_code: &str) -> &'static str {
    match hint_code {
        "outstandingTransaction" | "noClient" => {
            "Start your BankID app (scan the QR code or open it on this device)."
        }
        "started" => "Searching for BankID, it may take a little while...",
        "userSign" => "Enter your security code in the BankID app and select Identify or Sign.",
        "userCancel" => "Action cancelled.",
        "expiredTransaction" => {
            "The BankID app is not responding. Please check that it is started and that you have internet access. Try again."
        }
        "certificateErr" => "The BankID you are trying to use is blocked or too old.",
        "startFailed" => "The BankID app could not be started. Try again.",
        "cancelled" => "Action cancelled. Please try again.",
        "sebTimeout" => "The signing took too long. Try again.",
        "complete" => "Done.",
        _ => "Internal error. Please try again.",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qr_data_follows_bankids_published_example_and_parses_back() {
        // BankID's documentation example: qrStartSecret d28db9a7-4cde-429e-a983-359be676944c,
        // time 0 → dc69358e712458a66a7525beef148ae8526b1c71610eff2c16cdffb4cdac9bf8.
        assert_eq!(
            qr_auth_code("d28db9a7-4cde-429e-a983-359be676944c", 0),
            "dc69358e712458a66a7525beef148ae8526b1c71610eff2c16cdffb4cdac9bf8"
        );
        let d = qr_data("67df3917-fa0d-44e5-b327-edcc928297f8", "secret", 5);
        let (token, secs, code) = parse_qr(&d).unwrap();
        assert_eq!(token, "67df3917-fa0d-44e5-b327-edcc928297f8");
        assert_eq!(secs, 5);
        assert_eq!(code, qr_auth_code("secret", 5));
        assert!(parse_qr("bankid.x.1").is_none());
        assert_ne!(
            qr_data("t", "secret", 1),
            qr_data("t", "secret", 2),
            "a second later the QR differs"
        );
    }
}
