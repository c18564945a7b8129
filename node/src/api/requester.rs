//! Who an HTTP request acts for: the trust itself, or the person the trust's single sign-on
//! proxy authenticated and named in headers (`[users]` in config.toml).
//!
//! One middleware reads the headers for every route, refuses malformed names (400) and, when
//! the node requires a named person, anonymous requests (401). Handlers take a [`Requester`]
//! and hand it to whatever decides: the owner's rules for a shared slide are applied to that
//! person here, and the person travels with the tile batches fetched for them.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use slidemesh_protocol::UserClaim;

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

/// The middleware: names the requester once per request (see the module docs).
pub async fn identify(
    State(state): State<Arc<ApiState>>,
    mut request: Request,
    next: Next,
) -> Response {
    // Who this node is stays answerable without a person: monitoring and load balancers ask.
    let anonymous_ok = request.uri().path() == HEALTH_PATH;
    match requester(&state.users, request.headers()) {
        Err(e) if anonymous_ok && e.status == StatusCode::UNAUTHORIZED => {
            request.extensions_mut().insert(Requester(None));
            next.run(request).await
        }
        Ok(requester) => {
            request.extensions_mut().insert(requester);
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}

fn requester(users: &UsersSection, headers: &axum::http::HeaderMap) -> Result<Requester, ApiError> {
    if users.from == UsersFrom::None {
        return Ok(Requester(None));
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
    match (header(&users.user_header)?, header(&users.role_header)?) {
        (Some(id), Some(role)) => UserClaim::new(id.trim(), role.trim())
            .map(|user| Requester(Some(user)))
            .map_err(|e| ApiError::bad_request(format!("the sign-on proxy's user: {e}"))),
        (Some(_), None) => Err(ApiError::bad_request(format!(
            "header {} names a user but {} gives no role",
            users.user_header, users.role_header
        ))),
        (None, _) if users.required => Err(ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: format!(
                "this node shows nothing without a named person; sign in through the trust's \
                 sign-on proxy (it sets {})",
                users.user_header
            ),
        }),
        (None, _) => Ok(Requester(None)),
    }
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
    use axum::http::HeaderMap;

    fn proxy(required: bool) -> UsersSection {
        UsersSection {
            from: UsersFrom::Proxy,
            required,
            ..UsersSection::default()
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn headers_name_the_person_only_when_the_proxy_is_trusted() {
        let named = headers(&[
            ("x-slidemesh-user", "jsmith"),
            ("x-slidemesh-role", "pathologist"),
        ]);
        let none = UsersSection::default();
        assert!(requester(&none, &named).unwrap().0.is_none());
        let user = requester(&proxy(false), &named).unwrap().0.unwrap();
        assert_eq!(user.to_string(), "jsmith (pathologist)");
        assert!(
            requester(&proxy(false), &HeaderMap::new())
                .unwrap()
                .0
                .is_none()
        );
        let anonymous = requester(&proxy(true), &HeaderMap::new()).unwrap_err();
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
        let no_role = requester(&proxy(false), &headers(&[("x-slidemesh-user", "jsmith")]));
        assert_eq!(no_role.unwrap_err().status, StatusCode::BAD_REQUEST);
        let bad_role = headers(&[
            ("x-slidemesh-user", "jsmith"),
            ("x-slidemesh-role", "Path Ologist"),
        ]);
        assert_eq!(
            requester(&proxy(false), &bad_role).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
    }
}
