//! The control API (HTTP JSON under `/control`): tests create the bridged user's account,
//! contacts (each a live whatsapp-rust client) and groups, play the phone (scan a QR code, enter
//! or read a pairing code, unlink the device), act as contacts (send each message kind, receipts,
//! typing, presence), read what contacts received (decrypted by their clients), and drop or
//! refuse connections. Documented in `testnet/WHATSAPP_PROTOCOL.md`.

use std::collections::BTreeMap;
use std::str::FromStr as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Jid, Server};
use waproto::whatsapp as wa;

use super::conn::Shared;
use super::peer::{self, Inbox, Peer};
use super::world::{World, normalize_phone};

#[derive(Clone)]
pub struct App {
    pub world: Shared,
    pub inbox: Arc<Mutex<Inbox>>,
    pub peers: Arc<tokio::sync::Mutex<BTreeMap<String, Peer>>>,
    pub ws_url: String,
    pub chat_addr: std::net::SocketAddr,
}

type Reply = Result<Json<Value>, (StatusCode, Json<Value>)>;

fn fail(status: StatusCode, message: impl Into<String>) -> (StatusCode, Json<Value>) {
    (status, Json(json!({ "error": message.into() })))
}

fn bad(message: impl Into<String>) -> (StatusCode, Json<Value>) {
    fail(StatusCode::BAD_REQUEST, message)
}

fn world(app: &App) -> Result<std::sync::MutexGuard<'_, World>, (StatusCode, Json<Value>)> {
    app.world
        .lock()
        .map_err(|_| fail(StatusCode::INTERNAL_SERVER_ERROR, "world lock poisoned"))
}

pub fn routes(app: App) -> Router {
    Router::new()
        .route("/control/accounts", post(create_account))
        .route("/control/contacts", post(create_contact))
        .route("/control/groups", post(create_group))
        .route("/control/groups/members", post(group_members))
        .route("/control/qr/scan", post(scan))
        .route("/control/pair_code", post(enter_pair_code))
        .route("/control/devices", get(devices))
        .route("/control/unlink", post(unlink))
        .route("/control/send", post(send))
        .route("/control/receipt", post(receipt))
        .route("/control/typing", post(typing))
        .route("/control/presence", post(presence))
        .route("/control/received", get(received))
        .route("/control/receipts", get(receipts))
        .route("/control/events", get(events))
        .route("/control/stanzas", get(stanzas))
        .route("/control/drop", post(drop_connections))
        .route("/control/refuse", post(refuse))
        .route("/control/history_sync", post(super::history::push))
        .route("/control/lid_switch", post(lid_switch))
        .route("/control/media", get(media))
        .with_state(app)
}

#[derive(Deserialize)]
struct AccountReq {
    phone: String,
    /// Whether the account gets a primary device (its "phone", a whatsapp-rust client): needed
    /// for history sync and for messages the user sends from the phone. Default true.
    #[serde(default)]
    phone_device: Option<bool>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    lid: Option<String>,
}

fn account_json(w: &World, phone: &str) -> Value {
    match w.accounts.get(phone) {
        Some(a) => json!({
            "phone": a.phone,
            "lid": a.lid,
            "jid": format!("{}@s.whatsapp.net", a.phone),
            "lid_jid": format!("{}@lid", a.lid),
            "name": a.name,
        }),
        None => Value::Null,
    }
}

async fn create_account(State(app): State<App>, Json(req): Json<AccountReq>) -> Reply {
    let name = req.name.unwrap_or_else(|| "Bridge User".into());
    let phone = {
        let mut w = world(&app)?;
        w.create_account(&req.phone, &name, req.lid.as_deref())
            .map_err(bad)?
            .phone
            .clone()
    };
    if req.phone_device.unwrap_or(true) {
        start_peer(&app, &phone, &name).await?;
    }
    let w = world(&app)?;
    Ok(Json(account_json(&w, &phone)))
}

/// Starts the account's primary device (a whatsapp-rust client) and waits until it is ready.
async fn start_peer(app: &App, phone: &str, name: &str) -> Result<(), (StatusCode, Json<Value>)> {
    let p = peer::spawn(app, phone, name)
        .await
        .map_err(|e| fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if !p.ready(&app.world, Duration::from_secs(30)).await {
        return Err(fail(
            StatusCode::GATEWAY_TIMEOUT,
            "the account's primary device did not log in",
        ));
    }
    app.peers.lock().await.insert(phone.to_owned(), p);
    Ok(())
}

async fn create_contact(State(app): State<App>, Json(req): Json<AccountReq>) -> Reply {
    let name = req.name.unwrap_or_else(|| format!("Contact {}", req.phone));
    let phone = {
        let mut w = world(&app)?;
        w.create_account(&req.phone, &name, req.lid.as_deref())
            .map_err(bad)?
            .phone
            .clone()
    };
    start_peer(&app, &phone, &name).await?;
    let w = world(&app)?;
    Ok(Json(account_json(&w, &phone)))
}

#[derive(Deserialize)]
struct GroupReq {
    subject: String,
    creator: String,
    members: Vec<String>,
}

async fn create_group(State(app): State<App>, Json(req): Json<GroupReq>) -> Reply {
    let mut w = world(&app)?;
    let creator = normalize_phone(&req.creator).ok_or_else(|| bad("bad creator phone"))?;
    let mut members = Vec::new();
    for m in &req.members {
        let p = normalize_phone(m).ok_or_else(|| bad(format!("bad member phone {m}")))?;
        if !w.accounts.contains_key(&p) {
            return Err(bad(format!("no account {p}")));
        }
        members.push(p);
    }
    if !w.accounts.contains_key(&creator) {
        return Err(bad(format!("no account {creator}")));
    }
    let g = super::groups::create(&mut w, &creator, &req.subject, &members);
    Ok(Json(
        json!({ "id": g.id, "jid": format!("{}@g.us", g.id), "subject": g.subject }),
    ))
}

#[derive(Deserialize)]
struct MembersReq {
    group: String,
    author: String,
    #[serde(default)]
    add: Vec<String>,
    #[serde(default)]
    remove: Vec<String>,
}

async fn group_members(State(app): State<App>, Json(req): Json<MembersReq>) -> Reply {
    let mut w = world(&app)?;
    let group = req.group.trim_end_matches("@g.us").to_owned();
    let author = normalize_phone(&req.author).ok_or_else(|| bad("bad author phone"))?;
    let norm =
        |v: &[String]| -> Vec<String> { v.iter().filter_map(|p| normalize_phone(p)).collect() };
    if !req.add.is_empty() {
        super::groups::change_members(&mut w, &group, &author, &norm(&req.add), true)
            .map_err(bad)?;
    }
    if !req.remove.is_empty() {
        super::groups::change_members(&mut w, &group, &author, &norm(&req.remove), false)
            .map_err(bad)?;
    }
    let g = w.groups.get(&group).cloned();
    Ok(Json(json!({
        "members": g.map(|g| g.participants.into_iter().map(|(p, _)| p).collect::<Vec<_>>()),
    })))
}

#[derive(Deserialize)]
struct ScanReq {
    phone: String,
    code: String,
}

async fn scan(State(app): State<App>, Json(req): Json<ScanReq>) -> Reply {
    let mut w = world(&app)?;
    let phone = normalize_phone(&req.phone).ok_or_else(|| bad("bad phone"))?;
    let jid = super::pairing::scan(&mut w, &phone, &req.code).map_err(bad)?;
    Ok(Json(json!({ "device": jid })))
}

#[derive(Deserialize)]
struct PhoneQuery {
    phone: String,
}

#[derive(Deserialize)]
struct CodeReq {
    phone: String,
    code: String,
}

async fn enter_pair_code(State(app): State<App>, Json(req): Json<CodeReq>) -> Reply {
    let mut w = world(&app)?;
    let phone = normalize_phone(&req.phone).ok_or_else(|| bad("bad phone"))?;
    super::paircode::enter_code(&mut w, &phone, &req.code).map_err(bad)?;
    Ok(Json(json!({ "entered": true })))
}

async fn devices(State(app): State<App>, Query(q): Query<PhoneQuery>) -> Reply {
    let w = world(&app)?;
    let phone = normalize_phone(&q.phone).ok_or_else(|| bad("bad phone"))?;
    let a = w
        .accounts
        .get(&phone)
        .ok_or_else(|| bad("no such account"))?;
    let list: Vec<Value> = a
        .devices
        .values()
        .map(|d| {
            json!({
                "device": d.id,
                "online": w.conn_of(&phone, d.id).is_some(),
                "key_index": d.key_index,
                "prekeys": d.keys.prekeys.len(),
            })
        })
        .collect();
    Ok(Json(json!({ "devices": list })))
}

/// Removes a companion device: it is logged out at once (`stream:error` conflict) and its next
/// login is refused, as when the user unlinks it on the phone.
pub fn unlink_device(w: &mut World, phone: &str, device: u16) -> bool {
    let removed = w
        .accounts
        .get_mut(phone)
        .and_then(|a| a.devices.remove(&device))
        .is_some();
    if removed {
        super::pairing::notify_devices(w, phone, device, 0, false);
    }
    if let Some(conn) = w.conn_of(phone, device) {
        w.send(
            conn,
            NodeBuilder::new("stream:error")
                .children([NodeBuilder::new("conflict")
                    .attr("type", "device_removed")
                    .build()])
                .build(),
        );
        let _ = w.drop_connections(Some((phone, Some(device))));
    }
    removed
}

#[derive(Deserialize)]
struct UnlinkReq {
    phone: String,
    device: u16,
}

async fn unlink(State(app): State<App>, Json(req): Json<UnlinkReq>) -> Reply {
    let mut w = world(&app)?;
    let phone = normalize_phone(&req.phone).ok_or_else(|| bad("bad phone"))?;
    if !unlink_device(&mut w, &phone, req.device) {
        return Err(bad("no such device"));
    }
    Ok(Json(json!({ "unlinked": true })))
}

/// A chat JID from a phone number, `…@s.whatsapp.net`, `…@lid` or `…@g.us`.
fn chat_jid(s: &str) -> Result<Jid, (StatusCode, Json<Value>)> {
    if s.contains('@') {
        Jid::from_str(s).map_err(|_| bad(format!("bad JID {s}")))
    } else if let Some(p) = normalize_phone(s) {
        Ok(Jid::pn(p.as_str()))
    } else {
        Err(bad(format!("bad chat {s}")))
    }
}

#[derive(Deserialize)]
struct SendReq {
    /// The contact (phone) that sends.
    from: String,
    /// Chat: phone, user JID (PN or LID) or group JID.
    to: String,
    /// text (default), extended_text, reply, edit, revoke, reaction, image, document.
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

async fn send(State(app): State<App>, Json(req): Json<SendReq>) -> Reply {
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
            ..Default::default()
        })
    };
    let map_err = |e: &dyn std::fmt::Display| fail(StatusCode::BAD_GATEWAY, e.to_string());
    let id = match kind.as_str() {
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
        "image" | "document" => {
            super::media::send_media(
                &client,
                &to,
                &kind,
                req.data_base64.as_deref(),
                req.mimetype.as_deref(),
                req.file_name.as_deref(),
                &text,
            )
            .await?
        }
        other => return Err(bad(format!("unknown message kind {other}"))),
    };
    Ok(Json(json!({ "id": id })))
}

#[derive(Deserialize)]
struct ReceiptReq {
    from: String,
    chat: String,
    ids: Vec<String>,
    /// For group chats: who sent the messages.
    #[serde(default)]
    sender: Option<String>,
}

/// Marks messages read as a contact (delivery receipts are sent by the contact's client itself
/// when a message arrives).
async fn receipt(State(app): State<App>, Json(req): Json<ReceiptReq>) -> Reply {
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
struct TypingReq {
    from: String,
    to: String,
    /// composing (default), recording or paused.
    #[serde(default)]
    state: Option<String>,
}

async fn typing(State(app): State<App>, Json(req): Json<TypingReq>) -> Reply {
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
struct PresenceReq {
    from: String,
    available: bool,
}

async fn presence(State(app): State<App>, Json(req): Json<PresenceReq>) -> Reply {
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

#[derive(Deserialize)]
struct InboxQuery {
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

async fn received(State(app): State<App>, Query(q): Query<InboxQuery>) -> Reply {
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

async fn receipts(State(app): State<App>, Query(q): Query<InboxQuery>) -> Reply {
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

async fn events(State(app): State<App>, Query(q): Query<InboxQuery>) -> Reply {
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
struct StanzaQuery {
    /// Only stanzas from this phone's devices.
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    tag: Option<String>,
}

async fn stanzas(State(app): State<App>, Query(q): Query<StanzaQuery>) -> Reply {
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
struct DropReq {
    #[serde(default)]
    phone: Option<String>,
    #[serde(default)]
    device: Option<u16>,
}

async fn drop_connections(State(app): State<App>, Json(req): Json<DropReq>) -> Reply {
    let mut w = world(&app)?;
    let phone = req.phone.as_deref().and_then(normalize_phone);
    let n = w.drop_connections(phone.as_deref().map(|p| (p, req.device)));
    Ok(Json(json!({ "dropped": n })))
}

#[derive(Deserialize)]
struct RefuseReq {
    /// While true, new WebSocket connections are refused (the network is "down").
    refuse: bool,
}

async fn refuse(State(app): State<App>, Json(req): Json<RefuseReq>) -> Reply {
    let mut w = world(&app)?;
    w.refuse_connections = req.refuse;
    Ok(Json(json!({ "refuse": w.refuse_connections })))
}

#[derive(Deserialize)]
struct LidSwitchReq {
    phone: String,
}

/// From now on this account's messages and receipts reach others from its LID (with the PN in
/// `sender_pn`), as when WhatsApp migrates a user to LID addressing.
async fn lid_switch(State(app): State<App>, Json(req): Json<LidSwitchReq>) -> Reply {
    let mut w = world(&app)?;
    let phone = normalize_phone(&req.phone).ok_or_else(|| bad("bad phone"))?;
    let a = w
        .accounts
        .get_mut(&phone)
        .ok_or_else(|| bad("no such account"))?;
    a.lid_addressing = true;
    Ok(Json(
        json!({ "lid_jid": format!("{}@lid", a.lid), "jid": format!("{phone}@s.whatsapp.net") }),
    ))
}

#[derive(Deserialize)]
struct MediaQuery {
    /// The contact that received the message.
    to: String,
    /// The message id.
    id: String,
}

/// Downloads and decrypts (with the contact's client) the media of a message a contact received.
async fn media(State(app): State<App>, Query(q): Query<MediaQuery>) -> Reply {
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
