//! Trace sampling as the OpenTelemetry SDK configures it (`OTEL_TRACES_SAMPLER`,
//! `OTEL_TRACES_SAMPLER_ARG`), so the edge decides exactly as the native consumer's
//! `opentelemetry_sdk` does for the same settings and trace id (#32).
//!
//! Configuration comes in two stages: the Worker reads the two raw strings, and
//! [`Sampler::from_env`] turns them into a typed sampler or one clear error. Deciding is a
//! pure function of the trace id and the parent's flags; nothing here reads a random source.

use crate::trace::{TraceContext, TraceId};

/// The variable that names the sampler.
pub const ENV_SAMPLER: &str = "OTEL_TRACES_SAMPLER";
/// The variable that holds the sampler's argument (the ratio of the `traceidratio` ones).
pub const ENV_SAMPLER_ARG: &str = "OTEL_TRACES_SAMPLER_ARG";

/// What a sampler decides for a span that has no parent to follow.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    AlwaysOn,
    AlwaysOff,
    /// Samples this fraction of trace ids (0 to 1), deterministically per trace id.
    TraceIdRatio(f64),
}

/// A sampler of the OpenTelemetry SDK's six standard ones: a [`Rule`], and whether a
/// parent's `sampled` flag overrides it (the `parentbased_*` samplers).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    /// Whether a span with a parent follows the parent's `sampled` flag. Without it the
    /// rule decides for every span, parent or not.
    pub parent_based: bool,
    pub rule: Rule,
}

/// The default when `OTEL_TRACES_SAMPLER` is unset or empty: `parentbased_always_on`, as the
/// OpenTelemetry SDK environment variable specification says.
impl Default for Sampler {
    fn default() -> Sampler {
        Sampler { parent_based: true, rule: Rule::AlwaysOn }
    }
}

/// The sampler names the specification defines, each with what it means.
const NAMES: [(&str, bool, RuleKind); 6] = [
    ("always_on", false, RuleKind::AlwaysOn),
    ("always_off", false, RuleKind::AlwaysOff),
    ("traceidratio", false, RuleKind::Ratio),
    ("parentbased_always_on", true, RuleKind::AlwaysOn),
    ("parentbased_always_off", true, RuleKind::AlwaysOff),
    ("parentbased_traceidratio", true, RuleKind::Ratio),
];

#[derive(Clone, Copy, PartialEq)]
enum RuleKind {
    AlwaysOn,
    AlwaysOff,
    Ratio,
}

/// The ratio when `OTEL_TRACES_SAMPLER_ARG` is unset or empty for a ratio sampler.
pub const DEFAULT_RATIO: f64 = 1.0;

/// The longest piece of a bad setting quoted back in an error (settings are trusted, but an
/// error message should stay one line).
const QUOTE_MAX: usize = 64;

impl Sampler {
    /// The sampler the two variables describe (`None` or an empty value: unset).
    ///
    /// - `sampler`: one of `always_on`, `always_off`, `traceidratio`, `parentbased_always_on`,
    ///   `parentbased_always_off`, `parentbased_traceidratio`, case-insensitive (the
    ///   specification asks enum values to be read so). Default `parentbased_always_on`.
    /// - `arg`: for the two ratio samplers, a number from 0 to 1. Default 1.0. The other
    ///   samplers take no argument and ignore it.
    ///
    /// Stricter than the specification on purpose: an unknown sampler or a bad ratio is an
    /// error naming the variable (the SDK logs a warning and falls back), so a typo in the
    /// deployment's settings is seen at once instead of tracing everything.
    pub fn from_env(sampler: Option<&str>, arg: Option<&str>) -> Result<Sampler, String> {
        let name = sampler.map(str::trim).unwrap_or_default();
        if name.is_empty() {
            return Ok(Sampler::default());
        }
        let Some(&(_, parent_based, kind)) = NAMES.iter().find(|(n, _, _)| n.eq_ignore_ascii_case(name)) else {
            let known = NAMES.map(|(n, _, _)| n).join(", ");
            return Err(format!("{ENV_SAMPLER}: unknown sampler {:?}; one of {known}", quote(name)));
        };
        let rule = match kind {
            RuleKind::AlwaysOn => Rule::AlwaysOn,
            RuleKind::AlwaysOff => Rule::AlwaysOff,
            RuleKind::Ratio => Rule::TraceIdRatio(parse_ratio(arg)?),
        };
        Ok(Sampler { parent_based, rule })
    }

    /// Whether a new span of trace `trace_id` is sampled (recorded and exported, and sent on
    /// with the `sampled` flag). `parent` is the context the span continues, if any.
    pub fn decide(&self, trace_id: TraceId, parent: Option<&TraceContext>) -> bool {
        match parent {
            Some(p) if self.parent_based => p.sampled(),
            _ => match self.rule {
                Rule::AlwaysOn => true,
                Rule::AlwaysOff => false,
                Rule::TraceIdRatio(ratio) => ratio_samples(ratio, trace_id),
            },
        }
    }

    /// The sampler's name as `OTEL_TRACES_SAMPLER` spells it, for logs and the README.
    pub fn name(&self) -> &'static str {
        let kind = match self.rule {
            Rule::AlwaysOn => RuleKind::AlwaysOn,
            Rule::AlwaysOff => RuleKind::AlwaysOff,
            Rule::TraceIdRatio(_) => RuleKind::Ratio,
        };
        NAMES
            .iter()
            .find(|(_, p, k)| *p == self.parent_based && *k == kind)
            .map_or("parentbased_always_on", |(n, _, _)| n)
    }
}

fn parse_ratio(arg: Option<&str>) -> Result<f64, String> {
    let arg = arg.map(str::trim).unwrap_or_default();
    if arg.is_empty() {
        return Ok(DEFAULT_RATIO);
    }
    match arg.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{ENV_SAMPLER_ARG}: the sampling ratio must be a number from 0 to 1, not {:?}", quote(arg))),
    }
}

fn quote(s: &str) -> String {
    s.chars().take(QUOTE_MAX).collect()
}

/// `TraceIdRatioBased` of `opentelemetry_sdk` 0.33 (`sample_based_on_probability` in
/// `src/trace/sampler.rs`), bit for bit: the low 8 bytes of the trace id, read big-endian and
/// shifted right by one, against `ratio × 2⁶³`; a ratio of 1 or more samples everything.
///
/// The specification long left this algorithm open (opentelemetry-specification#1413) and
/// SDKs differ; newer versions define a threshold on the low 56 bits (W3C Level 2's random
/// part). What matters here is that the edge and the consumer, which runs that SDK, agree
/// on every trace id, so this follows the SDK the consumer links, and the tests compare the
/// two on many ids. A NaN ratio samples nothing, as in the SDK (`from_env` refuses it).
fn ratio_samples(ratio: f64, trace_id: TraceId) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    // The float-to-int `as` saturates, as the SDK's does; the ratio is below 1, so the
    // bound is below 2⁶³.
    let bound = (ratio.max(0.0) * (1u64 << 63) as f64) as u64;
    // The low 64 bits of the id read as a big-endian number are its last 8 bytes.
    let low = u128::from_be_bytes(trace_id.0) as u64;
    (low >> 1) < bound
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::SpanId;

    fn id(n: u128) -> TraceId {
        TraceId::new(n.to_be_bytes()).expect("non-zero")
    }

    fn parent(sampled: bool) -> TraceContext {
        TraceContext::root(id(7), SpanId::new([1; 8]).expect("non-zero"), sampled)
    }

    #[test]
    fn the_environment_is_read_as_the_specification_names_it() {
        let on = Sampler { parent_based: false, rule: Rule::AlwaysOn };
        let cases: &[(Option<&str>, Option<&str>, Sampler)] = &[
            (None, None, Sampler::default()),
            (Some(""), Some("0.5"), Sampler::default()),
            (Some("  "), None, Sampler { parent_based: true, rule: Rule::AlwaysOn }),
            (Some("always_on"), Some("not read"), on),
            (Some("ALWAYS_ON"), None, on),
            (Some("always_off"), None, Sampler { parent_based: false, rule: Rule::AlwaysOff }),
            (Some("traceidratio"), Some("0.25"), Sampler { parent_based: false, rule: Rule::TraceIdRatio(0.25) }),
            (Some("traceidratio"), None, Sampler { parent_based: false, rule: Rule::TraceIdRatio(1.0) }),
            (Some("traceidratio"), Some(" "), Sampler { parent_based: false, rule: Rule::TraceIdRatio(1.0) }),
            (Some("traceidratio"), Some("0"), Sampler { parent_based: false, rule: Rule::TraceIdRatio(0.0) }),
            (Some("traceidratio"), Some("1e-3"), Sampler { parent_based: false, rule: Rule::TraceIdRatio(0.001) }),
            (Some("parentbased_always_on"), None, Sampler { parent_based: true, rule: Rule::AlwaysOn }),
            (Some("parentbased_always_off"), None, Sampler { parent_based: true, rule: Rule::AlwaysOff }),
            (
                Some(" parentbased_traceidratio "),
                Some(" 0.1 "),
                Sampler { parent_based: true, rule: Rule::TraceIdRatio(0.1) },
            ),
        ];
        for (s, a, want) in cases {
            assert_eq!(Sampler::from_env(*s, *a).as_ref(), Ok(want), "{s:?} {a:?}");
        }
    }

    #[test]
    fn a_bad_setting_is_an_error_naming_its_variable() {
        for (s, a, var) in [
            ("jaeger_remote", None, ENV_SAMPLER),
            ("xray", None, ENV_SAMPLER),
            ("always", None, ENV_SAMPLER),
            ("traceidratio", Some("1.5"), ENV_SAMPLER_ARG),
            ("traceidratio", Some("-0.1"), ENV_SAMPLER_ARG),
            ("traceidratio", Some("NaN"), ENV_SAMPLER_ARG),
            ("traceidratio", Some("inf"), ENV_SAMPLER_ARG),
            ("parentbased_traceidratio", Some("half"), ENV_SAMPLER_ARG),
            ("parentbased_traceidratio", Some("50%"), ENV_SAMPLER_ARG),
        ] {
            let e = Sampler::from_env(Some(s), a).expect_err("refused");
            assert!(e.starts_with(&format!("{var}:")), "{s} {a:?}: {e}");
        }
        let long = "x".repeat(10_000);
        let e = Sampler::from_env(Some(&long), None).expect_err("refused");
        assert!(e.len() < 400, "the error quotes a bounded part: {}", e.len());
    }

    #[test]
    fn names_read_back() {
        for (n, _, _) in NAMES {
            let s = Sampler::from_env(Some(n), Some("0.5")).expect("a known name");
            assert_eq!(s.name(), n);
        }
    }

    #[test]
    fn parent_based_samplers_follow_the_parent_and_the_others_do_not() {
        let t = id(u128::MAX);
        let off = Sampler::from_env(Some("parentbased_always_off"), None).expect("valid");
        assert!(off.decide(t, Some(&parent(true))));
        assert!(!off.decide(t, Some(&parent(false))));
        assert!(!off.decide(t, None));
        let on = Sampler::default();
        assert!(!on.decide(t, Some(&parent(false))));
        assert!(on.decide(t, None));
        assert!(!Sampler::from_env(Some("always_off"), None).expect("valid").decide(t, Some(&parent(true))));
        assert!(Sampler::from_env(Some("always_on"), None).expect("valid").decide(t, Some(&parent(false))));
        // A ratio sampler that is not parent-based decides from the id, parent or not.
        let ratio = Sampler::from_env(Some("traceidratio"), Some("0.5")).expect("valid");
        assert!(ratio.decide(id(1), Some(&parent(false))));
        assert!(!ratio.decide(id(u128::MAX), Some(&parent(true))));
    }

    #[test]
    fn the_ratio_reads_the_low_eight_bytes() {
        // The high half of the id does not count; the low half, shifted right once, is
        // compared with ratio × 2⁶³.
        let half = Rule::TraceIdRatio(0.5);
        let s = Sampler { parent_based: false, rule: half };
        assert!(s.decide(id((u128::from(u64::MAX) << 64) | 1), None));
        assert!(s.decide(id((1 << 64) | u128::from((1u64 << 62) * 2 - 1)), None));
        assert!(!s.decide(id(1u128 << 63), None), "2⁶³ >> 1 = 2⁶² is not below 2⁶²");
        assert!(!Sampler { parent_based: false, rule: Rule::TraceIdRatio(0.0) }.decide(id(1), None));
        assert!(Sampler { parent_based: false, rule: Rule::TraceIdRatio(1.0) }.decide(id(u128::MAX), None));
        assert!(!Sampler { parent_based: false, rule: Rule::TraceIdRatio(f64::NAN) }.decide(id(1), None));
    }

    #[test]
    fn a_ratio_samples_about_its_share() {
        // A fixed-seed generator (splitmix64): the share of 20,000 ids sampled at 0.3.
        let mut state = 0x5eed_u64;
        let mut next = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let s = Sampler { parent_based: false, rule: Rule::TraceIdRatio(0.3) };
        let n = 20_000;
        let sampled =
            (0..n).filter(|_| s.decide(id((u128::from(next()) << 64) | u128::from(next()) | 1), None)).count();
        let share = sampled as f64 / n as f64;
        assert!((0.28..0.32).contains(&share), "{share}");
    }
}

/// The same decisions as `opentelemetry_sdk`'s samplers, which the native consumer runs,
/// on many trace ids and ratios.
#[cfg(test)]
mod agrees_with_the_sdk {
    use super::*;
    use crate::trace::SpanId;
    use opentelemetry::trace::{SpanContext, SpanKind, TraceContextExt, TraceFlags, TraceState};
    use opentelemetry_sdk::trace::{Sampler as SdkSampler, SamplingDecision, ShouldSample};
    use proptest::prelude::*;

    fn sdk_decides(sdk: &SdkSampler, trace_id: [u8; 16], parent: Option<&TraceContext>) -> bool {
        let cx = parent.map(|p| {
            let flags = if p.sampled() { TraceFlags::SAMPLED } else { TraceFlags::default() };
            let sc = SpanContext::new(
                opentelemetry::trace::TraceId::from_bytes(p.trace_id.0),
                opentelemetry::trace::SpanId::from_bytes(p.span_id.0),
                flags,
                true,
                TraceState::default(),
            );
            opentelemetry::Context::new().with_remote_span_context(sc)
        });
        let id = opentelemetry::trace::TraceId::from_bytes(trace_id);
        let r = sdk.should_sample(cx.as_ref(), id, "span", &SpanKind::Internal, &[], &[]);
        r.decision == SamplingDecision::RecordAndSample
    }

    fn sdk_sampler(s: &Sampler) -> SdkSampler {
        let rule = match s.rule {
            Rule::AlwaysOn => SdkSampler::AlwaysOn,
            Rule::AlwaysOff => SdkSampler::AlwaysOff,
            Rule::TraceIdRatio(r) => SdkSampler::TraceIdRatioBased(r),
        };
        if s.parent_based { SdkSampler::ParentBased(Box::new(rule)) } else { rule }
    }

    /// Ratios where an off-by-one in the bound or the shift would show.
    const RATIOS: [f64; 12] = [0.0, 1e-12, 1e-6, 0.001, 0.1, 0.25, 0.3, 0.5, 0.75, 0.999_999, 1.0 - f64::EPSILON, 1.0];

    #[test]
    fn on_a_fixed_seed_of_ids_near_the_bounds() {
        let mut state = 42_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut checked = 0;
        for ratio in RATIOS {
            let bound = (ratio * (1u64 << 63) as f64) as u64;
            let ours = Sampler { parent_based: false, rule: Rule::TraceIdRatio(ratio) };
            let sdk = sdk_sampler(&ours);
            for i in 0..2_000u64 {
                // Random ids, and ids whose low half sits right at the bound (both sides).
                let low = match i % 4 {
                    0 => bound.wrapping_mul(2).wrapping_add(i % 3).wrapping_sub(1),
                    1 => bound.wrapping_mul(2).wrapping_add(i % 3),
                    _ => next(),
                };
                let bytes = ((u128::from(next()) << 64) | u128::from(low)).to_be_bytes();
                let Some(t) = TraceId::new(bytes) else { continue };
                assert_eq!(ours.decide(t, None), sdk_decides(&sdk, bytes, None), "ratio {ratio}, id {t:?}");
                checked += 1;
            }
        }
        assert!(checked > 20_000, "{checked}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn on_random_ids_ratios_and_parents(
            bytes in any::<[u8; 16]>(),
            ratio in 0.0f64..=1.0,
            name in prop::sample::select(NAMES.map(|(n, _, _)| n).to_vec()),
            parent in prop::option::of(any::<bool>()),
        ) {
            let Some(t) = TraceId::new(bytes) else { return Ok(()) };
            let ours = Sampler::from_env(Some(name), Some(&ratio.to_string())).expect("a valid setting");
            let parent = parent.map(|sampled| TraceContext::root(t, SpanId([9; 8]), sampled));
            prop_assert_eq!(ours.decide(t, parent.as_ref()), sdk_decides(&sdk_sampler(&ours), bytes, parent.as_ref()));
        }
    }
}
