//! The `edgejobs-consumer` binary: parses and checks the config, logs JSON lines (and sends
//! errors to Sentry when `SENTRY_DSN` is set), stops on SIGTERM/SIGINT. Exit code 0 after a
//! clean drain, 2 for a configuration error, 3 when jobs were abandoned at the end of the
//! grace period (their entries are reclaimed by other consumers after the lease).

use clap::Parser;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

fn main() -> std::process::ExitCode {
    let config = edgejobs_consumer::Config::parse();
    let _sentry = config.sentry_dsn.as_deref().map(|dsn| {
        sentry::init((dsn, sentry::ClientOptions { release: sentry::release_name!(), ..Default::default() }))
    });
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().json())
        .with(config.sentry_dsn.as_ref().map(|_| sentry::integrations::tracing::layer()))
        .init();
    let settings = match config.settings() {
        Ok(s) => s,
        Err(errors) => {
            for e in &errors {
                eprintln!("configuration error: {e}");
            }
            return std::process::ExitCode::from(2);
        }
    };
    let registry = edgejobs_consumer::handlers::Registry::builtins(&settings);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match rt.block_on(edgejobs_consumer::run(settings, registry, shutdown_signal())) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(3),
        Err(e) => {
            tracing::error!(error = %e, "consumer failed");
            std::process::ExitCode::from(1)
        }
    }
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
}
