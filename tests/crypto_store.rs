//! The crypto store (`ferry::crypto::store`) on SQLite and on Postgres.
//!
//! 1. matrix-sdk-crypto's own conformance suite (`cryptostore_integration_tests!` and
//!    `cryptostore_integration_tests_time!`, 0.18, behind its `testing` feature), instantiated
//!    once per backend: `sqlite::…` and `postgres::…`. The suite names its stores; each name is
//!    its own database (a SQLite file, or a Postgres database `ferry_cstore_<name>` in the
//!    cluster at `FERRY_TEST_PG_URL`), with alice's device as the owner.
//! 2. Real OlmMachines on the store: an encrypted exchange between two devices, then both
//!    machines dropped and reopened from the database, then decryption and new Olm/Megolm
//!    traffic again; devices sharing one database see nothing of each other; concurrent saves.
//!
//! Postgres: without `FERRY_TEST_PG_URL` the Postgres half fails with instructions (run through
//! `scripts/test.sh`), unless `FERRY_TEST_ALLOW_NO_PG=1`; then the note below is printed, the
//! machine tests skip their Postgres half, and the conformance suite's `postgres::` copy runs
//! on SQLite instead (it cannot skip from inside the macro).

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use ferry::{
    config::{DatabaseConfig, DatabaseType},
    crypto::store::{SqlCryptoStore, StoreKey, StoreSecret},
    db::Db,
};
use matrix_sdk_crypto::{
    DecryptionSettings, EncryptionSettings, EncryptionSyncChanges, OlmMachine, TrustRequirement,
    store::{
        CryptoStore,
        types::{Changes, DeviceChanges},
    },
    types::requests::{AnyOutgoingRequest, ToDeviceRequest},
};
use ruma::{
    DeviceId, OwnedDeviceId, OwnedUserId, RoomId, UInt, UserId,
    api::client::{
        keys::{claim_keys, get_keys, upload_keys},
        sync::sync_events::DeviceLists,
    },
    device_id,
    encryption::OneTimeKey,
    events::AnyToDeviceEvent,
    room_id,
    serde::Raw,
    to_device::DeviceIdOrAllDevices,
    user_id,
};
use serde_json::json;
use sqlx::Connection;
use zeroize::Zeroizing;

// ---------------------------------------------------------------------------------------------
// Harness.

#[derive(Clone, Copy, Debug, PartialEq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// Test stores use a raw key (PBKDF2's 200,000 rounds are slow in a debug build); the suite's
/// passphrase test goes through the passphrase path.
const TEST_KEY: [u8; 32] = [7; 32];

fn run_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // The suite has no teardown: earlier runs' directories are removed once an hour old.
        if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
            for entry in entries.flatten() {
                let stale = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > Duration::from_secs(3600)));
                if stale
                    && entry
                        .file_name()
                        .to_string_lossy()
                        .starts_with("ferry-cstore-")
                {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = std::env::temp_dir().join(format!(
            "ferry-cstore-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("create the test directory");
        dir
    })
}

fn pg_admin_url() -> Option<String> {
    if let Ok(url) = std::env::var("FERRY_TEST_PG_URL") {
        return Some(url);
    }
    if std::env::var("FERRY_TEST_ALLOW_NO_PG").as_deref() == Ok("1") {
        eprintln!(
            "note: FERRY_TEST_PG_URL is not set and FERRY_TEST_ALLOW_NO_PG=1: \
             the PostgreSQL half of this test was NOT run"
        );
        return None;
    }
    panic!(
        "FERRY_TEST_PG_URL is not set, so the PostgreSQL half of the crypto store tests cannot \
         run: run them through scripts/test.sh (or start Postgres with scripts/harness.py pg-up \
         and export FERRY_TEST_PG_URL), or set FERRY_TEST_ALLOW_NO_PG=1 to skip it knowingly"
    );
}

/// The database named `name` on `backend`, emptied first when `fresh`. `None`: Postgres is not
/// configured and skipping is allowed.
async fn named_db(backend: Backend, name: &str, fresh: bool) -> Option<Db> {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let config = match backend {
        Backend::Sqlite => {
            let path = run_dir().join(format!("{safe}.db"));
            if fresh {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
            }
            DatabaseConfig {
                kind: DatabaseType::Sqlite,
                uri: format!("sqlite://{}", path.display()),
                max_connections: 4,
            }
        }
        Backend::Postgres => {
            let admin_url = pg_admin_url()?;
            let db_name = format!("ferry_cstore_{safe}");
            let mut conn = sqlx::postgres::PgConnection::connect(&admin_url)
                .await
                .expect("connect to FERRY_TEST_PG_URL");
            let exists: Option<(i32,)> =
                sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1")
                    .bind(&db_name)
                    .fetch_optional(&mut conn)
                    .await
                    .expect("look up the test database");
            if exists.is_none() {
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
                    .execute(&mut conn)
                    .await
                    .expect("create the test database");
            }
            conn.close().await.expect("close the admin connection");
            let mut url = url::Url::parse(&admin_url).expect("FERRY_TEST_PG_URL is a URL");
            url.set_path(&db_name);
            DatabaseConfig {
                kind: DatabaseType::Postgres,
                uri: url.to_string(),
                max_connections: 4,
            }
        }
    };
    let db = Db::connect(&config)
        .await
        .expect("connect to the test database and migrate");
    if fresh && backend == Backend::Postgres {
        // Emptying the tables is much faster than dropping and creating the database (which
        // checkpoints the cluster each time).
        let tables: Vec<(String,)> = sqlx::query_as(
            "SELECT tablename::TEXT FROM pg_tables WHERE tablename LIKE 'crypto\\_%'",
        )
        .fetch_all(db.pool())
        .await
        .expect("list the crypto tables");
        let list = tables
            .into_iter()
            .map(|(t,)| t)
            .collect::<Vec<_>>()
            .join(", ");
        sqlx::query(sqlx::AssertSqlSafe(format!("TRUNCATE {list}")))
            .execute(db.pool())
            .await
            .expect("empty the crypto tables");
    }
    Some(db)
}

async fn store_key(db: &Db, passphrase: Option<&str>) -> StoreKey {
    let secret = match passphrase {
        Some(p) => StoreSecret::Passphrase(Zeroizing::new(p.to_owned())),
        None => StoreSecret::Key(Zeroizing::new(TEST_KEY)),
    };
    StoreKey::load_or_create(db, secret)
        .await
        .expect("open the store key")
}

/// The conformance suite's `get_store`: alice's device in the database called `name`.
async fn suite_store(
    backend: Backend,
    name: &str,
    passphrase: Option<&str>,
    clear_data: bool,
) -> SqlCryptoStore {
    let db = match named_db(backend, name, clear_data).await {
        Some(db) => db,
        // Allowed to skip Postgres: run the suite's Postgres copy on SQLite rather than not at all.
        None => named_db(Backend::Sqlite, &format!("pg_fallback_{name}"), clear_data)
            .await
            .expect("SQLite is always available"),
    };
    let key = store_key(&db, passphrase).await;
    // The store belongs to one device and refuses another device's account (many devices share
    // the tables, see `devices_in_one_database_are_isolated`). The suite saves alice's account
    // everywhere except in `test_user_saving`, which saves @example:localhost's WSKKLTJZCL: that
    // store is opened for that device, as the bridge opens every store for its own device.
    let (user, device) = if name == "user_saving" {
        (user_id!("@example:localhost"), device_id!("WSKKLTJZCL"))
    } else {
        (user_id!("@alice:example.org"), device_id!("ALICEDEVICE"))
    };
    SqlCryptoStore::open(db, key, user, device)
}

// The suite tests matrix-sdk-crypto's own optional features with `cfg(feature = …)`, which
// expands here, where those features do not exist.
#[allow(unexpected_cfgs)]
mod sqlite {
    use super::{Backend, SqlCryptoStore, suite_store};

    async fn get_store(name: &str, passphrase: Option<&str>, clear_data: bool) -> SqlCryptoStore {
        suite_store(Backend::Sqlite, name, passphrase, clear_data).await
    }

    matrix_sdk_crypto::cryptostore_integration_tests!();
    matrix_sdk_crypto::cryptostore_integration_tests_time!();
}

#[allow(unexpected_cfgs)]
mod postgres {
    use super::{Backend, SqlCryptoStore, suite_store};

    async fn get_store(name: &str, passphrase: Option<&str>, clear_data: bool) -> SqlCryptoStore {
        suite_store(Backend::Postgres, name, passphrase, clear_data).await
    }

    matrix_sdk_crypto::cryptostore_integration_tests!();
    matrix_sdk_crypto::cryptostore_integration_tests_time!();
}

// ---------------------------------------------------------------------------------------------
// OlmMachines on the store.

/// Instantiates `$name(backend)` once per backend: `$name_sqlite`, `$name_postgres`.
macro_rules! machine_tests {
    ($($name:ident => $sqlite:ident, $postgres:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            $name(Backend::Sqlite).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            if pg_admin_url().is_some() {
                $name(Backend::Postgres).await;
            }
        }
    )*};
}

machine_tests! {
    machines_keep_state_across_reopen => machines_keep_state_across_reopen_sqlite, machines_keep_state_across_reopen_postgres;
    devices_in_one_database_are_isolated => devices_in_one_database_are_isolated_sqlite, devices_in_one_database_are_isolated_postgres;
    concurrent_saves_are_all_kept => concurrent_saves_are_all_kept_sqlite, concurrent_saves_are_all_kept_postgres;
    wrong_store_key_is_refused => wrong_store_key_is_refused_sqlite, wrong_store_key_is_refused_postgres;
    save_changes_is_atomic => save_changes_is_atomic_sqlite, save_changes_is_atomic_postgres;
    passphrase_opens_only_its_store => passphrase_opens_only_its_store_sqlite, passphrase_opens_only_its_store_postgres;
}

fn raw_json<T>(value: serde_json::Value) -> Raw<T> {
    Raw::from_json(serde_json::value::to_raw_value(&value).expect("JSON value"))
}

fn settings() -> DecryptionSettings {
    DecryptionSettings {
        sender_device_trust_requirement: TrustRequirement::Untrusted,
    }
}

async fn open_machine(db: &Db, key: &StoreKey, user: &UserId, device: &DeviceId) -> OlmMachine {
    let store = SqlCryptoStore::open(db.clone(), key.clone(), user, device);
    OlmMachine::with_store(user, device, store, None)
        .await
        .expect("open the OlmMachine on the SQL store")
}

/// Answers the machine's `/keys/upload` and returns what it uploaded.
async fn upload_keys(machine: &OlmMachine) -> upload_keys::v3::Request {
    for request in machine
        .outgoing_requests()
        .await
        .expect("outgoing requests")
    {
        if let AnyOutgoingRequest::KeysUpload(upload) = request.request() {
            let count = UInt::try_from(upload.one_time_keys.len()).expect("small count");
            let response = upload_keys::v3::Response::new(BTreeMap::from([(
                ruma::OneTimeKeyAlgorithm::SignedCurve25519,
                count,
            )]));
            machine
                .mark_request_as_sent(request.request_id(), &response)
                .await
                .expect("mark the key upload as sent");
            return upload.clone();
        }
    }
    panic!("a new machine asks to upload its keys");
}

/// Lets `machine` learn `other`'s device from the keys it uploaded (a `/keys/query` answer).
async fn learn_device(
    machine: &OlmMachine,
    other: &UserId,
    other_device: &DeviceId,
    uploaded: &upload_keys::v3::Request,
) {
    machine
        .update_tracked_users([other])
        .await
        .expect("track the other user");
    let mut answered = false;
    for request in machine
        .outgoing_requests()
        .await
        .expect("outgoing requests")
    {
        if let AnyOutgoingRequest::KeysQuery(_) = request.request() {
            let mut response = get_keys::v3::Response::new();
            response.device_keys = BTreeMap::from([(
                other.to_owned(),
                BTreeMap::from([(
                    other_device.to_owned(),
                    uploaded
                        .device_keys
                        .clone()
                        .expect("device keys were uploaded"),
                )]),
            )]);
            machine
                .mark_request_as_sent(request.request_id(), &response)
                .await
                .expect("mark the key query as sent");
            answered = true;
        }
    }
    assert!(answered, "tracking a new user queries their keys");
}

/// Lets `machine` claim one of `other`'s one-time keys, creating an Olm session.
async fn claim_session(
    machine: &OlmMachine,
    other: &UserId,
    other_device: &DeviceId,
    uploaded: &upload_keys::v3::Request,
) {
    let (txn_id, _request) = machine
        .get_missing_sessions([other].into_iter())
        .await
        .expect("missing sessions")
        .expect("no Olm session with the other device yet");
    let (key_id, key) = uploaded
        .one_time_keys
        .iter()
        .next()
        .expect("one-time keys were uploaded");
    let one_time: BTreeMap<_, Raw<OneTimeKey>> = BTreeMap::from([(key_id.clone(), key.clone())]);
    let response = claim_keys::v3::Response::new(BTreeMap::from([(
        other.to_owned(),
        BTreeMap::from([(other_device.to_owned(), one_time)]),
    )]));
    machine
        .mark_request_as_sent(&txn_id, &response)
        .await
        .expect("mark the key claim as sent");
}

/// The to-device events `requests` carry for `to`/`to_device`, as a homeserver delivers them.
fn deliver(
    requests: &[Arc<ToDeviceRequest>],
    sender: &UserId,
    to: &UserId,
    to_device: &DeviceId,
) -> Vec<Raw<AnyToDeviceEvent>> {
    requests
        .iter()
        .filter_map(|request| {
            let content = request
                .messages
                .get(to)?
                .get(&DeviceIdOrAllDevices::DeviceId(to_device.to_owned()))?;
            Some(raw_json(json!({
                "sender": sender,
                "type": request.event_type.to_string(),
                "content": content,
            })))
        })
        .collect()
}

/// Feeds to-device events to `machine`; returns the rooms of the room keys it accepted.
async fn receive(machine: &OlmMachine, events: Vec<Raw<AnyToDeviceEvent>>) -> Vec<String> {
    let (_events, keys) = machine
        .receive_sync_changes(
            EncryptionSyncChanges {
                to_device_events: events,
                changed_devices: &DeviceLists::default(),
                one_time_keys_counts: &BTreeMap::new(),
                unused_fallback_keys: None,
                next_batch_token: None,
            },
            &settings(),
        )
        .await
        .expect("receive to-device events");
    keys.into_iter().map(|k| k.room_id.to_string()).collect()
}

/// An `m.room.encrypted` event from `sender` with `body` encrypted by `machine`.
async fn encrypt(
    machine: &OlmMachine,
    sender: &UserId,
    room: &RoomId,
    body: &str,
) -> (
    Raw<matrix_sdk_crypto::types::events::room::encrypted::EncryptedEvent>,
    String,
) {
    let content = raw_json(json!({ "msgtype": "m.text", "body": body }));
    let result = machine
        .encrypt_room_event_raw(room, "m.room.message", &content)
        .await
        .expect("encrypt");
    let content: serde_json::Value =
        serde_json::from_str(result.content.json().get()).expect("encrypted content is JSON");
    let session_id = content["session_id"]
        .as_str()
        .expect("megolm content names its session")
        .to_owned();
    let event = raw_json(json!({
        "type": "m.room.encrypted",
        "event_id": format!("$ev{:016x}", rand::random::<u64>()),
        "sender": sender,
        "origin_server_ts": 1_700_000_000_000u64,
        "room_id": room,
        "content": content,
    }));
    (event, session_id)
}

async fn decrypt(
    machine: &OlmMachine,
    event: &Raw<matrix_sdk_crypto::types::events::room::encrypted::EncryptedEvent>,
    room: &RoomId,
) -> String {
    let decrypted = machine
        .decrypt_room_event(event, room, &settings())
        .await
        .expect("decrypt the room event");
    let event: serde_json::Value =
        serde_json::from_str(decrypted.event.json().get()).expect("decrypted event is JSON");
    event["content"]["body"]
        .as_str()
        .expect("a text message")
        .to_owned()
}

struct Pair {
    alice: OlmMachine,
    bob: OlmMachine,
}

const ALICE: &str = "@alice:example.org";
const BOB: &str = "@bob:example.org";

fn alice() -> (OwnedUserId, OwnedDeviceId) {
    (ALICE.try_into().expect("user id"), "ALICEDEV".into())
}

fn bob() -> (OwnedUserId, OwnedDeviceId) {
    (BOB.try_into().expect("user id"), "BOBDEV".into())
}

/// Two fresh machines that know each other's device, alice holding an Olm session to bob.
async fn connected_pair(db: &Db, key: &StoreKey) -> Pair {
    let (a_user, a_dev) = alice();
    let (b_user, b_dev) = bob();
    let alice = open_machine(db, key, &a_user, &a_dev).await;
    let bob = open_machine(db, key, &b_user, &b_dev).await;
    let a_up = upload_keys(&alice).await;
    let b_up = upload_keys(&bob).await;
    learn_device(&alice, &b_user, &b_dev, &b_up).await;
    learn_device(&bob, &a_user, &a_dev, &a_up).await;
    claim_session(&alice, &b_user, &b_dev, &b_up).await;
    Pair { alice, bob }
}

/// alice shares her room key for `room` with bob, who receives it.
async fn share_key(pair: &Pair, room: &RoomId) {
    let (a_user, _) = alice();
    let (b_user, b_dev) = bob();
    let requests = pair
        .alice
        .share_room_key(
            room,
            [b_user.as_ref()].into_iter(),
            EncryptionSettings::default(),
        )
        .await
        .expect("share the room key");
    let rooms = receive(&pair.bob, deliver(&requests, &a_user, &b_user, &b_dev)).await;
    assert_eq!(
        rooms,
        vec![room.to_string()],
        "bob accepted alice's room key"
    );
}

async fn machines_keep_state_across_reopen(backend: Backend) {
    let name = format!("machines_reopen_{backend:?}");
    let db = named_db(backend, &name, true).await.expect("database");
    let key = store_key(&db, None).await;
    let room = room_id!("!room:example.org");
    let (a_user, a_dev) = alice();
    let (b_user, b_dev) = bob();

    let pair = connected_pair(&db, &key).await;
    let alice_keys = pair.alice.identity_keys();
    let bob_keys = pair.bob.identity_keys();
    share_key(&pair, room).await;
    let (before, session_before) = encrypt(&pair.alice, &a_user, room, "before the restart").await;
    assert_eq!(
        decrypt(&pair.bob, &before, room).await,
        "before the restart"
    );

    // Restart: machines, stores, store key and pool all gone.
    drop(pair);
    drop(key);
    db.close().await;
    let db = named_db(backend, &name, false).await.expect("database");
    let key = store_key(&db, None).await;
    let alice = open_machine(&db, &key, &a_user, &a_dev).await;
    let bob = open_machine(&db, &key, &b_user, &b_dev).await;

    assert_eq!(alice.identity_keys().curve25519, alice_keys.curve25519);
    assert_eq!(alice.identity_keys().ed25519, alice_keys.ed25519);
    assert_eq!(bob.identity_keys().curve25519, bob_keys.curve25519);
    assert_eq!(bob.identity_keys().ed25519, bob_keys.ed25519);

    // Bob's inbound group session survived: the old event still decrypts.
    assert_eq!(decrypt(&bob, &before, room).await, "before the restart");
    // Alice's outbound group session survived: same session, bob decrypts the new message.
    let (after, session_after) = encrypt(&alice, &a_user, room, "after the restart").await;
    assert_eq!(
        session_after, session_before,
        "alice kept her outbound session"
    );
    assert_eq!(decrypt(&bob, &after, room).await, "after the restart");

    // The Olm sessions survived on both sides: alice needs no new one-time key, and bob
    // decrypts a new room key sent over the stored session.
    assert!(
        alice
            .get_missing_sessions([b_user.as_ref()].into_iter())
            .await
            .expect("missing sessions")
            .is_none(),
        "alice still has her Olm session with bob"
    );
    let stored = SqlCryptoStore::open(db.clone(), key.clone(), &b_user, &b_dev);
    let bob_sessions = stored
        .get_sessions(&alice_keys.curve25519.to_base64())
        .await
        .expect("read bob's Olm sessions");
    assert_eq!(
        bob_sessions.map(|s| s.len()),
        Some(1),
        "bob stored one Olm session with alice"
    );
    let pair = Pair { alice, bob };
    let other_room = room_id!("!other:example.org");
    share_key(&pair, other_room).await;
    let (third, _) = encrypt(
        &pair.alice,
        &a_user,
        other_room,
        "new room, old Olm session",
    )
    .await;
    assert_eq!(
        decrypt(&pair.bob, &third, other_room).await,
        "new room, old Olm session"
    );
    drop(pair);
    db.close().await;
}

async fn devices_in_one_database_are_isolated(backend: Backend) {
    let db = named_db(backend, &format!("isolation_{backend:?}"), true)
        .await
        .expect("database");
    let key = store_key(&db, None).await;
    let room = room_id!("!room:example.org");
    let (a_user, a_dev) = alice();
    let (b_user, b_dev) = bob();
    // Same user, other device; and another user with the same device id.
    let a_dev2: OwnedDeviceId = "ALICEDEV2".into();
    let pair = connected_pair(&db, &key).await;
    share_key(&pair, room).await;
    let alice2 = open_machine(&db, &key, &a_user, &a_dev2).await;
    let bob_same_id = open_machine(&db, &key, &b_user, &a_dev).await;

    let open = |user: &OwnedUserId, dev: &OwnedDeviceId| {
        SqlCryptoStore::open(db.clone(), key.clone(), user, dev)
    };
    let a = open(&a_user, &a_dev);
    let b = open(&b_user, &b_dev);
    let a2 = open(&a_user, &a_dev2);
    let b_same = open(&b_user, &a_dev);

    // Each store loads its own account.
    for (store, machine) in [
        (&a, &pair.alice),
        (&b, &pair.bob),
        (&a2, &alice2),
        (&b_same, &bob_same_id),
    ] {
        let account = store
            .load_account()
            .await
            .expect("load")
            .expect("an account");
        assert_eq!(account.user_id(), machine.user_id());
        assert_eq!(account.device_id(), machine.device_id());
        assert_eq!(
            account.identity_keys().curve25519,
            machine.identity_keys().curve25519
        );
    }
    // alice's outbound session and bob's inbound copy are theirs alone.
    assert!(
        a.get_outbound_group_session(room)
            .await
            .expect("read")
            .is_some()
    );
    for other in [&b, &a2, &b_same] {
        assert!(
            other
                .get_outbound_group_session(room)
                .await
                .expect("read")
                .is_none()
        );
    }
    assert_eq!(
        b.get_inbound_group_sessions_by_room_id(room)
            .await
            .expect("read")
            .len(),
        1
    );
    for fresh in [&a2, &b_same] {
        assert!(
            fresh
                .get_inbound_group_sessions()
                .await
                .expect("read")
                .is_empty()
        );
        assert!(fresh.load_tracked_users().await.expect("read").is_empty());
        let bob_curve = pair.bob.identity_keys().curve25519.to_base64();
        assert!(
            fresh
                .get_sessions(&bob_curve)
                .await
                .expect("read")
                .is_none()
        );
    }
    // bob's device as alice knows it is not in alice's second device's store.
    assert!(a.get_device(&b_user, &b_dev).await.expect("read").is_some());
    assert!(
        a2.get_device(&b_user, &b_dev)
            .await
            .expect("read")
            .is_none()
    );

    // A store refuses an account of another device.
    let foreign = matrix_sdk_crypto::olm::Account::with_device_id(&b_user, &b_dev);
    let refused = a2
        .save_pending_changes(matrix_sdk_crypto::store::types::PendingChanges {
            account: Some(foreign),
        })
        .await
        .expect_err("alice's store must not take bob's account");
    assert!(
        refused.to_string().contains("belongs to"),
        "clear error, got: {refused}"
    );

    // Deleting one device's data leaves the others intact.
    let before = a.payload_size().await.expect("size");
    a2.delete_all().await.expect("delete");
    assert!(a2.load_account().await.expect("load").is_none());
    assert_eq!(a2.payload_size().await.expect("size"), 0);
    assert_eq!(a.payload_size().await.expect("size"), before);
    assert!(b_same.load_account().await.expect("load").is_some());
    drop((pair, alice2, bob_same_id));
    db.close().await;
}

async fn concurrent_saves_are_all_kept(backend: Backend) {
    const DEVICES: usize = 6;
    const SAVES: usize = 8;
    const PER_SAVE: usize = 4;
    let db = named_db(backend, &format!("concurrent_{backend:?}"), true)
        .await
        .expect("database");
    let key = store_key(&db, None).await;
    let user: OwnedUserId = ALICE.try_into().expect("user id");
    let mut tasks = Vec::new();
    for n in 0..DEVICES {
        let (db, key, user) = (db.clone(), key.clone(), user.clone());
        tasks.push(tokio::spawn(async move {
            let device: OwnedDeviceId = format!("DEV{n}").into();
            let store = SqlCryptoStore::open(db, key, &user, &device);
            let account = matrix_sdk_crypto::olm::Account::with_device_id(&user, &device);
            store
                .save_pending_changes(matrix_sdk_crypto::store::types::PendingChanges {
                    account: Some(account.deep_clone()),
                })
                .await
                .expect("save the account");
            let room = RoomId::parse(format!("!room{n}:example.org")).expect("room id");
            let mut ids = Vec::new();
            for _ in 0..SAVES {
                let mut sessions = Vec::new();
                for _ in 0..PER_SAVE {
                    let (_, inbound) = account.create_group_session_pair_with_defaults(&room).await;
                    ids.push(inbound.session_id().to_owned());
                    sessions.push(inbound);
                }
                store
                    .save_changes(Changes {
                        inbound_group_sessions: sessions,
                        devices: DeviceChanges {
                            changed: vec![matrix_sdk_crypto::DeviceData::from_account(&account)],
                            ..Default::default()
                        },
                        ..Default::default()
                    })
                    .await
                    .expect("save while other devices save");
            }
            (store, room, ids)
        }));
    }
    for task in tasks {
        let (store, room, mut ids) = task.await.expect("saving task");
        let mut stored: Vec<String> = store
            .get_inbound_group_sessions()
            .await
            .expect("read")
            .iter()
            .map(|s| {
                assert_eq!(s.room_id(), room, "only this device's room");
                s.session_id().to_owned()
            })
            .collect();
        ids.sort();
        stored.sort();
        assert_eq!(stored, ids, "every session this device saved, and no other");
        assert_eq!(
            store
                .inbound_group_session_counts(None)
                .await
                .expect("count")
                .total,
            SAVES * PER_SAVE
        );
    }
    db.close().await;
}

async fn wrong_store_key_is_refused(backend: Backend) {
    let db = named_db(backend, &format!("wrong_key_{backend:?}"), true)
        .await
        .expect("database");
    let key = store_key(&db, None).await;
    let (user, device) = alice();
    let machine = open_machine(&db, &key, &user, &device).await;
    drop(machine);
    let wrong = StoreKey::load_or_create(&db, StoreSecret::Key(Zeroizing::new([8; 32]))).await;
    let err = wrong.expect_err("another key must not open the store cipher");
    assert!(
        err.to_string().contains("does not open"),
        "clear error, got: {err}"
    );
    // The right key still opens it, and the account is intact.
    let again = store_key(&db, None).await;
    let store = SqlCryptoStore::open(db.clone(), again, &user, &device);
    assert!(store.load_account().await.expect("load").is_some());
    // Pickles are not stored in the clear.
    let (data,): (Vec<u8>,) = sqlx::query_as("SELECT data FROM crypto_kv WHERE key = 'account'")
        .fetch_one(db.pool())
        .await
        .expect("the account row");
    let text = String::from_utf8_lossy(&data);
    assert!(
        !text.contains("pickle") && !text.contains(ALICE),
        "account row is encrypted"
    );
    db.close().await;
}

/// The pickle passphrase path (PBKDF2): the same passphrase reopens the store after a restart,
/// another passphrase or a raw key does not.
async fn passphrase_opens_only_its_store(backend: Backend) {
    let name = format!("passphrase_{backend:?}");
    let db = named_db(backend, &name, true).await.expect("database");
    let (user, device) = alice();
    let key = store_key(&db, Some("correct horse")).await;
    let machine = open_machine(&db, &key, &user, &device).await;
    let identity = machine.identity_keys();
    drop((machine, key));
    db.close().await;

    let db = named_db(backend, &name, false).await.expect("database");
    for wrong in [
        StoreSecret::Passphrase(Zeroizing::new("battery staple".to_owned())),
        StoreSecret::Key(Zeroizing::new(TEST_KEY)),
    ] {
        let err = StoreKey::load_or_create(&db, wrong)
            .await
            .expect_err("only the passphrase opens the store");
        assert!(
            err.to_string().contains("does not open"),
            "clear error, got: {err}"
        );
    }
    let key = store_key(&db, Some("correct horse")).await;
    let machine = open_machine(&db, &key, &user, &device).await;
    assert_eq!(machine.identity_keys().ed25519, identity.ed25519);
    drop(machine);
    db.close().await;
}

/// A save_changes whose last write fails leaves nothing of itself behind: the database makes
/// the room-settings insert fail (a trigger), after the Olm session, room key, device and
/// tracked-user rows of the same save were written.
async fn save_changes_is_atomic(backend: Backend) {
    let db = named_db(backend, &format!("atomic_{backend:?}"), true)
        .await
        .expect("database");
    let key = store_key(&db, None).await;
    let (user, device) = alice();
    let store = SqlCryptoStore::open(db.clone(), key, &user, &device);
    let account = matrix_sdk_crypto::olm::Account::with_device_id(&user, &device);
    store
        .save_pending_changes(matrix_sdk_crypto::store::types::PendingChanges {
            account: Some(account.deep_clone()),
        })
        .await
        .expect("save the account");
    let room = room_id!("!room:example.org");
    let (outbound, inbound) = account.create_group_session_pair_with_defaults(room).await;
    let changes = || Changes {
        inbound_group_sessions: vec![inbound.clone()],
        outbound_group_sessions: vec![outbound.clone()],
        devices: DeviceChanges {
            new: vec![matrix_sdk_crypto::DeviceData::from_account(&account)],
            ..Default::default()
        },
        room_settings: std::collections::HashMap::from([(
            room.to_owned(),
            matrix_sdk_crypto::store::types::RoomSettings::default(),
        )]),
        ..Default::default()
    };
    let trigger: &[&str] = match backend {
        Backend::Sqlite => &[
            "CREATE TRIGGER refuse_settings BEFORE INSERT ON crypto_room_settings \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
        ],
        Backend::Postgres => &[
            "DROP TRIGGER IF EXISTS refuse_settings ON crypto_room_settings",
            "CREATE OR REPLACE FUNCTION refuse_settings() RETURNS trigger AS $$ \
             BEGIN RAISE EXCEPTION 'refused by the test'; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER refuse_settings BEFORE INSERT ON crypto_room_settings \
             FOR EACH ROW EXECUTE FUNCTION refuse_settings()",
        ],
    };
    for sql in trigger {
        sqlx::query(*sql)
            .execute(db.pool())
            .await
            .expect("install the trigger");
    }
    store
        .save_changes(changes())
        .await
        .expect_err("the room settings insert fails");
    assert!(
        store
            .get_inbound_group_sessions()
            .await
            .expect("read")
            .is_empty()
    );
    assert!(
        store
            .get_outbound_group_session(room)
            .await
            .expect("read")
            .is_none()
    );
    assert!(
        store
            .get_device(&user, &device)
            .await
            .expect("read")
            .is_none()
    );
    assert!(store.get_room_settings(room).await.expect("read").is_none());

    let drop_trigger = match backend {
        Backend::Sqlite => "DROP TRIGGER refuse_settings",
        Backend::Postgres => "DROP TRIGGER refuse_settings ON crypto_room_settings",
    };
    sqlx::query(drop_trigger)
        .execute(db.pool())
        .await
        .expect("drop the trigger");
    store
        .save_changes(changes())
        .await
        .expect("the same save without the trigger");
    assert_eq!(
        store
            .get_inbound_group_sessions()
            .await
            .expect("read")
            .len(),
        1
    );
    assert!(
        store
            .get_outbound_group_session(room)
            .await
            .expect("read")
            .is_some()
    );
    assert!(
        store
            .get_device(&user, &device)
            .await
            .expect("read")
            .is_some()
    );
    assert!(store.get_room_settings(room).await.expect("read").is_some());
    db.close().await;
}

// ---------------------------------------------------------------------------------------------
// Figures for the report: `cargo test --test crypto_store -- --ignored --nocapture bench`.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: prints figures, run on demand"]
async fn bench_crypto_store() {
    let mut backends = vec![Backend::Sqlite];
    if std::env::var("FERRY_TEST_PG_URL").is_ok() {
        backends.push(Backend::Postgres);
    }
    for backend in backends {
        bench(backend).await;
    }
}

async fn bench(backend: Backend) {
    const DEVICES: usize = 20;
    let db = named_db(backend, &format!("bench_{backend:?}"), true)
        .await
        .expect("database");
    let key = store_key(&db, None).await;
    let room = room_id!("!room:example.org");
    let (a_user, a_dev) = alice();
    let (b_user, b_dev) = bob();

    // A typical sync for one device: one Olm-encrypted room key arrives (Olm session update,
    // message hash, inbound group session), measured end to end in receive_sync_changes.
    let pair = connected_pair(&db, &key).await;
    let mut sync_times = Vec::new();
    for i in 0..20 {
        let room = RoomId::parse(format!("!bench{i}:example.org")).expect("room id");
        let requests = pair
            .alice
            .share_room_key(
                &room,
                [b_user.as_ref()].into_iter(),
                EncryptionSettings::default(),
            )
            .await
            .expect("share");
        let events = deliver(&requests, &a_user, &b_user, &b_dev);
        let start = Instant::now();
        let rooms = receive(&pair.bob, events).await;
        sync_times.push(start.elapsed());
        assert_eq!(rooms.len(), 1);
    }
    share_key(&pair, room).await;
    drop(pair);

    // The same sync's save_changes alone: one Olm session, one inbound group session and one
    // message hash, as bob's machine writes them.
    let bob_store = SqlCryptoStore::open(db.clone(), key.clone(), &b_user, &b_dev);
    bob_store
        .load_account()
        .await
        .expect("load")
        .expect("bob's account");
    let alice_curve = open_machine(&db, &key, &a_user, &a_dev)
        .await
        .identity_keys()
        .curve25519
        .to_base64();
    let olm = bob_store
        .get_sessions(&alice_curve)
        .await
        .expect("read")
        .expect("bob's Olm session")
        .remove(0);
    let inbound = bob_store
        .get_inbound_group_sessions()
        .await
        .expect("read")
        .remove(0);
    let mut save_times = Vec::new();
    for i in 0..20 {
        let changes = Changes {
            sessions: vec![olm.clone()],
            inbound_group_sessions: vec![inbound.clone()],
            message_hashes: vec![matrix_sdk_crypto::olm::OlmMessageHash {
                sender_key: alice_curve.clone(),
                hash: format!("bench-hash-{i}"),
            }],
            ..Default::default()
        };
        let start = Instant::now();
        bob_store.save_changes(changes).await.expect("save");
        save_times.push(start.elapsed());
    }

    // Opening a machine that exists in the store.
    let mut open_times = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        let machine = open_machine(&db, &key, &b_user, &b_dev).await;
        open_times.push(start.elapsed());
        drop(machine);
    }

    // Bytes per device: fresh machines after their key upload.
    let size_before = database_size(&db, backend).await;
    let mut payload = 0;
    for n in 0..DEVICES {
        let device: OwnedDeviceId = format!("GHOST{n}").into();
        let machine = open_machine(&db, &key, &a_user, &device).await;
        upload_keys(&machine).await;
        payload += SqlCryptoStore::open(db.clone(), key.clone(), &a_user, &device)
            .payload_size()
            .await
            .expect("size");
    }
    let size_after = database_size(&db, backend).await;
    let bob_payload = SqlCryptoStore::open(db.clone(), key.clone(), &b_user, &b_dev)
        .payload_size()
        .await
        .expect("size");

    eprintln!(
        "crypto store on {backend:?} ({} build):\n  \
         open an existing OlmMachine: median {:?}\n  \
         receive_sync_changes with one Olm-encrypted room key (incl. save_changes): median {:?}\n  \
         save_changes of that sync (Olm session, room key, message hash): median {:?}\n  \
         fresh device after key upload: {} bytes payload, {} bytes on disk per device \
         ({DEVICES} devices)\n  \
         bob after 21 room keys and 1 Olm session: {} bytes payload",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        median(&mut open_times),
        median(&mut sync_times),
        median(&mut save_times),
        payload / DEVICES as u64,
        size_after.saturating_sub(size_before) / DEVICES as u64,
        bob_payload,
    );
    db.close().await;
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

async fn database_size(db: &Db, backend: Backend) -> u64 {
    match backend {
        Backend::Sqlite => {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(db.pool())
                .await
                .expect("checkpoint");
            let (pages,): (i64,) = sqlx::query_as(
                "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
            )
            .fetch_one(db.pool())
            .await
            .expect("page count");
            u64::try_from(pages).unwrap_or(0)
        }
        Backend::Postgres => {
            let (size,): (i64,) = sqlx::query_as("SELECT pg_database_size(current_database())")
                .fetch_one(db.pool())
                .await
                .expect("database size");
            u64::try_from(size).unwrap_or(0)
        }
    }
}
