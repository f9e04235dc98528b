//! History sync after linking, as the phone sends it: a `protocolMessage` of type
//! `HISTORY_SYNC_NOTIFICATION` from the account's primary device to its own companions. The
//! zlib-compressed `HistorySync` travels either as WhatsApp normally sends it (`"blob": true`:
//! the phone encrypts and uploads it to the media host as `md-msg-hist` media, and the
//! notification carries the media key, hashes, direct path and length, so the companion
//! downloads and decrypts it) or inline (`initialHistBootstrapInlinePayload`, which
//! whatsapp-rust reads directly; the default). The client accepts it only from its own
//! account, so it is sent by the account's phone client over its Signal session.

use std::io::Write as _;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use waproto::whatsapp as wa;

use super::act::peer_client;
use super::control::App;
use super::world::{normalize_phone, now};

#[derive(Deserialize)]
pub struct HistoryReq {
    /// The account whose phone sends its history to the linked devices.
    phone: String,
    conversations: Vec<ConversationReq>,
    /// Upload the payload as an encrypted blob instead of sending it inline.
    #[serde(default)]
    blob: bool,
}

#[derive(Deserialize)]
pub struct ConversationReq {
    /// The chat: a phone number, user JID or group JID.
    chat: String,
    #[serde(default)]
    name: Option<String>,
    messages: Vec<HistoryMessage>,
}

#[derive(Deserialize)]
pub struct HistoryMessage {
    #[serde(default)]
    id: Option<String>,
    /// Sent by the account itself (default false).
    #[serde(default)]
    from_me: bool,
    /// In groups: who sent it (phone or JID).
    #[serde(default)]
    sender: Option<String>,
    text: String,
    /// Unix seconds (default: now minus its distance from the end of the list, in minutes).
    #[serde(default)]
    timestamp: Option<u64>,
}

type Reply = Result<Json<Value>, (StatusCode, Json<Value>)>;

fn bad(msg: impl Into<String>) -> (StatusCode, Json<Value>) {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": msg.into() })),
    )
}

fn jid(s: &str) -> Result<String, (StatusCode, Json<Value>)> {
    if s.contains('@') {
        Ok(s.to_owned())
    } else {
        normalize_phone(s)
            .map(|p| format!("{p}@s.whatsapp.net"))
            .ok_or_else(|| bad(format!("bad chat {s}")))
    }
}

pub async fn push(State(app): State<App>, Json(req): Json<HistoryReq>) -> Reply {
    let phone = normalize_phone(&req.phone).ok_or_else(|| bad("bad phone"))?;
    let client = peer_client(&app, &phone).await?;
    let mut conversations = Vec::new();
    let mut ids = Vec::new();
    let base = now();
    for c in &req.conversations {
        let chat = jid(&c.chat)?;
        let n = c.messages.len() as u64;
        let mut msgs = Vec::new();
        for (i, m) in c.messages.iter().enumerate() {
            let id =
                m.id.clone()
                    .unwrap_or_else(|| format!("3EB0HIST{:08X}{:04X}", base as u32, i));
            ids.push(id.clone());
            let participant = m.sender.as_deref().map(jid).transpose()?;
            let info = wa::WebMessageInfo {
                key: buffa::MessageField::some(wa::MessageKey {
                    remote_jid: Some(chat.clone()),
                    from_me: Some(m.from_me),
                    id: Some(id),
                    participant: participant.clone(),
                }),
                message: buffa::MessageField::some(wa::Message {
                    conversation: Some(m.text.clone()),
                    ..Default::default()
                }),
                message_timestamp: Some(
                    m.timestamp
                        .unwrap_or_else(|| base.saturating_sub((n - i as u64) * 60)),
                ),
                participant,
                ..Default::default()
            };
            msgs.push(wa::HistorySyncMsg {
                message: buffa::MessageField::some(info),
                msg_order_id: Some(i as u64 + 1),
            });
        }
        conversations.push(wa::Conversation {
            id: chat,
            name: c.name.clone(),
            messages: msgs,
            ..Default::default()
        });
    }
    // The push names of every known account in these chats, as the phone includes them.
    let pushnames: Vec<wa::Pushname> = {
        let w = app.world.lock().map_err(|_| bad("world lock poisoned"))?;
        let mut people: Vec<String> = conversations
            .iter()
            .flat_map(|c| {
                std::iter::once(c.id.clone()).chain(c.messages.iter().filter_map(|m| {
                    m.message
                        .as_option()
                        .and_then(|i| i.key.as_option())
                        .and_then(|k| k.participant.clone())
                }))
            })
            .collect();
        people.sort();
        people.dedup();
        people
            .into_iter()
            .filter_map(|j| {
                let jid: wacore_binary::Jid = j.parse().ok()?;
                let a = w.account_of(&jid)?;
                Some(wa::Pushname {
                    id: Some(j),
                    pushname: Some(a.name.clone()),
                })
            })
            .collect()
    };
    let history = wa::HistorySync {
        sync_type: wa::history_sync::HistorySyncType::INITIAL_BOOTSTRAP,
        conversations,
        pushnames,
        progress: Some(100),
        chunk_order: Some(1),
        ..Default::default()
    };
    let raw = buffa::Message::encode_to_vec(&history);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&raw)
        .map_err(|e| bad(format!("cannot compress: {e}")))?;
    let compressed = z
        .finish()
        .map_err(|e| bad(format!("cannot compress: {e}")))?;
    let mut notification = wa::message::HistorySyncNotification {
        sync_type: Some(wa::message::HistorySyncType::INITIAL_BOOTSTRAP),
        chunk_order: Some(1),
        progress: Some(100),
        ..Default::default()
    };
    let mut blob_path = None;
    if req.blob {
        let up = client
            .upload(
                compressed,
                wacore::download::MediaType::History,
                Default::default(),
            )
            .await
            .map_err(|e| {
                (
                    StatusCode::BAD_GATEWAY,
                    Json(json!({ "error": format!("history upload: {e}") })),
                )
            })?;
        notification.file_length = Some(up.file_length);
        notification.file_sha256 = Some(up.file_sha256.to_vec());
        notification.file_enc_sha256 = Some(up.file_enc_sha256.to_vec());
        notification.media_key = Some(up.media_key.to_vec());
        blob_path = Some(up.direct_path.clone());
        notification.direct_path = Some(up.direct_path);
    } else {
        notification.file_length = Some(raw.len() as u64);
        notification.initial_hist_bootstrap_inline_payload = Some(compressed);
    }
    let msg = wa::Message {
        protocol_message: buffa::MessageField::some(wa::message::ProtocolMessage {
            r#type: Some(wa::message::protocol_message::Type::HISTORY_SYNC_NOTIFICATION),
            history_sync_notification: buffa::MessageField::some(notification),
            ..Default::default()
        }),
        ..Default::default()
    };
    let own: wacore_binary::Jid = format!("{phone}@s.whatsapp.net")
        .parse()
        .map_err(|_| bad("bad phone"))?;
    let sent = client.send_message(own, msg).await.map_err(|e| {
        (
            StatusCode::BAD_GATEWAY,
            Json(json!({ "error": e.to_string() })),
        )
    })?;
    Ok(Json(json!({
        "id": sent.message_id.to_string(),
        "message_ids": ids,
        "blob_path": blob_path,
    })))
}
