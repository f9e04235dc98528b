//! The control API (`/control`): what tests and the demo use to play the rest of the network.
//!
//! No authentication, no rate limit and unaffected by the network switch, so a test can always
//! set up and inspect the world. Calls that act as a user name it (`sender` in the body, or
//! `?sender=` for DELETE). Handlers only unpack the request and call [`Sim`].

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::download::media_response;
use super::error::ApiError;
use super::extract::{JsonBody, PathParams, QueryParams, RawBody};
use super::limits;
use super::model::{Chat, ChatUpdate, Entity, MediaInfo, Message, MessageContent, Presence, User};
use super::state::Sim;

/// The `/control` routes.
pub(crate) fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/control/users", post(create_user))
        .route("/control/users/{id}/avatar", put(set_avatar))
        .route("/control/users/{id}/events", get(events))
        .route("/control/users/{id}/presence", get(presence))
        .route("/control/presence", post(set_presence))
        .route("/control/login-code/{username}", get(login_code))
        .route("/control/ratelimit", post(rate_limit))
        .route(
            "/control/media",
            post(upload).layer(DefaultBodyLimit::max(limits::MAX_MEDIA_BYTES)),
        )
        .route("/control/media/{id}", get(media))
        .route("/control/dms", post(ensure_dm))
        .route("/control/groups", post(create_group))
        .route("/control/groups/{id}/members", post(add_member))
        .route(
            "/control/groups/{id}/members/{user_id}",
            delete(remove_member),
        )
        .route("/control/groups/{id}/admins", post(add_admin))
        .route(
            "/control/groups/{id}/admins/{user_id}",
            delete(remove_admin),
        )
        .route(
            "/control/chats/{id}",
            get(chat).patch(update_chat).delete(delete_chat),
        )
        .route(
            "/control/chats/{id}/messages",
            post(post_message).get(messages),
        )
        .route(
            "/control/chats/{id}/messages/{mid}",
            get(message).patch(edit).delete(delete_message),
        )
        .route(
            "/control/chats/{id}/messages/{mid}/reactions",
            get(reactions),
        )
        .route(
            "/control/chats/{id}/messages/{mid}/reactions/{emoji}",
            put(react).delete(unreact),
        )
        .route("/control/chats/{id}/read", post(read).get(read_markers))
        .route("/control/chats/{id}/typing", post(typing).get(typists))
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
    body: RawBody,
) -> Result<Json<User>, ApiError> {
    sim.set_avatar(&id, &body.content_type, body.bytes)
        .map(Json)
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    #[serde(default)]
    since: u64,
    limit: Option<usize>,
}

async fn events(
    State(sim): State<Arc<Sim>>,
    PathParams(id): PathParams<String>,
    QueryParams(query): QueryParams<EventsQuery>,
) -> Result<Json<Value>, ApiError> {
    let max = query
        .limit
        .unwrap_or(limits::MAX_PAGE)
        .min(limits::MAX_PAGE);
    let events = sim.events_page(&id, query.since, max)?;
    Ok(Json(json!({ "events": events })))
}

async fn presence(
    State(sim): State<Arc<Sim>>,
    PathParams(id): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    let presence = sim.presence(&id)?;
    Ok(Json(json!({ "user_id": id, "presence": presence })))
}

#[derive(Debug, Deserialize)]
struct SetPresence {
    user_id: String,
    presence: Presence,
}

async fn set_presence(
    State(sim): State<Arc<Sim>>,
    JsonBody(body): JsonBody<SetPresence>,
) -> Result<Json<Value>, ApiError> {
    sim.set_presence(&body.user_id, body.presence)?;
    Ok(Json(json!({})))
}

async fn login_code(
    State(sim): State<Arc<Sim>>,
    PathParams(username): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    let code = sim.login_code(&username)?;
    Ok(Json(json!({ "code": code })))
}

#[derive(Debug, Deserialize)]
struct RateLimit {
    account: String,
    count: u32,
}

async fn rate_limit(
    State(sim): State<Arc<Sim>>,
    JsonBody(body): JsonBody<RateLimit>,
) -> Result<Json<Value>, ApiError> {
    sim.set_rate_limit(&body.account, body.count)?;
    Ok(Json(json!({})))
}

async fn upload(State(sim): State<Arc<Sim>>, body: RawBody) -> Result<Json<MediaInfo>, ApiError> {
    sim.upload_media(&body.content_type, body.bytes).map(Json)
}

async fn media(
    State(sim): State<Arc<Sim>>,
    PathParams(id): PathParams<String>,
) -> Result<Response, ApiError> {
    sim.media(&id).map(media_response)
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
struct UserRef {
    user_id: String,
}

async fn add_member(
    State(sim): State<Arc<Sim>>,
    PathParams(chat_id): PathParams<String>,
    JsonBody(body): JsonBody<UserRef>,
) -> Result<Json<Chat>, ApiError> {
    sim.add_member(&chat_id, &body.user_id).map(Json)
}

async fn remove_member(
    State(sim): State<Arc<Sim>>,
    PathParams((chat_id, user_id)): PathParams<(String, String)>,
) -> Result<Json<Chat>, ApiError> {
    sim.remove_member(&chat_id, &user_id).map(Json)
}

async fn add_admin(
    State(sim): State<Arc<Sim>>,
    PathParams(chat_id): PathParams<String>,
    JsonBody(body): JsonBody<UserRef>,
) -> Result<Json<Chat>, ApiError> {
    sim.set_admin(&chat_id, &body.user_id, true).map(Json)
}

async fn remove_admin(
    State(sim): State<Arc<Sim>>,
    PathParams((chat_id, user_id)): PathParams<(String, String)>,
) -> Result<Json<Chat>, ApiError> {
    sim.set_admin(&chat_id, &user_id, false).map(Json)
}

async fn chat(
    State(sim): State<Arc<Sim>>,
    PathParams(chat_id): PathParams<String>,
) -> Result<Json<Chat>, ApiError> {
    sim.chat(&chat_id).map(Json)
}

#[derive(Debug, Deserialize)]
struct UpdateChat {
    sender: String,
    #[serde(flatten)]
    update: ChatUpdate,
}

async fn update_chat(
    State(sim): State<Arc<Sim>>,
    PathParams(chat_id): PathParams<String>,
    JsonBody(body): JsonBody<UpdateChat>,
) -> Result<Json<Chat>, ApiError> {
    sim.update_chat(&body.sender, &chat_id, &body.update)
        .map(Json)
}

async fn delete_chat(
    State(sim): State<Arc<Sim>>,
    PathParams(chat_id): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    sim.delete_chat(&chat_id)?;
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
struct PostMessage {
    sender: String,
    #[serde(flatten)]
    content: MessageContent,
}

async fn post_message(
    State(sim): State<Arc<Sim>>,
    PathParams(chat_id): PathParams<String>,
    JsonBody(body): JsonBody<PostMessage>,
) -> Result<Json<Message>, ApiError> {
    sim.post_content(&chat_id, &body.sender, &body.content)
        .map(Json)
}

async fn messages(
    State(sim): State<Arc<Sim>>,
    PathParams(chat_id): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    let messages = sim.messages(&chat_id)?;
    Ok(Json(json!({ "messages": messages })))
}

async fn message(
    State(sim): State<Arc<Sim>>,
    PathParams((chat_id, message_id)): PathParams<(String, String)>,
) -> Result<Json<Message>, ApiError> {
    sim.message(&chat_id, &message_id).map(Json)
}

#[derive(Debug, Deserialize)]
struct Edit {
    sender: String,
    text: String,
    #[serde(default)]
    entities: Vec<Entity>,
}

async fn edit(
    State(sim): State<Arc<Sim>>,
    PathParams((chat_id, message_id)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<Edit>,
) -> Result<Json<Message>, ApiError> {
    sim.edit_message(
        &body.sender,
        &chat_id,
        &message_id,
        &body.text,
        body.entities,
    )
    .map(Json)
}

/// `?sender=`: who a control DELETE acts as.
#[derive(Debug, Deserialize)]
struct SenderQuery {
    sender: String,
}

async fn delete_message(
    State(sim): State<Arc<Sim>>,
    PathParams((chat_id, message_id)): PathParams<(String, String)>,
    QueryParams(query): QueryParams<SenderQuery>,
) -> Result<Json<Value>, ApiError> {
    sim.delete_message(&query.sender, &chat_id, &message_id)?;
    Ok(Json(json!({})))
}

async fn reactions(
    State(sim): State<Arc<Sim>>,
    PathParams((chat_id, message_id)): PathParams<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let reactions = sim.reactions(&chat_id, &message_id)?;
    Ok(Json(json!({ "reactions": reactions })))
}

#[derive(Debug, Deserialize)]
struct Sender {
    sender: String,
}

async fn react(
    State(sim): State<Arc<Sim>>,
    PathParams((chat_id, message_id, emoji)): PathParams<(String, String, String)>,
    JsonBody(body): JsonBody<Sender>,
) -> Result<Json<Value>, ApiError> {
    let reactions = sim.react(&body.sender, &chat_id, &message_id, &emoji, true)?;
    Ok(Json(json!({ "reactions": reactions })))
}

async fn unreact(
    State(sim): State<Arc<Sim>>,
    PathParams((chat_id, message_id, emoji)): PathParams<(String, String, String)>,
    QueryParams(query): QueryParams<SenderQuery>,
) -> Result<Json<Value>, ApiError> {
    let reactions = sim.react(&query.sender, &chat_id, &message_id, &emoji, false)?;
    Ok(Json(json!({ "reactions": reactions })))
}

#[derive(Debug, Deserialize)]
struct Read {
    sender: String,
    up_to: String,
}

async fn read(
    State(sim): State<Arc<Sim>>,
    PathParams(chat_id): PathParams<String>,
    JsonBody(body): JsonBody<Read>,
) -> Result<Json<Value>, ApiError> {
    sim.mark_read(&body.sender, &chat_id, &body.up_to)?;
    Ok(Json(json!({})))
}

async fn read_markers(
    State(sim): State<Arc<Sim>>,
    PathParams(chat_id): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    let read = sim.read_markers(&chat_id)?;
    Ok(Json(json!({ "read": read })))
}

#[derive(Debug, Deserialize)]
struct Typing {
    sender: String,
    typing: bool,
}

async fn typing(
    State(sim): State<Arc<Sim>>,
    PathParams(chat_id): PathParams<String>,
    JsonBody(body): JsonBody<Typing>,
) -> Result<Json<Value>, ApiError> {
    sim.set_typing(&body.sender, &chat_id, body.typing)?;
    Ok(Json(json!({})))
}

async fn typists(
    State(sim): State<Arc<Sim>>,
    PathParams(chat_id): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    let typing = sim.typing(&chat_id)?;
    Ok(Json(json!({ "typing": typing })))
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
