//! `sage-local`: every function's router on one port, for local use and end-to-end tests, and
//! the chat page and API docs that use them.

use std::future::{Future, IntoFuture};

use axum::serve::ListenerExt;
use sage_core::{App, local_router};
use tokio::net::TcpListener;

mod web;

/// Connections the kernel holds for the server before it accepts them. The default of 128
/// (`TcpListener::bind`) is below a burst of clients starting together (Sage's load test starts
/// 200): the SYNs beyond it are dropped and those clients retry a second later.
const LISTEN_BACKLOG: u32 = 4096;

/// Listens on `address` (`host:port`, the first of its addresses that binds) with room for a
/// burst of connections.
pub async fn listen(address: &str) -> std::io::Result<TcpListener> {
    let mut last_error = None;
    for address in tokio::net::lookup_host(address).await? {
        let socket = if address.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(address) {
            Ok(()) => return socket.listen(LISTEN_BACKLOG),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "the host has no address")
    }))
}

/// Serves until `shutdown` resolves, then drains: running runs are interrupted and end their
/// streams with the tail, the event writers flush, and the server exits within the configured
/// grace (`--shutdown_grace_seconds`). Takes its listener so tests can bind port 0.
pub async fn serve(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = app.config().server.shutdown_grace;
    // Without TCP_NODELAY a reused connection waits ~40 ms on a delayed ACK per response.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let (draining, drain_started) = tokio::sync::oneshot::channel::<()>();
    let signal = {
        let app = app.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down");
            app.begin_shutdown();
            let _ = draining.send(());
        }
    };
    let routes = local_router(app.clone()).merge(web::routes());
    let server = axum::serve(listener, routes)
        .with_graceful_shutdown(signal)
        .into_future();
    let deadline = async move {
        if drain_started.await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        served = server => served?,
        () = deadline => tracing::warn!(?grace, "connections still open at the end of the grace period"),
    }
    app.shut_down(grace).await;
    Ok(())
}
