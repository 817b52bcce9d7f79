use std::time::Duration;

use clap::Parser;
use sage_mock_llm::MockOptions;

/// A scripted OpenAI-compatible chat model (see the crate docs for the directives).
#[derive(Parser)]
#[command(name = "sage-mock-llm", version)]
struct Args {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8090)]
    port: u16,
    /// Pause between streamed chunks: 0 for benchmarks, 50 to mimic a model.
    #[arg(long = "token-delay-ms", default_value_t = 0)]
    token_delay_ms: u64,
    /// Length of the default answer in tokens (0 = a short fixed sentence).
    #[arg(long = "reply-words", default_value_t = 0)]
    reply_words: usize,
    /// Require this bearer key.
    #[arg(long = "api-key")]
    api_key: Option<String>,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    // Room for a burst of connections: `TcpListener::bind` queues 128, and a benchmark's server
    // opens one to the model for each of its 200 or 1,000 streams at once.
    let address = tokio::net::lookup_host((args.host.as_str(), args.port))
        .await?
        .next()
        .ok_or_else(|| std::io::Error::other("the host has no address"))?;
    let socket = match address {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    let listener = socket.listen(4096)?;
    eprintln!(
        "sage-mock-llm listening on http://{}/v1",
        listener.local_addr()?
    );
    let options = MockOptions {
        token_delay: Duration::from_millis(args.token_delay_ms),
        reply_words: args.reply_words,
        api_key: args.api_key,
    };
    sage_mock_llm::serve(listener, options, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
