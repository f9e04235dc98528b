//! Client-server API calls made by the appservice, as the bot or as a ghost (`?user_id=`).
//!
//! Requests are ruma's typed endpoint definitions; this module adds the appservice token, the
//! identity assertion, and the retry policy: 429 waits `retry_after_ms`, 5xx and connection
//! errors back off exponentially (capped), everything else fails at once. Retries stop after the
//! configured deadline so a broken homeserver cannot wedge a portal forever.

use std::{borrow::Cow, collections::BTreeSet, sync::Arc, time::Duration};

use ruma::{
    DeviceId, UserId,
    api::{
        AppserviceUserIdentity, IncomingResponse, MatrixVersion, OutgoingRequest,
        OutgoingRequestAppserviceExt, SupportedVersions, auth_scheme::SendAccessToken,
        path_builder::VersionHistory,
    },
};
use tokio::time::{Instant, sleep};

use crate::metrics::Metrics;

/// Why a homeserver request failed.
#[derive(Debug, thiserror::Error)]
pub enum MatrixError {
    /// The homeserver answered with an error; `errcode` is the Matrix error code.
    #[error("homeserver refused the request: {status} {errcode}: {message}")]
    Api {
        status: u16,
        errcode: String,
        message: String,
    },
    /// The homeserver could not be reached or kept failing until the retry deadline.
    #[error("homeserver unavailable: {0}")]
    Unavailable(String),
    #[error("cannot build request: {0}")]
    Request(String),
    #[error("cannot read homeserver response: {0}")]
    Response(String),
}

impl MatrixError {
    pub fn errcode(&self) -> Option<&str> {
        match self {
            Self::Api { errcode, .. } => Some(errcode),
            _ => None,
        }
    }
}

pub type Result<T, E = MatrixError> = std::result::Result<T, E>;

/// The appservice's HTTP client for the homeserver. Cheap to clone.
#[derive(Clone)]
pub struct MatrixClient {
    http: reqwest::Client,
    base_url: String,
    as_token: Arc<str>,
    versions: Arc<SupportedVersions>,
    max_retry: Duration,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for MatrixClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("MatrixClient")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl MatrixClient {
    pub fn new(base_url: &str, as_token: &str, max_retry: Duration, metrics: Arc<Metrics>) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .pool_max_idle_per_host(64)
            .build()
            .expect("static client configuration");
        let versions = SupportedVersions {
            versions: BTreeSet::from([MatrixVersion::V1_11]),
            features: BTreeSet::new(),
        };
        Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            as_token: as_token.into(),
            versions: Arc::new(versions),
            max_retry,
            metrics,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The appservice token, for the raw (streamed) media requests in `media.rs`.
    pub(super) fn token(&self) -> &str {
        &self.as_token
    }

    /// Sends a typed request, as `user` when given (else as the bot).
    pub async fn send<R>(&self, request: R, user: Option<&UserId>) -> Result<R::IncomingResponse>
    where
        R: OutgoingRequest<PathBuilder = VersionHistory>,
        for<'a> R::Authentication:
            ruma::api::auth_scheme::AuthScheme<Input<'a> = SendAccessToken<'a>>,
    {
        self.send_as_device(request, user, None).await
    }

    /// Sends a typed request as `user` and, when given, one of its devices (identity
    /// assertion, Matrix 1.17: `?user_id=&device_id=`). Key uploads and to-device messages
    /// need the device.
    pub async fn send_as_device<R>(
        &self,
        request: R,
        user: Option<&UserId>,
        device: Option<&DeviceId>,
    ) -> Result<R::IncomingResponse>
    where
        R: OutgoingRequest<PathBuilder = VersionHistory>,
        for<'a> R::Authentication:
            ruma::api::auth_scheme::AuthScheme<Input<'a> = SendAccessToken<'a>>,
    {
        let mut identity = AppserviceUserIdentity::default();
        identity.user_id = user;
        identity.device_id = device;
        let started = Instant::now();
        let kind = std::any::type_name::<R>()
            .rsplit("::")
            .nth(2)
            .unwrap_or("other");
        let http_request = request
            .try_into_http_request_with_identity::<Vec<u8>>(
                &self.base_url,
                SendAccessToken::Always(&self.as_token),
                identity,
                Cow::Borrowed(&*self.versions),
            )
            .map_err(|e| MatrixError::Request(e.to_string()))?;
        let response = self.execute(http_request).await;
        self.metrics
            .hs_request_seconds
            .with_label_values(&[kind])
            .observe(started.elapsed().as_secs_f64());
        let response = response?;
        R::IncomingResponse::try_from_http_response(response)
            .map_err(|e| MatrixError::Response(e.to_string()))
    }

    /// Sends a JSON request to a client-server path (for calls ruma's typed requests do not
    /// cover as the appservice, such as appservice login). `query` is URL-encoded here.
    pub async fn send_json(
        &self,
        method: http::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let mut url = url::Url::parse(&format!("{}{path}", self.base_url))
            .map_err(|e| MatrixError::Request(e.to_string()))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let body = match body {
            Some(body) => {
                serde_json::to_vec(body).map_err(|e| MatrixError::Request(e.to_string()))?
            }
            None => Vec::new(),
        };
        let request = http::Request::builder()
            .method(method)
            .uri(url.as_str())
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.as_token),
            )
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .map_err(|e| MatrixError::Request(e.to_string()))?;
        let response = self.execute(request).await?;
        if response.body().is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(response.body()).map_err(|e| MatrixError::Response(e.to_string()))
    }

    /// Runs one HTTP request with the retry policy. Non-success answers become `MatrixError::Api`.
    pub async fn execute(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>> {
        let deadline = Instant::now() + self.max_retry;
        let mut backoff = Duration::from_millis(250);
        loop {
            let req = clone_request(&request);
            let outcome = self.execute_once(req).await;
            let wait = match &outcome {
                Ok(resp) if resp.status().is_success() => return outcome,
                Ok(resp) if resp.status().as_u16() == 429 => {
                    self.metrics
                        .hs_retries
                        .with_label_values(&["ratelimited"])
                        .inc();
                    retry_after(resp).unwrap_or(backoff)
                }
                Ok(resp) if matches!(resp.status().as_u16(), 500 | 502 | 503 | 504) => {
                    self.metrics
                        .hs_retries
                        .with_label_values(&["server_error"])
                        .inc();
                    backoff
                }
                Ok(resp) => return Err(api_error(resp)),
                Err(_) => {
                    self.metrics
                        .hs_retries
                        .with_label_values(&["connection"])
                        .inc();
                    backoff
                }
            };
            if Instant::now() + wait > deadline {
                return match outcome {
                    Ok(resp) => Err(api_error(&resp)),
                    Err(err) => Err(err),
                };
            }
            tracing::debug!(
                path = request.uri().path(),
                ?wait,
                "retrying homeserver request"
            );
            sleep(wait).await;
            backoff = (backoff * 2).min(Duration::from_secs(15));
        }
    }

    async fn execute_once(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>> {
        let (parts, body) = request.into_parts();
        let url = parts.uri.to_string();
        let response = self
            .http
            .request(parts.method, &url)
            .headers(parts.headers)
            .body(body)
            .send()
            .await
            .map_err(|e| MatrixError::Unavailable(describe_reqwest(&e)))?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| MatrixError::Unavailable(describe_reqwest(&e)))?;
        let mut out = http::Response::new(bytes.to_vec());
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        Ok(out)
    }
}

fn clone_request(request: &http::Request<Vec<u8>>) -> http::Request<Vec<u8>> {
    let mut out = http::Request::new(request.body().clone());
    *out.method_mut() = request.method().clone();
    *out.uri_mut() = request.uri().clone();
    *out.headers_mut() = request.headers().clone();
    out
}

/// reqwest's errors include the URL, which may carry `user_id` but never the token (it is in a
/// header); still, keep messages short and free of query strings.
fn describe_reqwest(err: &reqwest::Error) -> String {
    let kind = if err.is_connect() {
        "cannot connect"
    } else if err.is_timeout() {
        "timed out"
    } else {
        "request failed"
    };
    match err.url() {
        Some(url) => format!("{kind} ({} {})", url.host_str().unwrap_or(""), url.path()),
        None => kind.to_owned(),
    }
}

fn retry_after(resp: &http::Response<Vec<u8>>) -> Option<Duration> {
    let body: serde_json::Value = serde_json::from_slice(resp.body()).ok()?;
    let ms = body
        .get("retry_after_ms")
        .and_then(serde_json::Value::as_u64)
        .or_else(|| {
            resp.headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .map(|s| s * 1000)
        })?;
    Some(Duration::from_millis(ms.min(300_000)))
}

fn api_error(resp: &http::Response<Vec<u8>>) -> MatrixError {
    let body: serde_json::Value = serde_json::from_slice(resp.body()).unwrap_or_default();
    MatrixError::Api {
        status: resp.status().as_u16(),
        errcode: body
            .get("errcode")
            .and_then(|v| v.as_str())
            .unwrap_or("M_UNKNOWN")
            .to_owned(),
        message: body
            .get("error")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .chars()
            .take(300)
            .collect(),
    }
}
