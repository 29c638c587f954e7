//! The long-job stream in Upstash: the consumer group, reading, taking over idle entries,
//! renewing leases and acknowledging. A lease is a pending entry: renewing it is an XCLAIM
//! to ourselves (which resets its idle time); an entry idle past the lease timeout is taken
//! by XAUTOCLAIM.

use edgejobs_core::JobId;
use edgejobs_upstash::client::cmd;
use edgejobs_upstash::transport::ReqwestTransport;
use edgejobs_upstash::{Client, Error, Reply};

/// One stream entry: attempt `attempt` of job `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub entry: String,
    pub id: Option<JobId>,
    pub attempt: u32,
}

#[derive(Debug, Clone)]
pub struct Stream {
    pub client: Client<ReqwestTransport>,
    pub key: String,
    pub group: String,
    pub me: String,
}

fn parse_entry(r: &Reply) -> Option<Entry> {
    let parts = r.as_array()?;
    let entry = parts.first()?.as_str()?.to_owned();
    let fields = parts.get(1).and_then(Reply::as_array).unwrap_or_default();
    let mut id = None;
    let mut attempt = 0;
    for kv in fields.chunks(2) {
        match (kv[0].as_str(), kv.get(1)) {
            (Some("id"), Some(v)) => id = v.as_str().and_then(|s| s.parse().ok()),
            (Some("attempt"), Some(v)) => attempt = v.as_int().unwrap_or(0) as u32,
            _ => {}
        }
    }
    Some(Entry { entry, id, attempt })
}

impl Stream {
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
        Ok(r.as_array()
            .and_then(|streams| streams.first())
            .and_then(Reply::as_array)
            .and_then(|s| s.get(1))
            .and_then(Reply::as_array)
            .map(|entries| entries.iter().filter_map(parse_entry).collect())
            .unwrap_or_default())
    }

    /// Entries idle for at least `min_idle_ms`, taken over by this consumer.
    pub async fn reclaim(&self, min_idle_ms: u64, count: usize) -> Result<Vec<Entry>, Error> {
        let r = self
            .client
            .command(&cmd([
                "XAUTOCLAIM",
                &self.key,
                &self.group,
                &self.me,
                &min_idle_ms.to_string(),
                "0-0",
                "COUNT",
                &count.to_string(),
            ]))
            .await?;
        Ok(r.as_array()
            .and_then(|a| a.get(1))
            .and_then(Reply::as_array)
            .map(|e| e.iter().filter_map(parse_entry).collect())
            .unwrap_or_default())
    }

    /// Renews the lease on `entry` (resets its idle time).
    pub async fn renew(&self, entry: &str) -> Result<(), Error> {
        self.client.command(&cmd(["XCLAIM", &self.key, &self.group, &self.me, "0", entry, "JUSTID"])).await.map(|_| ())
    }

    pub async fn ack(&self, entry: &str) -> Result<(), Error> {
        self.client.command(&cmd(["XACK", &self.key, &self.group, entry])).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entries_and_tolerates_deleted_ones() {
        let b = |s: &str| Reply::Bytes(s.as_bytes().to_vec());
        let id = JobId::new(1, 2, 3);
        let e = Reply::Array(vec![b("1-0"), Reply::Array(vec![b("id"), b(id.as_str()), b("attempt"), b("2")])]);
        assert_eq!(parse_entry(&e), Some(Entry { entry: "1-0".into(), id: Some(id), attempt: 2 }));
        let deleted = Reply::Array(vec![b("2-0"), Reply::Nil]);
        assert_eq!(parse_entry(&deleted), Some(Entry { entry: "2-0".into(), id: None, attempt: 0 }));
    }
}
