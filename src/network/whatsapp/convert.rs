//! WhatsApp messages <-> ferry's neutral events: pure functions, unit-tested below.
//!
//! Inbound, a decrypted `wa::Message` becomes what it means for the chat: a message (text with
//! formatting and mentions, media, location, contact, a readable poll, a safe placeholder for
//! view-once media), an edit, a revoke, a reaction (an empty one removes it), or a notice (a
//! disappearing-messages timer change). Outbound, ferry's content becomes the `wa::Message`
//! WhatsApp apps expect. Addresses are resolved by the caller (LID -> phone number needs the
//! client's mapping), so everything here is synchronous and deterministic.

use whatsapp_rust::{
    Jid,
    waproto::{buffa::MessageField, whatsapp as wa},
};

use super::{
    ids,
    markup::{self, Mentioned},
};
use crate::network::{
    Media, MediaKind, MessageContent, MessageId, RemoteUserId,
    richtext::{Entity, EntityKind, FormattedText},
};

/// The media of a received message, kept so it can be downloaded later.
#[derive(Debug, Clone)]
pub enum MediaRef {
    Image(wa::message::ImageMessage),
    Video(wa::message::VideoMessage),
    Audio(wa::message::AudioMessage),
    Document(wa::message::DocumentMessage),
    Sticker(wa::message::StickerMessage),
}

/// What a received WhatsApp message means for its chat.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    Message {
        content: MessageContent,
        reply_to: Option<MessageId>,
    },
    Edit {
        target: MessageId,
        content: MessageContent,
    },
    Revoke {
        target: MessageId,
    },
    Reaction {
        target: MessageId,
        emoji: String,
        removed: bool,
    },
    /// Protocol traffic with nothing to show (key shares, history notifications, ...).
    Ignore,
}

/// Who and where a message is, as the converter needs it.
pub struct Context<'a> {
    /// The author, resolved.
    pub sender: &'a RemoteUserId,
    /// The login's own user.
    pub own: &'a RemoteUserId,
    /// The DM peer (None in groups).
    pub dm_peer: Option<&'a RemoteUserId>,
    /// Resolves a JID string from the message (mentions, quoted authors) to a ferry user.
    pub resolve: &'a (dyn Fn(&str) -> Option<RemoteUserId> + Sync),
}

impl Context<'_> {
    fn user(&self, jid: &str) -> Option<RemoteUserId> {
        (self.resolve)(jid).or_else(|| jid.parse::<Jid>().ok().and_then(|j| ids::user_of(&j)))
    }

    /// The author of the message a key points at, seen from this message's sender.
    fn key_author(&self, key: &wa::MessageKey) -> Option<RemoteUserId> {
        if let Some(participant) = key.participant.as_deref().filter(|p| !p.is_empty()) {
            return self.user(participant);
        }
        if key.from_me.unwrap_or(false) {
            // "From me" is the sender of this message.
            return Some(self.sender.clone());
        }
        // In a DM the other party of the sender.
        match self.dm_peer {
            Some(peer) if self.sender == self.own => Some(peer.clone()),
            Some(_) => Some(self.own.clone()),
            None => None,
        }
    }

    fn key_target(&self, key: &wa::MessageKey) -> Option<MessageId> {
        let id = key.id.as_deref().filter(|id| !id.is_empty())?;
        Some(ids::message_id(&self.key_author(key)?, id))
    }
}

/// Text, its context's mentions resolved.
fn rich(text: &str, context: Option<&wa::ContextInfo>, ctx: &Context<'_>) -> FormattedText {
    let mentions: Vec<Mentioned> = context
        .map(|c| c.mentioned_jid.as_slice())
        .unwrap_or_default()
        .iter()
        .filter_map(|jid| {
            let token = jid.split(['@', ':']).next()?.to_owned();
            Some(Mentioned {
                token,
                user: ctx.user(jid)?,
            })
        })
        .collect();
    markup::parse(text, &mentions)
}

fn reply_of(context: Option<&wa::ContextInfo>, ctx: &Context<'_>) -> Option<MessageId> {
    let c = context?;
    let id = c.stanza_id.as_deref().filter(|id| !id.is_empty())?;
    let author = match c.participant.as_deref().filter(|p| !p.is_empty()) {
        Some(p) => ctx.user(p)?,
        // A DM quote without a participant quotes the other side.
        None => ctx.key_author(&wa::MessageKey::default())?,
    };
    Some(ids::message_id(&author, id))
}

fn caption(
    text: Option<&str>,
    context: Option<&wa::ContextInfo>,
    ctx: &Context<'_>,
) -> Option<FormattedText> {
    text.filter(|t| !t.is_empty())
        .map(|t| rich(t, context, ctx))
}

fn media(kind: MediaKind, name: &str, mime: Option<&str>, size: Option<u64>) -> Media {
    Media {
        id: String::new(),
        kind,
        name: name.to_owned(),
        content_type: mime
            .filter(|m| !m.is_empty())
            .unwrap_or("application/octet-stream")
            .to_owned(),
        size: size.unwrap_or(0),
        width: None,
        height: None,
        duration_ms: None,
        waveform: None,
    }
}

fn extension(mime: &str) -> &'static str {
    match mime.split(';').next().unwrap_or("").trim() {
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "image/webp" => "webp",
        "image/gif" => "gif",
        "video/mp4" => "mp4",
        "audio/ogg" => "ogg",
        "audio/mpeg" => "mp3",
        "audio/mp4" | "audio/aac" => "m4a",
        "application/pdf" => "pdf",
        _ => "bin",
    }
}

/// WhatsApp's voice-note waveform (bytes 0..=100) on Matrix's scale (0..=1024, MSC3246).
pub fn waveform_to_matrix(wave: &[u8]) -> Vec<u16> {
    wave.iter()
        .map(|v| u16::try_from(u32::from((*v).min(100)) * 1024 / 100).unwrap_or(1024))
        .collect()
}

/// Matrix's waveform on WhatsApp's scale, 64 samples as WhatsApp's apps send.
pub fn waveform_to_whatsapp(wave: &[u16]) -> Vec<u8> {
    if wave.is_empty() {
        return Vec::new();
    }
    (0..64)
        .map(|i| {
            let v = wave[i * wave.len() / 64].min(1024);
            u8::try_from(u32::from(v) * 100 / 1024).unwrap_or(100)
        })
        .collect()
}

/// A placeholder for view-once media: the bridge must not keep a copy the sender meant to be
/// seen once, so the Matrix side is told to open it on the phone.
fn view_once_notice(what: &str) -> MessageContent {
    let text =
        format!("View-once {what}: open it on your phone (ferry does not bridge view-once media).");
    let len = text.chars().count();
    MessageContent::Text(FormattedText::new(
        text,
        vec![Entity::new(0, len, EntityKind::Italic)],
    ))
}

fn italic(text: String) -> MessageContent {
    let len = text.chars().count();
    MessageContent::Text(FormattedText::new(
        text,
        vec![Entity::new(0, len, EntityKind::Italic)],
    ))
}

/// A human duration for disappearing-message timers.
pub fn timer_text(seconds: u32) -> String {
    match seconds {
        0 => "off".to_owned(),
        // WhatsApp's apps name their shortest option "24 hours".
        86_400 => "24 hours".to_owned(),
        s if s % 86_400 == 0 => format!("{} days", s / 86_400),
        s if s % 3600 == 0 => format!("{} hours", s / 3600),
        s => format!("{s} seconds"),
    }
}

/// The phone number and WhatsApp id in a vCard (`TEL;waid=5511…:+55 11 …`).
fn vcard_phone(vcard: &str) -> (Option<String>, Option<RemoteUserId>) {
    for line in vcard.lines() {
        let upper = line.to_ascii_uppercase();
        if !(upper.starts_with("TEL") || upper.starts_with("ITEM1.TEL")) {
            continue;
        }
        let waid = line
            .split(';')
            .find_map(|p| p.strip_prefix("waid=").or_else(|| p.strip_prefix("WAID=")))
            .map(|w| w.split(':').next().unwrap_or(w).to_owned())
            .filter(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()))
            .map(RemoteUserId::new);
        let phone = line.rsplit(':').next().map(|p| p.trim().to_owned());
        return (phone.filter(|p| !p.is_empty()), waid);
    }
    (None, None)
}

/// What a decrypted message means, and its media to keep for a download.
pub fn inbound(message: &wa::Message, ctx: &Context<'_>) -> (Inbound, Option<MediaRef>) {
    use whatsapp_rust::wacore::proto_helpers::MessageExt as _;
    let view_once = message.is_view_once();
    let m = message.get_base_message();

    if let Some(p) = m.protocol_message.as_option() {
        use wa::message::protocol_message::Type;
        let target = p.key.as_option().and_then(|k| ctx.key_target(k));
        return match (p.r#type, target) {
            (Some(Type::REVOKE), Some(target)) => (Inbound::Revoke { target }, None),
            (Some(Type::MESSAGE_EDIT), Some(target)) => {
                match p.edited_message.as_option().map(|e| inbound(e, ctx)) {
                    Some((Inbound::Message { content, .. }, _)) => {
                        (Inbound::Edit { target, content }, None)
                    }
                    _ => (Inbound::Ignore, None),
                }
            }
            (Some(Type::EPHEMERAL_SETTING), _) => {
                let seconds = p.ephemeral_expiration.unwrap_or(0);
                let text = if seconds == 0 {
                    "turned off disappearing messages".to_owned()
                } else {
                    format!("set disappearing messages to {}", timer_text(seconds))
                };
                (
                    Inbound::Message {
                        content: italic(text),
                        reply_to: None,
                    },
                    None,
                )
            }
            _ => (Inbound::Ignore, None),
        };
    }
    if let Some(r) = m.reaction_message.as_option() {
        let Some(target) = r.key.as_option().and_then(|k| ctx.key_target(k)) else {
            return (Inbound::Ignore, None);
        };
        let emoji = r.text.clone().unwrap_or_default();
        let removed = emoji.is_empty();
        return (
            Inbound::Reaction {
                target,
                emoji,
                removed,
            },
            None,
        );
    }

    let msg = |content: MessageContent, context: Option<&wa::ContextInfo>| Inbound::Message {
        content,
        reply_to: reply_of(context, ctx),
    };

    if let Some(text) = m.conversation.as_deref() {
        return (msg(MessageContent::Text(rich(text, None, ctx)), None), None);
    }
    if let Some(t) = m.extended_text_message.as_option() {
        let context = t.context_info.as_option();
        let text = t.text.as_deref().unwrap_or_default();
        return (
            msg(MessageContent::Text(rich(text, context, ctx)), context),
            None,
        );
    }
    if let Some(i) = m.image_message.as_option() {
        let context = i.context_info.as_option();
        if view_once || i.view_once.unwrap_or(false) {
            return (msg(view_once_notice("photo"), context), None);
        }
        let mime = i.mimetype.as_deref().unwrap_or("image/jpeg");
        let mut media = media(
            MediaKind::Image,
            &format!("image.{}", extension(mime)),
            Some(mime),
            i.file_length,
        );
        media.width = i.width;
        media.height = i.height;
        let content = MessageContent::Media {
            media,
            caption: caption(i.caption.as_deref(), context, ctx),
        };
        return (msg(content, context), Some(MediaRef::Image(i.clone())));
    }
    if let Some(v) = m
        .video_message
        .as_option()
        .or_else(|| m.ptv_message.as_option())
    {
        let context = v.context_info.as_option();
        if view_once || v.view_once.unwrap_or(false) {
            return (msg(view_once_notice("video"), context), None);
        }
        let mime = v.mimetype.as_deref().unwrap_or("video/mp4");
        // WhatsApp GIFs are silent looping MP4s.
        let name = if v.gif_playback.unwrap_or(false) {
            "animation.mp4".to_owned()
        } else {
            format!("video.{}", extension(mime))
        };
        let kind = if v.gif_playback.unwrap_or(false) {
            MediaKind::Animation
        } else {
            MediaKind::Video
        };
        let mut media = media(kind, &name, Some(mime), v.file_length);
        media.width = v.width;
        media.height = v.height;
        media.duration_ms = v.seconds.map(|s| u64::from(s) * 1000);
        let content = MessageContent::Media {
            media,
            caption: caption(v.caption.as_deref(), context, ctx),
        };
        return (msg(content, context), Some(MediaRef::Video(v.clone())));
    }
    if let Some(a) = m.audio_message.as_option() {
        let context = a.context_info.as_option();
        if view_once || a.view_once.unwrap_or(false) {
            return (msg(view_once_notice("voice message"), context), None);
        }
        let voice = a.ptt.unwrap_or(false);
        let mime = a.mimetype.as_deref().unwrap_or(if voice {
            "audio/ogg; codecs=opus"
        } else {
            "audio/mpeg"
        });
        let name = if voice {
            "voice.ogg".to_owned()
        } else {
            format!("audio.{}", extension(mime))
        };
        let kind = if voice {
            MediaKind::Voice
        } else {
            MediaKind::Audio
        };
        let mut media = media(kind, &name, Some(mime), a.file_length);
        media.duration_ms = a.seconds.map(|s| u64::from(s) * 1000);
        media.waveform = a
            .waveform
            .as_deref()
            .filter(|w| !w.is_empty())
            .map(waveform_to_matrix);
        return (
            msg(
                MessageContent::Media {
                    media,
                    caption: None,
                },
                context,
            ),
            Some(MediaRef::Audio(a.clone())),
        );
    }
    if let Some(d) = m.document_message.as_option() {
        let context = d.context_info.as_option();
        let mime = d.mimetype.as_deref().unwrap_or("application/octet-stream");
        let name = d
            .file_name
            .clone()
            .or_else(|| d.title.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("document.{}", extension(mime)));
        let media = media(MediaKind::File, &name, Some(mime), d.file_length);
        let content = MessageContent::Media {
            media,
            caption: caption(d.caption.as_deref(), context, ctx),
        };
        return (msg(content, context), Some(MediaRef::Document(d.clone())));
    }
    if let Some(s) = m.sticker_message.as_option() {
        let context = s.context_info.as_option();
        let mime = s.mimetype.as_deref().unwrap_or("image/webp");
        let mut media = media(
            MediaKind::Sticker,
            "sticker.webp",
            Some(mime),
            s.file_length,
        );
        media.width = s.width;
        media.height = s.height;
        return (
            msg(
                MessageContent::Media {
                    media,
                    caption: None,
                },
                context,
            ),
            Some(MediaRef::Sticker(s.clone())),
        );
    }
    if let Some(l) = m.location_message.as_option() {
        let context = l.context_info.as_option();
        let content = MessageContent::Location {
            latitude: l.degrees_latitude.unwrap_or(0.0),
            longitude: l.degrees_longitude.unwrap_or(0.0),
            name: l
                .name
                .clone()
                .or_else(|| l.address.clone())
                .filter(|n| !n.is_empty()),
        };
        return (msg(content, context), None);
    }
    if let Some(l) = m.live_location_message.as_option() {
        let context = l.context_info.as_option();
        let content = MessageContent::Location {
            latitude: l.degrees_latitude.unwrap_or(0.0),
            longitude: l.degrees_longitude.unwrap_or(0.0),
            name: Some("Live location (follow it on your phone)".to_owned()),
        };
        return (msg(content, context), None);
    }
    if let Some(c) = m.contact_message.as_option() {
        let context = c.context_info.as_option();
        let (phone, user) = vcard_phone(c.vcard.as_deref().unwrap_or_default());
        let content = MessageContent::Contact {
            name: c
                .display_name
                .clone()
                .unwrap_or_else(|| "Contact".to_owned()),
            phone,
            user,
        };
        return (msg(content, context), None);
    }
    if let Some(list) = m.contacts_array_message.as_option() {
        let context = list.context_info.as_option();
        let mut text = String::from("Contacts:");
        for c in &list.contacts {
            let (phone, _) = vcard_phone(c.vcard.as_deref().unwrap_or_default());
            text.push_str(&format!(
                "\n• {}{}",
                c.display_name.as_deref().unwrap_or("?"),
                phone.map(|p| format!(" ({p})")).unwrap_or_default()
            ));
        }
        return (msg(MessageContent::text(text), context), None);
    }
    let poll = m
        .poll_creation_message
        .as_option()
        .or_else(|| m.poll_creation_message_v2.as_option())
        .or_else(|| m.poll_creation_message_v3.as_option())
        .or_else(|| m.poll_creation_message_v5.as_option());
    if let Some(p) = poll {
        let context = p.context_info.as_option();
        let question = p.name.clone().unwrap_or_default();
        let mut text = format!("Poll: {question}");
        let bold = Entity::new(0, text.chars().count(), EntityKind::Bold);
        for (i, option) in p.options.iter().enumerate() {
            text.push_str(&format!(
                "\n{}. {}",
                i + 1,
                option.option_name.as_deref().unwrap_or("")
            ));
        }
        text.push_str("\n(vote on your phone)");
        let content = MessageContent::Text(FormattedText::new(text, vec![bold]));
        return (msg(content, context), None);
    }
    if m.poll_update_message.is_set() {
        // Votes are encrypted for the poll's creator and change no message text.
        return (Inbound::Ignore, None);
    }
    (Inbound::Ignore, None)
}

/// The context of an outgoing message: the quoted message and the mentions.
pub fn context_info(reply_to: Option<(&str, &Jid)>, mentions: &[Jid]) -> Option<wa::ContextInfo> {
    if reply_to.is_none() && mentions.is_empty() {
        return None;
    }
    let mut context = wa::ContextInfo {
        mentioned_jid: mentions.iter().map(ToString::to_string).collect(),
        ..Default::default()
    };
    if let Some((id, author)) = reply_to {
        context.stanza_id = Some(id.to_owned());
        context.participant = Some(author.to_string());
        // The apps show the quote from this copy; ferry does not keep message bodies, so the
        // quote shows as an empty message that still jumps to the original when tapped.
        context.quoted_message = MessageField::some(wa::Message {
            conversation: Some(String::new()),
            ..Default::default()
        });
    }
    Some(context)
}

/// A text message from ferry's rich text.
pub fn outbound_text(text: &FormattedText, reply_to: Option<(&str, &Jid)>) -> wa::Message {
    let (body, mentions) = markup::render(text);
    match context_info(reply_to, &mentions) {
        None => wa::Message {
            conversation: Some(body),
            ..Default::default()
        },
        Some(context) => wa::Message {
            extended_text_message: MessageField::some(wa::message::ExtendedTextMessage {
                text: Some(body),
                context_info: MessageField::some(context),
                ..Default::default()
            }),
            ..Default::default()
        },
    }
}

/// A location message.
pub fn outbound_location(latitude: f64, longitude: f64, name: Option<&str>) -> wa::Message {
    wa::Message {
        location_message: MessageField::some(wa::message::LocationMessage {
            degrees_latitude: Some(latitude),
            degrees_longitude: Some(longitude),
            name: name.map(str::to_owned),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A contact card.
pub fn outbound_contact(
    name: &str,
    phone: Option<&str>,
    user: Option<&RemoteUserId>,
) -> wa::Message {
    let clean = |s: &str| s.replace(['\r', '\n', ';', ':'], " ");
    let mut vcard = format!("BEGIN:VCARD\nVERSION:3.0\nFN:{}\n", clean(name));
    if let Some(phone) = phone {
        let waid = user
            .filter(|u| !u.as_str().starts_with("lid-"))
            .map(|u| format!(";waid={}", u.as_str()))
            .unwrap_or_default();
        vcard.push_str(&format!("TEL;type=CELL{waid}:{}\n", clean(phone)));
    }
    vcard.push_str("END:VCARD");
    wa::Message {
        contact_message: MessageField::some(wa::message::ContactMessage {
            display_name: Some(name.to_owned()),
            vcard: Some(vcard),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::richtext::MentionTarget;

    fn ctx_with<'a>(
        sender: &'a RemoteUserId,
        own: &'a RemoteUserId,
        peer: Option<&'a RemoteUserId>,
        resolve: &'a (dyn Fn(&str) -> Option<RemoteUserId> + Sync),
    ) -> Context<'a> {
        Context {
            sender,
            own,
            dm_peer: peer,
            resolve,
        }
    }

    fn no_resolve(_: &str) -> Option<RemoteUserId> {
        None
    }

    fn text_of(content: &MessageContent) -> &FormattedText {
        match content {
            MessageContent::Text(t) => t,
            other => panic!("not text: {other:?}"),
        }
    }

    #[test]
    fn text_with_formatting_mentions_and_a_quote() {
        let (alice, me) = (RemoteUserId::new("5511"), RemoteUserId::new("5599"));
        // The mention comes as a LID the client maps to the phone number.
        let resolve = |jid: &str| (jid == "777@lid").then(|| RemoteUserId::new("5522"));
        let ctx = ctx_with(&alice, &me, None, &resolve);
        let message = wa::Message {
            extended_text_message: MessageField::some(wa::message::ExtendedTextMessage {
                text: Some("*hi* @777".into()),
                context_info: MessageField::some(wa::ContextInfo {
                    stanza_id: Some("ABC".into()),
                    participant: Some("5599@s.whatsapp.net".into()),
                    mentioned_jid: vec!["777@lid".into()],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (Inbound::Message { content, reply_to }, None) = inbound(&message, &ctx) else {
            panic!("a message");
        };
        assert_eq!(reply_to.unwrap().as_str(), "5599:ABC");
        let t = text_of(&content);
        assert_eq!(t.text, "hi @777");
        assert_eq!(t.entities[0], Entity::new(0, 2, EntityKind::Bold));
        assert_eq!(
            t.entities[1],
            Entity::new(
                3,
                4,
                EntityKind::Mention(MentionTarget::Remote(RemoteUserId::new("5522")))
            )
        );
    }

    #[test]
    fn edits_revokes_and_reactions_name_their_target() {
        let (alice, me) = (RemoteUserId::new("5511"), RemoteUserId::new("5599"));
        let ctx = ctx_with(&alice, &me, Some(&alice), &no_resolve);
        let key = |from_me: bool| {
            MessageField::some(wa::MessageKey {
                remote_jid: Some("5599@s.whatsapp.net".into()),
                from_me: Some(from_me),
                id: Some("M1".into()),
                ..Default::default()
            })
        };
        let edit = wa::Message {
            protocol_message: MessageField::some(wa::message::ProtocolMessage {
                key: key(true),
                r#type: Some(wa::message::protocol_message::Type::MESSAGE_EDIT),
                edited_message: MessageField::some(wa::Message {
                    conversation: Some("fixed".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (Inbound::Edit { target, content }, _) = inbound(&edit, &ctx) else {
            panic!("edit")
        };
        assert_eq!(
            (target.as_str(), text_of(&content).text.as_str()),
            ("5511:M1", "fixed")
        );
        let revoke = wa::Message {
            protocol_message: MessageField::some(wa::message::ProtocolMessage {
                key: key(true),
                r#type: Some(wa::message::protocol_message::Type::REVOKE),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            inbound(&revoke, &ctx).0,
            Inbound::Revoke {
                target: MessageId::new("5511:M1")
            }
        );
        // Alice reacts to a message of mine (not from her): the target's author is me.
        let react = |emoji: &str| wa::Message {
            reaction_message: MessageField::some(wa::message::ReactionMessage {
                key: key(false),
                text: Some(emoji.into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            inbound(&react("👍"), &ctx).0,
            Inbound::Reaction {
                target: MessageId::new("5599:M1"),
                emoji: "👍".into(),
                removed: false
            }
        );
        assert_eq!(
            inbound(&react(""), &ctx).0,
            Inbound::Reaction {
                target: MessageId::new("5599:M1"),
                emoji: String::new(),
                removed: true
            }
        );
    }

    #[test]
    fn voice_notes_keep_duration_and_waveform_and_view_once_is_not_bridged() {
        let (alice, me) = (RemoteUserId::new("5511"), RemoteUserId::new("5599"));
        let ctx = ctx_with(&alice, &me, Some(&alice), &no_resolve);
        let voice = wa::Message {
            audio_message: MessageField::some(wa::message::AudioMessage {
                ptt: Some(true),
                seconds: Some(7),
                mimetype: Some("audio/ogg; codecs=opus".into()),
                waveform: Some(vec![0, 50, 100]),
                file_length: Some(1234),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (
            Inbound::Message {
                content: MessageContent::Media { media, .. },
                ..
            },
            Some(MediaRef::Audio(_)),
        ) = inbound(&voice, &ctx)
        else {
            panic!("a voice note");
        };
        assert_eq!(media.kind, MediaKind::Voice);
        assert_eq!((media.duration_ms, media.size), (Some(7000), 1234));
        assert_eq!(media.waveform, Some(vec![0, 512, 1024]));
        assert_eq!(media.name, "voice.ogg");

        let once = wa::Message {
            view_once_message: MessageField::some(wa::message::FutureProofMessage {
                message: MessageField::some(wa::Message {
                    image_message: MessageField::some(wa::message::ImageMessage {
                        mimetype: Some("image/jpeg".into()),
                        view_once: Some(true),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        let (Inbound::Message { content, .. }, media) = inbound(&once, &ctx) else {
            panic!()
        };
        assert!(media.is_none(), "view-once media must not be downloadable");
        assert!(text_of(&content).text.starts_with("View-once photo"));
    }

    #[test]
    fn polls_contacts_locations_and_timers_are_readable() {
        let (alice, me) = (RemoteUserId::new("5511"), RemoteUserId::new("5599"));
        let ctx = ctx_with(&alice, &me, None, &no_resolve);
        let poll = super::super::polls::test_poll_message("Lunch?", &["Pizza", "Sushi"]);
        let (Inbound::Message { content, .. }, _) = inbound(&poll, &ctx) else {
            panic!()
        };
        assert_eq!(
            text_of(&content).text,
            "Poll: Lunch?\n1. Pizza\n2. Sushi\n(vote on your phone)"
        );

        let card = outbound_contact(
            "Bob B",
            Some("+55 11 2222"),
            Some(&RemoteUserId::new("55112222")),
        );
        let (Inbound::Message { content, .. }, _) = inbound(&card, &ctx) else {
            panic!()
        };
        assert_eq!(
            content,
            MessageContent::Contact {
                name: "Bob B".into(),
                phone: Some("+55 11 2222".into()),
                user: Some(RemoteUserId::new("55112222")),
            }
        );
        let here = outbound_location(1.5, -2.25, Some("Cafe"));
        assert_eq!(
            inbound(&here, &ctx).0,
            Inbound::Message {
                content: MessageContent::Location {
                    latitude: 1.5,
                    longitude: -2.25,
                    name: Some("Cafe".into())
                },
                reply_to: None
            }
        );
        let timer = wa::Message {
            protocol_message: MessageField::some(wa::message::ProtocolMessage {
                r#type: Some(wa::message::protocol_message::Type::EPHEMERAL_SETTING),
                ephemeral_expiration: Some(604_800),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (Inbound::Message { content, .. }, _) = inbound(&timer, &ctx) else {
            panic!()
        };
        assert_eq!(
            text_of(&content).text,
            "set disappearing messages to 7 days"
        );
    }

    #[test]
    fn outbound_text_carries_quote_and_mentions() {
        let text = FormattedText::new(
            "hey Bob",
            vec![Entity::new(
                4,
                3,
                EntityKind::Mention(MentionTarget::Remote(RemoteUserId::new("5533"))),
            )],
        );
        let author = Jid::pn("5511");
        let m = outbound_text(&text, Some(("M9", &author)));
        let t = m.extended_text_message.as_option().unwrap();
        assert_eq!(t.text.as_deref(), Some("hey @5533"));
        let c = t.context_info.as_option().unwrap();
        assert_eq!(c.stanza_id.as_deref(), Some("M9"));
        assert_eq!(c.participant.as_deref(), Some("5511@s.whatsapp.net"));
        assert_eq!(c.mentioned_jid, vec!["5533@s.whatsapp.net".to_owned()]);
        let plain = outbound_text(&FormattedText::plain("hi"), None);
        assert_eq!(plain.conversation.as_deref(), Some("hi"));
    }

    #[test]
    fn waveforms_convert_between_scales() {
        assert_eq!(waveform_to_matrix(&[0, 100, 200]), vec![0, 1024, 1024]);
        let back = waveform_to_whatsapp(&[0, 1024]);
        assert_eq!(back.len(), 64);
        assert_eq!((back[0], back[63]), (0, 100));
    }
}
