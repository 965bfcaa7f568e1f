//! `GET /api/store/ws`: seed 001's reactive store protocol, message by message.
//!
//! Server -> client: `welcome {version, serverTime, requiresAuth}` on connect; for each request
//! `{id, type:"result", data}` or `{type:"error", id, code, message}`; and
//! `{type:"push", channel:"subscription", subscriptionId, data}` when a subscribed view changes.
//! Client -> server: `auth.login {token}`, `store.subscribe {query, params}`,
//! `store.unsubscribe {subscriptionId}`, `store.get {bucket, key}`, `store.all {bucket}`,
//! `store.where {bucket, filter}`, `store.count {bucket, filter?}`, `store.insert {bucket, data}`,
//! `store.update {bucket, key, data}`, `store.delete {bucket, key}`, `store.clear {bucket}` and
//! `store.transaction {operations: [{op, bucket, key?, data?}]}`.
//!
//! A connection that arrives with a session cookie or bearer token is signed in already
//! (`requiresAuth: false`); otherwise only `auth.login` is accepted, within 5 seconds.
//! Admins may do everything; viewers may read and subscribe (writes answer `FORBIDDEN`).
//! Client input never closes the connection except by size (1009) or by rate.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::appstore::{MAX_TX_OPS, Op, OpError, bucket_index};
use super::outbox::{self, Outbox};
use super::registry::{Ctx, QueryKey, Subscriber};
use super::{
    AUTH_TIMEOUT, MAX_SUBSCRIPTIONS, MAX_VIEWER_MESSAGE_BYTES, VIEWER_READ_BUFFER, ViewerGuard,
    to_json,
};
use crate::auth::{Principal, UserPrincipal};
use crate::error::ApiError;
use crate::state::AppState;

/// The protocol version announced in `welcome`.
pub const PROTOCOL_VERSION: &str = "1.0.0";

pub async fn handler(
    State(state): State<AppState>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let user = super::upgrade_principal(&state, &headers).await?;
    let outbox = Arc::new(Outbox::new());
    let guard = state
        .live
        .register(user.as_ref(), &outbox)
        .map_err(super::refuse)?;
    Ok(ws
        .max_message_size(MAX_VIEWER_MESSAGE_BYTES)
        .max_frame_size(MAX_VIEWER_MESSAGE_BYTES)
        .read_buffer_size(VIEWER_READ_BUFFER)
        .write_buffer_size(0)
        .on_upgrade(move |socket| serve(state, user, outbox, guard, socket)))
}

fn result_frame(id: &str, data: &str) -> String {
    format!(r#"{{"id":{id},"type":"result","data":{data}}}"#)
}

fn error_frame(id: &str, e: &OpError) -> String {
    format!(
        r#"{{"type":"error","id":{id},"code":"{}","message":{}}}"#,
        e.code,
        Value::from(e.message.as_str())
    )
}

struct Conn {
    state: AppState,
    id: u64,
    user: Option<UserPrincipal>,
    outbox: Arc<Outbox>,
    subs: HashMap<u32, QueryKey>,
    next_sub: u32,
}

async fn serve(
    state: AppState,
    user: Option<UserPrincipal>,
    outbox: Arc<Outbox>,
    guard: ViewerGuard,
    socket: WebSocket,
) {
    let (sink, mut stream) = socket.split();
    let writer = tokio::spawn(outbox::write_loop(
        Arc::clone(&outbox),
        sink,
        state.live.limits.send_timeout,
    ));
    outbox.reply(to_json(&json!({
        "type": "welcome",
        "version": PROTOCOL_VERSION,
        "serverTime": crate::now_ms(),
        "requiresAuth": user.is_none(),
    })));
    let mut conn = Conn {
        state: state.clone(),
        id: guard.id,
        user,
        outbox: Arc::clone(&outbox),
        subs: HashMap::new(),
        next_sub: 1,
    };
    let auth_deadline = tokio::time::sleep(AUTH_TIMEOUT);
    tokio::pin!(auth_deadline);
    loop {
        tokio::select! {
            m = stream.next() => match m {
                Some(Ok(Message::Text(t))) => conn.handle(t.as_str()).await,
                Some(Ok(Message::Binary(_))) => conn.outbox.reply(error_frame(
                    "null",
                    &OpError::new("BAD_REQUEST", "send JSON text frames, not binary"),
                )),
                Some(Ok(Message::Close(_))) | None => {
                    outbox.close(1000, "bye");
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    let text = e.to_string();
                    if text.contains("too long") || text.contains("Space limit") {
                        outbox.close(
                            outbox::CLOSE_TOO_BIG,
                            format!("message too large: at most {MAX_VIEWER_MESSAGE_BYTES} bytes"),
                        );
                    } else {
                        outbox.close(outbox::CLOSE_GOING_AWAY, "socket error");
                    }
                    break;
                }
            },
            _ = &mut auth_deadline, if conn.user.is_none() => {
                outbox.close(
                    outbox::CLOSE_AUTH_TIMEOUT,
                    "authentication timeout: send auth.login within 5 s",
                );
                break;
            }
            _ = outbox.closed.cancelled() => break,
            _ = state.shutdown.cancelled() => {
                outbox.close(outbox::CLOSE_GOING_AWAY, "hub shutting down");
                break;
            }
        }
    }
    for (sub, key) in conn.subs.drain() {
        state.live.registry.unsubscribe(&key, conn.id, sub);
    }
    let _ = writer.await;
    drop(guard);
}

fn str_field<'a>(v: &'a Value, name: &str) -> Result<&'a str, OpError> {
    v.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| OpError::new("VALIDATION_ERROR", format!("`{name}` must be a string")))
}

/// The record key of a request (`key`, or `id` as an alias).
fn key_field(v: &Value) -> Result<String, OpError> {
    v.get("key")
        .or_else(|| v.get("id").filter(|_| v.get("op").is_some()))
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| OpError::new("VALIDATION_ERROR", "`key` must be a string"))
}

fn parse_op(kind: &str, v: &Value) -> Result<Op, OpError> {
    let bucket = bucket_index(str_field(v, "bucket")?)?;
    let data = || {
        v.get("data")
            .filter(|d| d.is_object())
            .cloned()
            .ok_or_else(|| OpError::new("VALIDATION_ERROR", "`data` must be an object"))
    };
    Ok(match kind {
        "insert" => Op::Insert {
            bucket,
            data: data()?,
        },
        "update" => Op::Update {
            bucket,
            key: key_field(v)?,
            data: data()?,
        },
        "delete" => Op::Delete {
            bucket,
            key: key_field(v)?,
        },
        "clear" => Op::Clear { bucket },
        other => {
            return Err(OpError::new(
                "VALIDATION_ERROR",
                format!("unknown operation {other:?}; use insert, update, delete or clear"),
            ));
        }
    })
}

impl Conn {
    async fn handle(&mut self, text: &str) {
        let v: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                let err = OpError::new("BAD_REQUEST", format!("not valid JSON: {e}"));
                self.outbox.reply(error_frame("null", &err));
                return;
            }
        };
        let id = match v.get("id") {
            Some(i @ (Value::Number(_) | Value::String(_))) => i.to_string(),
            _ => "null".to_string(),
        };
        match self.dispatch(&v, &id).await {
            Ok(Some(data)) => self.outbox.reply(result_frame(&id, &data)),
            Ok(None) => {}
            Err(e) => self.outbox.reply(error_frame(&id, &e)),
        }
    }

    /// Answers one request; `Ok(None)` when the reply was already queued.
    async fn dispatch(&mut self, v: &Value, id: &str) -> Result<Option<String>, OpError> {
        let Some(ty) = v.get("type").and_then(Value::as_str) else {
            return Err(OpError::new(
                "BAD_REQUEST",
                "a request needs a string `type`",
            ));
        };
        if ty == "auth.login" {
            return self.login(v).await.map(Some);
        }
        let Some(user) = self.user.clone() else {
            return Err(OpError::new(
                "UNAUTHORIZED",
                "authenticate first with auth.login {token}",
            ));
        };
        let app = &self.state.live.app;
        match ty {
            "auth.logout" => {
                for (sub, key) in self.subs.drain() {
                    self.state.live.registry.unsubscribe(&key, self.id, sub);
                }
                self.user = None;
                Ok(Some(r#"{"loggedOut":true}"#.into()))
            }
            "store.subscribe" => self.subscribe(v, id).await.map(|()| None),
            "store.unsubscribe" => {
                let sid = str_field(v, "subscriptionId")?;
                let n = sid
                    .strip_prefix("sub-")
                    .and_then(|n| n.parse::<u32>().ok())
                    .filter(|n| self.subs.contains_key(n));
                let Some(n) = n else {
                    return Err(OpError::new(
                        "NOT_FOUND",
                        format!("no subscription {sid:?} on this connection"),
                    ));
                };
                if let Some(key) = self.subs.remove(&n) {
                    self.state.live.registry.unsubscribe(&key, self.id, n);
                }
                Ok(Some(r#"{"unsubscribed":true}"#.into()))
            }
            "store.get" => {
                let b = bucket_index(str_field(v, "bucket")?)?;
                let key = key_field(v)?;
                Ok(Some(
                    app.read(|d| d.get_json(b, &key))
                        .map_or_else(|| "null".into(), |j| j.to_string()),
                ))
            }
            "store.all" => {
                let b = bucket_index(str_field(v, "bucket")?)?;
                Ok(Some(app.read(|d| d.all_json(b))))
            }
            "store.where" => {
                let b = bucket_index(str_field(v, "bucket")?)?;
                let Some(filter) = v.get("filter").and_then(Value::as_object) else {
                    return Err(OpError::new(
                        "VALIDATION_ERROR",
                        "`filter` must be an object of field: value",
                    ));
                };
                Ok(Some(app.read(|d| d.where_json(b, filter))))
            }
            "store.count" => {
                let b = bucket_index(str_field(v, "bucket")?)?;
                let filter = v.get("filter").and_then(Value::as_object);
                Ok(Some(app.read(|d| d.count(b, filter)).to_string()))
            }
            "store.insert" | "store.update" | "store.delete" | "store.clear"
            | "store.transaction" => {
                if !user.is_admin() {
                    let bucket = v
                        .get("bucket")
                        .and_then(Value::as_str)
                        .or_else(|| {
                            v.get("operations")?
                                .as_array()?
                                .first()?
                                .get("bucket")?
                                .as_str()
                        })
                        .unwrap_or("*");
                    return Err(OpError::new(
                        "FORBIDDEN",
                        format!("No permission for {ty} on {bucket}"),
                    ));
                }
                self.write(ty, v).await.map(Some)
            }
            other => Err(OpError::new(
                "BAD_REQUEST",
                format!("unknown request type {other:?}"),
            )),
        }
    }

    async fn login(&mut self, v: &Value) -> Result<String, OpError> {
        let token = str_field(v, "token")?;
        if token.len() > 256 {
            return Err(OpError::new("UNAUTHORIZED", "invalid token"));
        }
        if self
            .state
            .limits
            .login
            .check(&format!("live-login:{}", self.id))
            .await
            .is_err()
        {
            return Err(OpError::new(
                "RATE_LIMITED",
                "too many sign-in attempts on this connection; wait a little",
            ));
        }
        let principal = crate::auth::resolve_token(&self.state, token)
            .await
            .map_err(|_| OpError::new("INTERNAL_ERROR", "the hub could not check the token"))?;
        match principal {
            Some(Principal::User(u)) => {
                self.state.live.set_user(self.id, &u)?;
                let data = to_json(&json!({"userId": u.id, "roles": [u.role.as_str()]}));
                self.user = Some(u);
                Ok(data)
            }
            Some(Principal::Device(_)) => Err(OpError::new(
                "UNAUTHORIZED",
                "device tokens cannot sign in here; use a session or API token",
            )),
            None => Err(OpError::new("UNAUTHORIZED", "invalid or expired token")),
        }
    }

    async fn subscribe(&mut self, v: &Value, id: &str) -> Result<(), OpError> {
        let query = str_field(v, "query")?;
        let params = v.get("params").cloned().unwrap_or(Value::Null);
        let key = QueryKey::parse(query, &params)?;
        if self.subs.len() >= MAX_SUBSCRIPTIONS {
            return Err(OpError::new(
                "RATE_LIMITED",
                format!("at most {MAX_SUBSCRIPTIONS} subscriptions per connection"),
            ));
        }
        if self
            .state
            .live
            .subscribes
            .check(&self.id.to_string())
            .is_err()
        {
            return Err(OpError::new(
                "RATE_LIMITED",
                "too many subscribes; slow down",
            ));
        }
        let live = &self.state.live;
        let mut preload = Vec::new();
        if let Some(dev) = key.device() {
            if !live.registry.has_device(dev) {
                return Err(OpError::new("NOT_FOUND", format!("no device {dev:?}")));
            }
            if let QueryKey::DeviceSeries(_, secs) = &key {
                let now = crate::now_ms();
                if let Ok(Some(d)) = self.state.store.device(dev).await
                    && let Ok(rows) = self
                        .state
                        .store
                        .samples(
                            d.seq,
                            now - i64::from(*secs) * 1000,
                            now,
                            &vitals_store::SeriesFilter::all(),
                        )
                        .await
                {
                    preload = crate::state::LiveSample::from_frame(&rows, &d.host_id);
                }
            }
        }
        let n = self.next_sub;
        self.next_sub += 1;
        self.subs.insert(n, key.clone());
        let outbox = Arc::clone(&self.outbox);
        live.registry.subscribe(
            key,
            Subscriber {
                conn: self.id,
                sub: n,
                outbox: &self.outbox,
            },
            preload,
            &live.app,
            Ctx::of(&self.state),
            |data| {
                outbox.reply(result_frame(
                    id,
                    &format!(r#"{{"subscriptionId":"sub-{n}","data":{data}}}"#),
                ))
            },
        );
        Ok(())
    }

    async fn write(&mut self, ty: &str, v: &Value) -> Result<String, OpError> {
        let now = crate::now_ms();
        let app = &self.state.live.app;
        if ty == "store.transaction" {
            let Some(list) = v.get("operations").and_then(Value::as_array) else {
                return Err(OpError::new(
                    "VALIDATION_ERROR",
                    "`operations` must be an array",
                ));
            };
            if list.is_empty() || list.len() > MAX_TX_OPS {
                return Err(OpError::new(
                    "VALIDATION_ERROR",
                    format!("a transaction has 1 to {MAX_TX_OPS} operations"),
                ));
            }
            let mut ops = Vec::with_capacity(list.len());
            for (i, o) in list.iter().enumerate() {
                let kind = o.get("op").and_then(Value::as_str).unwrap_or("");
                ops.push(parse_op(kind, o).map_err(|e| OpError {
                    message: format!("operation {i}: {}", e.message),
                    ..e
                })?);
            }
            let results = app.execute(ops, now).await?;
            let mut out = String::from(r#"{"results":["#);
            for (i, r) in results.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&format!(r#"{{"index":{i},"data":{r}}}"#));
            }
            out.push_str("]}");
            return Ok(out);
        }
        let kind = ty.trim_start_matches("store.");
        let op = parse_op(kind, v)?;
        let mut results = app.execute(vec![op], now).await?;
        Ok(results.pop().unwrap_or_else(|| "null".into()))
    }
}
