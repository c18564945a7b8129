//! Security headers on every HTTP response (tower-http layers around the whole router, CORS
//! preflights and errors included).
//!
//! - `Content-Security-Policy` fitted to the embedded web UI: its scripts, styles, images
//!   and API calls come from this node only; OpenSeadragon decodes tiles in a worker it
//!   starts from a `blob:` URL and shows blob images; it inserts one small `<style>` element,
//!   allowed by its hash. No plugins, no `<base>`, and no framing (`frame-ancestors 'none'`).
//! - `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer` (slide ids in URLs stay
//!   on this node).
//! - `Strict-Transport-Security` only when the node itself serves HTTPS.
//!
//! A response that already carries one of these keeps its own.

use axum::Router;
use axum::http::{HeaderValue, header};
use tower_http::set_header::SetResponseHeaderLayer;

/// What the web UI (`node/web/`) loads. The `sha256-` sources are the only inline styles
/// it runs: OpenSeadragon 6's (`@media (hover: none) { .openseadragon-canvas:focus ... }`),
/// and the two the Annotorious selector pack injects as it loads (an empty one, then its
/// tools' rules). The browser tests (`tests/browser/viewer.test.mjs`, `referral.test.mjs`,
/// `signon.test.mjs`) fail on any violation, so a new version that changes them is noticed.
/// (Annotorious 3 is not used: it draws with PixiJS, which needs `'unsafe-eval'`.)
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self' 'sha256-9xTiqzfwFaL2SGb1rmr8gysEwVVjIvqWAgmZgqFqpEE=' \
     'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=' \
     'sha256-/zsNvWA0LoHsrhUzbV55w54k6n1c5nns1J2NZPQeHbY='; \
     img-src 'self' blob: data:; worker-src 'self' blob:; connect-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// A year; browsers then refuse plain HTTP to this host, so it is sent over TLS only.
const HSTS: &str = "max-age=31536000";

/// `router` with the security headers; `https`: the node serves TLS itself (HSTS).
pub fn secure<S: Clone + Send + Sync + 'static>(router: Router<S>, https: bool) -> Router<S> {
    let router = router
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ));
    if https {
        router.layer(SetResponseHeaderLayer::if_not_present(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        ))
    } else {
        router
    }
}
