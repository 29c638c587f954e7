//! Prometheus text exposition (format 0.0.4), shared by the edge and the native consumer so
//! both print metrics the same way. Families always print their HELP and TYPE lines, even
//! without samples, so a scrape lists every metric the code exports.

use std::fmt::Write as _;

/// The kind of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Default latency buckets, in seconds.
pub const DURATION_BUCKETS: &[f64] =
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// A histogram's state: cumulative counts are computed when rendering.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Histogram {
    /// Count per bucket (not cumulative), one per bound in [`DURATION_BUCKETS`], plus +Inf.
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn observe(&mut self, v: f64) {
        if self.counts.len() != DURATION_BUCKETS.len() + 1 {
            self.counts = vec![0; DURATION_BUCKETS.len() + 1];
        }
        let i = DURATION_BUCKETS.iter().position(|b| v <= *b).unwrap_or(DURATION_BUCKETS.len());
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }

    pub fn merge(&mut self, other: &Histogram) {
        if self.counts.len() != DURATION_BUCKETS.len() + 1 {
            self.counts = vec![0; DURATION_BUCKETS.len() + 1];
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum += other.sum;
        self.count += other.count;
    }
}

/// One family and its samples.
#[derive(Debug, Clone)]
pub struct Family {
    pub name: String,
    pub help: String,
    pub kind: Kind,
    samples: Vec<(Vec<(String, String)>, f64)>,
    histograms: Vec<(Vec<(String, String)>, Histogram)>,
}

impl Family {
    pub fn new(name: &str, help: &str, kind: Kind) -> Family {
        Family { name: name.to_owned(), help: help.to_owned(), kind, samples: Vec::new(), histograms: Vec::new() }
    }

    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.samples.push((labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), value));
        self
    }

    pub fn histogram(&mut self, labels: &[(&str, &str)], h: &Histogram) -> &mut Self {
        self.histograms.push((labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), h.clone()));
        self
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n").replace('"', "\\\"")
}

fn labels(pairs: &[(String, String)], extra: Option<(&str, &str)>) -> String {
    let mut parts: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() { String::new() } else { format!("{{{}}}", parts.join(",")) }
}

fn num(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Renders families as Prometheus text.
pub fn render(families: &[Family]) -> String {
    let mut out = String::new();
    for f in families {
        let kind = match f.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help.replace('\n', " "));
        let _ = writeln!(out, "# TYPE {} {kind}", f.name);
        for (l, v) in &f.samples {
            let _ = writeln!(out, "{}{} {}", f.name, labels(l, None), num(*v));
        }
        for (l, h) in &f.histograms {
            let mut cumulative = 0u64;
            for (i, bound) in DURATION_BUCKETS.iter().enumerate() {
                cumulative += h.counts.get(i).copied().unwrap_or(0);
                let _ = writeln!(out, "{}_bucket{} {cumulative}", f.name, labels(l, Some(("le", &num(*bound)))));
            }
            let _ = writeln!(out, "{}_bucket{} {}", f.name, labels(l, Some(("le", "+Inf"))), h.count);
            let _ = writeln!(out, "{}_sum{} {}", f.name, labels(l, None), num(h.sum));
            let _ = writeln!(out, "{}_count{} {}", f.name, labels(l, None), h.count);
        }
    }
    out
}

/// Renders families as JSON: `{"name": {"type", "help", "samples": [{"labels", "value"}]}}`.
pub fn render_json(families: &[Family]) -> serde_json::Value {
    let obj = |l: &[(String, String)]| -> serde_json::Map<String, serde_json::Value> {
        l.iter().map(|(k, v)| (k.clone(), serde_json::Value::from(v.clone()))).collect()
    };
    let mut map = serde_json::Map::new();
    for f in families {
        let samples: Vec<serde_json::Value> = f
            .samples
            .iter()
            .map(|(l, v)| serde_json::json!({ "labels": obj(l), "value": v }))
            .chain(
                f.histograms
                    .iter()
                    .map(|(l, h)| serde_json::json!({ "labels": obj(l), "count": h.count, "sum": h.sum })),
            )
            .collect();
        map.insert(
            f.name.clone(),
            serde_json::json!({ "type": format!("{:?}", f.kind).to_lowercase(), "help": f.help, "samples": samples }),
        );
    }
    serde_json::Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let mut c = Family::new("x_total", "Things.", Kind::Counter);
        c.sample(&[("type", "a\"b")], 3.0);
        let mut h = Histogram::default();
        h.observe(0.003);
        h.observe(0.7);
        h.observe(1000.0);
        let mut hf = Family::new("d_seconds", "Durations.", Kind::Histogram);
        hf.histogram(&[("lane", "edge")], &h);
        let empty = Family::new("g", "Empty gauge.", Kind::Gauge);
        let text = render(&[c, hf, empty]);
        assert!(text.contains("# TYPE x_total counter\nx_total{type=\"a\\\"b\"} 3\n"));
        assert!(text.contains("d_seconds_bucket{lane=\"edge\",le=\"0.005\"} 1\n"));
        assert!(text.contains("d_seconds_bucket{lane=\"edge\",le=\"1\"} 2\n"));
        assert!(text.contains("d_seconds_bucket{lane=\"edge\",le=\"+Inf\"} 3\n"));
        assert!(text.contains("d_seconds_count{lane=\"edge\"} 3\n"));
        assert!(text.contains("# HELP g Empty gauge.\n# TYPE g gauge\n"));
    }
}
