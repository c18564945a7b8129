//! Sign-on at the trust's OpenID provider (`[users] from = "oidc"`): the authorization code
//! flow with PKCE, and the sessions it opens. It owns the `/auth/...` routes and the session
//! store; it names people and decides nothing about slides.
//!
//! - `GET /auth/login?next=/view/S`: a fresh state, nonce and PKCE verifier are kept here
//!   (ten minutes, single use) and the state also in a cookie of the browser that started,
//!   then the browser goes to the provider's authorization endpoint.
//! - `GET /auth/callback`: the state must be one this node issued to this browser; the code
//!   is exchanged with the PKCE verifier (and the client secret), the ID token is verified
//!   (signature by the provider's published keys, issuer, audience, expiry, nonce), the
//!   person's account (`oidc_user_claim`) and role (`oidc_roles_claim`) are read from it, and
//!   a session opens: a random token in an HttpOnly, SameSite=Lax cookie (Secure, and named
//!   `__Host-...`, when browsers reach the node over HTTPS) and a random CSRF token.
//! - `POST /auth/logout`: ends the session here and answers where the browser goes next:
//!   the provider's `end_session_endpoint` (RP-initiated logout) when it has one.
//! - `GET /auth/me`: who requests act for, and the CSRF token the web UI sends in
//!   `X-CSRF-Token` with every state-changing request ([`check_csrf`], called by the
//!   requester middleware for every request a session makes).
//!
//! The provider is discovered once at `serve` start (`/.well-known/openid-configuration`),
//! and again, at most once a minute, when an ID token is signed by a key it did not publish
//! then (key rotation). Its HTTP client is reqwest over rustls (the aws-lc-rs provider the
//! HTTPS server uses), trusting the system's store plus `oidc_ca_file`, following no
//! redirects. Sessions live in this process's memory, bounded in number, and end after
//! `oidc_session_secs` or at a restart. [`super::requester`] turns a session into the
//! [`Requester`](super::requester::Requester) every handler decides for, exactly as a person
//! the sign-on proxy names: access decisions and audit entries see no difference.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use axum::extract::{Extension, Query, State};
use axum::http::header::{CACHE_CONTROL, COOKIE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType,
    CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreRevocableToken, CoreRevocationErrorResponse, CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::url::{Url, form_urlencoded};
use openidconnect::{
    AdditionalClaims, AuthorizationCode, ClaimsVerificationError, Client, ClientId, ClientSecret,
    CsrfToken, EmptyExtraTokenFields, EndSessionUrl, EndpointMaybeSet, EndpointNotSet, EndpointSet,
    IdTokenClaims, IdTokenFields, IssuerUrl, LogoutRequest, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, PostLogoutRedirectUrl, ProviderMetadataWithLogout, RedirectUrl, Scope,
    StandardErrorResponse, StandardTokenResponse,
};
use serde::{Deserialize, Serialize};
use slidemesh_protocol::UserClaim;
use tracing::{info, warn};

use super::requester::{Requester, Unidentified};
use super::{ApiError, ApiState};
use crate::config::{UsersFrom, UsersSection};

/// The header the web UI sends the session's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Where the web UI says a person signed out (served without a session).
pub const SIGNED_OUT_PATH: &str = "/signed-out";
/// How long a sign-in may take at the provider.
const LOGIN_TTL: Duration = Duration::from_secs(10 * 60);
/// Sign-ins in progress kept at most (each a few hundred bytes).
const MAX_PENDING: usize = 10_000;
/// Sessions kept at most.
const MAX_SESSIONS: usize = 100_000;
/// Discovery again at most this often (a token signed by a key not published before).
const REDISCOVER_EVERY: Duration = Duration::from_secs(60);
/// Random bytes in a session token and a CSRF token.
const TOKEN_BYTES: u32 = 32;

/// Claims of the ID token besides the standard ones (the roles claim is one).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OtherClaims {
    /// Every claim by name, as sent.
    #[serde(flatten)]
    claims: serde_json::Map<String, serde_json::Value>,
}

impl AdditionalClaims for OtherClaims {}

type Tokens = StandardTokenResponse<
    IdTokenFields<
        OtherClaims,
        EmptyExtraTokenFields,
        CoreGenderClaim,
        CoreJweContentEncryptionAlgorithm,
        CoreJwsSigningAlgorithm,
    >,
    CoreTokenType,
>;

/// The client as discovery makes it: authorization endpoint known, token and userinfo
/// endpoints as the provider published them.
type OidcClient = Client<
    OtherClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    Tokens,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

type Claims = IdTokenClaims<OtherClaims, CoreGenderClaim>;

/// What discovery found.
struct Provider {
    /// Endpoints, keys and this node's registration.
    client: OidcClient,
    /// RP-initiated logout, when the provider offers it.
    end_session: Option<EndSessionUrl>,
}

/// The settings of the flow, from `[users]`.
pub struct Settings {
    pub issuer: String,
    pub client_id: String,
    /// `None`: a public client (PKCE only).
    pub client_secret: Option<String>,
    pub redirect_url: String,
    pub post_logout_redirect_url: Option<String>,
    pub scopes: Vec<String>,
    pub user_claim: String,
    pub roles_claim: String,
    pub session_ttl: Duration,
    /// Cookies carry `Secure` (browsers reach the node over HTTPS).
    pub secure_cookies: bool,
}

impl Settings {
    /// From config.toml; `client_secret` is the secret file's content, if one is named; `tls`:
    /// the node serves HTTPS itself.
    pub fn new(users: &UsersSection, client_secret: Option<String>, tls: bool) -> Self {
        let non_empty = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_string());
        Self {
            issuer: users.oidc_issuer.trim().to_string(),
            client_id: users.oidc_client_id.trim().to_string(),
            client_secret,
            redirect_url: users.oidc_redirect_url.trim().to_string(),
            post_logout_redirect_url: non_empty(&users.oidc_post_logout_redirect_url),
            scopes: users.oidc_scopes.clone(),
            user_claim: users.oidc_user_claim.trim().to_string(),
            roles_claim: users.oidc_roles_claim.trim().to_string(),
            session_ttl: Duration::from_secs(users.oidc_session_secs),
            secure_cookies: tls || users.oidc_redirect_url.trim().starts_with("https:"),
        }
    }
}

/// A sign-in sent to the provider and not yet back.
struct Pending {
    verifier: PkceCodeVerifier,
    nonce: Nonce,
    /// Where the person was going (a path on this node).
    next: String,
    started: Instant,
}

/// A signed-on person.
struct Session {
    user: UserClaim,
    csrf: String,
    expires: Instant,
    /// The raw ID token, as the hint for the provider's end-session endpoint.
    id_token: String,
}

/// The session a request carries, as the middleware hands it on (an axum extension).
#[derive(Debug, Clone)]
pub struct SignedOn {
    pub user: UserClaim,
    /// What the request must send in [`CSRF_HEADER`] if it changes anything.
    pub csrf: String,
    pub expires_in: Duration,
}

/// Sign-on at the trust's OpenID provider: the discovered provider and the sessions.
pub struct Oidc {
    settings: Settings,
    http: reqwest::Client,
    provider: RwLock<Arc<Provider>>,
    /// When discovery last ran (rate-limits discovery again).
    discovered: Mutex<Instant>,
    /// Sign-ins in progress by state.
    pending: Mutex<HashMap<String, Pending>>,
    /// Sessions by BLAKE3 of their token (the tokens themselves are not kept).
    sessions: Mutex<HashMap<[u8; 32], Session>>,
}

impl Oidc {
    /// Discovers the provider; fails with a message naming the issuer when it cannot be
    /// reached or answers nonsense. `ca_file`: extra CA certificates to trust for it.
    pub async fn discover(settings: Settings, ca_file: Option<&Path>) -> Result<Self> {
        let http = http_client(ca_file)?;
        let provider = discover(&settings, &http).await?;
        info!(
            issuer = %settings.issuer,
            end_session = provider.end_session.is_some(),
            "OpenID provider discovered"
        );
        Ok(Self {
            settings,
            http,
            provider: RwLock::new(Arc::new(provider)),
            discovered: Mutex::new(Instant::now()),
            pending: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
        })
    }

    fn provider(&self) -> Arc<Provider> {
        self.provider
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Discovery again (the provider's keys changed), unless it ran within the last minute.
    async fn rediscover(&self) -> bool {
        {
            let mut last = self.discovered.lock().unwrap_or_else(|e| e.into_inner());
            if last.elapsed() < REDISCOVER_EVERY {
                return false;
            }
            *last = Instant::now();
        }
        match discover(&self.settings, &self.http).await {
            Ok(provider) => {
                *self.provider.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(provider);
                info!(issuer = %self.settings.issuer, "OpenID provider discovered again");
                true
            }
            Err(e) => {
                warn!(error = %format!("{e:#}"), "OpenID provider discovery failed");
                false
            }
        }
    }

    fn session_cookie(&self) -> &'static str {
        if self.settings.secure_cookies {
            "__Host-slidemesh-session"
        } else {
            "slidemesh-session"
        }
    }

    fn login_cookie(&self) -> &'static str {
        if self.settings.secure_cookies {
            "__Secure-slidemesh-login"
        } else {
            "slidemesh-login"
        }
    }

    fn set_cookie(&self, name: &str, value: Option<&str>, path: &str, max_age: Duration) -> String {
        set_cookie(self.settings.secure_cookies, name, value, path, max_age)
    }

    /// The session a request's cookie names, if it is current.
    pub fn session(&self, headers: &HeaderMap) -> Option<SignedOn> {
        let token = cookie(headers, self.session_cookie())?;
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let key = *blake3::hash(token.as_bytes()).as_bytes();
        let session = sessions.get(&key)?;
        let now = Instant::now();
        if session.expires <= now {
            sessions.remove(&key);
            return None;
        }
        Some(SignedOn {
            user: session.user.clone(),
            csrf: session.csrf.clone(),
            expires_in: session.expires - now,
        })
    }

    /// Starts a sign-in: where to send the browser, and the cookie binding the sign-in to it.
    fn begin(&self, next: String) -> Result<(Url, String), ApiError> {
        let provider = self.provider();
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = provider.client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            || CsrfToken::new_random_len(TOKEN_BYTES),
            Nonce::new_random,
        );
        // `openid` is always asked for.
        for scope in self.settings.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.retain(|_, p| p.started.elapsed() < LOGIN_TTL);
        if pending.len() >= MAX_PENDING {
            warn!("sign-in refused: {MAX_PENDING} sign-ins already in progress");
            return Err(ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: "too many sign-ins are in progress; try again in a few minutes".into(),
            });
        }
        let cookie = self.set_cookie(
            self.login_cookie(),
            Some(state.secret()),
            "/auth",
            LOGIN_TTL,
        );
        pending.insert(
            state.secret().clone(),
            Pending {
                verifier,
                nonce,
                next,
                started: Instant::now(),
            },
        );
        Ok((url, cookie))
    }

    /// Completes a sign-in: the code exchanged, the ID token verified, a session opened.
    /// Returns the session token and where the person was going.
    async fn finish(
        &self,
        code: &str,
        state: &str,
        browser_state: Option<&str>,
    ) -> Result<(String, String), ApiError> {
        let restart = |why: &str| ApiError {
            status: StatusCode::BAD_REQUEST,
            message: format!("{why}; sign in again at /auth/login"),
        };
        // The state must be the one this browser was given: a code someone else obtained
        // cannot be planted into this browser's session.
        if browser_state.is_none_or(|b| !constant_eq(b, state)) {
            return Err(restart(
                "this sign-in was not started in this browser (or another one started since)",
            ));
        }
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(state)
            .ok_or_else(|| restart("this sign-in is unknown or was already used"))?;
        if pending.started.elapsed() >= LOGIN_TTL {
            return Err(restart("this sign-in took too long"));
        }
        let provider = self.provider();
        let tokens = provider
            .client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| {
                ApiError::internal(format!("the OpenID provider has no token endpoint: {e}"))
            })?
            .set_pkce_verifier(pending.verifier)
            .request_async(&self.http)
            .await
            .map_err(|e| {
                warn!(error = %chain(&e), "the OpenID provider refused the sign-in code");
                ApiError::bad_gateway(format!(
                    "the OpenID provider did not accept the sign-in: {}",
                    chain(&e)
                ))
            })?;
        let id_token = tokens
            .extra_fields()
            .id_token()
            .ok_or_else(|| ApiError::bad_gateway("the OpenID provider sent no ID token"))?;
        let verified = match id_token.claims(&provider.client.id_token_verifier(), &pending.nonce) {
            Err(ClaimsVerificationError::SignatureVerification(_)) if self.rediscover().await => {
                let provider = self.provider();
                id_token
                    .claims(&provider.client.id_token_verifier(), &pending.nonce)
                    .cloned()
            }
            other => other.cloned(),
        };
        let claims = verified.map_err(|e| {
            warn!(error = %chain(&e), "ID token refused");
            ApiError {
                status: StatusCode::UNAUTHORIZED,
                message: format!("the ID token does not verify: {}", chain(&e)),
            }
        })?;
        let user = person(
            &claims,
            &self.settings.user_claim,
            &self.settings.roles_claim,
        )
        .map_err(|message| {
            warn!(%message, "sign-on refused");
            ApiError::forbidden(message)
        })?;
        let token = CsrfToken::new_random_len(TOKEN_BYTES).secret().clone();
        let session = Session {
            user: user.clone(),
            csrf: CsrfToken::new_random_len(TOKEN_BYTES).secret().clone(),
            expires: Instant::now() + self.settings.session_ttl,
            id_token: id_token.to_string(),
        };
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if sessions.len() >= MAX_SESSIONS {
            let now = Instant::now();
            sessions.retain(|_, s| s.expires > now);
        }
        if sessions.len() >= MAX_SESSIONS {
            warn!("sign-on refused: {MAX_SESSIONS} sessions open");
            return Err(ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: "too many people are signed on; try again later".into(),
            });
        }
        sessions.insert(*blake3::hash(token.as_bytes()).as_bytes(), session);
        info!(user = %user, "signed on");
        Ok((token, pending.next))
    }

    /// Forgets the session the request's cookie names, if any.
    fn forget(&self, headers: &HeaderMap) -> Option<Session> {
        let token = cookie(headers, self.session_cookie())?;
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(blake3::hash(token.as_bytes()).as_bytes())
    }

    /// Ends the request's session; returns where the browser goes next.
    fn end(&self, headers: &HeaderMap) -> String {
        let ended = self.forget(headers);
        if let Some(session) = &ended {
            info!(user = %session.user, "signed out");
        }
        let provider = self.provider();
        let Some(end_session) = provider.end_session.clone() else {
            return SIGNED_OUT_PATH.to_string();
        };
        let mut request = LogoutRequest::from(end_session)
            .set_client_id(ClientId::new(self.settings.client_id.clone()));
        if let Some(session) = ended
            && let Ok(id_token) = session.id_token.parse::<openidconnect::core::CoreIdToken>()
        {
            request = request.set_id_token_hint(&id_token);
        }
        if let Some(url) = &self.settings.post_logout_redirect_url
            && let Ok(url) = PostLogoutRedirectUrl::new(url.clone())
        {
            request = request.set_post_logout_redirect_uri(url);
        }
        request.http_get_url().to_string()
    }
}

/// The provider's metadata and this node's client at it.
async fn discover(settings: &Settings, http: &reqwest::Client) -> Result<Provider> {
    let issuer = IssuerUrl::new(settings.issuer.clone())
        .with_context(|| format!("[users] oidc_issuer {:?} is not a URL", settings.issuer))?;
    let metadata = ProviderMetadataWithLogout::discover_async(issuer, http)
        .await
        .map_err(|e| {
            anyhow!(
                "cannot discover the OpenID provider at {} ({}/.well-known/openid-configuration): \
                 {}; check [users] oidc_issuer and that this host reaches the provider",
                settings.issuer,
                settings.issuer.trim_end_matches('/'),
                chain(&e)
            )
        })?;
    let end_session = metadata.additional_metadata().end_session_endpoint.clone();
    let redirect = RedirectUrl::new(settings.redirect_url.clone()).with_context(|| {
        format!(
            "[users] oidc_redirect_url {:?} is not a URL",
            settings.redirect_url
        )
    })?;
    let client = OidcClient::from_provider_metadata(
        metadata,
        ClientId::new(settings.client_id.clone()),
        settings.client_secret.clone().map(ClientSecret::new),
    )
    .set_redirect_uri(redirect);
    Ok(Provider {
        client,
        end_session,
    })
}

/// The provider's HTTP client: rustls with aws-lc-rs, the system's trust store and
/// `ca_file`, no redirects followed (a redirect is not where the provider said it is). The
/// CLI asks its own running node with it too (`slidemesh query --network`).
pub(crate) fn http_client(ca_file: Option<&Path>) -> Result<reqwest::Client> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        warn!(%error, "a certificate of the system's trust store was not loaded");
    }
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(path)
            .with_context(|| format!("cannot read [users] oidc_ca_file {}", path.display()))?
        {
            let cert = cert.with_context(|| {
                format!(
                    "[users] oidc_ca_file {}: not PEM certificates",
                    path.display()
                )
            })?;
            roots.add(cert).with_context(|| {
                format!(
                    "[users] oidc_ca_file {}: a certificate is invalid",
                    path.display()
                )
            })?;
            added += 1;
        }
        if added == 0 {
            bail!(
                "[users] oidc_ca_file {} holds no certificate (expected PEM \"BEGIN CERTIFICATE\" \
                 blocks)",
                path.display()
            );
        }
    }
    let crypto = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(crypto)
        .with_safe_default_protocol_versions()
        .context("TLS for the OpenID provider")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .build()
        .context("cannot build the OpenID provider's HTTP client")
}

/// The person an ID token names: the account from `user_claim`, the role from the first
/// valid value of `roles_claim` (a string or a list of strings). `Err` says what is missing.
fn person(claims: &Claims, user_claim: &str, roles_claim: &str) -> Result<UserClaim, String> {
    let other = &claims.additional_claims().claims;
    let id = match other.get(user_claim) {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(_) => None,
        None => match user_claim {
            "sub" => Some(claims.subject().to_string()),
            "preferred_username" => claims.preferred_username().map(|u| u.to_string()),
            "email" => claims.email().map(|e| e.to_string()),
            _ => None,
        },
    }
    .ok_or_else(|| {
        format!(
            "the ID token has no {user_claim:?} claim naming the person ([users] \
             oidc_user_claim); ask the provider's administrators to include it"
        )
    })?;
    let roles: Vec<&str> = match other.get(roles_claim) {
        Some(serde_json::Value::String(s)) => vec![s.as_str()],
        Some(serde_json::Value::Array(list)) => list.iter().filter_map(|v| v.as_str()).collect(),
        _ => Vec::new(),
    };
    roles
        .iter()
        .find_map(|role| UserClaim::new(id.clone(), *role).ok())
        .ok_or_else(|| {
            if let Err(e) = UserClaim::new(id.clone(), "role") {
                return format!(
                    "the ID token's {user_claim:?} claim cannot name a person here: {e}"
                );
            }
            format!(
                "{id} has no role this node can use in the ID token's {roles_claim:?} claim \
                 ([users] oidc_roles_claim; found {roles:?}; roles are lowercase letters, digits \
                 and '-'); ask the provider's administrators to assign one"
            )
        })
}

/// `Set-Cookie` for `name`: HttpOnly (scripts never see it), SameSite=Lax (other sites'
/// requests do not carry it, except the top-level navigation back from the provider), and
/// Secure when browsers reach the node over HTTPS. `value: None` removes it.
fn set_cookie(
    secure: bool,
    name: &str,
    value: Option<&str>,
    path: &str,
    max_age: Duration,
) -> String {
    let (value, max_age) = match value {
        Some(v) => (v, max_age.as_secs()),
        None => ("", 0),
    };
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}")
}

/// A cookie's value from the request's `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// Compares secrets in time independent of where they differ.
fn constant_eq(a: &str, b: &str) -> bool {
    blake3::hash(a.as_bytes()) == blake3::hash(b.as_bytes())
}

/// A request made with a session that changes something (anything but GET, HEAD, OPTIONS)
/// must carry the session's CSRF token in [`CSRF_HEADER`]: a page elsewhere can make the
/// browser send the cookie, but cannot read the token.
pub fn check_csrf(
    method: &Method,
    headers: &HeaderMap,
    session: &SignedOn,
) -> Result<(), ApiError> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    match headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()) {
        Some(sent) if constant_eq(sent, &session.csrf) => Ok(()),
        sent => {
            warn!(
                user = %session.user,
                %method,
                sent = sent.is_some(),
                "request refused: no valid CSRF token"
            );
            Err(ApiError::forbidden(format!(
                "a {method} with a sign-on session needs the session's CSRF token in the \
                 {CSRF_HEADER} header (from /auth/me)"
            )))
        }
    }
}

/// Paths a request reaches without a session when people sign on here: the flow itself, the
/// web UI's static files and its signed-out page (nothing of any slide).
pub fn open_path(path: &str) -> bool {
    path.starts_with("/auth/") || path.starts_with("/assets/") || path == SIGNED_OUT_PATH
}

/// The answer to a request that needs a session and has none: the web UI's pages go to the
/// sign-in (and come back); everything else is 401 with where to sign in.
pub fn sign_in_first(path_and_query: &str, is_page: bool, message: String) -> Response {
    let login = format!(
        "/auth/login?next={}",
        form_urlencoded::byte_serialize(path_and_query.as_bytes()).collect::<String>()
    );
    if is_page {
        return (
            StatusCode::SEE_OTHER,
            [(LOCATION, login), (CACHE_CONTROL, "no-store".to_string())],
        )
            .into_response();
    }
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(serde_json::json!({ "error": message, "login": login })),
    )
        .into_response()
}

/// Where to go after signing in: a path on this node, never another site.
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p.contains('\\')
                && !p.chars().any(char::is_control)
                && p.len() <= 2048 =>
        {
            p.to_string()
        }
        _ => "/".to_string(),
    }
}

fn not_configured(users: &UsersSection) -> ApiError {
    ApiError::not_found(format!(
        "this node does not sign people on itself ([users] from = \"{}\")",
        users.from.as_str()
    ))
}

fn redirect(to: &str, cookies: &[String]) -> Response {
    let mut response = (
        StatusCode::SEE_OTHER,
        [
            (LOCATION, to.to_string()),
            (CACHE_CONTROL, "no-store".into()),
        ],
    )
        .into_response();
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            response.headers_mut().append(SET_COOKIE, v);
        }
    }
    response
}

/// `/auth/login` parameters.
#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// `GET /auth/login`: to the provider.
pub async fn login(
    State(state): State<Arc<ApiState>>,
    Query(query): Query<LoginQuery>,
) -> Result<Response, ApiError> {
    let oidc = state
        .oidc
        .as_ref()
        .ok_or_else(|| not_configured(&state.users))?;
    let (url, cookie) = oidc.begin(local_path(query.next.as_deref()))?;
    Ok(redirect(url.as_str(), &[cookie]))
}

/// `/auth/callback` parameters, as the provider sends them back.
#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /auth/callback`: back from the provider; a session opens.
pub async fn callback(
    State(state): State<Arc<ApiState>>,
    Query(query): Query<CallbackQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let oidc = state
        .oidc
        .as_ref()
        .ok_or_else(|| not_configured(&state.users))?;
    if let Some(error) = &query.error {
        let detail = query.error_description.as_deref().unwrap_or("");
        warn!(%error, %detail, "the OpenID provider refused the sign-in");
        return Err(ApiError::forbidden(format!(
            "the OpenID provider refused the sign-in: {error} {detail}; sign in again at \
             /auth/login"
        )));
    }
    let (Some(code), Some(returned)) = (&query.code, &query.state) else {
        return Err(ApiError::bad_request(
            "the sign-in callback needs code and state parameters; sign in at /auth/login",
        ));
    };
    let (token, next) = oidc
        .finish(code, returned, cookie(&headers, oidc.login_cookie()))
        .await?;
    // A session this browser had before ends: each sign-in gets a token of its own.
    oidc.forget(&headers);
    let cookies = [
        oidc.set_cookie(
            oidc.session_cookie(),
            Some(&token),
            "/",
            oidc.settings.session_ttl,
        ),
        oidc.set_cookie(oidc.login_cookie(), None, "/auth", Duration::ZERO),
    ];
    Ok(redirect(&next, &cookies))
}

/// `POST /auth/logout`: the session ends here (the middleware checked its CSRF token); the
/// answer says where the browser goes next, the provider's end-session page if it has one.
pub async fn logout(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let oidc = state
        .oidc
        .as_ref()
        .ok_or_else(|| not_configured(&state.users))?;
    let next = oidc.end(&headers);
    let clear = oidc.set_cookie(oidc.session_cookie(), None, "/", Duration::ZERO);
    let mut response = (
        [(CACHE_CONTROL, "no-store")],
        axum::Json(serde_json::json!({ "signed_out": true, "redirect": next })),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&clear) {
        response.headers_mut().append(SET_COOKIE, v);
    }
    Ok(response)
}

/// `GET /auth/me`: who requests act for (`user` null: the trust itself) and how they signed
/// on; with a session, its CSRF token and seconds left. 401 when sign-on is required and
/// the request has no session.
pub async fn me(
    State(state): State<Arc<ApiState>>,
    requester: Requester,
    signed_on: Option<Extension<SignedOn>>,
    unidentified: Option<Extension<Unidentified>>,
) -> Response {
    if unidentified.is_some() {
        return sign_in_first(
            "/",
            false,
            "nobody is signed on in this browser; sign in at /auth/login".into(),
        );
    }
    let mut body = serde_json::json!({
        "sign_on": state.users.from.as_str(),
        "trust": state.trust.as_str(),
        "user": requester.user().map(|u| u.id.clone()),
        "role": requester.user().map(|u| u.role.clone()),
    });
    if let Some(Extension(session)) = signed_on {
        body["csrf_token"] = session.csrf.into();
        body["expires_in"] = session.expires_in.as_secs().into();
        body["logout"] = "/auth/logout".into();
    }
    if state.users.from != UsersFrom::Oidc {
        body["logout"] = serde_json::Value::Null;
    }
    ([(CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
}

/// An error and the errors it came from, in one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(json: serde_json::Value) -> Claims {
        let mut base = serde_json::json!({
            "iss": "https://login.trust.nhs.uk",
            "aud": "slidemesh",
            "exp": 2_000_000_000,
            "iat": 1_700_000_000,
            "sub": "5f1c2d3e-0000-4000-8000-000000000001",
        });
        base.as_object_mut()
            .unwrap()
            .extend(json.as_object().unwrap().clone());
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn the_person_is_the_configured_claims_account_and_first_valid_role() {
        let c = claims(serde_json::json!({
            "preferred_username": "jsmith",
            "email": "j.smith@trust.nhs.uk",
            "roles": ["Staff Member", "pathologist", "clinician"],
            "upn": "jsmith@trust",
        }));
        let who = |user: &str, roles: &str| person(&c, user, roles).map(|u| u.to_string());
        assert_eq!(
            who("preferred_username", "roles").unwrap(),
            "jsmith (pathologist)"
        );
        assert_eq!(
            who("sub", "roles").unwrap(),
            "5f1c2d3e-0000-4000-8000-000000000001 (pathologist)"
        );
        assert_eq!(
            who("email", "roles").unwrap(),
            "j.smith@trust.nhs.uk (pathologist)"
        );
        assert_eq!(who("upn", "roles").unwrap(), "jsmith@trust (pathologist)");
        // A role as a single string works too.
        let single = claims(serde_json::json!({"preferred_username": "akhan", "role": "student"}));
        assert_eq!(
            person(&single, "preferred_username", "role")
                .unwrap()
                .to_string(),
            "akhan (student)"
        );
        // No role this node can use, or no account: no sign-on, saying which claim.
        let e = who("preferred_username", "groups").unwrap_err();
        assert!(e.contains("\"groups\"") && e.contains("no role"), "{e}");
        let upper =
            claims(serde_json::json!({"preferred_username": "x", "roles": ["Pathologist"]}));
        let e = person(&upper, "preferred_username", "roles").unwrap_err();
        assert!(e.contains("Pathologist"), "{e}");
        let e = who("nickname", "roles").unwrap_err();
        assert!(e.contains("\"nickname\""), "{e}");
        let spaced =
            claims(serde_json::json!({"preferred_username": "J Smith", "roles": "pathologist"}));
        let e = person(&spaced, "preferred_username", "roles").unwrap_err();
        assert!(e.contains("cannot name a person"), "{e}");
    }

    #[test]
    fn state_changing_requests_need_the_sessions_csrf_token() {
        let session = SignedOn {
            user: UserClaim::new("jsmith", "pathologist").unwrap(),
            csrf: "the-token".into(),
            expires_in: Duration::from_secs(60),
        };
        let with = |token: Option<&str>| {
            let mut h = HeaderMap::new();
            if let Some(t) = token {
                h.insert(CSRF_HEADER, t.parse().unwrap());
            }
            h
        };
        let cases = [
            (Method::GET, None, true),
            (Method::HEAD, None, true),
            (Method::OPTIONS, None, true),
            (Method::POST, Some("the-token"), true),
            (Method::POST, None, false),
            (Method::POST, Some("the-token "), false),
            (Method::POST, Some("another"), false),
            (Method::PUT, None, false),
            (Method::DELETE, Some("the-token"), true),
            (Method::PATCH, Some(""), false),
        ];
        for (method, token, allowed) in cases {
            let got = check_csrf(&method, &with(token), &session);
            assert_eq!(got.is_ok(), allowed, "{method} with {token:?}");
            if let Err(e) = got {
                assert_eq!(e.status, StatusCode::FORBIDDEN);
                assert!(e.message.contains(CSRF_HEADER), "{}", e.message);
            }
        }
    }

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, "a=1; slidemesh-session=tok; b=2".parse().unwrap());
        h.append(COOKIE, "x-slidemesh-session=evil".parse().unwrap());
        assert_eq!(cookie(&h, "slidemesh-session"), Some("tok"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "session"), None);
    }

    #[test]
    fn after_sign_in_the_browser_goes_to_a_path_on_this_node_only() {
        for (next, expected) in [
            (None, "/"),
            (Some("/view/abc?x=1"), "/view/abc?x=1"),
            (Some("https://evil.example/"), "/"),
            (Some("//evil.example/"), "/"),
            (Some("/\\evil.example/"), "/"),
            (Some("view/abc"), "/"),
            (Some("/a\nb"), "/"),
        ] {
            assert_eq!(local_path(next), expected, "{next:?}");
        }
    }

    #[test]
    fn unsigned_pages_go_to_sign_in_and_the_api_answers_401_with_where() {
        let page = sign_in_first("/view/abc?x=1", true, String::new());
        assert_eq!(page.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            page.headers()[LOCATION],
            "/auth/login?next=%2Fview%2Fabc%3Fx%3D1"
        );
        let api = sign_in_first("/api/v1/slides", false, "sign in".into());
        assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
        assert!(open_path("/auth/callback") && open_path("/assets/app.js"));
        assert!(open_path(SIGNED_OUT_PATH) && !open_path("/") && !open_path("/api/v1/slides"));
    }

    #[test]
    fn session_cookies_are_httponly_lax_and_secure_over_https() {
        let users = UsersSection {
            from: UsersFrom::Oidc,
            oidc_redirect_url: "https://slides.trust.nhs.uk/auth/callback".into(),
            ..UsersSection::default()
        };
        assert!(Settings::new(&users, None, false).secure_cookies);
        let plain = UsersSection {
            oidc_redirect_url: "http://127.0.0.1:8080/auth/callback".into(),
            ..users.clone()
        };
        assert!(!Settings::new(&plain, None, false).secure_cookies);
        assert!(Settings::new(&plain, None, true).secure_cookies);
    }
}
