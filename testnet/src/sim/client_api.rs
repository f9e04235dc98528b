//! The client API (`/v1`), the part of the protocol ferry's sim client speaks.
//!
//! Handlers only unpack the request and call [`Sim`]; validation and errors live there. The
//! network switch and the event socket are wired in `router.rs` and `events_ws.rs`; calls
//! subject to the simulated rate limit take the [`Throttled`] account instead of [`Authed`].

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::download::media_response;
use super::error::ApiError;
use super::extract::{Authed, JsonBody, PathParams, QueryParams, RawBody, Throttled};
use super::limits;
use super::model::{
    Chat, ChatUpdate, Entity, LoginFinished, LoginStarted, MediaInfo, Message, MessageContent,
    Presence, User,
};
use super::state::Sim;

/// The `/v1` routes other than the event socket.
pub(crate) fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/v1/login/start", post(login_start))
        .route("/v1/login/finish", post(login_finish))
        .route("/v1/logout", post(logout))
        .route("/v1/me", get(me))
        .route("/v1/chats", get(chats))
        .route("/v1/chats/{id}", get(chat).patch(update_chat))
        .route("/v1/chats/{id}/messages", post(send).get(history))
        .route(
            "/v1/chats/{id}/messages/{mid}",
            get(message).patch(edit).delete(delete_message),
        )
        .route("/v1/chats/{id}/messages/{mid}/reactions", get(reactions))
        .route(
            "/v1/chats/{id}/messages/{mid}/reactions/{emoji}",
            put(react).delete(unreact),
        )
        .route("/v1/chats/{id}/read", post(read))
        .route("/v1/chats/{id}/typing", post(typing))
        .route("/v1/presence", post(presence))
        .route("/v1/users/{id}", get(user))
        .route("/v1/resolve/{identifier}", get(resolve))
        .route("/v1/dms", post(open_dm))
        .route("/v1/groups", post(create_group))
        .route("/v1/groups/{id}/members", post(add_member))
        .route("/v1/groups/{id}/members/{user_id}", delete(remove_member))
        .route("/v1/groups/{id}/admins", post(add_admin))
        .route("/v1/groups/{id}/admins/{user_id}", delete(remove_admin))
        .route(
            "/v1/media",
            post(upload).layer(DefaultBodyLimit::max(limits::MAX_MEDIA_BYTES)),
        )
        .route("/v1/media/{id}", get(media))
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

async fn update_chat(
    State(sim): State<Arc<Sim>>,
    authed: Authed,
    PathParams(id): PathParams<String>,
    JsonBody(update): JsonBody<ChatUpdate>,
) -> Result<Json<Chat>, ApiError> {
    sim.update_chat(&authed.account, &id, &update).map(Json)
}

async fn user(
    State(sim): State<Arc<Sim>>,
    _authed: Authed,
    PathParams(id): PathParams<String>,
) -> Result<Json<User>, ApiError> {
    sim.user(&id).map(Json)
}

async fn resolve(
    State(sim): State<Arc<Sim>>,
    _authed: Authed,
    PathParams(identifier): PathParams<String>,
) -> Result<Json<User>, ApiError> {
    sim.resolve(&identifier).map(Json)
}

async fn media(
    State(sim): State<Arc<Sim>>,
    _authed: Authed,
    PathParams(id): PathParams<String>,
) -> Result<Response, ApiError> {
    sim.media(&id).map(media_response)
}

async fn upload(
    State(sim): State<Arc<Sim>>,
    _authed: Authed,
    body: RawBody,
) -> Result<Json<MediaInfo>, ApiError> {
    sim.upload_media(&body.content_type, body.bytes).map(Json)
}

#[derive(Debug, Deserialize)]
struct Send {
    txn_id: String,
    #[serde(flatten)]
    content: MessageContent,
}

async fn send(
    State(sim): State<Arc<Sim>>,
    throttled: Throttled,
    PathParams(chat_id): PathParams<String>,
    JsonBody(body): JsonBody<Send>,
) -> Result<Json<Message>, ApiError> {
    sim.send_content_as(&throttled.account, &chat_id, &body.txn_id, &body.content)
        .map(Json)
}

#[derive(Debug, Deserialize)]
struct HistoryQuery {
    before: Option<String>,
    limit: Option<usize>,
}

async fn history(
    State(sim): State<Arc<Sim>>,
    authed: Authed,
    PathParams(chat_id): PathParams<String>,
    QueryParams(query): QueryParams<HistoryQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = query.limit.unwrap_or(limits::DEFAULT_HISTORY);
    let messages = sim.history_for(&authed.account, &chat_id, query.before.as_deref(), limit)?;
    Ok(Json(json!({ "messages": messages })))
}

async fn message(
    State(sim): State<Arc<Sim>>,
    authed: Authed,
    PathParams((chat_id, message_id)): PathParams<(String, String)>,
) -> Result<Json<Message>, ApiError> {
    sim.message_for(&authed.account, &chat_id, &message_id)
        .map(Json)
}

#[derive(Debug, Deserialize)]
struct Edit {
    text: String,
    #[serde(default)]
    entities: Vec<Entity>,
}

async fn edit(
    State(sim): State<Arc<Sim>>,
    throttled: Throttled,
    PathParams((chat_id, message_id)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<Edit>,
) -> Result<Json<Message>, ApiError> {
    sim.edit_message(
        &throttled.account,
        &chat_id,
        &message_id,
        &body.text,
        body.entities,
    )
    .map(Json)
}

async fn delete_message(
    State(sim): State<Arc<Sim>>,
    throttled: Throttled,
    PathParams((chat_id, message_id)): PathParams<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    sim.delete_message(&throttled.account, &chat_id, &message_id)?;
    Ok(Json(json!({})))
}

async fn reactions(
    State(sim): State<Arc<Sim>>,
    authed: Authed,
    PathParams((chat_id, message_id)): PathParams<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let reactions = sim.reactions_for(&authed.account, &chat_id, &message_id)?;
    Ok(Json(json!({ "reactions": reactions })))
}

async fn react(
    State(sim): State<Arc<Sim>>,
    throttled: Throttled,
    PathParams((chat_id, message_id, emoji)): PathParams<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let reactions = sim.react(&throttled.account, &chat_id, &message_id, &emoji, true)?;
    Ok(Json(json!({ "reactions": reactions })))
}

async fn unreact(
    State(sim): State<Arc<Sim>>,
    throttled: Throttled,
    PathParams((chat_id, message_id, emoji)): PathParams<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let reactions = sim.react(&throttled.account, &chat_id, &message_id, &emoji, false)?;
    Ok(Json(json!({ "reactions": reactions })))
}

#[derive(Debug, Deserialize)]
struct Read {
    up_to: String,
}

async fn read(
    State(sim): State<Arc<Sim>>,
    authed: Authed,
    PathParams(chat_id): PathParams<String>,
    JsonBody(body): JsonBody<Read>,
) -> Result<Json<Value>, ApiError> {
    sim.mark_read(&authed.account, &chat_id, &body.up_to)?;
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
struct Typing {
    typing: bool,
}

async fn typing(
    State(sim): State<Arc<Sim>>,
    authed: Authed,
    PathParams(chat_id): PathParams<String>,
    JsonBody(body): JsonBody<Typing>,
) -> Result<Json<Value>, ApiError> {
    sim.set_typing(&authed.account, &chat_id, body.typing)?;
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
struct SetPresence {
    presence: Presence,
}

async fn presence(
    State(sim): State<Arc<Sim>>,
    authed: Authed,
    JsonBody(body): JsonBody<SetPresence>,
) -> Result<Json<Value>, ApiError> {
    sim.set_presence(&authed.account, body.presence)?;
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
struct OpenDm {
    user_id: String,
}

async fn open_dm(
    State(sim): State<Arc<Sim>>,
    authed: Authed,
    JsonBody(body): JsonBody<OpenDm>,
) -> Result<Json<Chat>, ApiError> {
    sim.ensure_dm(&authed.account, &body.user_id).map(Json)
}

#[derive(Debug, Deserialize)]
struct CreateGroup {
    name: String,
    members: Vec<String>,
}

async fn create_group(
    State(sim): State<Arc<Sim>>,
    authed: Authed,
    JsonBody(body): JsonBody<CreateGroup>,
) -> Result<Json<Chat>, ApiError> {
    sim.create_group_as(&authed.account, &body.name, &body.members)
        .map(Json)
}

#[derive(Debug, Deserialize)]
struct UserRef {
    user_id: String,
}

async fn add_member(
    State(sim): State<Arc<Sim>>,
    authed: Authed,
    PathParams(chat_id): PathParams<String>,
    JsonBody(body): JsonBody<UserRef>,
) -> Result<Json<Chat>, ApiError> {
    sim.add_member_as(&authed.account, &chat_id, &body.user_id)
        .map(Json)
}

async fn remove_member(
    State(sim): State<Arc<Sim>>,
    authed: Authed,
    PathParams((chat_id, user_id)): PathParams<(String, String)>,
) -> Result<Json<Chat>, ApiError> {
    sim.remove_member_as(&authed.account, &chat_id, &user_id)
        .map(Json)
}

async fn add_admin(
    State(sim): State<Arc<Sim>>,
    authed: Authed,
    PathParams(chat_id): PathParams<String>,
    JsonBody(body): JsonBody<UserRef>,
) -> Result<Json<Chat>, ApiError> {
    sim.set_admin_as(&authed.account, &chat_id, &body.user_id, true)
        .map(Json)
}

async fn remove_admin(
    State(sim): State<Arc<Sim>>,
    authed: Authed,
    PathParams((chat_id, user_id)): PathParams<(String, String)>,
) -> Result<Json<Chat>, ApiError> {
    sim.set_admin_as(&authed.account, &chat_id, &user_id, false)
        .map(Json)
}
