//! The store suite: every database operation the bridge relies on, checked against both backends.
//!
//! ferry keeps one portable SQL string per query and runs it through sqlx's `Any` driver on
//! SQLite and on PostgreSQL. That only holds if the two dialects really agree, so each test here
//! is written once (an async fn taking a fresh, migrated [`Db`]) and instantiated twice by
//! [`store_tests!`]: `<name>_sqlite` on a new SQLite file in a random temp dir and `<name>_postgres`
//! on a new, randomly named database in the PostgreSQL cluster at `FERRY_TEST_PG_URL` (started by
//! `scripts/test.sh`). A missing `FERRY_TEST_PG_URL` fails the Postgres half, so a run that never
//! touched Postgres cannot pass as green, unless `FERRY_TEST_ALLOW_NO_PG=1` says so explicitly.

use std::{collections::BTreeSet, path::PathBuf, time::Duration};

use ferry::{
    config::{DatabaseConfig, DatabaseType},
    db::{
        Db, ghosts::GhostRow, inbox::InboxEntry, logins::LoginRow, messages::MessageRow, now_ms,
        portals::PortalRow, reactions::ReactionRow,
    },
};
use serde_json::json;
use sqlx::Connection;

// ---------------------------------------------------------------------------------------------
// Harness: one fresh database per test, on each backend.

/// The pool size the bridge uses by default (`database.max_connections`).
const MAX_CONNECTIONS: u32 = 10;

fn random_suffix() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A fresh database that is removed again once the test has passed (a failed test leaves it
/// behind for inspection).
struct Fresh {
    config: DatabaseConfig,
    cleanup: Cleanup,
}

enum Cleanup {
    Dir(PathBuf),
    PgDatabase { admin_url: String, name: String },
}

impl Fresh {
    fn sqlite() -> Self {
        let dir = std::env::temp_dir().join(format!("ferry-store-{}", random_suffix()));
        std::fs::create_dir_all(&dir).expect("create temp dir for the SQLite database");
        let config = DatabaseConfig {
            kind: DatabaseType::Sqlite,
            uri: format!("sqlite://{}", dir.join("ferry.db").display()),
            max_connections: MAX_CONNECTIONS,
        };
        Self {
            config,
            cleanup: Cleanup::Dir(dir),
        }
    }

    /// `None` when Postgres is not configured and `FERRY_TEST_ALLOW_NO_PG=1` allows skipping.
    async fn postgres() -> Option<Self> {
        let Ok(admin_url) = std::env::var("FERRY_TEST_PG_URL") else {
            if std::env::var("FERRY_TEST_ALLOW_NO_PG").as_deref() == Ok("1") {
                eprintln!(
                    "note: FERRY_TEST_PG_URL is not set and FERRY_TEST_ALLOW_NO_PG=1: \
                     the PostgreSQL half of this test was NOT run"
                );
                return None;
            }
            panic!(
                "FERRY_TEST_PG_URL is not set, so the PostgreSQL half of the store suite cannot \
                 run: run the tests through scripts/test.sh (it starts a throw-away PostgreSQL \
                 and sets FERRY_TEST_PG_URL), or set FERRY_TEST_ALLOW_NO_PG=1 to skip it knowingly"
            );
        };
        let name = format!("ferry_store_{}", random_suffix());
        let mut conn = sqlx::postgres::PgConnection::connect(&admin_url)
            .await
            .expect("connect to FERRY_TEST_PG_URL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        conn.close().await.expect("close the admin connection");
        let mut url = url::Url::parse(&admin_url).expect("FERRY_TEST_PG_URL is a URL");
        url.set_path(&name);
        let config = DatabaseConfig {
            kind: DatabaseType::Postgres,
            uri: url.to_string(),
            max_connections: MAX_CONNECTIONS,
        };
        Some(Self {
            config,
            cleanup: Cleanup::PgDatabase { admin_url, name },
        })
    }

    async fn remove(self) {
        match self.cleanup {
            Cleanup::Dir(dir) => {
                std::fs::remove_dir_all(&dir).expect("remove the SQLite temp dir");
            }
            Cleanup::PgDatabase { admin_url, name } => {
                let mut conn = sqlx::postgres::PgConnection::connect(&admin_url)
                    .await
                    .expect("connect to FERRY_TEST_PG_URL");
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await
                .expect("drop the test database");
                conn.close().await.expect("close the admin connection");
            }
        }
    }
}

/// Connects to a fresh database, runs `test` on it, and removes the database afterwards.
async fn run<F, Fut>(fresh: Option<Fresh>, test: F)
where
    F: FnOnce(Db, DatabaseConfig) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(fresh) = fresh else { return };
    let db = Db::connect(&fresh.config)
        .await
        .expect("connect to the fresh test database and apply migrations");
    test(db.clone(), fresh.config.clone()).await;
    db.close().await;
    fresh.remove().await;
}

/// Instantiates each listed test once per backend: `name => name_sqlite, name_postgres;`.
/// A test is `async fn(Db)`, or `async fn(Db, DatabaseConfig)` when marked `with config`.
macro_rules! store_tests {
    (@call $name:ident, $db:ident, $config:ident) => { $name($db) };
    (@call $name:ident with config, $db:ident, $config:ident) => { $name($db, $config) };
    ($( $name:ident $(with $cfg:ident)? => $sqlite:ident, $postgres:ident; )*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            run(Some(Fresh::sqlite()), |db, _config| async move {
                store_tests!(@call $name $(with $cfg)?, db, _config).await
            })
            .await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            run(Fresh::postgres().await, |db, _config| async move {
                store_tests!(@call $name $(with $cfg)?, db, _config).await
            })
            .await;
        }
    )*};
}

store_tests! {
    migrations_apply_once with config => migrations_apply_once_sqlite, migrations_apply_once_postgres;
    sqlite_connection_settings => sqlite_connection_settings_sqlite, sqlite_connection_settings_postgres;
    kv_roundtrip => kv_roundtrip_sqlite, kv_roundtrip_postgres;
    users_and_management_rooms => users_and_management_rooms_sqlite, users_and_management_rooms_postgres;
    logins_lifecycle => logins_lifecycle_sqlite, logins_lifecycle_postgres;
    logins_ordering => logins_ordering_sqlite, logins_ordering_postgres;
    checkpoint_only_moves_forward => checkpoint_only_moves_forward_sqlite, checkpoint_only_moves_forward_postgres;
    deleting_user_cascades_to_logins => deleting_user_cascades_to_logins_sqlite, deleting_user_cascades_to_logins_postgres;
    portals_lifecycle => portals_lifecycle_sqlite, portals_lifecycle_postgres;
    portal_room_is_unique => portal_room_is_unique_sqlite, portal_room_is_unique_postgres;
    deleting_portal_cascades => deleting_portal_cascades_sqlite, deleting_portal_cascades_postgres;
    ghosts_roundtrip => ghosts_roundtrip_sqlite, ghosts_roundtrip_postgres;
    messages_are_idempotent => messages_are_idempotent_sqlite, messages_are_idempotent_postgres;
    message_needs_portal => message_needs_portal_sqlite, message_needs_portal_postgres;
    reactions_lifecycle => reactions_lifecycle_sqlite, reactions_lifecycle_postgres;
    inbox_transactions => inbox_transactions_sqlite, inbox_transactions_postgres;
    inbox_large_transaction => inbox_large_transaction_sqlite, inbox_large_transaction_postgres;
    prune_removes_only_old_transactions => prune_removes_only_old_transactions_sqlite, prune_removes_only_old_transactions_postgres;
    concurrent_transactions => concurrent_transactions_sqlite, concurrent_transactions_postgres;
    hostile_data_roundtrips => hostile_data_roundtrips_sqlite, hostile_data_roundtrips_postgres;
}

// ---------------------------------------------------------------------------------------------
// Fixtures.

fn login(network: &str, login_id: &str, user: &str, secret: serde_json::Value) -> LoginRow {
    LoginRow {
        network: network.into(),
        login_id: login_id.into(),
        user_mxid: user.into(),
        remote_name: format!("{login_id} on {network}"),
        secret,
        checkpoint: None,
    }
}

/// Logins compare as (network, login_id, owner, name, secret, checkpoint): `LoginRow` has no `Eq`.
fn login_key(row: &LoginRow) -> (String, String, String, String, String, Option<i64>) {
    (
        row.network.clone(),
        row.login_id.clone(),
        row.user_mxid.clone(),
        row.remote_name.clone(),
        row.secret.to_string(),
        row.checkpoint,
    )
}

fn portal(network: &str, chat_id: &str, receiver: &str) -> PortalRow {
    PortalRow {
        network: network.into(),
        chat_id: chat_id.into(),
        receiver: receiver.into(),
        room_id: None,
        kind: "group".into(),
        name: Some(format!("chat {chat_id}")),
        topic: None,
        avatar_mxc: None,
        relay_login: None,
    }
}

fn message(p: &PortalRow, remote_id: &str, part_id: &str, event_id: &str) -> MessageRow {
    MessageRow {
        network: p.network.clone(),
        chat_id: p.chat_id.clone(),
        receiver: p.receiver.clone(),
        remote_id: remote_id.into(),
        part_id: part_id.into(),
        event_id: event_id.into(),
        room_id: p
            .room_id
            .clone()
            .unwrap_or_else(|| "!room:example.org".into()),
        sender_remote: "alice".into(),
        sender_mxid: "@sim_alice:example.org".into(),
        ts: 1_700_000_000_000,
    }
}

fn reaction(m: &MessageRow, sender: &str, emoji: &str, event_id: &str) -> ReactionRow {
    ReactionRow {
        network: m.network.clone(),
        chat_id: m.chat_id.clone(),
        receiver: m.receiver.clone(),
        message_id: m.remote_id.clone(),
        part_id: m.part_id.clone(),
        sender_remote: sender.into(),
        emoji: emoji.into(),
        event_id: event_id.into(),
        ts: 1_700_000_000_500,
    }
}

async fn count(db: &Db, sql: &'static str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql)
        .fetch_one(db.pool())
        .await
        .expect("count query");
    n
}

async fn count_where(db: &Db, sql: &'static str, arg: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql)
        .bind(arg)
        .fetch_one(db.pool())
        .await
        .expect("count query");
    n
}

fn events(txn: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| json!({"txn": txn, "seq": i, "type": "m.room.message"}).to_string())
        .collect()
}

fn assert_ids_increase(entries: &[InboxEntry]) {
    for pair in entries.windows(2) {
        assert!(
            pair[0].id < pair[1].id,
            "inbox ids must increase in event order: {} then {}",
            pair[0].id,
            pair[1].id
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Schema and connection.

async fn migrations_apply_once(db: Db, config: DatabaseConfig) {
    let tables = [
        "kv_store",
        "matrix_user",
        "remote_login",
        "portal",
        "ghost",
        "message",
        "reaction",
        "as_txn",
        "inbox",
        "remote_inbox",
    ];
    for table in tables {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_one(db.pool())
            .await
            .unwrap_or_else(|e| panic!("table {table} exists after migrating: {e}"));
        assert_eq!(n, 0, "table {table} starts empty");
    }
    let applied = count(&db, "SELECT COUNT(*) FROM _sqlx_migrations WHERE success").await;
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
        .expect("migrations")
        .count() as i64;
    assert_eq!(applied, files, "every migration is recorded once");

    db.kv_set("survives", "reconnect").await.expect("kv_set");

    // A restart connects (and migrates) again: nothing may be re-applied or lost.
    let again = Db::connect(&config)
        .await
        .expect("second connect to the same database re-runs migrations as a no-op");
    assert_eq!(
        count(&again, "SELECT COUNT(*) FROM _sqlx_migrations").await,
        files,
        "reconnecting records no further migration"
    );
    assert_eq!(
        again.kv_get("survives").await.expect("kv_get").as_deref(),
        Some("reconnect"),
        "data written before the reconnect is still there"
    );
    again.ping().await.expect("ping");
    again.close().await;
    db.ping().await.expect("the first handle still works");
}

/// SQLite must run in WAL mode with foreign keys enforced on every pooled connection (the
/// cascades below depend on it). Postgres has neither setting; the test is a no-op there.
async fn sqlite_connection_settings(db: Db) {
    if db.kind() != DatabaseType::Sqlite {
        return;
    }
    // Hold several connections at once so that more than one physical connection is checked.
    let mut conns = Vec::new();
    for _ in 0..3 {
        conns.push(db.pool().acquire().await.expect("acquire a connection"));
    }
    for conn in &mut conns {
        let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
            .fetch_one(&mut **conn)
            .await
            .expect("PRAGMA journal_mode");
        assert_eq!(mode.to_ascii_lowercase(), "wal");
        let (fk,): (i64,) = sqlx::query_as("PRAGMA foreign_keys")
            .fetch_one(&mut **conn)
            .await
            .expect("PRAGMA foreign_keys");
        assert_eq!(fk, 1, "foreign keys are enforced");
        let (sync,): (i64,) = sqlx::query_as("PRAGMA synchronous")
            .fetch_one(&mut **conn)
            .await
            .expect("PRAGMA synchronous");
        assert_eq!(sync, 1, "synchronous = NORMAL");
    }
}

// ---------------------------------------------------------------------------------------------
// kv and users.

async fn kv_roundtrip(db: Db) {
    assert_eq!(db.kv_get("missing").await.expect("kv_get"), None);
    db.kv_set("first_start_done", "1").await.expect("kv_set");
    db.kv_set("other", "x").await.expect("kv_set");
    assert_eq!(
        db.kv_get("first_start_done")
            .await
            .expect("kv_get")
            .as_deref(),
        Some("1")
    );
    db.kv_set("first_start_done", "2").await.expect("overwrite");
    assert_eq!(
        db.kv_get("first_start_done")
            .await
            .expect("kv_get")
            .as_deref(),
        Some("2"),
        "a second kv_set overwrites"
    );
    assert_eq!(
        db.kv_get("other").await.expect("kv_get").as_deref(),
        Some("x")
    );
    db.kv_set("empty", "").await.expect("kv_set empty");
    assert_eq!(
        db.kv_get("empty").await.expect("kv_get").as_deref(),
        Some(""),
        "an empty value is a value, not a missing key"
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM kv_store").await, 3);
}

async fn users_and_management_rooms(db: Db) {
    let alice = "@alice:example.org";
    let bob = "@bob:example.org";
    assert_eq!(db.management_room(alice).await.expect("get"), None);
    db.ensure_user(alice).await.expect("ensure_user");
    db.ensure_user(alice)
        .await
        .expect("ensure_user is idempotent");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM matrix_user").await, 1);
    assert_eq!(
        db.management_room(alice).await.expect("get"),
        None,
        "a new user has no management room"
    );

    db.set_management_room(alice, "!a1:example.org")
        .await
        .expect("set");
    // Setting the room of an unknown user records the user.
    db.set_management_room(bob, "!b:example.org")
        .await
        .expect("set for new user");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM matrix_user").await, 2);
    assert_eq!(
        db.management_room(alice).await.expect("get").as_deref(),
        Some("!a1:example.org")
    );
    assert_eq!(
        db.management_room(bob).await.expect("get").as_deref(),
        Some("!b:example.org")
    );
    assert_eq!(
        db.management_room_owner("!a1:example.org")
            .await
            .expect("owner")
            .as_deref(),
        Some(alice)
    );
    assert_eq!(
        db.management_room_owner("!b:example.org")
            .await
            .expect("owner")
            .as_deref(),
        Some(bob)
    );
    assert_eq!(
        db.management_room_owner("!nobody:example.org")
            .await
            .expect("owner"),
        None
    );

    // Moving to a new management room releases the old one.
    db.set_management_room(alice, "!a2:example.org")
        .await
        .expect("move");
    assert_eq!(
        db.management_room(alice).await.expect("get").as_deref(),
        Some("!a2:example.org")
    );
    assert_eq!(
        db.management_room_owner("!a1:example.org")
            .await
            .expect("owner"),
        None
    );
    assert_eq!(
        db.management_room_owner("!a2:example.org")
            .await
            .expect("owner")
            .as_deref(),
        Some(alice)
    );
    // ensure_user on a known user keeps its room.
    db.ensure_user(alice).await.expect("ensure_user");
    assert_eq!(
        db.management_room(alice).await.expect("get").as_deref(),
        Some("!a2:example.org")
    );
}

// ---------------------------------------------------------------------------------------------
// Logins.

async fn logins_lifecycle(db: Db) {
    let alice = "@alice:example.org";
    let bob = "@bob:example.org";
    assert!(db.get_login("sim", "acc1").await.expect("get").is_none());

    let mut first = login("sim", "acc1", alice, json!({"token": "t1", "n": 1}));
    first.checkpoint = Some(7);
    db.upsert_login(&first).await.expect("upsert");
    let got = db
        .get_login("sim", "acc1")
        .await
        .expect("get")
        .expect("login stored");
    assert_eq!(login_key(&got), login_key(&first));
    assert_eq!(got.secret, json!({"token": "t1", "n": 1}));
    assert_eq!(
        count_where(
            &db,
            "SELECT COUNT(*) FROM matrix_user WHERE mxid = $1",
            alice
        )
        .await,
        1,
        "upsert_login records the owner as a user"
    );

    db.advance_checkpoint("sim", "acc1", 42)
        .await
        .expect("advance");

    // Logging in again to the same account (here by another user) replaces owner, name and
    // secret, but the checkpoint stays: history already bridged must not be bridged again.
    let mut again = login("sim", "acc1", bob, json!({"token": "t2"}));
    again.remote_name = "renamed".into();
    again.checkpoint = None;
    db.upsert_login(&again).await.expect("re-login");
    let got = db
        .get_login("sim", "acc1")
        .await
        .expect("get")
        .expect("login still stored");
    assert_eq!(got.user_mxid, bob);
    assert_eq!(got.remote_name, "renamed");
    assert_eq!(got.secret, json!({"token": "t2"}));
    assert_eq!(got.checkpoint, Some(42), "re-login keeps the checkpoint");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM remote_login").await, 1);
    assert!(db.logins_of_user(alice).await.expect("list").is_empty());
    assert_eq!(db.logins_of_user(bob).await.expect("list").len(), 1);

    // Same login id on another network is another login.
    db.upsert_login(&login("other", "acc1", alice, json!(null)))
        .await
        .expect("upsert");
    assert_eq!(
        db.get_login("other", "acc1")
            .await
            .expect("get")
            .expect("stored")
            .secret,
        json!(null)
    );
    assert_eq!(
        db.get_login("sim", "acc1")
            .await
            .expect("get")
            .expect("stored")
            .user_mxid,
        bob
    );

    assert!(
        db.delete_login("sim", "acc1").await.expect("delete"),
        "deleting an existing login reports true"
    );
    assert!(
        !db.delete_login("sim", "acc1").await.expect("delete"),
        "deleting it again reports false"
    );
    assert!(db.get_login("sim", "acc1").await.expect("get").is_none());
    assert!(db.get_login("other", "acc1").await.expect("get").is_some());
    let all = db.all_logins().await.expect("all");
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].network, "other");
}

async fn logins_ordering(db: Db) {
    let alice = "@alice:example.org";
    let bob = "@bob:example.org";
    // Created in this order, a few milliseconds apart so that created_at differs.
    let created = [
        ("sim", "zeta", alice),
        ("chat", "b", alice),
        ("sim", "alpha", bob),
        ("chat", "a", alice),
    ];
    for (network, id, user) in created {
        db.upsert_login(&login(network, id, user, json!({"id": id})))
            .await
            .expect("upsert");
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let of_alice: Vec<(String, String)> = db
        .logins_of_user(alice)
        .await
        .expect("logins_of_user")
        .into_iter()
        .map(|l| (l.network, l.login_id))
        .collect();
    assert_eq!(
        of_alice,
        [("chat", "a"), ("chat", "b"), ("sim", "zeta")].map(|(n, i)| (n.to_owned(), i.to_owned())),
        "logins_of_user is ordered by (network, login_id)"
    );
    assert!(
        db.logins_of_user("@nobody:example.org")
            .await
            .expect("logins_of_user")
            .is_empty()
    );

    // Re-login must not move a login in the start-up order.
    db.upsert_login(&login("sim", "zeta", alice, json!({"id": "zeta", "v": 2})))
        .await
        .expect("re-login");
    let all: Vec<(String, String)> = db
        .all_logins()
        .await
        .expect("all_logins")
        .into_iter()
        .map(|l| (l.network, l.login_id))
        .collect();
    let expected: Vec<(String, String)> = created
        .iter()
        .map(|(n, i, _)| ((*n).to_owned(), (*i).to_owned()))
        .collect();
    assert_eq!(all, expected, "all_logins is in creation order");

    // Logins created in the same millisecond keep one order, re-login or not (on Postgres an
    // updated row moves in the heap, so created_at alone would let them swap).
    sqlx::query("UPDATE remote_login SET created_at = 1000")
        .execute(db.pool())
        .await
        .expect("make created_at equal");
    for (network, id, user) in created {
        db.upsert_login(&login(network, id, user, json!({"v": 3})))
            .await
            .expect("re-login");
    }
    let all: Vec<(String, String)> = db
        .all_logins()
        .await
        .expect("all_logins")
        .into_iter()
        .map(|l| (l.network, l.login_id))
        .collect();
    assert_eq!(
        all,
        [
            ("chat", "a"),
            ("chat", "b"),
            ("sim", "alpha"),
            ("sim", "zeta")
        ]
        .map(|(n, i)| (n.to_owned(), i.to_owned())),
        "ties in created_at are broken by (network, login_id)"
    );
}

async fn checkpoint_only_moves_forward(db: Db) {
    let alice = "@alice:example.org";
    db.upsert_login(&login("sim", "a", alice, json!({})))
        .await
        .expect("upsert");
    db.upsert_login(&login("sim", "b", alice, json!({})))
        .await
        .expect("upsert");
    let checkpoint = |id: &'static str| {
        let db = db.clone();
        async move {
            db.get_login("sim", id)
                .await
                .expect("get")
                .expect("stored")
                .checkpoint
        }
    };
    assert_eq!(checkpoint("a").await, None);

    db.advance_checkpoint("sim", "a", 100)
        .await
        .expect("advance");
    assert_eq!(checkpoint("a").await, Some(100), "NULL -> 100");
    db.advance_checkpoint("sim", "a", 50)
        .await
        .expect("advance");
    assert_eq!(checkpoint("a").await, Some(100), "never moves back");
    db.advance_checkpoint("sim", "a", 100)
        .await
        .expect("advance");
    assert_eq!(checkpoint("a").await, Some(100));
    db.advance_checkpoint("sim", "a", 1_700_000_000_123)
        .await
        .expect("advance");
    assert_eq!(
        checkpoint("a").await,
        Some(1_700_000_000_123),
        "moves forward, 64-bit values intact"
    );
    assert_eq!(checkpoint("b").await, None, "other logins are untouched");
    // Unknown login: nothing to do, no error.
    db.advance_checkpoint("sim", "nope", 5)
        .await
        .expect("advance unknown");
    assert!(db.get_login("sim", "nope").await.expect("get").is_none());
}

async fn deleting_user_cascades_to_logins(db: Db) {
    let alice = "@alice:example.org";
    let bob = "@bob:example.org";
    db.upsert_login(&login("sim", "a1", alice, json!({})))
        .await
        .expect("upsert");
    db.upsert_login(&login("sim", "a2", alice, json!({})))
        .await
        .expect("upsert");
    db.upsert_login(&login("sim", "b1", bob, json!({})))
        .await
        .expect("upsert");
    // The schema says remote_login.user_mxid REFERENCES matrix_user ON DELETE CASCADE.
    sqlx::query("DELETE FROM matrix_user WHERE mxid = $1")
        .bind(alice)
        .execute(db.pool())
        .await
        .expect("delete user");
    assert!(db.logins_of_user(alice).await.expect("list").is_empty());
    let all = db.all_logins().await.expect("all");
    assert_eq!(all.len(), 1, "only bob's login is left");
    assert_eq!(all[0].login_id, "b1");

    // And a login cannot point at a user that does not exist.
    let orphan = sqlx::query(
        "INSERT INTO remote_login (network, login_id, user_mxid, remote_name, secret, created_at) \
         VALUES ('sim', 'x', '@ghost:example.org', 'x', '{}', 0)",
    )
    .execute(db.pool())
    .await;
    assert!(
        orphan.is_err(),
        "foreign key on remote_login.user_mxid is enforced"
    );
}

// ---------------------------------------------------------------------------------------------
// Portals.

async fn portals_lifecycle(db: Db) {
    assert!(db.get_portal("sim", "c1", "").await.expect("get").is_none());
    let mut p = portal("sim", "c1", "");
    p.topic = Some("topic".into());
    p.relay_login = Some("acc1".into());
    db.upsert_portal(&p).await.expect("upsert");
    assert_eq!(
        db.get_portal("sim", "c1", "").await.expect("get"),
        Some(p.clone())
    );
    assert_eq!(
        db.count_portals().await.expect("count"),
        0,
        "a portal without a room is not counted"
    );

    db.set_portal_room("sim", "c1", "", Some("!r1:example.org"))
        .await
        .expect("set room");
    p.room_id = Some("!r1:example.org".into());
    assert_eq!(
        db.get_portal("sim", "c1", "").await.expect("get"),
        Some(p.clone())
    );
    assert_eq!(
        db.portal_by_room("!r1:example.org").await.expect("by room"),
        Some(p.clone())
    );
    assert_eq!(db.count_portals().await.expect("count"), 1);

    // upsert updates the metadata but never the room id.
    let mut update = p.clone();
    update.room_id = Some("!other:example.org".into());
    update.name = Some("renamed".into());
    update.topic = None;
    update.avatar_mxc = Some("mxc://example.org/abc".into());
    update.kind = "dm".into();
    update.relay_login = None;
    db.upsert_portal(&update).await.expect("upsert again");
    let got = db
        .get_portal("sim", "c1", "")
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(got.room_id.as_deref(), Some("!r1:example.org"));
    assert_eq!(got.name.as_deref(), Some("renamed"));
    assert_eq!(got.topic, None);
    assert_eq!(got.avatar_mxc.as_deref(), Some("mxc://example.org/abc"));
    assert_eq!(got.kind, "dm");
    assert_eq!(got.relay_login, None);
    assert!(
        db.portal_by_room("!other:example.org")
            .await
            .expect("by room")
            .is_none()
    );

    // The same chat seen by a specific receiver is a separate portal.
    let mut private = portal("sim", "c1", "acc2");
    private.room_id = Some("!r2:example.org".into());
    db.upsert_portal(&private).await.expect("upsert");
    assert_eq!(
        db.portal_by_room("!r2:example.org").await.expect("by room"),
        Some(private.clone()),
        "upsert of a new portal stores its room id"
    );
    assert_eq!(db.count_portals().await.expect("count"), 2);
    assert_eq!(
        db.get_portal("sim", "c1", "")
            .await
            .expect("get")
            .expect("stored")
            .room_id
            .as_deref(),
        Some("!r1:example.org")
    );

    // Unlinking the room.
    db.set_portal_room("sim", "c1", "", None)
        .await
        .expect("clear room");
    assert!(
        db.portal_by_room("!r1:example.org")
            .await
            .expect("by room")
            .is_none()
    );
    assert_eq!(db.count_portals().await.expect("count"), 1);

    db.delete_portal("sim", "c1", "").await.expect("delete");
    assert!(db.get_portal("sim", "c1", "").await.expect("get").is_none());
    assert!(
        db.get_portal("sim", "c1", "acc2")
            .await
            .expect("get")
            .is_some()
    );
    db.delete_portal("sim", "c1", "")
        .await
        .expect("deleting a missing portal is fine");
}

async fn portal_room_is_unique(db: Db) {
    db.upsert_portal(&portal("sim", "c1", ""))
        .await
        .expect("upsert");
    db.upsert_portal(&portal("sim", "c2", ""))
        .await
        .expect("upsert");
    db.set_portal_room("sim", "c1", "", Some("!same:example.org"))
        .await
        .expect("set room");
    let clash = db
        .set_portal_room("sim", "c2", "", Some("!same:example.org"))
        .await;
    assert!(clash.is_err(), "two portals cannot share a room");
    assert_eq!(
        db.portal_by_room("!same:example.org")
            .await
            .expect("by room")
            .expect("still linked")
            .chat_id,
        "c1"
    );
    assert_eq!(
        db.get_portal("sim", "c2", "")
            .await
            .expect("get")
            .expect("stored")
            .room_id,
        None
    );
    let mut third = portal("sim", "c3", "");
    third.room_id = Some("!same:example.org".into());
    assert!(
        db.upsert_portal(&third).await.is_err(),
        "a new portal cannot take a linked room either"
    );
    // Several portals without a room are fine (NULL is not a duplicate).
    db.upsert_portal(&portal("sim", "c4", ""))
        .await
        .expect("upsert");
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM portal WHERE room_id IS NULL").await,
        2
    );
}

async fn deleting_portal_cascades(db: Db) {
    let mut p1 = portal("sim", "c1", "");
    p1.room_id = Some("!r1:example.org".into());
    let mut p2 = portal("sim", "c2", "");
    p2.room_id = Some("!r2:example.org".into());
    db.upsert_portal(&p1).await.expect("upsert");
    db.upsert_portal(&p2).await.expect("upsert");
    let m1 = message(&p1, "m1", "", "$e1");
    let m2 = message(&p2, "m2", "", "$e2");
    assert!(db.insert_message(&m1).await.expect("insert"));
    assert!(
        db.insert_message(&message(&p1, "m1b", "", "$e1b"))
            .await
            .expect("insert")
    );
    assert!(db.insert_message(&m2).await.expect("insert"));
    assert!(
        db.insert_reaction(&reaction(&m1, "bob", "👍", "$r1"))
            .await
            .expect("insert")
    );
    assert!(
        db.insert_reaction(&reaction(&m2, "bob", "👍", "$r2"))
            .await
            .expect("insert")
    );

    db.delete_portal("sim", "c1", "").await.expect("delete");
    assert!(db.message_by_event("$e1").await.expect("get").is_none());
    assert!(db.message_by_event("$e1b").await.expect("get").is_none());
    assert!(db.reaction_by_event("$r1").await.expect("get").is_none());
    assert_eq!(count(&db, "SELECT COUNT(*) FROM message").await, 1);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM reaction").await, 1);
    assert_eq!(
        db.message_by_event("$e2").await.expect("get"),
        Some(m2),
        "the other portal's messages stay"
    );
    assert!(db.reaction_by_event("$r2").await.expect("get").is_some());
    assert_eq!(db.count_portals().await.expect("count"), 1);
}

// ---------------------------------------------------------------------------------------------
// Ghosts.

async fn ghosts_roundtrip(db: Db) {
    assert_eq!(db.count_ghosts().await.expect("count"), 0);
    assert!(db.get_ghost("sim", "alice").await.expect("get").is_none());
    let mut g = GhostRow {
        network: "sim".into(),
        remote_id: "alice".into(),
        mxid: "@sim_alice:example.org".into(),
        name: None,
        avatar_mxc: None,
        avatar_id: None,
        registered: false,
    };
    db.upsert_ghost(&g).await.expect("upsert");
    assert_eq!(
        db.get_ghost("sim", "alice").await.expect("get"),
        Some(g.clone())
    );
    assert_eq!(
        db.get_ghost_by_mxid("@sim_alice:example.org")
            .await
            .expect("get"),
        Some(g.clone())
    );

    g.registered = true;
    g.name = Some("Alice".into());
    g.avatar_mxc = Some("mxc://example.org/alice".into());
    g.avatar_id = Some("a1".into());
    db.upsert_ghost(&g).await.expect("upsert");
    assert_eq!(
        db.get_ghost("sim", "alice").await.expect("get"),
        Some(g.clone()),
        "registered flag and profile round-trip"
    );

    g.registered = false;
    g.name = None;
    db.upsert_ghost(&g).await.expect("upsert");
    let got = db
        .get_ghost_by_mxid("@sim_alice:example.org")
        .await
        .expect("get")
        .expect("stored");
    assert!(!got.registered, "the flag can be cleared again");
    assert_eq!(got.name, None);

    let bob = GhostRow {
        network: "other".into(),
        remote_id: "alice".into(),
        mxid: "@other_alice:example.org".into(),
        name: Some("Bob".into()),
        avatar_mxc: None,
        avatar_id: None,
        registered: true,
    };
    db.upsert_ghost(&bob).await.expect("upsert");
    assert_eq!(db.count_ghosts().await.expect("count"), 2);
    assert_eq!(
        db.get_ghost("other", "alice").await.expect("get"),
        Some(bob)
    );
    assert!(
        db.get_ghost_by_mxid("@nobody:example.org")
            .await
            .expect("get")
            .is_none()
    );

    let clash = GhostRow {
        network: "sim".into(),
        remote_id: "mallory".into(),
        mxid: "@sim_alice:example.org".into(),
        name: None,
        avatar_mxc: None,
        avatar_id: None,
        registered: false,
    };
    assert!(
        db.upsert_ghost(&clash).await.is_err(),
        "two ghosts cannot share an mxid"
    );
    assert_eq!(db.count_ghosts().await.expect("count"), 2);
}

// ---------------------------------------------------------------------------------------------
// Messages and reactions.

async fn messages_are_idempotent(db: Db) {
    let mut p = portal("sim", "c1", "");
    p.room_id = Some("!r:example.org".into());
    db.upsert_portal(&p).await.expect("upsert");

    let part0 = message(&p, "m1", "0", "$p0");
    assert!(
        db.insert_message(&part0).await.expect("insert"),
        "new mapping"
    );
    assert!(
        !db.insert_message(&part0).await.expect("insert again"),
        "the same mapping again is ignored"
    );
    let mut resent = message(&p, "m1", "0", "$p0-resent");
    resent.ts += 1;
    assert!(
        !db.insert_message(&resent).await.expect("insert"),
        "the same (portal, remote id, part) with another event is ignored"
    );
    assert_eq!(
        db.message_by_event("$p0").await.expect("get"),
        Some(part0.clone()),
        "the first mapping is kept unchanged"
    );
    assert!(
        db.message_by_event("$p0-resent")
            .await
            .expect("get")
            .is_none()
    );

    // Parts inserted out of order come back ordered by part id.
    let part2 = message(&p, "m1", "2", "$p2");
    let part1 = message(&p, "m1", "1", "$p1");
    assert!(db.insert_message(&part2).await.expect("insert"));
    assert!(db.insert_message(&part1).await.expect("insert"));
    assert_eq!(
        db.message_by_remote("sim", "c1", "", "m1")
            .await
            .expect("by remote"),
        vec![part0.clone(), part1.clone(), part2.clone()]
    );
    assert!(
        db.message_by_remote("sim", "c1", "", "nope")
            .await
            .expect("by remote")
            .is_empty()
    );
    assert!(
        db.message_by_remote("sim", "c1", "someone", "m1")
            .await
            .expect("by remote")
            .is_empty(),
        "the receiver is part of the key"
    );

    // A Matrix event maps to one remote message only.
    let other = message(&p, "m2", "", "$p1");
    assert!(
        !db.insert_message(&other).await.expect("insert"),
        "an event id already mapped is not mapped again"
    );
    assert_eq!(db.message_by_event("$p1").await.expect("get"), Some(part1));
    assert!(
        db.message_by_remote("sim", "c1", "", "m2")
            .await
            .expect("by remote")
            .is_empty()
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM message").await, 3);
    assert!(
        db.message_by_event("$unknown")
            .await
            .expect("get")
            .is_none()
    );
}

async fn message_needs_portal(db: Db) {
    let p = portal("sim", "ghost-chat", "");
    let orphan = message(&p, "m1", "", "$orphan");
    assert!(
        db.insert_message(&orphan).await.is_err(),
        "a message of an unknown portal violates the foreign key"
    );
    assert!(db.message_by_event("$orphan").await.expect("get").is_none());
}

async fn reactions_lifecycle(db: Db) {
    let mut p = portal("sim", "c1", "");
    p.room_id = Some("!r:example.org".into());
    db.upsert_portal(&p).await.expect("upsert");
    let m = message(&p, "m1", "", "$m1");
    assert!(db.insert_message(&m).await.expect("insert"));

    let thumbs = reaction(&m, "bob", "👍", "$r1");
    assert!(db.insert_reaction(&thumbs).await.expect("insert"));
    assert!(
        !db.insert_reaction(&thumbs).await.expect("insert again"),
        "a duplicate is ignored"
    );
    let dup_other_event = reaction(&m, "bob", "👍", "$r1-again");
    assert!(
        !db.insert_reaction(&dup_other_event).await.expect("insert"),
        "the same sender and emoji on the same part is one reaction"
    );
    // Several reactions per user, and the same emoji from several users, stay apart.
    let heart = reaction(&m, "bob", "❤️", "$r2");
    let carol = reaction(&m, "carol", "👍", "$r3");
    assert!(db.insert_reaction(&heart).await.expect("insert"));
    assert!(db.insert_reaction(&carol).await.expect("insert"));
    let same_event = reaction(&m, "dave", "🎉", "$r1");
    assert!(
        !db.insert_reaction(&same_event).await.expect("insert"),
        "an event id maps to one reaction"
    );

    assert_eq!(
        db.reaction_by_event("$r1").await.expect("get"),
        Some(thumbs)
    );
    assert_eq!(db.reaction_by_event("$r2").await.expect("get"), Some(heart));
    assert_eq!(db.reaction_by_event("$r3").await.expect("get"), Some(carol));
    assert!(
        db.reaction_by_event("$r1-again")
            .await
            .expect("get")
            .is_none()
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM reaction").await, 3);

    assert!(db.delete_reaction("$r1").await.expect("delete"));
    assert!(
        !db.delete_reaction("$r1").await.expect("delete again"),
        "deleting twice reports false"
    );
    assert!(db.reaction_by_event("$r1").await.expect("get").is_none());
    assert_eq!(count(&db, "SELECT COUNT(*) FROM reaction").await, 2);
    // After removal the same reaction can be added again (a re-react).
    assert!(
        db.insert_reaction(&reaction(&m, "bob", "👍", "$r4"))
            .await
            .expect("insert")
    );
}

// ---------------------------------------------------------------------------------------------
// Appservice inbox.

async fn inbox_transactions(db: Db) {
    assert!(db.pending_inbox().await.expect("pending").is_empty());

    let t1 = events("t1", 3);
    let stored1 = db
        .store_transaction("t1", &t1)
        .await
        .expect("store")
        .expect("a new transaction is stored");
    assert_eq!(
        stored1.iter().map(|e| e.event.clone()).collect::<Vec<_>>(),
        t1
    );
    assert_ids_increase(&stored1);

    assert_eq!(
        db.store_transaction("t1", &events("t1-replayed", 2))
            .await
            .expect("store again"),
        None,
        "a repeated transaction id is recognised"
    );
    assert_eq!(
        db.pending_inbox().await.expect("pending"),
        stored1,
        "a repeated transaction adds nothing"
    );

    let empty = db
        .store_transaction("t-empty", &[])
        .await
        .expect("store")
        .expect("stored");
    assert!(empty.is_empty());
    assert_eq!(
        db.store_transaction("t-empty", &events("x", 1))
            .await
            .expect("store"),
        None,
        "an empty transaction's id is remembered too"
    );

    let t2 = events("t2", 2);
    let stored2 = db
        .store_transaction("t2", &t2)
        .await
        .expect("store")
        .expect("stored");
    assert!(
        stored2[0].id > stored1[2].id,
        "a later transaction gets later ids"
    );
    let all: Vec<InboxEntry> = stored1.iter().chain(&stored2).cloned().collect();
    assert_eq!(
        db.pending_inbox().await.expect("pending"),
        all,
        "pending_inbox is oldest first"
    );

    // Handle out of order; the rest stays pending in order.
    db.inbox_done(stored1[1].id).await.expect("done");
    db.inbox_done(stored2[0].id).await.expect("done");
    db.inbox_done(stored2[0].id)
        .await
        .expect("done twice is harmless");
    assert_eq!(
        db.pending_inbox().await.expect("pending"),
        vec![stored1[0].clone(), stored1[2].clone(), stored2[1].clone()]
    );
    for e in &all {
        db.inbox_done(e.id).await.expect("done");
    }
    assert!(db.pending_inbox().await.expect("pending").is_empty());
    assert_eq!(
        db.store_transaction("t1", &t1).await.expect("store"),
        None,
        "handling the events does not forget the transaction id"
    );

    // Ids are not reused after the inbox drained (a replay must not collide with old ids).
    let t3 = db
        .store_transaction("t3", &events("t3", 1))
        .await
        .expect("store")
        .expect("stored");
    assert!(t3[0].id > stored2[1].id);
}

async fn inbox_large_transaction(db: Db) {
    // More events than one INSERT chunk (200) holds, and not a multiple of it.
    let big = events("big", 450);
    let stored = db
        .store_transaction("big", &big)
        .await
        .expect("store 450 events")
        .expect("stored");
    assert_eq!(stored.len(), 450);
    assert_eq!(
        stored.iter().map(|e| e.event.clone()).collect::<Vec<_>>(),
        big,
        "events come back in the order given"
    );
    assert_ids_increase(&stored);
    let ids: BTreeSet<i64> = stored.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), 450, "ids are distinct");
    assert_eq!(
        db.pending_inbox().await.expect("pending"),
        stored,
        "the ids returned are the ids stored, event for event"
    );
    assert_eq!(
        count_where(&db, "SELECT COUNT(*) FROM inbox WHERE txn_id = $1", "big").await,
        450
    );
}

async fn prune_removes_only_old_transactions(db: Db) {
    const DAY_MS: i64 = 24 * 60 * 60 * 1000;
    let now = now_ms();
    for (txn, age) in [("ancient", 30 * DAY_MS), ("old", 2 * DAY_MS)] {
        sqlx::query("INSERT INTO as_txn (txn_id, received_at) VALUES ($1, $2)")
            .bind(txn)
            .bind(now - age)
            .execute(db.pool())
            .await
            .expect("insert an old transaction");
    }
    db.store_transaction("fresh", &events("fresh", 1))
        .await
        .expect("store")
        .expect("stored");
    db.store_transaction("recent", &[])
        .await
        .expect("store")
        .expect("stored");

    assert_eq!(
        db.prune_transactions(DAY_MS).await.expect("prune"),
        2,
        "the two transactions older than a day are pruned"
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM as_txn").await, 2);
    assert_eq!(
        db.prune_transactions(DAY_MS).await.expect("prune"),
        0,
        "nothing more to prune"
    );
    assert_eq!(
        db.store_transaction("fresh", &[]).await.expect("store"),
        None,
        "recent ids are still deduplicated"
    );
    assert!(
        db.store_transaction("old", &[])
            .await
            .expect("store")
            .is_some(),
        "a pruned id is forgotten"
    );
    assert_eq!(
        db.pending_inbox().await.expect("pending").len(),
        1,
        "pruning transaction ids leaves unhandled events alone"
    );
}

async fn concurrent_transactions(db: Db) {
    const N: usize = 20;
    let mut tasks = Vec::new();
    for i in 0..N {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let txn = format!("conc-{i}");
            let evs = events(&txn, 5);
            let stored = db.store_transaction(&txn, &evs).await;
            (txn, evs, stored)
        }));
    }
    let mut all_ids = BTreeSet::new();
    for task in tasks {
        let (txn, evs, stored) = task.await.expect("task did not panic");
        let stored = stored
            .unwrap_or_else(|e| panic!("concurrent store_transaction {txn} failed: {e}"))
            .unwrap_or_else(|| panic!("{txn} is new"));
        assert_eq!(
            stored.iter().map(|e| e.event.clone()).collect::<Vec<_>>(),
            evs
        );
        assert_ids_increase(&stored);
        all_ids.extend(stored.iter().map(|e| e.id));
    }
    assert_eq!(all_ids.len(), N * 5, "no id was handed out twice");
    let pending = db.pending_inbox().await.expect("pending");
    assert_eq!(pending.len(), N * 5);
    assert_eq!(
        pending.iter().map(|e| e.id).collect::<BTreeSet<_>>(),
        all_ids
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM as_txn").await, N as i64);

    // The same ids raced again: every one is a duplicate, none adds events.
    let mut tasks = Vec::new();
    for i in 0..N {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            db.store_transaction(&format!("conc-{i}"), &events("again", 1))
                .await
        }));
    }
    for task in tasks {
        let result = task
            .await
            .expect("task did not panic")
            .expect("concurrent duplicate store_transaction");
        assert_eq!(result, None);
    }
    assert_eq!(db.pending_inbox().await.expect("pending").len(), N * 5);
}

// ---------------------------------------------------------------------------------------------
// Hostile data.

async fn hostile_data_roundtrips(db: Db) {
    let nasty = [
        "it's",
        "\"double\" and 'single'",
        "back\\slash \\' \\\"",
        "'; DROP TABLE portal; --",
        "$1 $2 ? ?1 :name @p",
        "100% _wild_ [x]",
        "tab\tnew\nline\r\n",
        "naïve café ☕ 日本語 עברית 🇺🇳 👩‍👩‍👧",
        "e\u{301}", // decomposed é: must not match the precomposed one
        "é",
        "Case",
        "case",
        "trailing ",
        " ",
        "\u{FEFF}bom\u{200B}zw\u{FFFD}",
        "\u{10FFFF}",
    ];
    for (i, s) in nasty.iter().enumerate() {
        db.kv_set(s, &format!("value {i}: {s}"))
            .await
            .expect("kv_set");
    }
    for (i, s) in nasty.iter().enumerate() {
        assert_eq!(
            db.kv_get(s).await.expect("kv_get"),
            Some(format!("value {i}: {s}")),
            "key {s:?} round-trips and does not collide with a similar key"
        );
    }
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM kv_store").await,
        nasty.len() as i64
    );
    assert_eq!(db.kv_get("trailing").await.expect("kv_get"), None);
    assert_eq!(db.kv_get("CASE").await.expect("kv_get"), None);

    // 10 KiB strings: multi-byte characters and quotes throughout.
    let pattern = "ab'c\"d\\é☕🙂\n";
    let big: String = pattern.chars().cycle().take(10 * 1024).collect();
    assert!(big.len() > 10 * 1024);
    db.kv_set(&big, &big).await.expect("kv_set big");
    assert_eq!(
        db.kv_get(&big).await.expect("kv_get big").as_deref(),
        Some(big.as_str())
    );

    let user = format!("@{}:example.org", nasty[3]);
    let mut l = login(
        nasty[1],
        nasty[7],
        &user,
        json!({"token": big, "quote": nasty[2], "nested": {"k": nasty[4]}}),
    );
    l.remote_name = big.clone();
    db.upsert_login(&l).await.expect("upsert login");
    let got = db
        .get_login(nasty[1], nasty[7])
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(login_key(&got), login_key(&l));
    assert_eq!(db.logins_of_user(&user).await.expect("list").len(), 1);
    db.set_management_room(&user, nasty[0]).await.expect("set");
    assert_eq!(
        db.management_room_owner(nasty[0]).await.expect("owner"),
        Some(user.clone())
    );

    let mut p = portal(nasty[5], &big, nasty[8]);
    p.room_id = Some(format!("!{}:example.org", nasty[7]));
    p.name = Some(big.clone());
    p.topic = Some(nasty[6].into());
    p.kind = nasty[1].into();
    db.upsert_portal(&p).await.expect("upsert portal");
    assert_eq!(
        db.get_portal(nasty[5], &big, nasty[8]).await.expect("get"),
        Some(p.clone())
    );
    assert!(
        db.get_portal(nasty[5], &big, nasty[9])
            .await
            .expect("get")
            .is_none(),
        "decomposed and precomposed receivers are different keys"
    );
    assert_eq!(
        db.portal_by_room(&format!("!{}:example.org", nasty[7]))
            .await
            .expect("by room"),
        Some(p.clone())
    );

    let g = GhostRow {
        network: nasty[2].into(),
        remote_id: big.clone(),
        mxid: format!("@{}:example.org", nasty[0]),
        name: Some(big.clone()),
        avatar_mxc: Some(nasty[14].into()),
        avatar_id: Some(big.clone()),
        registered: true,
    };
    db.upsert_ghost(&g).await.expect("upsert ghost");
    assert_eq!(
        db.get_ghost(nasty[2], &big).await.expect("get"),
        Some(g.clone())
    );
    assert_eq!(db.get_ghost_by_mxid(&g.mxid).await.expect("get"), Some(g));

    let mut m = message(&p, &big, nasty[15], &format!("${}", nasty[3]));
    m.sender_remote = nasty[4].into();
    m.sender_mxid = big.clone();
    m.ts = i64::MAX;
    assert!(db.insert_message(&m).await.expect("insert message"));
    let mut m2 = message(&p, &big, nasty[12], "$second");
    m2.ts = i64::MIN;
    assert!(db.insert_message(&m2).await.expect("insert message"));
    assert_eq!(
        db.message_by_event(&m.event_id).await.expect("get"),
        Some(m.clone())
    );
    let parts = db
        .message_by_remote(&p.network, &p.chat_id, &p.receiver, &big)
        .await
        .expect("by remote");
    assert_eq!(parts.len(), 2);
    assert!(parts.contains(&m) && parts.contains(&m2));

    let r = reaction(&m, &big, nasty[7], nasty[6]);
    assert!(db.insert_reaction(&r).await.expect("insert reaction"));
    assert_eq!(db.reaction_by_event(nasty[6]).await.expect("get"), Some(r));
    assert!(db.delete_reaction(nasty[6]).await.expect("delete"));

    let inbox_events: Vec<String> = nasty
        .iter()
        .map(|s| (*s).to_owned())
        .chain([big.clone(), String::new()])
        .collect();
    let stored = db
        .store_transaction(nasty[3], &inbox_events)
        .await
        .expect("store")
        .expect("stored");
    assert_eq!(
        stored.iter().map(|e| e.event.clone()).collect::<Vec<_>>(),
        inbox_events
    );
    assert_eq!(db.pending_inbox().await.expect("pending"), stored);
    assert_eq!(
        db.store_transaction(nasty[3], &[]).await.expect("store"),
        None
    );
}

async fn remote_inbox_keeps_events_until_pruned(db: Db) {
    let a = db
        .remote_inbox_push("signal", "+1", "{\"n\":1}")
        .await
        .expect("push");
    let b = db
        .remote_inbox_push("signal", "+1", "{\"n\":2}")
        .await
        .expect("push");
    let other = db
        .remote_inbox_push("signal", "+2", "{\"n\":3}")
        .await
        .expect("push");
    assert!(a < b && b < other, "positions grow");
    let all = db
        .remote_inbox_after("signal", "+1", 0, 100)
        .await
        .expect("after");
    assert_eq!(
        all,
        vec![(a, "{\"n\":1}".to_owned()), (b, "{\"n\":2}".to_owned())]
    );
    assert_eq!(
        db.remote_inbox_after("signal", "+1", a, 100)
            .await
            .expect("after")
            .len(),
        1
    );
    assert_eq!(
        db.remote_inbox_prune("signal", "+1", a)
            .await
            .expect("prune"),
        1
    );
    assert_eq!(
        db.remote_inbox_after("signal", "+1", 0, 100)
            .await
            .expect("after"),
        vec![(b, "{\"n\":2}".to_owned())]
    );
    assert_eq!(
        db.remote_inbox_after("signal", "+2", 0, 100)
            .await
            .expect("after")
            .len(),
        1,
        "other logins untouched"
    );
}
store_tests! {
    remote_inbox_keeps_events_until_pruned => remote_inbox_sqlite, remote_inbox_postgres;
}
