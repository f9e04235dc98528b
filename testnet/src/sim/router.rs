//! Assembles the routes: the client API behind the network switch, the control API beside it,
//! JSON answers for unknown paths and wrong methods, and the body limit.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::state::Sim;
use super::{client_api, control_api, events_ws, limits};

/// The whole HTTP surface of the sim server.
pub(crate) fn router(sim: Arc<Sim>) -> Router {
    let client = client_api::routes().merge(events_ws::routes()).route_layer(
        middleware::from_fn_with_state(Arc::clone(&sim), require_network),
    );
    client
        .merge(control_api::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limits::MAX_BODY_BYTES))
        .layer(middleware::from_fn(log_request))
        .with_state(sim)
}

/// While the network is down every client call, the event socket included, answers 503.
async fn require_network(State(sim): State<Arc<Sim>>, request: Request, next: Next) -> Response {
    if !sim.network_up() {
        return ApiError::network_down().into_response();
    }
    next.run(request).await
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::bad_request("method not allowed on this endpoint")
        .with_status(StatusCode::METHOD_NOT_ALLOWED)
}

async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    tracing::debug!(%method, %path, status = response.status().as_u16(), "request");
    response
}
