//! Control API, acting as a contact for the message kinds that need more than `/control/send`:
//! polls and votes (the vote encrypted with the poll's message secret by the contact's own
//! whatsapp-rust client), disappearing-message timers and messages that carry one, and
//! view-once media. Each goes through the contact's client like any message.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use waproto::whatsapp as wa;

use super::act::{chat_jid, peer_client};
use super::control::{App, Reply, bad, fail};
use super::world::normalize_phone;

fn gateway(e: impl std::fmt::Display) -> (StatusCode, Json<Value>) {
    fail(StatusCode::BAD_GATEWAY, e.to_string())
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

#[derive(Deserialize)]
pub(super) struct PollReq {
    from: String,
    to: String,
    name: String,
    options: Vec<String>,
    /// How many options a voter may choose (default 1).
    #[serde(default)]
    selectable: Option<u32>,
}

/// Creates a poll as a contact; answers its id and the message secret votes need.
pub(super) async fn poll(State(app): State<App>, Json(req): Json<PollReq>) -> Reply {
    let from = normalize_phone(&req.from).ok_or_else(|| bad("bad sender phone"))?;
    let to = chat_jid(&req.to)?;
    let client = peer_client(&app, &from).await?;
    let (sent, secret) = client
        .polls()
        .create(to, &req.name, &req.options, req.selectable.unwrap_or(1))
        .await
        .map_err(gateway)?;
    Ok(Json(json!({
        "id": sent.message_id.to_string(),
        "secret_base64": b64().encode(secret),
    })))
}

#[derive(Deserialize)]
pub(super) struct VoteReq {
    /// The voter.
    from: String,
    /// The chat the poll is in.
    to: String,
    /// The poll's message id.
    poll: String,
    /// Who created the poll (phone or JID).
    creator: String,
    /// The poll's message secret, as `/control/poll` answered it.
    secret_base64: String,
    /// The options chosen, by name (none withdraws the vote).
    #[serde(default)]
    options: Vec<String>,
}

/// Votes as a contact (encrypted for the poll like WhatsApp's apps do).
pub(super) async fn vote(State(app): State<App>, Json(req): Json<VoteReq>) -> Reply {
    let from = normalize_phone(&req.from).ok_or_else(|| bad("bad voter phone"))?;
    let to = chat_jid(&req.to)?;
    let creator = chat_jid(&req.creator)?;
    let secret = b64()
        .decode(&req.secret_base64)
        .map_err(|_| bad("secret_base64 is not base64"))?;
    let client = peer_client(&app, &from).await?;
    let sent = client
        .polls()
        .vote(to, &req.poll, &creator, &secret, &req.options)
        .await
        .map_err(gateway)?;
    Ok(Json(json!({ "id": sent.message_id.to_string() })))
}

#[derive(Deserialize)]
pub(super) struct TimerReq {
    from: String,
    to: String,
    /// The chat's new disappearing-message timer in seconds (0: off).
    seconds: u32,
}

/// Changes a chat's disappearing-message timer as a contact (the protocol message the apps
/// send).
pub(super) async fn disappearing(State(app): State<App>, Json(req): Json<TimerReq>) -> Reply {
    let from = normalize_phone(&req.from).ok_or_else(|| bad("bad sender phone"))?;
    let to = chat_jid(&req.to)?;
    let client = peer_client(&app, &from).await?;
    let msg = wa::Message {
        protocol_message: buffa::MessageField::some(wa::message::ProtocolMessage {
            r#type: Some(wa::message::protocol_message::Type::EPHEMERAL_SETTING),
            ephemeral_expiration: Some(req.seconds),
            ..Default::default()
        }),
        ..Default::default()
    };
    let sent = client.send_message(to, msg).await.map_err(gateway)?;
    Ok(Json(json!({ "id": sent.message_id.to_string() })))
}

#[derive(Deserialize)]
pub(super) struct ExpiringReq {
    from: String,
    to: String,
    text: String,
    /// Seconds after which the apps delete it (`contextInfo.expiration`).
    expiration: u32,
}

/// Sends a text that disappears, as messages in a chat with a timer are sent.
pub(super) async fn expiring(State(app): State<App>, Json(req): Json<ExpiringReq>) -> Reply {
    let from = normalize_phone(&req.from).ok_or_else(|| bad("bad sender phone"))?;
    let to = chat_jid(&req.to)?;
    let client = peer_client(&app, &from).await?;
    let msg = wa::Message {
        extended_text_message: buffa::MessageField::some(wa::message::ExtendedTextMessage {
            text: Some(req.text),
            context_info: buffa::MessageField::some(wa::ContextInfo {
                expiration: Some(req.expiration),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let sent = client.send_message(to, msg).await.map_err(gateway)?;
    Ok(Json(json!({ "id": sent.message_id.to_string() })))
}

#[derive(Deserialize)]
pub(super) struct ViewOnceReq {
    from: String,
    to: String,
    /// The photo, base64.
    data_base64: String,
    #[serde(default)]
    mimetype: Option<String>,
}

/// Sends a view-once photo (an image inside `viewOnceMessageV2`, as the apps send it).
pub(super) async fn view_once(State(app): State<App>, Json(req): Json<ViewOnceReq>) -> Reply {
    let from = normalize_phone(&req.from).ok_or_else(|| bad("bad sender phone"))?;
    let to = chat_jid(&req.to)?;
    let data = b64()
        .decode(&req.data_base64)
        .map_err(|_| bad("data_base64 is not base64"))?;
    let client = peer_client(&app, &from).await?;
    let up = client
        .upload(
            data,
            whatsapp_rust::download::MediaType::Image,
            Default::default(),
        )
        .await
        .map_err(gateway)?;
    let image = wa::Message {
        image_message: buffa::MessageField::some(wa::message::ImageMessage {
            url: Some(up.url),
            direct_path: Some(up.direct_path),
            media_key: Some(up.media_key.to_vec()),
            file_enc_sha256: Some(up.file_enc_sha256.to_vec()),
            file_sha256: Some(up.file_sha256.to_vec()),
            file_length: Some(up.file_length),
            media_key_timestamp: Some(up.media_key_timestamp),
            mimetype: Some(req.mimetype.unwrap_or_else(|| "image/jpeg".to_owned())),
            view_once: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    };
    let msg = wa::Message {
        view_once_message_v2: buffa::MessageField::some(wa::message::FutureProofMessage {
            message: buffa::MessageField::some(image),
        }),
        ..Default::default()
    };
    let sent = client.send_message(to, msg).await.map_err(gateway)?;
    Ok(Json(json!({ "id": sent.message_id.to_string() })))
}
