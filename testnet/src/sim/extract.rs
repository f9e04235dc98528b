//! Request extractors that fail with the protocol's JSON errors instead of axum's plain-text
//! rejections: a JSON body, a raw body, query and path parameters, and the bearer-token account
//! (plain, or spending the simulated rate limit).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::state::Sim;

/// A JSON request body. Any content type is accepted; a body that is not valid JSON of the
/// expected shape answers 400 `bad_request`, a body over the limit 413 `bad_request`.
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state).await?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|error| ApiError::bad_request(format!("invalid JSON body: {error}")))
    }
}

/// A raw body with its `Content-Type` (empty if missing or not text). The route's body limit
/// applies; a larger body answers 413 `bad_request`.
#[derive(Debug)]
pub(crate) struct RawBody {
    pub(crate) content_type: String,
    pub(crate) bytes: Bytes,
}

impl<S> FromRequest<S> for RawBody
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = read_body(req, state).await?;
        Ok(Self {
            content_type,
            bytes,
        })
    }
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        let error = ApiError::bad_request(rejection.body_text());
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => error.with_status(StatusCode::PAYLOAD_TOO_LARGE),
            _ => error,
        }
    })
}

/// The account behind the request's `Authorization: Bearer <token>`, with the token itself.
#[derive(Debug)]
pub(crate) struct Authed {
    pub(crate) account: String,
    pub(crate) token: String,
}

impl FromRequestParts<Arc<Sim>> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        sim: &Arc<Sim>,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer_token(&parts.headers)
            .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer <token>`"))?;
        let account = sim.account_for_token(token)?;
        Ok(Self {
            account,
            token: token.to_owned(),
        })
    }
}

/// The account behind the request's bearer token, for a call subject to the simulated rate
/// limit: spends one of the account's rate-limited calls (429 `rate_limited` while it lasts),
/// after the token is checked and before the path and body are.
#[derive(Debug)]
pub(crate) struct Throttled {
    pub(crate) account: String,
}

impl FromRequestParts<Arc<Sim>> for Throttled {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        sim: &Arc<Sim>,
    ) -> Result<Self, Self::Rejection> {
        let Authed { account, .. } = Authed::from_request_parts(parts, sim).await?;
        sim.take_send_allowance(&account)?;
        Ok(Self { account })
    }
}

/// Query parameters; a query that does not parse answers 400 `bad_request`.
#[derive(Debug)]
pub(crate) struct QueryParams<T>(pub(crate) T);

impl<S, T> FromRequestParts<S> for QueryParams<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(params)| QueryParams(params))
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
    }
}

/// The token of an `Authorization: Bearer <token>` header, if the request has one.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Path parameters; a path that does not decode (invalid percent-encoding or UTF-8) answers
/// 400 `bad_request`.
#[derive(Debug)]
pub(crate) struct PathParams<T>(pub(crate) T);

impl<S, T> FromRequestParts<S> for PathParams<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(params)| PathParams(params))
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
    }
}
