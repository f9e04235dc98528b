//! The checks behind ferry's parser fuzzing, shared by the cargo-fuzz targets (`fuzz/`) and the
//! bounded property test that runs on stable Rust in the normal test run
//! (`tests/fuzz_parsers.rs`).
//!
//! Transactions go through the real appservice router (token check, body limit, transaction and
//! event parsing, storing) over loopback HTTP, backed by a real SQLite database, so a finding
//! here is a finding in the code the homeserver talks to. The invariants:
//! - nothing panics (a panic in a handler would surface as a dropped connection);
//! - a refused request (any status but 200) changes no stored row;
//! - an accepted one stores its transaction id once, and exactly the events handed to the
//!   bridge; a repeated id stores nothing.
//!
//! Events go through `MatrixEvent::parse` and every accessor the router uses.

#![allow(dead_code)]

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use async_trait::async_trait;
use ferry::{
    config::{DatabaseConfig, DatabaseType},
    db::{Db, inbox::InboxEntry},
    matrix::{appservice, appservice::AppserviceHandler, event::MatrixEvent},
    metrics::Metrics,
};

pub const HS_TOKEN: &str = "fuzz-hs-token";
/// Small, so oversized bodies are cheap to produce.
pub const MAX_BODY: usize = 64 * 1024;

/// Counts what the router hands to the bridge.
#[derive(Default)]
struct Recorder {
    events: AtomicUsize,
}

#[async_trait]
impl AppserviceHandler for Recorder {
    async fn events(&self, entries: Vec<InboxEntry>) {
        self.events.fetch_add(entries.len(), Ordering::SeqCst);
    }

    async fn query_user(&self, _user_id: &str) -> bool {
        false
    }
}

/// A ferry appservice listener on loopback with a fresh SQLite database.
pub struct TxnHarness {
    rt: tokio::runtime::Runtime,
    addr: SocketAddr,
    db: Db,
    recorder: Arc<Recorder>,
    client: reqwest::Client,
    dir: PathBuf,
}

/// What one request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub status: u16,
    pub events_stored: i64,
}

impl TxnHarness {
    pub fn new() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = std::env::temp_dir().join(format!("ferry-fuzz-{:016x}", rand_u64()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let config = DatabaseConfig {
            kind: DatabaseType::Sqlite,
            uri: format!("sqlite://{}", dir.join("fuzz.db").display()),
            max_connections: 4,
        };
        let recorder = Arc::new(Recorder::default());
        let (db, addr) = rt.block_on(async {
            let db = Db::connect(&config).await.expect("database");
            let router = appservice::router(
                HS_TOKEN,
                db.clone(),
                recorder.clone(),
                Metrics::new(),
                MAX_BODY,
                true,
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            tokio::spawn(async move { axum::serve(listener, router).await });
            (db, addr)
        });
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        Self {
            rt,
            addr,
            db,
            recorder,
            client,
            dir,
        }
    }

    async fn counts(&self) -> (i64, i64) {
        let (txns,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM as_txn")
            .fetch_one(self.db.pool())
            .await
            .expect("count as_txn");
        let (inbox,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM inbox")
            .fetch_one(self.db.pool())
            .await
            .expect("count inbox");
        (txns, inbox)
    }

    /// PUTs one transaction and checks the invariants; panics on a violation.
    pub fn transaction(&self, txn_id: &str, token: Option<&str>, body: &[u8]) -> Outcome {
        self.rt.block_on(async {
            let (txns_before, inbox_before) = self.counts().await;
            let handed_before = self.recorder.events.load(Ordering::SeqCst);
            let url = format!(
                "http://{}/_matrix/app/v1/transactions/{}",
                self.addr,
                encode(txn_id)
            );
            let mut request = self
                .client
                .put(url)
                .header("content-type", "application/json")
                .body(body.to_vec());
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request
                .send()
                .await
                .expect("the listener answers (a panic would drop the connection)");
            let status = response.status().as_u16();
            let (txns_after, inbox_after) = self.counts().await;
            let handed = self.recorder.events.load(Ordering::SeqCst) - handed_before;
            let stored = inbox_after - inbox_before;
            if status == 200 {
                assert!(
                    txns_after - txns_before <= 1,
                    "one accepted transaction stored more than one id"
                );
                assert_eq!(
                    stored as usize, handed,
                    "stored events and events handed to the bridge differ"
                );
                if txns_after == txns_before {
                    assert_eq!(stored, 0, "a repeated transaction stored events");
                }
            } else {
                assert_eq!(
                    (txns_after, inbox_after),
                    (txns_before, inbox_before),
                    "a refused request (status {status}) changed stored state"
                );
                assert_eq!(handed, 0, "a refused request reached the bridge");
            }
            Outcome {
                status,
                events_stored: stored,
            }
        })
    }
}

impl Drop for TxnHarness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Parses an event and exercises every accessor routing uses; must never panic.
pub fn event(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(event) = MatrixEvent::parse(text) {
        let _ = event.membership();
        let _ = event.msgtype();
        let _ = event.body();
        let _ = event.is_edit();
        assert!(event.event_id.as_str().starts_with('$'));
        assert!(event.sender.as_str().starts_with('@'));
    }
}

/// Splits fuzz input into (transaction id, token choice, body): the first byte picks the token
/// (right, wrong, none), the next up to 300 bytes up to a NUL are the id.
pub fn split_input(data: &[u8]) -> (String, Option<&'static str>, &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return ("empty".to_owned(), Some(HS_TOKEN), data);
    };
    let token = match selector % 8 {
        0 => None,
        1 => Some("wrong-token"),
        _ => Some(HS_TOKEN),
    };
    let end = rest.iter().take(300).position(|&b| b == 0).unwrap_or(0);
    let id = String::from_utf8_lossy(&rest[..end]).into_owned();
    let body = rest.get(end + 1..).unwrap_or_default();
    let id = if id.is_empty() {
        format!("t{}", rand_u64())
    } else {
        id
    };
    (id, token, body)
}

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    h.finish()
}
