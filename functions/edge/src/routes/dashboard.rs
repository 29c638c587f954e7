//! `GET /dashboard` and its two files: plain HTML, CSS and JS compiled into the Worker
//! (`functions/edge/dashboard/`). They hold no data and no secret: the page asks for an API
//! key, keeps it in the tab's `sessionStorage`, and reads and acts only through the public
//! API with it. Nothing outside this origin is loaded: the Content-Security-Policy allows
//! scripts, styles and requests to `'self'` only (no inline script or style).

use edgejobs_core::{ApiError, ErrorCode};
use worker::{Response, Result};

use crate::http;

/// The policy every dashboard file is served with.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const FILES: &[(&str, &str, &str)] = &[
    ("index.html", "text/html; charset=utf-8", include_str!("../../dashboard/index.html")),
    ("app.js", "text/javascript; charset=utf-8", include_str!("../../dashboard/app.js")),
    ("app.css", "text/css; charset=utf-8", include_str!("../../dashboard/app.css")),
];

/// One of the dashboard's files, or 404 `not_found`.
pub fn serve(file: &str) -> Result<Response> {
    let Some((_, content_type, body)) = FILES.iter().find(|(name, _, _)| *name == file) else {
        let shown: String = file.chars().take(64).collect();
        return http::error(&ApiError::new(ErrorCode::NotFound, format!("no dashboard file {shown:?}")));
    };
    let mut resp = Response::ok(*body)?;
    let h = resp.headers_mut();
    h.set("content-type", content_type)?;
    h.set("content-security-policy", CSP)?;
    h.set("x-content-type-options", "nosniff")?;
    h.set("referrer-policy", "no-referrer")?;
    h.set("x-frame-options", "DENY")?;
    // The files change with each deploy: revalidate instead of caching a stale page.
    h.set("cache-control", "no-cache")?;
    Ok(resp)
}
