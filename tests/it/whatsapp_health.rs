//! WhatsApp connection health, history and ghost profiles, end to end (real Synapse, testnet's
//! WhatsApp simulator, whatsapp-rust as in production):
//! - history sync as WhatsApp sends it (an encrypted blob the library downloads), bounded by
//!   `history_max_conversations` and `history_messages_per_chat`, each conversation's messages
//!   in order in its portal; contacts' push names and profile pictures on their ghosts, a
//!   changed picture followed at once, and both kept across a restart (a group created after
//!   it shows the right names and keeps the avatar);
//! - an outage (the simulator drops ferry's connection and refuses new ones) while a contact
//!   writes and reads: the user is told, everything arrives once and in order when WhatsApp is
//!   back, and the user is told that too; a read receipt sent while ferry is stopped arrives
//!   after the restart; the phone unseen for longer than `phone_offline_warn_seconds` gives
//!   one warning, and a "back" notice when it shows up; unlinking on the phone ends the login.

use std::time::Duration;

use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};
use testnet::whatsapp::WhatsAppServer;

use crate::{
    both_backends,
    common::{Backend, Sim, Slot, User},
    whatsapp::{
        ALICE, BOB, Scenario, USER, contact, control, ghost, post, qr_login, start_ferry_with,
        wait_received,
    },
};

const CAROL: &str = "5511900000004";

/// A tiny PNG-ish payload (the simulator and the homeserver store bytes as given).
fn picture(tag: u8) -> Vec<u8> {
    let mut data = b"\x89PNG\r\n\x1a\n".to_vec();
    data.extend(std::iter::repeat_n(tag, 64));
    data
}

async fn set_picture(wa: &WhatsAppServer, phone: &str, data: &[u8]) {
    post(
        wa,
        "/control/picture",
        json!({ "phone": phone, "data_base64": base64::engine::general_purpose::STANDARD.encode(data) }),
    )
    .await;
}

/// Waits until `ghost`'s avatar has exactly these bytes.
async fn wait_avatar(user: &User, ghost: &str, data: &[u8]) {
    let deadline = std::time::Instant::now() + crate::common::WAIT;
    loop {
        let got = user.avatar(ghost).await.map(|(bytes, _)| bytes);
        if got.as_deref() == Some(data) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{ghost}'s avatar: {:?} bytes",
            got.map(|g| g.len())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The bodies of the m.room.message events in a room, oldest first.
async fn bodies(user: &User, room: &str) -> Vec<String> {
    user.messages(room)
        .await
        .into_iter()
        .map(|(_, _, body)| body)
        .collect()
}

/// Management-room messages from the bot containing `needle`.
async fn notices(user: &User, room: &str, bot: &str, needle: &str) -> usize {
    user.messages(room)
        .await
        .iter()
        .filter(|(sender, _, body)| sender == bot && body.contains(needle))
        .count()
}

async fn history_limits_and_profiles(backend: Backend) {
    let slot = Slot::claim();
    let sim = Sim::start().await;
    let wa = WhatsAppServer::start().await.expect("whatsapp simulator");
    post(
        &wa,
        "/control/accounts",
        json!({ "phone": USER, "name": "Bridge User" }),
    )
    .await;
    for (phone, name) in [(ALICE, "Alice"), (BOB, "Bob"), (CAROL, "Carol")] {
        post(
            &wa,
            "/control/contacts",
            json!({ "phone": phone, "name": name }),
        )
        .await;
    }
    let first_picture = picture(1);
    set_picture(&wa, ALICE, &first_picture).await;
    let settings = "    history_max_conversations: 2\n    history_messages_per_chat: 3\n";
    let mut ferry = start_ferry_with(&slot, backend, &sim, &wa, settings).await;
    let bot = slot.bot();
    let user = User::register("wahist").await;
    let room = user.open_management_room(&bot).await;
    qr_login(&user, &room, &bot, &wa).await;

    // Three conversations, sent as an encrypted blob: Alice's (newest, 5 messages), Bob's
    // (2), Carol's (oldest). Two conversations, three messages each at most.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let conversation = |phone: &str, newest: u64, n: u64, tag: &str| {
        let messages: Vec<Value> = (0..n)
            .map(|i| {
                json!({
                    "id": format!("H{tag}{i}"),
                    "text": format!("{tag} {i}"),
                    "from_me": i % 2 == 1,
                    "timestamp": newest - (n - 1 - i) * 60,
                })
            })
            .collect();
        json!({ "chat": phone, "messages": messages })
    };
    let pushed = post(
        &wa,
        "/control/history_sync",
        json!({ "phone": USER, "blob": true, "conversations": [
            conversation(CAROL, now - 7200, 2, "carol"),
            conversation(ALICE, now - 600, 5, "alice"),
            conversation(BOB, now - 3600, 2, "bob"),
        ]}),
    )
    .await;
    assert!(pushed["blob_path"].is_string(), "{pushed}");
    let portals = user.wait_portals(2, &room).await;
    let mut alice_dm = None;
    let mut bob_dm = None;
    for portal in &portals {
        let members = user.members(portal).await;
        if members.contains(&ghost(&slot, ALICE)) {
            alice_dm = Some(portal.clone());
        } else if members.contains(&ghost(&slot, BOB)) {
            bob_dm = Some(portal.clone());
        }
    }
    let (alice_dm, bob_dm) = (
        alice_dm.expect("Alice's portal"),
        bob_dm.expect("Bob's portal"),
    );
    user.wait_message(&alice_dm, "Alice's newest", |_, b| b == "alice 4")
        .await;
    user.wait_message(&bob_dm, "Bob's newest", |_, b| b == "bob 1")
        .await;
    // Let the paced backfill finish, then check order, limits and nothing more.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        bodies(&user, &alice_dm).await,
        ["alice 2", "alice 3", "alice 4"],
        "Alice's three newest, oldest first"
    );
    assert_eq!(bodies(&user, &bob_dm).await, ["bob 0", "bob 1"]);
    assert_eq!(
        user.wait_portals(2, &room).await.len(),
        2,
        "Carol's conversation is over the limit"
    );
    // Alice's ghost: her push name and her picture.
    assert_eq!(
        user.displayname(&ghost(&slot, ALICE)).await.as_deref(),
        Some("Alice (WhatsApp)")
    );
    wait_avatar(&user, &ghost(&slot, ALICE), &first_picture).await;

    // She changes her picture: the ghost follows without a message.
    let second_picture = picture(2);
    set_picture(&wa, ALICE, &second_picture).await;
    wait_avatar(&user, &ghost(&slot, ALICE), &second_picture).await;

    // A restart: names and pictures are remembered. A group created afterwards lists Carol,
    // who never wrote (her name came with the history), and Alice, who has a picture.
    ferry.kill();
    ferry.spawn().await;
    let group = post(
        &wa,
        "/control/groups",
        json!({ "subject": "After restart", "creator": BOB, "members": [USER, ALICE, CAROL] }),
    )
    .await;
    let gjid = group["jid"].as_str().expect("group jid").to_owned();
    post(
        &wa,
        "/control/send",
        json!({ "from": BOB, "to": gjid, "text": "hello after restart" }),
    )
    .await;
    let rooms = user.wait_portals(3, &room).await;
    let group_room = rooms
        .into_iter()
        .find(|r| *r != alice_dm && *r != bob_dm)
        .expect("the group portal");
    user.wait_message(&group_room, "Bob's group message", |_, b| {
        b == "hello after restart"
    })
    .await;
    user.wait_members(&group_room, "Alice and Carol", |members| {
        members.contains(&ghost(&slot, ALICE)) && members.contains(&ghost(&slot, CAROL))
    })
    .await;
    assert_eq!(
        user.displayname(&ghost(&slot, CAROL)).await.as_deref(),
        Some("Carol (WhatsApp)"),
        "a name learnt before the restart"
    );
    assert_eq!(
        user.displayname(&ghost(&slot, ALICE)).await.as_deref(),
        Some("Alice (WhatsApp)")
    );
    assert_eq!(
        user.avatar(&ghost(&slot, ALICE)).await.map(|(b, _)| b),
        Some(second_picture),
        "the avatar survives the restart"
    );
}

both_backends!(history_limits_and_profiles);

async fn outage_restart_phone_and_unlink(backend: Backend) {
    let settings = "    phone_offline_warn_seconds: 3\n";
    let Scenario {
        slot,
        sim: _sim,
        wa,
        mut ferry,
        bot,
        user,
        room,
    } = Scenario::linked_with(backend, "wahealth", &[contact(ALICE, "Alice")], settings).await;
    post(
        &wa,
        "/control/send",
        json!({ "from": ALICE, "to": USER, "text": "before" }),
    )
    .await;
    let dm = user.wait_portals(1, &room).await[0].clone();
    user.wait_message(&dm, "before", |_, b| b == "before").await;

    // The phone stays silent past the threshold: one warning, and a "back" notice once the
    // phone writes (as the user, from the phone).
    user.wait_message(&room, "the phone warning", |s, b| {
        s == bot && b.contains("phone has not been seen")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    post(
        &wa,
        "/control/send",
        json!({ "from": USER, "to": ALICE, "text": "from the phone" }),
    )
    .await;
    user.wait_message(&room, "the phone back", |s, b| {
        s == bot && b.contains("phone is back")
    })
    .await;
    assert_eq!(
        notices(&user, &room, &bot, "phone has not been seen").await,
        1,
        "one warning per silence"
    );
    user.wait_message(&dm, "the phone's message", |_, b| b == "from the phone")
        .await;

    // An outage: ferry's connection dropped and new ones refused while Alice writes.
    let mine = user.send_text(&dm, "read me").await;
    let sent = wait_received(&wa, ALICE, "read me", |m| m["text"] == "read me").await;
    let devices = control(
        &wa,
        Method::GET,
        &format!("/control/devices?phone={USER}"),
        None,
    )
    .await;
    let device = devices["devices"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["device"] != 0))
        .and_then(|d| d["device"].as_u64())
        .expect("ferry's device");
    post(&wa, "/control/refuse", json!({ "refuse": true })).await;
    post(
        &wa,
        "/control/drop",
        json!({ "phone": USER, "device": device }),
    )
    .await;
    for i in 1..=3 {
        post(
            &wa,
            "/control/send",
            json!({ "from": ALICE, "to": USER, "text": format!("during outage {i}") }),
        )
        .await;
    }
    user.wait_message(&room, "the outage notice", |s, b| {
        s == bot && b.contains("cannot reach WhatsApp")
    })
    .await;
    post(&wa, "/control/refuse", json!({ "refuse": false })).await;
    user.wait_message(&room, "the reconnect notice", |s, b| {
        s == bot && b.contains("connected again")
    })
    .await;
    user.wait_message(&dm, "the last outage message", |_, b| {
        b == "during outage 3"
    })
    .await;

    // A restart while Alice reads and writes: both arrive after it.
    ferry.kill();
    post(
        &wa,
        "/control/receipt",
        json!({ "from": ALICE, "chat": USER, "ids": [sent["id"]] }),
    )
    .await;
    post(
        &wa,
        "/control/send",
        json!({ "from": ALICE, "to": USER, "text": "while stopped" }),
    )
    .await;
    ferry.spawn().await;
    user.wait_message(&dm, "while stopped", |_, b| b == "while stopped")
        .await;
    let alice = ghost(&slot, ALICE);
    user.wait_ephemeral(&dm, "Alice's read receipt after the restart", |e| {
        e["type"] == "m.receipt"
            && e["content"][mine.as_str()]["m.read"][alice.as_str()].is_object()
    })
    .await;
    // Everything once, in order.
    let expected = [
        "before",
        "from the phone",
        "read me",
        "during outage 1",
        "during outage 2",
        "during outage 3",
        "while stopped",
    ];
    let all: Vec<String> = bodies(&user, &dm)
        .await
        .into_iter()
        .filter(|b| expected.contains(&b.as_str()))
        .collect();
    assert_eq!(all, expected, "each message once, in order");

    // Unlinked on the phone: the user is told and the login is logged out.
    post(
        &wa,
        "/control/unlink",
        json!({ "phone": USER, "device": device }),
    )
    .await;
    user.wait_message(&room, "the logout notice", |s, b| {
        s == bot && b.contains("was ended")
    })
    .await;
    user.command(&room, &bot, "ping", "logged out").await;
}

both_backends!(outage_restart_phone_and_unlink);
