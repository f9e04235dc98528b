//! The client API (`/v1`), the part of the protocol ferry's sim client speaks.
//!
//! Handlers only unpack the request and call [`Sim`]; validation and errors live there. The
//! network switch and the event socket are wired in `router.rs` and `events_ws.rs`.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::extract::{Authed, JsonBody, PathParams};
use super::model::{Chat, LoginFinished, LoginStarted, Message, User};
use super::state::Sim;

/// The `/v1` routes other than the event socket.
pub(crate) fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/v1/login/start", post(login_start))
        .route("/v1/login/finish", post(login_finish))
        .route("/v1/logout", post(logout))
        .route("/v1/me", get(me))
        .route("/v1/chats", get(chats))
        .route("/v1/chats/{id}", get(chat))
        .route("/v1/chats/{id}/messages", post(send))
        .route("/v1/users/{id}", get(user))
        .route("/v1/media/{id}", get(media))
}

async fn media(
    State(sim): State<Arc<Sim>>,
    _authed: Authed,
    PathParams(id): PathParams<String>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let (content_type, data) = sim.media(&id)?;
    Ok(([(axum::http::header::CONTENT_TYPE, content_type)], data).into_response())
}

#[derive(Debug, Deserialize)]
struct LoginStart {
    username: String,
}

async fn login_start(
    State(sim): State<Arc<Sim>>,
    JsonBody(body): JsonBody<LoginStart>,
) -> Result<Json<LoginStarted>, ApiError> {
    sim.login_start(&body.username).map(Json)
}

#[derive(Debug, Deserialize)]
struct LoginFinish {
    flow_id: String,
    code: String,
}

async fn login_finish(
    State(sim): State<Arc<Sim>>,
    JsonBody(body): JsonBody<LoginFinish>,
) -> Result<Json<LoginFinished>, ApiError> {
    sim.login_finish(&body.flow_id, &body.code).map(Json)
}

async fn logout(State(sim): State<Arc<Sim>>, authed: Authed) -> Result<Json<Value>, ApiError> {
    sim.logout(&authed.token)?;
    Ok(Json(json!({})))
}

async fn me(State(sim): State<Arc<Sim>>, authed: Authed) -> Result<Json<User>, ApiError> {
    sim.user(&authed.account).map(Json)
}

async fn chats(State(sim): State<Arc<Sim>>, authed: Authed) -> Json<Value> {
    Json(json!({ "chats": sim.chats_of(&authed.account) }))
}

async fn chat(
    State(sim): State<Arc<Sim>>,
    authed: Authed,
    PathParams(id): PathParams<String>,
) -> Result<Json<Chat>, ApiError> {
    sim.chat_for(&authed.account, &id).map(Json)
}

async fn user(
    State(sim): State<Arc<Sim>>,
    _authed: Authed,
    PathParams(id): PathParams<String>,
) -> Result<Json<User>, ApiError> {
    sim.user(&id).map(Json)
}

#[derive(Debug, Deserialize)]
struct Send {
    txn_id: String,
    text: String,
}

async fn send(
    State(sim): State<Arc<Sim>>,
    authed: Authed,
    PathParams(chat_id): PathParams<String>,
    JsonBody(body): JsonBody<Send>,
) -> Result<Json<Message>, ApiError> {
    sim.send_as(&authed.account, &chat_id, &body.txn_id, &body.text)
        .map(Json)
}
