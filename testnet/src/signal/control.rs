//! The control API: what tests and the demo use to play the phone, the contacts and the
//! daemon's failures (SIGNAL_PROTOCOL.md §6). JSON in, JSON out; `{"error": …}` with a 4xx on
//! bad input. It is not affected by simulated outages.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, State as AxumState};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use super::envelope::{self, Content, ReactionSpec};
use super::methods::{self, announce_group_update, content_from_control, deliver_incoming};
use super::server::Ctx;
use super::state::{
    Fault, FaultKind, Group, LinkCompletion, LinkOutcome, RateLimit, State, line, now_ms,
};
use super::util;

type Reply = Result<Json<Value>, (StatusCode, Json<Value>)>;
type Body = Json<Value>;

fn bad(message: impl Into<String>) -> (StatusCode, Json<Value>) {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": message.into()})),
    )
}

fn not_found(message: impl Into<String>) -> (StatusCode, Json<Value>) {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": message.into()})),
    )
}

fn object(body: Value) -> Result<Map<String, Value>, (StatusCode, Json<Value>)> {
    match body {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(Map::new()),
        _ => Err(bad("the body must be a JSON object")),
    }
}

fn text(map: &Map<String, Value>, key: &str) -> Option<String> {
    map.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn need(map: &Map<String, Value>, key: &str) -> Result<String, (StatusCode, Json<Value>)> {
    text(map, key).ok_or_else(|| bad(format!("missing \"{key}\"")))
}

fn strings(map: &Map<String, Value>, key: &str) -> Vec<String> {
    map.get(key)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn b64_field(
    map: &Map<String, Value>,
    key: &str,
) -> Result<Option<Vec<u8>>, (StatusCode, Json<Value>)> {
    match text(map, key) {
        None => Ok(None),
        Some(t) => util::b64_decode(&t)
            .map(Some)
            .ok_or_else(|| bad(format!("\"{key}\" is not base64"))),
    }
}

/// The `/control` routes.
pub(crate) fn routes(ctx: Arc<Ctx>) -> Router {
    Router::new()
        .route("/control/users", post(create_user))
        .route("/control/users/identity", post(change_identity))
        .route("/control/users/unregister", post(unregister))
        .route("/control/links", get(links))
        .route("/control/link", post(link))
        .route("/control/link/fail", post(link_fail))
        .route("/control/accounts", post(create_account))
        .route("/control/accounts/{account}/contacts", post(add_contact))
        .route("/control/accounts/{account}/message", post(message))
        .route("/control/accounts/{account}/edit", post(edit))
        .route("/control/accounts/{account}/delete", post(delete))
        .route("/control/accounts/{account}/reaction", post(reaction))
        .route("/control/accounts/{account}/receipt", post(receipt))
        .route("/control/accounts/{account}/typing", post(typing))
        .route("/control/accounts/{account}/sync-sent", post(sync_sent))
        .route("/control/accounts/{account}/sync-read", post(sync_read))
        .route("/control/accounts/{account}/raw", post(raw))
        .route("/control/accounts/{account}/sent", get(sent))
        .route("/control/accounts/{account}/pending", get(pending))
        .route("/control/requests", get(requests))
        .route("/control/groups", post(create_group))
        .route("/control/groups/update", post(update_group))
        .route("/control/rate-limit", post(rate_limit))
        .route("/control/outage", post(outage))
        .route("/control/restart", post(restart))
        .route("/control/inject", post(inject))
        .route("/control/delay", post(delay))
        .route("/control/fault", post(fault))
        .layer(DefaultBodyLimit::max(128 * 1024 * 1024))
        .with_state(ctx)
}

type St = AxumState<Arc<Ctx>>;

async fn create_user(AxumState(ctx): St, Json(body): Body) -> Reply {
    let body = object(body)?;
    let number = need(&body, "number")?;
    if !number.starts_with('+') || number.len() < 3 {
        return Err(bad("\"number\" must be E.164, e.g. +33612345678"));
    }
    let avatar = b64_field(&body, "avatar")?;
    let mut state = ctx.shared.lock();
    let uuid = state.ensure_user(&number, text(&body, "uuid"));
    let now = now_ms();
    if let Some(user) = state.users.get_mut(&number) {
        user.registered = true;
        if let Some(v) = text(&body, "givenName").or_else(|| text(&body, "name")) {
            user.given_name = Some(v);
        }
        if let Some(v) = text(&body, "familyName") {
            user.family_name = Some(v);
        }
        if let Some(v) = text(&body, "about") {
            user.about = Some(v);
        }
        if let Some(v) = text(&body, "aboutEmoji") {
            user.about_emoji = Some(v);
        }
        if avatar.is_some() {
            user.avatar = avatar;
        }
        user.profile_updated = now;
    }
    Ok(Json(json!({"number": number, "uuid": uuid})))
}

async fn change_identity(AxumState(ctx): St, Json(body): Body) -> Reply {
    let body = object(body)?;
    let number = need(&body, "number")?;
    let mut state = ctx.shared.lock();
    let key = state
        .change_identity(&number)
        .ok_or_else(|| not_found("no such user"))?;
    Ok(Json(json!({"fingerprint": util::hex_spaced(&key)})))
}

async fn unregister(AxumState(ctx): St, Json(body): Body) -> Reply {
    let body = object(body)?;
    let number = need(&body, "number")?;
    let mut state = ctx.shared.lock();
    let user = state
        .users
        .get_mut(&number)
        .ok_or_else(|| not_found("no such user"))?;
    user.registered = false;
    Ok(Json(json!({})))
}

async fn links(AxumState(ctx): St) -> Reply {
    let state = ctx.shared.lock();
    let pending: Vec<Value> = state
        .links
        .iter()
        .map(|l| json!({"uri": l.uri, "deviceName": l.device_name, "waiting": l.waiter.is_some()}))
        .collect();
    Ok(Json(json!({"pending": pending})))
}

/// The pending link a control call names (`uri`), or the newest one.
fn find_link(state: &State, uri: Option<&str>) -> Result<usize, (StatusCode, Json<Value>)> {
    let found = match uri {
        Some(uri) => state.links.iter().position(|l| l.uri == uri),
        None => state.links.iter().rposition(|l| l.early.is_none()),
    };
    found.ok_or_else(|| not_found("no such pending link"))
}

async fn link(AxumState(ctx): St, Json(body): Body) -> Reply {
    let body = object(body)?;
    let number = need(&body, "number")?;
    let mut state = ctx.shared.lock();
    let index = find_link(&state, text(&body, "uri").as_deref())?;
    let uuid = state.ensure_user(&number, text(&body, "uuid"));
    let completion = LinkCompletion {
        number: number.clone(),
        uuid: Some(uuid.clone()),
        given_name: text(&body, "givenName"),
    };
    if state.links[index].waiter.is_some() {
        let link = state.links.remove(index);
        let device = link.device_name.clone().unwrap_or_else(|| "cli".to_owned());
        let outcome = methods::complete_link(&mut state, &completion, &device);
        if let Some(waiter) = link.waiter {
            let _ = waiter.send(outcome);
        }
        return Ok(Json(
            json!({"number": number, "uuid": uuid, "finished": true}),
        ));
    }
    state.links[index].early = Some(Ok(completion));
    Ok(Json(
        json!({"number": number, "uuid": uuid, "finished": false}),
    ))
}

async fn link_fail(AxumState(ctx): St, Json(body): Body) -> Reply {
    let body = object(body)?;
    let outcome = || match text(&body, "kind").as_deref() {
        Some("io") => Ok(LinkOutcome::Io("Connection closed!".to_owned())),
        Some("timeout") | None => Ok(LinkOutcome::Timeout),
        Some(other) => Err(bad(format!("unknown kind {other}"))),
    };
    let mut state = ctx.shared.lock();
    let index = find_link(&state, text(&body, "uri").as_deref())?;
    if state.links[index].waiter.is_some() {
        let link = state.links.remove(index);
        if let Some(waiter) = link.waiter {
            let _ = waiter.send(outcome()?);
        }
    } else {
        state.links[index].early = Some(Err(outcome()?));
    }
    Ok(Json(json!({})))
}

async fn create_account(AxumState(ctx): St, Json(body): Body) -> Reply {
    let body = object(body)?;
    let number = need(&body, "number")?;
    let mut state = ctx.shared.lock();
    if state.accounts.contains_key(&number) {
        return Err((
            StatusCode::CONFLICT,
            Json(json!({"error": "account exists"})),
        ));
    }
    let uuid = state.add_account(
        &LinkCompletion {
            number: number.clone(),
            uuid: text(&body, "uuid"),
            given_name: text(&body, "givenName"),
        },
        text(&body, "deviceName").as_deref().unwrap_or("cli"),
    );
    Ok(Json(json!({"number": number, "uuid": uuid})))
}

/// Checks the path's account exists.
fn account_exists(state: &State, account: &str) -> Result<(), (StatusCode, Json<Value>)> {
    if state.accounts.contains_key(account) {
        Ok(())
    } else {
        Err(not_found(format!("no account {account}")))
    }
}

async fn add_contact(AxumState(ctx): St, Path(account): Path<String>, Json(body): Body) -> Reply {
    let body = object(body)?;
    let number = need(&body, "number")?;
    let mut state = ctx.shared.lock();
    account_exists(&state, &account)?;
    state.ensure_user(&number, text(&body, "uuid"));
    state.touch_recipient(&account, &number);
    if let Some(contact) = state
        .accounts
        .get_mut(&account)
        .and_then(|a| a.contacts.get_mut(&number))
    {
        contact.is_contact = true;
        if let Some(name) = text(&body, "name") {
            contact.name = Some(name);
        }
    }
    Ok(Json(json!({})))
}

/// The local accounts a message from `from` reaches: the path account, or for a group every
/// member account but the sender.
fn recipients_of(
    state: &State,
    account: &str,
    from: &str,
    group: Option<&str>,
) -> Result<Vec<String>, (StatusCode, Json<Value>)> {
    match group {
        None => Ok(vec![account.to_owned()]),
        Some(g) => {
            let group = state
                .groups
                .get(g)
                .ok_or_else(|| not_found(format!("no group {g}")))?;
            Ok(group
                .members
                .iter()
                .filter(|m| *m != from && state.accounts.contains_key(*m))
                .cloned()
                .collect())
        }
    }
}

/// Shared set-up of the "act as a contact" endpoints: the sender exists, the account exists.
fn sender(
    state: &mut State,
    account: &str,
    body: &Map<String, Value>,
) -> Result<String, (StatusCode, Json<Value>)> {
    account_exists(state, account)?;
    let from = need(body, "from")?;
    if from == account {
        return Err(bad("\"from\" is the account itself; use sync-sent"));
    }
    let from = match state.find_user(&from) {
        Some(u) => u.number.clone(),
        None if from.starts_with('+') => {
            state.ensure_user(&from, None);
            from
        }
        None => return Err(not_found(format!("no user {from}"))),
    };
    Ok(from)
}

fn timestamp_for(state: &mut State, body: &Map<String, Value>) -> i64 {
    match body.get("timestamp").and_then(Value::as_i64) {
        Some(ts) => {
            state.last_ts = state.last_ts.max(ts);
            ts
        }
        None => state.next_ts(),
    }
}

fn device(body: &Map<String, Value>) -> i64 {
    body.get("sourceDevice")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

/// Delivers a data-message-like content from a contact; answers the timestamp and the path
/// account's attachment ids.
fn deliver_content(
    state: &mut State,
    account: &str,
    from: &str,
    body: &Map<String, Value>,
    content: &Content,
    wrap: &dyn Fn(Value) -> envelope::Body,
) -> Result<Value, (StatusCode, Json<Value>)> {
    let to = recipients_of(state, account, from, content.group.as_deref())?;
    let ts = timestamp_for(state, body);
    let device = device(body);
    let mut ids = Vec::new();
    if let (Some((pack, id)), Some(data)) = (&content.sticker, &content.sticker_data) {
        state.stickers.insert((pack.clone(), *id), data.clone());
    }
    for member in to {
        if let Some((pack, _)) = &content.sticker
            && let Some(acc) = state.accounts.get_mut(&member)
        {
            // As signal-cli does on receipt: the pack becomes known, fetched in the background.
            acc.sticker_packs.entry(pack.clone()).or_insert(false);
        }
        let data = envelope::data_message(state, ts, content);
        if member == account {
            ids = data
                .get("attachments")
                .and_then(Value::as_array)
                .map(|items| items.iter().filter_map(|a| a.get("id").cloned()).collect())
                .unwrap_or_default();
        }
        deliver_incoming(state, &member, from, device, ts, wrap(data));
    }
    if content.group.is_none() {
        state.touch_recipient(account, from);
    }
    if content.group.is_none()
        && let Some(contact) = state
            .accounts
            .get_mut(account)
            .and_then(|a| a.contacts.get_mut(from))
    {
        // As signal-cli does: a 1:1 message carries the chat's timer, and the receiver adopts it.
        contact.expiration = content.expires_in_seconds;
    }
    Ok(json!({"timestamp": ts, "attachmentIds": ids}))
}

async fn message(AxumState(ctx): St, Path(account): Path<String>, Json(body): Body) -> Reply {
    let body = object(body)?;
    let content = content_from_control(&body).map_err(bad)?;
    let mut state = ctx.shared.lock();
    let from = sender(&mut state, &account, &body)?;
    deliver_content(&mut state, &account, &from, &body, &content, &|d| {
        ("dataMessage", d)
    })
    .map(Json)
}

async fn edit(AxumState(ctx): St, Path(account): Path<String>, Json(body): Body) -> Reply {
    let body = object(body)?;
    let target = body
        .get("targetSentTimestamp")
        .and_then(Value::as_i64)
        .ok_or_else(|| bad("missing \"targetSentTimestamp\""))?;
    let content = content_from_control(&body).map_err(bad)?;
    let mut state = ctx.shared.lock();
    let from = sender(&mut state, &account, &body)?;
    deliver_content(&mut state, &account, &from, &body, &content, &|d| {
        (
            "editMessage",
            json!({"targetSentTimestamp": target, "dataMessage": d}),
        )
    })
    .map(Json)
}

async fn delete(AxumState(ctx): St, Path(account): Path<String>, Json(body): Body) -> Reply {
    let body = object(body)?;
    let target = body
        .get("targetSentTimestamp")
        .and_then(Value::as_i64)
        .ok_or_else(|| bad("missing \"targetSentTimestamp\""))?;
    let content = Content {
        remote_delete: Some(target),
        group: text(&body, "groupId"),
        ..Content::default()
    };
    let mut state = ctx.shared.lock();
    let from = sender(&mut state, &account, &body)?;
    deliver_content(&mut state, &account, &from, &body, &content, &|d| {
        ("dataMessage", d)
    })
    .map(Json)
}

async fn reaction(AxumState(ctx): St, Path(account): Path<String>, Json(body): Body) -> Reply {
    let body = object(body)?;
    let content = Content {
        reaction: Some(ReactionSpec {
            emoji: need(&body, "emoji")?,
            target_author: need(&body, "targetAuthor")?,
            target_ts: body
                .get("targetSentTimestamp")
                .and_then(Value::as_i64)
                .ok_or_else(|| bad("missing \"targetSentTimestamp\""))?,
            remove: body
                .get("isRemove")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        }),
        group: text(&body, "groupId"),
        ..Content::default()
    };
    let mut state = ctx.shared.lock();
    let from = sender(&mut state, &account, &body)?;
    deliver_content(&mut state, &account, &from, &body, &content, &|d| {
        ("dataMessage", d)
    })
    .map(Json)
}

async fn receipt(AxumState(ctx): St, Path(account): Path<String>, Json(body): Body) -> Reply {
    let body = object(body)?;
    let kind = text(&body, "type").unwrap_or_else(|| "delivery".to_owned());
    let (d, r, v) = match kind.as_str() {
        "delivery" => (true, false, false),
        "read" => (false, true, false),
        "viewed" => (false, false, true),
        other => return Err(bad(format!("unknown receipt type {other}"))),
    };
    let timestamps: Vec<i64> = body
        .get("timestamps")
        .and_then(Value::as_array)
        .map(|items| items.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default();
    let mut state = ctx.shared.lock();
    let from = sender(&mut state, &account, &body)?;
    let ts = timestamp_for(&mut state, &body);
    deliver_incoming(
        &mut state,
        &account,
        &from,
        device(&body),
        ts,
        (
            "receiptMessage",
            json!({"when": ts, "isDelivery": d, "isRead": r, "isViewed": v, "timestamps": timestamps}),
        ),
    );
    Ok(Json(json!({"timestamp": ts})))
}

async fn typing(AxumState(ctx): St, Path(account): Path<String>, Json(body): Body) -> Reply {
    let body = object(body)?;
    let action = text(&body, "action").unwrap_or_else(|| "STARTED".to_owned());
    if action != "STARTED" && action != "STOPPED" {
        return Err(bad("\"action\" is STARTED or STOPPED"));
    }
    let group = text(&body, "groupId");
    let mut state = ctx.shared.lock();
    let from = sender(&mut state, &account, &body)?;
    let to = recipients_of(&state, &account, &from, group.as_deref())?;
    let ts = timestamp_for(&mut state, &body);
    for member in to {
        let mut typing = json!({"action": action, "timestamp": ts});
        if let (Some(g), Some(obj)) = (&group, typing.as_object_mut()) {
            obj.insert("groupId".into(), json!(g));
        }
        deliver_incoming(
            &mut state,
            &member,
            &from,
            device(&body),
            ts,
            ("typingMessage", typing),
        );
    }
    Ok(Json(json!({"timestamp": ts})))
}

async fn sync_sent(AxumState(ctx): St, Path(account): Path<String>, Json(body): Body) -> Reply {
    let body = object(body)?;
    let content = content_from_control(&body).map_err(bad)?;
    let destination = text(&body, "destination");
    let edit_target = body.get("editTargetTimestamp").and_then(Value::as_i64);
    let mut state = ctx.shared.lock();
    account_exists(&state, &account)?;
    if destination.is_none() && content.group.is_none() {
        return Err(bad("need \"destination\" or \"groupId\""));
    }
    if let Some(g) = &content.group
        && !state.groups.contains_key(g)
    {
        return Err(not_found(format!("no group {g}")));
    }
    let destination = match destination {
        Some(d) => {
            if state.find_user(&d).is_none() {
                state.ensure_user(&d, None);
            }
            let number = state.find_user(&d).map_or(d.clone(), |u| u.number.clone());
            state.touch_recipient(&account, &number);
            Some(number)
        }
        None => None,
    };
    let ts = timestamp_for(&mut state, &body);
    let data = envelope::data_message(&mut state, ts, &content);
    let sent = match edit_target {
        Some(target) => envelope::sync_sent(
            &state,
            destination.as_deref(),
            None,
            Some(json!({"targetSentTimestamp": target, "dataMessage": data.clone()})),
            ts,
        ),
        None => envelope::sync_sent(&state, destination.as_deref(), Some(data.clone()), None, ts),
    };
    let result = envelope::result(
        &state,
        &account,
        &account,
        device(&body),
        ts,
        Some(("syncMessage", sent)),
    );
    state.enqueue(&account, result);
    // The phone really sent it: local recipients get it too.
    let to: Vec<String> = match (&content.group, &destination) {
        (Some(g), _) => state
            .groups
            .get(g)
            .map(|g| g.members.clone())
            .unwrap_or_default(),
        (None, Some(d)) => vec![d.clone()],
        (None, None) => Vec::new(),
    };
    for member in to {
        if member != account && state.accounts.contains_key(&member) {
            let data = envelope::data_message(&mut state, ts, &content);
            let body = match edit_target {
                Some(target) => (
                    "editMessage",
                    json!({"targetSentTimestamp": target, "dataMessage": data}),
                ),
                None => ("dataMessage", data),
            };
            deliver_incoming(&mut state, &member, &account, 1, ts, body);
        }
    }
    Ok(Json(json!({"timestamp": ts})))
}

async fn sync_read(AxumState(ctx): St, Path(account): Path<String>, Json(body): Body) -> Reply {
    let body = object(body)?;
    let mut state = ctx.shared.lock();
    account_exists(&state, &account)?;
    let reads: Vec<Value> = body
        .get("reads")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let sender = r.get("sender").and_then(Value::as_str).unwrap_or_default();
            let (number, uuid) = state.address_of(sender);
            json!({
                "sender": number.clone().or_else(|| uuid.clone()),
                "senderNumber": number,
                "senderUuid": uuid,
                "timestamp": r.get("timestamp").and_then(Value::as_i64).unwrap_or(0),
            })
        })
        .collect();
    let ts = timestamp_for(&mut state, &body);
    let result = envelope::result(
        &state,
        &account,
        &account,
        device(&body),
        ts,
        Some(("syncMessage", json!({"readMessages": reads}))),
    );
    state.enqueue(&account, result);
    Ok(Json(json!({"timestamp": ts})))
}

async fn raw(AxumState(ctx): St, Path(account): Path<String>, Json(body): Body) -> Reply {
    let body = object(body)?;
    let result = body
        .get("result")
        .cloned()
        .ok_or_else(|| bad("missing \"result\""))?;
    let mut state = ctx.shared.lock();
    account_exists(&state, &account)?;
    state.enqueue(&account, result);
    Ok(Json(json!({})))
}

async fn sent(AxumState(ctx): St, Path(account): Path<String>) -> Reply {
    let state = ctx.shared.lock();
    let acc = state
        .accounts
        .get(&account)
        .ok_or_else(|| not_found(format!("no account {account}")))?;
    Ok(Json(Value::Array(acc.sent.clone())))
}

async fn pending(AxumState(ctx): St, Path(account): Path<String>) -> Reply {
    let state = ctx.shared.lock();
    let acc = state
        .accounts
        .get(&account)
        .ok_or_else(|| not_found(format!("no account {account}")))?;
    Ok(Json(
        json!({"count": acc.queue.len(), "untrusted": acc.untrusted.len()}),
    ))
}

async fn requests(AxumState(ctx): St) -> Reply {
    Ok(Json(Value::Array(ctx.shared.lock().requests.clone())))
}

/// Numbers for group members: users are created when missing.
fn member_numbers(state: &mut State, list: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for m in list {
        let number = match state.find_user(m) {
            Some(u) => u.number.clone(),
            None => {
                state.ensure_user(m, None);
                m.clone()
            }
        };
        if !out.contains(&number) {
            out.push(number);
        }
    }
    out
}

async fn create_group(AxumState(ctx): St, Json(body): Body) -> Reply {
    let body = object(body)?;
    let avatar = b64_field(&body, "avatar")?;
    let mut state = ctx.shared.lock();
    let members = member_numbers(&mut state, &strings(&body, "members"));
    let by = match text(&body, "by") {
        Some(by) => member_numbers(&mut state, &[by]).remove(0),
        None => members
            .first()
            .cloned()
            .ok_or_else(|| bad("need \"members\""))?,
    };
    let mut all = members.clone();
    if !all.contains(&by) {
        all.insert(0, by.clone());
    }
    let mut admins = member_numbers(&mut state, &strings(&body, "admins"));
    if admins.is_empty() {
        admins.push(by.clone());
    }
    admins.retain(|a| all.contains(a));
    let id = util::b64_encode(&util::random_bytes(32));
    let known_by = all
        .iter()
        .filter(|m| state.accounts.contains_key(*m))
        .cloned()
        .collect();
    state.groups.insert(
        id.clone(),
        Group {
            id: id.clone(),
            name: text(&body, "name").unwrap_or_default(),
            description: text(&body, "description"),
            avatar,
            members: all.clone(),
            admins,
            revision: 0,
            expiration: body.get("expiration").and_then(Value::as_i64).unwrap_or(0),
            permission_add_member: "EVERY_MEMBER",
            permission_edit_details: "EVERY_MEMBER",
            permission_send_message: "EVERY_MEMBER",
            invite_link: None,
            known_by,
        },
    );
    for member in &all {
        for account in &all {
            if state.accounts.contains_key(account) {
                state.touch_recipient(account, member);
            }
        }
    }
    let ts = state.next_ts();
    announce_group_update(&mut state, &id, &by, &all, ts, 1);
    Ok(Json(json!({"groupId": id, "revision": 0, "timestamp": ts})))
}

async fn update_group(AxumState(ctx): St, Json(body): Body) -> Reply {
    let body = object(body)?;
    let group_id = need(&body, "groupId")?;
    let by = need(&body, "by")?;
    let avatar = b64_field(&body, "avatar")?;
    let mut state = ctx.shared.lock();
    let by = member_numbers(&mut state, &[by]).remove(0);
    let add = member_numbers(&mut state, &strings(&body, "addMembers"));
    let remove = member_numbers(&mut state, &strings(&body, "removeMembers"));
    let add_admins = member_numbers(&mut state, &strings(&body, "addAdmins"));
    let remove_admins = member_numbers(&mut state, &strings(&body, "removeAdmins"));
    let group = state
        .groups
        .get_mut(&group_id)
        .ok_or_else(|| not_found(format!("no group {group_id}")))?;
    let before = group.members.clone();
    if let Some(name) = text(&body, "name") {
        group.name = name;
    }
    if let Some(description) = text(&body, "description") {
        group.description = Some(description);
    }
    if avatar.is_some() {
        group.avatar = avatar;
    }
    if let Some(e) = body.get("expiration").and_then(Value::as_i64) {
        group.expiration = e;
    }
    for m in add {
        if !group.members.contains(&m) {
            group.members.push(m);
        }
    }
    group.members.retain(|m| !remove.contains(m));
    group
        .admins
        .retain(|m| !remove.contains(m) && !remove_admins.contains(m));
    for a in add_admins {
        if group.members.contains(&a) && !group.admins.contains(&a) {
            group.admins.push(a);
        }
    }
    group.revision += 1;
    let revision = group.revision;
    let mut notify = group.members.clone();
    notify.extend(before.into_iter().filter(|b| remove.contains(b)));
    let members = group.members.clone();
    for member in &members {
        for account in &members {
            if state.accounts.contains_key(account) {
                state.touch_recipient(account, member);
            }
        }
    }
    let ts = state.next_ts();
    announce_group_update(&mut state, &group_id, &by, &notify, ts, 1);
    Ok(Json(json!({"revision": revision, "timestamp": ts})))
}

async fn rate_limit(AxumState(ctx): St, Json(body): Body) -> Reply {
    let body = object(body)?;
    let mut state = ctx.shared.lock();
    let recipient = text(&body, "recipient")
        .map(|r| state.find_user(&r).map_or(r.clone(), |u| u.number.clone()));
    state.rate_limits.push(RateLimit {
        recipient,
        remaining: body
            .get("count")
            .and_then(Value::as_u64)
            .and_then(|c| u32::try_from(c).ok())
            .unwrap_or(1),
        retry_after: body
            .get("retryAfterSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(60),
    });
    Ok(Json(json!({})))
}

async fn outage(AxumState(ctx): St, Json(body): Body) -> Reply {
    let body = object(body)?;
    let down = body
        .get("down")
        .and_then(Value::as_bool)
        .ok_or_else(|| bad("missing \"down\""))?;
    if !ctx.set_outage(down).await {
        return Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": "the JSON-RPC listener did not follow"})),
        ));
    }
    Ok(Json(json!({})))
}

async fn restart(AxumState(ctx): St) -> Reply {
    let mut state = ctx.shared.lock();
    state.drop_connections();
    // Provisioning lives in the daemon's memory: pending links die with it.
    state.links.clear();
    Ok(Json(json!({})))
}

async fn inject(AxumState(ctx): St, Json(body): Body) -> Reply {
    let body = object(body)?;
    let text_line = match body.get("line") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => line(other),
        None => return Err(bad("missing \"line\"")),
    };
    let state = ctx.shared.lock();
    let mut sent = 0;
    for conn in state.conns.values() {
        if conn.tx.send(text_line.clone()).is_ok() {
            sent += 1;
        }
    }
    Ok(Json(json!({"sent": sent})))
}

async fn delay(AxumState(ctx): St, Json(body): Body) -> Reply {
    let body = object(body)?;
    let method = need(&body, "method")?;
    let ms = body.get("ms").and_then(Value::as_u64).unwrap_or(0);
    let mut state = ctx.shared.lock();
    if ms == 0 {
        state.delays.remove(&method);
    } else {
        state.delays.insert(method, ms);
    }
    Ok(Json(json!({})))
}

/// Spoils the next `count` replies to `method` (see SIGNAL_PROTOCOL.md, control API).
async fn fault(AxumState(ctx): St, Json(body): Body) -> Reply {
    let body = object(body)?;
    let method = need(&body, "method")?;
    let kind = match need(&body, "kind")?.as_str() {
        "garbage" => FaultKind::Garbage,
        "huge" => FaultKind::Huge(
            body.get("bytes")
                .and_then(Value::as_u64)
                .and_then(|b| usize::try_from(b).ok())
                .unwrap_or(1024 * 1024),
        ),
        "wrong-id" => FaultKind::WrongId,
        "result" => FaultKind::Result(body.get("result").cloned().unwrap_or(Value::Null)),
        "error" => FaultKind::Error(
            body.get("error")
                .cloned()
                .ok_or_else(|| bad("missing \"error\""))?,
        ),
        other => return Err(bad(format!("unknown fault kind {other}"))),
    };
    let count = body.get("count").and_then(Value::as_u64).unwrap_or(1);
    let mut state = ctx.shared.lock();
    for _ in 0..count {
        state.faults.push(Fault {
            method: method.clone(),
            kind: kind.clone(),
        });
    }
    Ok(Json(json!({})))
}
