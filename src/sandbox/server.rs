//! Serving the sandbox: an accept loop of our own over hyper's HTTP/1 connections, because a
//! `drop_connection` fault must close the socket with no answer, which `axum::serve` cannot
//! do. A response marked [`DropConnection`] becomes a service error, and hyper closes the
//! connection without writing anything. Shutdown is graceful: stop accepting, let the
//! connections in flight finish.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt;

use super::handlers::DropConnection;
use super::{Sandbox, router};

/// The error a dropped connection is made of.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by an injected fault")]
struct Dropped;

/// Serves the sandbox on `listener` until `shutdown` completes, then waits (up to 10 s) for
/// the connections in flight.
pub async fn serve(
    listener: TcpListener,
    sandbox: Arc<Sandbox>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_app(listener, router(sandbox), shutdown).await
}

/// [`serve`] for any of the simulators' routers (the Berlin Group simulator's faults drop
/// connections the same way).
pub(crate) async fn serve_app(
    listener: TcpListener,
    app: axum::Router,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "sandbox accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let app = app.clone();
            async move {
                let resp = match app.oneshot(req.map(Body::new)).await {
                    Ok(resp) => resp,
                    Err(never) => match never {},
                };
                if resp.extensions().get::<DropConnection>().is_some() {
                    Err(Dropped)
                } else {
                    Ok(resp)
                }
            }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // Errors here are client disconnects and injected drops: nothing to do.
            let _ = conn.await;
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
    Ok(())
}

/// [`serve`] on a single-threaded runtime of its own thread, for `pisgate sandbox`: the
/// simulator's work is small per request, and on one thread it needs no wake-ups between
/// worker threads (on a busy box those cost more CPU than the requests themselves).
/// `shutdown` is awaited on the caller's runtime (signal handlers live there).
pub async fn serve_on_one_thread(
    listener: TcpListener,
    sandbox: Arc<Sandbox>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let listener = listener.into_std()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (done_tx, done) = tokio::sync::oneshot::channel::<io::Result<()>>();
    std::thread::Builder::new()
        .name("pisgate-sandbox".into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .and_then(|runtime| {
                    runtime.block_on(async move {
                        let listener = TcpListener::from_std(listener)?;
                        // A dropped sender (the caller went away) stops it as well.
                        serve(listener, sandbox, async {
                            let _ = stopped.await;
                        })
                        .await
                    })
                });
            let _ = done_tx.send(result);
        })?;
    let mut done = std::pin::pin!(done);
    tokio::select! {
        () = shutdown => {
            let _ = stop.send(());
        }
        result = &mut done => return result.unwrap_or(Ok(())),
    }
    done.await.unwrap_or(Ok(()))
}

fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
