//! Fuzzes upstash-local's request parsing and allow-list (`request::parse_path_command`,
//! `parse_body_command`, `parse_pipeline`, `allow::check_allowed`). Properties: no panic;
//! every parsed command is non-empty; a refusal's text has Upstash's shape (`ERR ...`) and
//! stays short; arguments percent-encoded into a path parse back to themselves.

#![no_main]

use edgejobs_upstash_local::allow::check_allowed;
use edgejobs_upstash_local::request::{Args, parse_body_command, parse_path_command, parse_pipeline};
use libfuzzer_sys::fuzz_target;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

fn checked(args: &Args) {
    assert!(!args.is_empty(), "a parsed command is never empty");
    if let Err(r) = check_allowed(args) {
        let text = r.to_string();
        assert!(text.starts_with("ERR ") && text.len() < 300, "{text:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(args) = parse_body_command(data) {
        checked(&args);
    }
    if let Ok(cmds) = parse_pipeline(data) {
        cmds.iter().for_each(checked);
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    // The text as a path, without and with a POST body.
    let (path, body) = text.split_once('\n').map_or((text, None), |(p, b)| (p, Some(b.as_bytes())));
    if let Ok(args) = parse_path_command(path, body) {
        checked(&args);
    }
    // NUL-separated arguments, percent-encoded into a path, come back unchanged.
    let args: Vec<&str> = text.split('\0').filter(|a| !a.is_empty()).collect();
    if !args.is_empty() {
        let path: String = args.iter().map(|a| format!("/{}", utf8_percent_encode(a, NON_ALPHANUMERIC))).collect();
        let want: Args = args.iter().map(|a| a.as_bytes().to_vec()).collect();
        assert_eq!(parse_path_command(&path, None), Ok(want), "{path:?}");
    }
});
