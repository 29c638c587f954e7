//! The `upstash-local` binary: reads its settings, refuses to start on bad ones (exit code 2,
//! every problem listed), then serves until SIGTERM or Ctrl-C.

use clap::Parser as _;
use edgejobs_upstash_local::config::RawArgs;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().json().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let config = match RawArgs::parse().check() {
        Ok(config) => config,
        Err(problems) => {
            for p in problems {
                eprintln!("upstash-local: {p}");
            }
            std::process::exit(2);
        }
    };
    edgejobs_upstash_local::gateway::run(config, shutdown()).await?;
    Ok(())
}

async fn shutdown() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
