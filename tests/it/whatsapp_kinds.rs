//! WhatsApp's remaining message kinds end to end (real Synapse, testnet's WhatsApp simulator,
//! whatsapp-rust as in production on both ends): poll votes (two contacts' and the user's own
//! from their phone) counted and shown as edits of the bridged poll, across a restart of ferry; disappearing messages (the timer shown, messages
//! redacted when they expire, also when the deadline passes while ferry is down, and messages
//! sent from Matrix carrying the chat's timer); a GIF from Matrix arriving as a gifPlayback
//! video; a view-once photo arriving as the safe placeholder only.

use std::time::Duration;

use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};
use testnet::whatsapp::WhatsAppServer;

use crate::{
    both_backends,
    common::{Backend, User},
    whatsapp::{
        ALICE, BOB, Scenario, USER, contact, control, event_id, ghost, post, received_media,
        wait_received,
    },
};

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// Waits for an edit of `target` whose new body is `body`.
async fn wait_edit(user: &User, room: &str, what: &str, target: &str, body: &str) -> Value {
    user.wait_event(room, what, |e| {
        e["content"]["m.relates_to"]["rel_type"] == "m.replace"
            && e["content"]["m.relates_to"]["event_id"] == target
            && e["content"]["m.new_content"]["body"] == body
    })
    .await
}

async fn wait_redacted(user: &User, room: &str, what: &str, event: &str) {
    user.wait_event(room, what, |e| {
        e["event_id"] == event && e["unsigned"]["redacted_because"].is_object()
    })
    .await;
}

async fn vote(wa: &WhatsAppServer, from: &str, group: &str, poll: &Value, options: &[&str]) {
    post(
        wa,
        "/control/vote",
        json!({ "from": from, "to": group, "poll": poll["id"], "creator": poll["creator"],
                "secret_base64": poll["secret_base64"], "options": options }),
    )
    .await;
}

async fn poll_votes_counted_across_a_restart(backend: Backend) {
    let Scenario {
        slot,
        sim: _sim,
        wa,
        mut ferry,
        bot: _bot,
        user,
        room,
    } = Scenario::linked(
        backend,
        "wapoll",
        &[contact(ALICE, "Alice"), contact(BOB, "Bob")],
    )
    .await;

    let group = post(
        &wa,
        "/control/groups",
        json!({ "subject": "Lunch club", "creator": ALICE, "members": [USER, BOB] }),
    )
    .await;
    let gjid = group["jid"].as_str().expect("group jid").to_owned();

    // Alice's poll arrives readable, from her ghost.
    let mut poll = post(
        &wa,
        "/control/poll",
        json!({ "from": ALICE, "to": gjid, "name": "Lunch?", "options": ["Pizza", "Sushi"] }),
    )
    .await;
    poll["creator"] = json!(ALICE);
    let portal = user.wait_portals(1, &room).await[0].clone();
    let first = "Poll: Lunch?\n1. Pizza\n2. Sushi\n(vote on your phone)";
    let poll_event = user
        .wait_event(&portal, "the poll", |e| e["content"]["body"] == first)
        .await;
    assert_eq!(poll_event["sender"], ghost(&slot, ALICE));
    let poll_id = poll_event["event_id"].as_str().expect("id").to_owned();

    // Votes, each encrypted by the voter's client with the poll's secret, become counts.
    vote(&wa, ALICE, &gjid, &poll, &["Pizza"]).await;
    wait_edit(
        &user,
        &portal,
        "Alice's vote counted",
        &poll_id,
        "Poll: Lunch?\n1. Pizza — 1 vote\n2. Sushi\n(vote on your phone)",
    )
    .await;
    vote(&wa, BOB, &gjid, &poll, &["Sushi"]).await;
    wait_edit(
        &user,
        &portal,
        "Bob's vote counted",
        &poll_id,
        "Poll: Lunch?\n1. Pizza — 1 vote\n2. Sushi — 1 vote\n(vote on your phone)",
    )
    .await;
    // A new vote replaces the voter's earlier one.
    vote(&wa, BOB, &gjid, &poll, &["Pizza"]).await;
    let both_pizza = "Poll: Lunch?\n1. Pizza — 2 votes\n2. Sushi\n(vote on your phone)";
    let edit = wait_edit(&user, &portal, "Bob's changed vote", &poll_id, both_pizza).await;
    assert_eq!(
        edit["sender"],
        ghost(&slot, ALICE),
        "the poll's author edits it"
    );
    // The user votes on their phone: ferry's device gets the vote as its own, and counts it.
    vote(&wa, USER, &gjid, &poll, &["Sushi"]).await;
    wait_edit(
        &user,
        &portal,
        "the user's own vote counted",
        &poll_id,
        "Poll: Lunch?\n1. Pizza — 2 votes\n2. Sushi — 1 vote\n(vote on your phone)",
    )
    .await;

    // ferry restarts while Alice changes her vote: Bob's vote from before still counts.
    ferry.kill();
    vote(&wa, ALICE, &gjid, &poll, &["Sushi"]).await;
    ferry.spawn().await;
    let after = "Poll: Lunch?\n1. Pizza — 1 vote\n2. Sushi — 2 votes\n(vote on your phone)";
    let changed = event_id(&user, &portal, "the vote made while ferry was down", |e| {
        e["content"]["m.relates_to"]["event_id"] == poll_id.as_str()
            && e["content"]["m.new_content"]["body"] == after
    })
    .await;
    // A withdrawn vote (no option) is uncounted.
    vote(&wa, BOB, &gjid, &poll, &[]).await;
    wait_edit(
        &user,
        &portal,
        "Bob's vote withdrawn",
        &poll_id,
        "Poll: Lunch?\n1. Pizza\n2. Sushi — 2 votes\n(vote on your phone)",
    )
    .await;
    // Each vote was bridged once: one edit per tally change.
    let edits = user
        .messages(&portal)
        .await
        .iter()
        .filter(|(_, _, body)| body.starts_with("* Poll: Lunch?"))
        .count();
    assert_eq!(edits, 6, "six tallies, each shown once (e.g. {changed})");

    // A poll the user starts on their phone (several choices allowed) is counted too.
    let mut own = post(
        &wa,
        "/control/poll",
        json!({ "from": USER, "to": gjid, "name": "Dinner?", "options": ["Tacos", "Curry", "Soup"],
                "selectable": 2 }),
    )
    .await;
    own["creator"] = json!(USER);
    let own_id = event_id(&user, &portal, "the user's own poll", |e| {
        e["content"]["body"] == "Poll: Dinner?\n1. Tacos\n2. Curry\n3. Soup\n(vote on your phone)"
    })
    .await;
    vote(&wa, ALICE, &gjid, &own, &["Curry", "Soup"]).await;
    wait_edit(
        &user,
        &portal,
        "Alice's two choices on the user's poll",
        &own_id,
        "Poll: Dinner?\n1. Tacos\n2. Curry — 1 vote\n3. Soup — 1 vote\n(vote on your phone)",
    )
    .await;
}

both_backends!(poll_votes_counted_across_a_restart);

async fn disappearing_gif_and_view_once(backend: Backend) {
    let Scenario {
        slot,
        sim: _sim,
        wa,
        mut ferry,
        bot,
        user,
        room,
    } = Scenario::linked(backend, "wadisappear", &[contact(ALICE, "Alice")]).await;

    post(
        &wa,
        "/control/send",
        json!({ "from": ALICE, "to": USER, "text": "hi" }),
    )
    .await;
    let portal = user.wait_portals(1, &room).await[0].clone();
    let hi = event_id(&user, &portal, "Alice's hi", |e| {
        e["content"]["body"] == "hi"
    })
    .await;

    // Alice turns disappearing messages on: the room is told.
    post(
        &wa,
        "/control/disappearing",
        json!({ "from": ALICE, "to": USER, "seconds": 5 }),
    )
    .await;
    user.wait_message(&portal, "the timer notice", |_, b| {
        b == "set disappearing messages to 5 seconds"
    })
    .await;

    // Her message with the timer is redacted in Matrix when it expires.
    post(
        &wa,
        "/control/expiring",
        json!({ "from": ALICE, "to": USER, "text": "gone soon", "expiration": 5 }),
    )
    .await;
    let gone = event_id(&user, &portal, "the disappearing message", |e| {
        e["content"]["body"] == "gone soon"
    })
    .await;
    wait_redacted(&user, &portal, "the expired message redacted", &gone).await;

    // Ours into the chat carries the timer to WhatsApp, and goes from Matrix too.
    let mine = user.send_text(&portal, "mine vanishes").await;
    let got = wait_received(&wa, ALICE, "our message with the timer", |m| {
        m["text"] == "mine vanishes"
    })
    .await;
    assert_eq!(
        got["message"]["extended_text_message"]["context_info"]["expiration"], 5,
        "{got}"
    );
    wait_redacted(&user, &portal, "our expired message redacted", &mine).await;

    // A deadline that passes while ferry is down is honoured after the restart.
    post(
        &wa,
        "/control/expiring",
        json!({ "from": ALICE, "to": USER, "text": "outlives ferry", "expiration": 4 }),
    )
    .await;
    let outlives = event_id(&user, &portal, "the message before the restart", |e| {
        e["content"]["body"] == "outlives ferry"
    })
    .await;
    ferry.kill();
    tokio::time::sleep(Duration::from_secs(5)).await;
    ferry.spawn().await;
    wait_redacted(
        &user,
        &portal,
        "the message redacted after the restart",
        &outlives,
    )
    .await;

    // Timer off: the notice, and what we send carries no timer.
    post(
        &wa,
        "/control/disappearing",
        json!({ "from": ALICE, "to": USER, "seconds": 0 }),
    )
    .await;
    user.wait_message(&portal, "the timer-off notice", |_, b| {
        b == "turned off disappearing messages"
    })
    .await;
    user.send_text(&portal, "mine stays").await;
    let stays = wait_received(&wa, ALICE, "our message without a timer", |m| {
        m["text"] == "mine stays"
    })
    .await;
    assert!(
        stays["message"]["extended_text_message"]["context_info"]["expiration"].is_null(),
        "{stays}"
    );

    // The timer set from Matrix with the bot's command: a timer WhatsApp does not offer is
    // refused and nothing reaches Alice; 7 days reaches her as WhatsApp's timer change, and
    // what we send next carries it.
    let refused = user
        .command(&portal, &bot, "!ferry disappearing 1h", "timer")
        .await;
    assert!(refused.contains("24 hours, 7 days or 90 days"), "{refused}");
    user.command(&portal, &bot, "!ferry disappearing soon", "Usage")
        .await;
    let set = user
        .command(&portal, &bot, "!ferry disappearing 7d", "disappear")
        .await;
    assert_eq!(set, "Messages in this chat now disappear after 1 week.");
    let setting = wait_received(&wa, ALICE, "the timer change on WhatsApp", |m| {
        !m["message"]["protocol_message"]["ephemeral_expiration"].is_null()
    })
    .await;
    assert_eq!(
        setting["message"]["protocol_message"]["ephemeral_expiration"], 604_800,
        "{setting}"
    );
    assert_eq!(
        control(
            &wa,
            Method::GET,
            &format!("/control/received?to={ALICE}"),
            None
        )
        .await["messages"]
            .as_array()
            .map(|m| m
                .iter()
                .filter(|m| !m["message"]["protocol_message"]["ephemeral_expiration"].is_null())
                .count()),
        Some(1),
        "only the accepted timer reached WhatsApp"
    );
    user.send_text(&portal, "mine for a week").await;
    let week = wait_received(&wa, ALICE, "our message with the new timer", |m| {
        m["text"] == "mine for a week"
    })
    .await;
    assert_eq!(
        week["message"]["extended_text_message"]["context_info"]["expiration"], 604_800,
        "{week}"
    );
    user.command(&portal, &bot, "!ferry disappearing off", "off")
        .await;

    // Matrix -> WhatsApp: a GIF (a looping MP4 with Matrix's GIF hint) plays as a GIF.
    let gif: Vec<u8> = (0..2000u32).map(|i| (i * 31 % 251) as u8).collect();
    let mxc = user.upload("video/mp4", gif.clone()).await;
    user.send_event(
        &portal,
        "m.room.message",
        json!({"msgtype": "m.video", "body": "dance.mp4", "url": mxc,
               "info": {"mimetype": "video/mp4", "size": gif.len(), "duration": 2000,
                        "fi.mau.gif": true, "fi.mau.loop": true, "fi.mau.autoplay": true,
                        "fi.mau.hide_controls": true, "fi.mau.no_audio": true}}),
    )
    .await;
    let sent = wait_received(&wa, ALICE, "the GIF on WhatsApp", |m| {
        m["message"]["video_message"].is_object()
    })
    .await;
    assert_eq!(
        sent["message"]["video_message"]["gif_playback"], true,
        "{sent}"
    );
    let id = sent["id"].as_str().expect("id");
    assert_eq!(received_media(&wa, ALICE, id).await, gif, "the GIF's bytes");

    // WhatsApp -> Matrix: a view-once photo shows as the placeholder, never as the photo.
    let photo: Vec<u8> = (0..900u32).map(|i| (i * 7 % 253) as u8).collect();
    post(
        &wa,
        "/control/view_once",
        json!({ "from": ALICE, "to": USER, "data_base64": b64().encode(&photo) }),
    )
    .await;
    user.wait_message(&portal, "the view-once placeholder", |s, b| {
        s == ghost(&slot, ALICE)
            && b == "View-once photo: open it on your phone (ferry does not bridge view-once media)."
    })
    .await;
    post(
        &wa,
        "/control/send",
        json!({ "from": ALICE, "to": USER, "text": "after the photo" }),
    )
    .await;
    user.wait_message(&portal, "the message after the photo", |_, b| {
        b == "after the photo"
    })
    .await;
    let messages = user.messages(&portal).await;
    assert!(
        !messages.iter().any(|(_, msgtype, _)| msgtype == "m.image"),
        "no image event for the view-once photo: {messages:?}"
    );
    // Messages without a timer stay.
    user.wait_event(&portal, "Alice's first message kept", |e| {
        e["event_id"] == hi.as_str() && !e["unsigned"]["redacted_because"].is_object()
    })
    .await;
}

both_backends!(disappearing_gif_and_view_once);
