//! [`WhatsAppServer`]: the chat listener (WebSocket at `/ws/chat`, plus the media host on the
//! same port) and the control API's HTTP listener.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::control::{self, App};
use super::peer::Inbox;
use super::world::World;

/// Where the simulator listens.
#[derive(Debug, Clone)]
pub struct WhatsAppConfig {
    /// The chat address (`ws://ADDR/ws/chat`), e.g. `127.0.0.1:0`.
    pub chat: String,
    /// The control API's HTTP address.
    pub control: String,
}

impl Default for WhatsAppConfig {
    fn default() -> Self {
        Self {
            chat: "127.0.0.1:0".into(),
            control: "127.0.0.1:0".into(),
        }
    }
}

/// A running WhatsApp simulator. Dropping it aborts its tasks and the contacts' clients.
pub struct WhatsAppServer {
    chat_addr: SocketAddr,
    control_addr: SocketAddr,
    app: App,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for WhatsAppServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhatsAppServer")
            .field("chat_addr", &self.chat_addr)
            .field("control_addr", &self.control_addr)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct ChatState {
    world: Arc<Mutex<World>>,
    next: Arc<AtomicU64>,
}

async fn ws_chat(State(s): State<ChatState>, upgrade: WebSocketUpgrade) -> Response {
    let refuse = s.world.lock().map_or(true, |w| w.refuse_connections);
    if refuse {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let id = s.next.fetch_add(1, Ordering::Relaxed);
    let world = s.world.clone();
    upgrade
        .max_message_size(32 << 20)
        .on_upgrade(move |ws| super::conn::serve(world, ws, id))
}

impl WhatsAppServer {
    /// Starts on free loopback ports.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(WhatsAppConfig::default()).await
    }

    pub async fn start_with(config: WhatsAppConfig) -> anyhow::Result<Self> {
        let chat = TcpListener::bind(&config.chat)
            .await
            .with_context(|| format!("cannot listen on {}", config.chat))?;
        let chat_addr = chat.local_addr().context("cannot read chat address")?;
        let control_listener = TcpListener::bind(&config.control)
            .await
            .with_context(|| format!("cannot listen on {}", config.control))?;
        let control_addr = control_listener
            .local_addr()
            .context("cannot read control address")?;
        let mut w = World::new();
        w.media_url = format!("http://{chat_addr}");
        let world = Arc::new(Mutex::new(w));
        let app = App {
            world: world.clone(),
            inbox: Arc::new(Mutex::new(Inbox::default())),
            peers: Arc::new(tokio::sync::Mutex::new(BTreeMap::new())),
            ws_url: format!("ws://{chat_addr}/ws/chat"),
            chat_addr,
        };
        let chat_routes = Router::new()
            .route("/ws/chat", get(ws_chat))
            .with_state(ChatState {
                world: world.clone(),
                next: Arc::new(AtomicU64::new(1)),
            })
            .merge(super::media::routes(app.clone()));
        let chat_task = tokio::spawn(async move {
            if let Err(e) = axum::serve(chat, chat_routes).await {
                tracing::warn!(error = %e, "whatsapp chat listener stopped");
            }
        });
        let control_routes = control::routes(app.clone());
        let control_task = tokio::spawn(async move {
            if let Err(e) = axum::serve(control_listener, control_routes).await {
                tracing::warn!(error = %e, "whatsapp control API stopped");
            }
        });
        Ok(Self {
            chat_addr,
            control_addr,
            app,
            tasks: vec![chat_task, control_task],
        })
    }

    /// The URL a client's transport connects to (`TokioWebSocketTransportFactory::with_url`).
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws/chat", self.chat_addr)
    }

    pub fn chat_addr(&self) -> SocketAddr {
        self.chat_addr
    }

    /// Base URL of the control API, e.g. `http://127.0.0.1:PORT`.
    pub fn control_url(&self) -> String {
        format!("http://{}", self.control_addr)
    }

    pub async fn shutdown(self) {
        for (_, mut p) in std::mem::take(&mut *self.app.peers.lock().await) {
            p.stop();
        }
        if let Ok(mut w) = self.app.world.lock() {
            w.drop_connections(None);
        }
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for WhatsAppServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
