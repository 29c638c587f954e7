//! The long-job stream in Upstash: the consumer group, reading, taking over idle entries,
//! renewing leases and acknowledging. A lease is a pending entry owned by this consumer.
//! Every operation on an entry that may have changed hands is one Lua script that checks the
//! owner first (XPENDING) and acts only on entries this consumer still owns, so a consumer
//! never renews, acknowledges or deletes an entry another consumer took over. Acknowledged
//! entries are deleted at once (XACK + XDEL), so the stream holds only unfinished work.

use edgejobs_core::JobId;
use edgejobs_core::trace::TraceContext;
use edgejobs_core::wire::{CONSUMERS_KEY, Presence};
use edgejobs_upstash::client::cmd;
use edgejobs_upstash::transport::Transport;
use edgejobs_upstash::{Client, Error, Reply};

/// One stream entry: attempt `attempt` of job `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub entry: String,
    pub id: Option<JobId>,
    pub attempt: u32,
    /// The job's trace context as the edge handed it off (#32): the parent of this
    /// delivery's span. `None` for entries written before #32 or without one.
    pub trace: Option<TraceContext>,
    /// For a takeover: the consumer that held it, to give it back if the edge says its lease
    /// still holds.
    pub previous_owner: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Stream<T> {
    pub client: Client<T>,
    pub key: String,
    pub group: String,
    pub me: String,
}

// The lease scripts live with the project's other Lua scripts, where the local gateway
// reads them too.
pub use edgejobs_core::scripts::{ACK_SCRIPT, GIVE_BACK_SCRIPT, RECLAIM_SCRIPT, RENEW_SCRIPT};

/// The fields of an entry: job id, attempt and trace context.
type Fields = (Option<JobId>, u32, Option<TraceContext>);

fn parse_fields(fields: &Reply) -> Fields {
    let fields = fields.as_array().unwrap_or_default();
    let mut id = None;
    let mut attempt = 0;
    let mut trace = None;
    for kv in fields.chunks(2) {
        match (kv[0].as_str(), kv.get(1)) {
            (Some("id"), Some(v)) => id = v.as_str().and_then(|s| s.parse().ok()),
            (Some("attempt"), Some(v)) => attempt = v.as_int().unwrap_or(0) as u32,
            // An unreadable context starts a new trace, as a receiver of a bad header does.
            (Some("traceparent"), Some(v)) => trace = v.as_str().and_then(|s| TraceContext::parse(s, None)),
            _ => {}
        }
    }
    (id, attempt, trace)
}

fn parse_entry(r: &Reply) -> Option<Entry> {
    let parts = r.as_array()?;
    let entry = parts.first()?.as_str()?.to_owned();
    let (id, attempt, trace) = parts.get(1).map(parse_fields).unwrap_or_default();
    Some(Entry { entry, id, attempt, trace, previous_owner: None })
}

fn parse_reclaimed(r: &Reply) -> Option<Entry> {
    let parts = r.as_array()?;
    let entry = parts.first()?.as_str()?.to_owned();
    let owner = parts.get(1).and_then(Reply::as_str).map(str::to_owned);
    let (id, attempt, trace) = parts.get(2).map(parse_fields).unwrap_or_default();
    Some(Entry { entry, id, attempt, trace, previous_owner: owner })
}

/// A reply that is not the shape a command answers: an error, never read as "no entries"
/// (entries would then sit pending, unseen, until another consumer took them over).
fn malformed(what: &str, r: &Reply) -> Error {
    Error::Malformed(format!("{what} answered {r:?}").chars().take(200).collect())
}

/// A script's per-entry flags (1/0) as booleans, one per entry asked about. Any other reply
/// is an error: read as "not ours", it would tell every entry's holder it lost its lease.
fn flags(r: &Reply, n: usize) -> Result<Vec<bool>, Error> {
    match r.as_array() {
        Some(items) if items.len() == n => Ok(items.iter().map(|f| f.as_int() == Some(1)).collect()),
        _ => Err(Error::Malformed(format!("expected {n} flags, got {r:?}").chars().take(200).collect())),
    }
}

/// Stream length and pending entries (acknowledged entries are deleted, so the length is
/// the work not yet finished).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Depth {
    pub length: u64,
    pub pending: u64,
}

impl<T: Transport> Stream<T> {
    fn script(&self, script: &str, args: &[&str]) -> Vec<String> {
        let mut c = cmd(["EVAL", script, "1", &self.key, &self.group, &self.me]);
        c.extend(args.iter().map(|a| (*a).to_owned()));
        c
    }

    /// Creates the group (from the stream's start) if it does not exist.
    pub async fn ensure_group(&self) -> Result<(), Error> {
        match self.client.command(&cmd(["XGROUP", "CREATE", &self.key, &self.group, "0", "MKSTREAM"])).await {
            Ok(_) => Ok(()),
            Err(Error::Redis(e)) if e.starts_with("BUSYGROUP") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// New entries for this consumer (XREADGROUP ... >).
    pub async fn read(&self, count: usize) -> Result<Vec<Entry>, Error> {
        let r = self
            .client
            .command(&cmd([
                "XREADGROUP",
                "GROUP",
                &self.group,
                &self.me,
                "COUNT",
                &count.to_string(),
                "STREAMS",
                &self.key,
                ">",
            ]))
            .await?;
        // No new entries is nil; anything else must be [[stream, [entry, ...]]].
        if r.is_nil() {
            return Ok(Vec::new());
        }
        let entries = r
            .as_array()
            .and_then(|streams| streams.first())
            .and_then(Reply::as_array)
            .and_then(|s| s.get(1))
            .and_then(Reply::as_array)
            .ok_or_else(|| malformed("XREADGROUP", &r))?;
        entries.iter().map(|e| parse_entry(e).ok_or_else(|| malformed("a stream entry", e))).collect()
    }

    /// Entries left idle for at least `min_idle_ms` (by another consumer, or by this one when
    /// it no longer runs them), taken over by this one.
    pub async fn reclaim(&self, min_idle_ms: u64, count: usize) -> Result<Vec<Entry>, Error> {
        let r =
            self.client.command(&self.script(RECLAIM_SCRIPT, &[&min_idle_ms.to_string(), &count.to_string()])).await?;
        let items = r.as_array().ok_or_else(|| malformed("the reclaim script", &r))?;
        items.iter().map(|e| parse_reclaimed(e).ok_or_else(|| malformed("a reclaimed entry", e))).collect()
    }

    /// Renews the leases on `entries` this consumer still owns; per entry, whether it did.
    pub async fn renew(&self, entries: &[String]) -> Result<Vec<bool>, Error> {
        self.per_entry(RENEW_SCRIPT, entries).await
    }

    /// Acknowledges and deletes `entries` this consumer still owns (entries no longer pending
    /// are deleted too); per entry, whether it is gone.
    pub async fn ack(&self, entries: &[String]) -> Result<Vec<bool>, Error> {
        self.per_entry(ACK_SCRIPT, entries).await
    }

    /// One call of an [`owned_script`] over `entries` (none when empty); a flag per entry.
    async fn per_entry(&self, script: &str, entries: &[String]) -> Result<Vec<bool>, Error> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let args: Vec<&str> = entries.iter().map(String::as_str).collect();
        let r = self.client.command(&self.script(script, &args)).await?;
        flags(&r, entries.len())
    }

    /// Removes consumers that have not announced themselves for `forget_ms` (and this
    /// consumer itself with `forget_me`, when it stops). Returns how many were removed.
    pub async fn prune_presence(&self, now_ms: u64, forget_ms: u64, forget_me: bool) -> Result<usize, Error> {
        let all = self.client.command(&cmd(["HGETALL", CONSUMERS_KEY])).await?;
        let items = all.as_array().unwrap_or_default();
        let stale: Vec<String> = items
            .chunks(2)
            .filter_map(|pair| {
                let name = pair.first()?.as_str()?.to_owned();
                let seen = pair
                    .get(1)
                    .and_then(Reply::as_str)
                    .and_then(|v| serde_json::from_str::<Presence>(v).ok())
                    .map_or(0, |p| p.seen_at);
                let gone = now_ms.saturating_sub(seen) > forget_ms || (forget_me && name == self.me);
                gone.then_some(name)
            })
            .collect();
        if stale.is_empty() {
            return Ok(0);
        }
        let mut c = cmd(["HDEL", CONSUMERS_KEY]);
        c.extend(stale.iter().cloned());
        self.client.command(&c).await?;
        Ok(stale.len())
    }

    /// Gives `entry` back to `owner` when this consumer still owns it.
    pub async fn give_back(&self, entry: &str, owner: &str) -> Result<bool, Error> {
        let r = self.client.command(&self.script(GIVE_BACK_SCRIPT, &[owner, entry])).await?;
        Ok(r.as_int() == Some(1))
    }

    /// The stream's length and its pending entries, in one pipeline; with `presence`, this
    /// consumer also announces itself in the same round trip.
    pub async fn depth(&self, presence: Option<&str>) -> Result<Depth, Error> {
        let mut cmds = vec![cmd(["XLEN", &self.key]), cmd(["XPENDING", &self.key, &self.group])];
        if let Some(p) = presence {
            cmds.push(cmd(["HSET", CONSUMERS_KEY, &self.me, p]));
        }
        let replies = self.client.pipeline(&cmds).await?;
        let length = replies.first().and_then(|r| r.as_ref().ok()).and_then(Reply::as_int).unwrap_or(0);
        let pending = replies
            .get(1)
            .and_then(|r| r.as_ref().ok())
            .and_then(Reply::as_array)
            .and_then(|a| a.first().and_then(Reply::as_int))
            .unwrap_or(0);
        Ok(Depth { length: length.max(0) as u64, pending: pending.max(0) as u64 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgejobs_upstash::Credentials;
    use edgejobs_upstash::transport::{Faulty, ScriptedTransport};
    use std::time::Duration;

    fn b(s: &str) -> Reply {
        Reply::Bytes(s.as_bytes().to_vec())
    }

    fn stream<T: Transport>(t: T) -> Stream<T> {
        let creds = Credentials { url: "http://127.0.0.1:1".into(), token: edgejobs_core::config::Secret::new("t") };
        Stream { client: Client::new(creds, t), key: "s".into(), group: "g".into(), me: "me".into() }
    }

    /// The script and arguments of the EVAL in one recorded request body.
    fn eval_of(body: &str) -> (String, Vec<String>) {
        let v: Vec<String> = serde_json::from_str(body).expect("a command");
        assert_eq!(v[0], "EVAL");
        (v[1].clone(), v[3..].to_vec())
    }

    #[test]
    fn parses_entries_and_tolerates_deleted_ones() {
        let id = JobId::new(1, 2, 3);
        let e = Reply::Array(vec![b("1-0"), Reply::Array(vec![b("id"), b(id.as_str()), b("attempt"), b("2")])]);
        let want = Entry { entry: "1-0".into(), id: Some(id.clone()), attempt: 2, trace: None, previous_owner: None };
        assert_eq!(parse_entry(&e), Some(want));
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let traced = Reply::Array(vec![
            b("1-1"),
            Reply::Array(vec![b("id"), b(id.as_str()), b("attempt"), b("2"), b("traceparent"), b(tp)]),
        ]);
        assert_eq!(parse_entry(&traced).and_then(|e| e.trace).map(|t| t.traceparent()), Some(tp.to_owned()));
        let deleted = Reply::Array(vec![b("2-0"), Reply::Nil]);
        assert_eq!(parse_entry(&deleted).map(|e| e.id), Some(None));
        let taken = Reply::Array(vec![b("3-0"), b("other"), Reply::Array(vec![b("id"), b(id.as_str())])]);
        assert_eq!(parse_reclaimed(&taken).and_then(|e| e.previous_owner), Some("other".to_owned()));
    }

    #[tokio::test]
    async fn renewal_and_acks_go_through_the_owner_checked_scripts() {
        let t = ScriptedTransport::new([
            ScriptedTransport::ok(serde_json::json!({ "result": [1, 0] })),
            ScriptedTransport::ok(serde_json::json!({ "result": [0, 1] })),
        ]);
        let s = stream(t);
        let entries = vec!["1-0".to_owned(), "2-0".to_owned()];
        assert_eq!(s.renew(&entries).await.expect("renewed"), vec![true, false], "2-0 was taken over");
        assert_eq!(s.ack(&entries).await.expect("acked"), vec![false, true], "1-0 belongs to another consumer");
        let sent = s.client.transport().requests();
        assert_eq!(sent.len(), 2, "one script call per batch of entries");
        let (script, args) = eval_of(&sent[0].body);
        assert_eq!(
            (script.as_str(), args.as_slice()),
            (RENEW_SCRIPT, ["s", "g", "me", "1-0", "2-0"].map(String::from).as_slice())
        );
        let (script, _) = eval_of(&sent[1].body);
        assert_eq!(script, ACK_SCRIPT);
        // Nothing to do: no call at all.
        assert!(s.ack(&[]).await.expect("empty").is_empty());
        assert_eq!(s.client.transport().requests().len(), 2);
    }

    #[tokio::test]
    async fn a_malformed_script_answer_is_an_error_not_a_verdict() {
        // One flag for two entries: the caller learns nothing was acknowledged (and why),
        // instead of reading "not ours" for both.
        let t = ScriptedTransport::new([ScriptedTransport::ok(serde_json::json!({ "result": [1] }))]);
        let s = stream(t);
        let entries = vec!["1-0".to_owned(), "2-0".to_owned()];
        assert!(matches!(s.ack(&entries).await, Err(Error::Malformed(_))));
    }

    /// No new entries (nil) is an empty read; a reply of another shape is an error, never
    /// "nothing to do" (its entries would sit pending, unseen).
    #[tokio::test]
    async fn a_malformed_read_or_reclaim_is_an_error_not_an_empty_batch() {
        let t = ScriptedTransport::new([
            ScriptedTransport::ok(serde_json::json!({ "result": null })),
            ScriptedTransport::ok(serde_json::json!({ "result": 5 })),
            ScriptedTransport::ok(serde_json::json!({ "result": [[1, 2]] })),
            ScriptedTransport::ok(serde_json::json!({ "result": 7 })),
        ]);
        let s = stream(t);
        assert_eq!(s.read(10).await.expect("nil is no entries"), Vec::new());
        assert!(matches!(s.read(10).await, Err(Error::Malformed(_))));
        assert!(matches!(s.read(10).await, Err(Error::Malformed(_))));
        assert!(matches!(s.reclaim(1000, 10).await, Err(Error::Malformed(_))));
    }

    #[tokio::test]
    async fn an_ack_that_cannot_be_sent_is_reported_not_assumed() {
        // Every attempt fails: the caller learns the entries are not acknowledged.
        let inner = ScriptedTransport::new([]);
        let s = stream(Faulty::new(inner, 100, Duration::ZERO));
        assert!(s.ack(&["1-0".to_owned()]).await.is_err());
        assert!(s.client.transport().calls() >= 1);
    }

    #[test]
    fn a_malformed_flag_reply_is_an_error_not_a_lost_lease() {
        let one = Reply::Int(1);
        assert_eq!(flags(&Reply::Array(vec![one.clone(), Reply::Int(0)]), 2).ok(), Some(vec![true, false]));
        assert!(matches!(flags(&Reply::Array(vec![one]), 2), Err(Error::Malformed(_))), "one flag short");
        assert!(matches!(flags(&Reply::Nil, 1), Err(Error::Malformed(_))), "not an array");
    }
}
