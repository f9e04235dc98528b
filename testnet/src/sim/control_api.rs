//! The control API (`/control`): what tests and the demo use to play the rest of the network.
//!
//! No authentication and unaffected by the network switch, so a test can always set up and
//! inspect the world. Handlers only unpack the request and call [`Sim`].

use std::sync::Arc;

use axum::extract::State;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::extract::{JsonBody, PathParams};
use super::model::{Chat, Message, User};
use super::state::Sim;

/// The `/control` routes.
pub(crate) fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/control/users", post(create_user))
        .route("/control/users/{id}/avatar", axum::routing::put(set_avatar))
        .route("/control/login-code/{username}", get(login_code))
        .route("/control/dms", post(ensure_dm))
        .route("/control/groups", post(create_group))
        .route("/control/groups/{id}/members", post(add_member))
        .route(
            "/control/groups/{id}/members/{user_id}",
            delete(remove_member),
        )
        .route(
            "/control/chats/{id}/messages",
            post(post_message).get(messages),
        )
        .route("/control/network", post(network))
}

#[derive(Debug, Deserialize)]
struct CreateUser {
    id: String,
    name: String,
}

async fn create_user(
    State(sim): State<Arc<Sim>>,
    JsonBody(body): JsonBody<CreateUser>,
) -> Result<Json<User>, ApiError> {
    sim.create_user(&body.id, &body.name).map(Json)
}

async fn set_avatar(
    State(sim): State<Arc<Sim>>,
    PathParams(id): PathParams<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<User>, ApiError> {
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    sim.set_avatar(&id, content_type, body.to_vec()).map(Json)
}

async fn login_code(
    State(sim): State<Arc<Sim>>,
    PathParams(username): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    let code = sim.login_code(&username)?;
    Ok(Json(json!({ "code": code })))
}

#[derive(Debug, Deserialize)]
struct EnsureDm {
    a: String,
    b: String,
}

async fn ensure_dm(
    State(sim): State<Arc<Sim>>,
    JsonBody(body): JsonBody<EnsureDm>,
) -> Result<Json<Chat>, ApiError> {
    sim.ensure_dm(&body.a, &body.b).map(Json)
}

#[derive(Debug, Deserialize)]
struct CreateGroup {
    name: String,
    members: Vec<String>,
}

async fn create_group(
    State(sim): State<Arc<Sim>>,
    JsonBody(body): JsonBody<CreateGroup>,
) -> Result<Json<Chat>, ApiError> {
    sim.create_group(&body.name, &body.members).map(Json)
}

#[derive(Debug, Deserialize)]
struct AddMember {
    user_id: String,
}

async fn add_member(
    State(sim): State<Arc<Sim>>,
    PathParams(chat_id): PathParams<String>,
    JsonBody(body): JsonBody<AddMember>,
) -> Result<Json<Chat>, ApiError> {
    sim.add_member(&chat_id, &body.user_id).map(Json)
}

async fn remove_member(
    State(sim): State<Arc<Sim>>,
    PathParams((chat_id, user_id)): PathParams<(String, String)>,
) -> Result<Json<Chat>, ApiError> {
    sim.remove_member(&chat_id, &user_id).map(Json)
}

#[derive(Debug, Deserialize)]
struct PostMessage {
    sender: String,
    text: String,
}

async fn post_message(
    State(sim): State<Arc<Sim>>,
    PathParams(chat_id): PathParams<String>,
    JsonBody(body): JsonBody<PostMessage>,
) -> Result<Json<Message>, ApiError> {
    sim.post_message(&chat_id, &body.sender, &body.text)
        .map(Json)
}

async fn messages(
    State(sim): State<Arc<Sim>>,
    PathParams(chat_id): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    let messages = sim.messages(&chat_id)?;
    Ok(Json(json!({ "messages": messages })))
}

#[derive(Debug, Deserialize)]
struct Network {
    up: bool,
}

async fn network(State(sim): State<Arc<Sim>>, JsonBody(body): JsonBody<Network>) -> Json<Value> {
    sim.set_network_up(body.up);
    tracing::info!(up = body.up, "network switched");
    Json(json!({}))
}
