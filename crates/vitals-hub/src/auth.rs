//! Who is calling: passwords (argon2id), random tokens stored as SHA-256, session cookies with
//! CSRF protection, and the extractors handlers use to require a role.
//!
//! Credentials, in the order they are looked at:
//! - `Authorization: Bearer vat_...` an API token (a user-like principal with the token's role);
//! - `Authorization: Bearer vdt_...` a device token (only for agent routes);
//! - the `vitals_session` cookie (HttpOnly, SameSite=Strict, Secure under TLS). Writes made
//!   with a cookie must carry the session's CSRF token in `X-CSRF-Token`.
//!
//! Every token is 256 random bits; only its SHA-256 is stored.

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Argon2, PasswordHash};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use vitals_store::{Device, Role};

use crate::error::ApiError;
use crate::state::AppState;

pub const SESSION_COOKIE: &str = "vitals_session";
pub const CSRF_COOKIE: &str = "vitals_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";
pub const API_TOKEN_PREFIX: &str = "vat_";
pub const DEVICE_TOKEN_PREFIX: &str = "vdt_";
pub const SESSION_TOKEN_PREFIX: &str = "vst_";

/// A new random token: `prefix` + 256 bits in URL-safe base64.
pub fn new_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// What the store keeps of a token.
pub fn hash_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// An argon2id PHC string with a fresh salt.
pub fn hash_password(password: &str) -> Result<String, ApiError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(ApiError::internal)
}

/// [`hash_password`] in a blocking thread, for request handlers: argon2 is slow on purpose,
/// and the async workers (one on a 2-core machine) also serve agents' acknowledgements.
pub async fn hash_password_blocking(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(ApiError::internal)?
}

/// Checks a password against a stored PHC string. Runs in a blocking thread: argon2 is slow
/// on purpose.
pub async fn verify_password(password: String, phc: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&phc)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// Validates a new password: 8..=1024 bytes.
pub fn check_password(password: &str) -> Result<(), ApiError> {
    if password.chars().count() < 8 || password.len() > 1024 {
        return Err(ApiError::bad_request(
            "invalid_password",
            "a password must be 8 to 1024 characters long",
        ));
    }
    Ok(())
}

/// Validates a user name: 1..=64 of letters, digits, `.`, `_`, `-`, `@`.
pub fn check_username(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if !ok {
        return Err(ApiError::bad_request(
            "invalid_username",
            "a user name is 1 to 64 letters, digits, '.', '_', '-' or '@'",
        ));
    }
    Ok(())
}

/// How a user principal authenticated.
#[derive(Debug, Clone, PartialEq)]
pub enum Via {
    Session { token_hash: Vec<u8>, csrf: String },
    ApiToken { id: String },
}

/// A person or script acting with a role.
#[derive(Debug, Clone, PartialEq)]
pub struct UserPrincipal {
    /// The user id, or `token:<id>` for API tokens.
    pub id: String,
    pub name: String,
    pub role: Role,
    pub via: Via,
}

impl UserPrincipal {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

#[derive(Debug, Clone)]
pub enum Principal {
    User(UserPrincipal),
    Device(Device),
}

/// Reads a cookie from the request headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Resolves a bearer or session token to a principal (None if unknown, revoked or expired).
pub async fn resolve_token(state: &AppState, token: &str) -> Result<Option<Principal>, ApiError> {
    let hash = hash_token(token);
    if token.starts_with(API_TOKEN_PREFIX) {
        return Ok(state.store.api_token_by_hash(&hash).await?.map(|t| {
            Principal::User(UserPrincipal {
                id: format!("token:{}", t.id),
                name: t.name,
                role: t.role,
                via: Via::ApiToken { id: t.id },
            })
        }));
    }
    if token.starts_with(DEVICE_TOKEN_PREFIX) {
        return Ok(state
            .store
            .device_by_token(&hash)
            .await?
            .map(Principal::Device));
    }
    if token.starts_with(SESSION_TOKEN_PREFIX) {
        let now = crate::now_ms();
        return Ok(state.store.session(&hash, now).await?.map(|(s, u)| {
            Principal::User(UserPrincipal {
                id: u.id,
                name: u.username,
                role: u.role,
                via: Via::Session {
                    token_hash: hash,
                    csrf: s.csrf,
                },
            })
        }));
    }
    Ok(None)
}

/// Resolves the request's credentials. `Ok(None)` for anonymous requests.
pub async fn principal_from_headers(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Principal>, ApiError> {
    if let Some(token) = bearer(headers) {
        return match resolve_token(state, token).await? {
            Some(p) => Ok(Some(p)),
            None => Err(ApiError::unauthorized()),
        };
    }
    if let Some(token) = cookie(headers, SESSION_COOKIE) {
        return resolve_token(state, token).await;
    }
    Ok(None)
}

fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Cookie-authenticated writes need the CSRF header, and a browser Origin (when sent) must be
/// the hub's own or an allowed one.
fn check_csrf(state: &AppState, parts: &Parts, user: &UserPrincipal) -> Result<(), ApiError> {
    let Via::Session { csrf, .. } = &user.via else {
        return Ok(());
    };
    if !is_write(&parts.method) {
        return Ok(());
    }
    let sent = parts
        .headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !constant_time_eq(sent.as_bytes(), csrf.as_bytes()) {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "csrf_failed",
            "cookie-authenticated writes need the X-CSRF-Token header from /api/auth/me",
        ));
    }
    if !crate::origin::allowed(state, &parts.headers) {
        return Err(ApiError::forbidden("the request's Origin is not allowed"));
    }
    Ok(())
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn user_principal(parts: &mut Parts, state: &AppState) -> Result<UserPrincipal, ApiError> {
    match principal_from_headers(state, &parts.headers).await? {
        None => Err(ApiError::unauthorized()),
        Some(Principal::Device(_)) => Err(ApiError::forbidden(
            "device tokens may only send metrics; use a user session or API token",
        )),
        Some(Principal::User(u)) => {
            check_csrf(state, parts, &u)?;
            Ok(u)
        }
    }
}

/// Any signed-in user or API token (viewer or admin). Viewers are refused on writes: a
/// handler that writes must take [`Admin`] instead.
pub struct Viewer(pub UserPrincipal);

impl FromRequestParts<AppState> for Viewer {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let u = user_principal(parts, state).await?;
        if is_write(&parts.method) && !u.is_admin() {
            return Err(ApiError::forbidden("viewers may only read; ask an admin"));
        }
        Ok(Viewer(u))
    }
}

/// An admin user or admin API token.
pub struct Admin(pub UserPrincipal);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let u = user_principal(parts, state).await?;
        if !u.is_admin() {
            return Err(ApiError::forbidden(
                "this needs the admin role; viewers may only read",
            ));
        }
        Ok(Admin(u))
    }
}

/// A device authenticated by its bearer token (agent routes).
pub struct DeviceAuth(pub Device);

impl FromRequestParts<AppState> for DeviceAuth {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(token) = bearer(&parts.headers) else {
            return match principal_from_headers(state, &parts.headers).await? {
                Some(_) => Err(ApiError::forbidden(
                    "this route takes a device token (from pairing), not a user session",
                )),
                None => Err(ApiError::unauthorized()),
            };
        };
        match resolve_token(state, token).await? {
            Some(Principal::Device(d)) => Ok(DeviceAuth(d)),
            Some(Principal::User(_)) => Err(ApiError::forbidden(
                "this route takes a device token (from pairing), not a user token",
            )),
            None => Err(ApiError::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the device token is unknown or was revoked; pair the agent again",
            )),
        }
    }
}

/// `Set-Cookie` values for a new session.
pub fn session_cookies(token: &str, csrf: &str, max_age_secs: i64, secure: bool) -> [String; 2] {
    let sec = if secure { "; Secure" } else { "" };
    [
        format!(
            "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{sec}"
        ),
        format!("{CSRF_COOKIE}={csrf}; Path=/; SameSite=Strict; Max-Age={max_age_secs}{sec}"),
    ]
}

/// `Set-Cookie` values that clear the session.
pub fn clear_cookies(secure: bool) -> [String; 2] {
    let sec = if secure { "; Secure" } else { "" };
    [
        format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{sec}"),
        format!("{CSRF_COOKIE}=; Path=/; SameSite=Strict; Max-Age=0{sec}"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_prefixed() {
        let a = new_token(API_TOKEN_PREFIX);
        let b = new_token(API_TOKEN_PREFIX);
        assert_ne!(a, b);
        assert!(a.starts_with("vat_"));
        assert_eq!(a.len(), 4 + 43, "256 bits in base64url");
        assert_eq!(hash_token(&a).len(), 32);
    }

    #[tokio::test]
    async fn argon2id_round_trip() {
        let h = hash_password("correct horse").expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse".into(), h.clone()).await);
        assert!(!verify_password("wrong".into(), h).await);
    }

    #[test]
    fn cookies_parse() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; vitals_session=vst_x; b=2".parse().expect("header"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("vst_x"));
        assert_eq!(cookie(&h, "zzz"), None);
    }
}
