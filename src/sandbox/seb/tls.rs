//! The API listener's mutual TLS: a rustls server (aws-lc-rs provider, TLS 1.2 and 1.3,
//! HTTP/1.1) that requires a client certificate chaining to the configured client CA. A
//! client without one, or with one from another CA, is refused in the handshake and the
//! refusal is recorded (rule `mtls-client-certificate`). It must never accept an
//! unauthenticated client on the API listener.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tower::ServiceExt;

use super::{RefusalRecord, SebSandboxError, SebSim, TestPki};

/// How long a client may take to finish the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn tls_err(e: impl std::fmt::Display) -> SebSandboxError {
    SebSandboxError::Tls(e.to_string())
}

fn certificates(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, SebSandboxError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(format!("{what}: {e}")))?;
    if certs.is_empty() {
        return Err(tls_err(format!("{what}: no PEM certificate")));
    }
    Ok(certs)
}

/// The server's TLS configuration: `cert_pem` (chain) and `key_pem` (PKCS#8, PKCS#1 or
/// SEC1) as its identity, client certificates required and verified against `client_ca_pem`.
pub fn server_config(
    cert_pem: &str,
    key_pem: &str,
    client_ca_pem: &str,
) -> Result<Arc<rustls::ServerConfig>, SebSandboxError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in certificates(client_ca_pem, "client_ca_file")? {
        roots
            .add(ca)
            .map_err(|e| tls_err(format!("client_ca_file: {e}")))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| tls_err(format!("client_ca_file: {e}")))?;
    let chain = certificates(cert_pem, "tls_certificate_file")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| tls_err(format!("tls_private_key_file: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| tls_err(format!("tls_certificate_file/tls_private_key_file: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A reqwest client that trusts only `pki`'s CA and, with `identity`, presents the TPP's
/// certificate (for tests and the adapter's sim tests).
pub fn client(pki: &TestPki, identity: bool) -> Result<reqwest::Client, reqwest::Error> {
    let ca = reqwest::Certificate::from_pem(pki.ca_pem.as_bytes())?;
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([ca])
        .timeout(Duration::from_secs(20));
    if identity {
        let pem = format!("{}\n{}", pki.tpp_cert_pem, pki.tpp_key_pem);
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes())?);
    }
    builder.build()
}

/// Accepts TLS connections on `listener` and serves `app` on each, until `shutdown`.
pub(super) async fn serve_mtls(
    listener: TcpListener,
    app: Router,
    sim: Arc<SebSim>,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let on_refused = move |detail: String| {
        sim.record_refusal(RefusalRecord {
            seq: 0,
            at: sim.now(),
            listener: "api",
            method: String::new(),
            path: String::new(),
            status: 0,
            rule: "mtls-client-certificate",
            code: None,
            detail,
        });
    };
    serve_mtls_with(listener, app, tls, shutdown, on_refused).await
}

/// The client's certificate chain as presented in the handshake (leaf first), put into every
/// request's extensions by [`serve_mtls_with`] so handlers can check whose it is.
#[derive(Debug, Clone)]
pub struct PeerCertificates(pub Arc<Vec<CertificateDer<'static>>>);

/// Put into a response's extensions, it makes [`serve_mtls_with`] close the connection
/// without sending that response (a simulated lost answer).
#[derive(Debug, Clone, Copy)]
pub struct CloseWithoutAnswer;

impl std::fmt::Display for CloseWithoutAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection closed without an answer (simulated)")
    }
}

impl std::error::Error for CloseWithoutAnswer {}

/// As [`serve_mtls`] for any simulator: `on_refused` is told of every refused handshake
/// (with the reason); every request carries the [`PeerCertificates`]; a response marked
/// [`CloseWithoutAnswer`] is not sent and its connection is closed.
pub(crate) async fn serve_mtls_with(
    listener: TcpListener,
    app: Router,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()>,
    on_refused: impl Fn(String) + Clone + Send + Sync + 'static,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "sandbox mutual-TLS accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let on_refused = on_refused.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls_stream =
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        on_refused(format!("TLS handshake refused: {e}"));
                        return;
                    }
                    Err(_) => return,
                };
            let peer = PeerCertificates(Arc::new(
                tls_stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                    .unwrap_or_default(),
            ));
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let app = app.clone();
                let mut req = req.map(Body::new);
                req.extensions_mut().insert(peer.clone());
                async move {
                    let resp = match app.oneshot(req).await {
                        Ok(resp) => resp,
                        Err(never) => match never {},
                    };
                    if resp.extensions().get::<CloseWithoutAnswer>().is_some() {
                        return Err(CloseWithoutAnswer);
                    }
                    Ok(resp)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls_stream), service);
            let _ = watcher.watch(conn).await;
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier as _;
    use rustls::pki_types::{ServerName, UnixTime};

    #[test]
    fn the_test_server_certificate_is_valid_for_localhost_and_127_0_0_1_through_the_test_ca() {
        let (pki, server) =
            crate::sandbox::berlin_group::test_pki::generate_with_server("CN=T,O=T,C=SE").unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(certificates(&pki.ca_pem, "ca").unwrap().remove(0))
            .unwrap();
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        let leaf = certificates(&server.cert_pem, "server").unwrap().remove(0);
        for name in ["localhost", "127.0.0.1", "::1"] {
            let name = ServerName::try_from(name).unwrap();
            verifier
                .verify_server_cert(&leaf, &[], &name, &[], UnixTime::now())
                .unwrap_or_else(|e| panic!("{name:?}: {e}"));
        }
        let other = ServerName::try_from("bank.example").unwrap();
        assert!(
            verifier
                .verify_server_cert(&leaf, &[], &other, &[], UnixTime::now())
                .is_err()
        );
        // And the server configuration accepts the pair.
        server_config(&server.cert_pem, &server.key_pem, &pki.ca_pem).unwrap();
        assert!(server_config(&server.cert_pem, &server.key_pem, "not a pem").is_err());
    }
}
