//! History sync after linking. Filled in below.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::control::App;

pub async fn push(State(_app): State<App>) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    Err((
        StatusCode::NOT_IMPLEMENTED,
        Json(json!({ "error": "history sync is not implemented yet" })),
    ))
}
