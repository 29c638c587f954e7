//! The command allow-list: which commands the gateway forwards to Redis. Everything else is
//! refused with a 400 before Redis sees it. The list is the data commands Upstash documents
//! as supported over REST (minus blocking ones) and every command this project and the
//! official `@upstash/redis` client send in our tests; README.md shows it (a unit test
//! keeps the two equal).
//!
//! Why refuse at all: the gateway multiplexes every request over one Redis connection, so a
//! blocking command (BLPOP, XREADGROUP ... BLOCK, WAIT) stalls every other client, and a
//! command that changes connection state (SELECT, MULTI, SUBSCRIBE, HELLO, CLIENT, RESET)
//! corrupts it for them. Admin commands (FLUSHALL, CONFIG, SHUTDOWN, DEBUG, SAVE, REPLICAOF,
//! MIGRATE, ...) have no place in a job platform's data path, and KEYS walks the whole
//! keyspace in one go (SCAN is allowed instead).

use crate::request::Refused;

/// What is allowed of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Any arguments.
    Any,
    /// Only these subcommands (the second word, case-insensitive).
    Sub(&'static [&'static str]),
    /// Any arguments except a `BLOCK` option (XREAD, XREADGROUP).
    NoBlock,
    /// The first argument is a script's text, which must be one of the project's
    /// ([`crate::scripts`]): EVAL, EVAL_RO.
    OwnScript,
    /// The first argument is a script's SHA-1, which must name one of the project's
    /// scripts: EVALSHA, EVALSHA_RO.
    OwnScriptSha,
}

/// Command groups, each with its commands, in the order README.md shows them. Names are
/// upper case and each appears once.
pub const GROUPS: &[(&str, &[(&str, Rule)])] = &[
    (
        "String",
        &[
            ("APPEND", Rule::Any),
            ("DECR", Rule::Any),
            ("DECRBY", Rule::Any),
            ("GET", Rule::Any),
            ("GETDEL", Rule::Any),
            ("GETEX", Rule::Any),
            ("GETRANGE", Rule::Any),
            ("GETSET", Rule::Any),
            ("INCR", Rule::Any),
            ("INCRBY", Rule::Any),
            ("INCRBYFLOAT", Rule::Any),
            ("MGET", Rule::Any),
            ("MSET", Rule::Any),
            ("MSETNX", Rule::Any),
            ("PSETEX", Rule::Any),
            ("SET", Rule::Any),
            ("SETEX", Rule::Any),
            ("SETNX", Rule::Any),
            ("SETRANGE", Rule::Any),
            ("STRLEN", Rule::Any),
        ],
    ),
    (
        "Bitmap",
        &[
            ("BITCOUNT", Rule::Any),
            ("BITFIELD", Rule::Any),
            ("BITFIELD_RO", Rule::Any),
            ("BITOP", Rule::Any),
            ("BITPOS", Rule::Any),
            ("GETBIT", Rule::Any),
            ("SETBIT", Rule::Any),
        ],
    ),
    (
        "Hash",
        &[
            ("HDEL", Rule::Any),
            ("HEXISTS", Rule::Any),
            ("HGET", Rule::Any),
            ("HGETALL", Rule::Any),
            ("HINCRBY", Rule::Any),
            ("HINCRBYFLOAT", Rule::Any),
            ("HKEYS", Rule::Any),
            ("HLEN", Rule::Any),
            ("HMGET", Rule::Any),
            ("HMSET", Rule::Any),
            ("HRANDFIELD", Rule::Any),
            ("HSCAN", Rule::Any),
            ("HSET", Rule::Any),
            ("HSETNX", Rule::Any),
            ("HSTRLEN", Rule::Any),
            ("HVALS", Rule::Any),
        ],
    ),
    (
        "List (no blocking commands)",
        &[
            ("LINDEX", Rule::Any),
            ("LINSERT", Rule::Any),
            ("LLEN", Rule::Any),
            ("LMOVE", Rule::Any),
            ("LMPOP", Rule::Any),
            ("LPOP", Rule::Any),
            ("LPOS", Rule::Any),
            ("LPUSH", Rule::Any),
            ("LPUSHX", Rule::Any),
            ("LRANGE", Rule::Any),
            ("LREM", Rule::Any),
            ("LSET", Rule::Any),
            ("LTRIM", Rule::Any),
            ("RPOP", Rule::Any),
            ("RPOPLPUSH", Rule::Any),
            ("RPUSH", Rule::Any),
            ("RPUSHX", Rule::Any),
        ],
    ),
    (
        "Set",
        &[
            ("SADD", Rule::Any),
            ("SCARD", Rule::Any),
            ("SDIFF", Rule::Any),
            ("SDIFFSTORE", Rule::Any),
            ("SINTER", Rule::Any),
            ("SINTERCARD", Rule::Any),
            ("SINTERSTORE", Rule::Any),
            ("SISMEMBER", Rule::Any),
            ("SMEMBERS", Rule::Any),
            ("SMISMEMBER", Rule::Any),
            ("SMOVE", Rule::Any),
            ("SPOP", Rule::Any),
            ("SRANDMEMBER", Rule::Any),
            ("SREM", Rule::Any),
            ("SSCAN", Rule::Any),
            ("SUNION", Rule::Any),
            ("SUNIONSTORE", Rule::Any),
        ],
    ),
    (
        "Sorted set (no blocking commands)",
        &[
            ("ZADD", Rule::Any),
            ("ZCARD", Rule::Any),
            ("ZCOUNT", Rule::Any),
            ("ZDIFF", Rule::Any),
            ("ZDIFFSTORE", Rule::Any),
            ("ZINCRBY", Rule::Any),
            ("ZINTER", Rule::Any),
            ("ZINTERCARD", Rule::Any),
            ("ZINTERSTORE", Rule::Any),
            ("ZLEXCOUNT", Rule::Any),
            ("ZMPOP", Rule::Any),
            ("ZMSCORE", Rule::Any),
            ("ZPOPMAX", Rule::Any),
            ("ZPOPMIN", Rule::Any),
            ("ZRANDMEMBER", Rule::Any),
            ("ZRANGE", Rule::Any),
            ("ZRANGEBYLEX", Rule::Any),
            ("ZRANGEBYSCORE", Rule::Any),
            ("ZRANGESTORE", Rule::Any),
            ("ZRANK", Rule::Any),
            ("ZREM", Rule::Any),
            ("ZREMRANGEBYLEX", Rule::Any),
            ("ZREMRANGEBYRANK", Rule::Any),
            ("ZREMRANGEBYSCORE", Rule::Any),
            ("ZREVRANGE", Rule::Any),
            ("ZREVRANGEBYLEX", Rule::Any),
            ("ZREVRANGEBYSCORE", Rule::Any),
            ("ZREVRANK", Rule::Any),
            ("ZSCAN", Rule::Any),
            ("ZSCORE", Rule::Any),
            ("ZUNION", Rule::Any),
            ("ZUNIONSTORE", Rule::Any),
        ],
    ),
    (
        "Geo",
        &[
            ("GEOADD", Rule::Any),
            ("GEODIST", Rule::Any),
            ("GEOHASH", Rule::Any),
            ("GEOPOS", Rule::Any),
            ("GEORADIUS", Rule::Any),
            ("GEORADIUSBYMEMBER", Rule::Any),
            ("GEORADIUSBYMEMBER_RO", Rule::Any),
            ("GEORADIUS_RO", Rule::Any),
            ("GEOSEARCH", Rule::Any),
            ("GEOSEARCHSTORE", Rule::Any),
        ],
    ),
    ("HyperLogLog", &[("PFADD", Rule::Any), ("PFCOUNT", Rule::Any), ("PFMERGE", Rule::Any)]),
    (
        "Stream (XREAD and XREADGROUP without BLOCK)",
        &[
            ("XACK", Rule::Any),
            ("XADD", Rule::Any),
            ("XAUTOCLAIM", Rule::Any),
            ("XCLAIM", Rule::Any),
            ("XDEL", Rule::Any),
            ("XGROUP", Rule::Sub(&["CREATE", "CREATECONSUMER", "DELCONSUMER", "DESTROY", "SETID"])),
            ("XINFO", Rule::Sub(&["CONSUMERS", "GROUPS", "STREAM"])),
            ("XLEN", Rule::Any),
            ("XPENDING", Rule::Any),
            ("XRANGE", Rule::Any),
            ("XREAD", Rule::NoBlock),
            ("XREADGROUP", Rule::NoBlock),
            ("XREVRANGE", Rule::Any),
            ("XTRIM", Rule::Any),
        ],
    ),
    (
        "Keys (SCAN, not KEYS)",
        &[
            ("COPY", Rule::Any),
            ("DEL", Rule::Any),
            ("EXISTS", Rule::Any),
            ("EXPIRE", Rule::Any),
            ("EXPIREAT", Rule::Any),
            ("EXPIRETIME", Rule::Any),
            ("PERSIST", Rule::Any),
            ("PEXPIRE", Rule::Any),
            ("PEXPIREAT", Rule::Any),
            ("PEXPIRETIME", Rule::Any),
            ("PTTL", Rule::Any),
            ("RANDOMKEY", Rule::Any),
            ("RENAME", Rule::Any),
            ("RENAMENX", Rule::Any),
            ("SCAN", Rule::Any),
            ("TOUCH", Rule::Any),
            ("TTL", Rule::Any),
            ("TYPE", Rule::Any),
            ("UNLINK", Rule::Any),
        ],
    ),
    (
        "Scripting",
        &[
            ("EVAL", Rule::OwnScript),
            ("EVALSHA", Rule::OwnScriptSha),
            ("EVALSHA_RO", Rule::OwnScriptSha),
            ("EVAL_RO", Rule::OwnScript),
            ("SCRIPT", Rule::Sub(&["EXISTS", "LOAD"])),
        ],
    ),
    ("Pub/Sub (publishing only)", &[("PUBLISH", Rule::Any), ("PUBSUB", Rule::Sub(&["CHANNELS", "NUMPAT", "NUMSUB"]))]),
    ("Connection", &[("ECHO", Rule::Any), ("PING", Rule::Any)]),
    ("Server (read-only)", &[("DBSIZE", Rule::Any), ("INFO", Rule::Any), ("TIME", Rule::Any)]),
];

/// Commands that would wait for data on the shared connection; refused with a message that
/// says so (they are not on the list either).
pub const BLOCKING: &[&str] = &[
    "BLMOVE",
    "BLMPOP",
    "BLPOP",
    "BRPOP",
    "BRPOPLPUSH",
    "BZMPOP",
    "BZPOPMAX",
    "BZPOPMIN",
    "WAIT",
    "WAITAOF",
    "SUBSCRIBE",
    "PSUBSCRIBE",
    "SSUBSCRIBE",
    "MONITOR",
];

/// The rule for `name` (upper case), if the command is allowed.
pub fn rule(name: &str) -> Option<Rule> {
    GROUPS.iter().flat_map(|(_, cmds)| cmds.iter()).find(|(n, _)| *n == name).map(|(_, r)| *r)
}

/// Checks one command against the allow-list. `Ok` means the gateway may forward it.
pub fn check_allowed(args: &[Vec<u8>]) -> Result<(), Refused> {
    let Some(first) = args.first() else {
        return Err(Refused::Malformed("empty command".into()));
    };
    // Command names are ASCII; anything else cannot be on the list. The name is shown
    // clipped and lossily, so a refusal never echoes a large or binary argument back.
    let name = String::from_utf8_lossy(&first[..first.len().min(64)]).to_ascii_uppercase();
    let Some(rule) = rule(&name) else {
        return Err(if BLOCKING.contains(&name.as_str()) {
            Refused::Blocking(name)
        } else {
            Refused::Unsupported(name)
        });
    };
    match rule {
        Rule::Any => Ok(()),
        Rule::Sub(subs) => {
            let sub = args.get(1).map(|s| String::from_utf8_lossy(&s[..s.len().min(64)]).to_ascii_uppercase());
            match sub {
                // SCRIPT LOAD caches a script: only one of the project's.
                Some(sub) if name == "SCRIPT" && sub == "LOAD" => own_script(&name, args.get(2)),
                Some(sub) if subs.contains(&sub.as_str()) => Ok(()),
                Some(sub) => Err(Refused::Unsupported(format!("{name} {sub}"))),
                None => Err(Refused::Unsupported(name)),
            }
        }
        Rule::NoBlock if has_block_option(&name, args) => Err(Refused::BlockOption(name)),
        Rule::NoBlock => Ok(()),
        Rule::OwnScript => own_script(&name, args.get(1)),
        Rule::OwnScriptSha => match args.get(1) {
            Some(sha) if crate::scripts::is_known_sha(sha) => Ok(()),
            _ => Err(Refused::UnknownScript(name)),
        },
    }
}

/// A script's text must be one of the project's.
fn own_script(name: &str, text: Option<&Vec<u8>>) -> Result<(), Refused> {
    match text {
        Some(t) if crate::scripts::is_known_script(t) => Ok(()),
        _ => Err(Refused::UnknownScript(name.to_owned())),
    }
}

/// Whether an XREAD or XREADGROUP names the BLOCK option. Options come before `STREAMS`
/// (after which everything is a key or an id, so a stream named "BLOCK" is fine); for
/// XREADGROUP they follow `GROUP <group> <consumer>`, which are skipped by position so a
/// group or consumer named "BLOCK" is fine too. Any BLOCK word among the options refuses the
/// command, even where Redis would take it as another option's value (Redis would refuse
/// that command anyway).
fn has_block_option(name: &str, args: &[Vec<u8>]) -> bool {
    let skip = if name == "XREADGROUP" { 4 } else { 1 };
    args.iter().skip(skip).take_while(|a| !a.eq_ignore_ascii_case(b"STREAMS")).any(|a| a.eq_ignore_ascii_case(b"BLOCK"))
}

/// Every allowed command as README.md lists it: one line per group, `Sub` commands with their
/// subcommands, `NoBlock` ones marked.
pub fn allowed_markdown() -> String {
    let mut out = String::new();
    for (group, cmds) in GROUPS {
        let names: Vec<String> = cmds
            .iter()
            .map(|(n, r)| match r {
                Rule::Any => format!("`{n}`"),
                Rule::Sub(subs) => format!("`{n}` ({})", subs.join(", ")),
                Rule::NoBlock => format!("`{n}` (without BLOCK)"),
                Rule::OwnScript => format!("`{n}` (the project's scripts only)"),
                Rule::OwnScriptSha => format!("`{n}` (the project's scripts' SHA-1s only)"),
            })
            .collect();
        out.push_str(&format!("- **{group}**: {}\n", names.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<Vec<u8>> {
        s.split(' ').map(|a| a.as_bytes().to_vec()).collect()
    }

    #[test]
    fn table() {
        let ok = [
            "GET k",
            "get k",
            "Set k v EX 10",
            "XADD s * id j1",
            "XREADGROUP GROUP g c COUNT 10 STREAMS s >",
            "xreadgroup group g c count 10 streams s >",
            // Group, consumer or stream named BLOCK are names, not the option.
            "XREADGROUP GROUP BLOCK BLOCK STREAMS BLOCK >",
            "XREAD COUNT 1 STREAMS BLOCK 0",
            "XAUTOCLAIM s g c 30000 0-0 COUNT 10",
            "XCLAIM s g c 0 1-1 JUSTID",
            "XACK s g 1-1",
            "XGROUP CREATE s g 0 MKSTREAM",
            "xgroup create s g $ mkstream",
            "XPENDING s g - + 10",
            "XLEN s",
            "XDEL s 1-1",
            "XTRIM s MAXLEN ~ 1000",
            "ZADD k 1 a",
            "ZREMRANGEBYSCORE k 0 1",
            "ZCARD k",
            "ZRANGE k 0 -1 WITHSCORES",
            "ZREM k a",
            "PEXPIRE k 1000",
            "PING",
            "INFO commandstats",
            "INFO",
            "DBSIZE",
            "HSET h f v",
            "HGETALL h",
            "HINCRBY h f 1",
            "DEL a b",
            "SCAN 0 MATCH x* COUNT 10",
        ];
        for c in ok {
            assert_eq!(check_allowed(&args(c)), Ok(()), "{c}");
        }
        let refused: &[(&str, Refused)] = &[
            ("FLUSHALL", Refused::Unsupported("FLUSHALL".into())),
            ("flushdb ASYNC", Refused::Unsupported("FLUSHDB".into())),
            ("CONFIG SET maxmemory 1", Refused::Unsupported("CONFIG".into())),
            ("SHUTDOWN NOSAVE", Refused::Unsupported("SHUTDOWN".into())),
            ("DEBUG SLEEP 10", Refused::Unsupported("DEBUG".into())),
            ("KEYS *", Refused::Unsupported("KEYS".into())),
            ("SELECT 1", Refused::Unsupported("SELECT".into())),
            ("MULTI", Refused::Unsupported("MULTI".into())),
            ("EXEC", Refused::Unsupported("EXEC".into())),
            ("WATCH k", Refused::Unsupported("WATCH".into())),
            ("HELLO 3", Refused::Unsupported("HELLO".into())),
            ("CLIENT KILL ID 1", Refused::Unsupported("CLIENT".into())),
            ("REPLICAOF host 1", Refused::Unsupported("REPLICAOF".into())),
            ("SAVE", Refused::Unsupported("SAVE".into())),
            ("BGSAVE", Refused::Unsupported("BGSAVE".into())),
            ("MIGRATE h 1 k 0 1", Refused::Unsupported("MIGRATE".into())),
            ("RESTORE k 0 x", Refused::Unsupported("RESTORE".into())),
            ("AUTH x", Refused::Unsupported("AUTH".into())),
            ("NOSUCHCMD", Refused::Unsupported("NOSUCHCMD".into())),
            ("SCRIPT FLUSH", Refused::Unsupported("SCRIPT FLUSH".into())),
            // Scripts: only the project's own (see `own_scripts_only` for those).
            ("EVAL script 1 k", Refused::UnknownScript("EVAL".into())),
            ("eval_ro script 0", Refused::UnknownScript("EVAL_RO".into())),
            ("EVAL", Refused::UnknownScript("EVAL".into())),
            ("EVALSHA abc 0", Refused::UnknownScript("EVALSHA".into())),
            ("EVALSHA e0e1f9fabfc9d4800c877a703b823ac0578ff8db 0", Refused::UnknownScript("EVALSHA".into())),
            ("SCRIPT LOAD x", Refused::UnknownScript("SCRIPT".into())),
            ("SCRIPT KILL", Refused::Unsupported("SCRIPT KILL".into())),
            ("SCRIPT", Refused::Unsupported("SCRIPT".into())),
            ("XGROUP HELP", Refused::Unsupported("XGROUP HELP".into())),
            ("BLPOP k 0", Refused::Blocking("BLPOP".into())),
            ("brpop k 0", Refused::Blocking("BRPOP".into())),
            ("BZPOPMIN k 0", Refused::Blocking("BZPOPMIN".into())),
            ("BLMOVE a b LEFT RIGHT 0", Refused::Blocking("BLMOVE".into())),
            ("WAIT 1 0", Refused::Blocking("WAIT".into())),
            ("SUBSCRIBE c", Refused::Blocking("SUBSCRIBE".into())),
            ("MONITOR", Refused::Blocking("MONITOR".into())),
            ("XREAD BLOCK 0 STREAMS s $", Refused::BlockOption("XREAD".into())),
            ("XREADGROUP GROUP g c BLOCK 0 STREAMS s >", Refused::BlockOption("XREADGROUP".into())),
            ("xreadgroup group g c count 1 block 100 streams s >", Refused::BlockOption("XREADGROUP".into())),
        ];
        for (c, want) in refused {
            assert_eq!(&check_allowed(&args(c)).expect_err(c), want, "{c}");
        }
        assert!(matches!(check_allowed(&[]), Err(Refused::Malformed(_))));
        assert!(matches!(check_allowed(&[vec![0xff, 0xfe]]), Err(Refused::Unsupported(_))));
        // A huge name is not echoed back whole.
        let long = vec![b'A'; 10_000];
        assert!(check_allowed(&[long]).expect_err("refused").to_string().len() < 200);
    }

    #[test]
    fn every_command_the_project_sends_is_allowed() {
        // Commands in shared/upstash, functions/edge, functions/consumer, the e2e tests,
        // tests/compat/upstash-official.mjs and the benchmark (INFO commandstats), plus those
        // announced by coming changes (XTRIM, XDEL, DBSIZE).
        for name in [
            "EVAL",
            "EVALSHA",
            "XADD",
            "XREADGROUP",
            "XAUTOCLAIM",
            "XCLAIM",
            "XACK",
            "XGROUP",
            "ZADD",
            "ZREMRANGEBYSCORE",
            "ZCARD",
            "ZRANGE",
            "ZREM",
            "PEXPIRE",
            "GET",
            "SET",
            "PING",
            "XLEN",
            "XPENDING",
            "XDEL",
            "XTRIM",
            "INFO",
            "DBSIZE",
            "INCR",
            "INCRBY",
            "HSET",
            "HGET",
            "HGETALL",
            "HINCRBY",
            "DEL",
        ] {
            assert!(rule(name).is_some(), "{name}");
        }
    }

    #[test]
    fn own_scripts_only() {
        for script in crate::scripts::ALL {
            let sha = crate::scripts::sha1_hex(script.as_bytes());
            for ok in [
                vec![b"EVAL".to_vec(), script.as_bytes().to_vec(), b"1".to_vec(), b"k".to_vec()],
                vec![b"evalsha".to_vec(), sha.clone().into_bytes(), b"1".to_vec(), b"k".to_vec()],
                vec![b"EVALSHA_RO".to_vec(), sha.to_ascii_uppercase().into_bytes(), b"0".to_vec()],
                vec![b"SCRIPT".to_vec(), b"load".to_vec(), script.as_bytes().to_vec()],
            ] {
                assert_eq!(check_allowed(&ok), Ok(()), "{:?}", String::from_utf8_lossy(&ok[0]));
            }
            // One byte more is another script.
            let changed = format!("{script} ");
            let refused = check_allowed(&[b"EVAL".to_vec(), changed.into_bytes(), b"0".to_vec()]);
            assert_eq!(refused, Err(Refused::UnknownScript("EVAL".into())));
        }
    }

    #[test]
    fn names_are_upper_case_unique_and_not_blocking() {
        let mut seen = std::collections::BTreeSet::new();
        for (_, cmds) in GROUPS {
            for (name, _) in *cmds {
                assert_eq!(*name, name.to_ascii_uppercase());
                assert!(seen.insert(*name), "{name} listed twice");
                assert!(!BLOCKING.contains(name), "{name} is blocking");
            }
        }
    }

    #[test]
    fn readme_lists_exactly_the_allowed_commands() {
        let readme = include_str!("../README.md");
        let start = "<!-- allowed-commands:start (generated by allow::allowed_markdown; a unit test checks it) -->\n";
        let end = "<!-- allowed-commands:end -->";
        let from = readme.find(start).expect("README has the start marker") + start.len();
        let to = readme[from..].find(end).expect("README has the end marker") + from;
        let want = allowed_markdown();
        assert!(readme[from..to] == want, "README.md's command list is stale; replace it with:\n{want}");
    }
}
