//! The edge's trace export settings (#32), read from the standard OpenTelemetry variables
//! as the SDKs read them: `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`), the
//! exporter's headers, the service name and the sampler. Two stages, like the rest of the
//! configuration: raw strings in, a typed value or the problems out.

use crate::sampler::{ENV_SAMPLER, ENV_SAMPLER_ARG, Sampler};
use crate::secret::Secret;

/// Names of the settings, in one place.
pub mod names {
    pub const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
    pub const TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
    pub const HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";
    pub const SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
    pub const SDK_DISABLED: &str = "OTEL_SDK_DISABLED";
}

/// The service name spans carry when `OTEL_SERVICE_NAME` is unset.
pub const DEFAULT_SERVICE_NAME: &str = "edgejobs-edge";

/// Where and how the edge exports its spans. Without an endpoint nothing is exported, but
/// every job still gets a trace context (its logs carry the trace id, and the native
/// consumer or a webhook receiver may export their spans of it).
#[derive(Debug, Clone, PartialEq)]
pub struct Tracing {
    /// The OTLP/HTTP traces URL: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as given, or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` with `/v1/traces` appended (the specification's
    /// rule). `None`: export is off (the default).
    pub traces_url: Option<String>,
    /// Headers sent with each export (`key=value,...`, values percent-decoded), such as a
    /// vendor's API key: secrets, never logged.
    pub headers: Vec<(String, Secret)>,
    /// `OTEL_SERVICE_NAME`, default [`DEFAULT_SERVICE_NAME`].
    pub service_name: String,
    /// `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`; default `parentbased_always_on`.
    pub sampler: Sampler,
}

impl Default for Tracing {
    fn default() -> Tracing {
        Tracing {
            traces_url: None,
            headers: Vec::new(),
            service_name: DEFAULT_SERVICE_NAME.to_owned(),
            sampler: Sampler::default(),
        }
    }
}

impl Tracing {
    /// Reads the settings through `get`, pushing every problem onto `errors`.
    pub fn parse(get: &impl Fn(&str) -> Option<String>, errors: &mut Vec<String>) -> Tracing {
        let val = |n: &str| get(n).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let disabled = match val(names::SDK_DISABLED).map(|v| v.to_ascii_lowercase()) {
            None => false,
            Some(v) if v == "true" => true,
            Some(v) if v == "false" => false,
            Some(_) => {
                errors.push(format!("{}: must be true or false", names::SDK_DISABLED));
                false
            }
        };
        let traces_url = match (val(names::TRACES_ENDPOINT), val(names::ENDPOINT)) {
            (Some(u), _) => Some((names::TRACES_ENDPOINT, u)),
            (None, Some(u)) => Some((names::ENDPOINT, format!("{}/v1/traces", u.trim_end_matches('/')))),
            (None, None) => None,
        };
        let traces_url = traces_url.and_then(|(name, u)| match url::Url::parse(&u) {
            Ok(p) if matches!(p.scheme(), "http" | "https") && p.host_str().is_some() => Some(u),
            // The value is not shown: an endpoint may hold credentials in its userinfo.
            _ => {
                errors.push(format!("{name}: must be an http(s) URL such as https://otel.example.com:4318"));
                None
            }
        });
        let headers = match val(names::HEADERS) {
            None => Vec::new(),
            Some(h) => parse_headers(&h).unwrap_or_else(|e| {
                errors.push(format!("{}: {e}", names::HEADERS));
                Vec::new()
            }),
        };
        let sampler =
            Sampler::from_env(val(ENV_SAMPLER).as_deref(), val(ENV_SAMPLER_ARG).as_deref()).unwrap_or_else(|e| {
                errors.push(e);
                Sampler::default()
            });
        Tracing {
            traces_url: if disabled { None } else { traces_url },
            headers,
            service_name: val(names::SERVICE_NAME).unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned()),
            sampler,
        }
    }

    /// Whether spans are exported at all.
    pub fn exports(&self) -> bool {
        self.traces_url.is_some()
    }
}

/// `OTEL_EXPORTER_OTLP_HEADERS`: `key=value` pairs, comma-separated, values
/// percent-encoded (W3C Baggage's format, as the specification says). Problems never
/// quote a value.
pub fn parse_headers(s: &str) -> Result<Vec<(String, Secret)>, String> {
    let mut out = Vec::new();
    for (i, pair) in s.split(',').map(str::trim).filter(|p| !p.is_empty()).enumerate() {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(format!("entry {} is not key=value", i + 1));
        };
        let k = k.trim();
        if k.is_empty() || !k.bytes().all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)) {
            return Err(format!("entry {} has no valid header name", i + 1));
        }
        let v = percent_decode(v.trim()).ok_or_else(|| format!("entry {}: bad percent-encoding", i + 1))?;
        if v.bytes().any(|c| c == b'\r' || c == b'\n' || c == 0) {
            return Err(format!("entry {}: the value holds a line break", i + 1));
        }
        out.push((k.to_ascii_lowercase(), Secret::new(v)));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(pairs: &[(&str, &str)]) -> (Tracing, Vec<String>) {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut errors = Vec::new();
        let t = Tracing::parse(&|k: &str| map.get(k).cloned(), &mut errors);
        (t, errors)
    }

    #[test]
    fn off_by_default_with_the_specs_defaults() {
        let (t, errors) = parse(&[]);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(t, Tracing::default());
        assert!(!t.exports());
        assert_eq!(t.sampler, Sampler::default());
    }

    #[test]
    fn the_generic_endpoint_gets_the_traces_path_and_the_specific_one_is_kept() {
        let (t, _) = parse(&[(names::ENDPOINT, "http://127.0.0.1:4318/")]);
        assert_eq!(t.traces_url.as_deref(), Some("http://127.0.0.1:4318/v1/traces"));
        let (t, _) = parse(&[(names::ENDPOINT, "http://a:1"), (names::TRACES_ENDPOINT, "http://b:2/custom")]);
        assert_eq!(t.traces_url.as_deref(), Some("http://b:2/custom"));
        let (t, _) = parse(&[(names::ENDPOINT, "http://a:1"), (names::SDK_DISABLED, "true")]);
        assert!(!t.exports());
    }

    #[test]
    fn headers_are_decoded_and_never_shown() {
        let (t, errors) = parse(&[(names::HEADERS, "api-key=s%3Dcret, X-Team = edge ")]);
        assert!(errors.is_empty(), "{errors:?}");
        let shown: Vec<(&str, &str)> = t.headers.iter().map(|(k, v)| (k.as_str(), v.expose())).collect();
        assert_eq!(shown, vec![("api-key", "s=cret"), ("x-team", "edge")]);
        assert!(!format!("{t:?}").contains("s=cret"));
    }

    #[test]
    fn problems_are_named_without_values() {
        for (pairs, names) in [
            (vec![(names::ENDPOINT, "ftp://secret@host")], names::ENDPOINT),
            (vec![(names::HEADERS, "novalue")], names::HEADERS),
            (vec![(names::HEADERS, "k=%zz")], names::HEADERS),
            (vec![(names::SDK_DISABLED, "yes")], names::SDK_DISABLED),
            (vec![(ENV_SAMPLER, "sometimes")], ENV_SAMPLER),
            (vec![(ENV_SAMPLER, "traceidratio"), (ENV_SAMPLER_ARG, "2")], ENV_SAMPLER_ARG),
        ] {
            let (_, errors) = parse(&pairs);
            assert_eq!(errors.len(), 1, "{pairs:?}: {errors:?}");
            assert!(errors[0].contains(names), "{errors:?}");
            assert!(!errors[0].contains("secret@"), "{errors:?}");
        }
    }
}
