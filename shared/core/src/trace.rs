//! W3C Trace Context (Level 1): the `traceparent` and `tracestate` a job carries from its
//! enqueue through the queue, the stream, its attempts and every request it makes (#32).
//!
//! A job's [`TraceContext`] names the span that created it (the enqueue span): delivery and
//! attempt spans are its children, and the context sent on an outbound call names that
//! call's own span. Random ids are arguments (the core reads no random source).

use serde::{Deserialize, Serialize};

/// A trace id: 16 bytes, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(pub [u8; 16]);

/// A span id: 8 bytes, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    /// A trace id from 16 random bytes; `None` for the all-zero id, which is invalid.
    pub fn new(bytes: [u8; 16]) -> Option<TraceId> {
        (bytes != [0; 16]).then_some(TraceId(bytes))
    }
    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }
    /// 32 lowercase hex digits, not all zero.
    pub fn parse(s: &str) -> Option<TraceId> {
        let mut b = [0u8; 16];
        decode_lower_hex(s, &mut b)?;
        TraceId::new(b)
    }
}

impl SpanId {
    /// A span id from 8 random bytes; `None` for the all-zero id, which is invalid.
    pub fn new(bytes: [u8; 8]) -> Option<SpanId> {
        (bytes != [0; 8]).then_some(SpanId(bytes))
    }
    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }
    /// 16 lowercase hex digits, not all zero.
    pub fn parse(s: &str) -> Option<SpanId> {
        let mut b = [0u8; 8];
        decode_lower_hex(s, &mut b)?;
        SpanId::new(b)
    }
}

impl std::fmt::Debug for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl std::fmt::Debug for SpanId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// W3C hex is lowercase only (`traceparent` with upper-case digits is invalid).
fn decode_lower_hex(s: &str, out: &mut [u8]) -> Option<()> {
    if s.len() != out.len() * 2 || !s.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
        return None;
    }
    hex::decode_to_slice(s, out).ok()
}

/// The `sampled` bit of `trace-flags`.
pub const FLAG_SAMPLED: u8 = 0x01;
/// Level 2's `random` bit: the trace id's right 7 bytes are random.
pub const FLAG_RANDOM: u8 = 0x02;

/// Longest `tracestate` kept (the W3C list allows 32 members of up to 256 characters each;
/// 512 is what the spec says a vendor must at least propagate, and what we store per job).
pub const TRACESTATE_MAX: usize = 512;

/// One position in a trace: the trace, the span that is the parent of what comes next, the
/// flags (sampled) and the vendors' `tracestate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub flags: u8,
    pub state: Option<String>,
}

impl TraceContext {
    /// Reads a `traceparent` (and `tracestate`) as a receiver must (W3C Trace Context
    /// Level 1, §3.2 and §4.3): an invalid `traceparent` is ignored (`None`: the caller
    /// starts a new trace), and an invalid `tracestate` is dropped while the parent is kept.
    /// Versions above `00` are read by their first four fields, as the spec asks.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<TraceContext> {
        let tp = traceparent.trim_matches([' ', '\t']);
        let version = tp.get(0..2)?;
        if version == "ff" || decode_lower_hex(version, &mut [0u8; 1]).is_none() {
            return None;
        }
        if version == "00" && tp.len() != 55 {
            return None;
        }
        if tp.len() < 55 || (tp.len() > 55 && tp.as_bytes()[55] != b'-') {
            return None;
        }
        let b = tp.as_bytes();
        if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        let trace_id = TraceId::parse(&tp[3..35])?;
        let span_id = SpanId::parse(&tp[36..52])?;
        let mut flags = [0u8; 1];
        decode_lower_hex(&tp[53..55], &mut flags)?;
        // Flags this version does not define are sent on as zero (§3.2.2.5): `sampled`, and
        // Level 2's `random`, are kept.
        let flags = flags[0] & (FLAG_SAMPLED | FLAG_RANDOM);
        Some(TraceContext { trace_id, span_id, flags, state: tracestate.and_then(valid_tracestate) })
    }

    /// A new trace, rooted at span `span_id`.
    pub fn root(trace_id: TraceId, span_id: SpanId, sampled: bool) -> TraceContext {
        TraceContext { trace_id, span_id, flags: if sampled { FLAG_SAMPLED } else { 0 }, state: None }
    }

    /// The same trace, with `span_id` as the parent of what comes next.
    pub fn child(&self, span_id: SpanId) -> TraceContext {
        TraceContext { span_id, ..self.clone() }
    }

    /// The parent without the vendors' `tracestate`: what queue envelopes and stream entries
    /// carry (a `tracestate` can be 512 bytes, which a full envelope of 100 jobs cannot
    /// afford; the job itself keeps it).
    pub fn parent_only(&self) -> TraceContext {
        TraceContext { state: None, ..self.clone() }
    }

    pub fn sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }

    /// The `traceparent` header value (version `00`).
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-{:02x}", self.trace_id.to_hex(), self.span_id.to_hex(), self.flags)
    }

    /// The headers that carry this context on an outbound request.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![("traceparent", self.traceparent())];
        if let Some(s) = &self.state {
            h.push(("tracestate", s.clone()));
        }
        h
    }
}

/// A `tracestate` as §3.3 defines it, or `None` (the caller drops it): at most 32
/// `key=value` members, keys of `[a-z0-9_\-*/]` (with one `@` for multi-tenant keys) starting
/// with a letter or digit, values of printable ASCII without `,` and `=`, not ending in a
/// space; empty members are allowed and removed. Longer than [`TRACESTATE_MAX`]: dropped.
pub fn valid_tracestate(s: &str) -> Option<String> {
    let mut members = Vec::new();
    for m in s.split(',') {
        let m = m.trim_matches([' ', '\t']);
        if m.is_empty() {
            continue;
        }
        let (k, v) = m.split_once('=')?;
        if !valid_key(k) || !valid_value(v) {
            return None;
        }
        if members.iter().any(|(seen, _): &(&str, &str)| *seen == k) {
            return None;
        }
        members.push((k, v));
    }
    let out = members.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
    (!members.is_empty() && members.len() <= 32 && out.len() <= TRACESTATE_MAX).then_some(out)
}

fn valid_key(k: &str) -> bool {
    let simple = |s: &str, max: usize| {
        let b = s.as_bytes();
        !b.is_empty()
            && b.len() <= max
            && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
            && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-*/".contains(c))
    };
    match k.split_once('@') {
        None => simple(k, 256),
        Some((tenant, system)) => simple(tenant, 241) && simple(system, 14) && !system.contains('@'),
    }
}

fn valid_value(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 256
        && v.bytes().all(|c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
        && !v.ends_with(' ')
}

/// How a context is stored in a job, a stream entry or a workflow step: the two header
/// values, so a stored record reads as what was received.
#[derive(Serialize, Deserialize)]
struct Stored {
    traceparent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tracestate: Option<String>,
}

impl Serialize for TraceContext {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Stored { traceparent: self.traceparent(), tracestate: self.state.clone() }.serialize(s)
    }
}

impl<'de> Deserialize<'de> for TraceContext {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Stored::deserialize(d)?;
        TraceContext::parse(&s.traceparent, s.tracestate.as_deref())
            .ok_or_else(|| serde::de::Error::custom("invalid traceparent"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn reads_the_specs_example_and_writes_it_back() {
        let c = TraceContext::parse(TP, Some("congo=t61rcWkgMzE")).expect("valid");
        assert_eq!(c.trace_id.to_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(c.span_id.to_hex(), "00f067aa0ba902b7");
        assert!(c.sampled());
        assert_eq!(c.traceparent(), TP);
        assert_eq!(c.state.as_deref(), Some("congo=t61rcWkgMzE"));
    }

    #[test]
    fn refuses_what_the_spec_calls_invalid() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-g1",
        ] {
            assert_eq!(TraceContext::parse(bad, None), None, "{bad:?}");
        }
    }

    #[test]
    fn a_later_version_is_read_by_its_first_fields() {
        let c = TraceContext::parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-what-ever", None)
            .expect("a future version");
        assert_eq!(c.flags, FLAG_SAMPLED | FLAG_RANDOM);
        assert!(c.traceparent().starts_with("00-"));
        let unknown = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff", None);
        assert_eq!(unknown.map(|c| c.flags), Some(FLAG_SAMPLED | FLAG_RANDOM), "unknown flags are dropped");
    }

    #[test]
    fn a_bad_tracestate_is_dropped_and_the_parent_kept() {
        let c = TraceContext::parse(TP, Some("UPPER=1")).expect("parent kept");
        assert_eq!(c.state, None);
        assert_eq!(valid_tracestate("a=1, ,b@sys=2"), Some("a=1,b@sys=2".to_owned()));
        assert_eq!(valid_tracestate("a=1,a=2"), None);
        assert_eq!(valid_tracestate("a=x,y"), None);
        assert_eq!(valid_tracestate(&"k=v,".repeat(33)), None);
        assert_eq!(valid_tracestate(&format!("k={}", "v".repeat(600))), None);
    }

    #[test]
    fn a_child_keeps_the_trace_and_the_flags() {
        let c = TraceContext::parse(TP, Some("a=1")).expect("valid");
        let span = SpanId::new([1, 2, 3, 4, 5, 6, 7, 8]).expect("non-zero");
        let k = c.child(span);
        assert_eq!(k.trace_id, c.trace_id);
        assert_eq!(k.traceparent(), "00-4bf92f3577b34da6a3ce929d0e0e4736-0102030405060708-01");
        assert_eq!(k.headers().len(), 2);
    }

    #[test]
    fn stored_as_its_header_values() {
        let c = TraceContext::parse(TP, None).expect("valid");
        let json = serde_json::to_string(&c).expect("serializes");
        assert_eq!(json, format!(r#"{{"traceparent":"{TP}"}}"#));
        assert_eq!(serde_json::from_str::<TraceContext>(&json).expect("reads back"), c);
        assert!(serde_json::from_str::<TraceContext>(r#"{"traceparent":"00-x"}"#).is_err());
    }
}
