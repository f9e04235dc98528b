//! Size limits and input checks, so no input can make the server panic or grow without bound.
//!
//! The checks live in one place so the HTTP handlers and in-process callers of
//! [`Sim`](super::Sim) get exactly the same validation.

use super::error::ApiError;
use super::model::{Contact, Entity, EntityKind, Location, Media, MessageContent};

/// Largest request body, in bytes; larger bodies are answered 413.
pub(crate) const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Largest message text, in bytes.
pub(crate) const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Largest user id, in bytes.
pub(crate) const MAX_ID_BYTES: usize = 128;
/// Largest user or group name, in bytes.
pub(crate) const MAX_NAME_BYTES: usize = 256;
/// Largest transaction id, in bytes.
pub(crate) const MAX_TXN_ID_BYTES: usize = 256;
/// Largest frame or message a client may send on the event socket, in bytes.
pub(crate) const MAX_SOCKET_FRAME_BYTES: usize = 64 * 1024;
/// Open login flows kept per user; starting another drops the oldest.
pub(crate) const MAX_OPEN_FLOWS_PER_USER: usize = 16;
/// Digits in a login code.
pub(crate) const LOGIN_CODE_LENGTH: u32 = 6;
/// Largest media upload, in bytes.
pub(crate) const MAX_MEDIA_BYTES: usize = 25 * 1024 * 1024;
/// Most bytes the media store holds in total.
pub(crate) const MAX_MEDIA_STORE_BYTES: usize = 1024 * 1024 * 1024;
/// Largest media content type, in bytes.
pub(crate) const MAX_CONTENT_TYPE_BYTES: usize = 128;
/// Most entities on one message.
pub(crate) const MAX_ENTITIES: usize = 1000;
/// Largest entity URL, in bytes.
pub(crate) const MAX_URL_BYTES: usize = 2048;
/// Largest `pre` language tag, in bytes.
pub(crate) const MAX_LANGUAGE_BYTES: usize = 64;
/// Most values in a voice message's waveform.
pub(crate) const MAX_WAVEFORM_VALUES: usize = 1024;
/// Largest contact phone number, in bytes.
pub(crate) const MAX_PHONE_BYTES: usize = 64;
/// Largest group topic, in bytes.
pub(crate) const MAX_TOPIC_BYTES: usize = 4096;
/// Largest reaction emoji, in bytes.
pub(crate) const MAX_EMOJI_BYTES: usize = 64;
/// Most distinct reactions one user has on one message.
pub(crate) const MAX_REACTIONS_PER_USER: usize = 20;
/// Messages answered by one history call when no `limit` is given.
pub(crate) const DEFAULT_HISTORY: usize = 100;
/// Most messages or events answered by one listing call.
pub(crate) const MAX_PAGE: usize = 1000;
/// What a rate-limited call is told to wait.
pub(crate) const RETRY_AFTER_MS: u64 = 200;

/// A user id: 1 to [`MAX_ID_BYTES`] bytes, no whitespace, control characters or `/` (ids appear
/// in URL paths).
pub(crate) fn user_id(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > MAX_ID_BYTES {
        return Err(ApiError::bad_request(format!(
            "`{field}` must be 1 to {MAX_ID_BYTES} bytes long"
        )));
    }
    if value
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    {
        return Err(ApiError::bad_request(format!(
            "`{field}` must not contain whitespace, control characters or `/`"
        )));
    }
    Ok(())
}

/// A display name: at most [`MAX_NAME_BYTES`] bytes, no control characters.
pub(crate) fn name(field: &str, value: &str) -> Result<(), ApiError> {
    if value.len() > MAX_NAME_BYTES {
        return Err(ApiError::bad_request(format!(
            "`{field}` must be at most {MAX_NAME_BYTES} bytes long"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "`{field}` must not contain control characters"
        )));
    }
    Ok(())
}

/// A message text: at most [`MAX_TEXT_BYTES`] bytes.
pub(crate) fn text(value: &str) -> Result<(), ApiError> {
    if value.len() > MAX_TEXT_BYTES {
        return Err(ApiError::bad_request(format!(
            "`text` must be at most {MAX_TEXT_BYTES} bytes long"
        )));
    }
    Ok(())
}

/// A transaction id: 1 to [`MAX_TXN_ID_BYTES`] bytes.
pub(crate) fn txn_id(value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > MAX_TXN_ID_BYTES {
        return Err(ApiError::bad_request(format!(
            "`txn_id` must be 1 to {MAX_TXN_ID_BYTES} bytes long"
        )));
    }
    Ok(())
}

/// A group topic: at most [`MAX_TOPIC_BYTES`] bytes, no control characters but newlines.
pub(crate) fn topic(value: &str) -> Result<(), ApiError> {
    if value.len() > MAX_TOPIC_BYTES {
        return Err(ApiError::bad_request(format!(
            "`topic` must be at most {MAX_TOPIC_BYTES} bytes long"
        )));
    }
    if value.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ApiError::bad_request(
            "`topic` must not contain control characters other than newlines",
        ));
    }
    Ok(())
}

/// A media content type: 1 to [`MAX_CONTENT_TYPE_BYTES`] visible ASCII characters (so it is a
/// valid header value when the media is served).
pub(crate) fn content_type(value: &str) -> Result<(), ApiError> {
    if value.is_empty()
        || value.len() > MAX_CONTENT_TYPE_BYTES
        || !value.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
    {
        return Err(ApiError::bad_request(format!(
            "`Content-Type` must be 1 to {MAX_CONTENT_TYPE_BYTES} visible ASCII characters"
        )));
    }
    Ok(())
}

/// A reaction emoji: 1 to [`MAX_EMOJI_BYTES`] bytes, no whitespace or control characters.
pub(crate) fn emoji(value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > MAX_EMOJI_BYTES {
        return Err(ApiError::bad_request(format!(
            "an emoji must be 1 to {MAX_EMOJI_BYTES} bytes long"
        )));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ApiError::bad_request(
            "an emoji must not contain whitespace or control characters",
        ));
    }
    Ok(())
}

/// Everything about a message's content that can be checked without the state: the text, the
/// entities against it, at most one attachment, and each attachment's fields. References (the
/// reply target, the media id) are checked by the state.
pub(crate) fn content(content: &MessageContent) -> Result<(), ApiError> {
    text(&content.text)?;
    entities(&content.text, &content.entities)?;
    let attachments = [
        content.media.is_some(),
        content.location.is_some(),
        content.contact.is_some(),
    ];
    if attachments.into_iter().filter(|&given| given).count() > 1 {
        return Err(ApiError::bad_request(
            "a message has at most one of `media`, `location` and `contact`",
        ));
    }
    if (content.location.is_some() || content.contact.is_some()) && !content.text.is_empty() {
        return Err(ApiError::bad_request(
            "a `location` or `contact` message has no `text`",
        ));
    }
    if let Some(media) = &content.media {
        self::media(media)?;
    }
    if let Some(location) = &content.location {
        self::location(location)?;
    }
    if let Some(contact) = &content.contact {
        self::contact(contact)?;
    }
    Ok(())
}

/// Entities of `text`: at most [`MAX_ENTITIES`], each inside the text (counted in chars) and with
/// exactly the extra fields its type allows.
pub(crate) fn entities(text: &str, entities: &[Entity]) -> Result<(), ApiError> {
    if entities.len() > MAX_ENTITIES {
        return Err(ApiError::bad_request(format!(
            "a message has at most {MAX_ENTITIES} entities"
        )));
    }
    if entities.is_empty() {
        return Ok(());
    }
    let chars = text.chars().count() as u64;
    for (index, entity) in entities.iter().enumerate() {
        let end = entity.offset.checked_add(entity.length);
        if entity.length == 0 || end.is_none_or(|end| end > chars) {
            return Err(ApiError::bad_request(format!(
                "entity {index} must have a length of at least 1 and end within the text \
                 ({chars} characters)"
            )));
        }
        let wrong = |field: &str| {
            ApiError::bad_request(format!(
                "entity {index}: `{field}` is not allowed on a `{}` entity",
                entity.kind.as_str()
            ))
        };
        match (entity.kind, &entity.url) {
            (EntityKind::Link, None) => {
                return Err(ApiError::bad_request(format!(
                    "entity {index}: a `link` needs a `url`"
                )));
            }
            (EntityKind::Link, Some(url)) if url.is_empty() || url.len() > MAX_URL_BYTES => {
                return Err(ApiError::bad_request(format!(
                    "entity {index}: `url` must be 1 to {MAX_URL_BYTES} bytes long"
                )));
            }
            (EntityKind::Link, Some(_)) | (_, None) => {}
            (_, Some(_)) => return Err(wrong("url")),
        }
        match (entity.kind, &entity.user_id) {
            (EntityKind::Mention, None) => {
                return Err(ApiError::bad_request(format!(
                    "entity {index}: a `mention` needs a `user_id`"
                )));
            }
            (EntityKind::Mention, Some(id)) => user_id("user_id", id)?,
            (_, None) => {}
            (_, Some(_)) => return Err(wrong("user_id")),
        }
        match (entity.kind, &entity.language) {
            (EntityKind::Pre, Some(language)) if language.len() > MAX_LANGUAGE_BYTES => {
                return Err(ApiError::bad_request(format!(
                    "entity {index}: `language` must be at most {MAX_LANGUAGE_BYTES} bytes long"
                )));
            }
            (EntityKind::Pre, _) | (_, None) => {}
            (_, Some(_)) => return Err(wrong("language")),
        }
    }
    Ok(())
}

fn media(media: &Media) -> Result<(), ApiError> {
    name("media.name", &media.name)?;
    if media
        .waveform
        .as_ref()
        .is_some_and(|waveform| waveform.len() > MAX_WAVEFORM_VALUES)
    {
        return Err(ApiError::bad_request(format!(
            "`media.waveform` has at most {MAX_WAVEFORM_VALUES} values"
        )));
    }
    Ok(())
}

fn location(location: &Location) -> Result<(), ApiError> {
    if !(-90.0..=90.0).contains(&location.lat) || !(-180.0..=180.0).contains(&location.lon) {
        return Err(ApiError::bad_request(
            "`location.lat` must be in -90..=90 and `location.lon` in -180..=180",
        ));
    }
    if let Some(place) = &location.name {
        name("location.name", place)?;
    }
    Ok(())
}

fn contact(contact: &Contact) -> Result<(), ApiError> {
    if contact.name.is_empty() {
        return Err(ApiError::bad_request("`contact.name` must not be empty"));
    }
    name("contact.name", &contact.name)?;
    if let Some(phone) = &contact.phone
        && (phone.len() > MAX_PHONE_BYTES || phone.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request(format!(
            "`contact.phone` must be at most {MAX_PHONE_BYTES} bytes without control characters"
        )));
    }
    if let Some(id) = &contact.user_id {
        user_id("contact.user_id", id)?;
    }
    Ok(())
}
