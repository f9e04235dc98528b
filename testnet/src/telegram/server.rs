//! [`TelegramServer`]: the MTProto TCP listener and the control API's HTTP listener.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::control;
use super::state::World;

/// Where the simulator listens.
#[derive(Debug, Clone)]
pub struct TelegramConfig {
    /// The MTProto address the sessions' DC options point at, e.g. `127.0.0.1:0`.
    pub mtproto: String,
    /// The control API's HTTP address.
    pub control: String,
}

impl Default for TelegramConfig {
    fn default() -> Self {
        Self {
            mtproto: "127.0.0.1:0".into(),
            control: "127.0.0.1:0".into(),
        }
    }
}

/// A running Telegram simulator. Dropping it aborts its tasks.
#[derive(Debug)]
pub struct TelegramServer {
    mtproto_addr: SocketAddr,
    control_addr: SocketAddr,
    world: Arc<Mutex<World>>,
    tasks: Vec<JoinHandle<()>>,
}

impl TelegramServer {
    /// Starts on free loopback ports.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(TelegramConfig::default()).await
    }

    pub async fn start_with(config: TelegramConfig) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(&config.mtproto)
            .await
            .with_context(|| format!("cannot listen on {}", config.mtproto))?;
        let mtproto_addr = listener
            .local_addr()
            .context("cannot read MTProto address")?;
        let control_listener = TcpListener::bind(&config.control)
            .await
            .with_context(|| format!("cannot listen on {}", config.control))?;
        let control_addr = control_listener
            .local_addr()
            .context("cannot read control address")?;
        let world = Arc::new(Mutex::new(World::new(mtproto_addr.port())));
        let accept_world = Arc::clone(&world);
        let accept = tokio::spawn(async move {
            let next = AtomicU64::new(1);
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        let id = next.fetch_add(1, Ordering::Relaxed);
                        tokio::spawn(super::conn::serve(Arc::clone(&accept_world), stream, id));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            }
        });
        let app = control::routes(Arc::clone(&world));
        let http = tokio::spawn(async move {
            if let Err(e) = axum::serve(control_listener, app).await {
                tracing::warn!(error = %e, "telegram control API stopped");
            }
        });
        Ok(Self {
            mtproto_addr,
            control_addr,
            world,
            tasks: vec![accept, http],
        })
    }

    /// The MTProto address (put it in the session's DC option).
    pub fn mtproto_addr(&self) -> SocketAddr {
        self.mtproto_addr
    }

    /// Base URL of the control API, e.g. `http://127.0.0.1:PORT`.
    pub fn control_url(&self) -> String {
        format!("http://{}", self.control_addr)
    }

    /// Registers an auth key the client's session already carries (the shared-key hook).
    pub fn add_auth_key(&self, key: [u8; 256]) -> i64 {
        match self.world.lock() {
            Ok(mut w) => w.add_key(key),
            Err(_) => 0,
        }
    }

    pub async fn shutdown(self) {
        if let Ok(mut w) = self.world.lock() {
            w.drop_connections(None);
        }
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for TelegramServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
