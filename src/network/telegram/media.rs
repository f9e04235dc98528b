//! Telegram media <-> the neutral model: what a message carries, ids that let the bridge fetch a
//! file later, and files uploaded ahead of the message that sends them.
//!
//! A media id is `tl:` + the hex of the file's serialized `InputFileLocation` (document or
//! photo id, access hash, file reference, size type): everything `upload.getFile` needs, so a
//! download works without the message at hand. Documents add their exact byte size
//! (`tl:<size>:<hex>`), so the download can be streamed with a known length (homeservers refuse
//! uploads without one); photos' sizes are only approximate, so they are buffered instead. [in progress: file references expire on
//! Telegram; refetching the message to refresh one is not done yet]

use grammers_client::media::{Downloadable, Media as TgMedia};
use grammers_client::tl::{self, Deserializable as _, Serializable as _};

use super::entities::from_telegram;
use crate::network::{Media, MediaKind, MessageContent, NetworkError};

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

/// The location in a media id, and the file's exact size when the id carries it.
pub fn decode_location(id: &str) -> Result<(Location, Option<u64>), NetworkError> {
    let bad = || NetworkError::Rejected(format!("{id} is not a Telegram media id"));
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

fn kind_of(doc: &grammers_client::media::Document, mime: &str) -> MediaKind {
    let voice = doc.raw.voice
        || matches!(&doc.raw.document, Some(tl::enums::Document::Document(d))
            if d.attributes.iter().any(|a| matches!(a, tl::enums::DocumentAttribute::Audio(x) if x.voice)));
    if voice {
        MediaKind::Voice
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

/// The neutral content of a Telegram message: text, or media with the text as caption.
pub fn content_of(message: &grammers_client::message::Message) -> MessageContent {
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
                MessageContent::Media {
                    media: Media {
                        id: encode_location(&loc, doc.size().and_then(|s| u64::try_from(s).ok())),
                        kind: kind_of(&doc, &mime),
                        name: doc.name().unwrap_or("file").to_owned(),
                        content_type: mime,
                        size: doc.size().unwrap_or(0) as u64,
                        width: None,
                        height: None,
                        duration_ms: None,
                        waveform: None,
                    },
                    caption,
                }
            }
            None => MessageContent::Text(text),
        },
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

#[cfg(test)]
mod tests {
    use super::*;

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
        for bad in ["", "tl:", "tl:zz", "tl:abc", "doc:1", "tl:00000000"] {
            assert!(decode_location(bad).is_err(), "{bad}");
        }
    }
}
