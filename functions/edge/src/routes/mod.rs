//! The router: matches method and path, checks auth, and turns every [`ApiError`] into its
//! JSON error response. Unknown paths answer 404 `not_found`, known paths with another
//! method 405 `method_not_allowed` with an `Allow` header.

use edgejobs_core::auth::Scope;
use edgejobs_core::{ApiError, ErrorCode};
use worker::{Env, Method, Request, Response, Result};

use crate::http;

pub mod health;
pub mod jobs;

/// What a path resolves to.
enum Route<'a> {
    Health,
    Jobs,
    Job(&'a str),
}

fn resolve(path: &str) -> Option<(Route<'_>, &'static [Method])> {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    Some(match segs.as_slice() {
        ["health"] => (Route::Health, &[Method::Get]),
        ["v1", "jobs"] => (Route::Jobs, &[Method::Post]),
        ["v1", "jobs", id] => (Route::Job(id), &[Method::Get]),
        _ => return None,
    })
}

/// Serves one request.
pub async fn handle(mut req: Request, env: Env) -> Result<Response> {
    let path = req.path();
    let Some((route, methods)) = resolve(&path) else {
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
    let out = match route {
        Route::Health => return health::health(&env).await,
        Route::Jobs | Route::Job(_) => {
            let cfg = match crate::config::load(&env) {
                Ok(c) => c,
                Err(e) => return http::error(&e),
            };
            if let Err(e) = http::authorize(&req, Scope::Jobs, &cfg) {
                return http::error(&e);
            }
            match route {
                Route::Jobs => jobs::create(&mut req, &env, &cfg).await,
                Route::Job(id) => jobs::get(&env, id).await,
                Route::Health => unreachable_route(),
            }
        }
    };
    match out {
        Ok(resp) => Ok(resp),
        Err(e) => http::error(&e),
    }
}

fn unreachable_route() -> std::result::Result<Response, ApiError> {
    Err(ApiError::new(ErrorCode::Internal, "route dispatch error"))
}
