//! Serving a stored file: its bytes streamed in chunks straight out of the stored buffer.
//!
//! The chunks are slices of the one reference-counted buffer the media store holds, so a
//! download never copies the file, however large it is or however many clients fetch it.

use axum::body::{Body, Bytes};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use futures_util::stream;

use super::state::StoredMedia;

/// Bytes per streamed chunk.
const CHUNK: usize = 256 * 1024;

/// The answer to a media download: the bytes with their `Content-Type` and `Content-Length`.
pub(crate) fn media_response(media: StoredMedia) -> Response {
    let StoredMedia { content_type, data } = media;
    let length = data.len();
    let chunks = (0..length).step_by(CHUNK).map(move |start| {
        Ok::<Bytes, std::convert::Infallible>(data.slice(start..(start + CHUNK).min(length)))
    });
    (
        [
            (CONTENT_TYPE, content_type),
            (CONTENT_LENGTH, length.to_string()),
        ],
        Body::from_stream(stream::iter(chunks)),
    )
        .into_response()
}
