//! Neutral message content <-> Matrix event content. Pure functions (media transfer and id
//! lookups are done by the caller), unit-tested.

use serde_json::{Value as JsonValue, json};

use crate::{
    matrix::format,
    network::{
        Media, MediaKind, MessageContent,
        richtext::{FormattedText, MentionTarget},
    },
};

/// Matrix content for a remote message. `media_url` is the mxc URI the media was uploaded to.
/// Returns (event type, content).
pub fn to_matrix_content(
    content: &MessageContent,
    media_url: Option<&str>,
    mention: &dyn Fn(&MentionTarget) -> Option<(String, String)>,
) -> (&'static str, JsonValue) {
    match content {
        MessageContent::Text(text) => ("m.room.message", text_content("m.text", text, mention)),
        MessageContent::Media { media, caption } => {
            media_content(media, caption.as_ref(), media_url, mention)
        }
        MessageContent::Location {
            latitude,
            longitude,
            name,
        } => {
            let label = name.clone().unwrap_or_else(|| "Location".to_owned());
            let geo = format!("geo:{latitude},{longitude}");
            let body =
                format!("{label}: https://www.openstreetmap.org/?mlat={latitude}&mlon={longitude}");
            (
                "m.room.message",
                json!({"msgtype": "m.location", "body": body, "geo_uri": geo}),
            )
        }
        MessageContent::Contact { name, phone, .. } => {
            let mut body = format!("📇 Contact: {name}");
            if let Some(phone) = phone {
                body.push_str(&format!(" ({phone})"));
            }
            ("m.room.message", json!({"msgtype": "m.text", "body": body}))
        }
    }
}

fn text_content(
    msgtype: &str,
    text: &FormattedText,
    mention: &dyn Fn(&MentionTarget) -> Option<(String, String)>,
) -> JsonValue {
    let (body, html) = format::to_matrix(text, mention);
    let mut content = json!({"msgtype": msgtype, "body": body});
    if let Some(html) = html {
        content["format"] = json!("org.matrix.custom.html");
        content["formatted_body"] = json!(html);
    }
    let mentioned: Vec<String> = text
        .entities
        .iter()
        .filter_map(|e| match &e.kind {
            crate::network::richtext::EntityKind::Mention(target) => {
                mention(target).map(|(mxid, _)| mxid)
            }
            _ => None,
        })
        .collect();
    if !mentioned.is_empty() {
        content["m.mentions"] = json!({"user_ids": mentioned});
    }
    content
}

fn media_content(
    media: &Media,
    caption: Option<&FormattedText>,
    url: Option<&str>,
    mention: &dyn Fn(&MentionTarget) -> Option<(String, String)>,
) -> (&'static str, JsonValue) {
    let mut info = json!({"mimetype": media.content_type, "size": media.size});
    if let Some(w) = media.width {
        info["w"] = json!(w);
    }
    if let Some(h) = media.height {
        info["h"] = json!(h);
    }
    if let Some(d) = media.duration_ms {
        info["duration"] = json!(d);
    }
    if media.kind == MediaKind::Animation {
        // What Beeper/mautrix clients read as "play like a GIF"; others show a plain video.
        for hint in [
            "fi.mau.gif",
            "fi.mau.loop",
            "fi.mau.autoplay",
            "fi.mau.hide_controls",
            "fi.mau.no_audio",
        ] {
            info[hint] = json!(true);
        }
    }
    let msgtype = match media.kind {
        MediaKind::Image => "m.image",
        MediaKind::Video | MediaKind::Animation => "m.video",
        MediaKind::Audio | MediaKind::Voice => "m.audio",
        MediaKind::File => "m.file",
        MediaKind::Sticker => {
            let content = json!({"body": media.name, "url": url, "info": info});
            return ("m.sticker", content);
        }
    };
    let mut content = match caption {
        Some(caption) if !caption.text.is_empty() => {
            let mut c = text_content(msgtype, caption, mention);
            c["filename"] = json!(media.name);
            c
        }
        _ => json!({"msgtype": msgtype, "body": media.name}),
    };
    content["url"] = json!(url);
    content["info"] = info;
    if media.kind == MediaKind::Voice {
        content["org.matrix.msc3245.voice"] = json!({});
        let mut audio = json!({"duration": media.duration_ms.unwrap_or(0)});
        if let Some(waveform) = &media.waveform {
            audio["waveform"] = json!(waveform);
        }
        content["org.matrix.msc1767.audio"] = audio;
    }
    ("m.room.message", content)
}

/// What a Matrix message holds, before media is transferred.
#[derive(Debug, Clone, PartialEq)]
pub enum MatrixContent {
    Text(FormattedText),
    /// Media still on the homeserver at `url` (mxc); `media.id` is empty until uploaded.
    Media {
        media: Media,
        caption: Option<FormattedText>,
        url: String,
    },
    Location {
        latitude: f64,
        longitude: f64,
        name: Option<String>,
    },
}

/// Why a Matrix message cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("{0} messages are not supported")]
    Unsupported(String),
    #[error("the message is malformed: {0}")]
    Malformed(&'static str),
}

/// Reads a Matrix `m.room.message` (or `m.sticker`) content. `sender_name` prefixes emotes.
pub fn from_matrix_content(
    event_type: &str,
    content: &JsonValue,
    sender_name: &str,
    resolve: &dyn Fn(&str) -> Option<MentionTarget>,
) -> Result<MatrixContent, ConvertError> {
    let str_field = |key: &str| content.get(key).and_then(JsonValue::as_str);
    let body = str_field("body").unwrap_or_default();
    let formatted = (str_field("format") == Some("org.matrix.custom.html"))
        .then(|| str_field("formatted_body"))
        .flatten();
    let msgtype = if event_type == "m.sticker" {
        "m.sticker"
    } else {
        str_field("msgtype").ok_or(ConvertError::Malformed("no msgtype"))?
    };
    // A text message whose body is not a string would go out empty: refuse it instead.
    if matches!(msgtype, "m.text" | "m.notice" | "m.emote")
        && content.get("body").is_some_and(|b| !b.is_string())
    {
        return Err(ConvertError::Malformed("the body is not a string"));
    }
    match msgtype {
        "m.text" | "m.notice" => Ok(MatrixContent::Text(format::from_matrix(
            body, formatted, resolve,
        ))),
        "m.emote" => {
            let text = format::from_matrix(body, formatted, resolve);
            Ok(MatrixContent::Text(prefix(
                &format!("* {sender_name} "),
                text,
            )))
        }
        "m.image" | "m.video" | "m.audio" | "m.file" | "m.sticker" => {
            let url = str_field("url").ok_or(ConvertError::Malformed(
                "media without url (encrypted media is not supported yet)",
            ))?;
            let info = content.get("info").cloned().unwrap_or_default();
            let num = |key: &str| info.get(key).and_then(JsonValue::as_u64);
            let voice = content.get("org.matrix.msc3245.voice").is_some();
            let kind = match msgtype {
                "m.image" => MediaKind::Image,
                "m.video" if info.get("fi.mau.gif") == Some(&JsonValue::Bool(true)) => {
                    MediaKind::Animation
                }
                "m.video" => MediaKind::Video,
                "m.audio" if voice => MediaKind::Voice,
                "m.audio" => MediaKind::Audio,
                "m.sticker" => MediaKind::Sticker,
                _ => MediaKind::File,
            };
            let filename = str_field("filename").filter(|f| !f.is_empty());
            let (name, caption) = match filename {
                Some(filename) if filename != body => (
                    filename.to_owned(),
                    Some(format::from_matrix(body, formatted, resolve)),
                ),
                _ => (
                    if body.is_empty() {
                        "file".to_owned()
                    } else {
                        body.to_owned()
                    },
                    None,
                ),
            };
            let waveform = content
                .pointer("/org.matrix.msc1767.audio/waveform")
                .and_then(JsonValue::as_array)
                .map(|w| {
                    w.iter()
                        .filter_map(JsonValue::as_u64)
                        .map(|v| v.min(1024) as u16)
                        .take(1024)
                        .collect()
                });
            let media = Media {
                id: String::new(),
                kind,
                name,
                content_type: info
                    .get("mimetype")
                    .and_then(JsonValue::as_str)
                    .unwrap_or("application/octet-stream")
                    .to_owned(),
                size: num("size").unwrap_or(0),
                width: num("w").and_then(|v| u32::try_from(v).ok()),
                height: num("h").and_then(|v| u32::try_from(v).ok()),
                duration_ms: num("duration").or_else(|| {
                    content
                        .pointer("/org.matrix.msc1767.audio/duration")
                        .and_then(JsonValue::as_u64)
                }),
                waveform,
            };
            Ok(MatrixContent::Media {
                media,
                caption,
                url: url.to_owned(),
            })
        }
        "m.location" => {
            let geo =
                str_field("geo_uri").ok_or(ConvertError::Malformed("location without geo_uri"))?;
            let (latitude, longitude) =
                parse_geo_uri(geo).ok_or(ConvertError::Malformed("invalid geo_uri"))?;
            Ok(MatrixContent::Location {
                latitude,
                longitude,
                name: (!body.is_empty()).then(|| body.to_owned()),
            })
        }
        other => Err(ConvertError::Unsupported(other.chars().take(64).collect())),
    }
}

/// Parses `geo:lat,lon[,alt][;params]`.
pub fn parse_geo_uri(uri: &str) -> Option<(f64, f64)> {
    let rest = uri.strip_prefix("geo:")?;
    let coords = rest.split(';').next()?;
    let mut parts = coords.split(',');
    let lat: f64 = parts.next()?.trim().parse().ok()?;
    let lon: f64 = parts.next()?.trim().parse().ok()?;
    ((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)).then_some((lat, lon))
}

/// Puts `prefix` in front of a formatted text, shifting its entities.
pub fn prefix(prefix: &str, text: FormattedText) -> FormattedText {
    let shift = prefix.chars().count();
    let mut out = FormattedText {
        text: format!("{prefix}{}", text.text),
        entities: text.entities,
    };
    for entity in &mut out.entities {
        entity.start += shift;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_mentions(_: &MentionTarget) -> Option<(String, String)> {
        None
    }

    #[test]
    fn geo_uris_parse_and_refuse_nonsense() {
        assert_eq!(parse_geo_uri("geo:51.5,-0.12"), Some((51.5, -0.12)));
        assert_eq!(parse_geo_uri("geo:51.5,-0.12,30;u=10"), Some((51.5, -0.12)));
        assert_eq!(parse_geo_uri("geo:91,0"), None);
        assert_eq!(parse_geo_uri("http://x"), None);
        assert_eq!(parse_geo_uri("geo:a,b"), None);
    }

    #[test]
    fn voice_notes_carry_duration_and_waveform_both_ways() {
        let media = Media {
            id: "x".into(),
            kind: MediaKind::Voice,
            name: "voice.ogg".into(),
            content_type: "audio/ogg".into(),
            size: 1234,
            width: None,
            height: None,
            duration_ms: Some(3000),
            waveform: Some(vec![0, 512, 1024]),
        };
        let content = MessageContent::Media {
            media: media.clone(),
            caption: None,
        };
        let (kind, json) = to_matrix_content(&content, Some("mxc://hs/abc"), &no_mentions);
        assert_eq!(kind, "m.room.message");
        assert_eq!(json["msgtype"], "m.audio");
        assert_eq!(
            json["org.matrix.msc1767.audio"]["waveform"],
            json!([0, 512, 1024])
        );
        assert_eq!(json["info"]["duration"], 3000);
        let back = from_matrix_content("m.room.message", &json, "a", &|_| None).expect("parses");
        let MatrixContent::Media {
            media: got,
            url,
            caption,
        } = back
        else {
            panic!("not media")
        };
        assert_eq!(url, "mxc://hs/abc");
        assert_eq!(caption, None);
        assert_eq!(got.kind, MediaKind::Voice);
        assert_eq!(got.waveform, media.waveform);
        assert_eq!((got.size, got.duration_ms), (1234, Some(3000)));
    }

    #[test]
    fn captions_and_stickers_and_locations() {
        let json = json!({"msgtype": "m.image", "body": "look at this", "filename": "cat.png", "url": "mxc://a/b",
            "info": {"mimetype": "image/png", "size": 10, "w": 4, "h": 3}});
        let MatrixContent::Media { media, caption, .. } =
            from_matrix_content("m.room.message", &json, "a", &|_| None).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (media.name.as_str(), media.width, media.height),
            ("cat.png", Some(4), Some(3))
        );
        assert_eq!(caption.map(|c| c.text), Some("look at this".to_owned()));
        let sticker =
            json!({"body": "wave", "url": "mxc://a/s", "info": {"mimetype": "image/webp"}});
        let MatrixContent::Media { media, .. } =
            from_matrix_content("m.sticker", &sticker, "a", &|_| None).unwrap()
        else {
            panic!()
        };
        assert_eq!(media.kind, MediaKind::Sticker);
        let loc = json!({"msgtype": "m.location", "body": "Home", "geo_uri": "geo:1.5,2.5"});
        assert_eq!(
            from_matrix_content("m.room.message", &loc, "a", &|_| None).unwrap(),
            MatrixContent::Location {
                latitude: 1.5,
                longitude: 2.5,
                name: Some("Home".into())
            }
        );
        assert!(matches!(
            from_matrix_content(
                "m.room.message",
                &json!({"msgtype": "m.bogus", "body": ""}),
                "a",
                &|_| None
            ),
            Err(ConvertError::Unsupported(_))
        ));
        assert!(
            from_matrix_content("m.room.message", &json!({"body": "x"}), "a", &|_| None).is_err()
        );
    }

    #[test]
    fn animations_are_looping_videos_both_ways() {
        let media = Media {
            id: "x".into(),
            kind: MediaKind::Animation,
            name: "party.mp4".into(),
            content_type: "video/mp4".into(),
            size: 99,
            width: Some(320),
            height: Some(240),
            duration_ms: Some(1500),
            waveform: None,
        };
        let content = MessageContent::Media {
            media,
            caption: None,
        };
        let (_, json) = to_matrix_content(&content, Some("mxc://hs/gif"), &no_mentions);
        assert_eq!(json["msgtype"], "m.video");
        assert_eq!(json["info"]["fi.mau.gif"], true);
        assert_eq!(json["info"]["fi.mau.loop"], true);
        let MatrixContent::Media { media, .. } =
            from_matrix_content("m.room.message", &json, "a", &|_| None).unwrap()
        else {
            panic!()
        };
        assert_eq!(media.kind, MediaKind::Animation);
        let plain = json!({"msgtype": "m.video", "body": "v.mp4", "url": "mxc://a/v"});
        let MatrixContent::Media { media, .. } =
            from_matrix_content("m.room.message", &plain, "a", &|_| None).unwrap()
        else {
            panic!()
        };
        assert_eq!(media.kind, MediaKind::Video);
    }

    #[test]
    fn text_with_a_non_string_body_is_refused() {
        for body in [json!(42), json!({"a": 1}), json!(["x"]), json!(null)] {
            let content = json!({"msgtype": "m.text", "body": body});
            assert_eq!(
                from_matrix_content("m.room.message", &content, "a", &|_| None),
                Err(ConvertError::Malformed("the body is not a string"))
            );
        }
    }

    #[test]
    fn emotes_name_the_sender() {
        let json = json!({"msgtype": "m.emote", "body": "waves"});
        let MatrixContent::Text(text) =
            from_matrix_content("m.room.message", &json, "Alice", &|_| None).unwrap()
        else {
            panic!()
        };
        assert_eq!(text.text, "* Alice waves");
    }
}
