//! Control API, reading what contacts saw: the messages their clients received and decrypted
//! (and the media in them), the receipts, chat states and presence they got, and the raw stanzas
//! devices sent to the server.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::act::{chat_jid, peer_client};
use super::control::{App, Reply, bad, fail, world};
use super::peer::Inbox;
use super::world::normalize_phone;

#[derive(Deserialize)]
pub(super) struct InboxQuery {
    /// Only what this contact received.
    #[serde(default)]
    to: Option<String>,
    /// Only this chat (phone, JID or group JID).
    #[serde(default)]
    chat: Option<String>,
}

fn inbox(app: &App) -> Result<std::sync::MutexGuard<'_, Inbox>, (StatusCode, Json<Value>)> {
    app.inbox
        .lock()
        .map_err(|_| fail(StatusCode::INTERNAL_SERVER_ERROR, "inbox lock poisoned"))
}

pub(super) async fn received(State(app): State<App>, Query(q): Query<InboxQuery>) -> Reply {
    let to = q.to.as_deref().and_then(normalize_phone);
    let chat = q
        .chat
        .as_deref()
        .map(chat_jid)
        .transpose()?
        .map(|j| j.to_string());
    let ib = inbox(&app)?;
    let list: Vec<Value> = ib
        .messages
        .iter()
        .filter(|m| to.as_ref().is_none_or(|t| &m.to == t))
        .filter(|m| chat.as_ref().is_none_or(|c| &m.chat == c))
        .map(|m| serde_json::to_value(m).unwrap_or(Value::Null))
        .collect();
    Ok(Json(json!({ "messages": list })))
}

pub(super) async fn receipts(State(app): State<App>, Query(q): Query<InboxQuery>) -> Reply {
    let to = q.to.as_deref().and_then(normalize_phone);
    let ib = inbox(&app)?;
    let list: Vec<Value> = ib
        .receipts
        .iter()
        .filter(|r| to.as_ref().is_none_or(|t| &r.to == t))
        .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
        .collect();
    Ok(Json(json!({ "receipts": list })))
}

pub(super) async fn events(State(app): State<App>, Query(q): Query<InboxQuery>) -> Reply {
    let to = q.to.as_deref().and_then(normalize_phone);
    let ib = inbox(&app)?;
    let list: Vec<Value> = ib
        .events
        .iter()
        .filter(|r| to.as_ref().is_none_or(|t| &r.to == t))
        .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
        .collect();
    Ok(Json(json!({ "events": list })))
}

#[derive(Deserialize)]
pub(super) struct StanzaQuery {
    /// Only stanzas from this phone's devices.
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    tag: Option<String>,
}

pub(super) async fn stanzas(State(app): State<App>, Query(q): Query<StanzaQuery>) -> Reply {
    let from = q.from.as_deref().and_then(normalize_phone);
    let w = world(&app)?;
    let list: Vec<Value> = w
        .log
        .iter()
        .filter(|l| from.as_ref().is_none_or(|f| l.from.starts_with(f.as_str())))
        .filter(|l| q.tag.as_ref().is_none_or(|t| &l.tag == t))
        .map(|l| serde_json::to_value(l).unwrap_or(Value::Null))
        .collect();
    Ok(Json(json!({ "stanzas": list })))
}

#[derive(Deserialize)]
pub(super) struct MediaQuery {
    /// The contact that received the message.
    to: String,
    /// The message id.
    id: String,
}

/// Downloads and decrypts (with the contact's client) the media of a message a contact received.
pub(super) async fn media(State(app): State<App>, Query(q): Query<MediaQuery>) -> Reply {
    let to = normalize_phone(&q.to).ok_or_else(|| bad("bad contact phone"))?;
    let raw = {
        let ib = inbox(&app)?;
        ib.messages
            .iter()
            .rev()
            .find(|m| m.to == to && m.id == q.id)
            .map(|m| m.raw.clone())
            .ok_or_else(|| {
                fail(
                    StatusCode::NOT_FOUND,
                    "that contact received no such message",
                )
            })?
    };
    let client = peer_client(&app, &to).await?;
    let data = super::media::fetch_received(&client, &raw).await?;
    Ok(Json(json!({
        "data_base64": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &data),
        "size": data.len(),
    })))
}
