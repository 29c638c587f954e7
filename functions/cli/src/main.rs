//! `edgejobs`: the command line of edgejobs. Every command but `consume` and `completions`
//! goes through the public HTTP API with a key, like any client, and reads its replies as
//! the `edgejobs-api` types.
//!
//! The URL and key come from one place (never half from one and half from another):
//! `--url`/`--key`, else the environment (`EDGEJOBS_URL`,
//! `EDGEJOBS_KEY`, else `EDGEJOBS_ADMIN_KEY`, else `EDGEJOBS_API_KEY`), else
//! `.edgejobs/dev.env` in the current directory or one above it (what `scripts/dev` writes).
//! The key is never printed.
//!
//! Layout: this file is the command line's definition and its dispatch; `client.rs` finds
//! the API and holds the `edgejobs-client` every request goes through (its event streams
//! carry `get --wait` and `tail`); one module per command group (`jobs.rs`: enqueue, get,
//! list, cancel, retry, tail; `dead.rs`; `backups.rs`; `schedules.rs`; `flow.rs`;
//! `health.rs`); `input.rs` reads job specs, `output.rs` writes tables, JSON and progress.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory as _, Parser, Subcommand};

mod backups;
mod client;
mod dead;
mod flow;
mod health;
mod input;
mod jobs;
mod output;
mod reseal;
mod schedules;

use client::{Api, Res, connect};

const EXIT_CODES: &str = "Exit codes:
  0  success
  1  the API could not be reached, or answered something unexpected
  2  usage error (also: no URL or key found)
  3  the API refused the request (400, 409, 413, ...; a bulk command: any item refused)
  4  the key is missing, unknown or lacks the scope (401, 403)
  5  not found (404)
  6  the service is unavailable (5xx, 429 after retries; `health`: unhealthy)
  7  `get --wait`: no final state before the timeout
  8  `get --wait`: the job ended dead or cancelled";

/// The edgejobs command line.
#[derive(Debug, Parser)]
#[command(name = "edgejobs", version, about, after_long_help = EXIT_CODES)]
struct Cli {
    /// The edge API's base URL [env: EDGEJOBS_URL; else .edgejobs/dev.env].
    #[arg(long, global = true)]
    url: Option<String>,
    /// The API key [env: EDGEJOBS_KEY, EDGEJOBS_ADMIN_KEY or EDGEJOBS_API_KEY; else .edgejobs/dev.env].
    #[arg(long, global = true, hide_env_values = true)]
    key: Option<String>,
    /// Print JSON (one document; one object per line for `list --all` and `tail`).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enqueue one job, or every line of an NDJSON file (`--from`), in batches of 100.
    Enqueue(Enqueue),
    /// Show a job; with --wait, follow it until it is completed, dead or cancelled.
    Get {
        id: String,
        /// Follow the job's event stream until it is final: its state and progress on
        /// standard error as they change, then the job.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits.
        #[arg(long, default_value = "60s", value_parser = duration)]
        timeout: Duration,
        /// With --wait: print the job's streams (such as an LLM's tokens) as they come.
        #[arg(long, requires = "wait")]
        stream: bool,
    },
    /// List jobs, newest first.
    List(ListArgs),
    /// Cancel a job (queued or scheduled: at once; active: its report is refused).
    Cancel { id: String },
    /// Replay a dead job as a new series of attempts.
    Retry { id: String },
    /// The dead-letter set.
    #[command(subcommand)]
    Dead(Dead),
    /// Backups in R2 (admin key).
    #[command(subcommand)]
    Backups(Backups),
    /// Re-seal every shard's stored header values under the newest PAYLOAD_ENCRYPTION_KEYS
    /// key, so an old key can be retired (admin key; idempotent).
    Reseal {
        /// Jobs per request (1 to 100).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100))]
        limit: u32,
    },
    /// Schedules: recurring jobs (reading: any key; changing: an admin key).
    #[command(subcommand)]
    Schedules(Schedules),
    /// Flow control's keys: show one, the busiest, pause or resume a key or a type.
    #[command(subcommand)]
    Flow(Flow),
    /// The edge's health; exit code 6 when unhealthy.
    Health,
    /// Follow jobs' states as they change, from the API's event stream (Ctrl-C stops).
    Tail {
        #[arg(long = "type")]
        job_type: Option<String>,
        #[arg(long)]
        tag: Option<String>,
        /// The first wait before opening a dropped stream again (it doubles up to 30s).
        #[arg(long, default_value = "1s", value_parser = duration)]
        interval: Duration,
        /// Stop after this long (default: until Ctrl-C).
        #[arg(long = "for", value_parser = duration)]
        run_for: Option<Duration>,
    },
    /// Run the native consumer (the same code as the `edgejobs-consumer` binary).
    Consume(Box<edgejobs_consumer::Config>),
    /// Print a shell completion script.
    Completions { shell: clap_complete::Shell },
}

#[derive(Debug, Args)]
struct Enqueue {
    /// The job type (not with --from).
    #[arg(required_unless_present = "from", conflicts_with = "from")]
    job_type: Option<String>,
    /// The payload: JSON, or @FILE to read it from a file.
    #[arg(long)]
    payload: Option<String>,
    /// Run after this long (e.g. 30s, 5m).
    #[arg(long)]
    delay: Option<String>,
    /// Run at this time (RFC 3339).
    #[arg(long)]
    run_at: Option<String>,
    #[arg(long)]
    idempotency_key: Option<String>,
    /// A tag (repeat for more).
    #[arg(long = "tag")]
    tags: Vec<String>,
    #[arg(long)]
    max_attempts: Option<u32>,
    /// How long one attempt may run (e.g. 30s).
    #[arg(long)]
    timeout: Option<String>,
    /// An NDJSON file of job specs (`-`: standard input); each line is what POST /v1/jobs takes.
    #[arg(long, conflicts_with_all = ["payload", "delay", "run_at", "idempotency_key", "tags", "max_attempts", "timeout"])]
    from: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct Filters {
    #[arg(long = "type")]
    job_type: Option<String>,
    #[arg(long)]
    tag: Option<String>,
    /// Changed at or after (RFC 3339).
    #[arg(long)]
    from: Option<String>,
    /// Changed before (RFC 3339).
    #[arg(long)]
    to: Option<String>,
}

#[derive(Debug, Args)]
struct ListArgs {
    #[arg(long)]
    state: Option<String>,
    #[command(flatten)]
    filters: Filters,
    #[arg(long)]
    id_prefix: Option<String>,
    /// Text in the payload or metadata.
    #[arg(long)]
    search: Option<String>,
    #[arg(long, default_value_t = 20)]
    limit: u32,
    /// Follow every page (at most 1,000).
    #[arg(long)]
    all: bool,
}

#[derive(Debug, Subcommand)]
enum Dead {
    /// List dead jobs.
    List {
        #[command(flatten)]
        filters: Filters,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Replay every dead job that matches (asks first unless --yes).
    Replay {
        #[command(flatten)]
        filters: Filters,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
enum Backups {
    List,
    /// Check a backup's objects against its manifest.
    Verify {
        id: String,
    },
    /// Start a backup now.
    Start,
    /// Replace every job with a backup's (asks first unless --yes).
    Restore {
        id: String,
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
enum Schedules {
    /// Every schedule, by name.
    List,
    /// One schedule: its definition, next runs and last runs.
    Show {
        name: String,
    },
    /// Create a schedule: a name, a cron expression and the job it enqueues.
    Create {
        name: String,
        /// Five fields, or six with seconds first; or @hourly, @daily, ...
        cron: String,
        /// The job type each run enqueues.
        job_type: String,
        /// The job's payload: JSON, or @FILE.
        #[arg(long)]
        payload: Option<String>,
        /// An IANA time zone (default UTC).
        #[arg(long)]
        timezone: Option<String>,
        /// allow, skip or queue_one.
        #[arg(long)]
        overlap: Option<String>,
        /// none or last.
        #[arg(long)]
        catch_up: Option<String>,
        /// A tag for the runs' jobs (repeat for more).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Create it paused.
        #[arg(long)]
        paused: bool,
    },
    Pause {
        name: String,
    },
    Resume {
        name: String,
    },
    /// Run it now, whatever its overlap policy.
    Trigger {
        name: String,
    },
    /// Delete it (asks first unless --yes); its jobs stay.
    Delete {
        name: String,
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
enum Flow {
    /// One key's state: running, waiting, rate, parked, paused.
    Show {
        /// The key (as the jobs name it).
        #[arg(value_name = "KEY")]
        flow_key: String,
        /// The key's tenant (an admin key; a jobs key sees its own).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Pause a key or a type (admin key): nothing new starts; queued jobs stay, parked.
    Pause(Target),
    /// Resume a key or a type (admin key): its parked jobs start again.
    Resume(Target),
    /// The keys with the most waiting jobs.
    Busiest {
        #[arg(short = 'n', long = "n", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
        n: u32,
    },
}

/// What `flow pause` and `flow resume` name: a key (of a tenant) or a job type. (The key
/// is positional: `--key` is the API key.)
#[derive(Debug, Args)]
#[group(skip)]
#[command(group = clap::ArgGroup::new("target").required(true).args(["flow_key", "job_type"]))]
struct Target {
    /// The key (as the jobs name it).
    #[arg(value_name = "KEY")]
    flow_key: Option<String>,
    /// The key's tenant (default: default).
    #[arg(long, requires = "flow_key")]
    tenant: Option<String>,
    /// A job type (paused on every shard, for every tenant).
    #[arg(long = "type")]
    job_type: Option<String>,
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Consume(config) => return edgejobs_consumer::main_with((**config).clone()),
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "edgejobs", &mut std::io::stdout());
            Ok(())
        }
        _ => connect(&cli).and_then(|api| run(&cli, &api)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn run(cli: &Cli, api: &Api) -> Res<()> {
    match &cli.command {
        Command::Enqueue(e) => match &e.from {
            Some(file) => jobs::enqueue_file(cli, api, file),
            None => jobs::enqueue_one(cli, api, e),
        },
        Command::Get { id, wait, timeout, stream } => jobs::get(cli, api, id, *wait, *timeout, *stream),
        Command::List(a) => jobs::list(cli, api, a),
        Command::Cancel { id } => jobs::act(cli, api, id, "cancel"),
        Command::Retry { id } => jobs::act(cli, api, id, "retry"),
        Command::Dead(Dead::List { filters, limit }) => dead::list(cli, api, filters, *limit),
        Command::Dead(Dead::Replay { filters, yes }) => dead::replay(cli, api, filters, *yes),
        Command::Backups(b) => backups::run(cli, api, b),
        Command::Reseal { limit } => reseal::run(cli, api, *limit),
        Command::Schedules(s) => schedules::run(cli, api, s),
        Command::Flow(f) => flow::run(cli, api, f),
        Command::Health => health::run(cli, api),
        Command::Tail { job_type, tag, interval, run_for } => jobs::tail(cli, api, job_type, tag, *interval, *run_for),
        Command::Consume(_) | Command::Completions { .. } => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
