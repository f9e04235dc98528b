//! [`SimServer`]: the sim server running on a spawned tokio task, started and stopped by tests,
//! the demo and the `testnet sim` command.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::router::router;
use super::state::Sim;

/// How long [`SimServer::shutdown`] waits for open requests before aborting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running sim server. Dropping it without [`SimServer::shutdown`] aborts it.
#[derive(Debug)]
pub struct SimServer {
    addr: SocketAddr,
    sim: Arc<Sim>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl SimServer {
    /// Binds `addr` (e.g. `"127.0.0.1:0"` for any free port) and starts serving an empty network.
    pub async fn start(addr: &str) -> anyhow::Result<SimServer> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let addr = listener
            .local_addr()
            .context("cannot read the bound address")?;
        let sim = Arc::new(Sim::new());
        let app = router(Arc::clone(&sim));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                // A dropped sender also stops the server.
                let _ = stopped.await;
            });
            if let Err(error) = serve.await {
                tracing::error!(%error, "sim server failed");
            }
        });
        tracing::info!(%addr, "sim server started");
        Ok(SimServer {
            addr,
            sim,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL, e.g. `http://127.0.0.1:29399`; a wildcard address is given as loopback.
    pub fn url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, self.addr.port()))
    }

    /// The network's state, for in-process inspection and set-up.
    pub fn sim(&self) -> &Arc<Sim> {
        &self.sim
    }

    /// Closes every event socket, stops accepting connections, lets open requests finish (for
    /// a few seconds at most) and returns when the server is gone.
    pub async fn shutdown(mut self) {
        self.sim.shut_down();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
        {
            tracing::warn!("sim server did not stop in time; aborting it");
            task.abort();
        }
        tracing::info!(addr = %self.addr, "sim server stopped");
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            self.sim.shut_down();
            task.abort();
        }
    }
}
