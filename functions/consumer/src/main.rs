//! The `edgejobs-consumer` binary: parses and checks the config, logs JSON lines (and sends
//! errors to Sentry when `SENTRY_DSN` is set), stops on SIGTERM/SIGINT. Exit code 0 after a
//! clean drain, 2 for a configuration error, 3 when jobs were abandoned at the end of the
//! grace period (their entries are reclaimed by other consumers after the lease).

use clap::Parser;

fn main() -> std::process::ExitCode {
    edgejobs_consumer::main_with(edgejobs_consumer::Config::parse())
}
