//! The control API (HTTP JSON under `/control`), documented in `testnet/WHATSAPP_PROTOCOL.md`.
//! This module routes it and handles the world's side: the bridged user's account, contacts
//! (each a live whatsapp-rust client) and groups; playing the phone (scan a QR code, enter a
//! pairing code, unlink a device, push history sync); the network (drop or refuse connections,
//! the LID switch). Acting as a contact is in `act.rs`, reading what contacts saw in `inbox.rs`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use wacore_binary::builder::NodeBuilder;

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

pub(super) type Reply = Result<Json<Value>, (StatusCode, Json<Value>)>;

pub(super) fn fail(status: StatusCode, message: impl Into<String>) -> (StatusCode, Json<Value>) {
    (status, Json(json!({ "error": message.into() })))
}

pub(super) fn bad(message: impl Into<String>) -> (StatusCode, Json<Value>) {
    fail(StatusCode::BAD_REQUEST, message)
}

pub(super) fn world(
    app: &App,
) -> Result<std::sync::MutexGuard<'_, World>, (StatusCode, Json<Value>)> {
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
        .route("/control/groups/subject", post(group_subject))
        .route("/control/group", get(group_info))
        .merge(super::group_control::routes())
        .route("/control/qr/scan", post(scan))
        .route("/control/pair_code", post(enter_pair_code))
        .route("/control/devices", get(devices))
        .route("/control/unlink", post(unlink))
        .route("/control/send", post(super::act::send))
        .route("/control/poll", post(super::kinds::poll))
        .route("/control/vote", post(super::kinds::vote))
        .route("/control/disappearing", post(super::kinds::disappearing))
        .route("/control/expiring", post(super::kinds::expiring))
        .route("/control/view_once", post(super::kinds::view_once))
        .route("/control/receipt", post(super::act::receipt))
        .route("/control/typing", post(super::act::typing))
        .route("/control/presence", post(super::act::presence))
        .route("/control/received", get(super::inbox::received))
        .route("/control/receipts", get(super::inbox::receipts))
        .route("/control/events", get(super::inbox::events))
        .route("/control/stanzas", get(super::inbox::stanzas))
        .route("/control/drop", post(drop_connections))
        .route("/control/refuse", post(refuse))
        .route("/control/history_sync", post(super::history::push))
        .route("/control/picture", post(super::pictures::set))
        .route("/control/lid_switch", post(lid_switch))
        .route("/control/media", get(super::inbox::media))
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
struct GroupQuery {
    /// `ID` or `ID@g.us`.
    id: String,
}

/// A group as the server holds it (what members changed through the `w:g2` IQs shows here).
async fn group_info(State(app): State<App>, Query(q): Query<GroupQuery>) -> Reply {
    let w = world(&app)?;
    let g = w
        .groups
        .get(q.id.trim_end_matches("@g.us"))
        .ok_or_else(|| bad(format!("no group {}", q.id)))?;
    Ok(Json(json!({
        "id": g.id,
        "subject": g.subject,
        "members": g.participants.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize)]
struct SubjectReq {
    group: String,
    author: String,
    subject: String,
}

/// A member renames the group (the `w:gp2` subject notification reaches every member).
async fn group_subject(State(app): State<App>, Json(req): Json<SubjectReq>) -> Reply {
    let mut w = world(&app)?;
    let group = req.group.trim_end_matches("@g.us").to_owned();
    let author = normalize_phone(&req.author).ok_or_else(|| bad("bad author phone"))?;
    super::groups::set_subject(&mut w, &group, &author, &req.subject).map_err(bad)?;
    Ok(Json(json!({ "subject": req.subject })))
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
