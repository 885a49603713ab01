//! RSA-2048 signing throughput on one thread: aws-lc-rs (what pisgate signs with) and the
//! `rsa` crate (which only reads keys and verifies), with `openssl speed` beside them as an
//! outside reference. Uses the known-answer test key and signing string.
//!
//! Run: `cargo bench --bench signing` (prints plain lines; no harness).

use pisgate::bank::nordea::signing::{SigningKey, parse_private_key};
use rsa::pkcs1v15::SigningKey as RsaSigningKey;
use rsa::signature::{SignatureEncoding as _, Signer as _};
use sha2::Sha256;
use std::hint::black_box;
use std::process::Command;
use std::time::{Duration, Instant};

const KEY: &str = include_str!("../tests/fixtures/nordea/kat-private.pem");
const MESSAGE: &str = include_str!("../tests/fixtures/nordea/kat-signing-string.txt");
const RUN_FOR: Duration = Duration::from_secs(3);

/// Signatures per second of `sign` over `RUN_FOR`, after a short warm-up.
fn per_second(mut sign: impl FnMut() -> Vec<u8>) -> f64 {
    for _ in 0..20 {
        black_box(sign());
    }
    let started = Instant::now();
    let mut count: u32 = 0;
    while started.elapsed() < RUN_FOR {
        black_box(sign());
        count += 1;
    }
    f64::from(count) / started.elapsed().as_secs_f64()
}

/// The sign/s figure of `openssl speed -seconds 3 rsa2048`, with its raw result line.
fn openssl_speed() -> Option<(String, String)> {
    let output = Command::new("openssl")
        .args(["speed", "-seconds", "3", "rsa2048"])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().find(|l| l.starts_with("rsa 2048 bits"))?;
    // "rsa 2048 bits 0.000636s 0.000018s   1572.3  54729.1": sign/s is the sixth field.
    let sign_per_second = line.split_whitespace().nth(5)?.to_owned();
    Some((sign_per_second, line.trim().to_owned()))
}

fn main() {
    let key = SigningKey::from_text(KEY).expect("the known-answer key");
    let reference = RsaSigningKey::<Sha256>::new(parse_private_key(KEY).expect("the key"));
    let message = MESSAGE.as_bytes();
    assert_eq!(
        key.sign(message).expect("aws-lc-rs signs"),
        reference.sign(message).to_vec(),
        "both libraries must produce the same PKCS#1 v1.5 signature"
    );

    println!(
        "rsa2048 sign, aws-lc-rs: {:.0} signatures/s (1 thread, {}s)",
        per_second(|| key.sign(message).expect("sign")),
        RUN_FOR.as_secs()
    );
    println!(
        "rsa2048 sign, rsa crate: {:.0} signatures/s (1 thread, {}s)",
        per_second(|| reference.sign(message).to_vec()),
        RUN_FOR.as_secs()
    );
    match openssl_speed() {
        Some((sign_per_second, line)) => {
            println!("rsa2048 sign, openssl speed: {sign_per_second} signatures/s ({line})")
        }
        None => println!("rsa2048 sign, openssl speed: not available"),
    }
}
