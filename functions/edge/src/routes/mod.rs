//! The router: matches method and path, checks the route's auth scope, and turns every
//! [`ApiError`] into its JSON error response. Unknown paths answer 404 `not_found`; a known
//! path with another method answers 405 `method_not_allowed` with an `Allow` header.

use edgejobs_core::auth::Scope;
use edgejobs_core::{ApiError, ErrorCode};
use worker::{Env, Method, Request, Response, Result};

use crate::http;

pub mod admin;
pub mod dashboard;
pub mod dead;
pub mod health;
pub mod internal;
pub mod jobs;
pub mod metrics;
pub mod schedules;
pub mod stats;

/// What a path resolves to.
#[derive(Debug, Clone, Copy)]
enum Route<'a> {
    Health,
    Live,
    Metrics,
    Dashboard(&'a str),
    Stats,
    Whoami,
    Jobs,
    Batch,
    Job(&'a str),
    Cancel(&'a str),
    Retry(&'a str),
    Dead,
    DeadReplay,
    Events(&'a str),
    Reports,
    Backups,
    LatestBackup,
    VerifyBackup(&'a str),
    Restore,
    WebhookSecret,
    Schedules,
    Schedule(&'a str),
    ScheduleAction(&'a str, schedules::Action),
}

/// The route, the methods it allows, and the scope it needs (`None`: public).
fn resolve(path: &str) -> Option<(Route<'_>, &'static [Method], Option<Scope>)> {
    use Method::{Delete, Get, Patch, Post};
    use schedules::Action;
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let jobs = Some(Scope::Jobs);
    Some(match segs.as_slice() {
        ["health"] => (Route::Health, &[Get], None),
        ["health", "live"] => (Route::Live, &[Get], None),
        ["metrics"] => (Route::Metrics, &[Get], None),
        // The dashboard's static files (no data: every figure it shows comes from the API,
        // with the key the browser session holds).
        ["dashboard"] => (Route::Dashboard("index.html"), &[Get], None),
        ["dashboard", file] => (Route::Dashboard(file), &[Get], None),
        ["v1", "stats"] => (Route::Stats, &[Get], jobs),
        ["v1", "whoami"] => (Route::Whoami, &[Get], jobs),
        ["v1", "jobs"] => (Route::Jobs, &[Get, Post], jobs),
        ["v1", "jobs", "batch"] => (Route::Batch, &[Post], jobs),
        ["v1", "jobs", id] => (Route::Job(id), &[Get], jobs),
        ["v1", "jobs", id, "cancel"] => (Route::Cancel(id), &[Post], jobs),
        ["v1", "jobs", id, "retry"] => (Route::Retry(id), &[Post], jobs),
        // Schedules: reads with a jobs key; writes need an admin key (see `write_scope`).
        ["v1", "schedules"] => (Route::Schedules, &[Get, Post], jobs),
        ["v1", "schedules", name] => (Route::Schedule(name), &[Get, Patch, Delete], jobs),
        ["v1", "schedules", name, "pause"] => (Route::ScheduleAction(name, Action::Pause), &[Post], jobs),
        ["v1", "schedules", name, "resume"] => (Route::ScheduleAction(name, Action::Resume), &[Post], jobs),
        ["v1", "schedules", name, "trigger"] => (Route::ScheduleAction(name, Action::Trigger), &[Post], jobs),
        ["v1", "dead"] => (Route::Dead, &[Get], jobs),
        ["v1", "dead", "replay"] => (Route::DeadReplay, &[Post], Some(Scope::Admin)),
        ["v1", "internal", "events"] => (Route::Reports, &[Post], Some(Scope::Consumer)),
        ["v1", "internal", "jobs", id, "events"] => (Route::Events(id), &[Post], Some(Scope::Consumer)),
        ["v1", "admin", "backups"] => (Route::Backups, &[Get, Post], Some(Scope::Admin)),
        ["v1", "admin", "backups", "latest"] => (Route::LatestBackup, &[Get], Some(Scope::Admin)),
        ["v1", "admin", "backups", id, "verify"] => (Route::VerifyBackup(id), &[Post], Some(Scope::Admin)),
        ["v1", "admin", "restore"] => (Route::Restore, &[Post], Some(Scope::Admin)),
        ["v1", "admin", "webhook-secret"] => (Route::WebhookSecret, &[Post], Some(Scope::Admin)),
        _ => return None,
    })
}

impl Route<'_> {
    /// The route's name, a metric label.
    fn name(&self) -> &'static str {
        match self {
            Route::Health => "health",
            Route::Live => "live",
            Route::Metrics => "metrics",
            Route::Dashboard(_) => "dashboard",
            Route::Stats => "stats",
            Route::Whoami => "whoami",
            Route::Jobs => "jobs",
            Route::Batch => "batch",
            Route::Job(_) => "job",
            Route::Cancel(_) => "cancel",
            Route::Retry(_) => "retry",
            Route::Dead => "dead",
            Route::DeadReplay => "dead_replay",
            Route::Events(_) => "events",
            Route::Reports => "reports",
            Route::Backups => "backups",
            Route::LatestBackup => "latest_backup",
            Route::VerifyBackup(_) => "verify_backup",
            Route::Restore => "restore",
            Route::WebhookSecret => "webhook_secret",
            Route::Schedules => "schedules",
            Route::Schedule(_) => "schedule",
            Route::ScheduleAction(..) => "schedule_action",
        }
    }
}

/// Serves one request. The invocation and, for enqueues, the answer's status are counted
/// in this isolate's counters, which the next shard call carries (or a flush a second
/// later): counting never costs a call of its own on the request path.
pub async fn handle(req: Request, env: Env, ctx: &worker::Context) -> Result<Response> {
    let path = req.path();
    let route = resolve(&path).map_or("unknown", |(r, _, _)| r.name());
    crate::counters::invocation("fetch", route);
    let counted = req.method() == Method::Post && matches!(route, "jobs" | "batch");
    let (resp, authenticated) = route_request(req, env.clone()).await?;
    if counted {
        let status = resp.status_code();
        crate::counters::add("edgejobs_enqueue_requests_total", &[("status", &status.to_string())], 1.0);
        if status == 429 {
            crate::counters::add("edgejobs_rate_limited_total", &[], 1.0);
        }
    }
    let limiter_errors = crate::ratelimit::take_failures();
    if limiter_errors > 0 {
        crate::counters::add("edgejobs_rate_limiter_errors_total", &[], limiter_errors as f64);
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

/// Answers a request; the flag says whether it carried a valid key.
async fn route_request(req: Request, env: Env) -> Result<(Response, bool)> {
    let anonymous = |r: Result<Response>| r.map(|resp| (resp, false));
    let path = req.path();
    let Some((route, methods, scope)) = resolve(&path) else {
        let shown: String = path.chars().take(200).collect();
        return anonymous(http::error(&ApiError::new(ErrorCode::NotFound, format!("no route for {shown}"))));
    };
    route_known(req, env, route, methods, scope).await
}

async fn route_known(
    mut req: Request,
    env: Env,
    route: Route<'_>,
    methods: &[Method],
    scope: Option<Scope>,
) -> Result<(Response, bool)> {
    let anonymous = |r: Result<Response>| r.map(|resp| (resp, false));
    let path = req.path();
    let method = req.method();
    // workers-rs reads a method it does not know (QUERY, PROPFIND, FOO) as GET; such a
    // request must be refused like any other method the route lacks, not served as a read.
    let raw = req.inner().method();
    if !methods.contains(&method) || !raw.eq_ignore_ascii_case(method.as_ref()) {
        let allow: Vec<&str> = methods.iter().map(|m| m.as_ref()).collect();
        let shown: String = raw.chars().take(32).collect();
        let e = ApiError::new(
            ErrorCode::MethodNotAllowed,
            format!("{shown} is not allowed on {path}; allowed: {}", allow.join(", ")),
        );
        let mut resp = http::error(&e)?;
        resp.headers_mut().set("allow", &allow.join(", "))?;
        return Ok((resp, false));
    }
    match route {
        Route::Health => return health::health(&req, &env).await,
        Route::Live => return anonymous(health::live()),
        Route::Metrics => return metrics::metrics(&req, &env).await,
        Route::Dashboard(file) => return anonymous(dashboard::serve(file)),
        _ => {}
    }
    let cfg = match crate::config::load(&env) {
        Ok(c) => c,
        Err(e) => return anonymous(http::error(&e)),
    };
    let scope = write_scope(route, &method).or(scope);
    let principal = match scope.map(|s| http::authorize(&req, s, &cfg)) {
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => return anonymous(http::error(&e)),
        None => None,
    };
    let out = match (route, principal) {
        (Route::Jobs, Some(who)) if method == Method::Post => jobs::create(&mut req, &env, &cfg, &who).await,
        (Route::Batch, Some(who)) => jobs::batch(&mut req, &env, &cfg, &who).await,
        (Route::Backups, _) if method == Method::Post => admin::start(&env, &cfg).await,
        (Route::Schedules, _) if method == Method::Post => schedules::create(&mut req, &env, &cfg).await,
        (Route::Schedule(name), _) if method == Method::Patch => schedules::patch(&mut req, &env, &cfg, name).await,
        (Route::Schedule(name), _) if method == Method::Delete => schedules::delete(&env, &cfg, name).await,
        (route, _) => dispatch(route, &mut req, &env, &cfg).await,
    };
    let authenticated = scope.is_some();
    match out {
        Ok(resp) => Ok((resp, authenticated)),
        Err(e) => http::error(&e).map(|r| (r, authenticated)),
    }
}

/// The scope a write needs where it differs from the route's read scope: changing a
/// schedule needs an admin key.
fn write_scope(route: Route<'_>, method: &Method) -> Option<Scope> {
    let schedule = matches!(route, Route::Schedules | Route::Schedule(_) | Route::ScheduleAction(..));
    (schedule && *method != Method::Get).then_some(Scope::Admin)
}

async fn dispatch(
    route: Route<'_>,
    req: &mut Request,
    env: &Env,
    cfg: &edgejobs_core::config::EdgeConfig,
) -> jobs::Out {
    match route {
        Route::Stats => stats::stats(env, cfg).await,
        Route::Whoami => stats::whoami(req, cfg),
        Route::Jobs => jobs::list(req, env, cfg).await,
        Route::Job(id) => jobs::get(env, cfg, id).await,
        Route::Cancel(id) => jobs::cancel(env, cfg, id).await,
        Route::Retry(id) => jobs::retry(env, cfg, id).await,
        Route::Dead => dead::list(req, env, cfg).await,
        Route::DeadReplay => dead::replay(req, env, cfg).await,
        Route::Events(id) => internal::event(req, env, cfg, id).await,
        Route::Reports => internal::reports(req, env, cfg).await,
        Route::Backups => admin::list(env).await,
        Route::LatestBackup => admin::latest(env).await,
        Route::VerifyBackup(id) => admin::verify(env, id).await,
        Route::Restore => admin::restore(req, env, cfg).await,
        Route::WebhookSecret => admin::webhook_secret(req, cfg).await,
        Route::Schedules => schedules::list(req, env, cfg).await,
        Route::Schedule(name) => schedules::get(env, cfg, name).await,
        Route::ScheduleAction(name, action) => schedules::act(env, cfg, name, action).await,
        Route::Health | Route::Live | Route::Metrics | Route::Dashboard(_) | Route::Batch => {
            Err(ApiError::new(ErrorCode::Internal, "route dispatch error"))
        }
    }
}
