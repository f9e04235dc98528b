//! The JSON-RPC methods, with signal-cli 0.13.19's params, results and errors
//! (SIGNAL_PROTOCOL.md §4).

use std::sync::Arc;

use serde_json::{Map, Value, json};
use tokio::sync::oneshot;

use super::envelope::{
    self, AttachmentSpec, Body, Content, MentionSpec, PreviewSpec, QuoteSpec, ReactionSpec,
    StyleSpec,
};
use super::params::{self, Params, missing};
use super::rpc::RpcError;
use super::state::{
    Group, LinkCompletion, LinkOutcome, PendingLink, Shared, State, Subscription, TrustLevel, User,
    VERSION, now_ms,
};
use super::util;

/// A method's result, and the accounts whose queues to flush once the response is written
/// (so `subscribeReceive` answers before the first notification).
pub(crate) struct Outcome {
    pub result: Result<Value, RpcError>,
    pub flush: Vec<String>,
}

impl From<Result<Value, RpcError>> for Outcome {
    fn from(result: Result<Value, RpcError>) -> Outcome {
        Outcome {
            result,
            flush: Vec::new(),
        }
    }
}

/// How signal-cli routes a method in multi-account mode.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Daemon-level only.
    Multi,
    /// Daemon-level, or per-account when `account` is given.
    Both,
    /// Per-account only.
    Single,
}

fn kind(method: &str) -> Option<Kind> {
    Some(match method {
        "listAccounts" | "startLink" | "finishLink" => Kind::Multi,
        "version" | "subscribeReceive" | "unsubscribeReceive" => Kind::Both,
        "send" | "sendReaction" | "remoteDelete" | "sendTyping" | "sendReceipt"
        | "listContacts" | "listGroups" | "updateGroup" | "quitGroup" | "getAttachment"
        | "getAvatar" | "getUserStatus" | "updateProfile" | "updateContact" | "removeContact"
        | "block" | "unblock" | "listIdentities" | "trust" | "sendSyncRequest" | "listDevices"
        | "getSticker" => Kind::Single,
        _ => return None,
    })
}

/// Jackson's `asText()` of the account param.
fn as_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(_) | Value::Bool(_) => value.to_string(),
        _ => String::new(),
    }
}

/// Routes a request like `SignalJsonRpcCommandHandler.handleRequest`.
pub(crate) async fn dispatch(
    shared: &Arc<Shared>,
    conn: u64,
    method: &str,
    mut params: Option<Value>,
) -> Outcome {
    let Some(kind) = kind(method) else {
        return Err(RpcError::new(-32601, "Method not implemented")).into();
    };
    if kind != Kind::Multi {
        let account = params
            .as_mut()
            .and_then(Value::as_object_mut)
            .and_then(|o| o.remove("account").filter(|v| !v.is_null()));
        if let Some(account) = account {
            let account = as_text(&account);
            if !shared.lock().accounts.contains_key(&account) {
                return Err(RpcError::invalid_params("Specified account does not exist")).into();
            }
            return single(shared, conn, method, &account, params).await;
        }
    }
    match kind {
        Kind::Multi | Kind::Both => multi(shared, conn, method, params).await,
        Kind::Single => {
            let only = {
                let state = shared.lock();
                (state.accounts.len() == 1)
                    .then(|| state.accounts.keys().next().cloned())
                    .flatten()
            };
            match only {
                Some(account) => single(shared, conn, method, &account, params).await,
                None => Err(RpcError::invalid_params(
                    "Method requires valid account parameter",
                ))
                .into(),
            }
        }
    }
}

async fn multi(shared: &Arc<Shared>, conn: u64, method: &str, params: Option<Value>) -> Outcome {
    match method {
        "version" => Ok(json!({"version": VERSION})).into(),
        "listAccounts" => {
            let state = shared.lock();
            Ok(Value::Array(
                state
                    .accounts
                    .keys()
                    .map(|n| json!({"number": n}))
                    .collect(),
            ))
            .into()
        }
        "startLink" => Ok(start_link(&mut shared.lock())).into(),
        "finishLink" => finish_link(shared, params).await.into(),
        "subscribeReceive" => {
            let mut state = shared.lock();
            let accounts: Vec<String> = state.accounts.keys().cloned().collect();
            subscribe(&mut state, conn, accounts)
        }
        "unsubscribeReceive" => {
            let Some(params) = params else {
                return Err(RpcError::user(
                    "Missing subscription parameter with subscription id",
                ))
                .into();
            };
            unsubscribe(&mut shared.lock(), conn, &params).into()
        }
        _ => Err(RpcError::new(-32601, "Method not implemented")).into(),
    }
}

fn subscribe(state: &mut State, conn: u64, accounts: Vec<String>) -> Outcome {
    let id = state.next_sub;
    state.next_sub += 1;
    state.subs.insert(
        id,
        Subscription {
            conn,
            accounts: accounts.clone(),
        },
    );
    Outcome {
        result: Ok(json!(id)),
        flush: accounts,
    }
}

/// `unsubscribeReceive` with params present (signal-cli reads `subscription` with `asInt()`).
fn unsubscribe(state: &mut State, conn: u64, params: &Value) -> Result<Value, RpcError> {
    let node = match params {
        Value::Array(items) => items.first(),
        Value::Object(map) => map.get("subscription"),
        _ => None,
    };
    let Some(node) = node else {
        return Err(missing("subscription"));
    };
    let id = match node {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        Value::Bool(b) => Some(i64::from(*b)),
        _ => None,
    }
    .unwrap_or(0);
    match state.subs.get(&id) {
        Some(sub) if sub.conn == conn => {
            state.subs.remove(&id);
            Ok(json!({}))
        }
        _ => Err(RpcError::user("Unknown subscription id")),
    }
}

fn start_link(state: &mut State) -> Value {
    let device_id = util::b64_encode(&util::random_bytes(16))
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_");
    let mut key = vec![0x05];
    key.extend(util::random_bytes(32));
    let pub_key = util::b64_encode(&key).replace('=', "");
    let uri = format!(
        "sgnl://linkdevice?uuid={}&pub_key={}",
        util::url_encode(&device_id),
        util::url_encode(&pub_key)
    );
    state.links.push(PendingLink {
        uri: uri.clone(),
        device_name: None,
        waiter: None,
        early: None,
        claimed: false,
    });
    json!({"deviceLinkUri": uri})
}

/// Turns the phone's scan into the account (or the failure) `finishLink` reports.
pub(crate) fn complete_link(
    state: &mut State,
    completion: &LinkCompletion,
    device_name: &str,
) -> LinkOutcome {
    if state.accounts.contains_key(&completion.number) {
        return LinkOutcome::Exists(completion.number.clone());
    }
    state.add_account(completion, device_name);
    LinkOutcome::Linked(completion.number.clone())
}

fn link_result(outcome: Result<LinkOutcome, oneshot::error::RecvError>) -> Result<Value, RpcError> {
    match outcome {
        Ok(LinkOutcome::Linked(number)) => Ok(json!({"number": number})),
        Ok(LinkOutcome::Timeout) => {
            Err(RpcError::user("Link request timed out, please try again."))
        }
        Ok(LinkOutcome::Io(message)) => Err(RpcError::io(format!(
            "Link request error: {message} (IOException)"
        ))),
        Ok(LinkOutcome::Exists(number)) => Err(RpcError::user(format!(
            "The user {number} already exists\nDelete \"/var/lib/signal-cli/data/{number}\" before trying again."
        ))),
        Err(_) => Err(RpcError::io(
            "Link request error: Connection closed! (IOException)",
        )),
    }
}

async fn finish_link(shared: &Arc<Shared>, params: Option<Value>) -> Result<Value, RpcError> {
    // Strictly typed params (a Java record): unknown keys and arrays are mapping errors.
    let map = match params {
        None => return Err(missing("request")),
        Some(Value::Object(map)) => map,
        Some(_) => {
            return Err(RpcError::invalid_request(
                "Cannot deserialize value of type `org.asamk.signal.commands.FinishLinkCommand$FinishLinkParams` from Array value",
            ));
        }
    };
    if let Some(key) = map
        .keys()
        .find(|k| !matches!(k.as_str(), "deviceLinkUri" | "deviceName"))
    {
        return Err(RpcError::invalid_request(format!(
            "Unrecognized field \"{key}\" (class org.asamk.signal.commands.FinishLinkCommand$FinishLinkParams), not marked as ignorable"
        )));
    }
    let text = |key: &str| -> Result<Option<String>, RpcError> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(Some(v.to_string())),
            Some(_) => Err(RpcError::invalid_request(format!(
                "Cannot deserialize value of type `java.lang.String` from Object value (field \"{key}\")"
            ))),
        }
    };
    let Some(uri) = text("deviceLinkUri")? else {
        return Err(RpcError::user("Missing deviceLinkUri."));
    };
    let device_name = text("deviceName")?.unwrap_or_else(|| "cli".to_owned());
    if uri.is_empty() || uri.chars().any(char::is_whitespace) || !uri.contains(':') {
        return Err(RpcError::user("Invalid device link uri."));
    }
    let rx = {
        let mut state = shared.lock();
        let Some(index) = state.links.iter().position(|l| l.uri == uri && !l.claimed) else {
            return Err(RpcError::user("Unknown device link uri."));
        };
        let link = &mut state.links[index];
        link.claimed = true;
        link.device_name = Some(device_name.clone());
        if let Some(early) = link.early.take() {
            state.links.remove(index);
            let outcome = match early {
                Ok(completion) => complete_link(&mut state, &completion, &device_name),
                Err(failure) => failure,
            };
            return link_result(Ok(outcome));
        }
        let (tx, rx) = oneshot::channel();
        link.waiter = Some(tx);
        rx
    };
    link_result(rx.await)
}

async fn single(
    shared: &Arc<Shared>,
    conn: u64,
    method: &str,
    account: &str,
    params: Option<Value>,
) -> Outcome {
    match method {
        "version" => return Ok(json!({"version": VERSION})).into(),
        "subscribeReceive" => {
            return subscribe(&mut shared.lock(), conn, vec![account.to_owned()]);
        }
        "unsubscribeReceive" => {
            // Params are at least `{}` here (the account key was in them).
            let params = params.unwrap_or_else(|| json!({}));
            return unsubscribe(&mut shared.lock(), conn, &params).into();
        }
        _ => {}
    }
    let p = match params {
        None => Params::default(),
        Some(Value::Object(map)) => Params(map),
        Some(_) => {
            return Err(RpcError::invalid_request(
                "Cannot deserialize value of type `java.util.LinkedHashMap<java.lang.String,java.lang.Object>` from Array value",
            ))
            .into();
        }
    };
    let result = match method {
        "send" => send(shared, account, &p).await,
        "sendReaction" => send_reaction(shared, account, &p),
        "remoteDelete" => remote_delete(shared, account, &p),
        "sendTyping" => send_typing(shared, account, &p),
        "sendReceipt" => send_receipt(shared, account, &p),
        "listContacts" => list_contacts(shared, account, &p),
        "listGroups" => list_groups(shared, account, &p),
        "updateGroup" => update_group(shared, account, &p).await,
        "quitGroup" => quit_group(shared, account, &p),
        "getAttachment" => get_attachment(shared, &p),
        "getAvatar" => get_avatar(shared, &p),
        "getSticker" => get_sticker(shared, account, &p),
        "getUserStatus" => get_user_status(shared, &p),
        "updateProfile" => update_profile(shared, account, &p).await,
        "updateContact" => update_contact(shared, account, &p),
        "removeContact" => remove_contact(shared, account, &p),
        "block" => set_blocked(shared, account, &p, true),
        "unblock" => set_blocked(shared, account, &p, false),
        "listIdentities" => list_identities(shared, account, &p),
        "trust" => trust(shared, account, &p),
        "sendSyncRequest" => Ok(json!({})),
        "listDevices" => list_devices(shared, account),
        _ => Err(RpcError::new(-32601, "Method not implemented")),
    };
    if result.is_ok() && is_recorded(method) {
        let mut state = shared.lock();
        let timestamp = result
            .as_ref()
            .ok()
            .and_then(|r| r.get("timestamp"))
            .cloned()
            .unwrap_or(Value::Null);
        if let Some(acc) = state.accounts.get_mut(account)
            && method != "send"
        {
            acc.sent.push(json!({
                "method": method,
                "params": p.to_value(),
                "timestamp": timestamp,
                "attachments": [],
            }));
        }
    }
    result.into()
}

/// Methods whose successful calls the control API lists as "sent" (`send` records itself,
/// with its attachments).
fn is_recorded(method: &str) -> bool {
    matches!(
        method,
        "sendReaction"
            | "remoteDelete"
            | "sendTyping"
            | "sendReceipt"
            | "updateGroup"
            | "quitGroup"
            | "updateProfile"
            | "updateContact"
            | "removeContact"
            | "block"
            | "unblock"
            | "trust"
    )
}

// ---------------------------------------------------------------------------------------------
// Sending

/// The device id of the daemon (a linked device) as recipients see it in `sourceDevice`.
const DAEMON_DEVICE: i64 = 2;

/// Who a send goes to.
#[derive(Debug, Clone)]
enum Target {
    Single(String),
    Group(String),
    NoteToSelf,
}

/// `CommandUtil.getRecipientIdentifiers`: `noteToSelf`, `recipient[]`, `groupId[]`, `username[]`.
fn targets(p: &Params, with_self_and_username: bool) -> Result<Vec<Target>, RpcError> {
    let mut out = Vec::new();
    if with_self_and_username && p.bool("noteToSelf")? {
        out.push(Target::NoteToSelf);
    }
    for r in p.strings("recipient")?.unwrap_or_default() {
        let r = Target::Single(params::recipient(Some(&r))?);
        out.push(r);
    }
    for g in p.strings("groupId")?.unwrap_or_default() {
        out.push(Target::Group(params::group_id(&g)?));
    }
    if with_self_and_username {
        for u in p.strings("username")?.unwrap_or_default() {
            out.push(Target::Single(format!("u:{u}")));
        }
    }
    // A set in signal-cli: duplicates collapse.
    let mut seen = Vec::new();
    out.retain(|t| {
        let key = format!("{t:?}");
        let fresh = !seen.contains(&key);
        seen.push(key);
        fresh
    });
    if out.is_empty() {
        return Err(RpcError::user("No recipients given"));
    }
    Ok(out)
}

/// Checks a group send: the group exists and the account is a member.
fn check_group(state: &State, account: &str, group_id: &str) -> Result<(), RpcError> {
    let Some(group) = state.groups.get(group_id) else {
        return Err(RpcError::user(format!("Group not found: {group_id}")));
    };
    if !group.members.iter().any(|m| m == account) {
        return Err(RpcError::user(format!(
            "User is not a member in group: {} ({group_id})",
            group.name
        )));
    }
    Ok(())
}

/// Delivers an envelope body to a local account as an incoming message from `from`, applying
/// the receiving account's identity trust.
pub(crate) fn deliver_incoming(
    state: &mut State,
    to: &str,
    from: &str,
    device: i64,
    timestamp: i64,
    body: Body,
) {
    if to == from || !state.accounts.contains_key(to) {
        return;
    }
    let trusted = state.trusts(to, from);
    let full = envelope::result(state, to, from, device, timestamp, Some(body));
    if trusted {
        state.enqueue(to, full);
        return;
    }
    let mut bare = envelope::result(state, to, from, device, timestamp, None);
    let uuid = state
        .users
        .get(from)
        .map_or_else(|| from.to_owned(), |u| u.uuid.clone());
    if let Some(obj) = bare.as_object_mut() {
        obj.insert(
            "exception".into(),
            json!({"message": format!("Untrusted identity: {uuid}"), "type": "UntrustedIdentityException"}),
        );
    }
    if let Some(acc) = state.accounts.get_mut(to) {
        acc.untrusted.push((from.to_owned(), full));
    }
    state.enqueue(to, bare);
}

/// One recipient's send result; delivers when it succeeds and the recipient is local.
fn send_one(
    state: &mut State,
    account: &str,
    ident: &str,
    group: Option<&str>,
    deliver: &mut dyn FnMut(&mut State, &str),
) -> Value {
    let with_group = |mut v: Value| {
        if let (Some(g), Some(obj)) = (group, v.as_object_mut()) {
            obj.insert("groupId".into(), json!(g));
        }
        v
    };
    let user = state.find_user(ident).filter(|u| u.registered).cloned();
    let Some(user) = user else {
        let address = if let Some(name) = ident.strip_prefix("u:") {
            json!({"uuid": null, "number": null, "username": name})
        } else if let Some(pni) = ident.strip_prefix("PNI:") {
            json!({"uuid": format!("PNI:{pni}"), "number": null, "username": null})
        } else if util::is_uuid(ident) {
            json!({"uuid": ident, "number": null, "username": null})
        } else {
            json!({"uuid": null, "number": ident, "username": null})
        };
        return with_group(json!({"recipientAddress": address, "type": "UNREGISTERED_FAILURE"}));
    };
    let address = user.recipient_address();
    if user.number == account {
        return with_group(json!({"recipientAddress": address, "type": "SUCCESS"}));
    }
    if let Some(retry) = state.take_rate_limit(&user.number) {
        return with_group(json!({
            "recipientAddress": address,
            "type": "RATE_LIMIT_FAILURE",
            "token": "sim-rate-limit-challenge",
            "retryAfterSeconds": retry,
        }));
    }
    if !state.trusts(account, &user.number) {
        return with_group(json!({"recipientAddress": address, "type": "IDENTITY_FAILURE"}));
    }
    deliver(state, &user.number);
    with_group(json!({"recipientAddress": address, "type": "SUCCESS"}))
}

/// Sends to every target; `body` builds what a local recipient receives (`None`: nothing).
/// Answers the results, or the group error.
fn send_to_targets(
    state: &mut State,
    account: &str,
    targets: &[Target],
    timestamp: i64,
    body: &dyn Fn(&mut State, Option<&str>) -> Option<Body>,
) -> Result<Vec<Value>, RpcError> {
    for t in targets {
        if let Target::Group(g) = t {
            check_group(state, account, g)?;
        }
    }
    let mut results = Vec::new();
    for t in targets {
        match t {
            Target::NoteToSelf => {
                let address = state
                    .users
                    .get(account)
                    .map_or(Value::Null, |u| u.recipient_address());
                results.push(json!({"recipientAddress": address, "type": "SUCCESS"}));
            }
            Target::Single(ident) => {
                let mut deliver = |state: &mut State, to: &str| {
                    if let Some(b) = body(state, None) {
                        deliver_incoming(state, to, account, DAEMON_DEVICE, timestamp, b);
                    }
                };
                results.push(send_one(state, account, ident, None, &mut deliver));
            }
            Target::Group(g) => {
                let members: Vec<String> = state
                    .groups
                    .get(g)
                    .map(|gr| gr.members.clone())
                    .unwrap_or_default();
                for member in members.iter().filter(|m| *m != account) {
                    let mut deliver = |state: &mut State, to: &str| {
                        if let Some(b) = body(state, Some(g)) {
                            deliver_incoming(state, to, account, DAEMON_DEVICE, timestamp, b);
                        }
                    };
                    results.push(send_one(state, account, member, Some(g), &mut deliver));
                }
            }
        }
    }
    Ok(results)
}

/// `SendMessageResultUtils.outputResult`: the result, or -4/-5/-1 when nothing succeeded.
fn send_outcome(timestamp: i64, results: Vec<Value>) -> Result<Value, RpcError> {
    let kind = |r: &Value| {
        r.get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let success = results.is_empty() || results.iter().any(|r| kind(r) == "SUCCESS");
    let all = |t: &str| !results.is_empty() && results.iter().all(|r| kind(r) == t);
    let only_identity = all("IDENTITY_FAILURE");
    let only_rate = all("RATE_LIMIT_FAILURE");
    let response = json!({"timestamp": timestamp, "results": results});
    if success {
        return Ok(response);
    }
    let error = if only_identity {
        RpcError::new(-4, "Failed to send message due to untrusted identities")
    } else if only_rate {
        RpcError::new(-5, "Failed to send message due to rate limiting")
    } else {
        RpcError::user("Failed to send message")
    };
    Err(error.with_response(response))
}

/// `start:length:X` as signal-cli's mention / text-style pattern `(\d+):(\d+):(.+)`.
fn parse_range(text: &str) -> Option<(i64, i64, String)> {
    let (start, rest) = text.split_once(':')?;
    let (length, what) = rest.split_once(':')?;
    if start.is_empty()
        || length.is_empty()
        || what.is_empty()
        || !start.bytes().all(|b| b.is_ascii_digit())
        || !length.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some((start.parse().ok()?, length.parse().ok()?, what.to_owned()))
}

fn parse_mentions(list: Option<Vec<String>>) -> Result<Vec<MentionSpec>, RpcError> {
    list.unwrap_or_default()
        .iter()
        .map(|m| {
            let (start, length, who) = parse_range(m).ok_or_else(|| {
                RpcError::user(format!(
                    "Invalid mention syntax ({m}) expected 'start:length:recipientNumber'"
                ))
            })?;
            Ok(MentionSpec {
                start,
                length,
                who: params::recipient(Some(&who))?,
            })
        })
        .collect()
}

const STYLES: [&str; 6] = [
    "NONE",
    "BOLD",
    "ITALIC",
    "SPOILER",
    "STRIKETHROUGH",
    "MONOSPACE",
];

fn parse_styles(list: Option<Vec<String>>) -> Result<Vec<StyleSpec>, RpcError> {
    list.unwrap_or_default()
        .iter()
        .map(|s| {
            let (start, length, style) = parse_range(s).ok_or_else(|| {
                RpcError::user(format!(
                    "Invalid textStyle syntax ({s}) expected 'start:length:STYLE'"
                ))
            })?;
            if !STYLES.contains(&style.as_str()) {
                return Err(RpcError::user(format!("Invalid style: {style}")));
            }
            Ok(StyleSpec {
                start,
                length,
                style,
            })
        })
        .collect()
}

/// Loads one `attachments` entry: a data URI (RFC 2397, optional `filename=`) or a file path.
async fn load_attachment(spec: &str) -> Result<AttachmentSpec, RpcError> {
    if let Some(rest) = spec
        .strip_prefix("data:")
        .or_else(|| spec.strip_prefix("DATA:"))
    {
        let invalid = || {
            RpcError::internal(
                "The given string is not a valid data URI. (IllegalArgumentException)",
            )
        };
        let (meta, data) = rest.split_once(',').ok_or_else(invalid)?;
        if data.is_empty() {
            return Err(invalid());
        }
        let mut parts = meta.split(';');
        let content_type = parts
            .next()
            .filter(|t| t.contains('/'))
            .unwrap_or("text/plain")
            .to_owned();
        let mut filename = None;
        let mut base64 = false;
        for part in parts {
            if part.eq_ignore_ascii_case("base64") {
                base64 = true;
            } else if let Some(("filename", v)) = part.split_once('=') {
                filename = Some(util::url_decode(v).unwrap_or_else(|| v.to_owned()));
            }
        }
        let bytes = if base64 {
            util::b64_decode(data).ok_or_else(|| {
                RpcError::internal(
                    "Illegal base64 character in data URI (IllegalArgumentException)",
                )
            })?
        } else {
            util::url_decode(data).ok_or_else(invalid)?.into_bytes()
        };
        return Ok(AttachmentSpec {
            content_type,
            filename,
            data: bytes,
            ..AttachmentSpec::default()
        });
    }
    match tokio::fs::read(spec).await {
        Ok(data) => {
            let filename = std::path::Path::new(spec)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned());
            Ok(AttachmentSpec {
                content_type: util::content_type_for(spec).to_owned(),
                filename,
                data,
                ..AttachmentSpec::default()
            })
        }
        Err(e) => Err(RpcError::internal(format!(
            "Failed to send message: {spec}: {e} (AttachmentInvalidException)"
        ))),
    }
}

async fn send(shared: &Arc<Shared>, account: &str, p: &Params) -> Result<Value, RpcError> {
    let targets = targets(p, true)?;
    if p.bool("endSession")? {
        let singles: Vec<Target> = targets
            .iter()
            .filter(|t| matches!(t, Target::Single(_)))
            .cloned()
            .collect();
        if singles.is_empty() {
            return Err(RpcError::user("No recipients given"));
        }
        let mut state = shared.lock();
        let ts = state.next_ts();
        let results = send_to_targets(&mut state, account, &singles, ts, &|_, _| None)?;
        return send_outcome(ts, results);
    }
    let sticker = match p.string("sticker") {
        None => None,
        Some(s) => {
            let parsed = s.split_once(':').filter(|(pack, id)| {
                !pack.is_empty()
                    && pack.len().is_multiple_of(2)
                    && pack
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                    && !id.is_empty()
                    && id.bytes().all(|b| b.is_ascii_digit())
            });
            let Some((pack, id)) = parsed else {
                return Err(RpcError::user(format!(
                    "Invalid sticker syntax ({s}) expected 'stickerPackId:stickerId'"
                )));
            };
            Some((pack.to_owned(), id.parse::<i64>().unwrap_or(0)))
        }
    };
    let message = p.string("message").unwrap_or_default();
    let attachment_specs = p.strings("attachment")?.unwrap_or_default();
    let view_once = p.bool("viewOnce")?;
    let mentions = parse_mentions(p.strings("mention")?)?;
    let text_styles = parse_styles(p.strings("textStyle")?)?;
    let quote = match p.long("quoteTimestamp")? {
        None => None,
        Some(id) => {
            let Some(author) = p.string("quoteAuthor") else {
                return Err(RpcError::user("Quote author parameter is missing"));
            };
            let author = params::recipient(Some(&author))?;
            let quote_mentions = parse_mentions(p.strings("quoteMention")?)?;
            let quote_styles = parse_styles(p.strings("quoteTextStyle")?)?;
            let mut quote_attachments = Vec::new();
            for a in p.strings("quoteAttachment")?.unwrap_or_default() {
                let mut parts = a.splitn(3, ':');
                let content_type = parts.next().unwrap_or_default().to_owned();
                if content_type.is_empty() {
                    return Err(RpcError::user(format!(
                        "Invalid attachment syntax ({a}) expected 'contentType[:filename[:previewFile]]'"
                    )));
                }
                quote_attachments.push((content_type, parts.next().map(str::to_owned)));
            }
            Some(QuoteSpec {
                id,
                author,
                text: Some(p.string("quoteMessage").unwrap_or_default()),
                mentions: quote_mentions,
                text_styles: quote_styles,
                attachments: quote_attachments,
            })
        }
    };
    let previews = match p.string("previewUrl") {
        Some(url) => vec![PreviewSpec {
            url,
            title: p.string("previewTitle").unwrap_or_default(),
            description: p.string("previewDescription").unwrap_or_default(),
        }],
        None => Vec::new(),
    };
    if message.is_empty() && attachment_specs.is_empty() && sticker.is_none() && quote.is_none() {
        return Err(RpcError::user(
            "Sending empty message is not allowed, either a message, attachment or sticker must be given.",
        ));
    }
    let edit_ts = p.long("editTimestamp")?;
    let mut attachments = Vec::new();
    for spec in &attachment_specs {
        attachments.push(load_attachment(spec).await?);
    }
    let content = Content {
        message: (!message.is_empty()).then_some(message),
        expires_in_seconds: 0,
        view_once,
        mentions,
        text_styles,
        quote,
        attachments,
        sticker,
        previews,
        ..Content::default()
    };
    let mut state = shared.lock();
    let ts = state.next_ts();
    // signal-cli puts the chat's disappearing-message timer on every message it sends: the
    // contact's for 1:1 messages, the group's for groups.
    let dm_expiration = targets
        .iter()
        .find_map(|t| match t {
            Target::Single(ident) => {
                let number = state.find_user(ident).map(|u| u.number.clone())?;
                state
                    .accounts
                    .get(account)?
                    .contacts
                    .get(&number)
                    .map(|c| c.expiration)
            }
            _ => None,
        })
        .unwrap_or(0);
    let group_expiration = targets.iter().find_map(|t| match t {
        Target::Group(g) => state.groups.get(g).map(|g| g.expiration),
        _ => None,
    });
    let body = |state: &mut State, group: Option<&str>| -> Option<Body> {
        let mut c = content.clone();
        c.group = group.map(str::to_owned);
        c.expires_in_seconds = match group {
            Some(g) => state.groups.get(g).map_or(0, |g| g.expiration),
            None => dm_expiration,
        };
        let data = envelope::data_message(state, ts, &c);
        Some(match edit_ts {
            Some(target) => (
                "editMessage",
                json!({"targetSentTimestamp": target, "dataMessage": data}),
            ),
            None => ("dataMessage", data),
        })
    };
    let results = send_to_targets(&mut state, account, &targets, ts, &body)?;
    let attachments_json: Vec<Value> = content
        .attachments
        .iter()
        .map(|a| {
            json!({
                "contentType": a.content_type,
                "filename": a.filename,
                "size": a.data.len(),
                "data": util::b64_encode(&a.data),
            })
        })
        .collect();
    let outcome = send_outcome(ts, results);
    if outcome.is_ok()
        && let Some(acc) = state.accounts.get_mut(account)
    {
        acc.sent.push(json!({
            "method": "send",
            "params": p.to_value(),
            "timestamp": ts,
            "attachments": attachments_json,
            "expiresInSeconds": group_expiration.unwrap_or(dm_expiration),
        }));
    }
    outcome
}

fn send_reaction(shared: &Arc<Shared>, account: &str, p: &Params) -> Result<Value, RpcError> {
    let targets = targets(p, true)?;
    let emoji = p.string("emoji");
    let remove = p.bool("remove")?;
    let target_author = match (p.string("targetAuthor"), targets.as_slice()) {
        (None, [Target::Single(single)]) => single.clone(),
        (author, _) => params::recipient(author.as_deref())?,
    };
    let target_ts = p.long("targetTimestamp")?;
    let _story = p.bool("story")?;
    let Some(emoji) = emoji else {
        return Err(missing("emoji"));
    };
    let Some(target_ts) = target_ts else {
        return Err(missing("targetTimestamp"));
    };
    let mut state = shared.lock();
    let ts = state.next_ts();
    let content = Content {
        reaction: Some(ReactionSpec {
            emoji,
            target_author,
            target_ts,
            remove,
        }),
        ..Content::default()
    };
    let body = |state: &mut State, group: Option<&str>| -> Option<Body> {
        let mut c = content.clone();
        c.group = group.map(str::to_owned);
        Some(("dataMessage", envelope::data_message(state, ts, &c)))
    };
    let results = send_to_targets(&mut state, account, &targets, ts, &body)?;
    send_outcome(ts, results)
}

fn remote_delete(shared: &Arc<Shared>, account: &str, p: &Params) -> Result<Value, RpcError> {
    let target_ts = p.long("targetTimestamp")?;
    let targets = targets(p, true)?;
    let Some(target_ts) = target_ts else {
        return Err(missing("targetTimestamp"));
    };
    let mut state = shared.lock();
    let ts = state.next_ts();
    let content = Content {
        remote_delete: Some(target_ts),
        ..Content::default()
    };
    let body = |state: &mut State, group: Option<&str>| -> Option<Body> {
        let mut c = content.clone();
        c.group = group.map(str::to_owned);
        Some(("dataMessage", envelope::data_message(state, ts, &c)))
    };
    let results = send_to_targets(&mut state, account, &targets, ts, &body)?;
    send_outcome(ts, results)
}

fn send_typing(shared: &Arc<Shared>, account: &str, p: &Params) -> Result<Value, RpcError> {
    let mut targets_list = Vec::new();
    for r in p.strings("recipient")?.unwrap_or_default() {
        targets_list.push(Target::Single(params::recipient(Some(&r))?));
    }
    for g in p.strings("groupId")?.unwrap_or_default() {
        targets_list.push(Target::Group(params::group_id(&g)?));
    }
    let stop = p.bool("stop")?;
    if targets_list.is_empty() {
        return Err(RpcError::user("No recipients given"));
    }
    let action = if stop { "STOPPED" } else { "STARTED" };
    let mut state = shared.lock();
    let ts = state.next_ts();
    let body = |_: &mut State, group: Option<&str>| -> Option<Body> {
        let mut typing = json!({"action": action, "timestamp": ts});
        if let (Some(g), Some(obj)) = (group, typing.as_object_mut()) {
            obj.insert("groupId".into(), json!(g));
        }
        Some(("typingMessage", typing))
    };
    let results = send_to_targets(&mut state, account, &targets_list, ts, &body)
        .map_err(|e| RpcError::user(format!("Failed to send to group: {}", e.message)))?;
    send_outcome(ts, results)
}

fn send_receipt(shared: &Arc<Shared>, account: &str, p: &Params) -> Result<Value, RpcError> {
    let recipient = params::recipient(p.string("recipient").as_deref())?;
    let timestamps = p.longs("targetTimestamp")?;
    let kind = p.string("type");
    let Some(timestamps) = timestamps else {
        return Err(missing("targetTimestamp"));
    };
    let (is_read, is_viewed) = match kind.as_deref() {
        None | Some("read") => (true, false),
        Some("viewed") => (false, true),
        Some(other) => {
            return Err(RpcError::user(format!("Unknown receipt type: {other}")));
        }
    };
    let mut state = shared.lock();
    let ts = state.next_ts();
    let body = |_: &mut State, _: Option<&str>| -> Option<Body> {
        Some((
            "receiptMessage",
            json!({"when": ts, "isDelivery": false, "isRead": is_read, "isViewed": is_viewed, "timestamps": timestamps}),
        ))
    };
    let results = send_to_targets(&mut state, account, &[Target::Single(recipient)], ts, &body)?;
    send_outcome(ts, results)
}

// ---------------------------------------------------------------------------------------------
// Contacts, profiles, identities

fn list_contacts(shared: &Arc<Shared>, account: &str, p: &Params) -> Result<Value, RpcError> {
    let all = p.bool("allRecipients")?;
    let blocked = match p.raw("blocked") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(other) => return Err(params::class_cast(other, "java.lang.Boolean")),
    };
    let filter: Vec<String> = p
        .strings("recipient")?
        .unwrap_or_default()
        .iter()
        .map(|r| params::recipient(Some(r)))
        .collect::<Result<_, _>>()?;
    let name = p.string("name");
    let state = shared.lock();
    let Some(acc) = state.accounts.get(account) else {
        return Ok(json!([]));
    };
    let mut out = Vec::new();
    for (number, contact) in &acc.contacts {
        let user = state.users.get(number);
        if !all && !contact.is_contact {
            continue;
        }
        if blocked.is_some_and(|b| b != contact.blocked) {
            continue;
        }
        if !filter.is_empty()
            && !filter
                .iter()
                .any(|f| f == number || user.is_some_and(|u| &u.uuid == f))
        {
            continue;
        }
        if let Some(name) = &name {
            let matches = contact
                .name
                .as_deref()
                .is_some_and(|n| n.contains(name.as_str()))
                || user
                    .and_then(User::display_name)
                    .is_some_and(|n| n.contains(name.as_str()));
            if !matches {
                continue;
            }
        }
        let profile = user.map(|u| {
            json!({
                "lastUpdateTimestamp": u.profile_updated,
                "givenName": u.given_name,
                "familyName": u.family_name,
                "about": u.about,
                "aboutEmoji": u.about_emoji,
                "hasAvatar": u.avatar.is_some(),
                "mobileCoinAddress": null,
            })
        });
        out.push(json!({
            "number": number,
            "uuid": user.map(|u| u.uuid.clone()),
            "username": null,
            "name": contact.name,
            "givenName": contact.given_name,
            "familyName": contact.family_name,
            "nickName": null,
            "nickGivenName": null,
            "nickFamilyName": null,
            "note": contact.note,
            "color": null,
            "isBlocked": contact.blocked,
            "isHidden": contact.hidden,
            "messageExpirationTime": contact.expiration,
            "profileSharing": false,
            "unregistered": user.is_some_and(|u| !u.registered),
            "profile": profile,
        }));
    }
    Ok(Value::Array(out))
}

fn get_user_status(shared: &Arc<Shared>, p: &Params) -> Result<Value, RpcError> {
    let recipients = p.strings("recipient")?.unwrap_or_default();
    let usernames = p.strings("username")?.unwrap_or_default();
    let state = shared.lock();
    let mut out = Vec::new();
    for r in recipients {
        let number = params::recipient(Some(&r)).unwrap_or_else(|_| r.clone());
        let user = state.find_user(&number).filter(|u| u.registered);
        out.push(json!({
            "recipient": r,
            "number": user.map_or(number.clone(), |u| u.number.clone()),
            "uuid": user.map(|u| u.uuid.clone()),
            "isRegistered": user.is_some(),
        }));
    }
    for u in usernames {
        out.push(json!({"recipient": u, "username": u, "uuid": null, "isRegistered": false}));
    }
    Ok(Value::Array(out))
}

async fn update_profile(
    shared: &Arc<Shared>,
    account: &str,
    p: &Params,
) -> Result<Value, RpcError> {
    let given = p.string("givenName").or_else(|| p.string("name"));
    let family = p.string("familyName");
    let about = p.string("about");
    let about_emoji = p.string("aboutEmoji");
    let remove_avatar = p.bool("removeAvatar")?;
    let avatar = match p.string("avatar").filter(|_| !remove_avatar) {
        Some(path) => Some(
            tokio::fs::read(&path)
                .await
                .map_err(|e| RpcError::io(format!("Update profile error: {path}: {e}")))?,
        ),
        None => None,
    };
    let mut state = shared.lock();
    let now = now_ms();
    if let Some(user) = state.users.get_mut(account) {
        if given.is_some() {
            user.given_name = given;
        }
        if family.is_some() {
            user.family_name = family;
        }
        if about.is_some() {
            user.about = about;
        }
        if about_emoji.is_some() {
            user.about_emoji = about_emoji;
        }
        if remove_avatar {
            user.avatar = None;
        } else if avatar.is_some() {
            user.avatar = avatar;
        }
        user.profile_updated = now;
    }
    Ok(json!({}))
}

fn update_contact(shared: &Arc<Shared>, account: &str, p: &Params) -> Result<Value, RpcError> {
    let recipient = params::recipient(p.string("recipient").as_deref())?;
    let expiration = p.long("expiration")?;
    let mut state = shared.lock();
    let number = state
        .find_user(&recipient)
        .map_or(recipient.clone(), |u| u.number.clone());
    let Some(acc) = state.accounts.get_mut(account) else {
        return Ok(json!({}));
    };
    let contact = acc.contacts.entry(number).or_default();
    contact.is_contact = true;
    if let Some(name) = p.string("name") {
        contact.name = Some(name);
    }
    if let Some(name) = p.string("givenName") {
        contact.given_name = Some(name);
    }
    if let Some(name) = p.string("familyName") {
        contact.family_name = Some(name);
    }
    if let Some(note) = p.string("note") {
        contact.note = Some(note);
    }
    if let Some(expiration) = expiration {
        contact.expiration = expiration;
    }
    Ok(json!({}))
}

fn remove_contact(shared: &Arc<Shared>, account: &str, p: &Params) -> Result<Value, RpcError> {
    let recipient = params::recipient(p.string("recipient").as_deref())?;
    let hide = p.bool("hide")?;
    let forget = p.bool("forget")?;
    let mut state = shared.lock();
    let number = state
        .find_user(&recipient)
        .map_or(recipient.clone(), |u| u.number.clone());
    if let Some(acc) = state.accounts.get_mut(account) {
        if forget {
            acc.contacts.remove(&number);
            acc.identities.remove(&number);
        } else if let Some(contact) = acc.contacts.get_mut(&number) {
            if hide {
                contact.hidden = true;
            } else {
                contact.is_contact = false;
                contact.name = None;
                contact.given_name = None;
                contact.family_name = None;
            }
        }
    }
    Ok(json!({}))
}

fn set_blocked(
    shared: &Arc<Shared>,
    account: &str,
    p: &Params,
    blocked: bool,
) -> Result<Value, RpcError> {
    let recipients: Vec<String> = p
        .strings("recipient")?
        .unwrap_or_default()
        .iter()
        .map(|r| params::recipient(Some(r)))
        .collect::<Result<_, _>>()?;
    let groups: Vec<String> = p
        .strings("groupId")?
        .unwrap_or_default()
        .iter()
        .map(|g| params::group_id(g))
        .collect::<Result<_, _>>()?;
    let mut state = shared.lock();
    let numbers: Vec<String> = recipients
        .iter()
        .map(|r| state.find_user(r).map_or(r.clone(), |u| u.number.clone()))
        .collect();
    if let Some(acc) = state.accounts.get_mut(account) {
        for n in numbers {
            acc.contacts.entry(n).or_default().blocked = blocked;
        }
        for g in groups {
            if blocked {
                acc.blocked_groups.insert(g);
            } else {
                acc.blocked_groups.remove(&g);
            }
        }
    }
    Ok(json!({}))
}

/// The identity JSON of `listIdentities`.
fn identity_json(state: &State, account: &str, number: &str) -> Option<Value> {
    let acc = state.accounts.get(account)?;
    let record = acc.identities.get(number)?;
    let me = state.users.get(account)?;
    let them = state.users.get(number);
    let their_id = them.map_or(number, |u| u.uuid.as_str());
    let safety = util::safety_number(&me.uuid, &me.identity_key, their_id, &record.key);
    Some(json!({
        "number": number,
        "uuid": them.map(|u| u.uuid.clone()),
        "fingerprint": util::hex_spaced(&record.key),
        "safetyNumber": util::format_safety_number(&safety),
        "scannableSafetyNumber": util::b64_encode(&util::scannable_safety_number(&safety)),
        "trustLevel": record.trust.name(),
        "addedTimestamp": record.added,
    }))
}

fn list_identities(shared: &Arc<Shared>, account: &str, p: &Params) -> Result<Value, RpcError> {
    let filter = match p.string("number") {
        Some(n) => Some(params::recipient(Some(&n))?),
        None => None,
    };
    let state = shared.lock();
    let numbers: Vec<String> = state
        .accounts
        .get(account)
        .map(|a| a.identities.keys().cloned().collect())
        .unwrap_or_default();
    let filter = filter.map(|f| state.find_user(&f).map_or(f.clone(), |u| u.number.clone()));
    Ok(Value::Array(
        numbers
            .iter()
            .filter(|n| filter.as_ref().is_none_or(|f| f == *n))
            .filter_map(|n| identity_json(&state, account, n))
            .collect(),
    ))
}

fn trust(shared: &Arc<Shared>, account: &str, p: &Params) -> Result<Value, RpcError> {
    let recipient = params::recipient(p.string("recipient").as_deref())?;
    let all_keys = p.bool("trustAllKnownKeys")?;
    let mut state = shared.lock();
    let number = state
        .find_user(&recipient)
        .map_or(recipient.clone(), |u| u.number.clone());
    let level = if all_keys {
        let known = state
            .accounts
            .get(account)
            .is_some_and(|a| a.identities.contains_key(&number));
        if !known {
            return Err(RpcError::user(
                "Failed to set the trust for this number, make sure the number is correct.",
            ));
        }
        TrustLevel::TrustedUnverified
    } else {
        let Some(code) = p.string("verifiedSafetyNumber") else {
            return Err(RpcError::user(
                "You need to specify the fingerprint/safety number you have verified with -v SAFETY_NUMBER",
            ));
        };
        let code = code.replace(' ', "");
        let bad_format = || {
            RpcError::user(
                "Safety number has invalid format, either specify the old hex fingerprint or the new safety number",
            )
        };
        let mismatch = || {
            RpcError::user(
                "Failed to set the trust for this number, make sure the number and the fingerprint/safety number are correct.",
            )
        };
        let identity = identity_json(&state, account, &number).ok_or_else(mismatch)?;
        let field = |k: &str| {
            identity
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .replace(' ', "")
        };
        let matches = if code.len() == 66 {
            let bytes = util::hex_decode(&code.to_ascii_lowercase()).ok_or_else(bad_format)?;
            util::hex(&bytes) == field("fingerprint")
        } else if code.len() == 60 {
            code == field("safetyNumber")
        } else {
            let bytes = util::b64_decode(&code).ok_or_else(bad_format)?;
            util::b64_encode(&bytes) == field("scannableSafetyNumber")
        };
        if !matches {
            return Err(mismatch());
        }
        TrustLevel::TrustedVerified
    };
    let released = match state.accounts.get_mut(account) {
        Some(acc) => {
            if let Some(record) = acc.identities.get_mut(&number) {
                record.trust = level;
            }
            let (released, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut acc.untrusted)
                .into_iter()
                .partition(|(from, _)| *from == number);
            acc.untrusted = kept;
            released
        }
        None => Vec::new(),
    };
    // signal-cli retries the messages it kept for this sender on its next receive cycle.
    for (_, result) in released {
        state.enqueue(account, result);
    }
    Ok(json!({}))
}

fn list_devices(shared: &Arc<Shared>, account: &str) -> Result<Value, RpcError> {
    let state = shared.lock();
    let Some(acc) = state.accounts.get(account) else {
        return Ok(json!([]));
    };
    Ok(json!([
        {"id": 1, "name": null, "createdTimestamp": acc.linked_at, "lastSeenTimestamp": acc.linked_at},
        {"id": 2, "name": acc.device_name, "createdTimestamp": acc.linked_at, "lastSeenTimestamp": now_ms()},
    ]))
}

// ---------------------------------------------------------------------------------------------
// Attachments and avatars

fn get_attachment(shared: &Arc<Shared>, p: &Params) -> Result<Value, RpcError> {
    let Some(id) = p.string("id") else {
        return Err(missing("id"));
    };
    let state = shared.lock();
    match state.attachments.get(&id) {
        Some(data) => Ok(json!({"data": util::b64_encode(data)})),
        None => Err(RpcError::user(format!(
            "Could not find attachment with ID: {id}"
        ))),
    }
}

/// `getSticker`: a sticker of a pack the account learned from a received sticker, base64 in
/// `{"data"}`. signal-cli fetches the pack in the background on receipt, and the call that finds
/// it missing fetches it but still answers "not found" (0.13.19's `retrieveSticker`), so the
/// first call after a receipt fails once.
fn get_sticker(shared: &Arc<Shared>, account: &str, p: &Params) -> Result<Value, RpcError> {
    let Some(pack) = p.string("packId") else {
        return Err(missing("packId"));
    };
    let Some(sticker) = p.long("stickerId")? else {
        return Err(missing("stickerId"));
    };
    let pack = pack.to_ascii_lowercase();
    let not_found = || {
        RpcError::user(format!(
            "Could not find sticker with ID: {sticker} in pack StickerPackId{{{pack}}}"
        ))
    };
    let mut state = shared.lock();
    let fetched = match state
        .accounts
        .get_mut(account)
        .and_then(|a| a.sticker_packs.get_mut(&pack))
    {
        None => return Err(not_found()),
        Some(fetched) => std::mem::replace(fetched, true),
    };
    if !fetched {
        return Err(not_found());
    }
    match state.stickers.get(&(pack.clone(), sticker)) {
        Some(data) => Ok(json!({"data": util::b64_encode(data)})),
        None => Err(not_found()),
    }
}

fn get_avatar(shared: &Arc<Shared>, p: &Params) -> Result<Value, RpcError> {
    let not_found = || RpcError::user("Could not find avatar");
    let state = shared.lock();
    let data = if let Some(contact) = p.string("contact") {
        params::recipient(Some(&contact))?;
        // Address-book avatars are not simulated.
        None
    } else if let Some(profile) = p.string("profile") {
        let r = params::recipient(Some(&profile))?;
        state.find_user(&r).and_then(|u| u.avatar.clone())
    } else if let Some(group) = p.string("groupId") {
        let g = params::group_id(&group)?;
        state.groups.get(&g).and_then(|g| g.avatar.clone())
    } else {
        return Err(missing("groupId"));
    };
    data.map(|d| json!({"data": util::b64_encode(&d)}))
        .ok_or_else(not_found)
}

// ---------------------------------------------------------------------------------------------
// Groups

fn group_json(state: &State, account: &str, g: &Group) -> Value {
    let member = |n: &String| {
        let (number, uuid) = state.address_of(n);
        json!({"number": number, "uuid": uuid})
    };
    json!({
        "id": g.id,
        "name": g.name,
        "description": g.description,
        "isMember": g.members.iter().any(|m| m == account),
        "isBlocked": state.accounts.get(account).is_some_and(|a| a.blocked_groups.contains(&g.id)),
        "messageExpirationTime": g.expiration,
        "members": g.members.iter().map(member).collect::<Vec<_>>(),
        "pendingMembers": [],
        "requestingMembers": [],
        "admins": g.admins.iter().map(member).collect::<Vec<_>>(),
        "banned": [],
        "permissionAddMember": g.permission_add_member,
        "permissionEditDetails": g.permission_edit_details,
        "permissionSendMessage": g.permission_send_message,
        "groupInviteLink": g.invite_link,
    })
}

fn list_groups(shared: &Arc<Shared>, account: &str, p: &Params) -> Result<Value, RpcError> {
    let filter: Vec<String> = p
        .strings("groupId")?
        .unwrap_or_default()
        .iter()
        .map(|g| params::group_id(g))
        .collect::<Result<_, _>>()?;
    let state = shared.lock();
    Ok(Value::Array(
        state
            .groups_of(account)
            .into_iter()
            .filter(|g| filter.is_empty() || filter.contains(&g.id))
            .map(|g| group_json(&state, account, g))
            .collect(),
    ))
}

/// Announces a group change: an UPDATE data message from `by` to every listed local account.
pub(crate) fn announce_group_update(
    state: &mut State,
    group_id: &str,
    by: &str,
    to: &[String],
    timestamp: i64,
    device: i64,
) {
    for member in to {
        if member == by {
            continue;
        }
        if let Some(g) = state.groups.get_mut(group_id)
            && state.accounts.contains_key(member)
        {
            g.known_by.insert(member.clone());
        }
        let content = Content {
            group: Some(group_id.to_owned()),
            group_update: true,
            expires_in_seconds: state.groups.get(group_id).map_or(0, |g| g.expiration),
            ..Content::default()
        };
        let data = envelope::data_message(state, timestamp, &content);
        deliver_incoming(state, member, by, device, timestamp, ("dataMessage", data));
    }
}

fn permission(value: Option<String>) -> Result<Option<&'static str>, RpcError> {
    match value.as_deref() {
        None => Ok(None),
        Some("every-member" | "everyMember") => Ok(Some("EVERY_MEMBER")),
        Some("only-admins" | "onlyAdmins") => Ok(Some("ONLY_ADMINS")),
        Some(other) => Err(RpcError::user(format!("Invalid group permission: {other}"))),
    }
}

/// Resolves member numbers for a group change; unregistered ones are an error.
fn registered_numbers(state: &State, list: &[String]) -> Result<Vec<String>, RpcError> {
    list.iter()
        .map(|r| match state.find_user(r).filter(|u| u.registered) {
            Some(u) => Ok(u.number.clone()),
            None => Err(RpcError::user(format!("The user {r} is not registered."))),
        })
        .collect()
}

async fn update_group(shared: &Arc<Shared>, account: &str, p: &Params) -> Result<Value, RpcError> {
    let group_id = match p.string("groupId") {
        Some(g) => Some(params::group_id(&g)?),
        None => None,
    };
    let list = |key: &str| -> Result<Vec<String>, RpcError> {
        p.strings(key)?
            .unwrap_or_default()
            .iter()
            .map(|r| params::recipient(Some(r)))
            .collect()
    };
    let name = p.string("name");
    let description = p.string("description");
    let add = list("member")?;
    let remove = list("removeMember")?;
    let admins = list("admin")?;
    let remove_admins = list("removeAdmin")?;
    let _ban = list("ban")?;
    let _unban = list("unban")?;
    let avatar_path = p.string("avatar");
    let reset_link = p.bool("resetLink")?;
    let link = match p.string("link").as_deref() {
        None => None,
        Some("enabled") => Some(true),
        Some("enabled-with-approval" | "enabledWithApproval") => Some(true),
        Some("disabled") => Some(false),
        Some(other) => {
            return Err(RpcError::user(format!("Invalid group link state: {other}")));
        }
    };
    let expiration = p.long("expiration")?;
    let perm_add = permission(p.string("setPermissionAddMember"))?;
    let perm_edit = permission(p.string("setPermissionEditDetails"))?;
    let perm_send = permission(p.string("setPermissionSendMessages"))?;
    let avatar = match avatar_path {
        Some(path) => Some(tokio::fs::read(&path).await.map_err(|e| {
            RpcError::user(format!(
                "Failed to add avatar attachment for group\": {path}: {e}"
            ))
        })?),
        None => None,
    };

    let mut state = shared.lock();
    let Some(group_id) = group_id else {
        // Create.
        let mut members = vec![account.to_owned()];
        for n in registered_numbers(&state, &add)? {
            if !members.contains(&n) {
                members.push(n);
            }
        }
        let mut group_admins = vec![account.to_owned()];
        for n in registered_numbers(&state, &admins)? {
            if members.contains(&n) && !group_admins.contains(&n) {
                group_admins.push(n);
            }
        }
        let id = util::b64_encode(&util::random_bytes(32));
        let group = Group {
            id: id.clone(),
            name: name.unwrap_or_default(),
            description,
            avatar,
            members: members.clone(),
            admins: group_admins,
            revision: 0,
            expiration: expiration.unwrap_or(0),
            permission_add_member: perm_add.unwrap_or("EVERY_MEMBER"),
            permission_edit_details: perm_edit.unwrap_or("EVERY_MEMBER"),
            permission_send_message: perm_send.unwrap_or("EVERY_MEMBER"),
            invite_link: link.filter(|on| *on).map(|_| {
                format!(
                    "https://signal.group/#{}",
                    util::hex(&util::random_bytes(24))
                )
            }),
            known_by: [account.to_owned()].into_iter().collect(),
        };
        state.groups.insert(id.clone(), group);
        let ts = state.next_ts();
        let results = group_results(&mut state, account, &id, &members);
        announce_group_update(&mut state, &id, account, &members, ts, DAEMON_DEVICE);
        return Ok(json!({"groupId": id, "timestamp": ts, "results": results}));
    };

    check_group(&state, account, &group_id)?;
    let add = registered_numbers(&state, &add)?;
    let admins = registered_numbers(&state, &admins)?;
    let remove: Vec<String> = remove
        .iter()
        .map(|r| state.find_user(r).map_or(r.clone(), |u| u.number.clone()))
        .collect();
    let remove_admins: Vec<String> = remove_admins
        .iter()
        .map(|r| state.find_user(r).map_or(r.clone(), |u| u.number.clone()))
        .collect();
    let Some(group) = state.groups.get_mut(&group_id) else {
        return Err(RpcError::user(format!("Group not found: {group_id}")));
    };
    let before: Vec<String> = group.members.clone();
    let mut changed = false;
    if let Some(name) = name.filter(|n| *n != group.name) {
        group.name = name;
        changed = true;
    }
    if description.is_some() && description != group.description {
        group.description = description;
        changed = true;
    }
    if avatar.is_some() {
        group.avatar = avatar;
        changed = true;
    }
    for n in add {
        if !group.members.contains(&n) {
            group.members.push(n);
            changed = true;
        }
    }
    for n in &remove {
        if group.members.contains(n) {
            group.members.retain(|m| m != n);
            group.admins.retain(|m| m != n);
            changed = true;
        }
    }
    for n in admins {
        if group.members.contains(&n) && !group.admins.contains(&n) {
            group.admins.push(n);
            changed = true;
        }
    }
    for n in &remove_admins {
        if group.admins.contains(n) {
            group.admins.retain(|m| m != n);
            changed = true;
        }
    }
    if let Some(e) = expiration.filter(|e| *e != group.expiration) {
        group.expiration = e;
        changed = true;
    }
    for (target, value) in [
        (&mut group.permission_add_member, perm_add),
        (&mut group.permission_edit_details, perm_edit),
        (&mut group.permission_send_message, perm_send),
    ] {
        if let Some(v) = value.filter(|v| *v != *target) {
            *target = v;
            changed = true;
        }
    }
    if reset_link || link.is_some() {
        let on = link.unwrap_or(group.invite_link.is_some());
        group.invite_link = on.then(|| {
            format!(
                "https://signal.group/#{}",
                util::hex(&util::random_bytes(24))
            )
        });
        changed = true;
    }
    if !changed {
        return Ok(json!({}));
    }
    group.revision += 1;
    let members = group.members.clone();
    let ts = state.next_ts();
    let results = group_results(&mut state, account, &group_id, &members);
    let mut notify = members;
    notify.extend(before.into_iter().filter(|b| remove.contains(b)));
    announce_group_update(&mut state, &group_id, account, &notify, ts, DAEMON_DEVICE);
    Ok(json!({"timestamp": ts, "results": results}))
}

/// Send results for a group change, one per other member.
fn group_results(
    state: &mut State,
    account: &str,
    group_id: &str,
    members: &[String],
) -> Vec<Value> {
    members
        .iter()
        .filter(|m| *m != account)
        .map(|m| {
            let mut nothing = |_: &mut State, _: &str| {};
            send_one(state, account, m, Some(group_id), &mut nothing)
        })
        .collect()
}

fn quit_group(shared: &Arc<Shared>, account: &str, p: &Params) -> Result<Value, RpcError> {
    let Some(group_id) = p.string("groupId") else {
        return Err(missing("groupId"));
    };
    let group_id = params::group_id(&group_id)?;
    let new_admins: Vec<String> = p
        .strings("admin")?
        .unwrap_or_default()
        .iter()
        .map(|r| params::recipient(Some(r)))
        .collect::<Result<_, _>>()?;
    let delete = p.bool("delete")?;
    let mut state = shared.lock();
    let new_admins: Vec<String> = new_admins
        .iter()
        .map(|r| state.find_user(r).map_or(r.clone(), |u| u.number.clone()))
        .collect();
    let Some(group) = state.groups.get_mut(&group_id) else {
        return Err(RpcError::user(format!(
            "Failed to send to group: Group not found: {group_id}"
        )));
    };
    let mut result = json!({});
    if group.members.iter().any(|m| m == account) {
        let others: Vec<String> = group
            .members
            .iter()
            .filter(|m| *m != account)
            .cloned()
            .collect();
        let last_admin = group.admins.len() == 1 && group.admins.iter().any(|a| a == account);
        if last_admin && !others.is_empty() && new_admins.is_empty() {
            return Err(RpcError::user(format!(
                "You need to specify a new admin with --admin: User is last admin in group: {} ({group_id})",
                group.name
            )));
        }
        for a in new_admins {
            if others.contains(&a) && !group.admins.contains(&a) {
                group.admins.push(a);
            }
        }
        group.members.retain(|m| m != account);
        group.admins.retain(|m| m != account);
        group.revision += 1;
        let ts = state.next_ts();
        let results = group_results(&mut state, account, &group_id, &others);
        announce_group_update(&mut state, &group_id, account, &others, ts, DAEMON_DEVICE);
        result = json!({"timestamp": ts, "results": results});
    }
    if delete && let Some(acc) = state.accounts.get_mut(account) {
        acc.deleted_groups.insert(group_id);
    }
    Ok(result)
}

/// Builds a [`Content`] from control-API JSON.
pub(crate) fn content_from_control(body: &Map<String, Value>) -> Result<Content, String> {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    let int = |v: Option<&Value>| v.and_then(Value::as_i64);
    let array = |k: &str| {
        body.get(k)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let mentions = |items: Vec<Value>| -> Result<Vec<MentionSpec>, String> {
        items
            .iter()
            .map(|m| {
                Ok(MentionSpec {
                    start: int(m.get("start")).ok_or("mention needs start")?,
                    length: int(m.get("length")).ok_or("mention needs length")?,
                    who: text(m.get("number"))
                        .or_else(|| text(m.get("uuid")))
                        .ok_or("mention needs number or uuid")?,
                })
            })
            .collect()
    };
    let styles = |items: Vec<Value>| -> Result<Vec<StyleSpec>, String> {
        items
            .iter()
            .map(|s| {
                Ok(StyleSpec {
                    start: int(s.get("start")).ok_or("style needs start")?,
                    length: int(s.get("length")).ok_or("style needs length")?,
                    style: text(s.get("style")).ok_or("style needs style")?,
                })
            })
            .collect()
    };
    let mut attachments = Vec::new();
    for a in array("attachments") {
        let data = match a.get("data").and_then(Value::as_str) {
            Some(d) => util::b64_decode(d).ok_or("attachment data is not base64")?,
            None => Vec::new(),
        };
        attachments.push(AttachmentSpec {
            content_type: text(a.get("contentType"))
                .unwrap_or_else(|| "application/octet-stream".to_owned()),
            filename: text(a.get("filename")),
            data,
            width: int(a.get("width")),
            height: int(a.get("height")),
            caption: text(a.get("caption")),
        });
    }
    let quote = match body.get("quote").filter(|q| !q.is_null()) {
        None => None,
        Some(q) => Some(QuoteSpec {
            id: int(q.get("id")).ok_or("quote needs id")?,
            author: text(q.get("author")).ok_or("quote needs author")?,
            text: text(q.get("text")),
            mentions: mentions(
                q.get("mentions")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
            )?,
            text_styles: Vec::new(),
            attachments: q
                .get("attachments")
                .and_then(Value::as_array)
                .map(|items| {
                    items
                        .iter()
                        .map(|a| {
                            (
                                text(a.get("contentType")).unwrap_or_default(),
                                text(a.get("filename")),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }),
    };
    let (sticker, sticker_data) = match body.get("sticker").filter(|s| !s.is_null()) {
        None => (None, None),
        Some(s) => {
            let pack = text(s.get("packId")).ok_or("sticker needs packId")?;
            if pack.is_empty() || !pack.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err("sticker packId must be hex, as signal-cli writes it".to_owned());
            }
            let data = match s.get("data").and_then(Value::as_str) {
                Some(d) => Some(util::b64_decode(d).ok_or("sticker data is not base64")?),
                None => None,
            };
            (
                Some((
                    pack.to_ascii_lowercase(),
                    int(s.get("stickerId")).ok_or("sticker needs stickerId")?,
                )),
                data,
            )
        }
    };
    let previews = array("previews")
        .iter()
        .map(|p| PreviewSpec {
            url: text(p.get("url")).unwrap_or_default(),
            title: text(p.get("title")).unwrap_or_default(),
            description: text(p.get("description")).unwrap_or_default(),
        })
        .collect();
    Ok(Content {
        message: text(body.get("message")),
        expires_in_seconds: int(body.get("expiresInSeconds")).unwrap_or(0),
        view_once: body
            .get("viewOnce")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        mentions: mentions(array("mentions"))?,
        text_styles: styles(array("textStyles"))?,
        quote,
        attachments,
        sticker,
        sticker_data,
        previews,
        group: text(body.get("groupId")),
        ..Content::default()
    })
}
