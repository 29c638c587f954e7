//! Traces of the native consumer (#32): the OpenTelemetry SDK set up from the standard `OTEL_*`
//! variables and exporting over OTLP (HTTP/protobuf or gRPC), and the spans the worker makes
//! for a job — its delivery from the stream, each attempt with its outcome and lease events,
//! and every outbound call — all continuing the W3C trace context the job carries.
//!
//! The spans follow the OpenTelemetry semantic conventions **1.42.0**, the version
//! `opentelemetry-semantic-conventions` 0.33 generates ([`edgejobs_core::otlp::SEMCONV_VERSION`]).
//! Attribute keys, messaging span names and kinds, and the HTTP client attributes come from
//! [`edgejobs_core::otlp`], where the edge takes them too, so both lanes describe a job alike:
//!
//! | span | kind | name | attributes |
//! |---|---|---|---|
//! | [`Telemetry::delivery`] | `CLIENT` (a `receive`, as 1.42 says; links to the job's context) | `receive {stream}` | `messaging.system=redis_streams`, `messaging.operation.type=receive`, `messaging.operation.name`, `messaging.destination.name`, `messaging.message.id` (the entry id) |
//! | [`Telemetry::attempt`] | `CONSUMER` | `process {job type}` | `messaging.system=redis_streams`, `messaging.operation.type=process`, `messaging.destination.name` (the type), `messaging.message.id` and `edgejobs.job.id` (the job id), `edgejobs.job.type`, `edgejobs.job.attempt`, `edgejobs.job.lane`; at the end `edgejobs.job.outcome`, `edgejobs.job.retry_delay_ms`, `error.type` |
//! | [`Telemetry::outbound`] | `CLIENT` | the method (`HTTP` for an unknown one) | `http.request.method`, `server.address`, `server.port`, `url.full` without query, fragment or user information, `http.response.status_code`, `error.type`; never a header |
//!
//! `messaging.system`: Redis is none of the conventions' well-known values, which allow a
//! custom one; `redis_streams` is the one core names ([`edgejobs_core::otlp::keys::SYSTEM_REDIS_STREAMS`]).
//!
//! Tracing is off unless an endpoint is set: then no SDK is built, a span is the parent's
//! context carried on (no allocation beyond a copy of the parent's `tracestate`), and a log
//! line still names the job's trace.

use std::borrow::Cow;
use std::str::FromStr as _;
use std::time::Duration;

use edgejobs_core::lane::Lane;
use edgejobs_core::otlp::{self, Attr, AttrValue, keys};
use edgejobs_core::sampler::{Rule, Sampler};
use edgejobs_core::secret::Secret;
use edgejobs_core::trace::{SpanId, TraceContext, TraceId};
use opentelemetry::trace::{self as ot, Span as _, TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, TracerProviderBuilder};

/// The variables read, in one place. The ones the edge reads too are core's.
pub mod names {
    pub use edgejobs_core::sampler::{ENV_SAMPLER as SAMPLER, ENV_SAMPLER_ARG as SAMPLER_ARG};
    pub use edgejobs_core::tracing_config::names::{ENDPOINT, HEADERS, SDK_DISABLED, SERVICE_NAME, TRACES_ENDPOINT};

    pub const TRACES_EXPORTER: &str = "OTEL_TRACES_EXPORTER";
    pub const PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
    pub const TRACES_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
    pub const TRACES_HEADERS: &str = "OTEL_EXPORTER_OTLP_TRACES_HEADERS";
    pub const TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";
    pub const TRACES_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT";
    pub const COMPRESSION: &str = "OTEL_EXPORTER_OTLP_COMPRESSION";
    pub const TRACES_COMPRESSION: &str = "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION";
    pub const INSECURE: &str = "OTEL_EXPORTER_OTLP_INSECURE";
    pub const TRACES_INSECURE: &str = "OTEL_EXPORTER_OTLP_TRACES_INSECURE";
    pub const RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";
    /// The batch span processor's settings, which the SDK reads itself; we only check them.
    pub const BSP: [&str; 5] = [
        "OTEL_BSP_SCHEDULE_DELAY",
        "OTEL_BSP_EXPORT_TIMEOUT",
        "OTEL_BSP_MAX_QUEUE_SIZE",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
        "OTEL_BSP_MAX_CONCURRENT_EXPORTS",
    ];
}

/// The service name when neither `OTEL_SERVICE_NAME` nor a `service.name` in
/// `OTEL_RESOURCE_ATTRIBUTES` gives one.
pub const DEFAULT_SERVICE_NAME: &str = "edgejobs-consumer";

/// How long one export may take when `OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT` is unset (the
/// specification's default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`Telemetry::shutdown`] waits for the last spans to be sent.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The instrumentation scope of the consumer's spans.
pub const SCOPE: &str = "edgejobs-consumer";

/// How spans travel to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `grpc`: OTLP/gRPC (tonic), usually port 4317.
    Grpc,
    /// `http/protobuf`: OTLP/HTTP with protobuf bodies, usually port 4318. The default.
    HttpProtobuf,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        }
    }
}

/// Where and how spans are exported.
#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    pub protocol: Protocol,
    /// The URL spans are sent to. For `http/protobuf`: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as
    /// given, or `OTEL_EXPORTER_OTLP_ENDPOINT` with `/v1/traces` appended (the specification's
    /// rule). For `grpc`: either as given, with `http://` put in front of one without a scheme
    /// when `OTEL_EXPORTER_OTLP_(TRACES_)INSECURE` is true and `https://` otherwise. Written
    /// back as `url` normalizes it (`http://c:4317` becomes `http://c:4317/`).
    pub endpoint: String,
    /// The variable the endpoint came from, for errors.
    pub endpoint_var: &'static str,
    /// `OTEL_EXPORTER_OTLP_TRACES_HEADERS`, or else `OTEL_EXPORTER_OTLP_HEADERS`: names
    /// lowercase, values percent-decoded. Secrets (an API key): never logged.
    pub headers: Vec<(String, Secret)>,
    /// `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, or else `OTEL_EXPORTER_OTLP_TIMEOUT`, in
    /// milliseconds; default [`DEFAULT_TIMEOUT`].
    pub timeout: Duration,
}

/// The trace settings, read from the environment (the first of two stages: [`Telemetry::start`]
/// builds the SDK from them).
#[derive(Debug, Clone, PartialEq)]
pub struct TraceConfig {
    /// `None`: tracing is off — no endpoint, `OTEL_TRACES_EXPORTER=none` or
    /// `OTEL_SDK_DISABLED=true`. Off is the default: no endpoint, no SDK, no cost.
    pub export: Option<Export>,
    /// `OTEL_SERVICE_NAME`, or a `service.name` in `OTEL_RESOURCE_ATTRIBUTES`, or
    /// [`DEFAULT_SERVICE_NAME`].
    pub service_name: String,
    /// `OTEL_RESOURCE_ATTRIBUTES` (values percent-decoded), `service.name` left out.
    pub resource: Vec<(String, String)>,
    /// `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`; default `parentbased_always_on`
    /// (a job's spans follow the `sampled` flag of the context it came with).
    pub sampler: Sampler,
    /// One line for the start-up log: where spans go, or why tracing is off. Never a header
    /// value nor the endpoint's user information or query.
    pub summary: String,
}

impl TraceConfig {
    /// Reads the settings through `env` (`None` or an empty value: unset; values are trimmed)
    /// and checks every one, tracing on or off, so a typo shows at start-up. Each problem names
    /// its variable and never quotes a header value.
    ///
    /// Stricter than the specification on purpose, as the rest of the consumer's
    /// configuration: an unknown or unsupported value is an error (the SDK would log a warning
    /// and fall back). Supported: `OTEL_TRACES_EXPORTER` `otlp` or `none`; the protocols
    /// `grpc` and `http/protobuf` (not `http/json`); compression `none` only.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<TraceConfig, Vec<String>> {
        let val = |n: &str| env(n).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let first = |a: &'static str, b: &'static str| val(a).map(|v| (a, v)).or_else(|| val(b).map(|v| (b, v)));
        let mut errors = Vec::new();

        let disabled = boolean(names::SDK_DISABLED, val(names::SDK_DISABLED), &mut errors);
        let exporter_none = match val(names::TRACES_EXPORTER) {
            None => false,
            Some(v) => {
                let mut otlp_listed = false;
                let mut none_listed = false;
                for e in v.split(',').map(|e| e.trim().to_ascii_lowercase()).filter(|e| !e.is_empty()) {
                    match e.as_str() {
                        "otlp" => otlp_listed = true,
                        "none" => none_listed = true,
                        _ => errors.push(format!(
                            "{}: exporter {:?} is not supported here (otlp or none)",
                            names::TRACES_EXPORTER,
                            quote(&e)
                        )),
                    }
                }
                none_listed && !otlp_listed
            }
        };
        let protocol = match first(names::TRACES_PROTOCOL, names::PROTOCOL) {
            None => Protocol::HttpProtobuf,
            Some((name, v)) => match v.to_ascii_lowercase().as_str() {
                "grpc" => Protocol::Grpc,
                "http/protobuf" => Protocol::HttpProtobuf,
                "http/json" => {
                    errors
                        .push(format!("{name}: http/json is not supported by the consumer; use http/protobuf or grpc"));
                    Protocol::HttpProtobuf
                }
                _ => {
                    errors.push(format!("{name}: unknown protocol {:?}; grpc or http/protobuf", quote(&v)));
                    Protocol::HttpProtobuf
                }
            },
        };
        let insecure = match first(names::TRACES_INSECURE, names::INSECURE) {
            None => false,
            Some((name, v)) => boolean(name, Some(v), &mut errors),
        };
        let endpoint = match (val(names::TRACES_ENDPOINT), val(names::ENDPOINT)) {
            (Some(u), _) => endpoint(names::TRACES_ENDPOINT, &u, true, protocol, insecure, &mut errors),
            (None, Some(u)) => endpoint(names::ENDPOINT, &u, false, protocol, insecure, &mut errors),
            (None, None) => None,
        };
        let headers = match first(names::TRACES_HEADERS, names::HEADERS) {
            None => Vec::new(),
            Some((name, h)) => headers(&h).unwrap_or_else(|e| {
                errors.push(format!("{name}: {e}"));
                Vec::new()
            }),
        };
        let timeout = match first(names::TRACES_TIMEOUT, names::TIMEOUT) {
            None => DEFAULT_TIMEOUT,
            Some((name, v)) => match v.parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => {
                    errors.push(format!("{name}: must be a positive number of milliseconds, not {:?}", quote(&v)));
                    DEFAULT_TIMEOUT
                }
            },
        };
        if let Some((name, v)) = first(names::TRACES_COMPRESSION, names::COMPRESSION) {
            match v.to_ascii_lowercase().as_str() {
                "none" => {}
                "gzip" | "zstd" => errors.push(format!("{name}: {v} is not built into the consumer; use none")),
                _ => errors.push(format!("{name}: unknown compression {:?}; none", quote(&v))),
            }
        }
        let sampler = Sampler::from_env(val(names::SAMPLER).as_deref(), val(names::SAMPLER_ARG).as_deref())
            .unwrap_or_else(|e| {
                errors.push(e);
                Sampler::default()
            });
        let mut resource = match val(names::RESOURCE_ATTRIBUTES) {
            None => Vec::new(),
            Some(r) => resource_attributes(&r).unwrap_or_else(|e| {
                errors.push(format!("{}: {e}", names::RESOURCE_ATTRIBUTES));
                Vec::new()
            }),
        };
        let from_resource = resource.iter().position(|(k, _)| k == keys::SERVICE_NAME).map(|i| resource.remove(i).1);
        let service_name =
            val(names::SERVICE_NAME).or(from_resource).unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
        // The SDK reads these itself (we set none of them, so it honours them all); it would
        // quietly take its default for a bad one, and panic on a zero queue or delay.
        for name in names::BSP {
            if let Some(v) = env(name).filter(|v| !v.is_empty())
                && !v.parse::<u64>().is_ok_and(|n| n > 0)
            {
                errors.push(format!("{name}: must be a positive whole number, not {:?}", quote(&v)));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }

        let export = match endpoint {
            _ if disabled => None,
            _ if exporter_none => None,
            None => None,
            Some((endpoint, endpoint_var)) => Some(Export { protocol, endpoint, endpoint_var, headers, timeout }),
        };
        let summary = match &export {
            _ if disabled => format!("tracing off ({}=true)", names::SDK_DISABLED),
            _ if exporter_none => format!("tracing off ({}=none)", names::TRACES_EXPORTER),
            None => format!("tracing off (no {})", names::ENDPOINT),
            Some(e) => format!(
                "tracing on: OTLP {} to {} as {service_name}, sampler {}{}",
                e.protocol.as_str(),
                edgejobs_core::outbound::redact_url(&e.endpoint),
                sampler.name(),
                match sampler.rule {
                    Rule::TraceIdRatio(r) => format!(" ({r})"),
                    _ => String::new(),
                },
            ),
        };
        Ok(TraceConfig { export, service_name, resource, sampler, summary })
    }

    /// An SDK provider builder with this configuration's sampler and resource, and no span
    /// processor: [`Telemetry::start`] adds the OTLP exporter; a test adds its own.
    pub fn provider_builder(&self) -> TracerProviderBuilder {
        SdkTracerProvider::builder().with_sampler(sdk_sampler(self.sampler)).with_resource(self.sdk_resource())
    }

    /// The resource: `telemetry.sdk.*`, `service.version` (the consumer's, unless
    /// `OTEL_RESOURCE_ATTRIBUTES` gives one), the other resource attributes and `service.name`.
    fn sdk_resource(&self) -> opentelemetry_sdk::Resource {
        opentelemetry_sdk::Resource::builder_empty()
            .with_detector(Box::new(opentelemetry_sdk::resource::TelemetryResourceDetector))
            .with_attribute(KeyValue::new(keys::SERVICE_VERSION, env!("CARGO_PKG_VERSION")))
            .with_attributes(self.resource.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())))
            .with_service_name(self.service_name.clone())
            .build()
    }
}

/// A boolean variable as the specification reads one: `true` or `false`, any case. Anything
/// else is an error here (the specification would warn and read it as false).
fn boolean(name: &str, v: Option<String>, errors: &mut Vec<String>) -> bool {
    match v.map(|v| v.to_ascii_lowercase()) {
        None => false,
        Some(v) if v == "true" => true,
        Some(v) if v == "false" => false,
        Some(_) => {
            errors.push(format!("{name}: must be true or false"));
            false
        }
    }
}

/// The URL spans go to, checked; `None` after pushing an error. The value itself is never
/// quoted: an endpoint may hold credentials.
fn endpoint(
    name: &'static str,
    raw: &str,
    signal_specific: bool,
    protocol: Protocol,
    insecure: bool,
    errors: &mut Vec<String>,
) -> Option<(String, &'static str)> {
    let has_scheme = raw.split_once("://").is_some_and(|(s, _)| !s.is_empty() && !s.contains(['/', '?', '#']));
    let url = match protocol {
        Protocol::HttpProtobuf if signal_specific => raw.to_owned(),
        Protocol::HttpProtobuf => format!("{}/v1/traces", raw.trim_end_matches('/')),
        // gRPC appends no path; the specification lets a gRPC endpoint omit its scheme, and
        // then `..._INSECURE` chooses it (the SDK would, reading the process's environment).
        Protocol::Grpc if has_scheme => raw.to_owned(),
        Protocol::Grpc => format!("{}://{raw}", if insecure { "http" } else { "https" }),
    };
    match url::Url::parse(&url) {
        // Written back by `url` (hosts in ASCII, spaces escaped), as the exporters' `http::Uri`
        // parser wants it.
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Some((u.into(), name)),
        _ => {
            errors.push(format!(
                "{name}: must be an http:// or https:// URL with a host, such as http://otel-collector:{}",
                match protocol {
                    Protocol::Grpc => 4317,
                    Protocol::HttpProtobuf => 4318,
                }
            ));
            None
        }
    }
}

/// Headers as core reads them for the edge (lowercase names, percent-decoded values), and
/// also valid as HTTP headers and gRPC metadata: the exporters would drop a bad one quietly.
fn headers(s: &str) -> Result<Vec<(String, Secret)>, String> {
    let parsed = edgejobs_core::tracing_config::parse_headers(s)?;
    for (i, (k, v)) in parsed.iter().enumerate() {
        if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
            return Err(format!("entry {}: {k:?} is not a header name", i + 1));
        }
        if reqwest::header::HeaderValue::from_str(v.expose()).is_err() {
            return Err(format!("entry {} ({k}): the value holds a control character once decoded", i + 1));
        }
    }
    Ok(parsed)
}

/// `OTEL_RESOURCE_ATTRIBUTES`: `key=value` pairs, comma-separated, values percent-encoded.
fn resource_attributes(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (i, pair) in s.split(',').map(str::trim).filter(|p| !p.is_empty()).enumerate() {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(format!("entry {} is not key=value", i + 1));
        };
        let k = k.trim();
        if k.is_empty() {
            return Err(format!("entry {} has no key", i + 1));
        }
        let v = percent_encoding::percent_decode_str(v.trim())
            .decode_utf8()
            .map_err(|_| format!("entry {} ({k}): the value is not UTF-8 once decoded", i + 1))?;
        // A later duplicate wins, as the SDK's resource merge does.
        out.retain(|(seen, _)| seen != k);
        out.push((k.to_owned(), v.into_owned()));
    }
    Ok(out)
}

/// A setting quoted back in an error, cut short (settings are trusted, but an error is one line).
fn quote(s: &str) -> String {
    s.chars().take(64).collect()
}

/// The SDK's sampler for core's (the edge decides with core's, so both lanes decide alike).
fn sdk_sampler(s: Sampler) -> opentelemetry_sdk::trace::Sampler {
    use opentelemetry_sdk::trace::Sampler as S;
    let rule = match s.rule {
        Rule::AlwaysOn => S::AlwaysOn,
        Rule::AlwaysOff => S::AlwaysOff,
        Rule::TraceIdRatio(r) => S::TraceIdRatioBased(r),
    };
    if s.parent_based { S::ParentBased(Box::new(rule)) } else { rule }
}

/// The consumer's tracing: on (an SDK provider exporting over OTLP) or off. Cheap to clone
/// (clones share the provider).
///
/// End it with [`Telemetry::shutdown`]. Dropping the last handle (and the last span) of a
/// provider that was not shut down makes the SDK flush there and then, blocking that thread
/// until the export ends — on a current-thread runtime, for ever, since the export is a task
/// of that thread.
#[derive(Debug, Clone)]
pub struct Telemetry {
    on: Option<On>,
    summary: String,
}

#[derive(Debug, Clone)]
struct On {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl Telemetry {
    /// Reads the settings ([`TraceConfig::from_env`]) and starts the exporter
    /// ([`Telemetry::start`]). Every problem is in the error, `; `-separated.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Telemetry, String> {
        let config = TraceConfig::from_env(env).map_err(|e| e.join("; "))?;
        Telemetry::start(&config)
    }

    /// Tracing off: no SDK; spans carry the parent's context on.
    pub fn off() -> Telemetry {
        Telemetry { on: None, summary: format!("tracing off (no {})", names::ENDPOINT) }
    }

    /// Builds the OTLP exporter and the batch span processor of `config` (or nothing, when it
    /// is off). Must run inside the tokio runtime that will carry the exports: the processor is
    /// a task on it, exporting every `OTEL_BSP_SCHEDULE_DELAY` (default 5 s), and the exporters
    /// are its async clients. Call [`Telemetry::shutdown`] before that runtime stops.
    pub fn start(config: &TraceConfig) -> Result<Telemetry, String> {
        let Some(export) = &config.export else {
            return Ok(Telemetry { on: None, summary: config.summary.clone() });
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return Err("tracing: the exporter must be started inside the tokio runtime".to_owned());
        }
        let exporter = exporter(export).map_err(|e| {
            format!(
                "{}: the OTLP exporter could not be set up: {}",
                export.endpoint_var,
                match e {
                    // Its text may quote the endpoint, which may hold credentials.
                    opentelemetry_otlp::ExporterBuildError::InvalidConfiguration(_) =>
                        "invalid configuration".to_owned(),
                    opentelemetry_otlp::ExporterBuildError::InternalFailure(m) => m,
                }
            )
        })?;
        // The tokio batch processor, not the SDK's default one: that one exports from a thread
        // of its own, where the async clients (reqwest, tonic) have no runtime. It reads the
        // `OTEL_BSP_*` variables itself (`BatchConfig::default`), which we leave alone.
        let processor = opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
        let provider = config.provider_builder().with_span_processor(processor).build();
        Ok(Telemetry::with_summary(provider, config.summary.clone()))
    }

    /// Tracing through a provider built elsewhere (a test's in-memory exporter, or another
    /// exporter). Build it from [`TraceConfig::provider_builder`] to keep the sampler and resource.
    pub fn with_provider(provider: SdkTracerProvider) -> Telemetry {
        Telemetry::with_summary(provider, "tracing on (a provider given in code)".to_owned())
    }

    fn with_summary(provider: SdkTracerProvider, summary: String) -> Telemetry {
        let scope = InstrumentationScope::builder(SCOPE)
            .with_version(env!("CARGO_PKG_VERSION"))
            .with_schema_url(otlp::SCHEMA_URL)
            .build();
        let tracer = provider.tracer_with_scope(scope);
        Telemetry { on: Some(On { provider, tracer }), summary }
    }

    /// Whether spans are made and exported.
    pub fn is_on(&self) -> bool {
        self.on.is_some()
    }

    /// One line for the start-up log (see [`TraceConfig::summary`]).
    pub fn summary(&self) -> &str {
        &self.summary
    }

    /// The span of a stream entry's delivery to this consumer (a `receive`), child of the
    /// job's context (the span that enqueued it) and linked to it, as the conventions ask of a
    /// receive span for each message it accounts for.
    pub fn delivery(&self, parent: &TraceContext, stream: &str, entry_id: &str) -> JobSpan {
        let Some(on) = &self.on else {
            return JobSpan::off(parent, OP_RECEIVE);
        };
        let remote = remote_span_context(parent);
        let builder = on
            .tracer
            .span_builder(otlp::messaging_span_name("receive", stream))
            .with_kind(kind(otlp::messaging_kind("receive")))
            .with_attributes(
                otlp::messaging_attrs(keys::SYSTEM_REDIS_STREAMS, "receive", stream, Some(entry_id), None)
                    .into_iter()
                    .map(kv),
            )
            .with_links(vec![ot::Link::with_context(remote.clone())]);
        let cx = Context::new().with_remote_span_context(remote);
        JobSpan::start(on, builder, &cx, parent, OP_RECEIVE)
    }

    /// The span of one attempt (a `process`), child of `parent`: the delivery's [`JobSpan`], or
    /// the job's [`TraceContext`] when there is no delivery span.
    pub fn attempt<P: SpanParent + ?Sized>(
        &self,
        parent: &P,
        job_type: &str,
        job_id: &str,
        attempt: u32,
        lane: Lane,
    ) -> JobSpan {
        let Some(on) = &self.on else {
            return JobSpan::off(parent.trace_context(), OP_PROCESS);
        };
        let mut attrs = otlp::messaging_attrs(keys::SYSTEM_REDIS_STREAMS, "process", job_type, Some(job_id), None);
        attrs.extend([
            Attr::new(keys::JOB_ID, job_id),
            Attr::new(keys::JOB_TYPE, job_type),
            Attr::new(keys::JOB_ATTEMPT, attempt),
            Attr::new(keys::JOB_LANE, lane.as_str()),
        ]);
        let builder = on
            .tracer
            .span_builder(otlp::messaging_span_name("process", job_type))
            .with_kind(kind(otlp::messaging_kind("process")))
            .with_attributes(attrs.into_iter().map(kv));
        match parent.otel_context() {
            Some(cx) => JobSpan::start(on, builder, cx, parent.trace_context(), OP_PROCESS),
            None => {
                let cx = Context::new().with_remote_span_context(remote_span_context(parent.trace_context()));
                JobSpan::start(on, builder, &cx, parent.trace_context(), OP_PROCESS)
            }
        }
    }

    /// The span of an outbound HTTP call made for the job, child of `parent` (its attempt).
    /// Send [`OutboundSpan::traceparent`] with the call, then [`OutboundSpan::finish`] it.
    pub fn outbound(&self, parent: &JobSpan, method: &str, url: &url::Url) -> OutboundSpan {
        let Some(on) = &self.on else {
            return OutboundSpan { span: None, trace: parent.trace.clone() };
        };
        // `error.type` is set at the end, from what happened.
        let attrs = otlp::http_client_attrs(method, url, None).into_iter().filter(|a| a.key != keys::ERROR_TYPE);
        let builder = on
            .tracer
            .span_builder(otlp::http_client_span_name(method))
            .with_kind(ot::SpanKind::Client)
            .with_attributes(attrs.map(kv));
        let span = match &parent.span {
            Some(cx) => builder.start_with_context(&on.tracer, cx),
            None => {
                let cx = Context::new().with_remote_span_context(remote_span_context(&parent.trace));
                builder.start_with_context(&on.tracer, &cx)
            }
        };
        let trace = position(span.span_context(), &parent.trace);
        OutboundSpan { span: Some(Context::new().with_span(span)), trace }
    }

    /// Sends the spans not yet exported and stops the exporter, waiting at most
    /// [`SHUTDOWN_TIMEOUT`]; for the consumer's graceful shutdown.
    pub async fn shutdown(self) -> Result<(), String> {
        self.shutdown_within(SHUTDOWN_TIMEOUT).await
    }

    /// [`Telemetry::shutdown`] waiting at most `limit`: after it the spans still queued are
    /// dropped. The SDK's shutdown blocks its thread until the processor task answers, so it
    /// runs on tokio's blocking pool (on a runtime worker it could wait on itself).
    pub async fn shutdown_within(self, limit: Duration) -> Result<(), String> {
        let Some(On { provider, tracer }) = self.on else {
            return Ok(());
        };
        drop(tracer);
        let flush = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(limit));
        match tokio::time::timeout(limit, flush).await {
            Ok(Ok(Ok(()) | Err(opentelemetry_sdk::error::OTelSdkError::AlreadyShutdown))) => Ok(()),
            Ok(Ok(Err(e))) => Err(format!("tracing: the last spans could not be sent: {e}")),
            Ok(Err(e)) => Err(format!("tracing: the shutdown task failed: {e}")),
            Err(_) => Err(format!("tracing: the last spans were not sent within {limit:?} and are dropped")),
        }
    }
}

/// The OTLP exporter `export` describes. Every setting is given here, so what the SDK would
/// read from the process's environment for these does not apply; it still reads the
/// compression (which [`TraceConfig::from_env`] only lets be `none`).
fn exporter(export: &Export) -> Result<opentelemetry_otlp::SpanExporter, opentelemetry_otlp::ExporterBuildError> {
    use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _};
    match export.protocol {
        Protocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(export.endpoint.clone())
            .with_timeout(export.timeout)
            // The HTTP builder percent-decodes the values it is given, as it does those it
            // reads from the environment: ours are decoded already, so a `%` is escaped.
            .with_headers(export.headers.iter().map(|(k, v)| (k.clone(), v.expose().replace('%', "%25"))).collect())
            .build(),
        Protocol::Grpc => {
            let mut metadata = reqwest::header::HeaderMap::new();
            for (k, v) in &export.headers {
                if let (Ok(k), Ok(v)) = (
                    reqwest::header::HeaderName::from_bytes(k.as_bytes()),
                    reqwest::header::HeaderValue::from_str(v.expose()),
                ) {
                    metadata.insert(k, v);
                }
            }
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(export.endpoint.clone())
                .with_timeout(export.timeout)
                .with_metadata(opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(metadata));
            if export.endpoint.starts_with("https://") {
                // Without roots tonic's TLS trusts nothing: the system's, as reqwest uses.
                builder = builder.with_tls_config(
                    opentelemetry_otlp::tonic_types::transport::ClientTlsConfig::new().with_native_roots(),
                );
            }
            builder.build()
        }
    }
}

/// What a span can continue: a job's stored context (a remote parent) or one of our spans.
pub trait SpanParent: sealed::Sealed {
    /// The position in the trace (the parent's ids, flags and `tracestate`).
    fn trace_context(&self) -> &TraceContext;
    /// The SDK context holding the parent span, when it is one of ours and tracing is on.
    fn otel_context(&self) -> Option<&Context>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for edgejobs_core::trace::TraceContext {}
    impl Sealed for super::JobSpan {}
}

impl SpanParent for TraceContext {
    fn trace_context(&self) -> &TraceContext {
        self
    }
    fn otel_context(&self) -> Option<&Context> {
        None
    }
}

impl SpanParent for JobSpan {
    fn trace_context(&self) -> &TraceContext {
        &self.trace
    }
    fn otel_context(&self) -> Option<&Context> {
        self.span.as_ref()
    }
}

/// Sentry's `op` of each span (its names for queue and HTTP client work).
const OP_RECEIVE: &str = "queue.receive";
const OP_PROCESS: &str = "queue.process";

/// A job's delivery or attempt span. It ends when dropped (or at [`JobSpan::end`]). With
/// tracing off it is the parent's context carried on, so [`JobSpan::context`] and the ids for
/// logs are still the job's trace.
#[derive(Debug)]
pub struct JobSpan {
    /// The SDK context holding the span; `None` when tracing is off.
    span: Option<Context>,
    /// This span's position (its ids, flags and the trace's `tracestate`), or the parent's
    /// when tracing is off.
    trace: TraceContext,
    /// The parent's span id, when a span was made.
    parent_span_id: Option<SpanId>,
    op: &'static str,
}

impl JobSpan {
    fn off(parent: &TraceContext, op: &'static str) -> JobSpan {
        JobSpan { span: None, trace: parent.clone(), parent_span_id: None, op }
    }

    fn start(on: &On, builder: ot::SpanBuilder, cx: &Context, parent: &TraceContext, op: &'static str) -> JobSpan {
        let span = builder.start_with_context(&on.tracer, cx);
        let trace = position(span.span_context(), parent);
        JobSpan { span: Some(Context::new().with_span(span)), trace, parent_span_id: Some(parent.span_id), op }
    }

    /// This span as the parent of what follows (to store or send on).
    pub fn context(&self) -> TraceContext {
        self.trace.clone()
    }

    /// The same as [`JobSpan::context`], borrowed.
    pub fn trace_context(&self) -> &TraceContext {
        &self.trace
    }

    pub fn trace_id(&self) -> TraceId {
        self.trace.trace_id
    }

    pub fn span_id(&self) -> SpanId {
        self.trace.span_id
    }

    /// The trace id for a log line's `trace_id` (32 lowercase hex digits).
    pub fn trace_id_hex(&self) -> String {
        self.trace.trace_id.to_hex()
    }

    /// The span id for a log line's `span_id` (16 lowercase hex digits): this span's, or the
    /// parent's with tracing off.
    pub fn span_id_hex(&self) -> String {
        self.trace.span_id.to_hex()
    }

    /// Whether the span records (tracing on and the trace sampled): build costly attributes or
    /// event details only then.
    pub fn is_recording(&self) -> bool {
        self.span.as_ref().is_some_and(|cx| cx.span().is_recording())
    }

    /// Sets an attribute (a key of [`edgejobs_core::otlp::keys`]); long strings are cut to
    /// [`edgejobs_core::otlp::ATTR_VALUE_MAX`] bytes.
    pub fn set_attribute(&self, key: &'static str, value: impl Into<AttrValue>) {
        if let Some(cx) = &self.span {
            cx.span().set_attribute(kv(Attr::new(key, value)));
        }
    }

    /// Records an event: the lease events (`edgejobs_core::otlp::keys::events::LEASE_TAKEN`,
    /// `LEASE_RENEWED`, `LEASE_LOST`, `LEASE_RELEASED`) with their details.
    pub fn event(&self, name: impl Into<Cow<'static, str>>, attrs: impl IntoIterator<Item = Attr>) {
        if let Some(cx) = &self.span {
            cx.span().add_event(name, attrs.into_iter().map(|a| kv(Attr::new(a.key, a.value))).collect());
        }
    }

    /// How the attempt ended: `completed`, `failed` (to be retried after `retry_delay_ms`),
    /// `dead`, `lease_lost` or `cancelled`. Any outcome but `completed` and `cancelled` is an
    /// error: the span's status says so, with `error` (cut short) as its description, and
    /// `error.type` is the outcome.
    pub fn outcome(&self, outcome: &str, retry_delay_ms: Option<u64>, error: Option<&str>) {
        let Some(cx) = &self.span else { return };
        let span = cx.span();
        span.set_attribute(kv(Attr::new(keys::JOB_OUTCOME, outcome)));
        if let Some(ms) = retry_delay_ms {
            span.set_attribute(kv(Attr::new(keys::JOB_RETRY_DELAY_MS, ms)));
        }
        if !matches!(outcome, "completed" | "cancelled") {
            span.set_attribute(kv(Attr::new(keys::ERROR_TYPE, outcome)));
            span.set_status(status(otlp::Status::Error(cap(error.unwrap_or(outcome)))));
        }
    }

    /// Ends the span now.
    pub fn end(self) {
        if let Some(cx) = &self.span {
            cx.span().end();
        }
    }

    /// The span as Sentry's trace context, so an error reported while it runs links to the
    /// trace: `sentry::configure_scope(|s| s.set_context("trace", span.sentry_context()))`.
    pub fn sentry_context(&self) -> sentry::protocol::TraceContext {
        sentry::protocol::TraceContext {
            trace_id: self.trace.trace_id.0.into(),
            span_id: self.trace.span_id.0.into(),
            parent_span_id: self.parent_span_id.map(|s| s.0.into()),
            op: Some(self.op.to_owned()),
            ..Default::default()
        }
    }
}

/// An outbound HTTP call's span. It ends at [`OutboundSpan::finish`] (or when dropped).
#[derive(Debug)]
pub struct OutboundSpan {
    span: Option<Context>,
    trace: TraceContext,
}

impl OutboundSpan {
    /// The `traceparent` (and `tracestate`) to send with the call, so the callee's parent is
    /// this span: [`TraceContext::headers`]. With tracing off it is the attempt's context.
    pub fn traceparent(&self) -> TraceContext {
        self.trace.clone()
    }

    /// Ends the span: `status` is the response's status code (`None` when none came), and
    /// `error` a short, low-cardinality kind of transport failure (`timeout`, `connect`,
    /// `refused`...), never a message quoting the URL. A status of 400 or more, or no
    /// response, makes the span an error; `error.type` is then `error`, the status code, or
    /// `_OTHER`.
    pub fn finish(self, status_code: Option<u16>, error: Option<&str>) {
        let Some(cx) = &self.span else { return };
        let span = cx.span();
        if let Some(code) = status_code {
            span.set_attribute(kv(Attr::new(keys::HTTP_RESPONSE_STATUS_CODE, code)));
        }
        let error_type = match (error, status_code) {
            (Some(e), _) => Some(e.to_owned()),
            (None, Some(code)) if code >= 400 => Some(code.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some("_OTHER".to_owned()),
        };
        if let Some(t) = error_type {
            span.set_attribute(kv(Attr::new(keys::ERROR_TYPE, t)));
            span.set_status(status(match error {
                Some(e) => otlp::Status::Error(cap(e)),
                None => otlp::http_client_status(status_code),
            }));
        }
        span.end();
    }
}

/// A span's position for what follows it: its ids and flags, with the trace's `tracestate`
/// (the SDK carries the parent's on unchanged).
fn position(sc: &ot::SpanContext, parent: &TraceContext) -> TraceContext {
    TraceContext {
        trace_id: TraceId(sc.trace_id().to_bytes()),
        span_id: SpanId(sc.span_id().to_bytes()),
        flags: sc.trace_flags().to_u8(),
        state: parent.state.clone(),
    }
}

/// The SDK's remote span context for a job's stored context.
fn remote_span_context(t: &TraceContext) -> ot::SpanContext {
    // Core's `tracestate` check is stricter than the SDK's, so this parses whenever it is set.
    let state = t.state.as_deref().and_then(|s| ot::TraceState::from_str(s).ok()).unwrap_or_default();
    ot::SpanContext::new(
        ot::TraceId::from_bytes(t.trace_id.0),
        ot::SpanId::from_bytes(t.span_id.0),
        ot::TraceFlags::new(t.flags),
        true,
        state,
    )
}

fn kind(k: otlp::SpanKind) -> ot::SpanKind {
    match k {
        otlp::SpanKind::Internal => ot::SpanKind::Internal,
        otlp::SpanKind::Server => ot::SpanKind::Server,
        otlp::SpanKind::Client => ot::SpanKind::Client,
        otlp::SpanKind::Producer => ot::SpanKind::Producer,
        otlp::SpanKind::Consumer => ot::SpanKind::Consumer,
    }
}

fn status(s: otlp::Status) -> ot::Status {
    match s {
        otlp::Status::Unset => ot::Status::Unset,
        otlp::Status::Ok => ot::Status::Ok,
        otlp::Status::Error(m) => ot::Status::error(m),
    }
}

/// Core's attribute as the SDK's.
fn kv(a: Attr) -> KeyValue {
    let value = match a.value {
        AttrValue::Str(s) => opentelemetry::Value::from(s),
        AttrValue::Int(i) => i.into(),
        AttrValue::Bool(b) => b.into(),
        AttrValue::Double(d) => d.into(),
        AttrValue::StrArray(v) => {
            opentelemetry::Value::Array(v.into_iter().map(opentelemetry::StringValue::from).collect::<Vec<_>>().into())
        }
    };
    KeyValue::new(a.key, value)
}

/// A status description cut as core cuts attribute values.
fn cap(s: &str) -> String {
    match Attr::new(keys::ERROR_TYPE, s).value {
        AttrValue::Str(s) => s,
        _ => String::new(),
    }
}

/// An attempt's span with the telemetry it belongs to: what the handler's outbound calls
/// are children of (`JobCtx::trace`, `Outgoing::trace`).
#[derive(Debug)]
pub struct Traced {
    pub telemetry: Telemetry,
    pub span: JobSpan,
}

impl Traced {
    /// With tracing off, under `parent` (what a handler test runs with).
    pub fn off(parent: &TraceContext) -> Traced {
        Traced { telemetry: Telemetry::off(), span: JobSpan::off(parent, OP_PROCESS) }
    }

    /// An outbound call's span under the attempt.
    pub fn outbound(&self, method: &str, url: &url::Url) -> OutboundSpan {
        self.telemetry.outbound(&self.span, method, url)
    }
}

/// The root of a new trace, for a delivery whose entry carries no context (written before
/// #32): sampled, so the sampler decides as for any new trace.
pub fn new_root() -> TraceContext {
    use opentelemetry_sdk::trace::{IdGenerator as _, RandomIdGenerator};
    let ids = RandomIdGenerator::default();
    let trace_id = edgejobs_core::trace::TraceId(ids.new_trace_id().to_bytes());
    let span_id = edgejobs_core::trace::SpanId(ids.new_span_id().to_bytes());
    TraceContext::root(trace_id, span_id, true)
}
