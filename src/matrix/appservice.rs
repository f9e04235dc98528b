//! The HTTP API the homeserver calls (Application Service API v1).
//!
//! Every request must carry the `hs_token` (compared in constant time). A transaction is stored
//! whole (id and events) in the database before it is answered, so nothing the homeserver counts
//! as delivered can be lost; a repeated transaction id is answered 200 without doing anything.
//! Events are checked only for the minimal shape needed to route them: one bad event is logged
//! and skipped, it never fails the transaction. Crypto inputs (to-device events, device lists,
//! key counts) are stored with the events, as one entry ahead of them, when encryption is on.

use std::{sync::Arc, time::Instant};

use async_trait::async_trait;
use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, Query, State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use serde::Deserialize;
use serde_json::{json, value::RawValue};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{
    db::{Db, inbox::InboxEntry},
    metrics::Metrics,
};

/// What the appservice layer asks of the bridge.
#[async_trait]
pub trait AppserviceHandler: Send + Sync + 'static {
    /// Stored events to handle, in order. May wait (back-pressure) but must not lose them.
    async fn events(&self, entries: Vec<InboxEntry>);
    /// Ephemeral events (typing, receipts, presence) of a new transaction. Not stored: the
    /// homeserver itself drops them while the appservice is down, so they are best-effort.
    async fn ephemeral(&self, _events: Vec<String>) {}
    /// Does this user id exist in our namespace (creating the ghost if it can)?
    async fn query_user(&self, user_id: &str) -> bool;
    /// Does this alias exist in our namespace?
    async fn query_alias(&self, _alias: &str) -> bool {
        false
    }
}

struct AppState {
    hs_token_hash: [u8; 32],
    /// Store the transactions' crypto inputs (to-device, device lists, key counts).
    crypto_inputs: bool,
    db: Db,
    handler: Arc<dyn AppserviceHandler>,
    metrics: Arc<Metrics>,
}

/// Builds the router. `max_body` bounds transaction bodies.
pub fn router(
    hs_token: &str,
    db: Db,
    handler: Arc<dyn AppserviceHandler>,
    metrics: Arc<Metrics>,
    max_body: usize,
    crypto_inputs: bool,
) -> Router {
    let state = Arc::new(AppState {
        hs_token_hash: Sha256::digest(hs_token).into(),
        crypto_inputs,
        db,
        handler,
        metrics,
    });
    Router::new()
        .route("/_matrix/app/v1/transactions/{txn_id}", put(transaction))
        .route("/_matrix/app/v1/users/{user_id}", get(query_user))
        .route("/_matrix/app/v1/rooms/{alias}", get(query_alias))
        .route("/_matrix/app/v1/ping", post(ping))
        .route("/health", get(|| async { "ok" }))
        .fallback(|| async {
            matrix_error(
                StatusCode::NOT_FOUND,
                "M_UNRECOGNIZED",
                "Unrecognized request",
            )
        })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

fn matrix_error(status: StatusCode, errcode: &str, error: &str) -> Response {
    (status, Json(json!({"errcode": errcode, "error": error}))).into_response()
}

#[derive(Deserialize)]
struct TokenQuery {
    access_token: Option<String>,
}

/// Checks the homeserver's token: 401 when missing, 403 when wrong (spec).
fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    query: &TokenQuery,
) -> Result<(), Box<Response>> {
    let from_header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(token) = from_header.or(query.access_token.as_deref()) else {
        return Err(Box::new(matrix_error(
            StatusCode::UNAUTHORIZED,
            "M_UNAUTHORIZED",
            "Missing access token",
        )));
    };
    let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    if bool::from(presented.ct_eq(&state.hs_token_hash)) {
        Ok(())
    } else {
        Err(Box::new(matrix_error(
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
            "Invalid access token",
        )))
    }
}

#[derive(Deserialize)]
struct Transaction<'a> {
    #[serde(borrow, default)]
    events: Vec<&'a RawValue>,
    /// Best-effort data: kept raw so a malformed one never fails the transaction.
    #[serde(borrow, default)]
    ephemeral: Option<&'a RawValue>,
    /// Synapse sends ephemeral events under both names; the unstable one is the fallback.
    #[serde(borrow, default, rename = "de.sorunome.msc2409.ephemeral")]
    unstable_ephemeral: Option<&'a RawValue>,
}

/// The least an event must have to be routed.
#[derive(Deserialize)]
struct EventShape<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    event_id: Option<std::borrow::Cow<'a, str>>,
}

/// The key a transaction is remembered by: its id plus a digest of its events' ids.
///
/// The spec makes transaction ids unique, but Synapse on SQLite numbers them from 1 again after
/// every restart (its in-memory sequence restarts from the highest id still stored, and
/// delivered transactions are deleted). Keyed by id alone, every transaction after such a
/// restart would be taken for a repeat and dropped. A real repeat (a retry) carries the same
/// events, so it still matches; a reused id with new events does not.
fn dedupe_key(txn_id: &str, event_ids: &[&str], body: &[u8]) -> String {
    let mut digest = Sha256::new();
    if event_ids.is_empty() {
        digest.update(body);
    } else {
        for id in event_ids {
            digest.update(id.as_bytes());
            digest.update([0]);
        }
    }
    format!("{txn_id}#{}", hex::encode(&digest.finalize()[..12]))
}

/// Parses a transaction body. It must be a JSON object: serde would also read the struct from
/// an array (its fields in order), so `[[...]]` would pass as `{"events": [...]}`.
fn parse_transaction(body: &[u8]) -> Result<Transaction<'_>, serde_json::Error> {
    if !body.trim_ascii_start().starts_with(b"{") {
        return Err(serde::de::Error::custom(
            "a transaction must be a JSON object",
        ));
    }
    serde_json::from_slice(body)
}

async fn transaction(
    State(state): State<Arc<AppState>>,
    Path(txn_id): Path<String>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    if let Err(resp) = authorize(&state, &headers, &query) {
        state
            .metrics
            .transactions
            .with_label_values(&["unauthorized"])
            .inc();
        return *resp;
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            state
                .metrics
                .transactions
                .with_label_values(&["rejected"])
                .inc();
            let status = rejection.status();
            let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "M_TOO_LARGE"
            } else {
                "M_UNKNOWN"
            };
            return matrix_error(status, code, &rejection.body_text());
        }
    };
    if txn_id.is_empty() || txn_id.len() > 255 {
        state
            .metrics
            .transactions
            .with_label_values(&["rejected"])
            .inc();
        return matrix_error(
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
            "Invalid transaction id",
        );
    }
    let txn: Transaction<'_> = match parse_transaction(&body) {
        Ok(txn) => txn,
        Err(err) => {
            state
                .metrics
                .transactions
                .with_label_values(&["rejected"])
                .inc();
            tracing::warn!(%txn_id, %err, "malformed transaction refused");
            return matrix_error(
                StatusCode::BAD_REQUEST,
                "M_BAD_JSON",
                "Transaction body is not valid JSON",
            );
        }
    };
    let mut events = Vec::with_capacity(txn.events.len());
    let mut event_ids = Vec::with_capacity(txn.events.len());
    for raw in &txn.events {
        match serde_json::from_str::<EventShape<'_>>(raw.get()) {
            Ok(shape) => {
                if let Some(id) = &shape.event_id {
                    event_ids.push(id.clone());
                }
                state
                    .metrics
                    .events_received
                    .with_label_values(&[metric_event_type(&shape.kind)])
                    .inc();
                events.push(raw.get().to_owned());
                event_ids.push(shape.event_id.unwrap_or_default());
            }
            Err(err) => tracing::warn!(%txn_id, %err, "skipping an event that does not parse"),
        }
    }
    // Crypto inputs go first, so room keys reach the machines before the events they decrypt.
    if state.crypto_inputs
        && let Some(input) = crate::crypto::inputs::CryptoInput::from_transaction(&body)
    {
        events.insert(0, input.to_stored());
    }
    let ids: Vec<&str> = event_ids.iter().map(|id| id.as_ref()).collect();
    let key = dedupe_key(&txn_id, &ids, &body);
    let stored = match state.db.store_transaction(&key, &events).await {
        Ok(stored) => stored,
        Err(err) => {
            tracing::error!(%txn_id, %err, "cannot store transaction; the homeserver will retry");
            state
                .metrics
                .transactions
                .with_label_values(&["failed"])
                .inc();
            return matrix_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "M_UNKNOWN",
                "Cannot store the transaction",
            );
        }
    };
    match stored {
        None => {
            tracing::debug!(%txn_id, "repeated transaction answered without handling");
            state
                .metrics
                .transactions
                .with_label_values(&["duplicate"])
                .inc();
        }
        Some(entries) => {
            state
                .metrics
                .transactions
                .with_label_values(&["stored"])
                .inc();
            if !entries.is_empty() {
                state.handler.events(entries).await;
            }
            fn list(raw: Option<&RawValue>) -> Vec<&RawValue> {
                raw.and_then(|r| serde_json::from_str::<Vec<&RawValue>>(r.get()).ok())
                    .unwrap_or_default()
            }
            let stable = list(txn.ephemeral);
            let ephemeral = if stable.is_empty() {
                list(txn.unstable_ephemeral)
            } else {
                stable
            };
            let ephemeral = &ephemeral;
            if !ephemeral.is_empty() {
                state
                    .handler
                    .ephemeral(ephemeral.iter().map(|raw| raw.get().to_owned()).collect())
                    .await;
            }
        }
    }
    state
        .metrics
        .txn_ack_seconds
        .observe(started.elapsed().as_secs_f64());
    (StatusCode::OK, Json(json!({}))).into_response()
}

/// Bounds the label set: unknown event types share one label.
fn metric_event_type(kind: &str) -> &'static str {
    match kind {
        "m.room.message" => "m.room.message",
        "m.room.member" => "m.room.member",
        "m.room.encrypted" => "m.room.encrypted",
        "m.reaction" => "m.reaction",
        "m.room.redaction" => "m.room.redaction",
        k if k.starts_with("m.room.") => "m.room.other_state",
        _ => "other",
    }
}

async fn query_user(
    State(state): State<Arc<AppState>>,
    Path(user_id): Path<String>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
) -> Response {
    let handler = state.handler.clone();
    answer_query(
        &state,
        &headers,
        &query,
        "users",
        "No such user",
        handler.query_user(&user_id),
    )
    .await
}

async fn query_alias(
    State(state): State<Arc<AppState>>,
    Path(alias): Path<String>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
) -> Response {
    let handler = state.handler.clone();
    answer_query(
        &state,
        &headers,
        &query,
        "rooms",
        "No such room alias",
        handler.query_alias(&alias),
    )
    .await
}

/// The shared shape of the user and alias queries: authorize, ask, time it, answer 200 or 404.
/// `ask` is lazy: nothing runs before the token is checked.
async fn answer_query(
    state: &AppState,
    headers: &HeaderMap,
    query: &TokenQuery,
    endpoint: &str,
    missing: &str,
    ask: impl std::future::Future<Output = bool>,
) -> Response {
    if let Err(resp) = authorize(state, headers, query) {
        return *resp;
    }
    let started = Instant::now();
    let exists = ask.await;
    state
        .metrics
        .as_query_seconds
        .with_label_values(&[endpoint])
        .observe(started.elapsed().as_secs_f64());
    if exists {
        (StatusCode::OK, Json(json!({}))).into_response()
    } else {
        matrix_error(StatusCode::NOT_FOUND, "M_NOT_FOUND", missing)
    }
}

async fn ping(
    State(state): State<Arc<AppState>>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(resp) = authorize(&state, &headers, &query) {
        return *resp;
    }
    (StatusCode::OK, Json(json!({}))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_match_and_reused_ids_with_new_events_do_not() {
        let a = dedupe_key("1", &["$a", "$b"], b"x");
        assert_eq!(
            a,
            dedupe_key("1", &["$a", "$b"], b"other body, same events")
        );
        assert_ne!(
            a,
            dedupe_key("1", &["$c"], b"x"),
            "Synapse reused the id for new events"
        );
        assert_ne!(a, dedupe_key("2", &["$a", "$b"], b"x"));
        assert_ne!(
            dedupe_key("1", &["$ab"], b""),
            dedupe_key("1", &["$a", "b"], b""),
            "ids are delimited"
        );
        assert_eq!(dedupe_key("9", &[], b"{}"), dedupe_key("9", &[], b"{}"));
    }

    #[test]
    fn only_a_json_object_is_a_transaction() {
        let txn = parse_transaction(br#" {"events": [{"type": "x"}]}"#).expect("object");
        assert_eq!(txn.events.len(), 1);
        // An array would otherwise be read as the struct's fields in order.
        assert!(parse_transaction(br#"[[{"type": "x"}]]"#).is_err());
        assert!(parse_transaction(b"[]").is_err());
        assert!(parse_transaction(b"").is_err());
        assert!(parse_transaction(b"null").is_err());
    }
}
