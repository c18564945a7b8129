//! The embedded web UI: static files generated into the binary by `build.rs` from
//! `node/web/` (OpenSeadragon comes from npm, pinned by `node/web/package-lock.json`).

use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

fn find(path: &str) -> Option<&'static (&'static str, &'static str, &'static [u8])> {
    ASSETS.iter().find(|(p, _, _)| *p == path)
}

/// Serves an asset by path; client-side routes (`/`, `/view/...`) get the UI's index page.
pub async fn asset(uri: Uri) -> Response {
    let path = uri.path();
    let asset = find(path).or_else(|| {
        if path == "/" || path.starts_with("/view/") {
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
