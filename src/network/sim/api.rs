//! HTTP calls to the sim server's client API.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{Value as JsonValue, json};

use super::wire::{Chat, ChatList, ErrorBody, LoginFinished, LoginStarted, Message, User};
use crate::network::{NetworkError, NetworkId};

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
        text: &str,
    ) -> Result<Message, NetworkError> {
        self.call(
            Method::POST,
            &format!("/v1/chats/{}/messages", encode(chat)),
            Some(json!({"txn_id": txn_id, "text": text})),
        )
        .await
    }

    /// An avatar image: (bytes, content type). Bounded so a hostile server cannot exhaust memory.
    pub async fn media(&self, id: &str) -> Result<(Vec<u8>, String), NetworkError> {
        const MAX_AVATAR: usize = 10 * 1024 * 1024;
        let mut request = self
            .http
            .get(format!("{}/v1/media/{}", self.base, encode(id)))
            .timeout(Duration::from_secs(60));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let mut response = request
            .send()
            .await
            .map_err(|_| NetworkError::Transient("cannot reach the sim server".to_owned()))?;
        if !response.status().is_success() {
            return Err(NetworkError::Rejected(format!(
                "avatar download failed: {}",
                response.status()
            )));
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_owned();
        let mut data = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|_| NetworkError::Transient("sim server connection broke".to_owned()))?
        {
            if data.len() + chunk.len() > MAX_AVATAR {
                return Err(NetworkError::Rejected(
                    "avatar is larger than 10 MiB".to_owned(),
                ));
            }
            data.extend_from_slice(&chunk);
        }
        Ok((data, content_type))
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
