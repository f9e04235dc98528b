//! Builds envelopes exactly as signal-cli 0.13.19's `Json*` classes serialise them
//! (SIGNAL_PROTOCOL.md §5): which keys are always present (possibly `null`) and which are
//! omitted when empty.

use serde_json::{Map, Value, json};

use super::state::{State, now_ms};

/// An attachment carried by a message.
#[derive(Debug, Clone, Default)]
pub(crate) struct AttachmentSpec {
    pub content_type: String,
    pub filename: Option<String>,
    pub data: Vec<u8>,
    pub width: Option<i64>,
    pub height: Option<i64>,
    pub caption: Option<String>,
}

/// A quote of an earlier message.
#[derive(Debug, Clone, Default)]
pub(crate) struct QuoteSpec {
    pub id: i64,
    /// Number or uuid of the quoted message's author.
    pub author: String,
    pub text: Option<String>,
    pub mentions: Vec<MentionSpec>,
    pub text_styles: Vec<StyleSpec>,
    pub attachments: Vec<(String, Option<String>)>,
}

/// A mention: UTF-16 `start`/`length` and the mentioned user's number or uuid.
#[derive(Debug, Clone, Default)]
pub(crate) struct MentionSpec {
    pub start: i64,
    pub length: i64,
    pub who: String,
}

/// A text style range.
#[derive(Debug, Clone, Default)]
pub(crate) struct StyleSpec {
    pub start: i64,
    pub length: i64,
    pub style: String,
}

/// A reaction to an earlier message.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReactionSpec {
    pub emoji: String,
    pub target_author: String,
    pub target_ts: i64,
    pub remove: bool,
}

/// A link preview.
#[derive(Debug, Clone, Default)]
pub(crate) struct PreviewSpec {
    pub url: String,
    pub title: String,
    pub description: String,
}

/// The content of a data message, whoever sends it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Content {
    pub message: Option<String>,
    pub expires_in_seconds: i64,
    pub view_once: bool,
    pub mentions: Vec<MentionSpec>,
    pub text_styles: Vec<StyleSpec>,
    pub quote: Option<QuoteSpec>,
    pub attachments: Vec<AttachmentSpec>,
    pub sticker: Option<(String, i64)>,
    /// The sticker's image, put on the simulated server for `getSticker` (control API only).
    pub sticker_data: Option<Vec<u8>>,
    pub previews: Vec<PreviewSpec>,
    pub group: Option<String>,
    pub group_update: bool,
    pub reaction: Option<ReactionSpec>,
    pub remote_delete: Option<i64>,
}

/// The JSON of the envelope's content: one key and its value.
pub(crate) type Body = (&'static str, Value);

fn mention_json(state: &State, m: &MentionSpec) -> Value {
    let (number, uuid) = state.address_of(&m.who);
    let legacy = number.clone().or_else(|| uuid.clone());
    json!({"name": legacy, "number": number, "uuid": uuid, "start": m.start, "length": m.length})
}

fn style_json(s: &StyleSpec) -> Value {
    json!({"style": s.style, "start": s.start, "length": s.length})
}

/// The attachment JSON (all keys present, unknowns `null`).
pub(crate) fn attachment_json(id: &str, a: &AttachmentSpec, upload_ts: i64) -> Value {
    json!({
        "contentType": a.content_type,
        "filename": a.filename,
        "id": id,
        "size": a.data.len(),
        "width": a.width,
        "height": a.height,
        "caption": a.caption,
        "uploadTimestamp": upload_ts,
    })
}

/// `groupInfo` for a group message.
pub(crate) fn group_info(state: &State, group_id: &str, update: bool) -> Value {
    let group = state.groups.get(group_id);
    json!({
        "groupId": group_id,
        "groupName": group.map(|g| g.name.clone()),
        "revision": group.map_or(0, |g| g.revision),
        "type": if update { "UPDATE" } else { "DELIVER" },
    })
}

/// A `dataMessage` object; attachments are stored and get ids.
pub(crate) fn data_message(state: &mut State, timestamp: i64, c: &Content) -> Value {
    let mut m = Map::new();
    m.insert("timestamp".into(), json!(timestamp));
    m.insert("message".into(), json!(c.message));
    m.insert("expiresInSeconds".into(), json!(c.expires_in_seconds));
    m.insert("viewOnce".into(), json!(c.view_once));
    if let Some(r) = &c.reaction {
        let (number, uuid) = state.address_of(&r.target_author);
        m.insert(
            "reaction".into(),
            json!({
                "emoji": r.emoji,
                "targetAuthor": number.clone().or_else(|| uuid.clone()),
                "targetAuthorNumber": number,
                "targetAuthorUuid": uuid,
                "targetSentTimestamp": r.target_ts,
                "isRemove": r.remove,
            }),
        );
    }
    if let Some(q) = &c.quote {
        let (number, uuid) = state.address_of(&q.author);
        let mut quote = Map::new();
        quote.insert("id".into(), json!(q.id));
        quote.insert(
            "author".into(),
            json!(number.clone().or_else(|| uuid.clone())),
        );
        quote.insert("authorNumber".into(), json!(number));
        quote.insert("authorUuid".into(), json!(uuid));
        quote.insert("text".into(), json!(q.text));
        if !q.mentions.is_empty() {
            let mentions: Vec<Value> = q.mentions.iter().map(|x| mention_json(state, x)).collect();
            quote.insert("mentions".into(), Value::Array(mentions));
        }
        let attachments: Vec<Value> = q
            .attachments
            .iter()
            .map(|(ct, name)| json!({"contentType": ct, "filename": name}))
            .collect();
        quote.insert("attachments".into(), Value::Array(attachments));
        if !q.text_styles.is_empty() {
            let styles: Vec<Value> = q.text_styles.iter().map(style_json).collect();
            quote.insert("textStyles".into(), Value::Array(styles));
        }
        m.insert("quote".into(), Value::Object(quote));
    }
    if !c.mentions.is_empty() {
        let mentions: Vec<Value> = c.mentions.iter().map(|x| mention_json(state, x)).collect();
        m.insert("mentions".into(), Value::Array(mentions));
    }
    if !c.previews.is_empty() {
        let previews: Vec<Value> = c
            .previews
            .iter()
            .map(|p| json!({"url": p.url, "title": p.title, "description": p.description, "image": null}))
            .collect();
        m.insert("previews".into(), Value::Array(previews));
    }
    if !c.attachments.is_empty() {
        let upload = now_ms();
        let attachments: Vec<Value> = c
            .attachments
            .iter()
            .map(|a| {
                let id =
                    state.store_attachment(a.data.clone(), &a.content_type, a.filename.as_deref());
                attachment_json(&id, a, upload)
            })
            .collect();
        m.insert("attachments".into(), Value::Array(attachments));
    }
    if let Some((pack, sticker)) = &c.sticker {
        m.insert(
            "sticker".into(),
            json!({"packId": pack, "stickerId": sticker}),
        );
    }
    if let Some(ts) = c.remote_delete {
        m.insert("remoteDelete".into(), json!({"timestamp": ts}));
    }
    if !c.text_styles.is_empty() {
        let styles: Vec<Value> = c.text_styles.iter().map(style_json).collect();
        m.insert("textStyles".into(), Value::Array(styles));
    }
    if let Some(group) = &c.group {
        m.insert("groupInfo".into(), group_info(state, group, c.group_update));
    }
    Value::Object(m)
}

/// A whole notification result for `account`: the envelope from `source` (a number) and the
/// `account` key.
pub(crate) fn result(
    state: &State,
    account: &str,
    source: &str,
    device: i64,
    timestamp: i64,
    body: Option<Body>,
) -> Value {
    let (number, uuid) = state.address_of(source);
    let mut env = Map::new();
    env.insert(
        "source".into(),
        json!(number.clone().or_else(|| uuid.clone())),
    );
    env.insert("sourceNumber".into(), json!(number));
    env.insert("sourceUuid".into(), json!(uuid));
    env.insert(
        "sourceName".into(),
        json!(
            number
                .as_deref()
                .and_then(|n| state.display_name_for(account, n))
        ),
    );
    env.insert("sourceDevice".into(), json!(device));
    env.insert("timestamp".into(), json!(timestamp));
    let now = now_ms().max(timestamp);
    env.insert("serverReceivedTimestamp".into(), json!(now));
    env.insert("serverDeliveredTimestamp".into(), json!(now));
    if let Some((key, value)) = body {
        env.insert(key.into(), value);
    }
    json!({"envelope": Value::Object(env), "account": account})
}

/// A `syncMessage.sentMessage` body: the data message flattened with its destination.
pub(crate) fn sync_sent(
    state: &State,
    destination: Option<&str>,
    data: Option<Value>,
    edit: Option<Value>,
    timestamp: i64,
) -> Value {
    let (number, uuid) = match destination {
        Some(d) => state.address_of(d),
        None => (None, None),
    };
    let mut sent = Map::new();
    sent.insert(
        "destination".into(),
        json!(number.clone().or_else(|| uuid.clone())),
    );
    sent.insert("destinationNumber".into(), json!(number));
    sent.insert("destinationUuid".into(), json!(uuid));
    if let Some(edit) = edit {
        sent.insert("editMessage".into(), edit);
        sent.insert("timestamp".into(), json!(timestamp));
    }
    if let Some(Value::Object(data)) = data {
        sent.extend(data);
    }
    json!({"sentMessage": Value::Object(sent)})
}
