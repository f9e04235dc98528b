//! Shared test fixtures: the real Synapse and Postgres started by `scripts/test.sh`, a ferry
//! process per test (the real binary, so it can be SIGKILLed), an in-process sim server, and a
//! small Matrix client acting as a human user.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use hmac::{Hmac, Mac};
use rand::Rng;
use serde_json::{Value, json};
use testnet::sim::SimServer;

pub const WAIT: Duration = Duration::from_secs(60);

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the integration tests through scripts/test.sh, which starts Synapse and Postgres")
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One appservice registration slot (pre-registered with Synapse by the harness), held
/// exclusively by this test process through a file lock.
pub struct Slot {
    pub index: usize,
    pub id: String,
    pub as_token: String,
    pub hs_token: String,
    pub port: u16,
    pub bot_localpart: String,
    pub prefix: String,
    pub registration_path: String,
    /// The homeserver this slot is registered with, and its registration shared secret.
    pub hs: String,
    pub reg_secret: String,
    _lock: Option<File>,
}

impl Slot {
    pub fn claim() -> Slot {
        let dir = PathBuf::from(env("FERRY_TEST_SLOTS_DIR"));
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            for index in 0..64 {
                let json_path = dir.join(format!("slot-{index}.json"));
                if !json_path.exists() {
                    break;
                }
                let lock = File::create(dir.join(format!("slot-{index}.lock"))).expect("lock file");
                if lock.try_lock().is_err() {
                    continue;
                }
                let info: Value =
                    serde_json::from_str(&std::fs::read_to_string(&json_path).expect("slot json"))
                        .expect("slot json parses");
                let port = u16::try_from(info["port"].as_u64().expect("port")).expect("port fits");
                // A port still held (e.g. a ferry left behind by an interrupted earlier run, with
                // that run's tokens) would answer Synapse in this slot's place: skip the slot.
                if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
                    eprintln!("note: slot {index}'s port {port} is in use; skipping that slot");
                    continue;
                }
                let s = |k: &str| info[k].as_str().expect("slot field").to_owned();
                return Slot {
                    index,
                    id: s("id"),
                    as_token: s("as_token"),
                    hs_token: s("hs_token"),
                    port,
                    bot_localpart: s("bot_localpart"),
                    prefix: s("namespace_prefix"),
                    registration_path: s("registration_path"),
                    hs: hs_url(),
                    reg_secret: env("FERRY_TEST_REG_SECRET"),
                    _lock: Some(lock),
                };
            }
            assert!(Instant::now() < deadline, "no free appservice slot");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A registration on a private homeserver (fault drills), not taken from the shared pool.
    #[allow(clippy::too_many_arguments)]
    pub fn private(
        index: usize,
        id: String,
        as_token: String,
        hs_token: String,
        port: u16,
        prefix: String,
        registration_path: String,
        hs: String,
        reg_secret: String,
    ) -> Slot {
        Slot {
            index,
            id,
            as_token,
            hs_token,
            port,
            bot_localpart: format!("{prefix}bot"),
            prefix,
            registration_path,
            hs,
            reg_secret,
            _lock: None,
        }
    }

    pub fn bot(&self) -> String {
        format!("@{}:localhost", self.bot_localpart)
    }

    pub fn ghost(&self, remote: &str) -> String {
        format!("@{}sim_{remote}:localhost", self.prefix)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

pub fn hs_url() -> String {
    env("FERRY_TEST_HS_URL")
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

fn random_suffix() -> String {
    let n: u64 = rand::rng().random();
    format!("{n:016x}")
}

/// A fresh database URI for ferry on the given backend.
pub async fn fresh_database(backend: Backend, dir: &Path) -> String {
    match backend {
        Backend::Sqlite => format!("sqlite://{}", dir.join("ferry.db").display()),
        Backend::Postgres => {
            let base = env("FERRY_TEST_PG_URL");
            let name = format!("ferry_it_{}", random_suffix());
            let pool = sqlx::PgPool::connect(&base)
                .await
                .expect("connect to test Postgres");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&pool)
                .await
                .expect("create database");
            pool.close().await;
            let (prefix, _) = base.rsplit_once('/').expect("database URL has a path");
            format!("{prefix}/{name}")
        }
    }
}

/// A running ferry process.
pub struct Ferry {
    pub dir: PathBuf,
    pub config_path: PathBuf,
    child: Option<Child>,
    slot_url: String,
    slot_id: String,
    as_token: String,
    hs: String,
    starts: u32,
    /// A random tag naming this run's special users (see the permissions in the config).
    pub tag: String,
}

impl Ferry {
    /// Writes the config for this slot and starts ferry.
    pub async fn start(slot: &Slot, backend: Backend, sim_url: &str) -> Ferry {
        Self::start_with(slot, backend, sim_url, None).await
    }

    /// As `start`, with Signal enabled against the daemon at `signal` (`host:port`).
    pub async fn start_with(
        slot: &Slot,
        backend: Backend,
        sim_url: &str,
        signal: Option<&str>,
    ) -> Ferry {
        Self::start_configured(slot, backend, sim_url, signal, "").await
    }

    /// As `start_with`, with `extra` (top-level YAML sections, e.g. `encryption:`) added.
    pub async fn start_configured(
        slot: &Slot,
        backend: Backend,
        sim_url: &str,
        signal: Option<&str>,
        extra: &str,
    ) -> Ferry {
        let signal = match signal {
            Some(addr) => format!(
                "  signal:\n    enabled: true\n    daemon: tcp://{addr}\n    ghost_prefix: {}signal_\n    request_timeout_seconds: 10\n",
                slot.prefix
            ),
            None => String::new(),
        };
        let dir = std::env::temp_dir().join(format!("ferry-it-{}-{}", slot.index, random_suffix()));
        std::fs::create_dir_all(&dir).expect("test dir");
        let tag = random_suffix()[..8].to_owned();
        let db = fresh_database(backend, &dir).await;
        let db_type = match backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        };
        let config = format!(
            r#"homeserver:
  address: {hs}
  domain: localhost
appservice:
  address: {url}
  hostname: 127.0.0.1
  port: {port}
  id: {id}
  registration: {reg}
  bot:
    username: {bot}
    displayname: Ferry test bot
database:
  type: {db_type}
  uri: {db}
  max_connections: 5
bridge:
  permissions:
    "*": relay
    "localhost": user
    "@blocked{tag}:localhost": block
    "@cmdonly{tag}:localhost": commands
    "@admin{tag}:localhost": admin
  max_retry_seconds: 120
  outage_notice_seconds: 2
  message_status_events: true
networks:
  sim:
    enabled: true
    server: {sim_url}
    ghost_prefix: {prefix}sim_
{signal}{extra}metrics:
  enabled: true
  listen: 127.0.0.1:{metrics}
logging:
  level: info,ferry=debug
"#,
            hs = slot.hs,
            url = slot.url(),
            port = slot.port,
            id = slot.id,
            reg = slot.registration_path,
            bot = slot.bot_localpart,
            prefix = slot.prefix,
            metrics = u32::from(slot.port) + 1000,
        );
        let config_path = dir.join("config.yaml");
        std::fs::write(&config_path, config).expect("write config");
        let mut ferry = Ferry {
            dir,
            config_path,
            child: None,
            slot_url: slot.url(),
            slot_id: slot.id.clone(),
            as_token: slot.as_token.clone(),
            hs: slot.hs.clone(),
            starts: 0,
            tag,
        };
        ferry.spawn().await;
        ferry
    }

    /// Moves a stopped ferry to listen on `port` (and its metrics on `port + 1000`) instead of
    /// its slot's port, e.g. to put a proxy on the slot's port. Takes effect at the next spawn.
    pub fn listen_on(&mut self, slot: &Slot, port: u16) {
        let config = std::fs::read_to_string(&self.config_path).expect("config");
        let from = format!("\n  port: {}\n", slot.port);
        assert!(config.contains(&from), "the config names the slot's port");
        let config = config
            .replace(&from, &format!("\n  port: {port}\n"))
            .replace(
                &format!("127.0.0.1:{}\n", u32::from(slot.port) + 1000),
                &format!("127.0.0.1:{}\n", u32::from(port) + 1000),
            );
        std::fs::write(&self.config_path, config).expect("rewrite config");
        self.slot_url = format!("http://127.0.0.1:{port}");
    }

    pub fn metrics_url(&self) -> String {
        let port: u16 = self
            .slot_url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        format!("http://127.0.0.1:{}/metrics", u32::from(port) + 1000)
    }

    /// Starts the process and waits until it answers; then pings through Synapse so the
    /// homeserver retries its queued transactions at once.
    pub async fn spawn(&mut self) {
        self.starts += 1;
        let log =
            File::create(self.dir.join(format!("ferry-{}.log", self.starts))).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["-c", self.config_path.to_str().expect("utf-8 path"), "run"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start ferry");
        self.child = Some(child);
        let client = http();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("ferry exited at start with {status}; log:\n{}", self.log());
            }
            if client
                .get(format!("{}/health", self.slot_url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "ferry did not start; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The ping only makes Synapse retry its queued transactions at once (ferry is already
        // known to answer: see /health above). Right after a restart Synapse may still hold a
        // dead pooled connection to the old process and answer M_CONNECTION_FAILED
        // ("AlreadyCalled") for a while; its own backoff then retries anyway, so a failing
        // nudge is reported, not fatal.
        let mut last = String::new();
        for _ in 0..40 {
            let ping = client
                .post(format!(
                    "{}/_matrix/client/v1/appservice/{}/ping",
                    self.hs, self.slot_id
                ))
                .bearer_auth(&self.as_token)
                .json(&json!({"transaction_id": format!("ping-{}", random_suffix())}))
                .send()
                .await
                .expect("ping through Synapse");
            if ping.status().is_success() {
                return;
            }
            last = ping.text().await.unwrap_or_default();
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        eprintln!(
            "note: Synapse's appservice ping kept failing ({last}); relying on its own retries"
        );
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("ferry-{}.log", self.starts)))
            .unwrap_or_default()
    }
}

impl Drop for Ferry {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- ferry log ({}) ---\n{}", self.dir.display(), self.log());
        }
    }
}

/// A human Matrix user on the test Synapse.
pub struct User {
    pub user_id: String,
    /// For clients that log in as this user (E2EE tests).
    pub password: String,
    token: String,
    hs: String,
    client: reqwest::Client,
    /// The /sync position: Synapse caches identical sync requests for minutes, so a poll must
    /// always move the token forward.
    since: tokio::sync::Mutex<Option<String>>,
}

impl User {
    /// Registers a fresh user through the shared-secret admin API.
    pub async fn register(localpart_hint: &str) -> User {
        Self::register_exact(&format!("{localpart_hint}{}", &random_suffix()[..8])).await
    }

    /// Registers a fresh user on `slot`'s homeserver (the shared one, or a private one).
    pub async fn register_on(slot: &Slot, localpart_hint: &str) -> User {
        let name = format!("{localpart_hint}{}", &random_suffix()[..8]);
        Self::register_at(&slot.hs, &slot.reg_secret, &name).await
    }

    pub async fn register_exact(username: &str) -> User {
        Self::register_at(&hs_url(), &env("FERRY_TEST_REG_SECRET"), username).await
    }

    /// Registers `username` on the homeserver at `hs` with its shared secret.
    pub async fn register_at(hs: &str, secret: &str, username: &str) -> User {
        let client = http();
        let hs = hs.to_owned();
        let password = random_suffix();
        let nonce: Value = client
            .get(format!("{hs}/_synapse/admin/v1/register"))
            .send()
            .await
            .expect("nonce")
            .json()
            .await
            .expect("nonce json");
        let nonce = nonce["nonce"].as_str().expect("nonce field").to_owned();
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).expect("hmac key");
        mac.update(format!("{nonce}\0{username}\0{password}\0notadmin").as_bytes());
        let mac = hex::encode(mac.finalize().into_bytes());
        let body: Value = client
            .post(format!("{hs}/_synapse/admin/v1/register"))
            .json(&json!({"nonce": nonce, "username": username, "password": password, "admin": false, "mac": mac}))
            .send()
            .await
            .expect("register")
            .json()
            .await
            .expect("register json");
        User {
            user_id: body["user_id"]
                .as_str()
                .unwrap_or_else(|| panic!("registration failed: {body}"))
                .to_owned(),
            password,
            token: body["access_token"].as_str().expect("token").to_owned(),
            hs,
            client,
            since: tokio::sync::Mutex::new(None),
        }
    }

    /// The homeserver this user lives on.
    pub fn hs(&self) -> &str {
        &self.hs
    }

    /// The user's access token (for requests the helpers here do not cover).
    pub fn token(&self) -> &str {
        &self.token
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.hs))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("homeserver request");
        let status = response.status();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path} failed: {status} {value}");
        value
    }

    /// Opens a DM with `other` (the bot): it becomes the management room.
    pub async fn create_dm(&self, other: &str) -> String {
        let body = json!({"invite": [other], "is_direct": true, "preset": "trusted_private_chat"});
        let value = self
            .call(
                reqwest::Method::POST,
                "/_matrix/client/v3/createRoom",
                Some(body),
            )
            .await;
        value["room_id"].as_str().expect("room id").to_owned()
    }

    pub async fn send_text(&self, room: &str, body: &str) -> String {
        let txn = random_suffix();
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
            enc(room)
        );
        let value = self
            .call(
                reqwest::Method::PUT,
                &path,
                Some(json!({"msgtype": "m.text", "body": body})),
            )
            .await;
        value["event_id"].as_str().expect("event id").to_owned()
    }

    /// Every event in the room's timeline, oldest first (redacted ones included, stripped).
    pub async fn events(&self, room: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut from: Option<String> = None;
        loop {
            let mut path = format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=500",
                enc(room)
            );
            if let Some(from) = &from {
                path.push_str(&format!("&from={}", enc(from)));
            }
            let value = self.call(reqwest::Method::GET, &path, None).await;
            let chunk = value["chunk"].as_array().cloned().unwrap_or_default();
            out.extend(chunk.iter().cloned());
            match value["end"].as_str() {
                Some(end) if !chunk.is_empty() => from = Some(end.to_owned()),
                _ => break,
            }
        }
        out.reverse();
        out
    }

    /// Waits for a timeline event satisfying `pred`.
    pub async fn wait_event(&self, room: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let events = self.events(room).await;
            if let Some(event) = events.iter().rev().find(|e| pred(e)) {
                return event.clone();
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last events: {:#?}",
                &events[events.len().saturating_sub(8)..]
            );
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// Sends any event content; returns the event id.
    pub async fn send_event(&self, room: &str, event_type: &str, content: Value) -> String {
        let txn = random_suffix();
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/{event_type}/{txn}",
            enc(room)
        );
        let value = self.call(reqwest::Method::PUT, &path, Some(content)).await;
        value["event_id"].as_str().expect("event id").to_owned()
    }

    /// Uploads media to the homeserver; returns the mxc URI.
    pub async fn upload(&self, content_type: &str, data: Vec<u8>) -> String {
        let response = self
            .client
            .post(format!("{}/_matrix/media/v3/upload?filename=f", hs_url()))
            .bearer_auth(&self.token)
            .header("content-type", content_type)
            .body(data)
            .send()
            .await
            .expect("upload");
        let value: Value = response.json().await.expect("upload json");
        value["content_uri"]
            .as_str()
            .expect("content_uri")
            .to_owned()
    }

    /// Downloads media through authenticated media.
    pub async fn download(&self, mxc: &str) -> Vec<u8> {
        let path = mxc.strip_prefix("mxc://").expect("mxc");
        let response = self
            .client
            .get(format!(
                "{}/_matrix/client/v1/media/download/{path}",
                hs_url()
            ))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("download");
        assert!(
            response.status().is_success(),
            "download {mxc}: {}",
            response.status()
        );
        response.bytes().await.expect("bytes").to_vec()
    }

    /// Ephemeral events (typing, receipts) of `room` seen by syncing until `pred` holds.
    pub async fn wait_ephemeral(
        &self,
        room: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let mut since = self.since.lock().await;
            let path = match since.as_deref() {
                Some(token) => format!("/_matrix/client/v3/sync?timeout=500&since={}", enc(token)),
                None => "/_matrix/client/v3/sync?timeout=0".to_owned(),
            };
            let value = self.call(reqwest::Method::GET, &path, None).await;
            *since = value["next_batch"].as_str().map(str::to_owned);
            drop(since);
            let found = value["rooms"]["join"][room]["ephemeral"]["events"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| pred(e))
                .cloned();
            if let Some(event) = found {
                return event;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
        }
    }

    /// The room's name, if it has one.
    pub async fn room_name(&self, room: &str) -> Option<String> {
        let url = format!(
            "{}/_matrix/client/v3/rooms/{}/state/m.room.name/",
            hs_url(),
            enc(room)
        );
        let response = self
            .client
            .get(url)
            .bearer_auth(&self.token)
            .send()
            .await
            .ok()?;
        let value: Value = response.json().await.ok()?;
        value["name"].as_str().map(str::to_owned)
    }

    pub async fn put(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    /// Every m.room.message in the room, oldest first: (sender, msgtype, body).
    pub async fn messages(&self, room: &str) -> Vec<(String, String, String)> {
        let field = |event: &Value, key: &str| event[key].as_str().unwrap_or_default().to_owned();
        self.events(room)
            .await
            .iter()
            .filter(|event| event["type"] == "m.room.message")
            .map(|event| {
                (
                    field(event, "sender"),
                    field(&event["content"], "msgtype"),
                    field(&event["content"], "body"),
                )
            })
            .collect()
    }

    /// Opens a direct chat with the bridge bot and waits for its welcome: the user's management
    /// room.
    pub async fn open_management_room(&self, bot: &str) -> String {
        let room = self.create_dm(bot).await;
        self.wait_message(&room, "the bot's welcome", |s, b| {
            s == bot && b.contains("management room")
        })
        .await;
        room
    }

    /// Sends a QR `login` command in the management room, checks that the bot shows the code
    /// as a PNG image, and returns the bot's text message that carries `link` (the code's
    /// content, for the simulated phone to "scan") and the image's bytes.
    pub async fn start_qr_login(
        &self,
        room: &str,
        bot: &str,
        command: &str,
        link: &str,
    ) -> (String, Vec<u8>) {
        self.send_text(room, command).await;
        let qr = self
            .wait_event(room, "the QR code image", |e| {
                e["content"]["msgtype"] == "m.image"
            })
            .await;
        assert_eq!(qr["content"]["info"]["mimetype"], "image/png");
        let png = self
            .download(qr["content"]["url"].as_str().expect("url"))
            .await;
        assert_eq!(&png[..4], b"\x89PNG");
        let (_, text) = self
            .wait_message(room, "the login link", |s, b| s == bot && b.contains(link))
            .await;
        (text, png)
    }

    /// Waits for a message in `room` whose body satisfies `pred`; returns (sender, body).
    pub async fn wait_message(
        &self,
        room: &str,
        what: &str,
        pred: impl Fn(&str, &str) -> bool,
    ) -> (String, String) {
        let deadline = Instant::now() + WAIT;
        loop {
            let messages = self.messages(room).await;
            if let Some((sender, _, body)) = messages.iter().rev().find(|(s, _, b)| pred(s, b)) {
                return (sender.clone(), body.clone());
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; room has: {messages:#?}"
            );
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// Sends a command to the bot and waits for the bot's notice answering it.
    pub async fn command(&self, room: &str, bot: &str, text: &str, expect: &str) -> String {
        let before = self.messages(room).await.len();
        self.send_text(room, text).await;
        let deadline = Instant::now() + WAIT;
        loop {
            let messages = self.messages(room).await;
            if let Some((_, _, body)) = messages
                .iter()
                .skip(before)
                .find(|(s, t, b)| s == bot && t == "m.notice" && b.contains(expect))
            {
                return body.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no bot answer containing {expect:?} to {text:?}; room has: {:#?}",
                &messages[before.min(messages.len())..]
            );
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    pub async fn joined_rooms(&self) -> Vec<String> {
        let value = self
            .call(
                reqwest::Method::GET,
                "/_matrix/client/v3/joined_rooms",
                None,
            )
            .await;
        value["joined_rooms"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r.as_str().map(str::to_owned))
            .collect()
    }

    /// Joins every room the user is invited to; returns the rooms joined.
    pub async fn accept_invites(&self) -> Vec<String> {
        let mut since = self.since.lock().await;
        let path = match since.as_deref() {
            Some(token) => format!("/_matrix/client/v3/sync?timeout=0&since={}", enc(token)),
            None => "/_matrix/client/v3/sync?timeout=0".to_owned(),
        };
        let value = self.call(reqwest::Method::GET, &path, None).await;
        *since = value["next_batch"].as_str().map(str::to_owned);
        let mut joined = Vec::new();
        if let Some(invites) = value["rooms"]["invite"].as_object() {
            for room in invites.keys() {
                self.call(
                    reqwest::Method::POST,
                    &format!("/_matrix/client/v3/join/{}", enc(room)),
                    Some(json!({})),
                )
                .await;
                joined.push(room.clone());
            }
        }
        joined
    }

    /// Waits until the user has been invited to and joined `count` rooms other than `except`.
    pub async fn wait_portals(&self, count: usize, except: &str) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            self.accept_invites().await;
            let rooms: Vec<_> = self
                .joined_rooms()
                .await
                .into_iter()
                .filter(|r| r != except)
                .collect();
            if rooms.len() >= count {
                return rooms;
            }
            assert!(
                Instant::now() < deadline,
                "only {} portal rooms after waiting",
                rooms.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn members(&self, room: &str) -> Vec<String> {
        let path = format!("/_matrix/client/v3/rooms/{}/joined_members", enc(room));
        let value = self.call(reqwest::Method::GET, &path, None).await;
        let mut members: Vec<String> = value["joined"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        members.sort();
        members
    }

    pub async fn wait_members(
        &self,
        room: &str,
        what: &str,
        pred: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let members = self.members(room).await;
            if pred(&members) {
                return members;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; members: {members:?}"
            );
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    pub async fn displayname(&self, user: &str) -> Option<String> {
        let path = format!("/_matrix/client/v3/profile/{}/displayname", enc(user));
        let response = self
            .client
            .get(format!("{}{path}", self.hs))
            .bearer_auth(&self.token)
            .send()
            .await
            .ok()?;
        let value: Value = response.json().await.ok()?;
        value["displayname"].as_str().map(str::to_owned)
    }
}

impl User {
    /// A user's avatar, fetched through authenticated media: (bytes, content type).
    pub async fn avatar(&self, user: &str) -> Option<(Vec<u8>, String)> {
        let path = format!("/_matrix/client/v3/profile/{}/avatar_url", enc(user));
        let response = self
            .client
            .get(format!("{}{path}", self.hs))
            .bearer_auth(&self.token)
            .send()
            .await
            .ok()?;
        let value: Value = response.json().await.ok()?;
        let mxc = value["avatar_url"]
            .as_str()?
            .strip_prefix("mxc://")?
            .to_owned();
        let response = self
            .client
            .get(format!(
                "{}/_matrix/client/v1/media/download/{mxc}",
                self.hs
            ))
            .bearer_auth(&self.token)
            .send()
            .await
            .ok()?;
        assert!(
            response.status().is_success(),
            "media download failed: {}",
            response.status()
        );
        let content_type = response
            .headers()
            .get("content-type")?
            .to_str()
            .ok()?
            .to_owned();
        Some((response.bytes().await.ok()?.to_vec(), content_type))
    }
}

/// Fetches until `done` holds for the answer; fails with `what` and the last answer after WAIT.
pub async fn poll(
    what: &str,
    mut fetch: impl AsyncFnMut() -> Value,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let value = fetch().await;
        if done(&value) {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: {value}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The sim server and a client for its control API.
pub struct Sim {
    pub server: SimServer,
    client: reqwest::Client,
}

impl Sim {
    pub async fn start() -> Sim {
        let server = SimServer::start("127.0.0.1:0").await.expect("sim server");
        Sim {
            server,
            client: http(),
        }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub async fn control(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.client.request(method, format!("{}{path}", self.url()));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("sim control request");
        let status = response.status();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "sim {path} failed: {status} {value}");
        value
    }

    pub async fn user(&self, id: &str, name: &str) {
        self.control(
            reqwest::Method::POST,
            "/control/users",
            Some(json!({"id": id, "name": name})),
        )
        .await;
    }

    pub async fn avatar(&self, user: &str, content_type: &str, data: Vec<u8>) {
        let response = self
            .client
            .put(format!("{}/control/users/{user}/avatar", self.url()))
            .header("content-type", content_type)
            .body(data)
            .send()
            .await
            .expect("sim avatar");
        assert!(response.status().is_success());
    }

    /// Uploads media to the sim server; returns its id.
    pub async fn upload_media(&self, content_type: &str, data: Vec<u8>) -> String {
        let response = self
            .client
            .post(format!("{}/control/media", self.url()))
            .header("content-type", content_type)
            .body(data)
            .send()
            .await
            .expect("sim media upload");
        let value: Value = response.json().await.expect("media json");
        value["id"].as_str().expect("media id").to_owned()
    }

    pub async fn dm(&self, a: &str, b: &str) -> String {
        let chat = self
            .control(
                reqwest::Method::POST,
                "/control/dms",
                Some(json!({"a": a, "b": b})),
            )
            .await;
        chat["id"].as_str().expect("chat id").to_owned()
    }

    pub async fn group(&self, name: &str, members: &[&str]) -> String {
        let body = json!({"name": name, "members": members});
        let chat = self
            .control(reqwest::Method::POST, "/control/groups", Some(body))
            .await;
        chat["id"].as_str().expect("chat id").to_owned()
    }

    pub async fn send(&self, chat: &str, sender: &str, text: &str) -> String {
        let path = format!("/control/chats/{chat}/messages");
        let m = self
            .control(
                reqwest::Method::POST,
                &path,
                Some(json!({"sender": sender, "text": text})),
            )
            .await;
        m["id"].as_str().expect("message id").to_owned()
    }

    /// (sender, text) of every message in a chat, in order.
    pub async fn messages(&self, chat: &str) -> Vec<(String, String)> {
        let value = self
            .control(
                reqwest::Method::GET,
                &format!("/control/chats/{chat}/messages"),
                None,
            )
            .await;
        value["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                (
                    m["sender"].as_str().unwrap_or("").to_owned(),
                    m["text"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }

    pub async fn wait_message(&self, chat: &str, what: &str, pred: impl Fn(&str, &str) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            let messages = self.messages(chat).await;
            if messages.iter().any(|(s, t)| pred(s, t)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what} on sim; chat has {messages:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn login_code(&self, user: &str) -> String {
        let value = self
            .control(
                reqwest::Method::GET,
                &format!("/control/login-code/{user}"),
                None,
            )
            .await;
        value["code"].as_str().expect("code").to_owned()
    }
}

/// A Matrix user logged in to sim as `remote` through the bot; returns (user, management room).
pub async fn logged_in_user(slot: &Slot, sim: &Sim, remote: &str) -> (User, String) {
    let name = format!("user{}", &random_suffix()[..8]);
    let user = User::register_at(&slot.hs, &slot.reg_secret, &name).await;
    let bot = slot.bot();
    let room = user.open_management_room(&bot).await;
    user.command(&room, &bot, "login sim", "username").await;
    user.command(&room, &bot, remote, "code").await;
    let code = sim.login_code(remote).await;
    user.command(&room, &bot, &code, "Logged in").await;
    (user, room)
}
