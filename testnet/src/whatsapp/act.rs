//! Control API, acting as a contact: send each message kind, read receipts, typing and presence,
//! each through the contact's own whatsapp-rust client (so it is encrypted like any message).

use std::str::FromStr as _;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use wacore_binary::{Jid, Server};
use waproto::whatsapp as wa;

use super::control::{App, Reply, bad, fail};
use super::world::normalize_phone;

/// A chat JID from a phone number, `…@s.whatsapp.net`, `…@lid` or `…@g.us`.
pub(super) fn chat_jid(s: &str) -> Result<Jid, (StatusCode, Json<Value>)> {
    if s.contains('@') {
        Jid::from_str(s).map_err(|_| bad(format!("bad JID {s}")))
    } else if let Some(p) = normalize_phone(s) {
        Ok(Jid::pn(p.as_str()))
    } else {
        Err(bad(format!("bad chat {s}")))
    }
}

#[derive(Deserialize)]
pub(super) struct SendReq {
    /// The contact (phone) that sends.
    from: String,
    /// Chat: phone, user JID (PN or LID) or group JID.
    to: String,
    /// text (default), extended_text, reply, edit, revoke, reaction, image, document, video,
    /// audio, sticker, location, contact.
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    text: Option<String>,
    /// extended_text: a link the text carries (`matched_text`, a preview title).
    #[serde(default)]
    url: Option<String>,
    /// reply/edit/revoke/reaction: the message id it refers to.
    #[serde(default)]
    target: Option<String>,
    /// reply/reaction in groups: who sent the target (phone or JID).
    #[serde(default)]
    target_sender: Option<String>,
    /// reply: the quoted text.
    #[serde(default)]
    quoted_text: Option<String>,
    /// reaction: the emoji ("" removes).
    #[serde(default)]
    emoji: Option<String>,
    /// reply/reaction: whether the target was sent by the receiving side (default true).
    #[serde(default)]
    target_from_me: Option<bool>,
    /// image/document: the file, base64.
    #[serde(default)]
    data_base64: Option<String>,
    #[serde(default)]
    mimetype: Option<String>,
    #[serde(default)]
    file_name: Option<String>,
    /// video/audio: duration in seconds.
    #[serde(default)]
    seconds: Option<u32>,
    /// audio: a voice note.
    #[serde(default)]
    ptt: bool,
    /// audio: waveform samples (0-100).
    #[serde(default)]
    waveform: Option<Vec<u8>>,
    /// video: a GIF.
    #[serde(default)]
    gif: bool,
    /// location: coordinates and a place name.
    #[serde(default)]
    latitude: Option<f64>,
    #[serde(default)]
    longitude: Option<f64>,
    #[serde(default)]
    name: Option<String>,
    /// contact: the card's phone number (with `name`).
    #[serde(default)]
    phone: Option<String>,
    /// text: people mentioned (phones or JIDs); the text names them as `@number`.
    #[serde(default)]
    mentions: Vec<String>,
}

pub async fn peer_client(
    app: &App,
    phone: &str,
) -> Result<Arc<whatsapp_rust::Client>, (StatusCode, Json<Value>)> {
    let peers = app.peers.lock().await;
    peers
        .get(phone)
        .map(|p| p.client.clone())
        .ok_or_else(|| bad(format!("{phone} is not a contact of the simulator")))
}

pub(super) async fn send(State(app): State<App>, Json(req): Json<SendReq>) -> Reply {
    let from = normalize_phone(&req.from).ok_or_else(|| bad("bad sender phone"))?;
    let to = chat_jid(&req.to)?;
    let client = peer_client(&app, &from).await?;
    let kind = req.kind.clone().unwrap_or_else(|| "text".into());
    let text = req.text.clone().unwrap_or_default();
    let target = || {
        req.target
            .clone()
            .ok_or_else(|| bad("this kind needs `target`"))
    };
    let target_key = |id: String| -> Result<wa::MessageKey, (StatusCode, Json<Value>)> {
        let participant = match &req.target_sender {
            Some(s) => Some(chat_jid(s)?.to_string()),
            None => None,
        };
        Ok(wa::MessageKey {
            remote_jid: Some(to.to_string()),
            from_me: Some(!req.target_from_me.unwrap_or(true)),
            id: Some(id),
            participant: if to.server == Server::Group {
                participant
            } else {
                None
            },
        })
    };
    let map_err = |e: &dyn std::fmt::Display| fail(StatusCode::BAD_GATEWAY, e.to_string());
    let id = match kind.as_str() {
        "text" if !req.mentions.is_empty() => {
            let mentioned_jid = req
                .mentions
                .iter()
                .map(|m| chat_jid(m).map(|j| j.to_string()))
                .collect::<Result<Vec<_>, _>>()?;
            let msg = wa::Message {
                extended_text_message: buffa::MessageField::some(
                    wa::message::ExtendedTextMessage {
                        text: Some(text),
                        context_info: buffa::MessageField::some(wa::ContextInfo {
                            mentioned_jid,
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ),
                ..Default::default()
            };
            client
                .send_message(to.clone(), msg)
                .await
                .map_err(|e| map_err(&e))?
                .message_id
                .to_string()
        }
        "location" => {
            let msg = wa::Message {
                location_message: buffa::MessageField::some(wa::message::LocationMessage {
                    degrees_latitude: Some(req.latitude.ok_or_else(|| bad("needs latitude"))?),
                    degrees_longitude: Some(req.longitude.ok_or_else(|| bad("needs longitude"))?),
                    name: req.name.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            };
            client
                .send_message(to.clone(), msg)
                .await
                .map_err(|e| map_err(&e))?
                .message_id
                .to_string()
        }
        "contact" => {
            let name = req
                .name
                .clone()
                .ok_or_else(|| bad("a contact needs `name`"))?;
            let phone = req
                .phone
                .as_deref()
                .and_then(normalize_phone)
                .ok_or_else(|| bad("a contact needs `phone`"))?;
            let vcard = format!(
                "BEGIN:VCARD\nVERSION:3.0\nFN:{name}\nTEL;type=CELL;waid={phone}:+{phone}\nEND:VCARD"
            );
            let msg = wa::Message {
                contact_message: buffa::MessageField::some(wa::message::ContactMessage {
                    display_name: Some(name),
                    vcard: Some(vcard),
                    ..Default::default()
                }),
                ..Default::default()
            };
            client
                .send_message(to.clone(), msg)
                .await
                .map_err(|e| map_err(&e))?
                .message_id
                .to_string()
        }
        "text" => client
            .send_message(
                to.clone(),
                wa::Message {
                    conversation: Some(text),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| map_err(&e))?
            .message_id
            .to_string(),
        "extended_text" => {
            let url = req.url.clone().unwrap_or_default();
            let msg = wa::Message {
                extended_text_message: buffa::MessageField::some(
                    wa::message::ExtendedTextMessage {
                        text: Some(if url.is_empty() || text.contains(&url) {
                            text
                        } else {
                            format!("{text} {url}")
                        }),
                        matched_text: (!url.is_empty()).then(|| url.clone()),
                        title: (!url.is_empty()).then(|| format!("Preview of {url}")),
                        ..Default::default()
                    },
                ),
                ..Default::default()
            };
            client
                .send_message(to.clone(), msg)
                .await
                .map_err(|e| map_err(&e))?
                .message_id
                .to_string()
        }
        "reply" => {
            let key = target_key(target()?)?;
            let quoted = wa::Message {
                conversation: Some(req.quoted_text.clone().unwrap_or_default()),
                ..Default::default()
            };
            let ctx = wa::ContextInfo {
                stanza_id: key.id.clone(),
                participant: Some(
                    req.target_sender
                        .as_deref()
                        .map(chat_jid)
                        .transpose()?
                        .map_or_else(|| to.to_string(), |j| j.to_string()),
                ),
                quoted_message: buffa::MessageField::some(quoted),
                ..Default::default()
            };
            let msg = wa::Message {
                extended_text_message: buffa::MessageField::some(
                    wa::message::ExtendedTextMessage {
                        text: Some(text),
                        context_info: buffa::MessageField::some(ctx),
                        ..Default::default()
                    },
                ),
                ..Default::default()
            };
            client
                .send_message(to.clone(), msg)
                .await
                .map_err(|e| map_err(&e))?
                .message_id
                .to_string()
        }
        "edit" => {
            let msg = wa::Message {
                conversation: Some(text),
                ..Default::default()
            };
            client
                .edit_message(to.clone(), target()?, msg)
                .await
                .map_err(|e| map_err(&e))?
        }
        "revoke" => {
            let t = target()?;
            client
                .revoke_message(
                    to.clone(),
                    t.clone(),
                    whatsapp_rust::send::RevokeType::Sender,
                )
                .await
                .map_err(|e| map_err(&e))?;
            t
        }
        "reaction" => {
            let key = target_key(target()?)?;
            client
                .send_reaction(to.clone(), key, req.emoji.as_deref().unwrap_or("👍"))
                .await
                .map_err(|e| map_err(&e))?
                .message_id
                .to_string()
        }
        "image" | "document" | "video" | "audio" | "sticker" => {
            let spec = super::media::MediaSpec {
                kind: &kind,
                data: req.data_base64.as_deref(),
                mimetype: req.mimetype.as_deref(),
                file_name: req.file_name.as_deref(),
                caption: &text,
                seconds: req.seconds,
                ptt: req.ptt,
                waveform: req.waveform.clone(),
                gif: req.gif,
            };
            super::media::send_media(&client, &to, spec).await?
        }
        other => return Err(bad(format!("unknown message kind {other}"))),
    };
    Ok(Json(json!({ "id": id })))
}

#[derive(Deserialize)]
pub(super) struct ReceiptReq {
    from: String,
    chat: String,
    ids: Vec<String>,
    /// For group chats: who sent the messages.
    #[serde(default)]
    sender: Option<String>,
}

/// Marks messages read as a contact (delivery receipts are sent by the contact's client itself
/// when a message arrives).
pub(super) async fn receipt(State(app): State<App>, Json(req): Json<ReceiptReq>) -> Reply {
    let from = normalize_phone(&req.from).ok_or_else(|| bad("bad contact phone"))?;
    let chat = chat_jid(&req.chat)?;
    let sender = req.sender.as_deref().map(chat_jid).transpose()?;
    let client = peer_client(&app, &from).await?;
    let ids: Vec<&str> = req.ids.iter().map(String::as_str).collect();
    client
        .mark_as_read(&chat, sender.as_ref(), &ids)
        .await
        .map_err(|e| fail(StatusCode::BAD_GATEWAY, e.to_string()))?;
    Ok(Json(json!({ "ok": true })))
}

#[derive(Deserialize)]
pub(super) struct TypingReq {
    from: String,
    to: String,
    /// composing (default), recording or paused.
    #[serde(default)]
    state: Option<String>,
}

pub(super) async fn typing(State(app): State<App>, Json(req): Json<TypingReq>) -> Reply {
    let from = normalize_phone(&req.from).ok_or_else(|| bad("bad contact phone"))?;
    let to = chat_jid(&req.to)?;
    let client = peer_client(&app, &from).await?;
    let cs = client.chatstate();
    let r = match req.state.as_deref().unwrap_or("composing") {
        "composing" => cs.send_composing(&to).await,
        "recording" => cs.send_recording(&to).await,
        "paused" => cs.send_paused(&to).await,
        other => return Err(bad(format!("unknown chat state {other}"))),
    };
    r.map_err(|e| fail(StatusCode::BAD_GATEWAY, e.to_string()))?;
    Ok(Json(json!({ "ok": true })))
}

#[derive(Deserialize)]
pub(super) struct PresenceReq {
    from: String,
    available: bool,
}

pub(super) async fn presence(State(app): State<App>, Json(req): Json<PresenceReq>) -> Reply {
    let from = normalize_phone(&req.from).ok_or_else(|| bad("bad contact phone"))?;
    let client = peer_client(&app, &from).await?;
    let p = client.presence();
    let r = if req.available {
        p.set_available().await
    } else {
        p.set_unavailable().await
    };
    r.map_err(|e| fail(StatusCode::BAD_GATEWAY, e.to_string()))?;
    Ok(Json(json!({ "ok": true })))
}
