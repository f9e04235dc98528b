//! The sim network's formatting: an `entities` list beside a message's `text`, shaped like
//! Telegram's (`{"type": "bold", "offset": 0, "length": 4}`, offsets in chars), converted to
//! and from the neutral model.
//!
//! Why lenient: entities arrive from a remote server, so a malformed one (an unknown type, a
//! negative or fractional offset, a field of the wrong type) must cost only itself, never the
//! message it rides on. Deserializing a [`SimEntity`] therefore accepts any JSON object, and
//! [`from_sim`] drops what it cannot use and normalizes the rest.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::network::{
    ids::RemoteUserId,
    richtext::{Entity, EntityKind, FormattedText, MentionTarget},
};

/// One entity as the sim protocol carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "RawSimEntity")]
pub struct SimEntity {
    /// bold, italic, strikethrough, underline, spoiler, code, pre, link, blockquote, mention;
    /// anything else is ignored.
    #[serde(rename = "type")]
    pub kind: String,
    /// In chars of the message text. An offset that was not a non-negative integer reads as
    /// out of range (the entity is dropped).
    pub offset: usize,
    pub length: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

/// Whatever the server sent, before it is made sense of.
#[derive(Deserialize)]
struct RawSimEntity {
    #[serde(rename = "type", default)]
    kind: Value,
    #[serde(default)]
    offset: Value,
    #[serde(default)]
    length: Value,
    #[serde(default)]
    language: Value,
    #[serde(default)]
    url: Value,
    #[serde(default)]
    user_id: Value,
}

impl From<RawSimEntity> for SimEntity {
    fn from(raw: RawSimEntity) -> Self {
        let string = |v: Value| match v {
            Value::String(s) => Some(s),
            _ => None,
        };
        Self {
            kind: string(raw.kind).unwrap_or_default(),
            offset: count(&raw.offset).unwrap_or(usize::MAX),
            length: count(&raw.length).unwrap_or(0),
            language: string(raw.language),
            url: string(raw.url),
            user_id: string(raw.user_id),
        }
    }
}

/// A non-negative integer (saturating at `usize::MAX`).
fn count(v: &Value) -> Option<usize> {
    let n = v.as_number()?;
    if let Some(u) = n.as_u64() {
        return Some(usize::try_from(u).unwrap_or(usize::MAX));
    }
    // Integral floats such as `3.0` are fine; negative, fractional or huge ones are not.
    let f = n.as_f64()?;
    (f >= 0.0 && f.fract() == 0.0 && f < 9.0e15).then_some(f as usize)
}

/// Most entities the sim server accepts on one message.
pub const MAX_SIM_ENTITIES: usize = 1000;
/// Longest `url` the sim server accepts, in bytes.
pub const MAX_SIM_URL: usize = 2048;
/// Longest `language` the sim server accepts, in bytes.
pub const MAX_SIM_LANGUAGE: usize = 64;

/// Whether the sim server accepts `id` as a user id: 1 to 128 bytes without whitespace,
/// control characters or `/`.
pub fn valid_sim_user_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && !id
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/')
}

/// The sim entities for a text, always within the server's limits (see `SIM_PROTOCOL.md`), so
/// formatting can never get a message refused. What the sim network cannot carry is left as
/// plain text: mentions of Matrix users who are not remote users, mentions of malformed user
/// ids, links with an empty or over-long URL, entities past the [`MAX_SIM_ENTITIES`]th. An
/// over-long code block language is dropped (the block stays).
pub fn to_sim(text: &FormattedText) -> Vec<SimEntity> {
    let mut text = text.clone();
    text.normalize();
    text.entities
        .into_iter()
        .filter_map(|entity| {
            let mut out = SimEntity {
                kind: String::new(),
                offset: entity.start,
                length: entity.len,
                language: None,
                url: None,
                user_id: None,
            };
            out.kind = match entity.kind {
                EntityKind::Bold => "bold",
                EntityKind::Italic => "italic",
                EntityKind::Strikethrough => "strikethrough",
                EntityKind::Underline => "underline",
                EntityKind::Spoiler => "spoiler",
                EntityKind::Code => "code",
                EntityKind::Pre { language } => {
                    out.language = language.filter(|l| l.len() <= MAX_SIM_LANGUAGE);
                    "pre"
                }
                EntityKind::Link { url } if (1..=MAX_SIM_URL).contains(&url.len()) => {
                    out.url = Some(url);
                    "link"
                }
                EntityKind::Link { .. } => return None,
                EntityKind::Blockquote => "blockquote",
                EntityKind::Mention(MentionTarget::Remote(user))
                    if valid_sim_user_id(user.as_str()) =>
                {
                    out.user_id = Some(user.as_str().to_owned());
                    "mention"
                }
                EntityKind::Mention(MentionTarget::Remote(_)) => return None,
                EntityKind::Mention(MentionTarget::Matrix(_)) => return None,
            }
            .to_owned();
            Some(out)
        })
        .take(MAX_SIM_ENTITIES)
        .collect()
}

/// The model for a sim message's text and entities. What the protocol does not allow is
/// ignored (unknown types, a `link` without a valid `url`, a `mention` without a valid
/// `user_id`, an over-long `language`, entities past the [`MAX_SIM_ENTITIES`]th), ranges are
/// clamped, the result is normalized. So `from_sim(to_sim(t))` is `t` for anything `from_sim`
/// returns.
pub fn from_sim(text: &str, entities: &[SimEntity]) -> FormattedText {
    let entities = entities
        .iter()
        .filter_map(|e| {
            let kind = match e.kind.as_str() {
                "bold" => EntityKind::Bold,
                "italic" => EntityKind::Italic,
                "strikethrough" => EntityKind::Strikethrough,
                "underline" => EntityKind::Underline,
                "spoiler" => EntityKind::Spoiler,
                "code" => EntityKind::Code,
                "pre" => EntityKind::Pre {
                    language: e.language.clone().filter(|l| l.len() <= MAX_SIM_LANGUAGE),
                },
                "link" => EntityKind::Link {
                    url: e
                        .url
                        .clone()
                        .filter(|u| (1..=MAX_SIM_URL).contains(&u.len()))?,
                },
                "blockquote" => EntityKind::Blockquote,
                "mention" => EntityKind::Mention(MentionTarget::Remote(RemoteUserId::new(
                    e.user_id.clone().filter(|u| valid_sim_user_id(u))?,
                ))),
                _ => return None,
            };
            Some(Entity::new(e.offset, e.length, kind))
        })
        .collect();
    let mut text = FormattedText::new(text, entities);
    text.entities.truncate(MAX_SIM_ENTITIES);
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn e(start: usize, len: usize, kind: EntityKind) -> Entity {
        Entity::new(start, len, kind)
    }

    fn sim(kind: &str, offset: usize, length: usize) -> SimEntity {
        SimEntity {
            kind: kind.into(),
            offset,
            length,
            language: None,
            url: None,
            user_id: None,
        }
    }

    #[test]
    fn every_kind_both_ways() {
        let text = FormattedText::new(
            "b i s u sp c pre link q @al @mx",
            vec![
                e(0, 1, EntityKind::Bold),
                e(2, 1, EntityKind::Italic),
                e(4, 1, EntityKind::Strikethrough),
                e(6, 1, EntityKind::Underline),
                e(8, 2, EntityKind::Spoiler),
                e(11, 1, EntityKind::Code),
                e(
                    13,
                    3,
                    EntityKind::Pre {
                        language: Some("rust".into()),
                    },
                ),
                e(
                    17,
                    4,
                    EntityKind::Link {
                        url: "https://x".into(),
                    },
                ),
                e(22, 1, EntityKind::Blockquote),
                e(
                    24,
                    3,
                    EntityKind::Mention(MentionTarget::Remote(RemoteUserId::new("al"))),
                ),
                e(
                    28,
                    3,
                    EntityKind::Mention(MentionTarget::Matrix("@mx:hs".into())),
                ),
            ],
        );
        let entities = to_sim(&text);
        assert_eq!(
            serde_json::to_value(&entities).unwrap(),
            json!([
                {"type": "bold", "offset": 0, "length": 1},
                {"type": "italic", "offset": 2, "length": 1},
                {"type": "strikethrough", "offset": 4, "length": 1},
                {"type": "underline", "offset": 6, "length": 1},
                {"type": "spoiler", "offset": 8, "length": 2},
                {"type": "code", "offset": 11, "length": 1},
                {"type": "pre", "offset": 13, "length": 3, "language": "rust"},
                {"type": "link", "offset": 17, "length": 4, "url": "https://x"},
                {"type": "blockquote", "offset": 22, "length": 1},
                {"type": "mention", "offset": 24, "length": 3, "user_id": "al"},
            ])
        );
        let mut without_matrix = text.clone();
        without_matrix.entities.pop();
        assert_eq!(from_sim(&text.text, &entities), without_matrix);
    }

    #[test]
    fn what_the_server_would_refuse_is_left_plain() {
        let mention = |id: &str| EntityKind::Mention(MentionTarget::Remote(RemoteUserId::new(id)));
        let link = |url: String| EntityKind::Link { url };
        let text = FormattedText::new(
            "abcdefgh",
            vec![
                e(0, 1, link(String::new())),
                e(1, 1, link(format!("https://{}", "a".repeat(MAX_SIM_URL)))),
                e(2, 1, link("https://ok".into())),
                e(3, 1, mention("has space")),
                e(4, 1, mention("a/b")),
                e(5, 1, mention(&"x".repeat(129))),
                e(6, 1, mention("bob")),
                e(
                    7,
                    1,
                    EntityKind::Pre {
                        language: Some("l".repeat(65)),
                    },
                ),
            ],
        );
        let kinds: Vec<(String, usize, Option<String>)> = to_sim(&text)
            .into_iter()
            .map(|s| (s.kind, s.offset, s.language))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("link".into(), 2, None),
                ("mention".into(), 6, None),
                ("pre".into(), 7, None)
            ]
        );
        let many = FormattedText::new(
            "x".repeat(3000),
            (0..3000).map(|i| e(i, 1, EntityKind::Bold)).collect(),
        );
        assert_eq!(to_sim(&many).len(), MAX_SIM_ENTITIES);
    }

    #[test]
    fn offsets_count_chars() {
        let text = from_sim("😀 ünï", &[sim("bold", 2, 3)]);
        assert_eq!(text.covered(&text.entities[0]), "ünï");
    }

    #[test]
    fn unusable_entities_are_ignored_and_ranges_clamped() {
        let text = from_sim(
            "hello",
            &[
                sim("blink", 0, 5),
                sim("link", 0, 5),
                sim("mention", 0, 5),
                sim("bold", 3, 100),
                sim("italic", 9, 1),
                sim("code", 0, 0),
                sim("underline", usize::MAX, usize::MAX),
            ],
        );
        assert_eq!(text.entities, vec![e(3, 2, EntityKind::Bold)]);
    }

    #[test]
    fn lenient_deserialization() {
        let raw = json!([
            {"type": "bold", "offset": 1, "length": 2},
            {"type": "bold", "offset": -1, "length": 2},
            {"type": "bold", "offset": 1.5, "length": 2},
            {"type": "bold", "offset": 2.0, "length": 1e300},
            {"type": 7, "offset": "x"},
            {"type": "link", "offset": 0, "length": 1, "url": 5},
            {"type": "pre", "offset": 0, "length": 1, "language": null, "extra": [1]},
            {"offset": 18446744073709551615_u64, "length": 18446744073709551615_u64},
            {}
        ]);
        let entities: Vec<SimEntity> = serde_json::from_value(raw).unwrap();
        assert_eq!(entities.len(), 9);
        assert_eq!((entities[0].offset, entities[0].length), (1, 2));
        assert_eq!(entities[1].offset, usize::MAX);
        assert_eq!(entities[2].offset, usize::MAX);
        assert_eq!((entities[3].offset, entities[3].length), (2, 0));
        assert_eq!(entities[4].kind, "");
        assert_eq!(entities[5].url, None);
        let text = from_sim("abcd", &entities);
        assert_eq!(
            text.entities,
            vec![
                e(0, 1, EntityKind::Pre { language: None }),
                e(1, 2, EntityKind::Bold),
            ]
        );
        // Not an object, or JSON that is not valid (a lone surrogate): an error, not a panic.
        assert!(serde_json::from_str::<Vec<SimEntity>>("[1]").is_err());
        assert!(serde_json::from_str::<Vec<SimEntity>>(r#"[{"type": "bold\ud800"}]"#).is_err());
        assert!(
            serde_json::from_str::<Vec<SimEntity>>(r#"[{"type": "link", "url": "\udc00x"}]"#)
                .is_err()
        );
    }

    #[test]
    fn unknown_fields_are_not_written() {
        let json = serde_json::to_string(&sim("bold", 0, 1)).unwrap();
        assert_eq!(json, r#"{"type":"bold","offset":0,"length":1}"#);
    }
}
