//! Telegram media <-> the neutral model: what a message carries, ids that let the bridge fetch a
//! file later, and files uploaded ahead of the message that sends them.
//!
//! A media id is `tl:` + the hex of the file's serialized `InputFileLocation` (document or
//! photo id, access hash, file reference, size type): everything `upload.getFile` needs, so a
//! download works without the message at hand. Documents add their exact byte size
//! (`tl:<size>:<hex>`), so the download can be streamed with a known length (homeservers refuse
//! uploads without one); photos' sizes are only approximate, so they are buffered instead. A
//! media id ends with the message it came from (`@<chat>:<id>`): file references expire on
//! Telegram, and a download that meets `FILE_REFERENCE_EXPIRED` fetches the message again for a
//! fresh one (see the session's `download_media`).

use grammers_client::media::{Downloadable, Media as TgMedia};
use grammers_client::tl::{self, Deserializable as _, Serializable as _};

use super::entities::from_telegram;
use crate::network::{ChatId, Media, MediaKind, MessageContent, NetworkError};

/// An `InputFileLocation` stored in a media id.
pub struct Location(pub tl::enums::InputFileLocation);

impl Downloadable for Location {
    fn to_raw_input_location(&self) -> Option<tl::enums::InputFileLocation> {
        Some(self.0.clone())
    }
}

/// `size`: the exact byte size when known (documents), else `None`.
pub fn encode_location(loc: &tl::enums::InputFileLocation, size: Option<u64>) -> String {
    let bytes = loc.to_bytes();
    let mut out = String::with_capacity(24 + bytes.len() * 2);
    out.push_str("tl:");
    if let Some(size) = size {
        out.push_str(&format!("{size}:"));
    }
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The message a media id was taken from (`…@<chat>:<message id>`), so that an expired file
/// reference can be refreshed by fetching the message again.
pub fn origin_of(id: &str) -> Option<(ChatId, i32)> {
    let (_, origin) = id.split_once('@')?;
    let (chat, message) = origin.rsplit_once(':')?;
    Some((ChatId::new(chat), message.parse().ok()?))
}

/// The location in a media id, and the file's exact size when the id carries it.
pub fn decode_location(id: &str) -> Result<(Location, Option<u64>), NetworkError> {
    let bad = || NetworkError::Rejected(format!("{id} is not a Telegram media id"));
    let id = id.split_once('@').map_or(id, |(location, _)| location);
    let rest = id.strip_prefix("tl:").ok_or_else(bad)?;
    let (size, hex) = match rest.split_once(':') {
        Some((size, hex)) => (Some(size.parse::<u64>().map_err(|_| bad())?), hex),
        None => (None, rest),
    };
    if hex.len() % 2 != 0 || hex.len() > 4096 {
        return Err(bad());
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| bad())?;
    tl::enums::InputFileLocation::from_bytes(&bytes)
        .map(|loc| (Location(loc), size))
        .map_err(|_| bad())
}

/// What a document's attributes say: duration (ms), size, voice waveform, GIF-like animation.
#[derive(Debug, Default, PartialEq)]
struct DocInfo {
    voice: bool,
    animated: bool,
    duration_ms: Option<u64>,
    width: Option<u32>,
    height: Option<u32>,
    waveform: Option<Vec<u16>>,
}

fn doc_info(attributes: &[tl::enums::DocumentAttribute]) -> DocInfo {
    let mut info = DocInfo::default();
    for attribute in attributes {
        match attribute {
            tl::enums::DocumentAttribute::Audio(a) => {
                info.voice |= a.voice;
                info.duration_ms = u64::try_from(a.duration).ok().map(|s| s * 1000);
                info.waveform = a.waveform.as_deref().map(decode_waveform);
            }
            tl::enums::DocumentAttribute::Video(v) => {
                if v.duration.is_finite() && v.duration >= 0.0 {
                    info.duration_ms = Some((v.duration * 1000.0) as u64);
                }
                info.width = u32::try_from(v.w).ok();
                info.height = u32::try_from(v.h).ok();
            }
            tl::enums::DocumentAttribute::ImageSize(i) => {
                info.width = u32::try_from(i.w).ok();
                info.height = u32::try_from(i.h).ok();
            }
            tl::enums::DocumentAttribute::Animated => info.animated = true,
            _ => {}
        }
    }
    info
}

/// Telegram's voice waveform (5-bit samples, packed little-endian) as MSC3246 values 0..=1024.
pub fn decode_waveform(packed: &[u8]) -> Vec<u16> {
    let count = packed.len() * 8 / 5;
    (0..count)
        .map(|i| {
            let bit = i * 5;
            let (byte, shift) = (bit / 8, bit % 8);
            let low = u16::from(packed[byte]);
            let high = packed.get(byte + 1).copied().map_or(0, u16::from);
            let sample = ((low | (high << 8)) >> shift) & 0x1f;
            sample * 1024 / 31
        })
        .collect()
}

/// MSC3246 values 0..=1024 as Telegram's packed 5-bit waveform.
pub fn encode_waveform(samples: &[u16]) -> Vec<u8> {
    let mut out = vec![0u8; (samples.len() * 5).div_ceil(8)];
    for (i, sample) in samples.iter().enumerate() {
        let value = (u32::from((*sample).min(1024)) * 31 / 1024) as u16;
        let bit = i * 5;
        let (byte, shift) = (bit / 8, bit % 8);
        let spread = value << shift;
        out[byte] |= (spread & 0xff) as u8;
        if let Some(next) = out.get_mut(byte + 1) {
            *next |= (spread >> 8) as u8;
        }
    }
    out
}

fn kind_of(doc: &grammers_client::media::Document, mime: &str, info: &DocInfo) -> MediaKind {
    if doc.raw.voice || info.voice {
        MediaKind::Voice
    } else if info.animated || mime == "image/gif" {
        MediaKind::Animation
    } else if mime.starts_with("image/") {
        MediaKind::Image
    } else if mime.starts_with("video/") || doc.raw.video || doc.raw.round {
        MediaKind::Video
    } else if mime.starts_with("audio/") {
        MediaKind::Audio
    } else {
        MediaKind::File
    }
}

/// The neutral content of a Telegram message: text, or media with the text as caption. Media
/// ids name the message they came from (see [`origin_of`]).
pub fn content_of(message: &grammers_client::message::Message) -> MessageContent {
    let mut content = content_without_origin(message);
    if let (MessageContent::Media { media, .. }, Some(chat)) =
        (&mut content, super::ids::chat_id(message.peer_id()))
    {
        media.id = format!("{}@{chat}:{}", media.id, message.id());
    }
    content
}

fn content_without_origin(message: &grammers_client::message::Message) -> MessageContent {
    let entities = message
        .fmt_entities()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let text = from_telegram(message.text(), entities);
    let caption = (!text.text.is_empty()).then(|| text.clone());
    match message.media() {
        Some(TgMedia::Photo(photo)) => match photo.to_raw_input_location() {
            Some(loc) => MessageContent::Media {
                media: Media {
                    id: encode_location(&loc, None),
                    kind: MediaKind::Image,
                    name: format!("photo_{}.jpg", photo.id()),
                    content_type: "image/jpeg".into(),
                    size: photo.size().unwrap_or(0) as u64,
                    width: None,
                    height: None,
                    duration_ms: None,
                    waveform: None,
                },
                caption,
            },
            None => MessageContent::Text(text),
        },
        Some(TgMedia::Document(doc)) => match doc.to_raw_input_location() {
            Some(loc) => {
                let mime = doc
                    .mime_type()
                    .unwrap_or("application/octet-stream")
                    .to_owned();
                let info = doc_info(attributes(&doc));
                let kind = kind_of(&doc, &mime, &info);
                let name = doc
                    .name()
                    .filter(|n| !n.is_empty())
                    .map_or_else(|| default_name(kind, &mime), str::to_owned);
                MessageContent::Media {
                    media: Media {
                        id: encode_location(&loc, doc.size().and_then(|s| u64::try_from(s).ok())),
                        kind,
                        name,
                        content_type: mime,
                        size: doc.size().unwrap_or(0) as u64,
                        width: info.width,
                        height: info.height,
                        duration_ms: info.duration_ms,
                        waveform: info.waveform,
                    },
                    caption,
                }
            }
            None => MessageContent::Text(text),
        },
        Some(TgMedia::Sticker(sticker)) => sticker_content(&sticker, text),
        Some(TgMedia::Poll(poll)) => MessageContent::Text(poll_text(&poll.raw, &poll.raw_results)),
        Some(TgMedia::Geo(geo)) => MessageContent::Location {
            latitude: geo.latitue(),
            longitude: geo.longitude(),
            name: None,
        },
        Some(TgMedia::Contact(c)) => MessageContent::Contact {
            name: format!("{} {}", c.first_name(), c.last_name())
                .trim()
                .to_owned(),
            phone: Some(c.phone_number().to_owned()).filter(|p| !p.is_empty()),
            user: None,
        },
        _ => MessageContent::Text(text),
    }
}

fn attributes(doc: &grammers_client::media::Document) -> &[tl::enums::DocumentAttribute] {
    match &doc.raw.document {
        Some(tl::enums::Document::Document(d)) => &d.attributes,
        _ => &[],
    }
}

fn default_name(kind: MediaKind, mime: &str) -> String {
    let ext = mime.split('/').nth(1).unwrap_or("bin");
    let ext = match ext {
        "ogg" | "opus" => "ogg",
        "mpeg" => "mp3",
        "quicktime" => "mov",
        "x-tgsticker" => "tgs",
        other => other,
    };
    let stem = match kind {
        MediaKind::Voice => "voice",
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
        MediaKind::Animation => "animation",
        MediaKind::Sticker => "sticker",
        MediaKind::Image => "image",
        MediaKind::File => "file",
    };
    format!("{stem}.{ext}")
}

/// A sticker: static ones (WebP) as Matrix stickers; video stickers (WebM) as looping videos;
/// animated ones (Lottie `.tgs`, which no Matrix client plays) as their still thumbnail, or
/// their emoji when they have none.
fn sticker_content(
    sticker: &grammers_client::media::Sticker,
    text: crate::network::richtext::FormattedText,
) -> MessageContent {
    let doc = &sticker.document;
    let emoji = sticker.emoji().to_owned();
    let mime = doc.mime_type().unwrap_or("image/webp").to_owned();
    let info = doc_info(attributes(doc));
    let raw = match &doc.raw.document {
        Some(tl::enums::Document::Document(d)) => Some(d),
        _ => None,
    };
    let name = if emoji.is_empty() {
        "sticker".to_owned()
    } else {
        emoji.clone()
    };
    let media = |id: String, kind, content_type: String, size: u64| MessageContent::Media {
        media: Media {
            id,
            kind,
            name: name.clone(),
            content_type,
            size,
            width: info.width,
            height: info.height,
            duration_ms: info.duration_ms,
            waveform: None,
        },
        caption: None,
    };
    let size = doc.size().and_then(|s| u64::try_from(s).ok());
    if mime == "application/x-tgsticker" {
        // The largest still thumbnail Telegram keeps for it.
        let thumb = raw.and_then(|d| {
            d.thumbs.iter().flatten().find_map(|t| match t {
                tl::enums::PhotoSize::Size(s) => Some((s.r#type.clone(), s.size, s.w, s.h)),
                _ => None,
            })
        });
        return match (raw, thumb) {
            (Some(d), Some((kind, bytes, w, h))) => {
                let loc = tl::enums::InputFileLocation::InputDocumentFileLocation(
                    tl::types::InputDocumentFileLocation {
                        id: d.id,
                        access_hash: d.access_hash,
                        file_reference: d.file_reference.clone(),
                        thumb_size: kind,
                    },
                );
                let mut content = media(
                    encode_location(&loc, None),
                    MediaKind::Sticker,
                    "image/webp".to_owned(),
                    u64::try_from(bytes).unwrap_or(0),
                );
                if let MessageContent::Media { media, .. } = &mut content {
                    media.width = u32::try_from(w).ok();
                    media.height = u32::try_from(h).ok();
                }
                content
            }
            _ => MessageContent::text(format!("{} (animated sticker)", name)),
        };
    }
    match doc.to_raw_input_location() {
        Some(loc) => {
            let kind = if mime.starts_with("video/") {
                MediaKind::Animation
            } else {
                MediaKind::Sticker
            };
            media(encode_location(&loc, size), kind, mime, size.unwrap_or(0))
        }
        None => MessageContent::Text(text),
    }
}

/// A poll as readable text: the question, then each option (with its votes once counted).
pub fn poll_text(
    poll: &tl::types::Poll,
    results: &tl::types::PollResults,
) -> crate::network::richtext::FormattedText {
    let tl::enums::TextWithEntities::Entities(question) = &poll.question;
    let kind = if poll.quiz { "Quiz" } else { "Poll" };
    let mut out = format!("📊 {kind}: {}", question.text);
    for (i, answer) in poll.answers.iter().enumerate() {
        let (label, option) = match answer {
            tl::enums::PollAnswer::Answer(a) => (&a.text, Some(&a.option)),
            tl::enums::PollAnswer::InputPollAnswer(a) => (&a.text, None),
        };
        let tl::enums::TextWithEntities::Entities(label) = label;
        out.push_str(&format!("\n{}. {}", i + 1, label.text));
        let votes = results.results.iter().flatten().find_map(|r| {
            let tl::enums::PollAnswerVoters::Voters(r) = r;
            (Some(&r.option) == option).then_some(r.voters)
        });
        if let Some(Some(votes)) = votes {
            let unit = if votes == 1 { "vote" } else { "votes" };
            out.push_str(&format!(" — {votes} {unit}"));
        }
    }
    if poll.closed {
        out.push_str("\n(closed)");
    }
    crate::network::richtext::FormattedText::plain(out)
}

/// The InputMedia that sends an uploaded file as the right kind of Telegram document.
pub fn uploaded_document(file: tl::enums::InputFile, media: &Media) -> tl::enums::InputMedia {
    let seconds = media.duration_ms.map_or(0, |ms| ms / 1000);
    let duration = i32::try_from(seconds).unwrap_or(i32::MAX);
    let (w, h) = (
        media.width.and_then(|w| i32::try_from(w).ok()).unwrap_or(0),
        media
            .height
            .and_then(|h| i32::try_from(h).ok())
            .unwrap_or(0),
    );
    let video = |nosound| {
        tl::enums::DocumentAttribute::Video(tl::types::DocumentAttributeVideo {
            round_message: false,
            supports_streaming: true,
            nosound,
            duration: media.duration_ms.map_or(0.0, |ms| ms as f64 / 1000.0),
            w,
            h,
            preload_prefix_size: None,
            video_start_ts: None,
            video_codec: None,
        })
    };
    let audio = |voice| {
        tl::enums::DocumentAttribute::Audio(tl::types::DocumentAttributeAudio {
            voice,
            duration,
            title: None,
            performer: None,
            waveform: media
                .waveform
                .as_deref()
                .filter(|_| voice)
                .map(encode_waveform),
        })
    };
    let mut attributes = vec![tl::enums::DocumentAttribute::Filename(
        tl::types::DocumentAttributeFilename {
            file_name: media.name.clone(),
        },
    )];
    match media.kind {
        MediaKind::Voice => attributes.push(audio(true)),
        MediaKind::Audio => attributes.push(audio(false)),
        MediaKind::Video => attributes.push(video(false)),
        MediaKind::Animation => {
            attributes.push(tl::enums::DocumentAttribute::Animated);
            attributes.push(video(true));
        }
        MediaKind::Sticker => {
            attributes.push(tl::enums::DocumentAttribute::Sticker(
                tl::types::DocumentAttributeSticker {
                    mask: false,
                    alt: String::new(),
                    stickerset: tl::enums::InputStickerSet::Empty,
                    mask_coords: None,
                },
            ));
            if w > 0 && h > 0 {
                attributes.push(tl::enums::DocumentAttribute::ImageSize(
                    tl::types::DocumentAttributeImageSize { w, h },
                ));
            }
        }
        MediaKind::Image | MediaKind::File => {}
    }
    tl::enums::InputMedia::UploadedDocument(tl::types::InputMediaUploadedDocument {
        nosound_video: media.kind == MediaKind::Animation,
        force_file: media.kind == MediaKind::File,
        spoiler: false,
        file,
        thumb: None,
        mime_type: media.content_type.clone(),
        attributes,
        stickers: None,
        video_cover: None,
        video_timestamp: None,
        ttl_seconds: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waveforms_pack_and_unpack() {
        let samples: Vec<u16> = vec![0, 1024, 512, 33, 1024, 0, 0, 99, 700];
        let packed = encode_waveform(&samples);
        assert_eq!(packed.len(), (samples.len() * 5).div_ceil(8));
        let back = decode_waveform(&packed);
        // 5 bits keep 32 levels: each value comes back within one step (1024/31).
        for (a, b) in samples.iter().zip(&back) {
            assert!(a.abs_diff(*b) <= 34, "{a} -> {b}");
        }
        assert_eq!(back[1], 1024);
        assert_eq!(back[0], 0);
    }

    #[test]
    fn documents_say_duration_size_and_animation() {
        let info = doc_info(&[
            tl::enums::DocumentAttribute::Animated,
            tl::enums::DocumentAttribute::Video(tl::types::DocumentAttributeVideo {
                round_message: false,
                supports_streaming: true,
                nosound: true,
                duration: 2.5,
                w: 320,
                h: 240,
                preload_prefix_size: None,
                video_start_ts: None,
                video_codec: None,
            }),
        ]);
        assert!(info.animated && !info.voice);
        assert_eq!(
            (info.duration_ms, info.width, info.height),
            (Some(2500), Some(320), Some(240))
        );
        let voice = doc_info(&[tl::enums::DocumentAttribute::Audio(
            tl::types::DocumentAttributeAudio {
                voice: true,
                duration: 7,
                title: None,
                performer: None,
                waveform: Some(encode_waveform(&[1024, 0])),
            },
        )]);
        assert!(voice.voice);
        assert_eq!(voice.duration_ms, Some(7000));
        assert_eq!(voice.waveform.as_deref().map(|w| w[0]), Some(1024));
    }

    #[test]
    fn locations_round_trip_and_garbage_is_refused() {
        let loc = tl::enums::InputFileLocation::InputDocumentFileLocation(
            tl::types::InputDocumentFileLocation {
                id: 42,
                access_hash: -7,
                file_reference: vec![1, 2, 3],
                thumb_size: String::new(),
            },
        );
        let id = encode_location(&loc, None);
        let (Location(back), size) = decode_location(&id).expect("decodes");
        assert_eq!(size, None);
        let sized = encode_location(&loc, Some(700_000));
        assert!(sized.starts_with("tl:700000:"), "{sized}");
        let (Location(again), size) = decode_location(&sized).expect("decodes");
        assert_eq!((size, again.to_bytes()), (Some(700_000), loc.to_bytes()));
        assert_eq!(back, loc);
        let with_origin = format!("{sized}@c77:12");
        let (Location(again), size) = decode_location(&with_origin).expect("decodes");
        assert_eq!((size, again), (Some(700_000), loc));
        assert_eq!(origin_of(&with_origin), Some((ChatId::new("c77"), 12)));
        assert_eq!(origin_of(&sized), None);
        for bad in ["", "tl:", "tl:zz", "tl:abc", "doc:1", "tl:00000000"] {
            assert!(decode_location(bad).is_err(), "{bad}");
        }
    }
}
