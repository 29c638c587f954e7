//! `edgejobs-stack`: starts the local stack for `scripts/dev`, writes its addresses and keys
//! to an env file, prints them, and stops everything on SIGINT/SIGTERM.

use std::path::PathBuf;
use std::sync::mpsc;

use anyhow::Context as _;
use edgejobs_tests::stack::{Profile, Stack, StackOptions};

fn usage() -> ! {
    eprintln!(
        "usage: edgejobs-stack --state-dir DIR --env-file FILE [--dev-vars FILE] [--no-consumer] [--release] [--var NAME=VALUE]..."
    );
    std::process::exit(2)
}

fn main() -> anyhow::Result<()> {
    let mut state_dir = None;
    let mut env_file = None;
    let mut dev_vars = None;
    let mut consumer = true;
    let mut vars = Vec::new();
    let mut profile = Profile::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--state-dir" => state_dir = args.next().map(PathBuf::from),
            "--env-file" => env_file = args.next().map(PathBuf::from),
            "--dev-vars" => dev_vars = args.next().map(PathBuf::from),
            "--no-consumer" => consumer = false,
            "--release" => profile = Profile::Release,
            "--var" => match args.next().as_deref().and_then(|kv| kv.split_once('=')) {
                Some((k, v)) => vars.push((k.to_owned(), v.to_owned())),
                None => usage(),
            },
            _ => usage(),
        }
    }
    let (Some(state_dir), Some(env_file)) = (state_dir, env_file) else { usage() };
    let (tx, rx) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })
    .context("cannot install the signal handler")?;
    let opts = StackOptions {
        root: StackOptions::default_root(),
        state_dir,
        dev_vars,
        consumer,
        persist_redis: true,
        vars,
        consumer_env: Vec::new(),
        profile,
        outbound_allow: String::new(),
        native_lease: None,
        edge_upstash_url: None,
        traces: true,
    };
    let mut stack = Stack::start(opts)?;
    let env = stack.env_lines();
    // It holds the keys: readable by this user only.
    edgejobs_tests::stack::write_secret(&env_file, &env)
        .with_context(|| format!("cannot write {}", env_file.display()))?;
    println!("edgejobs local stack is up (Ctrl-C or SIGTERM stops it)\n");
    println!("  edge API        {}   (curl $EDGEJOBS_URL/health)", stack.edge_url);
    println!("  consumer        {}/health  {}/metrics", stack.consumer_url, stack.consumer_url);
    println!("  upstash-local   {}   (Upstash REST API)", stack.upstash_url);
    println!("  redis-server    127.0.0.1:{}", stack.redis_port);
    println!(
        "  traces          {}/api/traces/<trace id>   (OTLP receiver; a job's trace id is in its `trace`)",
        stack.otlp_url
    );
    println!("  API key         {}", stack.secrets.api_key);
    println!("  admin key       {}", stack.secrets.admin_key);
    println!("\nall of it is in {} (source it: set -a; . {}; set +a)", env_file.display(), env_file.display());
    let _ = rx.recv();
    println!("stopping the local stack");
    stack.stop();
    let _ = std::fs::remove_file(&env_file);
    Ok(())
}
