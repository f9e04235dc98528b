//! Media: the simulator's media host, on the chat port. Clients upload encrypted blobs
//! (`POST /mms/{type}/{token}`, the body already AES-CBC encrypted and HMAC'd by the client) and
//! download them by `direct_path` (`GET /v/...`); the media key travels only inside the
//! end-to-end encrypted message, so the server stores ciphertext.
//!
//! whatsapp-rust builds media URLs as `https://{media_conn host}{path}`. [sim] The simulator
//! serves plain HTTP, so clients talk to it through [`SimHttpClient`], which rewrites
//! `https://` to `http://` for the simulator's host only (the contacts' clients use it; a test
//! of the bridged client plugs it in with `BotBuilder::with_http_client`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use wacore::download::MediaType;
use wacore::net::{HttpClient, HttpRequest, HttpResponse};
use wacore_binary::Jid;
use waproto::whatsapp as wa;

use super::control::App;

/// An HTTP client for whatsapp-rust that reaches the simulator's media host over plain HTTP
/// (every other URL is left alone).
pub struct SimHttpClient {
    inner: whatsapp_rust_ureq_http_client::UreqHttpClient,
    host: String,
}

impl SimHttpClient {
    /// `chat_addr`: the simulator's chat address (`WhatsAppServer::chat_addr`).
    pub fn new(chat_addr: std::net::SocketAddr) -> Self {
        Self {
            inner: whatsapp_rust_ureq_http_client::UreqHttpClient::new(),
            host: chat_addr.to_string(),
        }
    }
}

#[whatsapp_rust::async_trait]
impl HttpClient for SimHttpClient {
    async fn execute(&self, mut request: HttpRequest) -> anyhow::Result<HttpResponse> {
        let prefix = format!("https://{}/", self.host);
        if let Some(rest) = request.url.strip_prefix(&prefix) {
            request.url = format!("http://{}/{rest}", self.host);
        }
        self.inner.execute(request).await
    }
}

pub fn routes(app: App) -> Router {
    Router::new()
        .route("/mms/{kind}/{token}", post(upload))
        .route("/v/{*path}", get(download))
        .with_state(app)
}

#[derive(Deserialize)]
struct UploadQuery {
    #[serde(default)]
    resume: Option<String>,
}

async fn upload(
    State(app): State<App>,
    Path((kind, _token)): Path<(String, String)>,
    Query(q): Query<UploadQuery>,
    body: Bytes,
) -> Response {
    if q.resume.is_some() {
        // Nothing is ever partially uploaded here: start over.
        return StatusCode::NOT_FOUND.into_response();
    }
    let Ok(mut w) = app.world.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let id = w.next_id();
    let direct_path = format!("/v/t62.sim-{kind}/{id}.enc");
    let url = format!(
        "{}{direct_path}",
        w.media_url.replacen("http://", "https://", 1)
    );
    w.media.insert(direct_path.clone(), body.to_vec());
    Json(json!({ "url": url, "direct_path": direct_path })).into_response()
}

async fn download(State(app): State<App>, Path(path): Path<String>) -> Response {
    let Ok(w) = app.world.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    match w.media.get(&format!("/v/{path}")) {
        Some(blob) => blob.clone().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

type Failure = (StatusCode, Json<Value>);

fn bad(msg: impl Into<String>) -> Failure {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": msg.into() })),
    )
}

/// What `POST /control/send` asks for when it sends media.
pub struct MediaSpec<'a> {
    /// image, document, video, audio, sticker.
    pub kind: &'a str,
    pub data: Option<&'a str>,
    pub mimetype: Option<&'a str>,
    pub file_name: Option<&'a str>,
    pub caption: &'a str,
    /// video/audio: the duration in seconds.
    pub seconds: Option<u32>,
    /// audio: a voice note (`ptt`).
    pub ptt: bool,
    /// audio: the voice note's waveform (WhatsApp's 64 samples of 0-100).
    pub waveform: Option<Vec<u8>>,
    /// video: a GIF (`gif_playback`).
    pub gif: bool,
}

/// Uploads a file as a contact and sends it as an image, document, video, audio or sticker
/// message.
pub async fn send_media(
    client: &Arc<whatsapp_rust::Client>,
    to: &Jid,
    spec: MediaSpec<'_>,
) -> Result<String, Failure> {
    let data = base64::engine::general_purpose::STANDARD
        .decode(spec.data.ok_or_else(|| bad("media needs data_base64"))?)
        .map_err(|_| bad("data_base64 is not base64"))?;
    let media_type = match spec.kind {
        "image" => MediaType::Image,
        "video" => MediaType::Video,
        "audio" => MediaType::Audio,
        "sticker" => MediaType::Sticker,
        _ => MediaType::Document,
    };
    let up = client
        .upload(data, media_type, Default::default())
        .await
        .map_err(|e| {
            (
                StatusCode::BAD_GATEWAY,
                Json(json!({ "error": e.to_string() })),
            )
        })?;
    let caption = (!spec.caption.is_empty()).then(|| spec.caption.to_owned());
    let mime = |default: &str| Some(spec.mimetype.unwrap_or(default).to_owned());
    let msg = match spec.kind {
        "image" => wa::Message {
            image_message: buffa::MessageField::some(wa::message::ImageMessage {
                url: Some(up.url),
                direct_path: Some(up.direct_path),
                media_key: Some(up.media_key.to_vec()),
                file_enc_sha256: Some(up.file_enc_sha256.to_vec()),
                file_sha256: Some(up.file_sha256.to_vec()),
                file_length: Some(up.file_length),
                media_key_timestamp: Some(up.media_key_timestamp),
                mimetype: mime("image/png"),
                caption,
                ..Default::default()
            }),
            ..Default::default()
        },
        "video" => wa::Message {
            video_message: buffa::MessageField::some(wa::message::VideoMessage {
                url: Some(up.url),
                direct_path: Some(up.direct_path),
                media_key: Some(up.media_key.to_vec()),
                file_enc_sha256: Some(up.file_enc_sha256.to_vec()),
                file_sha256: Some(up.file_sha256.to_vec()),
                file_length: Some(up.file_length),
                media_key_timestamp: Some(up.media_key_timestamp),
                mimetype: mime("video/mp4"),
                seconds: spec.seconds,
                gif_playback: spec.gif.then_some(true),
                caption,
                ..Default::default()
            }),
            ..Default::default()
        },
        "audio" => wa::Message {
            audio_message: buffa::MessageField::some(wa::message::AudioMessage {
                url: Some(up.url),
                direct_path: Some(up.direct_path),
                media_key: Some(up.media_key.to_vec()),
                file_enc_sha256: Some(up.file_enc_sha256.to_vec()),
                file_sha256: Some(up.file_sha256.to_vec()),
                file_length: Some(up.file_length),
                media_key_timestamp: Some(up.media_key_timestamp),
                mimetype: mime(if spec.ptt {
                    "audio/ogg; codecs=opus"
                } else {
                    "audio/mpeg"
                }),
                seconds: spec.seconds,
                ptt: Some(spec.ptt),
                waveform: spec.waveform,
                ..Default::default()
            }),
            ..Default::default()
        },
        "sticker" => wa::Message {
            sticker_message: buffa::MessageField::some(wa::message::StickerMessage {
                url: Some(up.url),
                direct_path: Some(up.direct_path),
                media_key: Some(up.media_key.to_vec()),
                file_enc_sha256: Some(up.file_enc_sha256.to_vec()),
                file_sha256: Some(up.file_sha256.to_vec()),
                file_length: Some(up.file_length),
                media_key_timestamp: Some(up.media_key_timestamp),
                mimetype: mime("image/webp"),
                ..Default::default()
            }),
            ..Default::default()
        },
        _ => wa::Message {
            document_message: buffa::MessageField::some(wa::message::DocumentMessage {
                url: Some(up.url),
                direct_path: Some(up.direct_path),
                media_key: Some(up.media_key.to_vec()),
                file_enc_sha256: Some(up.file_enc_sha256.to_vec()),
                file_sha256: Some(up.file_sha256.to_vec()),
                file_length: Some(up.file_length),
                media_key_timestamp: Some(up.media_key_timestamp),
                mimetype: mime("application/octet-stream"),
                file_name: spec.file_name.map(str::to_owned),
                caption,
                ..Default::default()
            }),
            ..Default::default()
        },
    };
    let sent = client.send_message(to.clone(), msg).await.map_err(|e| {
        (
            StatusCode::BAD_GATEWAY,
            Json(json!({ "error": e.to_string() })),
        )
    })?;
    Ok(sent.message_id.to_string())
}

/// Downloads and decrypts the media of a message a contact received.
pub async fn fetch_received(
    client: &Arc<whatsapp_rust::Client>,
    msg: &wa::Message,
) -> Result<Vec<u8>, Failure> {
    use wacore::proto_helpers::MessageExt as _;
    let base = msg.get_base_message();
    let result = if let Some(i) = base.image_message.as_option() {
        client.download(i).await
    } else if let Some(d) = base.document_message.as_option() {
        client.download(d).await
    } else if let Some(v) = base.video_message.as_option() {
        client.download(v).await
    } else if let Some(a) = base.audio_message.as_option() {
        client.download(a).await
    } else if let Some(s) = base.sticker_message.as_option() {
        client.download(s).await
    } else {
        return Err(bad("that message has no media"));
    };
    result.map_err(|e| {
        (
            StatusCode::BAD_GATEWAY,
            Json(json!({ "error": e.to_string() })),
        )
    })
}
