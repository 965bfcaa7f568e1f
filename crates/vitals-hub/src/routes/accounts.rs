//! Accounts: first-run setup, sign-in and sign-out, the current user, users and API tokens.

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use std::net::SocketAddr;
use vitals_store::{NewApiToken, NewSession, NewUser, Role};

use crate::auth::{self, Admin, Via, Viewer};
use crate::error::{ApiError, ApiJson, ApiResult};
use crate::ratelimit::retry_secs;
use crate::state::AppState;

pub const SETUP_TOKEN_KEY: &str = "setup_token_hash";

/// Where the setup token with this hash is kept: one key for a hub on its own (a restart
/// replaces the link); one per link on a shared database, so each replica's printed link
/// works (the first admin is still created once).
pub fn setup_key(store: &dyn vitals_store::Store, hash: &str) -> String {
    if store.shared() {
        format!("{SETUP_TOKEN_KEY}:{hash}")
    } else {
        SETUP_TOKEN_KEY.to_string()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetupBody {
    token: String,
    username: String,
    password: String,
}

/// `GET /api/setup`: whether the hub still needs its first admin.
pub async fn setup_status(State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    Ok(ApiJson(
        json!({"needed": state.store.count_users().await? == 0}),
    ))
}

/// `POST /api/setup {token, username, password}`: creates the first admin with the one-time
/// token printed at start, and signs them in.
pub async fn setup(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(body): ApiJson<SetupBody>,
) -> ApiResult<Response> {
    if let Err(wait) = state.limits.login.check(&peer.ip().to_string()).await {
        return Err(ApiError::too_many(
            retry_secs(wait),
            "too many attempts; wait and retry",
        ));
    }
    auth::check_username(&body.username)?;
    auth::check_password(&body.password)?;
    let hash = hex(&auth::hash_token(&body.token));
    let key = setup_key(&*state.store, &hash);
    let stored = state.store.meta_get(&key).await?;
    if stored
        .as_deref()
        .is_none_or(|s| !auth::constant_time_eq(s.as_bytes(), hash.as_bytes()))
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_setup_token",
            "this setup link is invalid or was already used; restart the hub to get a new one if no admin exists",
        ));
    }
    let password_hash = auth::hash_password_blocking(body.password.clone()).await?;
    let Some(user) = state
        .store
        .create_first_user(NewUser {
            username: body.username,
            role: Role::Admin,
            password_hash,
            now: crate::now_ms(),
        })
        .await?
    else {
        return Err(ApiError::conflict(
            "an admin already exists; sign in instead",
        ));
    };
    state.store.meta_take(&key, &hash).await?;
    tracing::info!(user = %user.username, "first admin created");
    start_session(&state, user, StatusCode::CREATED).await
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    username: String,
    password: String,
}

/// `POST /api/auth/login {username, password}`: sets the session cookie.
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(body): ApiJson<LoginBody>,
) -> ApiResult<Response> {
    let ip = peer.ip().to_string();
    if let Err(wait) = state.limits.login.peek(&ip).await {
        return Err(ApiError::too_many(
            retry_secs(wait),
            "too many failed sign-ins from this address; wait and retry",
        ));
    }
    if body.password.len() > 1024 || body.username.len() > 64 {
        return Err(ApiError::bad_request(
            "invalid_credentials",
            "wrong user name or password",
        ));
    }
    let found = state.store.user_by_name(&body.username).await?;
    // Verify against a dummy hash when the user does not exist, so timing reveals nothing.
    let (user, phc) = match found {
        Some((u, h)) => (Some(u), h),
        None => (None, dummy_hash()),
    };
    let ok = auth::verify_password(body.password, phc).await;
    match (ok, user) {
        (true, Some(user)) => start_session(&state, user, StatusCode::OK).await,
        _ => {
            let _ = state.limits.login.check(&ip).await;
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "wrong user name or password",
            ))
        }
    }
}

/// A real argon2id hash of a random password, so unknown users cost the same time to reject.
fn dummy_hash() -> String {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY
        .get_or_init(|| auth::hash_password(&auth::new_token("")).unwrap_or_default())
        .clone()
}

async fn start_session(
    state: &AppState,
    user: vitals_store::User,
    status: StatusCode,
) -> ApiResult<Response> {
    let token = auth::new_token(auth::SESSION_TOKEN_PREFIX);
    let csrf = auth::new_token("");
    let now = crate::now_ms();
    let ttl_secs = i64::from(state.config.session_ttl_hours) * 3600;
    state
        .store
        .create_session(NewSession {
            token_hash: auth::hash_token(&token),
            user_id: user.id.clone(),
            csrf: csrf.clone(),
            now,
            expires_at: now + ttl_secs * 1000,
        })
        .await?;
    let mut res = (status, axum::Json(json!({"user": user, "csrfToken": csrf}))).into_response();
    for c in auth::session_cookies(&token, &csrf, ttl_secs, state.config.tls()) {
        if let Ok(v) = HeaderValue::from_str(&c) {
            res.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    Ok(res)
}

/// `POST /api/auth/logout`: ends the session (idempotent; also clears cookies).
pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    if let Some(token) = auth::cookie(&headers, auth::SESSION_COOKIE) {
        state.store.delete_session(&auth::hash_token(token)).await?;
    }
    let mut res = StatusCode::NO_CONTENT.into_response();
    for c in auth::clear_cookies(state.config.tls()) {
        if let Ok(v) = HeaderValue::from_str(&c) {
            res.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    Ok(res)
}

/// `GET /api/auth/me`: who is signed in, their role and (for sessions) the CSRF token.
pub async fn me(Viewer(u): Viewer) -> impl IntoResponse {
    let (kind, csrf) = match &u.via {
        Via::Session { csrf, .. } => ("session", Some(csrf.clone())),
        Via::ApiToken { .. } => ("token", None),
    };
    ApiJson(json!({
        "id": u.id, "username": u.name, "role": u.role, "auth": kind, "csrfToken": csrf,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUserBody {
    username: String,
    password: String,
    role: Role,
}

pub async fn list_users(State(state): State<AppState>, _a: Admin) -> ApiResult<impl IntoResponse> {
    Ok(ApiJson(state.store.list_users().await?))
}

pub async fn create_user(
    State(state): State<AppState>,
    _a: Admin,
    ApiJson(body): ApiJson<NewUserBody>,
) -> ApiResult<impl IntoResponse> {
    auth::check_username(&body.username)?;
    auth::check_password(&body.password)?;
    let password_hash = auth::hash_password_blocking(body.password.clone()).await?;
    let user = state
        .store
        .create_user(NewUser {
            username: body.username,
            role: body.role,
            password_hash,
            now: crate::now_ms(),
        })
        .await?;
    Ok((StatusCode::CREATED, ApiJson(user)))
}

pub async fn delete_user(
    State(state): State<AppState>,
    Admin(a): Admin,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if a.id == id {
        return Err(ApiError::bad_request(
            "cannot_delete_self",
            "you cannot delete your own account; ask another admin",
        ));
    }
    if state.store.delete_user(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("user"))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTokenBody {
    name: String,
    role: Role,
}

pub async fn list_tokens(State(state): State<AppState>, _a: Admin) -> ApiResult<impl IntoResponse> {
    Ok(ApiJson(state.store.list_api_tokens().await?))
}

/// `POST /api/tokens {name, role}`: the token is in this answer only.
pub async fn create_token(
    State(state): State<AppState>,
    Admin(a): Admin,
    ApiJson(body): ApiJson<NewTokenBody>,
) -> ApiResult<impl IntoResponse> {
    let name = body.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError::bad_request(
            "invalid_name",
            "a token name is 1 to 100 characters",
        ));
    }
    let token = auth::new_token(auth::API_TOKEN_PREFIX);
    let record = state
        .store
        .create_api_token(NewApiToken {
            name: name.to_string(),
            role: body.role,
            token_hash: auth::hash_token(&token),
            created_by: Some(a.name),
            now: crate::now_ms(),
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        ApiJson(
            json!({"token": token, "id": record.id, "name": record.name, "role": record.role, "createdAt": record.created_at}),
        ),
    ))
}

pub async fn delete_token(
    State(state): State<AppState>,
    _a: Admin,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if state.store.delete_api_token(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("token"))
    }
}
