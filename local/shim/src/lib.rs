//! `sage-local`: every function's router on one port, for local use and end-to-end tests.

use std::future::Future;

use axum::serve::ListenerExt;
use sage_core::{AppState, local_router};
use tokio::net::TcpListener;

/// Serves until `shutdown` resolves. Takes its listener so tests can bind port 0.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Without TCP_NODELAY a reused connection waits ~40 ms on a delayed ACK per response.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, local_router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
