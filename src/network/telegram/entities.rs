//! Telegram message entities <-> the neutral rich-text model.
//!
//! Telegram counts entity offsets in UTF-16 code units; the neutral model counts chars. Custom
//! emoji become their fallback text (the bridge has no custom-emoji images), mentions of users
//! by id become remote mentions, and entities Matrix cannot show (hashtags, bot commands, phone
//! numbers, …) are dropped: their text stays.

use grammers_client::tl;

use crate::network::{
    RemoteUserId,
    richtext::{
        Entity, EntityKind, FormattedText, MentionTarget, char_to_utf16_range, utf16_to_char_range,
    },
};

/// A Telegram user id as a ferry remote user id.
pub fn user_id(id: i64) -> RemoteUserId {
    RemoteUserId::new(id.to_string())
}

/// The "user" a channel posts as. Channel and user ids are separate number spaces on Telegram,
/// so the channel's ghost gets a `c` in front and can never be a user's ghost.
pub fn channel_poster_id(channel: i64) -> RemoteUserId {
    RemoteUserId::new(format!("c{channel}"))
}

/// Converts a Telegram text and its entities (untrusted) into normalized rich text.
pub fn from_telegram(text: &str, entities: &[tl::enums::MessageEntity]) -> FormattedText {
    use tl::enums::MessageEntity as E;
    let mut out = Vec::new();
    for e in entities {
        let (offset, length, kind) = match e {
            E::Bold(x) => (x.offset, x.length, EntityKind::Bold),
            E::Italic(x) => (x.offset, x.length, EntityKind::Italic),
            E::Underline(x) => (x.offset, x.length, EntityKind::Underline),
            E::Strike(x) => (x.offset, x.length, EntityKind::Strikethrough),
            E::Spoiler(x) => (x.offset, x.length, EntityKind::Spoiler),
            E::Code(x) => (x.offset, x.length, EntityKind::Code),
            E::Pre(x) => (
                x.offset,
                x.length,
                EntityKind::Pre {
                    language: (!x.language.is_empty()).then(|| x.language.clone()),
                },
            ),
            E::Blockquote(x) => (x.offset, x.length, EntityKind::Blockquote),
            E::TextUrl(x) => (x.offset, x.length, EntityKind::Link { url: x.url.clone() }),
            E::MentionName(x) => (
                x.offset,
                x.length,
                EntityKind::Mention(MentionTarget::Remote(user_id(x.user_id))),
            ),
            // A bare URL or @username is its own text; Matrix clients linkify it themselves.
            _ => continue,
        };
        let (Ok(offset), Ok(length)) = (usize::try_from(offset), usize::try_from(length)) else {
            continue;
        };
        let (start, len) = utf16_to_char_range(text, offset, length);
        if len > 0 {
            out.push(Entity::new(start, len, kind));
        }
    }
    let mut formatted = FormattedText::new(text, out);
    formatted.normalize();
    formatted
}

/// Converts rich text into Telegram entities (UTF-16 offsets). `input_user` turns a mentioned
/// remote user into the `InputUser` Telegram needs (None drops the mention, keeping its text).
pub fn to_telegram(
    text: &FormattedText,
    input_user: impl Fn(&RemoteUserId) -> Option<tl::enums::InputUser>,
) -> Vec<tl::enums::MessageEntity> {
    use tl::enums::MessageEntity as E;
    let mut out = Vec::new();
    for e in &text.entities {
        let (offset, length) = char_to_utf16_range(&text.text, e.start, e.len);
        let (Ok(offset), Ok(length)) = (i32::try_from(offset), i32::try_from(length)) else {
            continue;
        };
        if length == 0 {
            continue;
        }
        out.push(match &e.kind {
            EntityKind::Bold => E::Bold(tl::types::MessageEntityBold { offset, length }),
            EntityKind::Italic => E::Italic(tl::types::MessageEntityItalic { offset, length }),
            EntityKind::Underline => {
                E::Underline(tl::types::MessageEntityUnderline { offset, length })
            }
            EntityKind::Strikethrough => {
                E::Strike(tl::types::MessageEntityStrike { offset, length })
            }
            EntityKind::Spoiler => E::Spoiler(tl::types::MessageEntitySpoiler { offset, length }),
            EntityKind::Code => E::Code(tl::types::MessageEntityCode { offset, length }),
            EntityKind::Pre { language } => E::Pre(tl::types::MessageEntityPre {
                offset,
                length,
                language: language.clone().unwrap_or_default(),
            }),
            EntityKind::Blockquote => E::Blockquote(tl::types::MessageEntityBlockquote {
                collapsed: false,
                offset,
                length,
            }),
            EntityKind::Link { url } => E::TextUrl(tl::types::MessageEntityTextUrl {
                offset,
                length,
                url: url.clone(),
            }),
            EntityKind::Mention(MentionTarget::Remote(user)) => match input_user(user) {
                Some(user_id) => {
                    E::InputMessageEntityMentionName(tl::types::InputMessageEntityMentionName {
                        offset,
                        length,
                        user_id,
                    })
                }
                None => continue,
            },
            // A Matrix user who is no Telegram user: the text stays, as plain text.
            EntityKind::Mention(MentionTarget::Matrix(_)) => continue,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf16_offsets_become_char_offsets_and_back() {
        // "😀 " is 3 UTF-16 units but 2 chars: bold on "bold" starts at unit 3, char 2.
        let text = "😀 bold and a link";
        let entities = vec![
            tl::enums::MessageEntity::Bold(tl::types::MessageEntityBold {
                offset: 3,
                length: 4,
            }),
            tl::enums::MessageEntity::TextUrl(tl::types::MessageEntityTextUrl {
                offset: 14,
                length: 4,
                url: "https://example.org".into(),
            }),
            tl::enums::MessageEntity::Hashtag(tl::types::MessageEntityHashtag {
                offset: 0,
                length: 2,
            }),
        ];
        let rich = from_telegram(text, &entities);
        assert_eq!(
            rich.entities,
            vec![
                Entity::new(2, 4, EntityKind::Bold),
                Entity::new(
                    13,
                    4,
                    EntityKind::Link {
                        url: "https://example.org".into()
                    }
                ),
            ]
        );
        let back = to_telegram(&rich, |_| None);
        assert!(
            matches!(&back[0], tl::enums::MessageEntity::Bold(b) if b.offset == 3 && b.length == 4)
        );
        assert!(
            matches!(&back[1], tl::enums::MessageEntity::TextUrl(l) if l.offset == 14 && l.url == "https://example.org")
        );
    }

    #[test]
    fn mentions_pre_and_bad_ranges() {
        let text = "hi Bob\ncode";
        let entities = vec![
            tl::enums::MessageEntity::MentionName(tl::types::MessageEntityMentionName {
                offset: 3,
                length: 3,
                user_id: 42,
            }),
            tl::enums::MessageEntity::Pre(tl::types::MessageEntityPre {
                offset: 7,
                length: 4,
                language: "rust".into(),
            }),
            // Out of range and negative: dropped, never a panic.
            tl::enums::MessageEntity::Italic(tl::types::MessageEntityItalic {
                offset: 500,
                length: 9,
            }),
            tl::enums::MessageEntity::Italic(tl::types::MessageEntityItalic {
                offset: -1,
                length: 2,
            }),
        ];
        let rich = from_telegram(text, &entities);
        assert_eq!(rich.text, text);
        assert_eq!(
            rich.entities,
            vec![
                Entity::new(
                    3,
                    3,
                    EntityKind::Mention(MentionTarget::Remote(user_id(42)))
                ),
                Entity::new(
                    7,
                    4,
                    EntityKind::Pre {
                        language: Some("rust".into())
                    }
                ),
            ]
        );
        let back = to_telegram(&rich, |u| {
            Some(tl::enums::InputUser::User(tl::types::InputUser {
                user_id: u.as_str().parse().unwrap_or_default(),
                access_hash: 7,
            }))
        });
        assert!(matches!(
            &back[0],
            tl::enums::MessageEntity::InputMessageEntityMentionName(m)
                if m.offset == 3 && matches!(&m.user_id, tl::enums::InputUser::User(u) if u.user_id == 42)
        ));
        assert!(matches!(&back[1], tl::enums::MessageEntity::Pre(p) if p.language == "rust"));
    }
}
