//! End-to-end encryption on the Matrix side, checked with a real E2EE client (matrix-sdk 0.18,
//! in-memory stores) against the real Synapse: portals are created encrypted, a sim contact's
//! message arrives decrypted from the ghost's own device, which the client sees cross-signed by
//! the ghost's own identity; the client's encrypted reply reaches the sim contact; a client
//! that joins later reads new messages; all of it still works after ferry restarts (the
//! devices' state lives in ferry's database, `crypto::store`).
//!
//! Every scenario runs on two homeserver profiles (`Profile`), each on SQLite and Postgres:
//! `e2ee::push::…` on the shared Synapse, which pushes crypto inputs in transactions
//! (MSC2409/MSC3202) and manages devices by MSC4190; `e2ee::conduit::…` on a private Synapse
//! with all of that turned off (the Conduit-like profile), where ferry makes its devices by
//! appservice login and reads crypto inputs from a `/sync` loop per device.

use std::time::Duration;

use matrix_sdk::{
    Client, Room,
    config::SyncSettings,
    deserialized_responses::EncryptionInfo,
    ruma::{
        OwnedDeviceId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId,
        api::client::uiaa,
        events::room::message::{OriginalSyncRoomMessageEvent, RoomMessageEventContent},
    },
};
use reqwest::Method;
use tokio::sync::mpsc;

use crate::{
    common::{Backend, Ferry, Sim, Slot, User, WAIT, enc, logged_in_user},
    drills::PrivateSynapse,
};

/// Which homeserver behaviour a scenario runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Profile {
    /// The shared Synapse: to-device events, device lists and key counts pushed in
    /// transactions, devices made by MSC4190.
    Push,
    /// A private Synapse whose registration has no MSC2409/MSC3202 pushes and no
    /// `io.element.msc4190`: devices by appservice login, crypto inputs from `/sync`.
    ConduitLike,
}

/// The homeserver a scenario runs on: the slot ferry uses there, and the private Synapse
/// (stopped on drop, after ferry) for the Conduit-like profile.
struct Homeserver {
    slot: Slot,
    _private: Option<PrivateSynapse>,
    /// Push-profile scenarios run one at a time: Synapse can lose a pushed to-device message
    /// when several are notified at once (each notification advances the appservice's stream
    /// position but reads only its own recipients), so concurrent scenarios on the shared
    /// Synapse would lose each other's room keys. Production is exposed to the same loss
    /// (README, encryption section); the tests must not be.
    _serial: Option<tokio::sync::MutexGuard<'static, ()>>,
}

static PUSH_SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Homeserver {
    async fn start(profile: Profile) -> Homeserver {
        match profile {
            Profile::Push => {
                let serial = PUSH_SERIAL.lock().await;
                Homeserver {
                    slot: Slot::claim(),
                    _private: None,
                    _serial: Some(serial),
                }
            }
            Profile::ConduitLike => {
                let ferry_port = crate::drills::free_port_pair();
                let (synapse, slot) = PrivateSynapse::start(ferry_port).await;
                Homeserver {
                    slot,
                    _private: Some(synapse),
                    _serial: None,
                }
            }
        }
    }
}

/// Instantiates scenarios `fn(Profile, Backend)` as `push::<name>::{sqlite,postgres}` and
/// `conduit::<name>::{sqlite,postgres}`.
macro_rules! profiles {
    ($module:ident, $profile:expr, [$($name:ident),* $(,)?]) => {
        mod $module {
            use crate::{both_backends, common::Backend};
            $(
                async fn $name(backend: Backend) {
                    super::$name($profile, backend).await;
                }
                both_backends!($name);
            )*
        }
    };
}

/// The `encryption:` section the tests run with: cross-signed devices only get keys (the
/// strict MSC4153 policy, so the test client must be cross-signed too), short key waits.
const ENCRYPTION: &str = "encryption:
  allow: true
  default: true
  trust: cross_signed
  pickle_key: test-pickle-key-0123456789
  key_wait_seconds: 1
  key_request_wait_seconds: 2
";

/// A message the client saw, decrypted.
#[derive(Debug, Clone)]
struct Seen {
    room: OwnedRoomId,
    event_id: OwnedEventId,
    sender: OwnedUserId,
    body: String,
    encryption: Option<EncryptionInfo>,
}

/// A logged-in matrix-sdk client with its own cross-signing identity, syncing in the
/// background.
struct E2eeClient {
    client: Client,
    seen: mpsc::UnboundedReceiver<Seen>,
    log: Vec<Seen>,
    sync: tokio::task::JoinHandle<()>,
}

impl Drop for E2eeClient {
    fn drop(&mut self) {
        self.sync.abort();
    }
}

impl E2eeClient {
    async fn login(user: &User) -> E2eeClient {
        let client = Client::builder()
            .homeserver_url(user.hs())
            .build()
            .await
            .expect("client");
        client
            .matrix_auth()
            .login_username(&user.user_id, &user.password)
            .initial_device_display_name("e2ee test client")
            .await
            .expect("login");
        if let Err(err) = client.encryption().bootstrap_cross_signing(None).await {
            let uiaa = err.as_uiaa_response().expect("cross-signing asks for auth");
            let mut password = uiaa::Password::new(
                uiaa::UserIdentifier::Matrix(uiaa::MatrixUserIdentifier::new(user.user_id.clone())),
                user.password.clone(),
            );
            password.session = uiaa.session.clone();
            client
                .encryption()
                .bootstrap_cross_signing(Some(uiaa::AuthData::Password(password)))
                .await
                .expect("cross-signing bootstrap");
        }
        let (tx, seen) = mpsc::unbounded_channel();
        client.add_event_handler(
            move |event: OriginalSyncRoomMessageEvent,
                  room: Room,
                  encryption: Option<EncryptionInfo>| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(Seen {
                        room: room.room_id().to_owned(),
                        event_id: event.event_id.clone(),
                        sender: event.sender.clone(),
                        body: event.content.body().to_owned(),
                        encryption,
                    });
                }
            },
        );
        // One sync so the keys upload and the identity are done before anything is sent.
        client
            .sync_once(SyncSettings::default())
            .await
            .expect("first sync");
        let syncing = client.clone();
        let sync = tokio::spawn(async move {
            let settings = SyncSettings::default().timeout(Duration::from_millis(500));
            let _ = syncing.sync(settings).await;
        });
        E2eeClient {
            client,
            seen,
            log: Vec::new(),
            sync,
        }
    }

    /// Waits for a message in `room` matching `pred`.
    async fn wait_seen(&mut self, room: &RoomId, what: &str, pred: impl Fn(&Seen) -> bool) -> Seen {
        if let Some(found) = self.log.iter().find(|s| s.room == room && pred(s)) {
            return found.clone();
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.seen.recv()).await;
            let seen = match next {
                Ok(Some(seen)) => seen,
                _ => panic!(
                    "timed out waiting for {what}; the client saw: {:#?}",
                    self.log
                ),
            };
            self.log.push(seen.clone());
            if seen.room == room && pred(&seen) {
                return seen;
            }
        }
    }

    async fn join(&self, room: &RoomId) -> Room {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(room) = self.client.get_room(room) {
                if room.state() != matrix_sdk::RoomState::Joined {
                    room.join().await.expect("join");
                }
                return room;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the client never saw {room}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn ghost_device_is_cross_signed(client: &Client, ghost: &UserId, device: &OwnedDeviceId) {
    // The client may need a moment to fetch the ghost's keys after the first message.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let found = client
            .encryption()
            .get_device(ghost, device)
            .await
            .expect("device lookup");
        if let Some(found) = found
            && found.is_cross_signed_by_owner()
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ghost's device {device} is not cross-signed by its owner"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn encrypted_portal_both_ways(profile: Profile, backend: Backend) {
    let hs = Homeserver::start(profile).await;
    let slot = &hs.slot;
    let sim = Sim::start().await;
    sim.user("alice", "Alice").await;
    sim.user("bob", "Bob").await;
    let dm = sim.dm("alice", "bob").await;
    let ferry = Ferry::start_configured(slot, backend, &sim.url(), None, ENCRYPTION).await;
    let (user, management) = logged_in_user(slot, &sim, "alice").await;
    let mut client = E2eeClient::login(&user).await;
    let portal = user.wait_portals(1, &management).await.remove(0);
    let portal_id = OwnedRoomId::try_from(portal.as_str()).expect("room id");
    let state = user
        .call(
            Method::GET,
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.encryption/",
                enc(&portal)
            ),
            None,
        )
        .await;
    assert_eq!(
        state["algorithm"], "m.megolm.v1.aes-sha2",
        "portal is encrypted: {state}"
    );
    let room = client.join(&portal_id).await;

    // A sim contact's message arrives decrypted, from the ghost's own cross-signed device.
    sim.send(&dm, "bob", "hello from sim, encrypted").await;
    let ghost = OwnedUserId::try_from(slot.ghost("bob")).expect("ghost id");
    let seen = client
        .wait_seen(&portal_id, "bob's encrypted message", |s| {
            s.body == "hello from sim, encrypted"
        })
        .await;
    assert_eq!(seen.sender, ghost);
    let info = seen.encryption.expect("the message was encrypted");
    assert_eq!(info.sender, ghost);
    let device = info.sender_device.expect("sender device");
    assert!(
        device.as_str().starts_with("FERRY"),
        "ghost's own device: {device}"
    );
    ghost_device_is_cross_signed(&client.client, &ghost, &device).await;
    // The raw event in the room is ciphertext.
    let raw = user
        .wait_event(&portal, "the encrypted event", |e| {
            e["sender"] == ghost.as_str() && e["type"] == "m.room.encrypted"
        })
        .await;
    assert!(raw["content"]["ciphertext"].is_string(), "{raw}");

    // The client's encrypted reply reaches the sim contact.
    assert!(
        room.latest_encryption_state()
            .await
            .expect("encryption state")
            .is_encrypted()
    );
    room.send(RoomMessageEventContent::text_plain(
        "encrypted reply from Matrix",
    ))
    .await
    .expect("client sends");
    sim.wait_message(&dm, "the decrypted reply", |sender, text| {
        sender == "alice" && text == "encrypted reply from Matrix"
    })
    .await;

    // A client that joins later reads new messages.
    let late = User::register_on(slot, "latecomer").await;
    user.call(
        Method::POST,
        &format!("/_matrix/client/v3/rooms/{}/invite", enc(&portal)),
        Some(serde_json::json!({"user_id": late.user_id})),
    )
    .await;
    let mut late_client = E2eeClient::login(&late).await;
    late_client.join(&portal_id).await;
    user.wait_members(&portal, "the latecomer", |m| m.contains(&late.user_id))
        .await;
    sim.send(&dm, "bob", "a message for the latecomer too")
        .await;
    let seen = late_client
        .wait_seen(&portal_id, "the message after joining", |s| {
            s.body == "a message for the latecomer too"
        })
        .await;
    assert_eq!(seen.sender, ghost);
    assert_eq!(
        seen.encryption.and_then(|i| i.sender_device),
        Some(device.clone()),
        "same ghost device"
    );
    client
        .wait_seen(&portal_id, "the second message", |s| {
            s.body == "a message for the latecomer too"
        })
        .await;
    if profile == Profile::ConduitLike {
        let log = ferry.log();
        assert!(
            log.contains("inputs=Sync") && log.contains("devices=Login"),
            "the profile settled on /sync and appservice login"
        );
        assert!(log.contains("crypto /sync loop started"), "sync loop ran");
    }
    drop(ferry);
}

/// A Matrix device driven by hand with matrix-sdk-crypto, so the test decides when the room
/// key is delivered.
mod manual {
    use std::{borrow::Cow, collections::BTreeSet};

    use matrix_sdk_crypto::{OlmMachine, types::requests::AnyOutgoingRequest};
    use ruma::api::{
        IncomingResponse, MatrixVersion, OutgoingRequest, SupportedVersions,
        auth_scheme::SendAccessToken, client::keys::get_keys, path_builder::VersionHistory,
    };

    use crate::common::User;

    pub async fn send<R>(user: &User, request: R) -> R::IncomingResponse
    where
        R: OutgoingRequest<PathBuilder = VersionHistory>,
        for<'a> R::Authentication:
            ruma::api::auth_scheme::AuthScheme<Input<'a> = SendAccessToken<'a>>,
    {
        let versions = SupportedVersions {
            versions: BTreeSet::from([MatrixVersion::V1_11]),
            features: BTreeSet::new(),
        };
        let http_request = request
            .try_into_http_request::<Vec<u8>>(
                user.hs(),
                SendAccessToken::Always(user.token()),
                Cow::Owned(versions),
            )
            .expect("request builds");
        let (parts, body) = http_request.into_parts();
        let response = crate::common::http()
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .send()
            .await
            .expect("homeserver answers");
        let status = response.status();
        let bytes = response.bytes().await.expect("body").to_vec();
        assert!(
            status.is_success(),
            "{status}: {}",
            String::from_utf8_lossy(&bytes)
        );
        let mut resp = http::Response::new(bytes);
        *resp.status_mut() = status;
        R::IncomingResponse::try_from_http_response(resp).expect("response parses")
    }

    /// Sends the machine's key uploads and queries until none are left.
    pub async fn flush(user: &User, machine: &OlmMachine) {
        for _ in 0..4 {
            let requests = machine.outgoing_requests().await.expect("requests");
            if requests.is_empty() {
                return;
            }
            for request in requests {
                let id = request.request_id();
                match request.request() {
                    AnyOutgoingRequest::KeysUpload(r) => {
                        let response = send(user, r.clone()).await;
                        machine
                            .mark_request_as_sent(id, &response)
                            .await
                            .expect("mark");
                    }
                    AnyOutgoingRequest::KeysQuery(r) => {
                        let mut query = get_keys::v3::Request::new();
                        query.device_keys = r.device_keys.clone();
                        let response = send(user, query).await;
                        machine
                            .mark_request_as_sent(id, &response)
                            .await
                            .expect("mark");
                    }
                    _ => {}
                }
            }
        }
    }
}

/// A message whose room key reaches the bridge only after the message itself: the bridge
/// waits, asks for the key, tells the room, and bridges the message once the key arrives.
async fn late_key_is_still_bridged(profile: Profile, backend: Backend) {
    use matrix_sdk_crypto::{EncryptionSettings, OlmMachine};
    use ruma::{
        OwnedTransactionId,
        api::client::{message::send_message_event, to_device::send_event_to_device},
        events::MessageLikeEventType,
        serde::Raw,
    };

    let hs = Homeserver::start(profile).await;
    let slot = &hs.slot;
    let sim = Sim::start().await;
    sim.user("alice", "Alice").await;
    sim.user("bob", "Bob").await;
    let dm = sim.dm("alice", "bob").await;
    let _ferry = Ferry::start_configured(slot, backend, &sim.url(), None, ENCRYPTION).await;
    let (user, management) = logged_in_user(slot, &sim, "alice").await;
    let portal = user.wait_portals(1, &management).await.remove(0);
    user.accept_invites().await;
    let room = OwnedRoomId::try_from(portal.as_str()).expect("room id");
    // The contact speaks first, so the ghost has its device in the room.
    sim.send(&dm, "bob", "hello first").await;
    let ghost = OwnedUserId::try_from(slot.ghost("bob")).expect("ghost id");
    user.wait_event(&portal, "the ghost's first message", |e| {
        e["sender"] == ghost.as_str() && e["type"] == "m.room.encrypted"
    })
    .await;
    let whoami = user
        .call(Method::GET, "/_matrix/client/v3/account/whoami", None)
        .await;
    let me = OwnedUserId::try_from(whoami["user_id"].as_str().expect("user")).expect("id");
    let device = OwnedDeviceId::from(whoami["device_id"].as_str().expect("device"));
    let machine = OlmMachine::new(&me, &device).await;
    manual::flush(&user, &machine).await;
    let bot = OwnedUserId::try_from(slot.bot()).expect("bot id");
    // Who must get the key: on the push profile the bot's device (which decrypts first); on
    // the Conduit-like one the bot cannot `/sync` (Synapse refuses it to the appservice's own
    // user), so the key goes to the ghost's device too, as a real client sharing with every
    // member's devices would do, and ferry decrypts with that.
    let recipients: Vec<OwnedUserId> = match profile {
        Profile::Push => vec![bot.clone()],
        Profile::ConduitLike => vec![bot.clone(), ghost.clone()],
    };
    let must_get_it = match profile {
        Profile::Push => &bot,
        Profile::ConduitLike => &ghost,
    };
    machine
        .update_tracked_users(recipients.iter().map(|u| u.as_ref()))
        .await
        .expect("track");
    manual::flush(&user, &machine).await;
    if let Some((id, claim)) = machine
        .get_missing_sessions(recipients.iter().map(|u| u.as_ref()))
        .await
        .expect("sessions")
    {
        let response = manual::send(&user, claim).await;
        machine
            .mark_request_as_sent(&id, &response)
            .await
            .expect("mark");
    }
    let shares = machine
        .share_room_key(
            &room,
            recipients.iter().map(|u| u.as_ref()),
            EncryptionSettings::default(),
        )
        .await
        .expect("share");
    assert!(
        shares.iter().any(|s| s.messages.contains_key(must_get_it)),
        "{must_get_it}'s device gets the key"
    );
    let content: Raw<ruma::events::AnyMessageLikeEventContent> =
        Raw::new(&serde_json::json!({"msgtype": "m.text", "body": "sent before its key"}))
            .expect("content")
            .cast_unchecked();
    let encrypted = machine
        .encrypt_room_event_raw(&room, "m.room.message", &content)
        .await
        .expect("encrypt");
    // The message first, its key later.
    let send = send_message_event::v3::Request::new_raw(
        room.clone(),
        OwnedTransactionId::from("late-key-1"),
        MessageLikeEventType::RoomEncrypted,
        encrypted.content.cast_unchecked(),
    );
    manual::send(&user, send).await;
    // The bridge tells the room (encrypted, like everything the bot says in the portal).
    let bot_name = slot.bot();
    user.wait_event(&portal, "the bridge's note about the missing key", |e| {
        e["sender"] == bot_name.as_str() && e["type"] == "m.room.encrypted"
    })
    .await;
    assert!(
        !sim.messages(&dm)
            .await
            .iter()
            .any(|(_, text)| text == "sent before its key"),
        "nothing is bridged before the key"
    );
    for share in shares {
        let request = send_event_to_device::v3::Request::new_raw(
            share.event_type.clone(),
            share.txn_id.clone(),
            share.messages.clone(),
        );
        manual::send(&user, request).await;
    }
    sim.wait_message(&dm, "the late message", |sender, text| {
        sender == "alice" && text == "sent before its key"
    })
    .await;
}

/// A portal created unencrypted and switched to encryption later keeps working both ways.
async fn room_switched_to_encryption_later(profile: Profile, backend: Backend) {
    let hs = Homeserver::start(profile).await;
    let slot = &hs.slot;
    let sim = Sim::start().await;
    sim.user("alice", "Alice").await;
    sim.user("bob", "Bob").await;
    let dm = sim.dm("alice", "bob").await;
    let config = ENCRYPTION.replace("  default: true", "  default: false");
    let ferry = Ferry::start_configured(slot, backend, &sim.url(), None, &config).await;
    let (user, management) = logged_in_user(slot, &sim, "alice").await;
    let mut client = E2eeClient::login(&user).await;
    let portal = user.wait_portals(1, &management).await.remove(0);
    let portal_id = OwnedRoomId::try_from(portal.as_str()).expect("room id");
    let room = client.join(&portal_id).await;
    sim.send(&dm, "bob", "before encryption").await;
    let ghost = OwnedUserId::try_from(slot.ghost("bob")).expect("ghost id");
    let seen = client
        .wait_seen(&portal_id, "the plaintext message", |s| {
            s.body == "before encryption"
        })
        .await;
    assert!(seen.encryption.is_none(), "not encrypted yet");
    // A room admin (here the bot, through the appservice token) switches encryption on.
    let switched = crate::common::http()
        .put(format!(
            "{}/_matrix/client/v3/rooms/{}/state/m.room.encryption/",
            slot.hs,
            enc(&portal)
        ))
        .bearer_auth(&slot.as_token)
        .json(&serde_json::json!({"algorithm": "m.megolm.v1.aes-sha2"}))
        .send()
        .await
        .expect("homeserver answers");
    assert!(switched.status().is_success(), "{switched:?}");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !room
        .latest_encryption_state()
        .await
        .expect("state")
        .is_encrypted()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the client never saw encryption on"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The switch reaches ferry in a transaction of its own; a message bridged before that is
    // (rightly) still sent in the clear, so wait for it.
    while !ferry
        .log()
        .contains(&format!("room encryption is on room={portal}"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "ferry never saw encryption on"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sim.send(&dm, "bob", "after encryption").await;
    let seen = client
        .wait_seen(&portal_id, "the encrypted message", |s| {
            s.body == "after encryption"
        })
        .await;
    assert_eq!(seen.sender, ghost);
    let info = seen.encryption.expect("now encrypted");
    assert!(
        info.sender_device
            .is_some_and(|d| d.as_str().starts_with("FERRY"))
    );
    room.send(RoomMessageEventContent::text_plain(
        "encrypted now, from Matrix",
    ))
    .await
    .expect("client sends");
    sim.wait_message(&dm, "the decrypted reply", |sender, text| {
        sender == "alice" && text == "encrypted now, from Matrix"
    })
    .await;
}

/// After ferry restarts, the ghost keeps its device (same id, same identity) and both
/// directions still work, from the crypto state kept in ferry's database.
async fn survives_a_restart(profile: Profile, backend: Backend) {
    let hs = Homeserver::start(profile).await;
    let slot = &hs.slot;
    let sim = Sim::start().await;
    sim.user("alice", "Alice").await;
    sim.user("bob", "Bob").await;
    let dm = sim.dm("alice", "bob").await;
    let mut ferry = Ferry::start_configured(slot, backend, &sim.url(), None, ENCRYPTION).await;
    let (user, management) = logged_in_user(slot, &sim, "alice").await;
    let mut client = E2eeClient::login(&user).await;
    let portal = user.wait_portals(1, &management).await.remove(0);
    let portal_id = OwnedRoomId::try_from(portal.as_str()).expect("room id");
    let room = client.join(&portal_id).await;
    sim.send(&dm, "bob", "before the restart").await;
    let before = client
        .wait_seen(&portal_id, "the first message", |s| {
            s.body == "before the restart"
        })
        .await
        .encryption
        .and_then(|i| i.sender_device)
        .expect("ghost device");
    ferry.kill();
    ferry.spawn().await;
    sim.send(&dm, "bob", "after the restart").await;
    let after = client
        .wait_seen(&portal_id, "the message after the restart", |s| {
            s.body == "after the restart"
        })
        .await;
    // Synapse marks the appservice down while ferry restarts and drops to-device messages for
    // it until its recoverer has redelivered the stored transactions (it persists only room
    // events: "ephemeral events are dropped", synapse/appservice/scheduler.py). A room key
    // the client shares in that window never reaches a pushed-inputs device, so the reply
    // waits until ferry has had a transaction again: its ghost's own event coming back.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !ferry.log().contains(after.event_id.as_str()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "ferry never got a transaction after the restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = after
        .encryption
        .and_then(|i| i.sender_device)
        .expect("ghost device");
    assert_eq!(before, after, "the ghost kept its device");
    room.send(RoomMessageEventContent::text_plain(
        "reply after the restart",
    ))
    .await
    .expect("client sends");
    sim.wait_message(&dm, "the reply after the restart", |sender, text| {
        sender == "alice" && text == "reply after the restart"
    })
    .await;
}

/// An encrypted management room (as Element creates DMs): the bot's notices are encrypted
/// from its own cross-signed device, and encrypted commands are decrypted and answered.
async fn encrypted_management_room(profile: Profile, backend: Backend) {
    let hs = Homeserver::start(profile).await;
    let slot = &hs.slot;
    let sim = Sim::start().await;
    let _ferry = Ferry::start_configured(slot, backend, &sim.url(), None, ENCRYPTION).await;
    let user = User::register_on(slot, "mgmt").await;
    let mut client = E2eeClient::login(&user).await;
    let bot = OwnedUserId::try_from(slot.bot()).expect("bot id");
    // matrix-sdk creates DMs encrypted.
    let room = client.client.create_dm(&bot).await.expect("create DM");
    assert!(
        room.latest_encryption_state()
            .await
            .expect("state")
            .is_encrypted()
    );
    let room_id = room.room_id().to_owned();
    let welcome = client
        .wait_seen(&room_id, "the bot's encrypted welcome", |s| {
            s.sender == bot && s.body.contains("management room")
        })
        .await;
    let device = welcome
        .encryption
        .and_then(|i| i.sender_device)
        .expect("the welcome was encrypted");
    ghost_device_is_cross_signed(&client.client, &bot, &device).await;
    room.send(RoomMessageEventContent::text_plain("help"))
        .await
        .expect("client sends");
    let answer = client
        .wait_seen(&room_id, "the answer to an encrypted command", |s| {
            s.sender == bot && s.body.starts_with("Commands:")
        })
        .await;
    assert!(answer.encryption.is_some(), "the answer is encrypted");
}

profiles!(
    push,
    super::Profile::Push,
    [
        encrypted_portal_both_ways,
        late_key_is_still_bridged,
        room_switched_to_encryption_later,
        survives_a_restart,
        encrypted_management_room,
    ]
);

// The encrypted management room is not run on the Conduit-like profile: there the bot's
// device would get its room keys only from `/sync`, and Synapse refuses `/sync` to the
// appservice's own user (`sender_localpart`), so the bot cannot read encrypted commands.
// Portals work because the ghosts in them sync (see `crypto::receive`).
profiles!(
    conduit,
    super::Profile::ConduitLike,
    [
        encrypted_portal_both_ways,
        late_key_is_still_bridged,
        room_switched_to_encryption_later,
        survives_a_restart,
    ]
);
