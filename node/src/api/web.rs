//! The embedded web UI: static files generated into the binary by `build.rs` from
//! `node/web/` (OpenSeadragon comes from npm, pinned by `node/web/package-lock.json`).

use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

fn find(path: &str) -> Option<&'static (&'static str, &'static str, &'static [u8])> {
    ASSETS.iter().find(|(p, _, _)| *p == path)
}

/// The UI's pages: paths a person opens in the browser (`/`, `/index.html`, `/view/...`,
/// `/referrals` and below, `/research`, `/health`),
/// each answered with the index page, whose script picks the view. Without a session they
/// go to sign in rather than answer 401 (with `[users] from = "oidc"`).
pub fn is_page(path: &str) -> bool {
    path == "/"
        || path == "/index.html"
        || path.starts_with("/view/")
        || path == "/referrals"
        || path.starts_with("/referrals/")
        || path == "/research"
        || path == "/research/"
        || path == "/health"
        || path == "/health/"
}

/// Serves an asset by path; client-side routes (the pages above, and the signed-out page)
/// get the UI's index page.
pub async fn asset(uri: Uri) -> Response {
    let path = uri.path();
    let asset = find(path).or_else(|| {
        if is_page(path) || path == super::oidc::SIGNED_OUT_PATH {
            find("/index.html")
        } else {
            None
        }
    });
    match asset {
        Some((_, content_type, bytes)) => {
            let mut response = bytes.into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}
