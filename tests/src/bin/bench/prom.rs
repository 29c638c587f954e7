//! Prometheus text exposition, read: enough of the format for our own `/metrics` pages.

use std::collections::BTreeSet;

pub type Labels = Vec<(String, String)>;

#[derive(Debug, Clone, Default)]
pub struct Prom {
    /// Families announced by a HELP or TYPE line, or seen in a sample.
    pub present: BTreeSet<String>,
    pub samples: Vec<(String, Labels, f64)>,
}

impl Prom {
    pub fn parse(text: &str) -> Prom {
        let mut p = Prom::default();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# HELP ").or_else(|| line.strip_prefix("# TYPE ")) {
                if let Some(name) = rest.split_whitespace().next() {
                    p.present.insert(name.to_owned());
                }
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            if let Some((name, labels, value)) = parse_sample(line) {
                p.present.insert(name.clone());
                p.samples.push((name, labels, value));
            }
        }
        p
    }

    /// The sum of every sample of `family`; `None` when the family does not exist at all
    /// (a family announced without samples is 0).
    pub fn sum(&self, family: &str) -> Option<f64> {
        self.present
            .contains(family)
            .then(|| self.samples.iter().filter(|(n, _, _)| n == family).map(|(_, _, v)| v).sum())
    }

    /// The sum of the samples of `family` with label `k` = `v`.
    pub fn sum_where(&self, family: &str, k: &str, v: &str) -> Option<f64> {
        self.present.contains(family).then(|| {
            self.samples
                .iter()
                .filter(|(n, l, _)| n == family && l.iter().any(|(lk, lv)| lk == k && lv == v))
                .map(|(_, _, x)| x)
                .sum()
        })
    }
}

/// `name{k="v",...} value [timestamp]`.
pub fn parse_sample(line: &str) -> Option<(String, Labels, f64)> {
    let name_end = line.find(['{', ' ', '\t'])?;
    let name = line[..name_end].to_owned();
    let mut labels = Vec::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        let mut key = String::new();
        let mut close = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '}' => {
                    close = Some(i);
                    break;
                }
                ',' | ' ' => {}
                '=' => {
                    // A quoted value with \\, \" and \n escapes.
                    if chars.next().map(|(_, c)| c) != Some('"') {
                        return None;
                    }
                    let mut val = String::new();
                    loop {
                        match chars.next()?.1 {
                            '\\' => match chars.next()?.1 {
                                'n' => val.push('\n'),
                                other => val.push(other),
                            },
                            '"' => break,
                            other => val.push(other),
                        }
                    }
                    labels.push((std::mem::take(&mut key), val));
                }
                other => key.push(other),
            }
        }
        rest = &inner[close? + 1..];
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some((name, labels, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line and the sample it holds (name, labels, value), if any.
    type SampleCase = (&'static str, Option<(&'static str, Vec<(&'static str, &'static str)>, f64)>);

    #[test]
    fn reads_prometheus_samples() {
        let cases: &[SampleCase] = &[
            ("a_total 3", Some(("a_total", vec![], 3.0))),
            ("a_total{type=\"noop\"} 12", Some(("a_total", vec![("type", "noop")], 12.0))),
            ("b{k=\"x y\",j=\"q\\\"z\"} 1.5 1700000000", Some(("b", vec![("k", "x y"), ("j", "q\"z")], 1.5))),
            ("h_bucket{le=\"+Inf\"} 7", Some(("h_bucket", vec![("le", "+Inf")], 7.0))),
            ("g +Inf", Some(("g", vec![], f64::INFINITY))),
            ("broken{k=x} 1", None),
            ("novalue", None),
        ];
        for (line, want) in cases {
            let got = parse_sample(line);
            let want = want.as_ref().map(|(n, l, v)| {
                (n.to_string(), l.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Labels>(), *v)
            });
            assert_eq!(got, want, "{line}");
        }
    }

    #[test]
    fn a_missing_family_is_none_and_an_empty_one_is_zero() {
        let p = Prom::parse(
            "# HELP x_total X.\n# TYPE x_total counter\n# HELP y_total Y.\n# TYPE y_total counter\n\
             y_total{op=\"a\"} 2\ny_total{op=\"b\"} 3\n",
        );
        assert_eq!(p.sum("x_total"), Some(0.0));
        assert_eq!(p.sum("y_total"), Some(5.0));
        assert_eq!(p.sum_where("y_total", "op", "b"), Some(3.0));
        assert_eq!(p.sum("z_total"), None);
    }
}
