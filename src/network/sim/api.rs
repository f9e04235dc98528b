//! HTTP calls to the sim server's client API.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{Value as JsonValue, json};

use futures_util::{StreamExt, TryStreamExt};

use super::wire::{
    Chat, ChatList, ErrorBody, LoginFinished, LoginStarted, MediaInfo, Message, User,
};
use crate::network::{MediaStream, NetworkError, NetworkId};

pub const SIM: NetworkId = NetworkId::new("sim");

/// A client for one server, optionally authenticated. The token never appears in errors.
#[derive(Clone)]
pub struct SimApi {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl SimApi {
    pub fn new(http: reqwest::Client, base: &str, token: Option<String>) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
        }
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<JsonValue>,
    ) -> Result<T, NetworkError> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .timeout(Duration::from_secs(30));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| {
            NetworkError::Transient(if e.is_timeout() {
                "sim server timed out".to_owned()
            } else {
                "cannot reach the sim server".to_owned()
            })
        })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|_| NetworkError::Transient("sim server connection broke".to_owned()))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                NetworkError::Rejected(format!("unexpected answer from the sim server: {e}"))
            });
        }
        let error: Option<ErrorBody> = serde_json::from_slice(&bytes).ok();
        let message = error.as_ref().map_or_else(
            || status.to_string(),
            |e| {
                if e.message.is_empty() {
                    e.error.clone()
                } else {
                    e.message.clone()
                }
            },
        );
        Err(match status {
            StatusCode::UNAUTHORIZED if error.as_ref().is_some_and(|e| e.error == "bad_code") => {
                NetworkError::Rejected(message)
            }
            StatusCode::UNAUTHORIZED => NetworkError::LoggedOut(message),
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                NetworkError::Transient(message)
            }
            _ => NetworkError::Rejected(message),
        })
    }

    pub async fn login_start(&self, username: &str) -> Result<LoginStarted, NetworkError> {
        self.call(
            Method::POST,
            "/v1/login/start",
            Some(json!({"username": username})),
        )
        .await
    }

    pub async fn login_finish(
        &self,
        flow_id: &str,
        code: &str,
    ) -> Result<LoginFinished, NetworkError> {
        self.call(
            Method::POST,
            "/v1/login/finish",
            Some(json!({"flow_id": flow_id, "code": code})),
        )
        .await
    }

    pub async fn logout(&self) -> Result<(), NetworkError> {
        self.call::<JsonValue>(Method::POST, "/v1/logout", None)
            .await
            .map(drop)
    }

    pub async fn chats(&self) -> Result<Vec<Chat>, NetworkError> {
        Ok(self
            .call::<ChatList>(Method::GET, "/v1/chats", None)
            .await?
            .chats)
    }

    pub async fn chat(&self, id: &str) -> Result<Chat, NetworkError> {
        self.call(Method::GET, &format!("/v1/chats/{}", encode(id)), None)
            .await
    }

    pub async fn user(&self, id: &str) -> Result<User, NetworkError> {
        self.call(Method::GET, &format!("/v1/users/{}", encode(id)), None)
            .await
    }

    pub async fn send(
        &self,
        chat: &str,
        txn_id: &str,
        mut body: JsonValue,
    ) -> Result<Message, NetworkError> {
        body["txn_id"] = json!(txn_id);
        self.call(
            Method::POST,
            &format!("/v1/chats/{}/messages", encode(chat)),
            Some(body),
        )
        .await
    }

    pub async fn edit(
        &self,
        chat: &str,
        message: &str,
        body: JsonValue,
    ) -> Result<(), NetworkError> {
        let path = format!("/v1/chats/{}/messages/{}", encode(chat), encode(message));
        self.call::<JsonValue>(Method::PATCH, &path, Some(body))
            .await
            .map(drop)
    }

    pub async fn delete(&self, chat: &str, message: &str) -> Result<(), NetworkError> {
        let path = format!("/v1/chats/{}/messages/{}", encode(chat), encode(message));
        self.call::<JsonValue>(Method::DELETE, &path, None)
            .await
            .map(drop)
    }

    pub async fn react(
        &self,
        chat: &str,
        message: &str,
        emoji: &str,
        remove: bool,
    ) -> Result<(), NetworkError> {
        let path = format!(
            "/v1/chats/{}/messages/{}/reactions/{}",
            encode(chat),
            encode(message),
            encode(emoji)
        );
        let method = if remove { Method::DELETE } else { Method::PUT };
        self.call::<JsonValue>(method, &path, None).await.map(drop)
    }

    pub async fn read(&self, chat: &str, up_to: &str) -> Result<(), NetworkError> {
        let path = format!("/v1/chats/{}/read", encode(chat));
        self.call::<JsonValue>(Method::POST, &path, Some(json!({"up_to": up_to})))
            .await
            .map(drop)
    }

    pub async fn typing(&self, chat: &str, typing: bool) -> Result<(), NetworkError> {
        let path = format!("/v1/chats/{}/typing", encode(chat));
        self.call::<JsonValue>(Method::POST, &path, Some(json!({"typing": typing})))
            .await
            .map(drop)
    }

    pub async fn update_chat(&self, chat: &str, body: JsonValue) -> Result<(), NetworkError> {
        self.call::<JsonValue>(
            Method::PATCH,
            &format!("/v1/chats/{}", encode(chat)),
            Some(body),
        )
        .await
        .map(drop)
    }

    pub async fn add_member(&self, chat: &str, user: &str) -> Result<(), NetworkError> {
        let path = format!("/v1/groups/{}/members", encode(chat));
        self.call::<JsonValue>(Method::POST, &path, Some(json!({"user_id": user})))
            .await
            .map(drop)
    }

    pub async fn remove_member(&self, chat: &str, user: &str) -> Result<(), NetworkError> {
        let path = format!("/v1/groups/{}/members/{}", encode(chat), encode(user));
        self.call::<JsonValue>(Method::DELETE, &path, None)
            .await
            .map(drop)
    }

    pub async fn resolve(&self, identifier: &str) -> Result<User, NetworkError> {
        self.call(
            Method::GET,
            &format!("/v1/resolve/{}", encode(identifier)),
            None,
        )
        .await
    }

    pub async fn dm(&self, user: &str) -> Result<Chat, NetworkError> {
        self.call(Method::POST, "/v1/dms", Some(json!({"user_id": user})))
            .await
    }

    pub async fn create_group(&self, name: &str, members: &[&str]) -> Result<Chat, NetworkError> {
        self.call(
            Method::POST,
            "/v1/groups",
            Some(json!({"name": name, "members": members})),
        )
        .await
    }

    /// Uploads a media body as a stream.
    pub async fn upload(&self, media: MediaStream) -> Result<String, NetworkError> {
        let mut request = self
            .http
            .post(format!("{}/v1/media", self.base))
            .timeout(Duration::from_secs(600))
            .header(reqwest::header::CONTENT_TYPE, media.content_type.as_str());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(size) = media.size {
            request = request.header(reqwest::header::CONTENT_LENGTH, size);
        }
        let body = reqwest::Body::wrap_stream(media.body.map_err(std::io::Error::other));
        let response = request.body(body).send().await.map_err(|_| {
            NetworkError::Transient("media upload to the sim server failed".to_owned())
        })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|_| NetworkError::Transient("sim server connection broke".to_owned()))?;
        if !status.is_success() {
            let error: Option<ErrorBody> = serde_json::from_slice(&bytes).ok();
            let message = error.map_or_else(|| status.to_string(), |e| e.message);
            return Err(if status.is_client_error() {
                NetworkError::Rejected(format!("the sim server refused the file: {message}"))
            } else {
                NetworkError::Transient(message)
            });
        }
        let info: MediaInfo = serde_json::from_slice(&bytes).map_err(|e| {
            NetworkError::Rejected(format!("unexpected answer from the sim server: {e}"))
        })?;
        Ok(info.id)
    }

    /// Streams a media body (attachments, avatars).
    pub async fn download(&self, id: &str) -> Result<MediaStream, NetworkError> {
        let mut request = self
            .http
            .get(format!("{}/v1/media/{}", self.base, encode(id)))
            .timeout(Duration::from_secs(600));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|_| NetworkError::Transient("cannot reach the sim server".to_owned()))?;
        if !response.status().is_success() {
            return Err(NetworkError::Rejected(format!(
                "media download failed: {}",
                response.status()
            )));
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_owned();
        let size = response.content_length();
        let body = response
            .bytes_stream()
            .map_err(|_| {
                NetworkError::Transient("media download from the sim server broke off".to_owned())
            })
            .boxed();
        Ok(MediaStream {
            content_type,
            size,
            body,
        })
    }

    /// The event socket URL (`ws://.../v1/events?since=N`).
    pub fn events_url(&self, since: i64) -> String {
        let ws = if let Some(rest) = self.base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = self.base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            self.base.clone()
        };
        format!("{ws}/v1/events?since={since}")
    }
}

/// Ids are opaque strings: percent-encode them into path segments.
fn encode(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}
