//! End-to-end encryption on the Matrix side, checked with a real E2EE client (matrix-sdk 0.18,
//! in-memory stores) against the real Synapse: portals are created encrypted, a sim contact's
//! message arrives decrypted from the ghost's own device, which the client sees cross-signed by
//! the ghost's own identity; the client's encrypted reply reaches the sim contact; a client
//! that joins later reads new messages.
//!
//! Restart survival needs the SQL crypto store (`crypto::store`); until it replaces the
//! in-memory store, `survives_a_restart` is ignored.

use std::time::Duration;

use matrix_sdk::{
    Client, Room,
    config::SyncSettings,
    deserialized_responses::EncryptionInfo,
    ruma::{
        OwnedDeviceId, OwnedRoomId, OwnedUserId, RoomId, UserId,
        api::client::uiaa,
        events::room::message::{OriginalSyncRoomMessageEvent, RoomMessageEventContent},
    },
};
use reqwest::Method;
use tokio::sync::mpsc;

use crate::{
    both_backends,
    common::{Backend, Ferry, Sim, Slot, User, WAIT, enc, hs_url, logged_in_user},
};

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
            .homeserver_url(hs_url())
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
                uiaa::UserIdentifier::Matrix(uiaa::MatrixUserIdentifier::new(
                    user.user_id.clone(),
                )),
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
                _ => panic!("timed out waiting for {what}; the client saw: {:#?}", self.log),
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
            assert!(tokio::time::Instant::now() < deadline, "the client never saw {room}");
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

async fn encrypted_portal_both_ways(backend: Backend) {
    let slot = Slot::claim();
    let sim = Sim::start().await;
    sim.user("alice", "Alice").await;
    sim.user("bob", "Bob").await;
    let dm = sim.dm("alice", "bob").await;
    let ferry = Ferry::start_configured(&slot, backend, &sim.url(), None, ENCRYPTION).await;
    let (user, management) = logged_in_user(&slot, &sim, "alice").await;
    let mut client = E2eeClient::login(&user).await;
    let portal = user.wait_portals(1, &management).await.remove(0);
    let portal_id = OwnedRoomId::try_from(portal.as_str()).expect("room id");
    let state = user
        .call(
            Method::GET,
            &format!("/_matrix/client/v3/rooms/{}/state/m.room.encryption/", enc(&portal)),
            None,
        )
        .await;
    assert_eq!(state["algorithm"], "m.megolm.v1.aes-sha2", "portal is encrypted: {state}");
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
    assert!(device.as_str().starts_with("FERRY"), "ghost's own device: {device}");
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
    room.send(RoomMessageEventContent::text_plain("encrypted reply from Matrix"))
        .await
        .expect("client sends");
    sim.wait_message(&dm, "the decrypted reply", |sender, text| {
        sender == "alice" && text == "encrypted reply from Matrix"
    })
    .await;

    // A client that joins later reads new messages.
    let late = User::register("latecomer").await;
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
    sim.send(&dm, "bob", "a message for the latecomer too").await;
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
    drop(ferry);
}

both_backends!(encrypted_portal_both_ways);
