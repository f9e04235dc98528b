//! Media: the simulator's media host (upload and download of encrypted blobs). Filled in below.

use std::sync::Arc;

use axum::Json;
use axum::http::StatusCode;
use serde_json::{Value, json};
use wacore_binary::Jid;

use super::control::App;

#[allow(clippy::too_many_arguments)]
pub async fn send_media(
    _app: &App,
    _client: &Arc<whatsapp_rust::Client>,
    _to: &Jid,
    _kind: &str,
    _data: &Option<String>,
    _mimetype: &Option<String>,
    _file_name: &Option<String>,
    _caption: &str,
) -> Result<String, (StatusCode, Json<Value>)> {
    Err((
        StatusCode::NOT_IMPLEMENTED,
        Json(json!({ "error": "media is not implemented yet" })),
    ))
}

pub fn routes(app: App) -> axum::Router {
    axum::Router::new().with_state(app)
}
