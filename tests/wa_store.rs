//! ferry's WhatsApp store (`ferry::network::whatsapp::store::WaStore`, wacore's `Backend` over
//! ferry's database) on SQLite and on Postgres.
//!
//! wacore 0.7 ships no store conformance suite (its `InMemoryBackend` tests are private), so
//! these tests check each trait method against the semantics of `InMemoryBackend`: round trips,
//! overwrites, deletes, batch forms, expiry sweeps and merge rules; then two logins sharing one
//! database without seeing each other's rows, a reopen after the database was closed (a restart),
//! and that the device's private keys never reach the database in plaintext.
//!
//! Each test runs as `sqlite_<name>` and `postgres_<name>`. Postgres: without
//! `FERRY_TEST_PG_URL` the Postgres copies fail with instructions (run through `scripts/test.sh`),
//! unless `FERRY_TEST_ALLOW_NO_PG=1`, which skips them knowingly with a printed note.

use std::{path::PathBuf, sync::Arc};

use bytes::Bytes;
use ferry::{
    config::{DatabaseConfig, DatabaseType},
    crypto::store::{StoreKey, StoreSecret},
    db::Db,
    network::whatsapp::store::WaStore,
};
use sqlx::{Connection, Row};
use whatsapp_rust::wacore::{
    appstate::{hash::HashState, processor::AppStateMutationMAC},
    store::{
        Device,
        traits::{
            AppStateSyncKey, AppSyncStore, DeviceInfo, DeviceListRecord, DeviceStore,
            LidPnMappingEntry, MsgSecretEntry, MsgSecretStore, ProtocolStore, SignalStore,
            TcTokenEntry,
        },
    },
};
use zeroize::Zeroizing;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A raw store key: PBKDF2's rounds are slow in a debug build and not what is tested here.
const TEST_KEY: [u8; 32] = [9; 32];

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ferry-wastore-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).expect("create the test directory");
    dir
}

/// The database config of a fresh test database, or `None` when Postgres is not configured and
/// skipping is allowed.
async fn config(backend: Backend) -> Option<DatabaseConfig> {
    match backend {
        Backend::Sqlite => {
            let path = temp_dir().join("ferry.db");
            Some(DatabaseConfig {
                kind: DatabaseType::Sqlite,
                uri: format!("sqlite://{}", path.display()),
                max_connections: 4,
            })
        }
        Backend::Postgres => {
            let admin = match std::env::var("FERRY_TEST_PG_URL") {
                Ok(url) => url,
                Err(_) if std::env::var("FERRY_TEST_ALLOW_NO_PG").as_deref() == Ok("1") => {
                    eprintln!(
                        "note: FERRY_TEST_PG_URL is not set and FERRY_TEST_ALLOW_NO_PG=1: the \
                         PostgreSQL copy of this test was NOT run"
                    );
                    return None;
                }
                Err(_) => panic!(
                    "FERRY_TEST_PG_URL is not set: run through scripts/test.sh (or export it), or \
                     set FERRY_TEST_ALLOW_NO_PG=1 to skip the PostgreSQL half knowingly"
                ),
            };
            let name = format!("ferry_wastore_{:08x}", rand::random::<u32>());
            let mut conn = sqlx::postgres::PgConnection::connect(&admin)
                .await
                .expect("connect to FERRY_TEST_PG_URL");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await
                .expect("create the test database");
            conn.close().await.expect("close the admin connection");
            let mut url = url::Url::parse(&admin).expect("FERRY_TEST_PG_URL is a URL");
            url.set_path(&name);
            Some(DatabaseConfig {
                kind: DatabaseType::Postgres,
                uri: url.to_string(),
                max_connections: 4,
            })
        }
    }
}

async fn open(config: &DatabaseConfig) -> (Db, StoreKey) {
    let db = Db::connect(config).await.expect("connect and migrate");
    let key = StoreKey::load_or_create(&db, StoreSecret::Key(Zeroizing::new(TEST_KEY)))
        .await
        .expect("store key");
    (db, key)
}

/// One fresh store on `backend` (and its database, for raw checks).
async fn store(backend: Backend) -> Option<(WaStore, Db, DatabaseConfig)> {
    let config = config(backend).await?;
    let (db, key) = open(&config).await;
    Some((
        WaStore::open(db.clone(), key, &WaStore::new_id()),
        db,
        config,
    ))
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name(super::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $name() { super::$name(super::Backend::Postgres).await })*
        }
    };
}

both_backends!(
    signal_store_round_trips,
    prekeys_keep_ids_upload_marks_and_the_maximum,
    app_sync_store_round_trips,
    sender_key_tracking_lid_mappings_and_base_keys,
    device_lists_group_metadata_and_tokens,
    sent_messages_are_taken_once_and_expire,
    pending_inbound_buffer,
    message_secrets_merge_and_expire,
    device_round_trips_and_its_secrets_are_encrypted,
    two_logins_share_nothing,
    everything_survives_a_restart,
    logout_forgets_what_ferry_kept_about_the_login,
);

async fn signal_store_round_trips(backend: Backend) {
    let Some((s, ..)) = store(backend).await else {
        return;
    };
    let alice = "5511999990000@s.whatsapp.net";
    let alice_dev = "5511999990000:3@s.whatsapp.net";

    assert_eq!(s.load_identity(alice).await.unwrap(), None);
    assert!(!s.has_signal_state_for_user("5511999990000").await.unwrap());
    s.put_identity(alice, [1; 32]).await.unwrap();
    s.put_identity(alice, [2; 32]).await.unwrap();
    assert_eq!(s.load_identity(alice).await.unwrap(), Some([2; 32]));
    s.put_identities_batch(&[
        (Arc::from(alice_dev), [3; 32]),
        (Arc::from("x@lid"), [4; 32]),
    ])
    .await
    .unwrap();
    assert_eq!(s.load_identity(alice_dev).await.unwrap(), Some([3; 32]));
    assert_eq!(s.load_identity("x@lid").await.unwrap(), Some([4; 32]));
    assert!(s.has_signal_state_for_user("5511999990000").await.unwrap());
    // A user this one is a prefix of does not count.
    assert!(!s.has_signal_state_for_user("551199999").await.unwrap());
    s.delete_identity(alice).await.unwrap();
    assert_eq!(s.load_identity(alice).await.unwrap(), None);

    assert_eq!(s.get_session(alice).await.unwrap(), None);
    assert!(!s.has_session(alice).await.unwrap());
    s.put_session(alice, b"session one").await.unwrap();
    s.put_session(alice, b"session two").await.unwrap();
    assert_eq!(
        s.get_session(alice).await.unwrap().as_deref(),
        Some(&b"session two"[..])
    );
    assert!(s.has_session(alice).await.unwrap());
    s.put_sessions_batch(&[
        (Arc::from(alice_dev), Bytes::from_static(b"dev session")),
        (Arc::from("7@lid"), Bytes::from_static(b"lid session")),
    ])
    .await
    .unwrap();
    assert_eq!(
        s.get_session("7@lid").await.unwrap().as_deref(),
        Some(&b"lid session"[..])
    );
    assert!(s.has_signal_state_for_user("7").await.unwrap());
    s.delete_session(alice).await.unwrap();
    assert_eq!(s.get_session(alice).await.unwrap(), None);
    assert!(s.get_session(alice_dev).await.unwrap().is_some());

    assert_eq!(s.load_signed_prekey(1).await.unwrap(), None);
    s.store_signed_prekey(10, b"ten").await.unwrap();
    s.store_signed_prekey(2, b"two").await.unwrap();
    assert_eq!(
        s.load_signed_prekey(10).await.unwrap(),
        Some(b"ten".to_vec())
    );
    assert_eq!(
        s.load_all_signed_prekeys().await.unwrap(),
        vec![(2, b"two".to_vec()), (10, b"ten".to_vec())]
    );
    s.remove_signed_prekey(2).await.unwrap();
    assert_eq!(s.load_all_signed_prekeys().await.unwrap().len(), 1);

    let group_addr = "120363@g.us:5511999990000@s.whatsapp.net";
    assert_eq!(s.get_sender_key(group_addr).await.unwrap(), None);
    s.put_sender_key(group_addr, b"sk1").await.unwrap();
    assert_eq!(
        s.get_sender_key(group_addr).await.unwrap(),
        Some(b"sk1".to_vec())
    );
    s.put_sender_keys_batch(&[(Arc::from(group_addr), Bytes::from_static(b"sk2"))])
        .await
        .unwrap();
    assert_eq!(
        s.get_sender_key(group_addr).await.unwrap(),
        Some(b"sk2".to_vec())
    );
    s.delete_sender_key(group_addr).await.unwrap();
    assert_eq!(s.get_sender_key(group_addr).await.unwrap(), None);
}

async fn prekeys_keep_ids_upload_marks_and_the_maximum(backend: Backend) {
    let Some((s, db, _)) = store(backend).await else {
        return;
    };
    assert_eq!(s.get_max_prekey_id().await.unwrap(), 0);
    s.store_prekey(5, b"five", false).await.unwrap();
    let batch: Vec<(u32, Bytes)> = (100..900)
        .map(|id| (id, Bytes::from(format!("key {id}"))))
        .collect();
    s.store_prekeys_batch(&batch, false).await.unwrap();
    assert_eq!(s.get_max_prekey_id().await.unwrap(), 899);
    assert_eq!(
        s.load_prekey(5).await.unwrap().as_deref(),
        Some(&b"five"[..])
    );
    assert_eq!(
        s.load_prekey(512).await.unwrap().as_deref(),
        Some(&b"key 512"[..])
    );
    let loaded = s.load_prekeys_batch(&[5, 6, 101]).await.unwrap();
    assert_eq!(
        loaded.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        vec![5, 101]
    );

    // Marking never inserts: a key consumed before the mark stays gone.
    s.remove_prekey(101).await.unwrap();
    s.mark_prekeys_uploaded(&[5, 101]).await.unwrap();
    assert_eq!(s.load_prekey(101).await.unwrap(), None);
    let uploaded: Vec<(String, i64)> = sqlx::query(
        "SELECT name, aux FROM whatsapp_store WHERE store_id = $1 AND kind = 'prekey' \
         AND name IN ('5', '100') ORDER BY name",
    )
    .bind(s.id())
    .fetch_all(db.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))
    .collect();
    assert_eq!(uploaded, vec![("100".to_owned(), 0), ("5".to_owned(), 1)]);
}

async fn app_sync_store_round_trips(backend: Backend) {
    let Some((s, ..)) = store(backend).await else {
        return;
    };
    assert!(s.get_sync_key(b"k1").await.unwrap().is_none());
    assert_eq!(s.get_latest_sync_key_id().await.unwrap(), None);
    let key = |data: u8, ts| AppStateSyncKey {
        key_data: vec![data; 32],
        fingerprint: vec![data],
        timestamp: ts,
    };
    s.set_sync_key(b"k1", key(1, 200)).await.unwrap();
    // The latest key is the one stored last, not the newest timestamp.
    s.set_sync_key(b"k2", key(2, 100)).await.unwrap();
    let k1 = s.get_sync_key(b"k1").await.unwrap().unwrap();
    assert_eq!((k1.key_data, k1.timestamp), (vec![1; 32], 200));
    assert_eq!(
        s.get_latest_sync_key_id().await.unwrap(),
        Some(b"k2".to_vec())
    );

    assert_eq!(s.get_version("regular").await.unwrap().version, 0);
    let mut state = HashState {
        version: 42,
        ..HashState::default()
    };
    state.hash[0] = 7;
    state
        .index_value_map
        .insert("idx".to_owned(), vec![1, 2, 3]);
    s.set_version("regular", state).await.unwrap();
    let back = s.get_version("regular").await.unwrap();
    assert_eq!((back.version, back.hash[0]), (42, 7));
    assert_eq!(back.index_value_map.get("idx"), Some(&vec![1, 2, 3]));
    assert_eq!(s.get_version("critical_block").await.unwrap().version, 0);

    let mac = |i: u8, v: u8| AppStateMutationMAC {
        index_mac: vec![i; 32],
        value_mac: vec![v; 32],
    };
    s.put_mutation_macs("regular", 42, &[mac(1, 10), mac(2, 20)])
        .await
        .unwrap();
    s.put_mutation_macs("other", 1, &[mac(1, 99)])
        .await
        .unwrap();
    assert_eq!(
        s.get_mutation_mac("regular", &[1; 32]).await.unwrap(),
        Some(vec![10; 32])
    );
    assert_eq!(
        s.get_mutation_mac("other", &[1; 32]).await.unwrap(),
        Some(vec![99; 32])
    );
    let many = s
        .get_mutation_macs("regular", &[[1; 32], [2; 32], [3; 32]])
        .await
        .unwrap();
    assert_eq!(many.len(), 2);
    assert_eq!(many.get(&[2; 32]), Some(&vec![20; 32]));
    s.delete_mutation_macs("regular", &[vec![1; 32]])
        .await
        .unwrap();
    assert_eq!(s.get_mutation_mac("regular", &[1; 32]).await.unwrap(), None);
    assert!(
        s.get_mutation_mac("regular", &[2; 32])
            .await
            .unwrap()
            .is_some()
    );
    s.clear_mutation_macs("regular").await.unwrap();
    assert_eq!(s.get_mutation_mac("regular", &[2; 32]).await.unwrap(), None);
    assert!(
        s.get_mutation_mac("other", &[1; 32])
            .await
            .unwrap()
            .is_some()
    );
}

async fn sender_key_tracking_lid_mappings_and_base_keys(backend: Backend) {
    let Some((s, ..)) = store(backend).await else {
        return;
    };
    let g1 = "111@g.us";
    let g2 = "222@g.us";
    assert!(s.get_sender_key_devices(g1).await.unwrap().is_empty());
    s.set_sender_key_status(g1, &[("a:1@lid", true), ("b:2@lid", false)])
        .await
        .unwrap();
    s.set_sender_key_status(g2, &[("a:1@lid", true)])
        .await
        .unwrap();
    s.set_sender_key_status(g1, &[("b:2@lid", true)])
        .await
        .unwrap();
    let mut devices = s.get_sender_key_devices(g1).await.unwrap();
    devices.sort();
    assert_eq!(
        devices,
        vec![("a:1@lid".to_owned(), true), ("b:2@lid".to_owned(), true)]
    );
    s.delete_sender_key_device_rows(&["a:1@lid"]).await.unwrap();
    assert_eq!(s.get_sender_key_devices(g1).await.unwrap().len(), 1);
    assert!(s.get_sender_key_devices(g2).await.unwrap().is_empty());
    s.clear_sender_key_devices(g1).await.unwrap();
    assert!(s.get_sender_key_devices(g1).await.unwrap().is_empty());
    s.set_sender_key_status(g2, &[("c:3@lid", false)])
        .await
        .unwrap();
    s.clear_all_sender_key_devices().await.unwrap();
    assert!(s.get_sender_key_devices(g2).await.unwrap().is_empty());

    let entry = |lid: &str, pn: &str, at| LidPnMappingEntry {
        lid: lid.to_owned(),
        phone_number: pn.to_owned(),
        created_at: at,
        updated_at: at,
        learning_source: "usync".to_owned(),
    };
    assert!(s.get_lid_mapping("100").await.unwrap().is_none());
    s.put_lid_mapping(&entry("100", "5511", 1)).await.unwrap();
    assert_eq!(
        s.get_lid_mapping("100")
            .await
            .unwrap()
            .unwrap()
            .phone_number,
        "5511"
    );
    assert_eq!(s.get_pn_mapping("5511").await.unwrap().unwrap().lid, "100");
    // The LID moves to another number: the old number no longer maps to it.
    s.put_lid_mapping(&entry("100", "5522", 2)).await.unwrap();
    assert!(s.get_pn_mapping("5511").await.unwrap().is_none());
    assert_eq!(s.get_pn_mapping("5522").await.unwrap().unwrap().lid, "100");
    s.put_lid_mappings(&[entry("200", "5533", 3), entry("300", "5544", 3)])
        .await
        .unwrap();
    let mut all: Vec<String> = s
        .get_all_lid_mappings()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.lid)
        .collect();
    all.sort();
    assert_eq!(all, vec!["100", "200", "300"]);

    let addr = "5511:1@s.whatsapp.net";
    assert!(!s.has_same_base_key(addr, "M1", b"base").await.unwrap());
    s.save_base_key(addr, "M1", b"base").await.unwrap();
    assert!(s.has_same_base_key(addr, "M1", b"base").await.unwrap());
    assert!(!s.has_same_base_key(addr, "M1", b"other").await.unwrap());
    assert!(!s.has_same_base_key(addr, "M2", b"base").await.unwrap());
    s.delete_base_key(addr, "M1").await.unwrap();
    assert!(!s.has_same_base_key(addr, "M1", b"base").await.unwrap());
}

async fn device_lists_group_metadata_and_tokens(backend: Backend) {
    let Some((s, ..)) = store(backend).await else {
        return;
    };
    let record = |user: &str, devices: &[u32], ts| DeviceListRecord {
        user: user.to_owned(),
        devices: devices
            .iter()
            .map(|d| DeviceInfo::new(*d, Some(*d)))
            .collect(),
        timestamp: ts,
        phash: Some("2:abc".to_owned()),
        raw_id: Some(7),
    };
    assert!(s.get_devices("5511").await.unwrap().is_none());
    s.update_device_list(record("5511", &[0, 1], 10))
        .await
        .unwrap();
    s.update_device_lists(vec![
        record("5511", &[0, 1, 2], 11),
        record("5522", &[0], 11),
    ])
    .await
    .unwrap();
    let back = s.get_devices("5511").await.unwrap().unwrap();
    assert_eq!(
        back.devices.iter().map(|d| d.device_id).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert_eq!(
        (back.timestamp, back.raw_id, back.phash.as_deref()),
        (11, Some(7), Some("2:abc"))
    );
    s.delete_devices("5511").await.unwrap();
    assert!(s.get_devices("5511").await.unwrap().is_none());
    assert!(s.get_devices("5522").await.unwrap().is_some());

    assert!(s.get_group_metadata("1@g.us").await.unwrap().is_none());
    s.put_group_metadata("1@g.us", b"blob").await.unwrap();
    assert_eq!(
        s.get_group_metadata("1@g.us").await.unwrap(),
        Some(b"blob".to_vec())
    );
    s.delete_group_metadata("1@g.us").await.unwrap();
    assert!(s.get_group_metadata("1@g.us").await.unwrap().is_none());

    let jid = "100@lid";
    assert!(s.get_tc_token(jid).await.unwrap().is_none());
    s.put_tc_token(
        jid,
        &TcTokenEntry {
            token: b"tok".to_vec(),
            token_timestamp: 1000,
            sender_timestamp: None,
        },
    )
    .await
    .unwrap();
    // A stale received token does not replace a fresher one; the sender bucket is kept.
    s.touch_tc_token_sender_timestamp(jid, 1500).await.unwrap();
    s.touch_tc_token_sender_timestamp(jid, 1200).await.unwrap();
    s.store_received_tc_token(jid, b"old", 900).await.unwrap();
    let t = s.get_tc_token(jid).await.unwrap().unwrap();
    assert_eq!(
        (t.token.as_slice(), t.token_timestamp, t.sender_timestamp),
        (&b"tok"[..], 1000, Some(1500))
    );
    s.store_received_tc_token(jid, b"new", 2000).await.unwrap();
    let t = s.get_tc_token(jid).await.unwrap().unwrap();
    assert_eq!(
        (t.token.as_slice(), t.token_timestamp, t.sender_timestamp),
        (&b"new"[..], 2000, Some(1500))
    );
    // A placeholder made by a sender-side touch.
    s.touch_tc_token_sender_timestamp("200@lid", 50)
        .await
        .unwrap();
    let p = s.get_tc_token("200@lid").await.unwrap().unwrap();
    assert!(p.token.is_empty());
    let mut jids = s.get_all_tc_token_jids().await.unwrap();
    jids.sort();
    assert_eq!(jids, vec!["100@lid", "200@lid"]);
    // 200@lid: placeholder with an old sender bucket -> expired. 100@lid: live token.
    assert_eq!(s.delete_expired_tc_tokens(1500, 100).await.unwrap(), 1);
    assert_eq!(s.get_all_tc_token_jids().await.unwrap(), vec!["100@lid"]);
    s.delete_tc_token(jid).await.unwrap();
    assert!(s.get_tc_token(jid).await.unwrap().is_none());
}

async fn sent_messages_are_taken_once_and_expire(backend: Backend) {
    let Some((s, ..)) = store(backend).await else {
        return;
    };
    let chat = "5511@s.whatsapp.net";
    assert_eq!(s.take_sent_message(chat, "M1").await.unwrap(), None);
    s.store_sent_message(chat, "M1", b"payload one")
        .await
        .unwrap();
    s.store_sent_message(chat, "M2", b"payload two")
        .await
        .unwrap();
    assert_eq!(
        s.take_sent_message(chat, "M1").await.unwrap(),
        Some(b"payload one".to_vec())
    );
    assert_eq!(s.take_sent_message(chat, "M1").await.unwrap(), None);
    assert_eq!(
        s.take_sent_message("other@s.whatsapp.net", "M2")
            .await
            .unwrap(),
        None
    );
    let now = chrono_now();
    assert_eq!(s.delete_expired_sent_messages(now - 60).await.unwrap(), 0);
    assert_eq!(s.delete_expired_sent_messages(now + 60).await.unwrap(), 1);
    assert_eq!(s.take_sent_message(chat, "M2").await.unwrap(), None);
}

async fn pending_inbound_buffer(backend: Backend) {
    let Some((s, ..)) = store(backend).await else {
        return;
    };
    let (chat, sender) = ("1@g.us", "5511:2@s.whatsapp.net");
    assert_eq!(
        s.get_pending_inbound(chat, sender, "A").await.unwrap(),
        None
    );
    s.store_pending_inbound(chat, sender, "A", b"plain A")
        .await
        .unwrap();
    s.store_pending_inbound_batch(&[
        whatsapp_rust::wacore::store::traits::PendingInboundRow {
            chat,
            sender,
            id: "B",
            message: b"plain B",
        },
        whatsapp_rust::wacore::store::traits::PendingInboundRow {
            chat: "2@g.us",
            sender,
            id: "A",
            message: b"other chat",
        },
    ])
    .await
    .unwrap();
    assert_eq!(
        s.get_pending_inbound(chat, sender, "A").await.unwrap(),
        Some(b"plain A".to_vec())
    );
    assert_eq!(
        s.get_pending_inbound("2@g.us", sender, "A").await.unwrap(),
        Some(b"other chat".to_vec())
    );
    s.delete_pending_inbound(chat, sender, "A").await.unwrap();
    assert_eq!(
        s.get_pending_inbound(chat, sender, "A").await.unwrap(),
        None
    );
    s.delete_pending_inbound_batch(&[whatsapp_rust::wacore::store::traits::PendingInboundKey {
        chat,
        sender,
        id: "B",
    }])
    .await
    .unwrap();
    assert_eq!(
        s.get_pending_inbound(chat, sender, "B").await.unwrap(),
        None
    );
    let now = chrono_now();
    assert_eq!(s.delete_expired_pending_inbound(now - 60).await.unwrap(), 0);
    assert_eq!(s.delete_expired_pending_inbound(now + 60).await.unwrap(), 1);
}

async fn message_secrets_merge_and_expire(backend: Backend) {
    let Some((s, ..)) = store(backend).await else {
        return;
    };
    let entry = |id: &str, secret: u8, expires_at, ts| MsgSecretEntry {
        chat: Arc::from("c@s.whatsapp.net"),
        sender: Arc::from("s@s.whatsapp.net"),
        msg_id: Arc::from(id),
        secret: [secret; 32],
        expires_at,
        message_ts: ts,
    };
    assert_eq!(
        s.get_msg_secret("c@s.whatsapp.net", "s@s.whatsapp.net", "M")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.put_msg_secrets(vec![
            entry("M", 1, 100, 50),
            entry("N", 2, 100, 0),
            entry("Z", 3, 0, 0)
        ])
        .await
        .unwrap(),
        3
    );
    // Re-storing never shortens a deadline and never forgets a known parent time.
    s.put_msg_secrets(vec![entry("M", 4, 80, 0), entry("N", 5, 300, 60)])
        .await
        .unwrap();
    let get = async |id: &str| {
        s.get_msg_secret_with_ts("c@s.whatsapp.net", "s@s.whatsapp.net", id)
            .await
            .unwrap()
    };
    assert_eq!(get("M").await, Some((vec![4; 32], 50)));
    assert_eq!(get("N").await, Some((vec![5; 32], 60)));
    s.put_msg_secret("c@s.whatsapp.net", "s@s.whatsapp.net", "P", &[6; 32])
        .await
        .unwrap();
    // M expires at 100 (due at a cutoff of 100); N at 300; Z and P never.
    assert_eq!(s.delete_expired_msg_secrets(100).await.unwrap(), 1);
    assert_eq!(get("M").await, None);
    assert!(get("N").await.is_some());
    assert_eq!(s.delete_expired_msg_secrets(i64::MAX - 1).await.unwrap(), 1);
    assert!(get("Z").await.is_some());
    assert!(get("P").await.is_some());
}

async fn device_round_trips_and_its_secrets_are_encrypted(backend: Backend) {
    let Some((s, db, _)) = store(backend).await else {
        return;
    };
    assert!(!s.exists().await.unwrap());
    assert!(s.load().await.unwrap().is_none());
    assert_eq!(s.create().await.unwrap(), 1);
    assert!(s.exists().await.unwrap());
    let created = s.load().await.unwrap().expect("create() makes the device");
    // create() again keeps the keys it made.
    s.create().await.unwrap();
    let again = s.load().await.unwrap().unwrap();
    assert_eq!(
        again.identity_key.private_key.serialize(),
        created.identity_key.private_key.serialize()
    );

    let mut device = Device::new();
    device.push_name = "Ferry Test".to_owned();
    device.registration_id = 4242;
    device.next_pre_key_id = 812;
    device.pn = Some("5511999990000:7@s.whatsapp.net".parse().unwrap());
    s.save(&device).await.unwrap();
    let back = s.load().await.unwrap().unwrap();
    assert_eq!(back.push_name, "Ferry Test");
    assert_eq!((back.registration_id, back.next_pre_key_id), (4242, 812));
    assert_eq!(back.pn, device.pn);
    assert_eq!(
        back.identity_key.private_key.serialize(),
        device.identity_key.private_key.serialize()
    );
    assert_eq!(
        back.noise_key.private_key.serialize(),
        device.noise_key.private_key.serialize()
    );
    assert_eq!(back.adv_secret_key, device.adv_secret_key);

    // What the database holds: neither the private keys nor the ADV secret, in raw bytes or in
    // the JSON the library would serialise them as.
    s.put_session("5511@s.whatsapp.net", b"SESSION-PLAINTEXT")
        .await
        .unwrap();
    let rows: Vec<Vec<u8>> = sqlx::query("SELECT value FROM whatsapp_store WHERE store_id = $1")
        .bind(s.id())
        .fetch_all(db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<Vec<u8>, _>(0))
        .collect();
    assert!(!rows.is_empty());
    let secrets: [&[u8]; 3] = [
        device.identity_key.private_key.serialize(),
        device.noise_key.private_key.serialize(),
        &device.adv_secret_key,
    ];
    for row in &rows {
        let text = String::from_utf8_lossy(row);
        assert!(
            !text.contains("Ferry Test"),
            "the device row is stored in plaintext"
        );
        assert!(
            !text.contains("SESSION-PLAINTEXT"),
            "a session is stored in plaintext"
        );
        for secret in secrets {
            assert!(
                !row.windows(32).any(|w| w == secret),
                "a private key is stored in plaintext"
            );
            let json = serde_json::to_string(secret).unwrap();
            assert!(!text.contains(json.trim_matches(|c| c == '[' || c == ']')));
        }
    }
}

async fn two_logins_share_nothing(backend: Backend) {
    let Some((a, db, config)) = store(backend).await else {
        return;
    };
    let (_, key) = open(&config).await;
    let b = WaStore::open(db.clone(), key, &WaStore::new_id());
    a.put_identity("w@s.whatsapp.net", [1; 32]).await.unwrap();
    a.put_session("u@s.whatsapp.net", b"a's").await.unwrap();
    a.store_prekey(1, b"a's prekey", false).await.unwrap();
    a.save(&Device::new()).await.unwrap();
    b.put_session("u@s.whatsapp.net", b"b's").await.unwrap();

    assert_eq!(b.load_identity("w@s.whatsapp.net").await.unwrap(), None);
    assert_eq!(
        b.get_session("u@s.whatsapp.net").await.unwrap().as_deref(),
        Some(&b"b's"[..])
    );
    assert_eq!(
        a.get_session("u@s.whatsapp.net").await.unwrap().as_deref(),
        Some(&b"a's"[..])
    );
    assert_eq!(b.load_prekey(1).await.unwrap(), None);
    assert_eq!(b.get_max_prekey_id().await.unwrap(), 0);
    assert!(!b.exists().await.unwrap());
    assert!(!b.has_signal_state_for_user("w").await.unwrap());
    assert!(a.has_signal_state_for_user("w").await.unwrap());

    // Unlinking one login removes its rows only.
    a.destroy().await.unwrap();
    assert_eq!(a.row_count().await.unwrap(), 0);
    assert!(!a.exists().await.unwrap());
    assert_eq!(b.row_count().await.unwrap(), 1);
}

async fn everything_survives_a_restart(backend: Backend) {
    let Some(config) = config(backend).await else {
        return;
    };
    let id = WaStore::new_id();
    let device = Device::new();
    {
        let (db, key) = open(&config).await;
        let s = WaStore::open(db.clone(), key, &id);
        s.save(&device).await.unwrap();
        s.put_session("u@s.whatsapp.net", b"ratchet").await.unwrap();
        s.store_prekey(9, b"prekey nine", true).await.unwrap();
        s.set_sync_key(
            b"k",
            AppStateSyncKey {
                key_data: vec![5; 32],
                fingerprint: vec![],
                timestamp: 3,
            },
        )
        .await
        .unwrap();
        s.put_lid_mapping(&LidPnMappingEntry {
            lid: "100".into(),
            phone_number: "5511".into(),
            created_at: 1,
            updated_at: 1,
            learning_source: "test".into(),
        })
        .await
        .unwrap();
        db.close().await;
    }
    let (db, key) = open(&config).await;
    let s = WaStore::open(db, key, &id);
    let back = s.load().await.unwrap().expect("the device after a restart");
    assert_eq!(
        back.identity_key.private_key.serialize(),
        device.identity_key.private_key.serialize()
    );
    assert_eq!(
        s.get_session("u@s.whatsapp.net").await.unwrap().as_deref(),
        Some(&b"ratchet"[..])
    );
    assert_eq!(
        s.load_prekey(9).await.unwrap().as_deref(),
        Some(&b"prekey nine"[..])
    );
    assert_eq!(
        s.get_latest_sync_key_id().await.unwrap(),
        Some(b"k".to_vec())
    );
    assert_eq!(s.get_pn_mapping("5511").await.unwrap().unwrap().lid, "100");
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `forget_login` (run by `logout whatsapp`) removes the login's names, pictures, timers, polls,
/// phone watch and pending expiries, and nothing of another login, also when the ids contain
/// LIKE wildcards.
async fn logout_forgets_what_ferry_kept_about_the_login(backend: Backend) {
    let Some((_, db, _)) = store(backend).await else {
        return;
    };
    let (gone, kept) = ("55_1%", "55x1y");
    for login in [gone, kept] {
        for key in [
            format!("whatsapp/{login}/timer/chat"),
            format!("whatsapp/{login}/poll/P1"),
            format!("whatsapp:{login}:profiles"),
            format!("whatsapp:store-{login}:phone_seen"),
        ] {
            db.kv_set(&key, "v").await.unwrap();
        }
        sqlx::query(
            "INSERT INTO whatsapp_expiry (login_id, chat_id, message_id, deadline_ms) \
             VALUES ($1, 'c', $2, 1)",
        )
        .bind(login)
        .bind(format!("m-{login}"))
        .execute(db.pool())
        .await
        .unwrap();
    }
    ferry::network::whatsapp::forget_login(&db, gone, &format!("store-{gone}"))
        .await
        .unwrap();
    for (login, present) in [(gone, false), (kept, true)] {
        for key in [
            format!("whatsapp/{login}/timer/chat"),
            format!("whatsapp/{login}/poll/P1"),
            format!("whatsapp:{login}:profiles"),
            format!("whatsapp:store-{login}:phone_seen"),
        ] {
            assert_eq!(db.kv_get(&key).await.unwrap().is_some(), present, "{key}");
        }
        let expiries: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM whatsapp_expiry WHERE login_id = $1")
                .bind(login)
                .fetch_one(db.pool())
                .await
                .unwrap();
        assert_eq!(expiries, i64::from(present), "{login}");
    }
}
