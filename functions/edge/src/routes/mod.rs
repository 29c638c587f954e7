//! The router: one table ([`ROUTES`]) of method, path, who may call it and handler; it
//! matches method and path, checks the route's scope, and turns every
//! [`ApiError`] into its JSON error response. Unknown paths answer 404 `not_found`; a known
//! path with another method answers 405 `method_not_allowed` with an `Allow` header.

use edgejobs_core::auth::{Principal, Scope};
use edgejobs_core::config::EdgeConfig;
use edgejobs_core::stats::Metric;
use edgejobs_core::{ApiError, ErrorCode};
use futures_util::future::LocalBoxFuture;
use worker::{Env, Method, Request, Response, Result};

use crate::http;

pub mod admin;
pub mod dashboard;
pub mod dead;
pub mod flow;
pub mod health;
pub mod internal;
pub mod jobs;
pub mod live;
pub mod metrics;
pub mod schedules;
pub mod stats;
pub mod workflows;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: the route reads no key of the API (`/metrics` checks its own token).
    Anyone,
    /// A key with this scope: [`Scope::Jobs`] (a jobs or an admin key), [`Scope::Admin`], or
    /// [`Scope::Consumer`] (the token of the native consumers, which hold the leases).
    Key(Scope),
    /// A read route (#30): a `jobs` or admin key, or a read token for the job or tag read
    /// (see `routes::live`). These routes answer CORS (`ALLOWED_ORIGINS`).
    Reader,
}

const ANYONE: Access = Access::Anyone;
const JOBS: Access = Access::Key(Scope::Jobs);
const ADMIN: Access = Access::Key(Scope::Admin);
const CONSUMER: Access = Access::Key(Scope::Consumer);
const READER: Access = Access::Reader;

/// What a keyed route's handler gets: the request, the Worker's environment, the parsed
/// configuration, who called (the key passed the route's scope) and the path's one
/// `{capture}` (empty when the path has none).
#[derive(Debug)]
pub struct Call<'a> {
    pub req: &'a mut Request,
    pub env: &'a Env,
    pub cfg: &'a EdgeConfig,
    pub who: &'a Principal,
    pub param: &'a str,
    /// On a read route called with a read token: what the token grants (the `who` is then
    /// the token's tenant, without a key).
    pub grant: Option<&'a edgejobs_core::token::Grant>,
}

impl<'a> Call<'a> {
    /// The reader of a read route.
    fn reader(&self) -> live::Reader<'a> {
        live::Reader { who: self.who, grant: self.grant }
    }
}

/// An open route's handler: the answer and whether the request was authenticated.
type OpenFn = for<'a> fn(&'a Request, &'a Env, &'a str) -> LocalBoxFuture<'a, Result<(Response, bool)>>;

/// What a route runs.
#[derive(Clone, Copy)]
enum Handler {
    /// A route for anyone: it answers without the configuration (health still answers
    /// when the configuration is broken) and says whether the request carried a valid
    /// credential of its own.
    Open(OpenFn),
    /// A keyed route: runs once the key passed the route's scope.
    Keyed(for<'a> fn(Call<'a>) -> LocalBoxFuture<'a, jobs::Out>),
}

/// One row of the route table.
pub struct Route {
    pub method: Method,
    /// Literal segments and at most one `{capture}`, which matches any one segment.
    pub path: &'static str,
    pub access: Access,
    /// The route's name, a metric label (the same for every method of a path).
    pub name: &'static str,
    run: Handler,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {:?} {}", self.method.as_ref(), self.path, self.access, self.name)
    }
}

/// A keyed handler from an expression over `c: Call`.
macro_rules! keyed {
    (|$c:ident| $body:expr) => {{
        fn run<'a>($c: Call<'a>) -> LocalBoxFuture<'a, jobs::Out> {
            Box::pin(async move { $body })
        }
        Handler::Keyed(run)
    }};
}

/// A handler for anyone from an expression over the request, the environment and the
/// path's capture.
macro_rules! open {
    (|$req:ident, $env:ident, $param:ident| $body:expr) => {{
        fn run<'a>($req: &'a Request, $env: &'a Env, $param: &'a str) -> LocalBoxFuture<'a, Result<(Response, bool)>> {
            Box::pin(async move { $body })
        }
        Handler::Open(run)
    }};
}

const fn route(method: Method, path: &'static str, access: Access, name: &'static str, run: Handler) -> Route {
    Route { method, path, access, name, run }
}

/// An answer to anyone, which carried no credential.
fn anonymous(r: Result<Response>) -> Result<(Response, bool)> {
    r.map(|resp| (resp, false))
}

/// Every route: method, path, who may call it, its name and its handler. A path is served
/// by the first pattern that matches it (so `/v1/jobs/batch` comes before `/v1/jobs/{id}`);
/// the other methods of that pattern are the `Allow` of a 405. The order of a path's rows is
/// the order of its `Allow` header.
pub const ROUTES: &[Route] = {
    use Method::{Delete, Get, Patch, Post};
    use schedules::Action;
    &[
        route(Get, "/health", ANYONE, "health", open!(|req, env, _p| health::health(req, env).await)),
        route(Get, "/health/live", ANYONE, "live", open!(|_req, _env, _p| anonymous(health::live()))),
        route(Get, "/metrics", ANYONE, "metrics", open!(|req, env, _p| metrics::metrics(req, env).await)),
        // The dashboard's static files (no data: every figure it shows comes from the API,
        // with the key the browser session holds).
        route(
            Get,
            "/dashboard",
            ANYONE,
            "dashboard",
            open!(|_req, _env, _p| anonymous(dashboard::serve("index.html"))),
        ),
        route(
            Get,
            "/dashboard/{file}",
            ANYONE,
            "dashboard",
            open!(|_req, _env, file| anonymous(dashboard::serve(file))),
        ),
        route(Get, "/v1/stats", JOBS, "stats", keyed!(|c| stats::stats(c.req, c.env, c.cfg, c.who).await)),
        route(Get, "/v1/whoami", JOBS, "whoami", keyed!(|c| stats::whoami(c.who))),
        route(Get, "/v1/jobs", JOBS, "jobs", keyed!(|c| jobs::list(c.req, c.env, c.cfg, c.who).await)),
        route(Post, "/v1/jobs", JOBS, "jobs", keyed!(|c| jobs::create(c.req, c.env, c.cfg, c.who).await)),
        route(Post, "/v1/jobs/batch", JOBS, "batch", keyed!(|c| jobs::batch(c.req, c.env, c.cfg, c.who).await)),
        route(
            Get,
            "/v1/jobs/{id}",
            READER,
            "job",
            keyed!(|c| live::get(c.req, c.env, c.cfg, c.reader(), c.param).await),
        ),
        // Live results (#30).
        route(
            Get,
            "/v1/jobs/{id}/events",
            READER,
            "job_events",
            keyed!(|c| live::job_events(c.req, c.env, c.cfg, c.reader(), c.param).await),
        ),
        route(
            Post,
            "/v1/jobs/{id}/token",
            JOBS,
            "job_token",
            keyed!(|c| live::job_token(c.req, c.env, c.cfg, c.who, c.param).await),
        ),
        route(Post, "/v1/tokens", JOBS, "tokens", keyed!(|c| live::tag_token(c.req, c.cfg, c.who).await)),
        route(
            Post,
            "/v1/jobs/{id}/cancel",
            JOBS,
            "cancel",
            keyed!(|c| jobs::cancel(c.env, c.cfg, c.who, c.param).await),
        ),
        route(Post, "/v1/jobs/{id}/retry", JOBS, "retry", keyed!(|c| jobs::retry(c.env, c.cfg, c.who, c.param).await)),
        // Schedules: reads with a jobs key; writes need an admin key (a schedule enqueues
        // without end and outside any key's rate limit).
        route(Get, "/v1/schedules", JOBS, "schedules", keyed!(|c| schedules::list(c.req, c.env, c.cfg, c.who).await)),
        route(Post, "/v1/schedules", ADMIN, "schedules", keyed!(|c| schedules::create(c.req, c.env, c.cfg).await)),
        route(
            Get,
            "/v1/schedules/{name}",
            JOBS,
            "schedule",
            keyed!(|c| schedules::get(c.env, c.cfg, c.who, c.param).await),
        ),
        route(
            Patch,
            "/v1/schedules/{name}",
            ADMIN,
            "schedule",
            keyed!(|c| schedules::patch(c.req, c.env, c.cfg, c.param).await),
        ),
        route(
            Delete,
            "/v1/schedules/{name}",
            ADMIN,
            "schedule",
            keyed!(|c| schedules::delete(c.env, c.cfg, c.param).await),
        ),
        route(
            Post,
            "/v1/schedules/{name}/pause",
            ADMIN,
            "schedule_action",
            keyed!(|c| schedules::act(c.env, c.cfg, c.param, Action::Pause).await),
        ),
        route(
            Post,
            "/v1/schedules/{name}/resume",
            ADMIN,
            "schedule_action",
            keyed!(|c| schedules::act(c.env, c.cfg, c.param, Action::Resume).await),
        ),
        route(
            Post,
            "/v1/schedules/{name}/trigger",
            ADMIN,
            "schedule_action",
            keyed!(|c| schedules::act(c.env, c.cfg, c.param, Action::Trigger).await),
        ),
        // Flow control (#28): a key's state and the busiest keys are reads of a jobs key
        // (its own tenant's); pausing is an admin action.
        route(Get, "/v1/flow", JOBS, "flow", keyed!(|c| flow::key(c.req, c.env, c.cfg, c.who).await)),
        route(
            Get,
            "/v1/flow/busiest",
            JOBS,
            "flow_busiest",
            keyed!(|c| flow::busiest(c.req, c.env, c.cfg, c.who).await),
        ),
        route(
            Post,
            "/v1/admin/flow/pause",
            ADMIN,
            "flow_pause",
            keyed!(|c| flow::pause(c.req, c.env, c.cfg, true).await),
        ),
        route(
            Post,
            "/v1/admin/flow/resume",
            ADMIN,
            "flow_pause",
            keyed!(|c| flow::pause(c.req, c.env, c.cfg, false).await),
        ),
        // Workflow events (#29): a jobs key sends its own tenant's events.
        // One name for the path's methods (a metric label): sends and subscriptions.
        route(Post, "/v1/events", JOBS, "events_send", keyed!(|c| workflows::send(c.req, c.env, c.cfg, c.who).await)),
        route(
            Get,
            "/v1/events",
            READER,
            "events_send",
            keyed!(|c| live::many_events(c.req, c.env, c.cfg, c.reader()).await),
        ),
        route(Get, "/v1/dead", JOBS, "dead", keyed!(|c| dead::list(c.req, c.env, c.cfg, c.who).await)),
        // Bulk replay is admin-only; replaying one job is a jobs action (`/v1/jobs/{id}/retry`).
        route(Post, "/v1/dead/replay", ADMIN, "dead_replay", keyed!(|c| dead::replay(c.req, c.env, c.cfg).await)),
        route(
            Post,
            "/v1/internal/events",
            CONSUMER,
            "reports",
            keyed!(|c| internal::reports(c.req, c.env, c.cfg, c.who).await),
        ),
        route(
            Post,
            "/v1/internal/jobs/{id}/events",
            CONSUMER,
            "events",
            keyed!(|c| internal::event(c.req, c.env, c.cfg, c.who, c.param).await),
        ),
        route(Get, "/v1/admin/backups", ADMIN, "backups", keyed!(|c| admin::list(c.env).await)),
        route(Post, "/v1/admin/backups", ADMIN, "backups", keyed!(|c| admin::start(c.env, c.cfg).await)),
        route(Get, "/v1/admin/backups/latest", ADMIN, "latest_backup", keyed!(|c| admin::latest(c.env).await)),
        route(
            Post,
            "/v1/admin/backups/{id}/verify",
            ADMIN,
            "verify_backup",
            keyed!(|c| admin::verify(c.env, c.param).await),
        ),
        route(Post, "/v1/admin/restore", ADMIN, "restore", keyed!(|c| admin::restore(c.req, c.env, c.cfg).await)),
        route(
            Post,
            "/v1/admin/webhook-secret",
            ADMIN,
            "webhook_secret",
            keyed!(|c| admin::webhook_secret(c.req, c.cfg).await),
        ),
        route(Post, "/v1/admin/reseal", ADMIN, "reseal", keyed!(|c| admin::reseal(c.req, c.env, c.cfg).await)),
    ]
};

/// The segments of a path or a pattern (a trailing `/` is ignored).
fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.trim_end_matches('/').split('/').skip(1)
}

/// The capture of `path` if it matches `pattern` (`Some("")` when the pattern has none).
fn matches<'p>(pattern: &str, path: &'p str) -> Option<&'p str> {
    let (mut pat, mut got) = (segments(pattern), segments(path));
    let mut param = "";
    loop {
        match (pat.next(), got.next()) {
            (None, None) => return Some(param),
            (Some(p), Some(g)) if p.starts_with('{') && p.ends_with('}') => param = g,
            (Some(p), Some(g)) if p == g => {}
            _ => return None,
        }
    }
}

/// The rows of the first pattern that matches `path` (one per method, in table order), and
/// the path's capture.
fn resolve(path: &str) -> Option<(Vec<&'static Route>, &str)> {
    let (pattern, param) = ROUTES.iter().find_map(|r| matches(r.path, path).map(|p| (r.path, p)))?;
    Some((ROUTES.iter().filter(|r| r.path == pattern).collect(), param))
}

/// Serves one request. The invocation and, for enqueues, the answer's status are counted
/// in this isolate's counters, which the next shard call carries (or a flush a second
/// later): counting never costs a call of its own on the request path.
pub async fn handle(req: Request, env: Env, ctx: &worker::Context) -> Result<Response> {
    // A request through a service binding carries the props its binding was declared with
    // (#31); one from the internet carries none, and nothing in a request can set them.
    let binding = ctx.props::<BindingProps>().ok().and_then(|p| p.tenant);
    let path = req.path();
    let route = resolve(&path).map_or("unknown", |(rows, _)| rows[0].name);
    crate::counters::invocation("fetch", route);
    let counted = req.method() == Method::Post && matches!(route, "jobs" | "batch");
    let (resp, authenticated) = route_request(req, env.clone(), binding.as_deref()).await?;
    if counted {
        let status = resp.status_code();
        crate::counters::add(Metric::EnqueueRequestsTotal, &[("status", &status.to_string())], 1.0);
        if status == 429 {
            crate::counters::add(Metric::RateLimitedTotal, &[], 1.0);
        }
    }
    let limiter_errors = crate::ratelimit::take_failures();
    if limiter_errors > 0 {
        crate::counters::add(Metric::RateLimiterErrorsTotal, &[], limiter_errors as f64);
    }
    // Only an authenticated request may lead to a write of its own (the flush): anonymous
    // traffic costs no Durable Object write; its counts wait for a write that happens anyway.
    if authenticated {
        let shard_count = crate::config::load(&env).map_or(16, |c| c.shard_count);
        if let Some(flush) = crate::gauges::flush_later(&env, shard_count) {
            ctx.wait_until(flush);
        }
    }
    Ok(resp)
}

/// The props of a service binding to edgejobs (`[[services]] ... props = { tenant = "acme" }`
/// in the calling Worker's `wrangler.toml`): the tenant it acts for.
#[derive(Debug, serde::Deserialize)]
struct BindingProps {
    tenant: Option<String>,
}

/// Answers a request; the flag says whether it carried a valid key (or came through a
/// service binding naming `binding` as its tenant).
async fn route_request(mut req: Request, env: Env, binding: Option<&str>) -> Result<(Response, bool)> {
    let path = req.path();
    let Some((rows, param)) = resolve(&path) else {
        let shown: String = path.chars().take(200).collect();
        return anonymous(http::error(&ApiError::new(ErrorCode::NotFound, format!("no route for {shown}"))));
    };
    let method = req.method();
    if req.inner().method().eq_ignore_ascii_case("OPTIONS") && rows.iter().any(|r| r.access == Access::Reader) {
        return match crate::topology::load(&env).await {
            Ok(cfg) => anonymous(live::preflight(&req, &cfg)),
            Err(e) => anonymous(http::error(&e)),
        };
    }
    // workers-rs reads a method it does not know (QUERY, PROPFIND, FOO) as GET; such a
    // request must be refused like any other method the route lacks, not served as a read.
    let raw = req.inner().method();
    let row = rows.iter().find(|r| r.method == method).filter(|_| raw.eq_ignore_ascii_case(method.as_ref()));
    let Some(row) = row else {
        let allow: Vec<&str> = rows.iter().map(|r| r.method.as_ref()).collect();
        let shown: String = raw.chars().take(32).collect();
        let e = ApiError::new(
            ErrorCode::MethodNotAllowed,
            format!("{shown} is not allowed on {path}; allowed: {}", allow.join(", ")),
        );
        let mut resp = http::error(&e)?;
        resp.headers_mut().set("allow", &allow.join(", "))?;
        return Ok((resp, false));
    };
    let (scope, run) = match (row.access, row.run) {
        (_, Handler::Open(run)) => return run(&req, &env, param).await,
        (Access::Key(scope), Handler::Keyed(run)) => (scope, run),
        (Access::Reader, Handler::Keyed(run)) => (Scope::Jobs, run),
        (Access::Anyone, Handler::Keyed(_)) => {
            return anonymous(http::error(&ApiError::new(ErrorCode::Internal, "a keyed route without a scope")));
        }
    };
    let cfg = match crate::topology::load(&env).await {
        Ok(c) => c,
        Err(e) => return anonymous(http::error(&e)),
    };
    if row.access == Access::Reader {
        let origin = live::request_origin(&req);
        let (resp, authenticated) = read_route(&mut req, &env, &cfg, param, run, binding).await?;
        return Ok((live::with_cors(resp, origin.as_deref(), &cfg), authenticated));
    }
    let who = match http::authorize_as(&req, scope, &cfg, binding) {
        Ok(p) => p,
        Err(e) => return anonymous(http::error(&e)),
    };
    // Reads are rate limited per key too: each keyed GET counts in the key's read window
    // (ten times its enqueue limit; see `ratelimit::admit_read`), before any work is done.
    if method == Method::Get {
        match crate::ratelimit::admit_read(&cfg, &who).await {
            Ok(Some(d)) if !d.allowed => return crate::ratelimit::refusal_of(&d, "reads").map(|r| (r, true)),
            Ok(_) => {}
            Err(e) => return http::error(&e).map(|r| (r, true)),
        }
    }
    let call = Call { req: &mut req, env: &env, cfg: &cfg, who: &who, param, grant: None };
    match run(call).await {
        Ok(resp) => Ok((resp, true)),
        Err(e) => http::error(&e).map(|r| (r, true)),
    }
}

/// A read route (#30): a read token (`?token=` or `Authorization: Bearer ejr_...`) reads
/// what it grants, without a key and outside the keys' read limits (it is short-lived and
/// covers one job or tag); otherwise the route takes a `jobs` key like any other.
async fn read_route(
    req: &mut Request,
    env: &Env,
    cfg: &EdgeConfig,
    param: &str,
    run: for<'a> fn(Call<'a>) -> LocalBoxFuture<'a, jobs::Out>,
    binding: Option<&str>,
) -> Result<(Response, bool)> {
    let (who, grant) = match live::presented_token(req) {
        Some(t) => match edgejobs_core::token::verify(&t, &cfg.webhook_secret, crate::platform::now_ms()) {
            Ok(g) => {
                let who = Principal {
                    key_id: "read-token".into(),
                    limit: None,
                    sees: edgejobs_core::tenant::Sees::Tenant(g.tenant.clone()),
                    consumer: None,
                };
                (who, Some(g))
            }
            Err(e) => return anonymous(http::error(&e)),
        },
        None => match http::authorize_as(req, Scope::Jobs, cfg, binding) {
            Ok(p) => {
                match crate::ratelimit::admit_read(cfg, &p).await {
                    Ok(Some(d)) if !d.allowed => return crate::ratelimit::refusal_of(&d, "reads").map(|r| (r, true)),
                    Ok(_) => {}
                    Err(e) => return http::error(&e).map(|r| (r, true)),
                }
                (p, None)
            }
            Err(e) => return anonymous(http::error(&e)),
        },
    };
    let call = Call { req, env, cfg, who: &who, param, grant: grant.as_ref() };
    match run(call).await {
        Ok(resp) => Ok((resp, true)),
        Err(e) => http::error(&e).map(|r| (r, true)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (path, the route's name, its capture, the `Allow` of its path, the scope of each method).
    type Case = (&'static str, &'static str, &'static str, &'static str, &'static [Option<Scope>]);

    const CASES: &[Case] = &[
        ("/health", "health", "", "GET", &[None]),
        ("/health/live", "live", "", "GET", &[None]),
        ("/metrics", "metrics", "", "GET", &[None]),
        ("/dashboard", "dashboard", "", "GET", &[None]),
        ("/dashboard/", "dashboard", "", "GET", &[None]),
        ("/dashboard/app.js", "dashboard", "app.js", "GET", &[None]),
        ("/v1/stats", "stats", "", "GET", &[Some(Scope::Jobs)]),
        ("/v1/jobs", "jobs", "", "GET, POST", &[Some(Scope::Jobs), Some(Scope::Jobs)]),
        ("/v1/jobs/", "jobs", "", "GET, POST", &[Some(Scope::Jobs), Some(Scope::Jobs)]),
        ("/v1/jobs/batch", "batch", "", "POST", &[Some(Scope::Jobs)]),
        ("/v1/jobs/j01", "job", "j01", "GET", &[Some(Scope::Jobs)]),
        ("/v1/jobs/j01/cancel", "cancel", "j01", "POST", &[Some(Scope::Jobs)]),
        ("/v1/schedules", "schedules", "", "GET, POST", &[Some(Scope::Jobs), Some(Scope::Admin)]),
        (
            "/v1/schedules/nightly",
            "schedule",
            "nightly",
            "GET, PATCH, DELETE",
            &[Some(Scope::Jobs), Some(Scope::Admin), Some(Scope::Admin)],
        ),
        ("/v1/schedules/nightly/trigger", "schedule_action", "nightly", "POST", &[Some(Scope::Admin)]),
        ("/v1/dead/replay", "dead_replay", "", "POST", &[Some(Scope::Admin)]),
        ("/v1/internal/events", "reports", "", "POST", &[Some(Scope::Consumer)]),
        ("/v1/internal/jobs/j01/events", "events", "j01", "POST", &[Some(Scope::Consumer)]),
        ("/v1/admin/backups", "backups", "", "GET, POST", &[Some(Scope::Admin), Some(Scope::Admin)]),
        ("/v1/admin/backups/latest", "latest_backup", "", "GET", &[Some(Scope::Admin)]),
        ("/v1/admin/backups/b1/verify", "verify_backup", "b1", "POST", &[Some(Scope::Admin)]),
        ("/v1/admin/reseal", "reseal", "", "POST", &[Some(Scope::Admin)]),
        ("/v1/flow", "flow", "", "GET", &[Some(Scope::Jobs)]),
        ("/v1/flow/busiest", "flow_busiest", "", "GET", &[Some(Scope::Jobs)]),
        ("/v1/admin/flow/pause", "flow_pause", "", "POST", &[Some(Scope::Admin)]),
        ("/v1/admin/flow/resume", "flow_pause", "", "POST", &[Some(Scope::Admin)]),
        ("/v1/events", "events_send", "", "POST, GET", &[Some(Scope::Jobs), Some(Scope::Jobs)]),
        ("/v1/jobs/j01/events", "job_events", "j01", "GET", &[Some(Scope::Jobs)]),
        ("/v1/jobs/j01/token", "job_token", "j01", "POST", &[Some(Scope::Jobs)]),
        ("/v1/tokens", "tokens", "", "POST", &[Some(Scope::Jobs)]),
    ];

    fn scope(a: Access) -> Option<Scope> {
        match a {
            Access::Anyone => None,
            Access::Key(s) => Some(s),
            // A read route takes a jobs key (or a read token, which is no key).
            Access::Reader => Some(Scope::Jobs),
        }
    }

    #[test]
    fn paths_resolve_to_their_route_methods_and_scopes() {
        for (path, name, param, allow, scopes) in CASES {
            let (rows, got) = resolve(path).unwrap_or_else(|| panic!("{path} resolves"));
            assert_eq!((rows[0].name, got), (*name, *param), "{path}");
            let methods: Vec<&str> = rows.iter().map(|r| r.method.as_ref()).collect();
            assert_eq!(methods.join(", "), *allow, "{path}");
            assert_eq!(rows.iter().map(|r| scope(r.access)).collect::<Vec<_>>(), *scopes, "{path}");
        }
        for path in ["/", "", "/v1", "/v1/jobs/j01/nope", "/healthz", "/v1/admin", "/dashboard/a/b"] {
            assert!(resolve(path).is_none(), "{path} is no route");
        }
    }

    #[test]
    fn the_table_is_consistent() {
        for (i, r) in ROUTES.iter().enumerate() {
            // Only routes for anyone skip the key check, and they are exactly the open ones.
            assert_eq!(r.access == Access::Anyone, matches!(r.run, Handler::Open(_)), "{r:?}");
            assert!(segments(r.path).filter(|s| s.starts_with('{')).count() <= 1, "{r:?}: one capture at most");
            assert!(!ROUTES[..i].iter().any(|o| o.path == r.path && o.method == r.method), "{r:?} twice");
            assert!(ROUTES.iter().filter(|o| o.path == r.path).all(|o| o.name == r.name), "{r:?}: one name a path");
            // No earlier pattern shadows this one.
            let concrete: String = segments(r.path)
                .map(|s| if s.starts_with('{') { "x" } else { s })
                .fold(String::new(), |acc, s| acc + "/" + s);
            assert_eq!(resolve(&concrete).map(|(rows, _)| rows[0].path), Some(r.path), "{r:?}");
        }
    }
}
