//! The filters of the listings (`GET /v1/jobs`, `GET /v1/dead`) as query strings.

/// Percent-encodes one path segment or query value.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn query(pairs: &[(&str, &Option<String>)]) -> String {
    let parts: Vec<String> = pairs.iter().filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", enc(v)))).collect();
    if parts.is_empty() { String::new() } else { format!("?{}", parts.join("&")) }
}

/// What `GET /v1/jobs` filters by; every field optional. Times are RFC 3339.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobQuery {
    pub state: Option<String>,
    pub job_type: Option<String>,
    pub tag: Option<String>,
    /// Changed at or after.
    pub from: Option<String>,
    /// Changed before.
    pub to: Option<String>,
    pub id_prefix: Option<String>,
    /// Text in the payload or metadata.
    pub q: Option<String>,
    /// Jobs per page (the API's default when absent).
    pub limit: Option<u32>,
    /// `payload`, `result`, `metadata`, comma-separated: what summaries carry.
    pub include: Option<String>,
    /// An admin key's tenant filter.
    pub tenant: Option<String>,
}

impl JobQuery {
    /// `?state=...&...` (empty when nothing is set), with `cursor` when given.
    pub fn to_query(&self, cursor: Option<&str>) -> String {
        let limit = self.limit.map(|l| l.to_string());
        let cursor = cursor.map(str::to_owned);
        query(&[
            ("state", &self.state),
            ("type", &self.job_type),
            ("tag", &self.tag),
            ("from", &self.from),
            ("to", &self.to),
            ("id_prefix", &self.id_prefix),
            ("q", &self.q),
            ("limit", &limit),
            ("include", &self.include),
            ("tenant", &self.tenant),
            ("cursor", &cursor),
        ])
    }
}

/// What `GET /v1/dead` filters by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadQuery {
    pub job_type: Option<String>,
    pub tag: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub limit: Option<u32>,
    pub include: Option<String>,
    pub tenant: Option<String>,
}

impl DeadQuery {
    pub fn to_query(&self) -> String {
        let limit = self.limit.map(|l| l.to_string());
        query(&[
            ("type", &self.job_type),
            ("tag", &self.tag),
            ("from", &self.from),
            ("to", &self.to),
            ("limit", &limit),
            ("include", &self.include),
            ("tenant", &self.tenant),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(enc("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        let q =
            JobQuery { job_type: Some("noop".into()), tag: Some("x y".into()), limit: Some(5), ..JobQuery::default() };
        assert_eq!(q.to_query(None), "?type=noop&tag=x%20y&limit=5");
        assert_eq!(q.to_query(Some("c/1")), "?type=noop&tag=x%20y&limit=5&cursor=c%2F1");
        assert_eq!(JobQuery::default().to_query(None), "");
        assert_eq!(DeadQuery { limit: Some(2), ..DeadQuery::default() }.to_query(), "?limit=2");
    }
}
