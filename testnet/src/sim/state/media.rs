//! The one media store: avatars, group pictures and message attachments.
//!
//! Bytes are kept as reference-counted [`Bytes`], so serving a download hands out the stored
//! buffer itself: a file is never held twice, however many clients fetch it at once.

use std::collections::BTreeMap;

use axum::body::Bytes;

use super::Sim;
use crate::sim::error::ApiError;
use crate::sim::limits;
use crate::sim::model::MediaInfo;

/// A stored file: its content type and bytes (cheap to clone: the bytes are shared).
#[derive(Debug, Clone)]
pub struct StoredMedia {
    pub content_type: String,
    pub data: Bytes,
}

#[derive(Debug, Default)]
pub(super) struct MediaStore {
    items: BTreeMap<String, StoredMedia>,
    /// Numbers ids; never reused.
    created: u64,
    /// Bytes held, bounded by [`limits::MAX_MEDIA_STORE_BYTES`].
    total: usize,
}

impl MediaStore {
    /// Stores a file under a new id `<prefix><N>`. The caller has checked the content type.
    pub(super) fn insert(
        &mut self,
        prefix: &str,
        content_type: &str,
        data: Bytes,
    ) -> Result<MediaInfo, ApiError> {
        let total = self.total.saturating_add(data.len());
        if total > limits::MAX_MEDIA_STORE_BYTES {
            return Err(ApiError::bad_request("the media store is full")
                .with_status(axum::http::StatusCode::PAYLOAD_TOO_LARGE));
        }
        self.total = total;
        self.created += 1;
        let id = format!("{prefix}{}", self.created);
        let info = MediaInfo {
            id: id.clone(),
            size: data.len() as u64,
            content_type: content_type.to_owned(),
        };
        let item = StoredMedia {
            content_type: content_type.to_owned(),
            data,
        };
        self.items.insert(id, item);
        Ok(info)
    }

    pub(super) fn get(&self, id: &str) -> Option<&StoredMedia> {
        self.items.get(id)
    }
}

impl Sim {
    /// Stores an uploaded file: at least one byte, at most 25 MiB, with a content type.
    pub fn upload_media(
        &self,
        content_type: &str,
        data: impl Into<Bytes>,
    ) -> Result<MediaInfo, ApiError> {
        let data = data.into();
        limits::content_type(content_type)?;
        if data.is_empty() {
            return Err(ApiError::bad_request("an upload needs some bytes"));
        }
        if data.len() > limits::MAX_MEDIA_BYTES {
            return Err(ApiError::bad_request(format!(
                "an upload is at most {} bytes",
                limits::MAX_MEDIA_BYTES
            ))
            .with_status(axum::http::StatusCode::PAYLOAD_TOO_LARGE));
        }
        self.lock().media.insert("f", content_type, data)
    }

    /// A stored file (an upload or an avatar).
    pub fn media(&self, media_id: &str) -> Result<StoredMedia, ApiError> {
        self.lock()
            .media
            .get(media_id)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("no media `{media_id}`")))
    }
}

impl super::State {
    /// Media `id` as a message attachment or group picture names it: 400 if it does not exist.
    pub(super) fn referenced_media(&self, id: &str) -> Result<&StoredMedia, ApiError> {
        self.media
            .get(id)
            .ok_or_else(|| ApiError::bad_request(format!("no media `{id}` was uploaded")))
    }
}
