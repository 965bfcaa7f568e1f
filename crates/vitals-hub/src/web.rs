//! The web dashboard built into the hub: the files of `web/dist` (the Vite build of `web/`)
//! served with rust-embed. Hashed files under `/assets/` are cached for a year; `index.html`
//! is never cached; any other page path falls back to the app, which routes on the client.
//! Before the dashboard is built (`cargo build` works without npm), [`crate::pages`] serves
//! small built-in pages instead, saying how to build it.
//!
//! In release builds the files are compiled into the binary; in debug builds rust-embed reads
//! them from `web/dist` at run time, so a rebuilt UI shows without recompiling the hub.

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use rust_embed::Embed;

#[derive(Embed)]
#[folder = "$CARGO_MANIFEST_DIR/../../web/dist/"]
#[allow_missing = true]
struct Dist;

const INDEX: &str = "index.html";
/// Security headers for the app: no framing, no sniffing, and a CSP that allows only the hub
/// itself (uPlot draws on canvas and needs inline styles).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
                   base-uri 'none'; form-action 'self'";

/// Whether the dashboard is built (its `index.html` exists).
pub fn is_built() -> bool {
    Dist::get(INDEX).is_some()
}

/// The app's `index.html`, when the dashboard is built.
pub fn index() -> Option<Response> {
    file(INDEX)
}

fn file(path: &str) -> Option<Response> {
    let f = Dist::get(path)?;
    let mime = f.metadata.mimetype().to_string();
    let cache = if path.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    // Release builds embed the files: serve them without copying.
    let body = match f.data {
        std::borrow::Cow::Borrowed(b) => Body::from(axum::body::Bytes::from_static(b)),
        std::borrow::Cow::Owned(v) => Body::from(v),
    };
    let mut res = Response::new(body);
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&mime) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if path == INDEX {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
    }
    Some(res)
}

/// Serves any path no route claimed: a dashboard file, else the app (for its client-side
/// routes), else a 404 naming how to build the dashboard.
pub async fn fallback(method: Method, uri: Uri) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return (StatusCode::NOT_FOUND, "no such route\n").into_response();
    }
    let path = uri.path().trim_start_matches('/');
    if !path.is_empty()
        && !path.contains("..")
        && !path.starts_with('.')
        && let Some(res) = file(path)
    {
        return res;
    }
    // A missing hashed asset is a real 404: answering with the app would confuse the browser.
    if path.starts_with("assets/") {
        return (StatusCode::NOT_FOUND, "no such asset\n").into_response();
    }
    match index() {
        Some(res) => res,
        None => (
            StatusCode::NOT_FOUND,
            "not found (the web dashboard is not built into this hub: see the README's run command)\n",
        )
            .into_response(),
    }
}
