//! Who an HTTP request acts for: the trust itself, the person the trust's single sign-on
//! proxy authenticated and named in headers, or the person signed on at the trust's OpenID
//! provider (`[users]` in config.toml).
//!
//! One middleware names the requester for every route. With `from = "proxy"` it believes
//! identity headers only from the proxy: the connection must come from one of
//! `proxy_addresses` and carry the proxy's shared secret (compared in constant time); anyone
//! else naming a person is refused (403) and logged with their address. With `from = "oidc"`
//! the person is the one whose session the request's cookie names ([`super::oidc`]), and a
//! request that changes anything must carry that session's CSRF token (403 otherwise);
//! identity headers are refused there as from anyone who is not a configured proxy. It
//! refuses malformed names (400) and, when the node requires a named person, anonymous
//! requests (401; with `from = "oidc"` the web UI's pages are sent to sign in instead, and the
//! sign-in itself, the UI's files and its signed-out page need no session); without that
//! requirement anonymous requests act as the trust only from this host. Handlers take a
//! [`Requester`] and hand it to whatever decides: the owner's rules for a shared slide are
//! applied to that person here, and the person travels with the tile batches fetched for
//! them. [`may_ingest`] is STOW-RS's entry check (`ingest_roles`).
//!
//! With `from = "none"` (loopback only) every request acts as the trust, so a web page on
//! this host's browser must not reach the API under a name of its own (DNS rebinding: a
//! site's name made to resolve to 127.0.0.1, which makes the API same-origin to that site).
//! Such requests name a host other than a loopback address or `localhost`; they are refused
//! (421) and logged.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;
use slidemesh_protocol::UserClaim;
use tracing::warn;

use super::oidc::{self, SignedOn};
use super::{ApiError, ApiState};
use crate::config::{UsersFrom, UsersSection};

/// Answered without a named person even when one is required (no slide data in it).
const HEALTH_PATH: &str = "/api/v1/node";

/// The person a request acts for; `None`: the trust itself.
#[derive(Debug, Clone, Default)]
pub struct Requester(pub Option<UserClaim>);

impl Requester {
    pub fn user(&self) -> Option<&UserClaim> {
        self.0.as_ref()
    }
}

/// Marks a request let through to a route that answers without a person although it named
/// no one and a person is required (its [`Requester`] is then the trust's, for that route
/// alone): `/auth/me` says "nobody" rather than "the trust".
#[derive(Debug, Clone, Copy)]
pub struct Unidentified;

/// The sign-on proxy as this node recognises it: where it connects from and the secret it
/// sends with every request.
pub struct ProxyTrust {
    /// `[users] proxy_addresses`.
    networks: Vec<IpNet>,
    /// BLAKE3 of the secret. Hashes are compared, and `blake3::Hash` compares in constant
    /// time, so a guess learns nothing from how long the comparison took.
    secret: blake3::Hash,
    /// `[users] proxy_secret_header`.
    header: HeaderName,
}

impl ProxyTrust {
    /// `secret` is the file's content without surrounding whitespace; it must not be empty.
    pub fn new(networks: Vec<IpNet>, secret: &[u8], header: &str) -> Result<Self, String> {
        if secret.is_empty() {
            return Err("the sign-on proxy's secret is empty".into());
        }
        let header = HeaderName::try_from(header)
            .map_err(|_| format!("{header:?} is not a valid HTTP header name"))?;
        Ok(Self {
            networks,
            secret: blake3::hash(secret),
            header,
        })
    }

    /// Whether a request came from the proxy: its address and its secret. `Err` says why not.
    fn check(&self, remote: Option<IpAddr>, headers: &HeaderMap) -> Result<(), &'static str> {
        let Some(remote) = remote else {
            return Err("no remote address");
        };
        if !self.networks.iter().any(|n| n.contains(&remote)) {
            return Err("not from a proxy address");
        }
        match headers.get(&self.header) {
            Some(given) if blake3::hash(given.as_bytes()) == self.secret => Ok(()),
            Some(_) => Err("wrong proxy secret"),
            None => Err("no proxy secret"),
        }
    }
}

/// The middleware: names the requester once per request (see the module docs).
pub async fn identify(
    State(state): State<Arc<ApiState>>,
    mut request: Request,
    next: Next,
) -> Response {
    if state.users.from == UsersFrom::None
        && let Some(host) = foreign_host(&request)
    {
        warn!(
            host,
            "request naming a host other than this one refused (from = \"none\")"
        );
        return ApiError {
            status: StatusCode::MISDIRECTED_REQUEST,
            message: format!(
                "this node answers without sign-on, so only as 127.0.0.1, [::1] or localhost, \
                 not as {host:?}"
            ),
        }
        .into_response();
    }
    let path = request.uri().path();
    let signing_on = state.users.from == UsersFrom::Oidc;
    // Who this node is stays answerable without a person: monitoring and load balancers ask.
    // With sign-on here, so do the sign-in itself and the UI's files.
    let anonymous_ok = path == HEALTH_PATH || (signing_on && oidc::open_path(path));
    let is_page = super::web::is_page(path);
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or_else(|| path.to_string(), |p| p.as_str().to_string());
    let remote = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_canonical());
    let session = state
        .oidc
        .as_ref()
        .and_then(|o| o.session(request.headers()));
    let decided = requester(
        &state.users,
        state.proxy.as_ref(),
        session.as_ref().map(|s| &s.user),
        remote,
        request.headers(),
    )
    .and_then(|requester| match &session {
        Some(session) => {
            oidc::check_csrf(request.method(), request.headers(), session).map(|()| requester)
        }
        None => Ok(requester),
    });
    // The proxy's secret goes no further than this check.
    if let Some(proxy) = &state.proxy {
        request.headers_mut().remove(&proxy.header);
    }
    match decided {
        Err(e) if anonymous_ok && e.status == StatusCode::UNAUTHORIZED => {
            request.extensions_mut().insert(Requester(None));
            request.extensions_mut().insert(Unidentified);
            next.run(request).await
        }
        Ok(requester) => {
            request.extensions_mut().insert(requester);
            if let Some(session) = session {
                request.extensions_mut().insert::<SignedOn>(session);
            }
            next.run(request).await
        }
        Err(e) if signing_on && e.status == StatusCode::UNAUTHORIZED => {
            oidc::sign_in_first(&path_and_query, is_page, e.message)
        }
        Err(e) => e.into_response(),
    }
}

/// The host a request names (its `Host` header, or an HTTP/2 request's authority) when
/// that is neither a loopback address nor `localhost`; a request that names none (an
/// HTTP/1.0 tool) names no other host either.
fn foreign_host(request: &Request) -> Option<String> {
    let named = match request.headers().get(axum::http::header::HOST) {
        Some(value) => String::from_utf8_lossy(value.as_bytes()).into_owned(),
        None => request.uri().authority()?.as_str().to_string(),
    };
    // The port goes: `[::1]:8080`, `127.0.0.1:8080`, `localhost:8080`.
    let host = match named.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => named.rsplit_once(':').map_or(named.as_str(), |(h, _)| h),
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    (!loopback).then_some(named)
}

/// Who a request acts for: `session` is the person a sign-on session of this node names
/// (with `from = "oidc"`), already looked up from the request's cookie.
fn requester(
    users: &UsersSection,
    proxy: Option<&ProxyTrust>,
    session: Option<&UserClaim>,
    remote: Option<IpAddr>,
    headers: &HeaderMap,
) -> Result<Requester, ApiError> {
    if users.from == UsersFrom::None {
        return Ok(Requester(None));
    }
    let names_someone =
        headers.contains_key(&users.user_header) || headers.contains_key(&users.role_header);
    if names_someone {
        let trusted = proxy.map_or(Err("no sign-on proxy configured"), |p| {
            p.check(remote, headers)
        });
        if let Err(why) = trusted {
            let claimed = headers
                .get(&users.user_header)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            warn!(
                remote = ?remote,
                claimed = ?claimed,
                why,
                "identity headers refused: not from the trust's sign-on proxy"
            );
            return Err(ApiError::forbidden(format!(
                "identity headers ({}, {}) are accepted from the trust's sign-on proxy only \
                 ({why}); sign in through it",
                users.user_header, users.role_header
            )));
        }
    }
    if users.from == UsersFrom::Oidc
        && let Some(user) = session
    {
        return Ok(Requester(Some(user.clone())));
    }
    let header = |name: &str| -> Result<Option<&str>, ApiError> {
        headers
            .get(name)
            .map(|v| {
                v.to_str()
                    .map_err(|_| ApiError::bad_request(format!("header {name} is not text")))
            })
            .transpose()
    };
    let unauthorized = |why: &str| ApiError {
        status: StatusCode::UNAUTHORIZED,
        message: match users.from {
            UsersFrom::Oidc => format!(
                "this node shows nothing without a named person{why}; sign in at /auth/login"
            ),
            _ => format!(
                "this node shows nothing without a named person{why}; sign in through the \
                 trust's sign-on proxy (it sets {})",
                users.user_header
            ),
        },
    };
    if users.from == UsersFrom::Oidc {
        // People name themselves by signing on here, never in headers.
        return if users.required {
            Err(unauthorized(""))
        } else if remote.is_some_and(|r| r.is_loopback()) {
            Ok(Requester(None))
        } else {
            Err(unauthorized(" except from this host"))
        };
    }
    match (header(&users.user_header)?, header(&users.role_header)?) {
        (Some(id), Some(role)) => UserClaim::new(id.trim(), role.trim())
            .map(|user| Requester(Some(user)))
            .map_err(|e| ApiError::bad_request(format!("the sign-on proxy's user: {e}"))),
        (Some(_), None) => Err(ApiError::bad_request(format!(
            "header {} names a user but {} gives no role",
            users.user_header, users.role_header
        ))),
        (None, _) if users.required => Err(unauthorized("")),
        // Scripts on the node's own host may act as the trust; nobody else may.
        (None, _) if remote.is_some_and(|r| r.is_loopback()) => Ok(Requester(None)),
        (None, _) => Err(unauthorized(" except from this host")),
    }
}

/// STOW-RS's entry check: storing slides needs a person or service account whose role is in
/// `[users] ingest_roles`; with `from = "none"` (loopback only) the trust itself may.
pub fn may_ingest(users: &UsersSection, requester: &Requester) -> Result<(), ApiError> {
    if users.from == UsersFrom::None {
        return Ok(());
    }
    let roles = users.ingest_roles.join(", ");
    let refusal = match requester.user() {
        Some(user) if users.ingest_roles.contains(&user.role) => return Ok(()),
        Some(user) => format!(
            "{user} may not store slides here: storing needs one of the roles [{roles}] \
             ([users] ingest_roles)"
        ),
        None => format!(
            "storing slides needs a named person or service account with one of the roles \
             [{roles}] ([users] ingest_roles); sign in first"
        ),
    };
    warn!(user = ?requester.user().map(|u| u.to_string()), "STOW-RS refused: no ingest role");
    Err(ApiError::forbidden(refusal))
}

impl<S: Send + Sync> FromRequestParts<S> for Requester {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Requester>()
            .cloned()
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "correct horse battery staple";

    fn proxy(required: bool) -> UsersSection {
        UsersSection {
            from: UsersFrom::Proxy,
            required,
            ..UsersSection::default()
        }
    }

    fn trust() -> ProxyTrust {
        let networks =
            crate::config::proxy_networks(&["10.1.2.0/24".into(), "127.0.0.1".into()]).unwrap();
        ProxyTrust::new(networks, SECRET.as_bytes(), "x-slidemesh-proxy-secret").unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    /// Each case: the mode, where the request came from, its headers, and the outcome: a
    /// status, or the person it acts for ("" for the trust).
    type Case<'a> = (
        &'a UsersSection,
        Option<IpAddr>,
        Vec<(&'static str, &'static str)>,
        Result<&'static str, u16>,
    );

    #[test]
    fn identity_headers_are_believed_from_the_proxy_only() {
        const USER: (&str, &str) = ("x-slidemesh-user", "jsmith");
        const ROLE: (&str, &str) = ("x-slidemesh-role", "pathologist");
        const GOOD: (&str, &str) = ("x-slidemesh-proxy-secret", SECRET);
        const BAD: (&str, &str) = ("x-slidemesh-proxy-secret", "correct horse");
        let proxy_host = Some("10.1.2.7".parse().unwrap());
        let loopback = Some("127.0.0.1".parse().unwrap());
        let stranger = Some("10.9.9.9".parse().unwrap());
        let none = UsersSection::default();
        let (required, optional) = (proxy(true), proxy(false));
        let cases: Vec<Case> = vec![
            // Without sign-on every request is the trust's; headers are ignored.
            (&none, stranger, vec![USER, ROLE], Ok("")),
            (
                &required,
                proxy_host,
                vec![USER, ROLE, GOOD],
                Ok("jsmith (pathologist)"),
            ),
            (
                &required,
                loopback,
                vec![USER, ROLE, GOOD],
                Ok("jsmith (pathologist)"),
            ),
            // Anyone else naming a person: refused, whatever they name.
            (&required, stranger, vec![USER, ROLE, GOOD], Err(403)),
            (&required, None, vec![USER, ROLE, GOOD], Err(403)),
            (&required, proxy_host, vec![USER, ROLE], Err(403)),
            (&required, proxy_host, vec![USER, ROLE, BAD], Err(403)),
            (&required, stranger, vec![ROLE], Err(403)),
            (&optional, stranger, vec![USER, ROLE, BAD], Err(403)),
            // From the proxy, malformed names are refused, not guessed at.
            (&required, proxy_host, vec![USER, GOOD], Err(400)),
            (
                &required,
                proxy_host,
                vec![USER, ("x-slidemesh-role", "Path Ologist"), GOOD],
                Err(400),
            ),
            // Naming no one: refused when a person is required...
            (&required, proxy_host, vec![GOOD], Err(401)),
            (&required, loopback, vec![], Err(401)),
            // ...else the trust, for scripts on this host only.
            (&optional, loopback, vec![], Ok("")),
            (&optional, proxy_host, vec![GOOD], Err(401)),
            (&optional, stranger, vec![], Err(401)),
        ];
        let trust = trust();
        for (i, (users, remote, pairs, expected)) in cases.into_iter().enumerate() {
            let got = requester(users, Some(&trust), None, remote, &headers(&pairs))
                .map(|r| r.0.map(|u| u.to_string()).unwrap_or_default())
                .map_err(|e| e.status.as_u16());
            assert_eq!(
                got,
                expected.map(String::from),
                "case {i}: {pairs:?} from {remote:?}"
            );
        }
        // A node in proxy mode that knows no proxy believes no one.
        let named = headers(&[USER, ROLE, GOOD]);
        let refused = requester(&proxy(true), None, None, proxy_host, &named).unwrap_err();
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
    }

    #[test]
    fn with_sign_on_here_the_session_names_the_person_and_headers_name_no_one() {
        let oidc = |required: bool| UsersSection {
            from: UsersFrom::Oidc,
            required,
            ..UsersSection::default()
        };
        let jsmith = UserClaim::new("jsmith", "pathologist").unwrap();
        let loopback = Some("127.0.0.1".parse().unwrap());
        let stranger = Some("10.9.9.9".parse().unwrap());
        let named = headers(&[
            ("x-slidemesh-user", "akhan"),
            ("x-slidemesh-role", "pathologist"),
        ]);
        let none = HeaderMap::new();
        let who = |users: &UsersSection,
                   session: Option<&UserClaim>,
                   remote: Option<IpAddr>,
                   headers: &HeaderMap| {
            requester(users, None, session, remote, headers)
                .map(|r| r.0.map(|u| u.to_string()).unwrap_or_default())
                .map_err(|e| e.status.as_u16())
        };
        let required = oidc(true);
        assert_eq!(
            who(&required, Some(&jsmith), stranger, &none),
            Ok("jsmith (pathologist)".into())
        );
        // Headers naming someone are refused, session or not: no proxy speaks for anyone.
        assert_eq!(who(&required, None, loopback, &named), Err(403));
        assert_eq!(who(&required, Some(&jsmith), loopback, &named), Err(403));
        // No session: 401, or the trust for scripts on this host when no person is required.
        assert_eq!(who(&required, None, loopback, &none), Err(401));
        assert_eq!(who(&oidc(false), None, loopback, &none), Ok(String::new()));
        assert_eq!(who(&oidc(false), None, stranger, &none), Err(401));
        let message = requester(&required, None, None, stranger, &none)
            .unwrap_err()
            .message;
        assert!(message.contains("/auth/login"), "{message}");
        // A session counts only in oidc mode (a proxy-mode node keeps no sessions).
        assert_eq!(who(&proxy(true), Some(&jsmith), loopback, &none), Err(401));
    }

    #[test]
    fn an_empty_secret_or_a_bad_header_name_is_refused() {
        assert!(ProxyTrust::new(vec![], b"", "x-slidemesh-proxy-secret").is_err());
        assert!(ProxyTrust::new(vec![], b"s", "not a header").is_err());
    }

    #[test]
    fn storing_needs_an_ingest_role_once_people_sign_on() {
        let person = |role: &str| Requester(Some(UserClaim::new("jsmith", role).unwrap()));
        let cases = [
            (UsersSection::default(), Requester(None), true),
            (UsersSection::default(), person("student"), true),
            (proxy(false), Requester(None), false),
            (proxy(true), person("lab"), true),
            (proxy(true), person("ingest"), true),
            (proxy(true), person("pathologist"), false),
        ];
        for (i, (users, requester, allowed)) in cases.into_iter().enumerate() {
            match may_ingest(&users, &requester) {
                Ok(()) => assert!(allowed, "case {i}"),
                Err(e) => {
                    assert!(!allowed, "case {i}: {}", e.message);
                    assert_eq!(e.status, StatusCode::FORBIDDEN);
                    assert!(e.message.contains("ingest_roles"), "{}", e.message);
                }
            }
        }
    }
}
