//! ferry's benchmark: the G1–G7 figures of `shared/notes/performance.md`, each a ratio of two
//! numbers measured in the same run on the same machine (so the hardware cancels out), on
//! SQLite and on PostgreSQL. Run it through `scripts/bench.sh`, which builds it in release mode
//! and starts a private Synapse and Postgres; it is not part of the test run.
//!
//! How "visible in Matrix" is observed: a second appservice (`benchobs`, registered by
//! `write-registrations`) has a non-exclusive namespace over every room, so Synapse pushes it
//! every event, ferry's and the direct sender's alike, through the same path. Sim-side arrival is
//! observed on alice's own event socket, which carries every message of her chats. The direct
//! baseline sends as the appservice (`@benchobs_direct`) into a room of its own.
//!
//! Subcommands:
//!   write-registrations DIR            ferry's and the observer's registrations + bench.json
//!   run DIR FERRY_BIN [--quick]        everything; prints the table (markdown) on stdout

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use axum::{
    Json, Router,
    extract::{Path as AxPath, State},
    routing::{get, post, put},
};
use ferry::{
    config::{DatabaseConfig, DatabaseType},
    db::{Db, logins::LoginRow},
};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Notify;

const FERRY_PORT: u16 = 29800;
const OBS_PORT: u16 = 29801;
const PREFIX: &str = "bench_";
const PORTALS: usize = 100;

fn hex() -> String {
    format!(
        "{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

// ---------------------------------------------------------------------------------------------
// Registrations

fn write_registrations(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let (ferry_as, ferry_hs, obs_as, obs_hs) = (hex(), hex(), hex(), hex());
    std::fs::write(
        dir.join("ferry-registration.yaml"),
        format!(
            "id: benchferry\nurl: http://127.0.0.1:{FERRY_PORT}\nas_token: {ferry_as}\nhs_token: {ferry_hs}\n\
             sender_localpart: {PREFIX}bot\nrate_limited: false\nnamespaces:\n  users:\n  \
             - exclusive: true\n    regex: \"@{PREFIX}.*:localhost\"\n  aliases: []\n  rooms: []\n"
        ),
    )?;
    std::fs::write(
        dir.join("observer-registration.yaml"),
        format!(
            "id: benchobs\nurl: http://127.0.0.1:{OBS_PORT}\nas_token: {obs_as}\nhs_token: {obs_hs}\n\
             sender_localpart: benchobs\nrate_limited: false\nnamespaces:\n  users:\n  \
             - exclusive: true\n    regex: \"@benchobs.*:localhost\"\n  aliases: []\n  rooms:\n  \
             - exclusive: false\n    regex: \"!.*\"\n"
        ),
    )?;
    std::fs::write(
        dir.join("bench.json"),
        json!({"ferry_as": ferry_as, "ferry_hs": ferry_hs, "obs_as": obs_as, "obs_hs": obs_hs})
            .to_string(),
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Observers

/// When each message body was first seen.
#[derive(Default)]
struct Seen {
    at: Mutex<HashMap<String, Instant>>,
    notify: Notify,
}

impl Seen {
    fn record(&self, body: &str) {
        let now = Instant::now();
        self.at
            .lock()
            .expect("seen lock")
            .entry(body.to_owned())
            .or_insert(now);
        self.notify.notify_waiters();
    }

    /// Waits until every body is seen; returns the latest arrival.
    async fn wait_all(&self, bodies: &[String], within: Duration) -> Result<Instant> {
        let deadline = Instant::now() + within;
        loop {
            let notified = self.notify.notified();
            let (missing, last) = {
                let at = self.at.lock().expect("seen lock");
                let mut missing = 0;
                let mut last = None::<Instant>;
                for b in bodies {
                    match at.get(b) {
                        Some(t) => last = Some(last.map_or(*t, |l| l.max(*t))),
                        None => missing += 1,
                    }
                }
                (missing, last)
            };
            if missing == 0 {
                return Ok(last.unwrap_or_else(Instant::now));
            }
            if Instant::now() > deadline {
                bail!("{missing} of {} messages never arrived", bodies.len());
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
        }
    }
}

/// The observer appservice: records every m.room.message body Synapse pushes.
async fn start_observer(seen: Arc<Seen>) -> Result<()> {
    async fn txn(
        State(seen): State<Arc<Seen>>,
        AxPath(_id): AxPath<String>,
        Json(body): Json<Value>,
    ) -> Json<Value> {
        for event in body["events"].as_array().into_iter().flatten() {
            if event["type"] == "m.room.message"
                && let Some(text) = event["content"]["body"].as_str()
            {
                seen.record(text);
            }
        }
        Json(json!({}))
    }
    let router = Router::new()
        .route("/_matrix/app/v1/transactions/{id}", put(txn))
        .route(
            "/_matrix/app/v1/users/{id}",
            get(|| async { Json(json!({})) }),
        )
        .route("/_matrix/app/v1/ping", post(|| async { Json(json!({})) }))
        .with_state(seen);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", OBS_PORT)).await?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(())
}

/// Reads alice's sim event socket: every message in her chats, including ferry's sends.
async fn start_sim_socket(sim_url: &str, token: &str, seen: Arc<Seen>) -> Result<()> {
    let ws = sim_url.replacen("http", "ws", 1);
    let url = format!("{ws}/v1/events?since=0&token={token}");
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await?;
    tokio::spawn(async move {
        while let Some(Ok(message)) = socket.next().await {
            if let tokio_tungstenite::tungstenite::Message::Text(text) = message
                && let Ok(frame) = serde_json::from_str::<Value>(&text)
                && frame["type"] == "message"
                && frame["message"]["sender"] == "alice"
                && let Some(t) = frame["message"]["text"].as_str()
            {
                seen.record(t);
            }
        }
    });
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Small clients

struct Env {
    hs: String,
    synapse_dir: PathBuf,
    synapse_pid: u32,
    ferry_hs: String,
    /// ferry's appservice token: the bench sends as a ghost with it for the same-room baseline.
    ferry_as: String,
    obs_as: String,
    http: reqwest::Client,
}

impl Env {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.hs))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{path}: {status} {value}");
        }
        Ok(value)
    }

    /// Sends as the direct appservice user; returns the PUT round trip.
    async fn direct_send(&self, room: &str, body: &str) -> Result<Duration> {
        self.send_as(room, "@benchobs_direct:localhost", &self.obs_as, body)
            .await
    }

    /// Sends `body` into `room` as `user` of the appservice holding `token`; returns the PUT
    /// round trip.
    async fn send_as(&self, room: &str, user: &str, token: &str, body: &str) -> Result<Duration> {
        let t0 = Instant::now();
        self.call(
            reqwest::Method::PUT,
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/{}?user_id={}",
                enc(room),
                hex(),
                enc(user)
            ),
            token,
            Some(json!({"msgtype": "m.text", "body": body})),
        )
        .await?;
        Ok(t0.elapsed())
    }
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn harness(args: &[&str]) -> Result<String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/harness.py");
    let out = Command::new("python3").arg(script).args(args).output()?;
    if !out.status.success() {
        bail!("harness {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

struct SimClient {
    url: String,
    http: reqwest::Client,
}

impl SimClient {
    async fn control(&self, path: &str, body: Value) -> Result<Value> {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("sim {path}: {status} {value}");
        }
        Ok(value)
    }

    async fn post(&self, chat: &str, sender: &str, text: &str) -> Result<()> {
        self.control(
            &format!("/control/chats/{chat}/messages"),
            json!({"sender": sender, "text": text}),
        )
        .await
        .map(|_| ())
    }

    async fn login(&self, user: &str) -> Result<String> {
        let flow = self
            .control("/v1/login/start", json!({"username": user}))
            .await?;
        let code: Value = self
            .http
            .get(format!("{}/control/login-code/{user}", self.url))
            .send()
            .await?
            .json()
            .await?;
        let done = self
            .control(
                "/v1/login/finish",
                json!({"flow_id": flow["flow_id"], "code": code["code"]}),
            )
            .await?;
        Ok(done["token"].as_str().context("sim token")?.to_owned())
    }
}

// ---------------------------------------------------------------------------------------------
// Process measurements

/// CPU seconds (user + system) of a process.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    ticks / 100.0
}

/// Resident memory in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------------------------------------
// ferry under test

struct FerryProc {
    child: Child,
    dir: PathBuf,
}

impl FerryProc {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for FerryProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ferry_config(env: &Env, dir: &Path, db: &DatabaseConfig, sim_url: &str) -> Result<PathBuf> {
    let db_type = match db.kind {
        DatabaseType::Sqlite => "sqlite",
        DatabaseType::Postgres => "postgres",
    };
    let config = format!(
        "homeserver:\n  address: {hs}\n  domain: localhost\nappservice:\n  address: http://127.0.0.1:{FERRY_PORT}\n  \
         hostname: 127.0.0.1\n  port: {FERRY_PORT}\n  id: benchferry\n  registration: {reg}\n  bot:\n    \
         username: {PREFIX}bot\n    displayname: Bench bot\ndatabase:\n  type: {db_type}\n  uri: {uri}\n  \
         max_connections: 10\nbridge:\n  permissions:\n    \"localhost\": user\nnetworks:\n  sim:\n    \
         enabled: true\n    server: {sim_url}\n    ghost_prefix: {PREFIX}sim_\nlogging:\n  level: warn\n",
        hs = env.hs,
        reg = env
            .synapse_dir
            .parent()
            .context("state dir")?
            .join("ferry-registration.yaml")
            .display(),
        uri = db.uri,
    );
    let path = dir.join("config.yaml");
    std::fs::write(&path, config)?;
    Ok(path)
}

/// Starts ferry; returns it and the time until it answered its first transaction.
async fn start_ferry(env: &Env, bin: &Path, config: &Path) -> Result<(FerryProc, Duration)> {
    let dir = config.parent().context("config dir")?.to_owned();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("ferry.log"))?;
    let t0 = Instant::now();
    let child = Command::new(bin)
        .args(["-c", config.to_str().context("utf-8")?, "run"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("start ferry")?;
    let proc = FerryProc { child, dir };
    let deadline = t0 + Duration::from_secs(60);
    loop {
        let response = env
            .http
            .put(format!(
                "http://127.0.0.1:{FERRY_PORT}/_matrix/app/v1/transactions/start-{}",
                hex()
            ))
            .bearer_auth(&env.ferry_hs)
            .json(&json!({"events": []}))
            .send()
            .await;
        if response.is_ok_and(|r| r.status().is_success()) {
            return Ok((proc, t0.elapsed()));
        }
        if Instant::now() > deadline {
            bail!(
                "ferry did not answer a transaction; see {}",
                proc.dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn wait_queue_empty(env: &Env) {
    // ferry's metrics are off in the bench config (no extra listener); wait on the sim side
    // instead where it matters. Here: a short settle.
    let _ = env;
    tokio::time::sleep(Duration::from_secs(2)).await;
}

/// Creates a database for `kind`: a fresh SQLite file or Postgres database.
async fn fresh_db(kind: DatabaseType, dir: &Path, pg_url: &str) -> Result<DatabaseConfig> {
    let uri = match kind {
        DatabaseType::Sqlite => format!("sqlite://{}", dir.join("ferry.db").display()),
        DatabaseType::Postgres => {
            let name = format!("bench_{:08x}", rand::random::<u32>());
            let pool = sqlx::PgPool::connect(pg_url).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&pool)
                .await?;
            pool.close().await;
            let (prefix, _) = pg_url.rsplit_once('/').context("pg url")?;
            format!("{prefix}/{name}")
        }
    };
    Ok(DatabaseConfig {
        kind,
        uri,
        max_connections: 10,
    })
}

/// Inserts `n` portals (with rooms `!seedN:localhost`) and `n` registered ghosts.
async fn seed(db: &Db, n: usize) -> Result<()> {
    let now = ferry::db::now_ms();
    for start in (0..n).step_by(500) {
        let end = (start + 500).min(n);
        let mut portals = String::from(
            "INSERT INTO portal (network, chat_id, receiver, room_id, kind, name, created_at) VALUES ",
        );
        let mut ghosts =
            String::from("INSERT INTO ghost (network, remote_id, mxid, name, registered) VALUES ");
        for i in start..end {
            let sep = if i == start { "" } else { "," };
            portals.push_str(&format!(
                "{sep}('sim', 'seed{i}', '', '!seed{i}:localhost', 'group', 'Seed {i}', {now})"
            ));
            ghosts.push_str(&format!(
                "{sep}('sim', 'seed{i}', '@{PREFIX}sim_seed{i}:localhost', 'Seed {i}', 1)"
            ));
        }
        sqlx::query(sqlx::AssertSqlSafe(portals))
            .execute(db.pool())
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(ghosts))
            .execute(db.pool())
            .await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The run

/// One line of the table.
struct Row {
    figure: String,
    value: String,
    target: String,
    met: Option<bool>,
}

fn row(figure: &str, value: String, target: &str, met: Option<bool>) -> Row {
    Row {
        figure: figure.to_owned(),
        value,
        target: target.to_owned(),
        met,
    }
}

struct Sizes {
    latency_samples: usize,
    throughput_messages: usize,
    idle_portals: usize,
    startup_rows: usize,
}

async fn run(dir: &Path, ferry_bin: &Path, quick: bool) -> Result<()> {
    let sizes = if quick {
        Sizes {
            latency_samples: 30,
            throughput_messages: 1000,
            idle_portals: 1000,
            startup_rows: 10_000,
        }
    } else {
        Sizes {
            latency_samples: 200,
            throughput_messages: 10_000,
            idle_portals: 10_000,
            startup_rows: 100_000,
        }
    };
    let keys: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("bench.json"))?)?;
    let hs_env: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("synapse/env.json"))?)?;
    let pg_env: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("pg/env.json"))?)?;
    let env = Env {
        hs: hs_env["hs_url"].as_str().context("hs_url")?.to_owned(),
        synapse_dir: dir.join("synapse"),
        synapse_pid: u32::try_from(hs_env["pid"].as_u64().context("pid")?)?,
        ferry_hs: keys["ferry_hs"].as_str().context("key")?.to_owned(),
        ferry_as: keys["ferry_as"].as_str().context("key")?.to_owned(),
        obs_as: keys["obs_as"].as_str().context("key")?.to_owned(),
        http: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(120))
            .pool_max_idle_per_host(256)
            .build()?,
    };
    let pg_url = pg_env["url"].as_str().context("pg url")?.to_owned();
    let matrix_seen = Arc::new(Seen::default());
    start_observer(matrix_seen.clone()).await?;

    // The Matrix user (logs in to nothing itself: its sim login is stored for ferry).
    let user: Value = serde_json::from_str(&harness(&[
        "register-user",
        "--dir",
        env.synapse_dir.to_str().context("utf-8")?,
        "--user",
        "benchuser",
        "--password",
        "bench-password",
    ])?)?;
    let user_id = user["user_id"].as_str().context("user id")?.to_owned();
    let user_token = user["access_token"].as_str().context("token")?.to_owned();
    // The direct sender (a user of the observer appservice) and its room.
    env.call(
        reqwest::Method::POST,
        "/_matrix/client/v3/register",
        &env.obs_as,
        Some(json!({"type": "m.login.application_service", "username": "benchobs_direct"})),
    )
    .await?;
    let direct_room = env
        .call(
            reqwest::Method::POST,
            &format!(
                "/_matrix/client/v3/createRoom?user_id={}",
                enc("@benchobs_direct:localhost")
            ),
            &env.obs_as,
            Some(json!({"preset": "private_chat"})),
        )
        .await?["room_id"]
        .as_str()
        .context("room")?
        .to_owned();

    let mut tables = Vec::new();
    for kind in [DatabaseType::Sqlite, DatabaseType::Postgres] {
        let name = match kind {
            DatabaseType::Sqlite => "SQLite",
            DatabaseType::Postgres => "PostgreSQL",
        };
        eprintln!("bench: ---- {name} ----");
        let rows = run_backend(
            &env,
            kind,
            dir,
            &pg_url,
            ferry_bin,
            &sizes,
            &matrix_seen,
            &direct_room,
            &user_id,
            &user_token,
        )
        .await
        .with_context(|| format!("{name} run"))?;
        tables.push((name, rows));
    }
    println!("| figure | target | SQLite | met | PostgreSQL | met |");
    println!("|---|---|---|---|---|---|");
    let (_, sqlite) = &tables[0];
    let (_, postgres) = &tables[1];
    for (a, b) in sqlite.iter().zip(postgres) {
        let met = |m: Option<bool>| match m {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            a.figure,
            a.target,
            a.value,
            met(a.met),
            b.value,
            met(b.met)
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn run_backend(
    env: &Env,
    kind: DatabaseType,
    dir: &Path,
    pg_url: &str,
    ferry_bin: &Path,
    sizes: &Sizes,
    matrix_seen: &Arc<Seen>,
    direct_room: &str,
    user_id: &str,
    user_token: &str,
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let run_dir = dir.join(format!("run-{:?}", kind).to_lowercase());
    std::fs::create_dir_all(&run_dir)?;
    let tag = &hex()[..6];

    // Sim: alice and her contacts, one DM each.
    let sim_server = testnet::sim::SimServer::start("127.0.0.1:0").await?;
    let sim = SimClient {
        url: sim_server.url(),
        http: env.http.clone(),
    };
    sim.control("/control/users", json!({"id": "alice", "name": "Alice"}))
        .await?;
    let mut chats = Vec::new();
    for i in 0..PORTALS {
        let id = format!("c{i}");
        sim.control(
            "/control/users",
            json!({"id": id, "name": format!("Contact {i}")}),
        )
        .await?;
        let chat = sim
            .control("/control/dms", json!({"a": "alice", "b": id}))
            .await?;
        chats.push((id, chat["id"].as_str().context("chat")?.to_owned()));
    }
    let ferry_token = sim.login("alice").await?;
    let observer_token = sim.login("alice").await?;
    let sim_seen = Arc::new(Seen::default());
    start_sim_socket(&sim.url, &observer_token, sim_seen.clone()).await?;

    // ferry's database: the login stored as after `login sim`.
    let db_config = fresh_db(kind, &run_dir, pg_url).await?;
    let db = Db::connect(&db_config).await?;
    db.upsert_login(&LoginRow {
        network: "sim".to_owned(),
        login_id: "alice".to_owned(),
        user_mxid: user_id.to_owned(),
        remote_name: "Alice".to_owned(),
        secret: json!({"token": ferry_token}),
        checkpoint: None,
    })
    .await?;
    db.close().await;
    let config = ferry_config(env, &run_dir, &db_config, &sim.url)?;
    let (ferry, _) = start_ferry(env, ferry_bin, &config).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = rss_kib(ferry.pid());

    // Portals: the first message of each chat creates its room; the user joins them all.
    let warm: Vec<String> = (0..PORTALS).map(|i| format!("{tag} warm {i}")).collect();
    for (i, (contact, chat)) in chats.iter().enumerate() {
        sim.post(chat, contact, &warm[i]).await?;
    }
    matrix_seen
        .wait_all(&warm, Duration::from_secs(600))
        .await
        .context("portal creation")?;
    // Map rooms to chats: ferry answers from its database.
    let db = Db::connect(&db_config).await?;
    let portal_rows: Vec<(String, String)> =
        sqlx::query_as("SELECT chat_id, room_id FROM portal WHERE room_id IS NOT NULL")
            .fetch_all(db.pool())
            .await?;
    db.close().await;
    let room_of: HashMap<String, String> = portal_rows.into_iter().collect();
    let rooms: Vec<String> = chats
        .iter()
        .map(|(_, chat)| room_of.get(chat).cloned().context("portal room"))
        .collect::<Result<_>>()?;
    // The user was invited at creation; join by id (an initial /sync may be cached).
    for room in &rooms {
        env.call(
            reqwest::Method::POST,
            &format!("/_matrix/client/v3/join/{}", enc(room)),
            user_token,
            Some(json!({})),
        )
        .await?;
    }
    eprintln!("bench: {} portals ready", rooms.len());

    // L_direct: the appservice sending directly, PUT round trip and send -> observed.
    let mut direct_put = Vec::new();
    let mut direct_seen = Vec::new();
    for i in 0..sizes.latency_samples {
        let body = format!("{tag} direct {i}");
        let t0 = Instant::now();
        direct_put.push(env.direct_send(direct_room, &body).await?);
        let seen = matrix_seen
            .wait_all(std::slice::from_ref(&body), Duration::from_secs(30))
            .await?;
        direct_seen.push(seen - t0);
    }
    let l_direct = percentile(&direct_put, 0.5);
    let (d50, d99) = (
        percentile(&direct_seen, 0.5),
        percentile(&direct_seen, 0.99),
    );
    rows.push(row(
        "L_direct: appservice PUT /send p50 / p99 (ms)",
        format!(
            "{:.1} / {:.1}",
            ms(l_direct),
            ms(percentile(&direct_put, 0.99))
        ),
        "(baseline)",
        None,
    ));
    rows.push(row(
        "direct send -> visible to an appservice, p50 / p99 (ms)",
        format!("{:.1} / {:.1}", ms(d50), ms(d99)),
        "(baseline)",
        None,
    ));

    // The same message sent directly: the ghost of portal 0's contact sends into portal 0's
    // room with ferry's appservice token, so Synapse does exactly the work a bridged message
    // costs it (same room, same members, pushed to the same two appservices); ferry ignores
    // the echo of its own ghost. Interleaved with G1 so both see the same machine load.
    let (contact, chat) = &chats[0];
    let ghost = format!("@{PREFIX}sim_{contact}:localhost");
    let mut bridged = Vec::new();
    let mut same_room = Vec::new();
    for i in 0..sizes.latency_samples {
        let body = format!("{tag} g1 {i}");
        let t0 = Instant::now();
        sim.post(chat, contact, &body).await?;
        let seen = matrix_seen
            .wait_all(std::slice::from_ref(&body), Duration::from_secs(30))
            .await?;
        bridged.push(seen - t0);
        let body = format!("{tag} g1 direct {i}");
        let t0 = Instant::now();
        env.send_as(&rooms[0], &ghost, &env.ferry_as, &body).await?;
        let seen = matrix_seen
            .wait_all(std::slice::from_ref(&body), Duration::from_secs(30))
            .await?;
        same_room.push(seen - t0);
    }
    let (s50, s99) = (percentile(&same_room, 0.5), percentile(&same_room, 0.99));
    rows.push(row(
        "same message sent directly (the ghost, as the appservice, into the portal room) -> visible, p50 / p99 (ms)",
        format!("{:.1} / {:.1}", ms(s50), ms(s99)),
        "(baseline of G1)",
        None,
    ));
    let (b50, b99) = (percentile(&bridged, 0.5), percentile(&bridged, 0.99));
    let (r50, r99) = (
        b50.as_secs_f64() / s50.as_secs_f64(),
        b99.as_secs_f64() / s99.as_secs_f64(),
    );
    rows.push(row(
        "G1 sim -> Matrix latency ÷ same message sent directly, p50 / p99",
        format!(
            "{r50:.2} / {r99:.2} ({:.1} / {:.1} ms; ÷ the private-room baseline: {:.2} / {:.2})",
            ms(b50),
            ms(b99),
            b50.as_secs_f64() / d50.as_secs_f64(),
            b99.as_secs_f64() / d99.as_secs_f64()
        ),
        "≤ 1.10 / ≤ 1.25",
        Some(r50 <= 1.10 && r99 <= 1.25),
    ));

    // Matrix -> sim latency: the user sends in portal 0, seen on alice's socket.
    let mut outbound = Vec::new();
    let mut outbound_direct = Vec::new();
    for i in 0..sizes.latency_samples {
        let body = format!("{tag} out {i}");
        let t0 = Instant::now();
        env.call(
            reqwest::Method::PUT,
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
                enc(&rooms[0]),
                hex()
            ),
            user_token,
            Some(json!({"msgtype": "m.text", "body": body})),
        )
        .await?;
        let seen = sim_seen
            .wait_all(std::slice::from_ref(&body), Duration::from_secs(30))
            .await?;
        outbound.push(seen - t0);
        // The same message as the homeserver delivers it to an appservice (the observer is
        // pushed it alongside ferry).
        let observed = matrix_seen
            .wait_all(std::slice::from_ref(&body), Duration::from_secs(30))
            .await?;
        outbound_direct.push(observed - t0);
    }
    let (o50, o99) = (percentile(&outbound, 0.5), percentile(&outbound, 0.99));
    let (x50, x99) = (
        percentile(&outbound_direct, 0.5),
        percentile(&outbound_direct, 0.99),
    );
    let (q50, q99) = (
        o50.as_secs_f64() / x50.as_secs_f64(),
        o99.as_secs_f64() / x99.as_secs_f64(),
    );
    rows.push(row(
        "Matrix -> sim latency ÷ the same message delivered to an appservice, p50 / p99",
        format!(
            "{q50:.2} / {q99:.2} ({:.1} / {:.1} ms vs {:.1} / {:.1} ms; ÷ the private-room baseline: {:.2} / {:.2})",
            ms(o50),
            ms(o99),
            ms(x50),
            ms(x99),
            o50.as_secs_f64() / d50.as_secs_f64(),
            o99.as_secs_f64() / d99.as_secs_f64()
        ),
        "≤ 1.10 / ≤ 1.25",
        Some(q50 <= 1.10 && q99 <= 1.25),
    ));

    // G2: 100-event transactions straight to ferry (the user's messages in portal rooms).
    let mut acks = Vec::new();
    let mut g2_bodies = Vec::new();
    let txns = if sizes.latency_samples >= 200 { 20 } else { 5 };
    for t in 0..txns {
        let events: Vec<Value> = (0..100)
            .map(|i| {
                let body = format!("{tag} g2 {t} {i}");
                g2_bodies.push(body.clone());
                json!({"type": "m.room.message", "room_id": rooms[i % rooms.len()], "sender": user_id,
                       "event_id": format!("${tag}g2x{t}x{i}"), "origin_server_ts": 1,
                       "content": {"msgtype": "m.text", "body": body}})
            })
            .collect();
        let t0 = Instant::now();
        let response = env
            .http
            .put(format!(
                "http://127.0.0.1:{FERRY_PORT}/_matrix/app/v1/transactions/{tag}-g2-{t}"
            ))
            .bearer_auth(&env.ferry_hs)
            .json(&json!({"events": events}))
            .send()
            .await?;
        acks.push(t0.elapsed());
        if !response.status().is_success() {
            bail!("G2 transaction refused: {}", response.status());
        }
        // One at a time, as Synapse sends them; the bridging behind it drains meanwhile.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let g2_started = Instant::now();
    let g2_last = sim_seen
        .wait_all(&g2_bodies, Duration::from_secs(300))
        .await?;
    let _ = (g2_started, g2_last);
    let ack50 = percentile(&acks, 0.5);
    let g2 = ack50.as_secs_f64() / l_direct.as_secs_f64();
    rows.push(row(
        "G2 100-event transaction ack p50 ÷ L_direct p50",
        format!("{g2:.2} ({:.1} ms)", ms(ack50)),
        "≤ 0.5",
        Some(g2 <= 0.5),
    ));

    // Matrix -> sim throughput: 1,000 events in 10 transactions, over 1 portal vs 100.
    // CPU use alongside: what bounds the rate (ferry's process; the bench's own, which holds
    // the sim server and the senders).
    let mut out_rates = Vec::new();
    let mut out_cores = Vec::new();
    for spread in [1usize, PORTALS] {
        let mut bodies = Vec::new();
        let (ferry_cpu0, bench_cpu0) = (cpu_seconds(ferry.pid()), cpu_seconds(std::process::id()));
        let t0 = Instant::now();
        for t in 0..10 {
            let events: Vec<Value> = (0..100)
                .map(|i| {
                    let body = format!("{tag} mt {spread} {t} {i}");
                    bodies.push(body.clone());
                    json!({"type": "m.room.message", "room_id": rooms[i % spread], "sender": user_id,
                           "event_id": format!("${tag}mt{spread}x{t}x{i}"), "origin_server_ts": 1,
                           "content": {"msgtype": "m.text", "body": body}})
                })
                .collect();
            env.http
                .put(format!(
                    "http://127.0.0.1:{FERRY_PORT}/_matrix/app/v1/transactions/{tag}-mt-{spread}-{t}"
                ))
                .bearer_auth(&env.ferry_hs)
                .json(&json!({"events": events}))
                .send()
                .await?;
        }
        let last = sim_seen.wait_all(&bodies, Duration::from_secs(300)).await?;
        let wall = (last - t0).as_secs_f64();
        out_rates.push(bodies.len() as f64 / wall);
        out_cores.push((
            (cpu_seconds(ferry.pid()) - ferry_cpu0) / wall,
            (cpu_seconds(std::process::id()) - bench_cpu0) / wall,
        ));
    }
    let out_ratio = out_rates[1] / out_rates[0];
    rows.push(row(
        "Matrix -> sim throughput, 100 portals ÷ 1 (msg/s; cores busy: ferry + sim/bench)",
        format!(
            "{out_ratio:.1}x ({:.0} vs {:.0}; {:.2} + {:.2} vs {:.2} + {:.2} cores)",
            out_rates[1],
            out_rates[0],
            out_cores[1].0,
            out_cores[1].1,
            out_cores[0].0,
            out_cores[0].1
        ),
        "≥ 10x",
        Some(out_ratio >= 10.0),
    ));

    // G4 1 portal: sim -> Matrix throughput into one portal.
    let one: Vec<String> = (0..200.min(sizes.throughput_messages))
        .map(|i| format!("{tag} one {i}"))
        .collect();
    let t0 = Instant::now();
    for body in &one {
        sim.post(chat, contact, body).await?;
    }
    let last = matrix_seen.wait_all(&one, Duration::from_secs(300)).await?;
    let rate_one = one.len() as f64 / (last - t0).as_secs_f64();

    // G3, G4, G5 peak: N messages over 100 portals.
    let n = sizes.throughput_messages;
    let bodies: Vec<String> = (0..n).map(|i| format!("{tag} many {i}")).collect();
    let (ferry_cpu0, synapse_cpu0) = (cpu_seconds(ferry.pid()), cpu_seconds(env.synapse_pid));
    let peak = Arc::new(Mutex::new(0u64));
    let sampler = {
        let (pid, peak) = (ferry.pid(), peak.clone());
        tokio::spawn(async move {
            loop {
                let rss = rss_kib(pid);
                {
                    let mut p = peak.lock().expect("peak");
                    *p = (*p).max(rss);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let t0 = Instant::now();
    let posts: Vec<_> = (0..4)
        .map(|w| {
            let sim = SimClient {
                url: sim.url.clone(),
                http: env.http.clone(),
            };
            let chats = chats.clone();
            let bodies = bodies.clone();
            tokio::spawn(async move {
                for (i, body) in bodies.iter().enumerate().skip(w).step_by(4) {
                    let (contact, chat) = &chats[i % PORTALS];
                    sim.post(chat, contact, body).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for p in posts {
        p.await??;
    }
    let last = matrix_seen
        .wait_all(&bodies, Duration::from_secs(1800))
        .await?;
    sampler.abort();
    let elapsed = (last - t0).as_secs_f64();
    let ferry_cpu = cpu_seconds(ferry.pid()) - ferry_cpu0;
    let synapse_cpu = cpu_seconds(env.synapse_pid) - synapse_cpu0;
    let rate_many = n as f64 / elapsed;
    let g3 = ferry_cpu / synapse_cpu.max(0.001);
    rows.push(row(
        &format!("G3 ferry CPU ÷ Synapse CPU, {n} bridged messages"),
        format!(
            "{g3:.3} ({:.2} s ÷ {:.1} s; {:.0} µs/msg)",
            ferry_cpu,
            synapse_cpu,
            ferry_cpu / n as f64 * 1e6
        ),
        "≤ 0.10",
        Some(g3 <= 0.10),
    ));
    let g4 = rate_many / rate_one;
    rows.push(row(
        "G4 sim -> Matrix throughput, 100 portals ÷ 1 (msg/s; Synapse's cores busy at 100)",
        format!(
            "{g4:.1}x ({rate_many:.0} vs {rate_one:.0}; Synapse {:.2} cores, ferry {:.2})",
            synapse_cpu / elapsed,
            ferry_cpu / elapsed
        ),
        "≥ 10x (bounded by Synapse)",
        Some(g4 >= 10.0),
    ));
    let peak_rss = *peak.lock().expect("peak");
    drop(ferry);

    // G5: idle portals. A database with N portals and N ghosts; RSS after start, then with a
    // worker loaded for each (an event routed to every portal), then after they retire.
    std::fs::create_dir_all(run_dir.join("idle"))?;
    let db_config2 = fresh_db(kind, &run_dir.join("idle"), pg_url).await?;
    let db = Db::connect(&db_config2).await?;
    db.close().await;
    let config2 = ferry_config(env, &run_dir, &db_config2, &sim.url)?;
    let (empty, _) = start_ferry(env, ferry_bin, &config2).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let empty_rss = rss_kib(empty.pid());
    drop(empty);
    let db = Db::connect(&db_config2).await?;
    seed(&db, sizes.idle_portals).await?;
    db.close().await;
    let (seeded, _) = start_ferry(env, ferry_bin, &config2).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seeded_rss = rss_kib(seeded.pid());
    for chunk in (0..sizes.idle_portals).collect::<Vec<_>>().chunks(500) {
        let events: Vec<Value> = chunk
            .iter()
            .map(|i| {
                json!({"type": "m.room.topic", "room_id": format!("!seed{i}:localhost"),
                       "sender": user_id, "event_id": format!("${tag}idle{i}"), "state_key": "",
                       "content": {"topic": "x"}})
            })
            .collect();
        env.http
            .put(format!(
                "http://127.0.0.1:{FERRY_PORT}/_matrix/app/v1/transactions/{tag}-idle-{}",
                chunk[0]
            ))
            .bearer_auth(&env.ferry_hs)
            .json(&json!({"events": events}))
            .send()
            .await?;
    }
    wait_queue_empty(env).await;
    let loaded_rss = rss_kib(seeded.pid());
    drop(seeded);
    let per_idle = (seeded_rss as f64 - empty_rss as f64) * 1024.0 / sizes.idle_portals as f64;
    let per_loaded = (loaded_rss as f64 - empty_rss as f64) * 1024.0 / sizes.idle_portals as f64;
    rows.push(row(
        "G5 RSS idle, sim enabled, one login (MiB)",
        format!("{:.1}", idle_rss as f64 / 1024.0),
        "(reported)",
        None,
    ));
    rows.push(row(
        &format!(
            "G5 RSS per idle portal+ghost, {} in the database (bytes)",
            sizes.idle_portals
        ),
        format!("{per_idle:.0}"),
        "≤ 4096",
        Some(per_idle <= 4096.0),
    ));
    rows.push(row(
        &format!(
            "G5 RSS per portal with its worker loaded, {} portals (bytes)",
            sizes.idle_portals
        ),
        format!("{per_loaded:.0}"),
        "(reported)",
        None,
    ));
    rows.push(row(
        &format!("G5 peak RSS during the {n}-message run (MiB)"),
        format!("{:.1}", peak_rss as f64 / 1024.0),
        "(reported)",
        None,
    ));

    // G6: start-up with N portals and N ghosts vs an empty database; G7 on the large one.
    let mut startup = HashMap::new();
    for rows_n in [0, sizes.startup_rows] {
        let sub = run_dir.join(format!("startup-{rows_n}"));
        std::fs::create_dir_all(&sub)?;
        let cfg = fresh_db(kind, &sub, pg_url).await?;
        let db = Db::connect(&cfg).await?;
        seed(&db, rows_n).await?;
        db.close().await;
        let config = ferry_config(env, &sub, &cfg, &sim.url)?;
        let mut times = Vec::new();
        for _ in 0..5 {
            let (proc, took) = start_ferry(env, ferry_bin, &config).await?;
            times.push(took);
            if rows_n > 0 && times.len() == 5 {
                // G7: /users for registered ghosts, p99.
                let mut queries = Vec::new();
                for i in 0..1000 {
                    let ghost = format!("@{PREFIX}sim_seed{}:localhost", (i * 97) % rows_n);
                    let t0 = Instant::now();
                    let response = env
                        .http
                        .get(format!(
                            "http://127.0.0.1:{FERRY_PORT}/_matrix/app/v1/users/{}",
                            enc(&ghost)
                        ))
                        .bearer_auth(&env.ferry_hs)
                        .send()
                        .await?;
                    queries.push(t0.elapsed());
                    if !response.status().is_success() {
                        bail!("user query for {ghost}: {}", response.status());
                    }
                }
                let q99 = percentile(&queries, 0.99);
                let g7 = q99.as_secs_f64() / l_direct.as_secs_f64();
                startup.insert("g7", (g7, q99));
            }
            drop(proc);
        }
        startup.insert(
            if rows_n == 0 { "empty" } else { "full" },
            (0.0, percentile(&times, 0.5)),
        );
    }
    let (empty_t, full_t) = (startup["empty"].1, startup["full"].1);
    let g6 = full_t.as_secs_f64() / empty_t.as_secs_f64();
    rows.push(row(
        &format!(
            "G6 start-up to first transaction, {} portals + ghosts ÷ empty",
            sizes.startup_rows
        ),
        format!("{g6:.2} ({:.0} ms vs {:.0} ms)", ms(full_t), ms(empty_t)),
        "≤ 1.5",
        Some(g6 <= 1.5),
    ));
    let (g7, q99) = startup["g7"];
    rows.push(row(
        &format!(
            "G7 /users query p99 ({} ghosts) ÷ L_direct p50",
            sizes.startup_rows
        ),
        format!("{g7:.3} ({:.2} ms)", ms(q99)),
        "≤ 0.05",
        Some(g7 <= 0.05),
    ));
    Ok(rows)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("write-registrations") => write_registrations(Path::new(args.get(2).context("DIR")?)),
        Some("run") => {
            let dir = PathBuf::from(args.get(2).context("DIR")?);
            let bin = PathBuf::from(args.get(3).context("FERRY_BIN")?);
            let quick = args.iter().any(|a| a == "--quick");
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?
                .block_on(run(&dir, &bin, quick))
        }
        _ => bail!("usage: ferry-bench write-registrations DIR | run DIR FERRY_BIN [--quick]"),
    }
}
