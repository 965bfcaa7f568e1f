//! The page, built from `web/embed/` by Vite into `web/embed/dist/` and embedded here.
//!
//! Vite writes `index.html` (served at `/`) and hashed bundles under `static/` (served at
//! `/static/*` with a year-long immutable cache). When the page was not built, `/` answers a
//! short HTML page saying how to build it, so `cargo build` never depends on npm.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_embed::Embed;

#[derive(Embed)]
#[folder = "../../web/embed/dist"]
#[allow_missing = true]
struct Dist;

/// Content-Security-Policy for the page: only our own scripts, styles and socket.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'";

const NOT_BUILT: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>vitals-embed: page not built</title></head><body style=\"font-family:sans-serif;\
background:#111827;color:#e5e7eb;padding:2rem\"><h1>Dashboard page not built</h1>\
<p>The dashboard's API (<a style=\"color:#93c5fd\" href=\"api/metrics\">/api/metrics</a>) and \
WebSocket (<code>/ws</code>) are running, but the web page was not built into this binary.</p>\
<p>Build it from the repository root, then rebuild the application:</p>\
<pre>npm --prefix web/embed install &amp;&amp; npm --prefix web/embed run build</pre></body></html>";

pub(crate) fn index() -> Response {
    match Dist::get("index.html") {
        Some(file) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
                (
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(CSP),
                ),
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
                (
                    header::REFERRER_POLICY,
                    HeaderValue::from_static("no-referrer"),
                ),
            ],
            file.data.into_owned(),
        )
            .into_response(),
        None => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )],
            NOT_BUILT,
        )
            .into_response(),
    }
}

/// `/static/{path}`; `None` when there is no such file.
pub(crate) fn static_file(path: &str) -> Option<Response> {
    if path.split('/').any(|seg| seg == ".." || seg.is_empty()) {
        return None;
    }
    let file = Dist::get(&format!("static/{path}"))?;
    let mime = HeaderValue::from_str(file.metadata.mimetype()).ok()?;
    Some(
        (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, mime),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=31536000, immutable"),
                ),
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
            ],
            file.data.into_owned(),
        )
            .into_response(),
    )
}

/// True when the page was built into (or, in debug builds, is present for) this binary.
#[allow(dead_code)]
pub(crate) fn page_built() -> bool {
    Dist::get("index.html").is_some()
}
