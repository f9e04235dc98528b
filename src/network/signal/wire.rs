//! signal-cli's JSON shapes (envelopes, groups, contacts) and their conversion to the neutral
//! model. Pure functions, unit-tested. Everything is parsed leniently (unknown fields ignored,
//! missing ones defaulted) because the daemon's output grows between versions.
//!
//! Identities: a Signal user is their ACI (UUID) when known, else their phone number; a chat is
//! the other user for DMs and `group:<id>` for groups; a message is `<timestamp>:<author>`,
//! which is how Signal itself addresses messages (quotes, reactions, deletes, edits).

use serde::Deserialize;

use crate::network::{
    ChatId, ChatInfo, ChatKind, Media, MediaKind, MessageContent, MessageId, RemoteEvent,
    RemoteMessage, RemoteUserId, UserInfo,
    richtext::{Entity, EntityKind, FormattedText, MentionTarget, utf16_to_char_range},
};

pub const GROUP_PREFIX: &str = "group:";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Envelope {
    pub source: Option<String>,
    pub source_number: Option<String>,
    pub source_uuid: Option<String>,
    pub source_name: Option<String>,
    pub timestamp: i64,
    pub data_message: Option<DataMessage>,
    pub edit_message: Option<EditMessage>,
    pub sync_message: Option<SyncMessage>,
    pub receipt_message: Option<ReceiptMessage>,
    pub typing_message: Option<TypingMessage>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DataMessage {
    pub timestamp: i64,
    pub message: Option<String>,
    pub expires_in_seconds: Option<u64>,
    pub view_once: bool,
    pub mentions: Vec<Mention>,
    pub text_styles: Vec<TextStyle>,
    pub quote: Option<Quote>,
    pub reaction: Option<Reaction>,
    pub remote_delete: Option<RemoteDelete>,
    pub attachments: Vec<Attachment>,
    pub sticker: Option<Sticker>,
    pub group_info: Option<GroupInfo>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Mention {
    pub name: Option<String>,
    pub number: Option<String>,
    pub uuid: Option<String>,
    pub start: usize,
    pub length: usize,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TextStyle {
    pub style: String,
    pub start: usize,
    pub length: usize,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Quote {
    pub id: i64,
    pub author: Option<String>,
    pub author_number: Option<String>,
    pub author_uuid: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Reaction {
    pub emoji: String,
    pub target_author: Option<String>,
    pub target_author_number: Option<String>,
    pub target_author_uuid: Option<String>,
    pub target_sent_timestamp: i64,
    pub is_remove: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RemoteDelete {
    pub timestamp: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Attachment {
    pub content_type: String,
    pub filename: Option<String>,
    pub id: Option<String>,
    pub size: Option<u64>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub caption: Option<String>,
    pub voice_note: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Sticker {
    pub pack_id: Option<String>,
    pub sticker_id: Option<u64>,
    pub attachment: Option<Attachment>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GroupInfo {
    pub group_id: String,
    pub group_name: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EditMessage {
    pub target_sent_timestamp: i64,
    pub data_message: DataMessage,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SyncMessage {
    pub sent_message: Option<SentMessage>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SentMessage {
    pub destination: Option<String>,
    pub destination_number: Option<String>,
    pub destination_uuid: Option<String>,
    #[serde(flatten)]
    pub data: DataMessage,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ReceiptMessage {
    pub is_delivery: bool,
    pub is_read: bool,
    pub is_viewed: bool,
    pub timestamps: Vec<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TypingMessage {
    pub action: String,
    pub group_id: Option<String>,
}

/// A group as `listGroups` describes it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Group {
    pub id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub is_member: Option<bool>,
    pub members: Vec<Member>,
    pub admins: Vec<Member>,
    /// The disappearing-message timer in seconds (0: off).
    pub message_expiration_time: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Member {
    pub number: Option<String>,
    pub uuid: Option<String>,
}

/// A contact as `listContacts` describes it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Contact {
    pub number: Option<String>,
    pub uuid: Option<String>,
    pub name: Option<String>,
    pub profile: Option<Profile>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Profile {
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub has_avatar: bool,
    pub last_update_timestamp: i64,
}

/// Avatar ids ferry hands the bridge: signal-cli has no avatar ids of its own, so an id names
/// where the picture is fetched from (`getAvatar`) plus a version, and changes with the picture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AvatarRef<'a> {
    /// `profile-avatar:<version>:<user>`: a user's profile picture.
    Profile(&'a str),
    /// `group-avatar:<version>:<group id>`: a group's picture.
    Group(&'a str),
}

pub fn profile_avatar_id(user: &str, version: i64) -> String {
    format!("profile-avatar:{version}:{user}")
}

pub fn group_avatar_id(group: &str, version: &str) -> String {
    format!("group-avatar:{version}:{group}")
}

/// What an avatar id names, or `None` for an attachment id.
/// Sticker ids ferry hands the bridge: signal-cli 0.13.19 names a received sticker only by its
/// pack id (hex) and sticker id, and serves the image with `getSticker` once it has fetched the
/// pack (it learns the pack key from the message).
pub fn sticker_media_id(pack_id: &str, sticker_id: u64) -> String {
    format!("sticker:{pack_id}:{sticker_id}")
}

/// The (pack id, sticker id) of a [`sticker_media_id`].
pub fn parse_sticker_id(id: &str) -> Option<(&str, u64)> {
    let rest = id.strip_prefix("sticker:")?;
    let (pack, sticker) = rest.split_once(':')?;
    if pack.is_empty() || !pack.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Some((pack, sticker.parse().ok()?))
}

/// The image type of sticker bytes (Signal stickers are WebP, animated ones may be APNG or GIF).
pub fn sticker_content_type(bytes: &[u8]) -> &'static str {
    if bytes.starts_with(b"\x89PNG") {
        "image/png"
    } else if bytes.starts_with(b"GIF8") {
        "image/gif"
    } else {
        "image/webp"
    }
}

/// A received sticker as neutral media: its own attachment when signal-cli gave one, else a
/// [`sticker_media_id`] fetched with `getSticker`.
fn sticker_media(sticker: &Sticker) -> Option<Media> {
    if let Some(media) = sticker.attachment.as_ref().and_then(|a| media_of(a, true)) {
        return Some(media);
    }
    let pack = sticker.pack_id.as_deref().filter(|p| !p.is_empty())?;
    let id = sticker.sticker_id?;
    Some(Media {
        id: sticker_media_id(pack, id),
        kind: MediaKind::Sticker,
        name: "sticker.webp".to_owned(),
        content_type: "image/webp".to_owned(),
        size: 0,
        width: None,
        height: None,
        duration_ms: None,
        waveform: None,
    })
}

pub fn parse_avatar_id(id: &str) -> Option<AvatarRef<'_>> {
    let (kind, rest) = id.split_once(':')?;
    let (_, target) = rest.split_once(':')?;
    match kind {
        "profile-avatar" => Some(AvatarRef::Profile(target)),
        "group-avatar" => Some(AvatarRef::Group(target)),
        _ => None,
    }
}

/// The disappearing-message timer an envelope's message carries: (chat, seconds, who sent it).
/// Reactions and deletes are left out (they do not set the chat's timer).
pub fn timer_of(envelope: &Envelope, own: &RemoteUserId) -> Option<(ChatId, u32, RemoteUserId)> {
    let sender = user_id(
        envelope.source_uuid.as_deref(),
        envelope.source_number.as_deref(),
        envelope.source.as_deref(),
    )?;
    let (data, chat, who) = if let Some(data) = &envelope.data_message {
        let chat = data
            .group_info
            .as_ref()
            .map_or_else(|| ChatId::new(sender.as_str()), |g| group_chat(&g.group_id));
        (data, chat, sender)
    } else {
        let sent = envelope.sync_message.as_ref()?.sent_message.as_ref()?;
        let chat = match &sent.data.group_info {
            Some(group) => group_chat(&group.group_id),
            None => ChatId::new(
                user_id(
                    sent.destination_uuid.as_deref(),
                    sent.destination_number.as_deref(),
                    sent.destination.as_deref(),
                )?
                .as_str(),
            ),
        };
        (&sent.data, chat, own.clone())
    };
    if data.reaction.is_some() || data.remote_delete.is_some() {
        return None;
    }
    // Signal's timers fit in 32 bits; a larger value is held at the longest.
    let seconds = u32::try_from(data.expires_in_seconds?).unwrap_or(u32::MAX);
    Some((chat, seconds, who))
}

/// The group an envelope announces a change of (signal-cli says only *that* it changed: the
/// caller re-reads `listGroups`).
pub fn group_update(envelope: &Envelope) -> Option<&str> {
    let data = envelope.data_message.as_ref().or_else(|| {
        envelope
            .sync_message
            .as_ref()
            .and_then(|s| s.sent_message.as_ref())
            .map(|s| &s.data)
    })?;
    let group = data.group_info.as_ref()?;
    (group.kind.as_deref() == Some("UPDATE")).then_some(group.group_id.as_str())
}

/// Recipients a send failed for because their identity key changed, from the error's
/// `data.response.results` (signal-cli: type `IDENTITY_FAILURE`; `UNTRUSTED_IDENTITY` accepted).
pub fn untrusted_recipients(data: Option<&serde_json::Value>) -> Vec<RemoteUserId> {
    let results = data
        .and_then(|d| d.pointer("/response/results"))
        .and_then(serde_json::Value::as_array);
    results
        .into_iter()
        .flatten()
        .filter(|r| {
            matches!(
                r.get("type").and_then(serde_json::Value::as_str),
                Some("IDENTITY_FAILURE" | "UNTRUSTED_IDENTITY")
            )
        })
        .filter_map(|r| {
            let address = r.get("recipientAddress")?;
            let field = |k: &str| address.get(k).and_then(serde_json::Value::as_str);
            user_id(field("uuid"), field("number"), None)
        })
        .collect()
}

/// The recipients a send that succeeded for others did not reach, from its `results`:
/// (who, signal-cli's failure type), in order. Entries without an address are skipped.
pub fn failed_recipients(result: &serde_json::Value) -> Vec<(RemoteUserId, String)> {
    let results = result.get("results").and_then(serde_json::Value::as_array);
    results
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let kind = r.get("type").and_then(serde_json::Value::as_str)?;
            if kind == "SUCCESS" {
                return None;
            }
            let address = r.get("recipientAddress")?;
            let field = |k: &str| address.get(k).and_then(serde_json::Value::as_str);
            Some((
                user_id(field("uuid"), field("number"), None)?,
                kind.to_owned(),
            ))
        })
        .collect()
}

/// The id a user goes by: ACI when known, else the number, else whatever `source` says.
pub fn user_id(
    uuid: Option<&str>,
    number: Option<&str>,
    other: Option<&str>,
) -> Option<RemoteUserId> {
    [uuid, number, other]
        .into_iter()
        .flatten()
        .find(|s| !s.is_empty())
        .map(RemoteUserId::new)
}

pub fn message_id(timestamp: i64, author: &RemoteUserId) -> MessageId {
    MessageId::new(format!("{timestamp}:{author}"))
}

/// Splits a message id back into (timestamp, author).
pub fn parse_message_id(id: &MessageId) -> Option<(i64, &str)> {
    let (ts, author) = id.as_str().split_once(':')?;
    Some((ts.parse().ok()?, author))
}

pub fn group_chat(group_id: &str) -> ChatId {
    ChatId::new(format!("{GROUP_PREFIX}{group_id}"))
}

/// `Some(group id)` for group chats.
pub fn group_of(chat: &ChatId) -> Option<&str> {
    chat.as_str().strip_prefix(GROUP_PREFIX)
}

pub fn chat_kind(chat: &ChatId) -> ChatKind {
    if group_of(chat).is_some() {
        ChatKind::Group
    } else {
        ChatKind::Dm
    }
}

impl Member {
    pub fn id(&self) -> Option<RemoteUserId> {
        user_id(self.uuid.as_deref(), self.number.as_deref(), None)
    }
}

impl Contact {
    pub fn info(&self) -> Option<UserInfo> {
        let id = user_id(self.uuid.as_deref(), self.number.as_deref(), None)?;
        let profile_name = self.profile.as_ref().map(|p| {
            [p.given_name.as_deref(), p.family_name.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ")
        });
        let name = [self.name.clone(), profile_name, self.number.clone()]
            .into_iter()
            .flatten()
            .find(|n| !n.trim().is_empty())
            .unwrap_or_else(|| id.to_string());
        let avatar = self
            .profile
            .as_ref()
            .filter(|p| p.has_avatar)
            .map(|p| profile_avatar_id(id.as_str(), p.last_update_timestamp));
        Some(UserInfo { id, name, avatar })
    }
}

impl Group {
    pub fn info(&self, names: &dyn Fn(&RemoteUserId) -> UserInfo) -> ChatInfo {
        ChatInfo {
            id: group_chat(&self.id),
            kind: ChatKind::Group,
            name: self.name.clone(),
            topic: self.description.clone().filter(|d| !d.is_empty()),
            avatar: None,
            members: self
                .members
                .iter()
                .filter_map(Member::id)
                .map(|id| names(&id))
                .collect(),
            admins: self.admins.iter().filter_map(Member::id).collect(),
            read_only: None,
        }
    }
}

/// Text with Signal's styles and mentions (UTF-16 ranges) in the neutral model.
pub fn formatted(text: &str, styles: &[TextStyle], mentions: &[Mention]) -> FormattedText {
    let mut entities = Vec::new();
    for style in styles {
        let kind = match style.style.as_str() {
            "BOLD" => EntityKind::Bold,
            "ITALIC" => EntityKind::Italic,
            "STRIKETHROUGH" => EntityKind::Strikethrough,
            "MONOSPACE" => EntityKind::Code,
            "SPOILER" => EntityKind::Spoiler,
            _ => continue,
        };
        let (start, len) = utf16_to_char_range(text, style.start, style.length);
        entities.push(Entity::new(start, len, kind));
    }
    for mention in mentions {
        let Some(id) = user_id(mention.uuid.as_deref(), mention.number.as_deref(), None) else {
            continue;
        };
        let (start, len) = utf16_to_char_range(text, mention.start, mention.length);
        entities.push(Entity::new(
            start,
            len,
            EntityKind::Mention(MentionTarget::Remote(id)),
        ));
    }
    FormattedText::new(text, entities)
}

/// A Signal attachment as neutral media (the id is the daemon's attachment id).
pub fn media_of(attachment: &Attachment, sticker: bool) -> Option<Media> {
    let id = attachment.id.clone()?;
    let kind = if sticker {
        MediaKind::Sticker
    } else if attachment.voice_note {
        MediaKind::Voice
    } else if attachment.content_type.starts_with("image/") {
        MediaKind::Image
    } else if attachment.content_type.starts_with("video/") {
        MediaKind::Video
    } else if attachment.content_type.starts_with("audio/") {
        MediaKind::Audio
    } else {
        MediaKind::File
    };
    Some(Media {
        id,
        kind,
        name: attachment
            .filename
            .clone()
            .filter(|f| !f.is_empty())
            .unwrap_or_else(|| "attachment".to_owned()),
        content_type: if attachment.content_type.is_empty() {
            "application/octet-stream".to_owned()
        } else {
            attachment.content_type.clone()
        },
        size: attachment.size.unwrap_or(0),
        width: attachment.width,
        height: attachment.height,
        duration_ms: None,
        waveform: None,
    })
}

/// What a received envelope means, in order. `own` is the login's own user; `names` resolves
/// profiles.
pub fn envelope_events(
    envelope: &Envelope,
    own: &RemoteUserId,
    names: &dyn Fn(&RemoteUserId, Option<&str>) -> UserInfo,
) -> Vec<RemoteEvent> {
    let Some(sender_id) = user_id(
        envelope.source_uuid.as_deref(),
        envelope.source_number.as_deref(),
        envelope.source.as_deref(),
    ) else {
        return Vec::new();
    };
    let sender = names(&sender_id, envelope.source_name.as_deref());
    let mut events = Vec::new();
    if let Some(data) = &envelope.data_message {
        let chat = data.group_info.as_ref().map_or_else(
            || ChatId::new(sender_id.as_str()),
            |g| group_chat(&g.group_id),
        );
        events.extend(data_events(&chat, &sender, data));
    }
    if let Some(edit) = &envelope.edit_message {
        let chat = edit.data_message.group_info.as_ref().map_or_else(
            || ChatId::new(sender_id.as_str()),
            |g| group_chat(&g.group_id),
        );
        let text = edit.data_message.message.clone().unwrap_or_default();
        events.push(RemoteEvent::Edit {
            chat,
            id: message_id(edit.target_sent_timestamp, &sender_id),
            sender: sender.clone(),
            content: MessageContent::Text(formatted(
                &text,
                &edit.data_message.text_styles,
                &edit.data_message.mentions,
            )),
            timestamp: edit.data_message.timestamp.max(envelope.timestamp),
        });
    }
    if let Some(sent) = envelope
        .sync_message
        .as_ref()
        .and_then(|s| s.sent_message.as_ref())
    {
        // Sent from the account's own phone: shown as sent by the account.
        let chat = match &sent.data.group_info {
            Some(group) => Some(group_chat(&group.group_id)),
            None => user_id(
                sent.destination_uuid.as_deref(),
                sent.destination_number.as_deref(),
                sent.destination.as_deref(),
            )
            .map(|d| ChatId::new(d.as_str())),
        };
        if let Some(chat) = chat {
            let me = names(own, None);
            events.extend(data_events(&chat, &me, &sent.data));
        }
    }
    if let Some(receipt) = &envelope.receipt_message {
        if (receipt.is_read || receipt.is_viewed)
            && let Some(latest) = receipt.timestamps.iter().max()
        {
            events.push(RemoteEvent::Read {
                chat: ChatId::new(sender_id.as_str()),
                user: sender_id.clone(),
                up_to: message_id(*latest, own),
            });
        } else if receipt.is_delivery && !receipt.timestamps.is_empty() {
            // Our messages reached the contact's phone (they name them by timestamp).
            events.push(RemoteEvent::Delivered {
                chat: ChatId::new(sender_id.as_str()),
                user: sender_id.clone(),
                ids: receipt
                    .timestamps
                    .iter()
                    .map(|t| message_id(*t, own))
                    .collect(),
            });
        }
    }
    if let Some(typing) = &envelope.typing_message {
        let chat = typing
            .group_id
            .as_deref()
            .map_or_else(|| ChatId::new(sender_id.as_str()), group_chat);
        events.push(RemoteEvent::Typing {
            chat,
            user: sender_id.clone(),
            typing: typing.action == "STARTED",
        });
    }
    events
}

fn data_events(chat: &ChatId, sender: &UserInfo, data: &DataMessage) -> Vec<RemoteEvent> {
    if let Some(reaction) = &data.reaction {
        let Some(author) = user_id(
            reaction.target_author_uuid.as_deref(),
            reaction.target_author_number.as_deref(),
            reaction.target_author.as_deref(),
        ) else {
            return Vec::new();
        };
        return vec![RemoteEvent::Reaction {
            chat: chat.clone(),
            target: message_id(reaction.target_sent_timestamp, &author),
            sender: sender.clone(),
            emoji: reaction.emoji.clone(),
            removed: reaction.is_remove,
        }];
    }
    if let Some(delete) = &data.remote_delete {
        return vec![RemoteEvent::Delete {
            chat: chat.clone(),
            id: message_id(delete.timestamp, &sender.id),
            by: sender.id.clone(),
        }];
    }
    let text = data.message.clone().unwrap_or_default();
    let reply_to = data.quote.as_ref().and_then(|q| {
        user_id(
            q.author_uuid.as_deref(),
            q.author_number.as_deref(),
            q.author.as_deref(),
        )
        .map(|a| message_id(q.id, &a))
    });
    let id = message_id(data.timestamp, &sender.id);
    let mut contents = Vec::new();
    let sticker = data.sticker.as_ref().and_then(sticker_media);
    let media: Vec<Media> = sticker
        .into_iter()
        .chain(data.attachments.iter().filter_map(|a| media_of(a, false)))
        .collect();
    if media.is_empty() {
        if text.is_empty() {
            // A group update or an empty message: nothing to show as a message.
            return Vec::new();
        }
        contents.push(MessageContent::Text(formatted(
            &text,
            &data.text_styles,
            &data.mentions,
        )));
    } else {
        for (i, media) in media.into_iter().enumerate() {
            let caption = (i == 0 && !text.is_empty())
                .then(|| formatted(&text, &data.text_styles, &data.mentions));
            contents.push(MessageContent::Media { media, caption });
        }
    }
    contents
        .into_iter()
        .enumerate()
        .map(|(i, content)| RemoteEvent::Message {
            chat: chat.clone(),
            message: RemoteMessage {
                // Extra attachments become their own messages, addressed after the first.
                id: if i == 0 {
                    id.clone()
                } else {
                    MessageId::new(format!("{id}:{i}"))
                },
                sender: sender.clone(),
                content,
                reply_to: if i == 0 { reply_to.clone() } else { None },
                timestamp: data.timestamp,
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(id: &RemoteUserId, name: Option<&str>) -> UserInfo {
        UserInfo {
            id: id.clone(),
            name: name.unwrap_or("someone").to_owned(),
            avatar: None,
        }
    }

    fn own() -> RemoteUserId {
        RemoteUserId::new("+15550001")
    }

    #[test]
    fn a_sticker_without_an_attachment_is_fetched_by_pack_and_id() {
        let envelope: Envelope = serde_json::from_value(json!({
            "source": "+15550002", "sourceNumber": "+15550002", "sourceUuid": "u-2",
            "timestamp": 5,
            "dataMessage": {"timestamp": 5, "sticker": {"packId": "00ff10aa", "stickerId": 7}}
        }))
        .unwrap();
        let events = envelope_events(&envelope, &own(), &names);
        let Some(RemoteEvent::Message { message, .. }) = events.first() else {
            panic!("no message: {events:?}");
        };
        let MessageContent::Media { media, .. } = &message.content else {
            panic!("not media: {:?}", message.content);
        };
        assert_eq!(media.kind, MediaKind::Sticker);
        assert_eq!(parse_sticker_id(&media.id), Some(("00ff10aa", 7)));
        assert_eq!(parse_sticker_id("sticker:zz:7"), None);
        assert_eq!(parse_sticker_id("sticker:00ff:x"), None);
        assert_eq!(sticker_content_type(b"\x89PNG...."), "image/png");
    }

    #[test]
    fn a_styled_message_with_a_mention_and_a_quote() {
        let envelope: Envelope = serde_json::from_value(json!({
            "source": "+15550002", "sourceNumber": "+15550002", "sourceUuid": "uuid-bob", "sourceName": "Bob",
            "sourceDevice": 1, "timestamp": 1000,
            "dataMessage": {"timestamp": 1000, "message": "😀 hi bold you", "expiresInSeconds": 0, "viewOnce": false,
                "textStyles": [{"style": "BOLD", "start": 6, "length": 4}],
                "mentions": [{"name": "+15550001", "number": "+15550001", "uuid": "uuid-alice", "start": 11, "length": 3}],
                "quote": {"id": 900, "author": "+15550001", "authorNumber": "+15550001", "authorUuid": "uuid-alice", "text": "q"}}
        }))
        .expect("envelope");
        let events = envelope_events(&envelope, &own(), &names);
        let [RemoteEvent::Message { chat, message }] = events.as_slice() else {
            panic!("{events:?}")
        };
        assert_eq!(chat.as_str(), "uuid-bob");
        assert_eq!(message.id.as_str(), "1000:uuid-bob");
        assert_eq!(message.sender.name, "Bob");
        assert_eq!(
            message.reply_to.as_ref().map(MessageId::as_str),
            Some("900:uuid-alice")
        );
        let MessageContent::Text(text) = &message.content else {
            panic!()
        };
        // The emoji is two UTF-16 units but one char: ranges shift by one.
        assert_eq!(text.entities[0], Entity::new(5, 4, EntityKind::Bold));
        assert_eq!(
            text.entities[1].kind,
            EntityKind::Mention(MentionTarget::Remote(RemoteUserId::new("uuid-alice")))
        );
        assert_eq!(text.entities[1].start, 10);
    }

    #[test]
    fn reactions_deletes_edits_receipts_typing_and_groups() {
        let reaction: Envelope = serde_json::from_value(json!({"sourceUuid": "b", "timestamp": 5, "dataMessage": {"timestamp": 5,
            "reaction": {"emoji": "👍", "targetAuthorUuid": "a", "targetSentTimestamp": 3, "isRemove": true},
            "groupInfo": {"groupId": "G1", "type": "DELIVER"}}})).unwrap();
        assert!(
            matches!(envelope_events(&reaction, &own(), &names).as_slice(),
            [RemoteEvent::Reaction { chat, target, removed: true, .. }] if chat.as_str() == "group:G1" && target.as_str() == "3:a")
        );
        let delete: Envelope = serde_json::from_value(json!({"sourceUuid": "b", "timestamp": 6, "dataMessage": {"timestamp": 6, "remoteDelete": {"timestamp": 4}}})).unwrap();
        assert!(
            matches!(envelope_events(&delete, &own(), &names).as_slice(), [RemoteEvent::Delete { id, .. }] if id.as_str() == "4:b")
        );
        let edit: Envelope = serde_json::from_value(json!({"sourceUuid": "b", "timestamp": 7, "editMessage": {"targetSentTimestamp": 4, "dataMessage": {"timestamp": 7, "message": "new"}}})).unwrap();
        assert!(
            matches!(envelope_events(&edit, &own(), &names).as_slice(), [RemoteEvent::Edit { id, .. }] if id.as_str() == "4:b")
        );
        let read: Envelope = serde_json::from_value(json!({"sourceUuid": "b", "timestamp": 8, "receiptMessage": {"when": 8, "isDelivery": false, "isRead": true, "timestamps": [2, 3]}})).unwrap();
        assert!(
            matches!(envelope_events(&read, &own(), &names).as_slice(), [RemoteEvent::Read { up_to, .. }] if up_to.as_str() == "3:+15550001")
        );
        let delivered: Envelope = serde_json::from_value(json!({"sourceUuid": "b", "timestamp": 8, "receiptMessage": {"isDelivery": true, "timestamps": [2]}})).unwrap();
        assert!(
            matches!(envelope_events(&delivered, &own(), &names).as_slice(),
                [RemoteEvent::Delivered { ids, .. }] if ids.iter().map(MessageId::as_str).eq(["2:+15550001"])),
            "delivery receipts are deliveries, not read markers"
        );
        let typing: Envelope = serde_json::from_value(json!({"sourceUuid": "b", "timestamp": 9, "typingMessage": {"action": "STARTED", "timestamp": 9, "groupId": "G1"}})).unwrap();
        assert!(
            matches!(envelope_events(&typing, &own(), &names).as_slice(), [RemoteEvent::Typing { typing: true, chat, .. }] if chat.as_str() == "group:G1")
        );
        let nobody: Envelope = serde_json::from_value(json!({"timestamp": 1})).unwrap();
        assert!(envelope_events(&nobody, &own(), &names).is_empty());
    }

    #[test]
    fn attachments_become_media_messages_and_sync_messages_are_ours() {
        let envelope: Envelope = serde_json::from_value(json!({"sourceUuid": "me-uuid", "sourceNumber": "+15550001", "timestamp": 10,
            "syncMessage": {"sentMessage": {"destinationUuid": "b", "timestamp": 10, "message": "look",
                "attachments": [{"contentType": "image/png", "filename": "a.png", "id": "att1", "size": 3, "width": 2, "height": 1},
                                {"contentType": "audio/aac", "id": "att2", "voiceNote": true}]}}})).unwrap();
        let events = envelope_events(&envelope, &own(), &names);
        assert_eq!(events.len(), 2);
        let RemoteEvent::Message { chat, message } = &events[0] else {
            panic!()
        };
        assert_eq!(chat.as_str(), "b");
        assert_eq!(message.sender.id, own());
        let MessageContent::Media { media, caption } = &message.content else {
            panic!()
        };
        assert_eq!(
            (
                media.kind,
                media.width,
                caption.as_ref().map(|c| c.text.as_str())
            ),
            (MediaKind::Image, Some(2), Some("look"))
        );
        let RemoteEvent::Message { message, .. } = &events[1] else {
            panic!()
        };
        assert!(
            matches!(&message.content, MessageContent::Media { media, caption: None } if media.kind == MediaKind::Voice)
        );
        assert_eq!(message.id.as_str(), "10:+15550001:1");
    }

    #[test]
    fn ids_round_trip() {
        let id = message_id(123, &RemoteUserId::new("uuid:with:colons"));
        assert_eq!(parse_message_id(&id), Some((123, "uuid:with:colons")));
        assert_eq!(parse_message_id(&MessageId::new("nope")), None);
        assert_eq!(group_of(&group_chat("abc==")), Some("abc=="));
        assert_eq!(chat_kind(&ChatId::new("+1555")), ChatKind::Dm);
    }
}
