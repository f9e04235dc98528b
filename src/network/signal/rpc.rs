//! A JSON-RPC 2.0 client for the signal-cli daemon: one JSON object per line over TCP or a UNIX
//! socket, requests matched to responses by id, notifications handed to a channel.
//!
//! The connection is kept up by a background task that reconnects with backoff; calls made
//! while it is down fail at once with a transient error (the bridge retries them), and every
//! reconnect is announced so sessions can subscribe again. Lines from the daemon are parsed
//! defensively: garbage, unknown ids and oversized lines are logged and skipped, never fatal.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde_json::{Value as JsonValue, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader},
    sync::{mpsc, oneshot},
};

/// Longest line accepted from the daemon (attachments come base64-encoded in results).
const MAX_LINE: usize = 64 * 1024 * 1024;

/// A failed call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RpcError {
    /// The daemon answered with a JSON-RPC error object.
    #[error("signal-cli error {code}: {message}")]
    Remote {
        code: i64,
        message: String,
        data: Option<JsonValue>,
    },
    /// Not connected, or the connection broke before the answer came.
    #[error("signal-cli daemon unavailable: {0}")]
    Unavailable(String),
    #[error("signal-cli did not answer within {0:?}")]
    Timeout(Duration),
    #[error("unexpected answer from signal-cli: {0}")]
    Protocol(String),
}

/// What the connection reports besides answers.
#[derive(Debug, Clone)]
pub enum Incoming {
    /// A JSON-RPC notification (method and params).
    Notification {
        method: String,
        params: JsonValue,
    },
    /// The connection (re)opened: subscriptions must be made again.
    Connected,
    Disconnected(String),
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<JsonValue, RpcError>>>>>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// Where the daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tcp(String),
    Unix(String),
}

impl Endpoint {
    /// `tcp://host:port` or `unix:///path`.
    pub fn parse(text: &str) -> Option<Self> {
        if let Some(rest) = text.strip_prefix("tcp://") {
            (!rest.is_empty()).then(|| Self::Tcp(rest.to_owned()))
        } else {
            text.strip_prefix("unix://")
                .filter(|p| p.starts_with('/'))
                .map(|p| Self::Unix(p.to_owned()))
        }
    }
}

pub struct RpcClient {
    next_id: AtomicU64,
    pending: Pending,
    writer: Arc<tokio::sync::Mutex<Option<Writer>>>,
    timeout: Duration,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl RpcClient {
    /// Starts the connection task; `incoming` receives notifications and connection changes.
    pub fn start(
        endpoint: Endpoint,
        timeout: Duration,
        incoming: mpsc::Sender<Incoming>,
    ) -> Arc<Self> {
        let client = Arc::new(Self {
            next_id: AtomicU64::new(1),
            pending: Arc::default(),
            writer: Arc::default(),
            timeout,
            task: Mutex::new(None),
        });
        let task = tokio::spawn(run_connection(
            endpoint,
            client.pending.clone(),
            client.writer.clone(),
            incoming,
        ));
        *client.task.lock().expect("task lock") = Some(task);
        client
    }

    /// Calls `method`; waits for the answer up to the configured timeout (or `timeout`).
    pub async fn call_with_timeout(
        &self,
        method: &str,
        params: JsonValue,
        timeout: Duration,
    ) -> Result<JsonValue, RpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending lock").insert(id, tx);
        let mut line =
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string();
        line.push('\n');
        // Right after start (or a reconnect) the connection may be moments away: wait a little
        // for it rather than failing a call that would succeed.
        let connect_deadline = tokio::time::Instant::now() + timeout.min(Duration::from_secs(5));
        let written = loop {
            let mut writer = self.writer.lock().await;
            match writer.as_mut() {
                Some(w) => {
                    break w
                        .write_all(line.as_bytes())
                        .await
                        .and(w.flush().await)
                        .map_err(|e| e.to_string());
                }
                None if tokio::time::Instant::now() < connect_deadline => {
                    drop(writer);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                None => break Err("not connected".to_owned()),
            }
        };
        if let Err(err) = written {
            self.pending.lock().expect("pending lock").remove(&id);
            return Err(RpcError::Unavailable(err));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(RpcError::Unavailable("connection closed".to_owned())),
            Err(_) => {
                self.pending.lock().expect("pending lock").remove(&id);
                Err(RpcError::Timeout(timeout))
            }
        }
    }

    pub async fn call(&self, method: &str, params: JsonValue) -> Result<JsonValue, RpcError> {
        self.call_with_timeout(method, params, self.timeout).await
    }
}

impl Drop for RpcClient {
    fn drop(&mut self) {
        if let Ok(mut task) = self.task.lock()
            && let Some(task) = task.take()
        {
            task.abort();
        }
    }
}

async fn connect(
    endpoint: &Endpoint,
) -> std::io::Result<(Box<dyn AsyncRead + Send + Unpin>, Writer)> {
    match endpoint {
        Endpoint::Tcp(addr) => {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            let (read, write) = stream.into_split();
            Ok((Box::new(read), Box::new(write)))
        }
        #[cfg(unix)]
        Endpoint::Unix(path) => {
            let stream = tokio::net::UnixStream::connect(path).await?;
            let (read, write) = stream.into_split();
            Ok((Box::new(read), Box::new(write)))
        }
        #[cfg(not(unix))]
        Endpoint::Unix(_) => Err(std::io::Error::other("UNIX sockets are not supported here")),
    }
}

async fn run_connection(
    endpoint: Endpoint,
    pending: Pending,
    writer: Arc<tokio::sync::Mutex<Option<Writer>>>,
    incoming: mpsc::Sender<Incoming>,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let (read, write) = match connect(&endpoint).await {
            Ok(halves) => halves,
            Err(err) => {
                let _ = incoming
                    .send(Incoming::Disconnected(format!("cannot connect: {err}")))
                    .await;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        *writer.lock().await = Some(write);
        if incoming.send(Incoming::Connected).await.is_err() {
            return;
        }
        let why = read_lines(read, &pending, &incoming).await;
        *writer.lock().await = None;
        // Everyone still waiting learns the connection is gone.
        for (_, tx) in pending.lock().expect("pending lock").drain() {
            let _ = tx.send(Err(RpcError::Unavailable(why.clone())));
        }
        if incoming.send(Incoming::Disconnected(why)).await.is_err() {
            return;
        }
        tokio::time::sleep(backoff).await;
    }
}

/// Reads until the connection ends; returns why it ended.
async fn read_lines(
    read: Box<dyn AsyncRead + Send + Unpin>,
    pending: &Pending,
    incoming: &mpsc::Sender<Incoming>,
) -> String {
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        // Bounded read: a line longer than MAX_LINE is dropped in pieces.
        let n = match (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) => return "the daemon closed the connection".to_owned(),
            Ok(n) => n,
            Err(err) => return format!("connection lost: {err}"),
        };
        if n > MAX_LINE {
            tracing::warn!(
                limit = MAX_LINE,
                "signal-cli sent a line longer than the limit; skipped"
            );
            // Skip the rest of that line without holding it in memory.
            if let Err(why) = skip_line(&mut reader).await {
                return why;
            }
            continue;
        }
        let Ok(value) = serde_json::from_slice::<JsonValue>(&line) else {
            if !line.iter().all(u8::is_ascii_whitespace) {
                tracing::warn!("signal-cli sent a line that is not JSON; skipped");
            }
            continue;
        };
        dispatch(value, pending, incoming).await;
    }
}

/// Discards input up to and including the next newline, a buffer at a time.
async fn skip_line<R: AsyncRead + Unpin>(reader: &mut BufReader<R>) -> Result<(), String> {
    loop {
        let buf = reader
            .fill_buf()
            .await
            .map_err(|e| format!("connection lost: {e}"))?;
        if buf.is_empty() {
            return Err("the daemon closed the connection".to_owned());
        }
        match buf.iter().position(|b| *b == b'\n') {
            Some(end) => {
                reader.consume(end + 1);
                return Ok(());
            }
            None => {
                let len = buf.len();
                reader.consume(len);
            }
        }
    }
}

async fn dispatch(value: JsonValue, pending: &Pending, incoming: &mpsc::Sender<Incoming>) {
    if let Some(method) = value.get("method").and_then(JsonValue::as_str) {
        if value.get("id").is_none_or(JsonValue::is_null) {
            let params = value.get("params").cloned().unwrap_or(JsonValue::Null);
            let _ = incoming
                .send(Incoming::Notification {
                    method: method.to_owned(),
                    params,
                })
                .await;
        }
        return;
    }
    let Some(id) = value.get("id").and_then(JsonValue::as_u64) else {
        tracing::warn!("signal-cli sent an answer without a usable id; skipped");
        return;
    };
    let Some(tx) = pending.lock().expect("pending lock").remove(&id) else {
        tracing::debug!(id, "answer to a call nobody waits for (timed out?)");
        return;
    };
    let result = match (value.get("result"), value.get("error")) {
        (_, Some(error)) if !error.is_null() => Err(RpcError::Remote {
            code: error.get("code").and_then(JsonValue::as_i64).unwrap_or(0),
            // An error that is not the usual object is shown as it came.
            message: error
                .get("message")
                .and_then(JsonValue::as_str)
                .map_or_else(|| error.to_string(), str::to_owned)
                .chars()
                .take(500)
                .collect(),
            data: error.get("data").cloned(),
        }),
        (Some(result), _) => Ok(result.clone()),
        _ => Err(RpcError::Protocol(
            "an answer with neither result nor error".to_owned(),
        )),
    };
    let _ = tx.send(result);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncBufReadExt;

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            Endpoint::parse("tcp://127.0.0.1:7583"),
            Some(Endpoint::Tcp("127.0.0.1:7583".into()))
        );
        assert_eq!(
            Endpoint::parse("unix:///run/signal-cli/socket"),
            Some(Endpoint::Unix("/run/signal-cli/socket".into()))
        );
        assert_eq!(Endpoint::parse("unix://relative"), None);
        assert_eq!(Endpoint::parse("http://x"), None);
        assert_eq!(Endpoint::parse("tcp://"), None);
    }

    /// A fake daemon that answers garbage first, then errors and results, and reconnects.
    #[tokio::test]
    async fn calls_survive_garbage_errors_and_reconnects() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            for round in 0..2 {
                let (stream, _) = listener.accept().await.unwrap();
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                write
                    .write_all(b"this is not json\n{\"id\": 999999, \"result\": 1}\n{}\n")
                    .await
                    .unwrap();
                write
                    .write_all(
                        b"{\"jsonrpc\":\"2.0\",\"method\":\"receive\",\"params\":{\"x\":1}}\n",
                    )
                    .await
                    .unwrap();
                while let Ok(Some(line)) = lines.next_line().await {
                    let request: JsonValue = serde_json::from_str(&line).unwrap();
                    let id = request["id"].clone();
                    let answer = match request["method"].as_str() {
                        Some("version") => {
                            json!({"jsonrpc": "2.0", "id": id, "result": {"version": "0.13.19"}})
                        }
                        Some("hangup") if round == 0 => break,
                        _ => {
                            json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "Method not implemented"}})
                        }
                    };
                    write
                        .write_all(format!("{answer}\n").as_bytes())
                        .await
                        .unwrap();
                }
            }
        });
        let (tx, mut rx) = mpsc::channel(16);
        let client = RpcClient::start(Endpoint::Tcp(addr), Duration::from_secs(5), tx);
        assert!(matches!(rx.recv().await, Some(Incoming::Connected)));
        assert!(
            matches!(rx.recv().await, Some(Incoming::Notification { method, .. }) if method == "receive")
        );
        assert_eq!(
            client.call("version", json!({})).await.unwrap()["version"],
            "0.13.19"
        );
        let err = client.call("nope", json!({})).await.unwrap_err();
        assert!(
            matches!(err, RpcError::Remote { code: -32601, .. }),
            "{err:?}"
        );
        assert!(matches!(
            client.call("hangup", json!({})).await,
            Err(RpcError::Unavailable(_))
        ));
        // Reconnects by itself; calls work again.
        loop {
            match rx.recv().await {
                Some(Incoming::Connected) => break,
                Some(_) => continue,
                None => panic!("connection task ended"),
            }
        }
        assert_eq!(
            client.call("version", json!({})).await.unwrap()["version"],
            "0.13.19"
        );
    }
}
