//! [`SignalServer`]: the JSON-RPC TCP listener (with its simulated outages) and the control
//! API's HTTP listener, on spawned tokio tasks.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::future::join_all;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::control;
use super::rpc::{self, Incoming, RpcError, response};
use super::state::{Conn, Fault, FaultKind, ReceiveMode, Shared, line};

/// The longest line accepted (data-URI attachments make lines long); longer closes the
/// connection after a parse error.
const MAX_LINE: u64 = 128 * 1024 * 1024;

/// How long [`SignalServer::shutdown`] waits for the tasks to end before aborting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Where the simulator listens and how it receives.
#[derive(Debug, Clone)]
pub struct SignalConfig {
    /// The JSON-RPC TCP address (`signal-cli daemon --tcp`), e.g. `127.0.0.1:0`.
    pub rpc: String,
    /// The control API's HTTP address.
    pub control: String,
    /// signal-cli's `--receive-mode`.
    pub receive_mode: ReceiveMode,
}

impl Default for SignalConfig {
    fn default() -> Self {
        SignalConfig {
            rpc: "127.0.0.1:0".to_owned(),
            control: "127.0.0.1:0".to_owned(),
            receive_mode: ReceiveMode::Manual,
        }
    }
}

/// What the connections and the control API share.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub shared: Arc<Shared>,
    /// `true` while the daemon is "gone" (no listener, no connections).
    pub outage: watch::Sender<bool>,
    /// Whether the JSON-RPC listener is bound right now (the accept loop's answer to
    /// `outage`).
    pub listening: watch::Sender<bool>,
}

impl Ctx {
    /// Switches the simulated outage and waits (a few seconds at most) until the listener
    /// follows.
    pub async fn set_outage(&self, down: bool) -> bool {
        self.outage.send_replace(down);
        if down {
            let mut state = self.shared.lock();
            state.drop_connections();
            state.links.clear();
        }
        let mut listening = self.listening.subscribe();
        tokio::time::timeout(SHUTDOWN_GRACE, listening.wait_for(|l| *l != down))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// A running signal-cli simulator. Dropping it without [`SignalServer::shutdown`] aborts it.
#[derive(Debug)]
pub struct SignalServer {
    rpc_addr: SocketAddr,
    control_addr: SocketAddr,
    ctx: Arc<Ctx>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl SignalServer {
    /// Starts the daemon simulator on `rpc_addr` (e.g. `"127.0.0.1:0"`), in `manual` receive
    /// mode, with the control API on any free loopback port.
    pub async fn start(rpc_addr: &str) -> anyhow::Result<SignalServer> {
        SignalServer::start_with(SignalConfig {
            rpc: rpc_addr.to_owned(),
            ..SignalConfig::default()
        })
        .await
    }

    /// Starts the simulator with an explicit configuration.
    pub async fn start_with(config: SignalConfig) -> anyhow::Result<SignalServer> {
        let listener = TcpListener::bind(&config.rpc)
            .await
            .with_context(|| format!("cannot listen on {}", config.rpc))?;
        let rpc_addr = listener
            .local_addr()
            .context("cannot read the bound JSON-RPC address")?;
        let control_listener = TcpListener::bind(&config.control)
            .await
            .with_context(|| format!("cannot listen on {}", config.control))?;
        let control_addr = control_listener
            .local_addr()
            .context("cannot read the bound control address")?;
        let (outage, _) = watch::channel(false);
        let (listening, _) = watch::channel(true);
        let ctx = Arc::new(Ctx {
            shared: Arc::new(Shared::new(config.receive_mode)),
            outage,
            listening,
        });
        let (stop, stopped) = watch::channel(false);
        let accept = tokio::spawn(accept_loop(
            Arc::clone(&ctx),
            listener,
            rpc_addr,
            stopped.clone(),
        ));
        let app = control::routes(Arc::clone(&ctx));
        let mut control_stop = stopped;
        let control_task = tokio::spawn(async move {
            let serve = axum::serve(control_listener, app).with_graceful_shutdown(async move {
                let _ = control_stop.wait_for(|s| *s).await;
            });
            if let Err(error) = serve.await {
                tracing::error!(%error, "signal control API failed");
            }
        });
        tracing::info!(%rpc_addr, %control_addr, "signal-cli simulator started");
        Ok(SignalServer {
            rpc_addr,
            control_addr,
            ctx,
            stop,
            tasks: vec![accept, control_task],
        })
    }

    /// The JSON-RPC TCP address (what `signal-cli daemon --tcp` would listen on).
    pub fn rpc_addr(&self) -> SocketAddr {
        self.rpc_addr
    }

    /// The control API's base URL, e.g. `http://127.0.0.1:7584`.
    pub fn control_url(&self) -> String {
        let ip = match self.control_addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, self.control_addr.port()))
    }

    /// Closes every connection, stops both listeners and returns when they are gone.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        self.ctx.shared.lock().drop_connections();
        for mut task in std::mem::take(&mut self.tasks) {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
            {
                tracing::warn!("signal simulator task did not stop in time; aborting it");
                task.abort();
            }
        }
        tracing::info!(rpc = %self.rpc_addr, "signal-cli simulator stopped");
    }
}

impl Drop for SignalServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.ctx.shared.lock().drop_connections();
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Accepts connections; during an outage the listener is closed (connections are refused)
/// and bound again on the same address afterwards.
async fn accept_loop(
    ctx: Arc<Ctx>,
    listener: TcpListener,
    addr: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let mut outage = ctx.outage.subscribe();
    let mut listener = Some(listener);
    loop {
        if *stop.borrow() {
            break;
        }
        if *outage.borrow_and_update() {
            listener = None;
            ctx.listening.send_replace(false);
            tokio::select! {
                changed = outage.changed() => if changed.is_err() { break },
                _ = stop.changed() => break,
            }
            continue;
        }
        let Some(bound) = listener.as_ref() else {
            match bind_again(addr).await {
                Some(l) => {
                    listener = Some(l);
                    ctx.listening.send_replace(true);
                }
                None => {
                    tracing::error!(%addr, "cannot listen again after the outage");
                    tokio::select! {
                        changed = outage.changed() => if changed.is_err() { break },
                        _ = stop.changed() => break,
                    }
                }
            }
            continue;
        };
        tokio::select! {
            accepted = bound.accept() => match accepted {
                Ok((stream, peer)) => {
                    tracing::debug!(%peer, "JSON-RPC connection");
                    tokio::spawn(connection(Arc::clone(&ctx), stream));
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            changed = outage.changed() => if changed.is_err() { break },
            _ = stop.changed() => break,
        }
    }
}

async fn bind_again(addr: SocketAddr) -> Option<TcpListener> {
    for _ in 0..100 {
        if let Ok(listener) = TcpListener::bind(addr).await {
            return Some(listener);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Serves one connection: a reader task parses lines and runs requests concurrently; this
/// task writes responses and notifications in channel order.
async fn connection(ctx: Arc<Ctx>, stream: TcpStream) {
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let (kill_tx, mut kill_rx) = oneshot::channel::<()>();
    let id = {
        let mut state = ctx.shared.lock();
        let id = state.next_conn;
        state.next_conn += 1;
        state.conns.insert(
            id,
            Conn {
                tx: tx.clone(),
                kill: Some(kill_tx),
            },
        );
        if state.mode != ReceiveMode::Manual {
            // The automatic subscription takes an id from the global counter.
            state.next_sub += 1;
            let accounts: Vec<String> = state.accounts.keys().cloned().collect();
            for account in accounts {
                state.flush(&account);
            }
        }
        id
    };
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let reader = tokio::spawn(read_loop(Arc::clone(&ctx.shared), id, read, tx));
    let mut detached = false;
    loop {
        tokio::select! {
            killed = &mut kill_rx, if !detached => {
                if killed.is_ok() {
                    break;
                }
                // The reader saw EOF: finish the requests in flight, then close.
                detached = true;
            }
            out = rx.recv() => match out {
                Some(mut text) => {
                    text.push('\n');
                    if write.write_all(text.as_bytes()).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
        }
    }
    reader.abort();
    ctx.shared.lock().remove_connection(id);
    let _ = write.shutdown().await;
    tracing::debug!(conn = id, "JSON-RPC connection closed");
}

async fn read_loop(
    shared: Arc<Shared>,
    conn: u64,
    read: OwnedReadHalf,
    tx: mpsc::UnboundedSender<String>,
) {
    let mut reader = BufReader::new(read);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match (&mut reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if buf.last() != Some(&b'\n') && buf.len() as u64 >= MAX_LINE {
            let error = RpcError::parse("Input line too long");
            let _ = tx.send(line(&response(&Value::Null, &Err(error))));
            break;
        }
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        match rpc::parse_line(&buf) {
            Incoming::Reply(text) => {
                let _ = tx.send(text);
            }
            Incoming::Nothing => {}
            Incoming::Request(request) => {
                let shared = Arc::clone(&shared);
                let tx = tx.clone();
                tokio::spawn(async move {
                    let fault = take_fault(&shared, &request.method);
                    let (reply, flush) = rpc::run(&shared, conn, request).await;
                    if let Some(reply) = reply {
                        for text in spoil(reply, fault) {
                            let _ = tx.send(text);
                        }
                    }
                    flush_accounts(&shared, &flush);
                });
            }
            Incoming::Batch(items) => {
                let shared = Arc::clone(&shared);
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut replies = Vec::new();
                    let mut runs = Vec::new();
                    for item in items {
                        match item {
                            Ok(request) => runs.push(rpc::run(&shared, conn, request)),
                            Err(reply) => replies.push(reply),
                        }
                    }
                    let mut flush = Vec::new();
                    for (reply, accounts) in join_all(runs).await {
                        replies.extend(reply);
                        flush.extend(accounts);
                    }
                    if !replies.is_empty() {
                        let _ = tx.send(line(&Value::Array(replies)));
                    }
                    flush_accounts(&shared, &flush);
                });
            }
        }
    }
    // End of input: stop routing notifications here; requests in flight still answer.
    let mut state = shared.lock();
    if let Some(conn_entry) = state.conns.remove(&conn) {
        drop(conn_entry.tx);
        // Dropping the kill sender (not sending) tells the writer to drain and close.
        drop(conn_entry.kill);
    }
    state.subs.retain(|_, s| s.conn != conn);
}

fn flush_accounts(shared: &Shared, accounts: &[String]) {
    if accounts.is_empty() {
        return;
    }
    let mut state = shared.lock();
    for account in accounts {
        state.flush(account);
    }
}

/// The first fault armed for `method`, if any (removed: each spoils one reply).
fn take_fault(shared: &Shared, method: &str) -> Option<Fault> {
    let mut state = shared.lock();
    let at = state.faults.iter().position(|f| f.method == method)?;
    Some(state.faults.remove(at))
}

/// The lines written for `reply` under `fault`.
fn spoil(mut reply: Value, fault: Option<Fault>) -> Vec<String> {
    let Some(fault) = fault else {
        return vec![line(&reply)];
    };
    match fault.kind {
        FaultKind::Garbage => vec!["}{ this is not JSON\n".to_owned(), line(&reply)],
        FaultKind::Huge(bytes) => {
            let mut huge = "x".repeat(bytes);
            huge.push('\n');
            vec![huge, line(&reply)]
        }
        FaultKind::WrongId => {
            let id = reply.get("id").cloned().unwrap_or(Value::Null);
            reply["id"] = match id {
                Value::Number(n) => Value::from(n.as_i64().unwrap_or(0) + 1_000_000),
                _ => Value::from("not-your-id"),
            };
            vec![line(&reply)]
        }
        FaultKind::Result(result) => {
            if let Some(obj) = reply.as_object_mut() {
                obj.remove("error");
                obj.insert("result".to_owned(), result);
            }
            vec![line(&reply)]
        }
        FaultKind::Error(error) => {
            if let Some(obj) = reply.as_object_mut() {
                obj.remove("result");
                obj.insert("error".to_owned(), error);
            }
            vec![line(&reply)]
        }
    }
}
