//! The event socket, `GET /v1/events?since=N`: replays the account's log after `since`, then
//! delivers live events as they are appended.
//!
//! A socket never gets events from a queue of its own (which could overflow or drift from the
//! log): it remembers the last seq it sent, reads the next events straight from the account's
//! log and sleeps on a watch channel that the state bumps under its lock. Replay and live
//! delivery are thus the same loop, and no event is skipped or sent twice. A separate task reads
//! the client's frames so pings are answered and acks consumed even while a send is blocked.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State, rejection::QueryRejection};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use futures_util::stream::SplitStream;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::time::timeout;

use super::error::ApiError;
use super::extract::bearer_token;
use super::limits;
use super::state::{CloseReason, Sim, SocketTicket};

/// Events read from the log per lock.
const BATCH: usize = 256;
/// How long the server waits for a client to take a close frame and answer it.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The `/v1/events` route.
pub(crate) fn routes() -> Router<Arc<Sim>> {
    Router::new().route("/v1/events", get(connect))
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    #[serde(default)]
    since: u64,
    /// Fallback for clients that cannot set the `Authorization` header on a WebSocket.
    token: Option<String>,
}

/// The client's only meaningful frame. The log is kept regardless, so acks change nothing.
#[derive(Debug, Deserialize)]
struct Ack {
    ack: u64,
}

/// How a socket's delivery loop ended.
#[derive(Debug, Clone, Copy)]
enum Ending {
    Closed(CloseReason),
    ClientLeft,
    Internal,
}

async fn connect(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let token = bearer_token(&headers)
        .or(query.token.as_deref())
        .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer <token>`"))?
        .to_owned();
    sim.account_for_token(&token)?;
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::bad_request(format!(
            "expected a WebSocket upgrade: {}",
            rejection.body_text()
        ))
    })?;
    let since = query.since;
    Ok(upgrade
        .max_message_size(limits::MAX_SOCKET_FRAME_BYTES)
        .max_frame_size(limits::MAX_SOCKET_FRAME_BYTES)
        .on_upgrade(move |socket| serve(sim, socket, token, since)))
}

async fn serve(sim: Arc<Sim>, mut socket: WebSocket, token: String, since: u64) {
    // The token was checked before the upgrade; since then it may have been logged out, the
    // network taken down or the server stopped.
    let ticket = match sim.open_socket(&token) {
        Ok(ticket) => ticket,
        Err(reason) => {
            let _ = timeout(CLOSE_TIMEOUT, socket.send(close_frame(reason))).await;
            return;
        }
    };
    let _registration = Registration {
        sim: &sim,
        id: ticket.id,
    };
    let SocketTicket {
        account,
        mut changes,
        mut close,
        ..
    } = ticket;
    tracing::info!(%account, since, "event socket opened");

    let (mut sink, stream) = socket.split();
    let mut reader = tokio::spawn(read_frames(stream, account.clone()));
    let mut sent = since;
    let ending = 'deliver: loop {
        let batch = sim.next_events(&account, sent, &mut changes, BATCH);
        if batch.is_empty() {
            tokio::select! {
                reason = &mut close => {
                    break Ending::Closed(reason.unwrap_or(CloseReason::ServerShutdown));
                }
                _ = &mut reader => break Ending::ClientLeft,
                changed = changes.changed() => {
                    if changed.is_err() {
                        break Ending::Closed(CloseReason::ServerShutdown);
                    }
                }
            }
            continue;
        }
        for event in batch {
            let text = match serde_json::to_string(&event) {
                Ok(text) => text,
                Err(error) => {
                    tracing::error!(%account, %error, "cannot serialize an event");
                    break 'deliver Ending::Internal;
                }
            };
            tokio::select! {
                reason = &mut close => {
                    break 'deliver Ending::Closed(reason.unwrap_or(CloseReason::ServerShutdown));
                }
                result = sink.send(WsMessage::Text(text.into())) => {
                    if result.is_err() {
                        break 'deliver Ending::ClientLeft;
                    }
                }
            }
            sent = event.seq;
        }
    };

    let frame = match ending {
        Ending::Closed(reason) => Some(close_frame(reason)),
        Ending::Internal => Some(WsMessage::Close(Some(CloseFrame {
            code: 1011,
            reason: "internal error".into(),
        }))),
        Ending::ClientLeft => None,
    };
    if let Some(frame) = frame
        && let Ok(Ok(())) = timeout(CLOSE_TIMEOUT, sink.send(frame)).await
    {
        // Give the client a moment to answer the close handshake.
        let _ = timeout(CLOSE_TIMEOUT, &mut reader).await;
    }
    reader.abort();
    tracing::info!(%account, sent, ?ending, "event socket closed");
}

/// Reads the client's frames until it leaves: acks are logged and dropped, anything else
/// ignored. Reading is also what answers pings.
async fn read_frames(mut stream: SplitStream<WebSocket>, account: String) {
    while let Some(frame) = stream.next().await {
        match frame {
            Ok(WsMessage::Text(text)) => match serde_json::from_str::<Ack>(&text) {
                Ok(ack) => tracing::debug!(%account, ack = ack.ack, "client acked"),
                Err(_) => tracing::debug!(%account, "ignoring a client frame that is not an ack"),
            },
            Ok(WsMessage::Close(_)) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

fn close_frame(reason: CloseReason) -> WsMessage {
    let (code, text) = match reason {
        CloseReason::NetworkDown => (1001, "network down"),
        CloseReason::LoggedOut => (1008, "logged out"),
        CloseReason::ServerShutdown => (1001, "server shutting down"),
    };
    WsMessage::Close(Some(CloseFrame {
        code,
        reason: text.into(),
    }))
}

/// Takes the socket out of the state's registry however the socket ends.
struct Registration<'a> {
    sim: &'a Sim,
    id: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.sim.forget_socket(self.id);
    }
}
