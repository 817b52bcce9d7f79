use sage_core::{App, Config};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() {
    sage_core::telemetry::init_logging();
    let config = Config::try_from_args(std::env::args_os()).unwrap_or_else(|error| error.exit());
    let address = format!("{}:{}", config.server.host, config.server.port);
    let state = App::from_config(config).await.unwrap_or_else(|error| {
        eprintln!(
            "sage-local: cannot start: {}",
            sage_core::telemetry::chain(&error)
        );
        std::process::exit(1);
    });
    let listener = TcpListener::bind(&address).await.unwrap_or_else(|error| {
        eprintln!("sage-local: cannot listen on {address}: {error}");
        std::process::exit(1);
    });
    state.start_background_tasks();
    tracing::info!(%address, "sage-local serving every function");
    if let Err(error) = sage_local::serve(listener, state, shutdown_signal()).await {
        eprintln!("sage-local: server failed: {error}");
        std::process::exit(1);
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
