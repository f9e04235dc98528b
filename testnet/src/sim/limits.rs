//! Size limits and input checks, so no input can make the server panic or grow without bound.
//!
//! The checks live in one place so the HTTP handlers and in-process callers of
//! [`Sim`](super::Sim) get exactly the same validation.

use super::error::ApiError;

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
