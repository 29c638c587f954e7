//! The router: matches method and path, checks the route's auth scope, and turns every
//! [`ApiError`] into its JSON error response. Unknown paths answer 404 `not_found`; a known
//! path with another method answers 405 `method_not_allowed` with an `Allow` header.

use edgejobs_core::auth::Scope;
use edgejobs_core::{ApiError, ErrorCode};
use worker::{Env, Method, Request, Response, Result};

use crate::http;

pub mod dead;
pub mod health;
pub mod internal;
pub mod jobs;

/// What a path resolves to.
#[derive(Debug, Clone, Copy)]
enum Route<'a> {
    Health,
    Live,
    Jobs,
    Batch,
    Job(&'a str),
    Cancel(&'a str),
    Retry(&'a str),
    Dead,
    DeadReplay,
    Events(&'a str),
}

/// The route, the methods it allows, and the scope it needs (`None`: public).
fn resolve(path: &str) -> Option<(Route<'_>, &'static [Method], Option<Scope>)> {
    use Method::{Get, Post};
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let jobs = Some(Scope::Jobs);
    Some(match segs.as_slice() {
        ["health"] => (Route::Health, &[Get], None),
        ["health", "live"] => (Route::Live, &[Get], None),
        ["v1", "jobs"] => (Route::Jobs, &[Get, Post], jobs),
        ["v1", "jobs", "batch"] => (Route::Batch, &[Post], jobs),
        ["v1", "jobs", id] => (Route::Job(id), &[Get], jobs),
        ["v1", "jobs", id, "cancel"] => (Route::Cancel(id), &[Post], jobs),
        ["v1", "jobs", id, "retry"] => (Route::Retry(id), &[Post], jobs),
        ["v1", "dead"] => (Route::Dead, &[Get], jobs),
        ["v1", "dead", "replay"] => (Route::DeadReplay, &[Post], Some(Scope::Admin)),
        ["v1", "internal", "jobs", id, "events"] => (Route::Events(id), &[Post], Some(Scope::Consumer)),
        _ => return None,
    })
}

/// Serves one request.
pub async fn handle(mut req: Request, env: Env) -> Result<Response> {
    let path = req.path();
    let Some((route, methods, scope)) = resolve(&path) else {
        return http::error(&ApiError::new(ErrorCode::NotFound, format!("no route for {path}")));
    };
    let method = req.method();
    if !methods.contains(&method) {
        let allow: Vec<&str> = methods.iter().map(|m| m.as_ref()).collect();
        let e = ApiError::new(
            ErrorCode::MethodNotAllowed,
            format!("{} is not allowed on {path}; allowed: {}", method.as_ref(), allow.join(", ")),
        );
        let mut resp = http::error(&e)?;
        resp.headers_mut().set("allow", &allow.join(", "))?;
        return Ok(resp);
    }
    match route {
        Route::Health => return health::health(&env).await,
        Route::Live => return health::live(),
        _ => {}
    }
    let cfg = match crate::config::load(&env) {
        Ok(c) => c,
        Err(e) => return http::error(&e),
    };
    let principal = match scope.map(|s| http::authorize(&req, s, &cfg)) {
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => return http::error(&e),
        None => None,
    };
    let out = match (route, principal) {
        (Route::Jobs, Some(who)) if method == Method::Post => jobs::create(&mut req, &env, &cfg, &who).await,
        (Route::Batch, Some(who)) => jobs::batch(&mut req, &env, &cfg, &who).await,
        (route, _) => dispatch(route, &mut req, &env, &cfg).await,
    };
    match out {
        Ok(resp) => Ok(resp),
        Err(e) => http::error(&e),
    }
}

async fn dispatch(
    route: Route<'_>,
    req: &mut Request,
    env: &Env,
    cfg: &edgejobs_core::config::EdgeConfig,
) -> jobs::Out {
    match route {
        Route::Jobs => jobs::list(req, env, cfg).await,
        Route::Job(id) => jobs::get(env, id).await,
        Route::Cancel(id) => jobs::cancel(env, id).await,
        Route::Retry(id) => jobs::retry(env, id).await,
        Route::Dead => dead::list(req, env, cfg).await,
        Route::DeadReplay => dead::replay(req, env, cfg).await,
        Route::Events(id) => internal::event(req, env, id).await,
        Route::Health | Route::Live | Route::Batch => Err(ApiError::new(ErrorCode::Internal, "route dispatch error")),
    }
}
