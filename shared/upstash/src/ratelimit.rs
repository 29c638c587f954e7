//! A sliding-window rate limiter kept in Redis: a sorted set per key of request timestamps.
//! One pipeline per request trims the window, adds this request, counts and reads the
//! oldest entries; a refused request removes itself again (a second call, on the refusal
//! path only), so refused requests do not extend a client's wait.

use edgejobs_core::ratelimit::{Decision, Limit, decide};

use crate::client::{Client, Error, cmd};
use crate::reply::Reply;
use crate::transport::Transport;

/// Counts `cost` requests for `key` at `now` (ms). `nonce` makes this request's entries
/// unique (a random string from the caller).
pub async fn check<T: Transport>(
    client: &Client<T>,
    key: &str,
    limit: Limit,
    cost: u32,
    now: u64,
    nonce: &str,
) -> Result<Decision, Error> {
    let members: Vec<String> = (0..cost.max(1)).map(|i| format!("{now}-{nonce}-{i}")).collect();
    let mut zadd = cmd(["ZADD", key]);
    for m in &members {
        zadd.push(now.to_string());
        zadd.push(m.clone());
    }
    let cmds = vec![
        cmd([
            "ZREMRANGEBYSCORE".to_owned(),
            key.to_owned(),
            "-inf".to_owned(),
            format!("({}", now.saturating_sub(limit.window_ms)),
        ]),
        zadd,
        cmd(["ZCARD", key]),
        cmd([
            "ZRANGE".to_owned(),
            key.to_owned(),
            "0".to_owned(),
            (members.len() - 1).to_string(),
            "WITHSCORES".to_owned(),
        ]),
        cmd(["PEXPIRE".to_owned(), key.to_owned(), limit.window_ms.to_string()]),
    ];
    let replies = client.pipeline(&cmds).await?;
    let mut it = replies.into_iter();
    let mut next = || it.next().unwrap_or(Err(Error::Malformed("short pipeline reply".into())));
    next()?;
    next()?;
    let count = next()?.as_int().ok_or_else(|| Error::Malformed("ZCARD is not a number".into()))? as u64;
    let range = next()?;
    next()?;
    let oldest: Vec<u64> = range
        .as_array()
        .unwrap_or_default()
        .chunks(2)
        .filter_map(|pair| pair.get(1).and_then(Reply::as_str).and_then(|s| s.parse::<f64>().ok()).map(|f| f as u64))
        .collect();
    let d = decide(count, &oldest, limit, cost.max(1), now);
    if !d.allowed {
        let mut zrem = cmd(["ZREM", key]);
        zrem.extend(members);
        client.command(&zrem).await?;
    }
    Ok(d)
}
