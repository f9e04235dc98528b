//! Telegram through ferry's grammers client against testnet's MTProto simulator
//! (testnet/TELEGRAM_PROTOCOL.md): login from the management room by phone + code + two-step
//! password, by QR code and by bot token; messages both ways with formatting, replies, edits,
//! reactions (and their removal), deletes, photos and documents, typing and read receipts; a
//! FLOOD_WAIT honoured without loss; and a restart of ferry while Telegram messages arrive (all
//! bridged once); basic groups and supergroups with names, members, admins' power levels and
//! service messages (title change, removal) as readable lines.

use std::time::Duration;

use rand::RngCore as _;
use reqwest::Method;
use serde_json::{Value, json};
use testnet::telegram::TelegramServer;

use crate::{
    both_backends,
    common::{Backend, Ferry, Sim, Slot, User, http},
};

async fn control(tg: &TelegramServer, method: Method, path: &str, body: Option<Value>) -> Value {
    let mut request = http().request(method, format!("{}{path}", tg.control_url()));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("telegram control");
    let status = response.status();
    let value = response.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{path}: {status} {value}");
    value
}

async fn post(tg: &TelegramServer, path: &str, body: Value) -> Value {
    control(tg, Method::POST, path, Some(body)).await
}

/// What the account `from` sent to Telegram, oldest first.
async fn sent_by(tg: &TelegramServer, from: i64) -> Vec<Value> {
    let log = control(tg, Method::GET, &format!("/control/sent?from={from}"), None).await;
    log.as_array().cloned().unwrap_or_default()
}

/// Waits until `from` has sent a record satisfying `pred`; returns it.
async fn wait_sent(
    tg: &TelegramServer,
    from: i64,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    crate::common::poll(
        what,
        async || {
            sent_by(tg, from)
                .await
                .into_iter()
                .find(|r| pred(r))
                .unwrap_or(Value::Null)
        },
        |v| !v.is_null(),
    )
    .await
}

/// Starts ferry with Telegram enabled against `tg`, with a fresh auth key shared with it.
/// (The key belongs to one authorization, so one ferry process serves one Telegram login here.)
async fn start_ferry(slot: &Slot, backend: Backend, sim: &Sim, tg: &TelegramServer) -> Ferry {
    start_ferry_with(slot, backend, sim, tg, "").await
}

/// [`start_ferry`] with extra `networks.telegram` lines (each indented by four spaces).
async fn start_ferry_with(
    slot: &Slot,
    backend: Backend,
    sim: &Sim,
    tg: &TelegramServer,
    extra: &str,
) -> Ferry {
    let mut key = [0u8; 256];
    rand::rng().fill_bytes(&mut key);
    tg.add_auth_key(key);
    let mut ferry = Ferry::start(slot, backend, &sim.url()).await;
    ferry.kill();
    let config = std::fs::read_to_string(&ferry.config_path).expect("config");
    let telegram = format!(
        "  telegram:\n    enabled: true\n    api_id: 611\n    api_hash: \"0123456789abcdef0123456789abcdef\"\n    ghost_prefix: {}telegram_\n    dc_address: \"{}\"\n    dc_auth_key: \"{}\"\n{extra}metrics:\n",
        slot.prefix,
        tg.mtproto_addr(),
        hex::encode(key)
    );
    let config = config.replacen("metrics:\n", &telegram, 1);
    std::fs::write(&ferry.config_path, config).expect("config");
    ferry.spawn().await;
    ferry
}

/// Bodies of the m.room.message events in `room` equal to `body`.
async fn count_body(user: &User, room: &str, body: &str) -> usize {
    user.messages(room)
        .await
        .iter()
        .filter(|(_, _, b)| b == body)
        .count()
}

async fn phone_login_messages_and_restart(backend: Backend) {
    let slot = Slot::claim();
    let sim = Sim::start().await;
    let tg = TelegramServer::start().await.expect("telegram simulator");
    let ada = post(
        &tg,
        "/control/users",
        json!({"first_name": "Ada", "username": "ada", "phone": "+447700900123",
               "code": "31415", "password": "s3cret", "hint": "usual"}),
    )
    .await["id"]
        .as_i64()
        .expect("ada");
    let bob = post(
        &tg,
        "/control/users",
        json!({"first_name": "Bob", "username": "bob"}),
    )
    .await["id"]
        .as_i64()
        .expect("bob");
    let mut ferry = start_ferry(&slot, backend, &sim, &tg).await;
    let bot = slot.bot();

    // Login by phone number, code and two-step password, in the management room.
    let user = User::register("tg").await;
    let room = user.open_management_room(&bot).await;
    user.send_text(&room, "login telegram phone").await;
    user.wait_message(&room, "the phone prompt", |s, b| {
        s == bot && b.contains("phone number")
    })
    .await;
    user.send_text(&room, "+44 7700 900123").await;
    user.wait_message(&room, "the code prompt", |s, b| {
        s == bot && b.contains("login code")
    })
    .await;
    user.send_text(&room, "31415").await;
    user.wait_message(&room, "the password prompt", |s, b| {
        s == bot && b.contains("two-step") && b.contains("usual")
    })
    .await;
    user.send_text(&room, "s3cret").await;
    user.wait_message(&room, "the login", |s, b| {
        s == bot && b.contains("Logged in to Telegram")
    })
    .await;
    assert!(
        !ferry.log().contains("s3cret"),
        "the password reached the log"
    );

    // Telegram -> Matrix: Bob's formatted message opens a portal.
    let to_ada = json!({"type": "user", "id": ada});
    let first = post(
        &tg,
        "/control/send",
        json!({"from": bob, "peer": to_ada, "text": "hello from Telegram",
               "entities": [{"type": "bold", "offset": 6, "length": 4}]}),
    )
    .await;
    let portal = user.wait_portals(1, &room).await[0].clone();
    let event = user
        .wait_event(&portal, "bob's message", |e| {
            e["content"]["body"] == "hello from Telegram"
        })
        .await;
    assert_eq!(
        event["sender"],
        format!("@{}telegram_{bob}:localhost", slot.prefix)
    );
    let html = event["content"]["formatted_body"]
        .as_str()
        .unwrap_or_default();
    assert!(html.contains("<strong>from</strong>"), "{html}");
    let bob_event = event["event_id"].as_str().expect("event id").to_owned();

    // Matrix -> Telegram: a formatted reply.
    user.send_event(
        &portal,
        "m.room.message",
        json!({"msgtype": "m.text", "body": "answer", "format": "org.matrix.custom.html",
               "formatted_body": "<em>answer</em>",
               "m.relates_to": {"m.in_reply_to": {"event_id": bob_event}}}),
    )
    .await;
    let reply = wait_sent(&tg, ada, "the reply on Telegram", |r| {
        r["kind"] == "message" && r["text"] == "answer"
    })
    .await;
    assert_eq!(reply["entities"], json!(["italic:0:6"]));
    assert_eq!(reply["reply_to"], first["id"]);

    // Telegram -> Matrix: edit, reaction and its removal, delete.
    post(
        &tg,
        "/control/edit",
        json!({"from": bob, "peer": to_ada, "id": first["id"], "text": "hello (edited)"}),
    )
    .await;
    user.wait_event(&portal, "the edit", |e| {
        e["content"]["m.relates_to"]["rel_type"] == "m.replace"
            && e["content"]["m.relates_to"]["event_id"] == bob_event.as_str()
            && e["content"]["m.new_content"]["body"] == "hello (edited)"
    })
    .await;
    post(
        &tg,
        "/control/react",
        json!({"from": bob, "peer": to_ada, "id": first["id"], "emoji": "🎉"}),
    )
    .await;
    let reaction = user
        .wait_event(&portal, "the reaction", |e| {
            e["type"] == "m.reaction" && e["content"]["m.relates_to"]["key"] == "🎉"
        })
        .await;
    let reaction_id = reaction["event_id"].as_str().expect("id").to_owned();
    post(
        &tg,
        "/control/react",
        json!({"from": bob, "peer": to_ada, "id": first["id"], "emoji": null}),
    )
    .await;
    user.wait_event(&portal, "the reaction's removal", |e| {
        e["event_id"] == reaction_id.as_str() && e["unsigned"]["redacted_because"].is_object()
    })
    .await;
    post(
        &tg,
        "/control/delete",
        json!({"from": bob, "peer": to_ada, "ids": [first["id"]]}),
    )
    .await;
    user.wait_event(&portal, "the delete", |e| {
        e["event_id"] == bob_event.as_str() && e["unsigned"]["redacted_because"].is_object()
    })
    .await;

    // Matrix -> Telegram: a reaction and an edit of our own message.
    let second = post(
        &tg,
        "/control/send",
        json!({"from": bob, "peer": to_ada, "text": "second"}),
    )
    .await;
    let second_event = user
        .wait_event(&portal, "the second message", |e| {
            e["content"]["body"] == "second"
        })
        .await["event_id"]
        .as_str()
        .expect("id")
        .to_owned();
    user.send_event(
        &portal,
        "m.reaction",
        json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": second_event, "key": "👍"}}),
    )
    .await;
    let reacted = wait_sent(&tg, ada, "the reaction on Telegram", |r| {
        r["kind"] == "reaction"
    })
    .await;
    assert_eq!(reacted["id"], second["id"]);
    assert_eq!(reacted["reaction"], "👍");

    // A restart while Bob writes: every message arrives once.
    ferry.kill();
    let mut down_ids = Vec::new();
    for i in 1..=3 {
        let sent = post(
            &tg,
            "/control/send",
            json!({"from": bob, "peer": to_ada, "text": format!("while down {i}")}),
        )
        .await;
        down_ids.push(sent["id"].clone());
    }
    ferry.spawn().await;
    for i in 1..=3 {
        let body = format!("while down {i}");
        user.wait_message(&portal, &body, |_, b| b == body).await;
    }
    post(
        &tg,
        "/control/send",
        json!({"from": bob, "peer": to_ada, "text": "after the restart"}),
    )
    .await;
    user.wait_message(&portal, "the live message", |_, b| b == "after the restart")
        .await;
    // A private delete after the restart still finds its chat (from ferry's message table).
    let first_down = user
        .wait_event(&portal, "while down 1", |e| {
            e["content"]["body"] == "while down 1"
        })
        .await["event_id"]
        .as_str()
        .expect("id")
        .to_owned();
    ferry.kill();
    ferry.spawn().await;
    post(
        &tg,
        "/control/delete",
        json!({"from": bob, "peer": to_ada, "ids": [down_ids[0]]}),
    )
    .await;
    user.wait_event(&portal, "the delete after a restart", |e| {
        e["event_id"] == first_down.as_str() && e["unsigned"]["redacted_because"].is_object()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        count_body(&user, &portal, "while down 1").await,
        0,
        "redacted events have no body"
    );
    for body in [
        "while down 2",
        "while down 3",
        "after the restart",
        "second",
    ] {
        assert_eq!(count_body(&user, &portal, body).await, 1, "{body}");
    }
    let sent_answers = sent_by(&tg, ada)
        .await
        .iter()
        .filter(|r| r["kind"] == "message" && r["text"] == "answer")
        .count();
    assert_eq!(sent_answers, 1, "the reply was sent to Telegram once");
}

both_backends!(phone_login_messages_and_restart);

/// Creates Ada (the account) and Bob on the simulator; returns their ids.
async fn ada_and_bob(tg: &TelegramServer, ada_extra: Value) -> (i64, i64) {
    let mut ada = json!({"first_name": "Ada", "username": "ada", "phone": "+447700900123"});
    if let (Some(ada), Some(extra)) = (ada.as_object_mut(), ada_extra.as_object()) {
        ada.extend(extra.clone());
    }
    let ada = post(tg, "/control/users", ada).await["id"]
        .as_i64()
        .expect("ada");
    let bob = post(
        tg,
        "/control/users",
        json!({"first_name": "Bob", "username": "bob"}),
    )
    .await["id"]
        .as_i64()
        .expect("bob");
    (ada, bob)
}

async fn qr_login_media_typing_and_receipts(backend: Backend) {
    use base64::Engine as _;
    let slot = Slot::claim();
    let sim = Sim::start().await;
    let tg = TelegramServer::start().await.expect("telegram simulator");
    let (ada, bob) = ada_and_bob(&tg, json!({})).await;
    let _ferry = start_ferry(&slot, backend, &sim, &tg).await;
    let bot = slot.bot();

    // Login by QR: the bot shows the token as an image and as text; Ada's phone "scans" it.
    let user = User::register("tgqr").await;
    let room = user.open_management_room(&bot).await;
    let (text, png) = user
        .start_qr_login(&room, &bot, "login telegram qr", "tg://login?token=")
        .await;
    let token = text
        .split("tg://login?token=")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .expect("token")
        .to_owned();
    post(
        &tg,
        "/control/login_tokens/scan",
        json!({"token": token, "user": ada}),
    )
    .await;
    user.wait_message(&room, "the login", |s, b| {
        s == bot && b.contains("Logged in to Telegram")
    })
    .await;

    // A photo from Bob arrives as an image, bytes intact.
    let to_ada = json!({"type": "user", "id": ada});
    let photo: Vec<u8> = (0..40_000u32).map(|i| (i % 253) as u8).collect();
    post(
        &tg,
        "/control/send",
        json!({"from": bob, "peer": to_ada, "text": "a photo", "media": {"kind": "photo",
               "mime_type": "image/jpeg",
               "data": base64::engine::general_purpose::STANDARD.encode(&photo)}}),
    )
    .await;
    let portal = user.wait_portals(1, &room).await[0].clone();
    let image = user
        .wait_event(&portal, "bob's photo", |e| {
            e["content"]["msgtype"] == "m.image"
        })
        .await;
    assert_eq!(
        user.download(image["content"]["url"].as_str().expect("url"))
            .await,
        photo
    );
    // A document from Bob arrives as a file with its name, bytes intact.
    let doc: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    post(
        &tg,
        "/control/send",
        json!({"from": bob, "peer": to_ada, "text": "", "media": {"kind": "document",
               "name": "spec.pdf", "mime_type": "application/pdf",
               "data": base64::engine::general_purpose::STANDARD.encode(&doc)}}),
    )
    .await;
    let file = user
        .wait_event(&portal, "bob's document", |e| {
            e["content"]["msgtype"] == "m.file"
        })
        .await;
    assert_eq!(file["content"]["info"]["mimetype"], "application/pdf");
    assert!(
        file["content"]["body"] == "spec.pdf" || file["content"]["filename"] == "spec.pdf",
        "{file}"
    );
    assert_eq!(
        user.download(file["content"]["url"].as_str().expect("url"))
            .await,
        doc
    );

    // Matrix -> Telegram: a file and an image.
    let notes = b"notes for bob".to_vec();
    let mxc = user.upload("text/plain", notes.clone()).await;
    user.send_event(
        &portal,
        "m.room.message",
        json!({"msgtype": "m.file", "body": "notes.txt", "url": mxc,
               "info": {"mimetype": "text/plain", "size": notes.len()}}),
    )
    .await;
    let sent = wait_sent(&tg, ada, "the file on Telegram", |r| {
        r["kind"] == "media"
            && r["media"]
                .as_str()
                .is_some_and(|m| m.contains("text/plain"))
    })
    .await;
    assert!(
        sent["media"]
            .as_str()
            .is_some_and(|m| m.starts_with("document:")),
        "{sent}"
    );
    let png_mxc = user.upload("image/png", png.clone()).await;
    user.send_event(
        &portal,
        "m.room.message",
        json!({"msgtype": "m.image", "body": "qr.png", "url": png_mxc,
               "info": {"mimetype": "image/png", "size": png.len()}}),
    )
    .await;
    wait_sent(&tg, ada, "the image on Telegram", |r| {
        r["kind"] == "media" && r["media"].as_str().is_some_and(|m| m.starts_with("photo"))
    })
    .await;

    // Typing and read receipts, both ways.
    post(&tg, "/control/typing", json!({"from": bob, "peer": to_ada})).await;
    let ghost = format!("@{}telegram_{bob}:localhost", slot.prefix);
    user.wait_ephemeral(&portal, "bob typing", |e| {
        e["type"] == "m.typing"
            && e["content"]["user_ids"]
                .as_array()
                .is_some_and(|u| u.iter().any(|id| id == ghost.as_str()))
    })
    .await;
    user.put(
        &format!(
            "/_matrix/client/v3/rooms/{}/typing/{}",
            crate::common::enc(&portal),
            crate::common::enc(&user.user_id)
        ),
        json!({"typing": true, "timeout": 10000}),
    )
    .await;
    wait_sent(&tg, ada, "typing on Telegram", |r| r["kind"] == "typing").await;
    let doc_event = file["event_id"].as_str().expect("id").to_owned();
    user.call(
        Method::POST,
        &format!(
            "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
            crate::common::enc(&portal),
            crate::common::enc(&doc_event)
        ),
        Some(json!({})),
    )
    .await;
    wait_sent(&tg, ada, "the read on Telegram", |r| r["kind"] == "read").await;
    let ours = user.send_text(&portal, "did you read this?").await;
    let ours_tg = wait_sent(&tg, ada, "our text on Telegram", |r| {
        r["kind"] == "message" && r["text"] == "did you read this?"
    })
    .await;
    post(
        &tg,
        "/control/read",
        json!({"from": bob, "peer": {"type": "user", "id": ada}, "max_id": ours_tg["id"]}),
    )
    .await;
    user.wait_ephemeral(&portal, "bob's read receipt", |e| {
        e["type"] == "m.receipt"
            && e["content"][ours.as_str()]["m.read"][ghost.as_str()].is_object()
    })
    .await;
}

both_backends!(qr_login_media_typing_and_receipts);

async fn bot_token_login(backend: Backend) {
    let slot = Slot::claim();
    let sim = Sim::start().await;
    let tg = TelegramServer::start().await.expect("telegram simulator");
    let relay = post(
        &tg,
        "/control/users",
        json!({"first_name": "Relay", "username": "relay_bot", "bot_token": "77:secret-token"}),
    )
    .await["id"]
        .as_i64()
        .expect("bot");
    let bob = post(&tg, "/control/users", json!({"first_name": "Bob"})).await["id"]
        .as_i64()
        .expect("bob");
    let ferry = start_ferry(&slot, backend, &sim, &tg).await;
    let bot = slot.bot();
    let user = User::register("tgbot").await;
    let room = user.open_management_room(&bot).await;
    user.send_text(&room, "login telegram bot").await;
    user.wait_message(&room, "the token prompt", |s, b| {
        s == bot && b.contains("bot token")
    })
    .await;
    user.send_text(&room, "77:secret-token").await;
    user.wait_message(&room, "the login", |s, b| {
        s == bot && b.contains("Logged in to Telegram")
    })
    .await;
    assert!(
        !ferry.log().contains("secret-token"),
        "the bot token reached the log"
    );
    // Someone writes to the bot: the chat becomes a portal.
    post(
        &tg,
        "/control/send",
        json!({"from": bob, "peer": {"type": "user", "id": relay}, "text": "hi bot"}),
    )
    .await;
    let portal = user.wait_portals(1, &room).await[0].clone();
    user.wait_message(&portal, "bob's message", |_, b| b == "hi bot")
        .await;

    // A FLOOD_WAIT_2 on the next send: the message waits it out and is sent exactly once.
    post(
        &tg,
        "/control/flood",
        json!({"method": "messages.sendMessage", "count": 1, "seconds": 2}),
    )
    .await;
    let started = std::time::Instant::now();
    user.send_text(&portal, "through the flood").await;
    wait_sent(&tg, relay, "the flooded message on Telegram", |r| {
        r["kind"] == "message" && r["text"] == "through the flood"
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "sent before the flood wait ended: {:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let copies = sent_by(&tg, relay)
        .await
        .iter()
        .filter(|r| r["text"] == "through the flood")
        .count();
    assert_eq!(copies, 1, "the flooded message was sent once");
}

both_backends!(bot_token_login);

/// Logs `user` in by phone (an account without a two-step password) from a new management room.
async fn login_by_phone(user: &User, bot: &str, phone: &str) -> String {
    let room = user.open_management_room(bot).await;
    user.send_text(&room, "login telegram phone").await;
    user.wait_message(&room, "the phone prompt", |s, b| {
        s == bot && b.contains("phone number")
    })
    .await;
    user.send_text(&room, phone).await;
    user.wait_message(&room, "the code prompt", |s, b| {
        s == bot && b.contains("login code")
    })
    .await;
    user.send_text(&room, "12345").await;
    user.wait_message(&room, "the login", |s, b| {
        s == bot && b.contains("Logged in to Telegram")
    })
    .await;
    room
}

async fn groups_members_and_power_levels(backend: Backend) {
    let slot = Slot::claim();
    let sim = Sim::start().await;
    let tg = TelegramServer::start().await.expect("telegram simulator");
    let (ada, bob) = ada_and_bob(&tg, json!({})).await;
    let carol = post(&tg, "/control/users", json!({"first_name": "Carol"})).await["id"]
        .as_i64()
        .expect("carol");
    let _ferry = start_ferry(&slot, backend, &sim, &tg).await;
    let bot = slot.bot();
    let user = User::register("tggrp").await;
    let room = login_by_phone(&user, &bot, "+447700900123").await;
    let ghost = |id: i64| format!("@{}telegram_{id}:localhost", slot.prefix);

    // A basic group: a portal named after it, with Bob's message.
    let basic = post(
        &tg,
        "/control/chats",
        json!({"creator": bob, "title": "Basics", "members": [ada, carol]}),
    )
    .await["id"]
        .as_i64()
        .expect("chat");
    post(
        &tg,
        "/control/send",
        json!({"from": bob, "peer": {"type": "chat", "id": basic}, "text": "in the basic group"}),
    )
    .await;
    let basic_room = user.wait_portals(1, &room).await[0].clone();
    user.wait_message(&basic_room, "the basic group message", |s, b| {
        s == ghost(bob) && b == "in the basic group"
    })
    .await;
    crate::common::poll(
        "the basic group's name",
        async || json!(user.room_name(&basic_room).await),
        |v| v == "Basics",
    )
    .await;

    // Service messages: a title change and a pin read as lines from Bob; removing Carol also
    // takes her ghost out of the room.
    let basic_peer = json!({"type": "chat", "id": basic});
    user.wait_members(&basic_room, "carol's ghost in the group", |m| {
        m.contains(&ghost(carol))
    })
    .await;
    post(
        &tg,
        "/control/service",
        json!({"from": bob, "peer": basic_peer, "action": "edit_title", "title": "Renamed"}),
    )
    .await;
    let event = user
        .wait_event(&basic_room, "the title change line", |e| {
            e["content"]["body"] == "changed the group name to “Renamed”"
        })
        .await;
    assert_eq!(event["sender"], ghost(bob));
    assert!(
        event["content"]["formatted_body"]
            .as_str()
            .is_some_and(|h| h.contains("<em>")),
        "{event}"
    );
    crate::common::poll(
        "the room renamed",
        async || json!(user.room_name(&basic_room).await),
        |v| v == "Renamed",
    )
    .await;
    // Adding Dave invites his ghost, with his name.
    let dave = post(&tg, "/control/users", json!({"first_name": "Dave"})).await["id"]
        .as_i64()
        .expect("dave");
    post(
        &tg,
        "/control/service",
        json!({"from": bob, "peer": basic_peer, "action": "add_user", "users": [dave]}),
    )
    .await;
    user.wait_members(&basic_room, "dave's ghost joining", |m| {
        m.contains(&ghost(dave))
    })
    .await;
    assert_eq!(
        user.displayname(&ghost(dave)).await.as_deref(),
        Some("Dave (Telegram)")
    );
    post(
        &tg,
        "/control/service",
        json!({"from": bob, "peer": basic_peer, "action": "delete_user", "users": [carol]}),
    )
    .await;
    let event = user
        .wait_event(&basic_room, "the removal line", |e| {
            // The pill shows the ghost's display name.
            e["content"]["body"] == "removed Carol (Telegram)"
        })
        .await;
    assert!(
        event["content"]["formatted_body"]
            .as_str()
            .is_some_and(|h| h.contains(&format!("https://matrix.to/#/{}", ghost(carol)))),
        "a pill to carol's ghost: {event}"
    );
    user.wait_members(&basic_room, "carol's ghost leaving", |m| {
        !m.contains(&ghost(carol))
    })
    .await;

    // A supergroup: Carol is an admin there, so her ghost gets power level 50.
    let team = post(
        &tg,
        "/control/channels",
        json!({"creator": bob, "title": "Team", "members": [ada, carol], "admins": [carol]}),
    )
    .await["id"]
        .as_i64()
        .expect("channel");
    post(
        &tg,
        "/control/send",
        json!({"from": carol, "peer": {"type": "channel", "id": team}, "text": "in the supergroup"}),
    )
    .await;
    let team_room = user
        .wait_portals(2, &room)
        .await
        .into_iter()
        .find(|r| *r != basic_room)
        .expect("the supergroup's portal");
    user.wait_message(&team_room, "the supergroup message", |s, b| {
        s == ghost(carol) && b == "in the supergroup"
    })
    .await;
    let path = format!(
        "/_matrix/client/v3/rooms/{}/state/m.room.power_levels/",
        crate::common::enc(&team_room)
    );
    let carol_ghost = ghost(carol);
    let levels = crate::common::poll(
        "carol's power level",
        async || user.call(Method::GET, &path, None).await,
        |v| v["users"][carol_ghost.as_str()] == 50,
    )
    .await;
    assert!(
        levels["users"][ghost(ada).as_str()].is_null(),
        "the account's own ghost is not given power: {levels}"
    );
    assert_eq!(user.room_name(&team_room).await.as_deref(), Some("Team"));

    // Matrix -> the supergroup.
    user.send_text(&team_room, "hello team").await;
    let sent = wait_sent(&tg, ada, "the message in the supergroup", |r| {
        r["kind"] == "message" && r["text"] == "hello team"
    })
    .await;
    assert_eq!(sent["peer"], json!({"type": "channel", "id": team}));
}

both_backends!(groups_members_and_power_levels);

/// The state event `kind`/`key` of `room`, or `Null` when it is not set.
async fn state_of(user: &User, room: &str, kind: &str, key: &str) -> Value {
    let response = http()
        .get(format!(
            "{}/_matrix/client/v3/rooms/{}/state/{kind}/{}",
            user.hs(),
            crate::common::enc(room),
            crate::common::enc(key)
        ))
        .bearer_auth(user.token())
        .send()
        .await
        .expect("state request");
    if response.status().is_success() {
        response.json().await.unwrap_or(Value::Null)
    } else {
        Value::Null
    }
}

/// Waits until the user is in a room named `name` (other than `except`); returns it.
async fn wait_room_named(user: &User, name: &str, except: &str) -> String {
    crate::common::poll(
        &format!("a room named {name}"),
        async || {
            user.accept_invites().await;
            for room in user.joined_rooms().await {
                if room != except && user.room_name(&room).await.as_deref() == Some(name) {
                    return json!(room);
                }
            }
            Value::Null
        },
        |v| v.is_string(),
    )
    .await
    .as_str()
    .expect("room id")
    .to_owned()
}

async fn forum_topics_as_a_space(backend: Backend) {
    let slot = Slot::claim();
    let sim = Sim::start().await;
    let tg = TelegramServer::start().await.expect("telegram simulator");
    let (ada, bob) = ada_and_bob(&tg, json!({})).await;
    let _ferry = start_ferry(&slot, backend, &sim, &tg).await;
    let bot = slot.bot();
    let user = User::register("tgforum").await;
    let room = login_by_phone(&user, &bot, "+447700900123").await;
    let ghost = |id: i64| format!("@{}telegram_{id}:localhost", slot.prefix);

    // A forum: a space, with one room per topic (General included).
    let forum = post(
        &tg,
        "/control/channels",
        json!({"creator": bob, "title": "Lounge", "forum": true, "members": [ada]}),
    )
    .await["id"]
        .as_i64()
        .expect("forum");
    let peer = json!({"type": "channel", "id": forum});
    let cats = post(
        &tg,
        "/control/topics",
        json!({"channel": forum, "from": bob, "title": "Cats"}),
    )
    .await["id"]
        .as_i64()
        .expect("topic");
    let meow = post(
        &tg,
        "/control/send",
        json!({"from": bob, "peer": peer, "text": "meow", "top_id": cats}),
    )
    .await;
    post(
        &tg,
        "/control/send",
        json!({"from": bob, "peer": peer, "text": "hello all"}),
    )
    .await;
    let space = wait_room_named(&user, "Lounge", &room).await;
    let cats_room = wait_room_named(&user, "Cats", &room).await;
    let general = wait_room_named(&user, "General", &room).await;
    let create = state_of(&user, &space, "m.room.create", "").await;
    assert_eq!(create["type"], "m.space", "{create}");
    let meow_event = user
        .wait_event(&cats_room, "meow in the topic's room", |e| {
            e["content"]["body"] == "meow"
        })
        .await;
    assert_eq!(meow_event["sender"], ghost(bob));
    user.wait_message(&general, "the General topic's message", |s, b| {
        s == ghost(bob) && b == "hello all"
    })
    .await;
    assert_eq!(
        count_body(&user, &general, "meow").await,
        0,
        "a topic's message stays in its room"
    );
    // The space lists both topic rooms; each names the space as its parent.
    for child in [&cats_room, &general] {
        let link = crate::common::poll(
            "the space's child link",
            async || state_of(&user, &space, "m.space.child", child).await,
            |v| v["via"].is_array(),
        )
        .await;
        assert_eq!(link["via"], json!(["localhost"]));
        let parent = state_of(&user, child, "m.space.parent", &space).await;
        assert_eq!(parent["canonical"], true, "{parent}");
    }

    // Matrix -> the topic: a message and a reply both land in "Cats" on Telegram.
    user.send_text(&cats_room, "purr").await;
    let purr = wait_sent(&tg, ada, "the message in the topic", |r| {
        r["kind"] == "message" && r["text"] == "purr"
    })
    .await;
    assert_eq!(purr["peer"], peer);
    assert_eq!(purr["top_id"], cats);
    assert_eq!(purr["reply_to"], Value::Null, "not a reply: {purr}");
    let meow_id = meow_event["event_id"].as_str().expect("id").to_owned();
    user.send_event(
        &cats_room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": "good cat",
               "m.relates_to": {"m.in_reply_to": {"event_id": meow_id}}}),
    )
    .await;
    let reply = wait_sent(&tg, ada, "the reply in the topic", |r| {
        r["kind"] == "message" && r["text"] == "good cat"
    })
    .await;
    assert_eq!(reply["top_id"], cats);
    assert_eq!(reply["reply_to"], meow["id"]);
    // From General: no topic.
    user.send_text(&general, "hi general").await;
    let hi = wait_sent(&tg, ada, "the message in General", |r| {
        r["text"] == "hi general"
    })
    .await;
    assert_eq!(hi["top_id"], Value::Null);

    // Typing in a topic shows in that topic's room.
    post(
        &tg,
        "/control/typing",
        json!({"from": bob, "peer": peer, "top_id": cats}),
    )
    .await;
    let bob_ghost = ghost(bob);
    user.wait_ephemeral(&cats_room, "bob typing in the topic", |e| {
        e["type"] == "m.typing"
            && e["content"]["user_ids"]
                .as_array()
                .is_some_and(|u| u.iter().any(|id| id == bob_ghost.as_str()))
    })
    .await;

    // A new topic appears as a new room in the space, with its messages.
    let dogs = post(
        &tg,
        "/control/topics",
        json!({"channel": forum, "from": bob, "title": "Dogs"}),
    )
    .await["id"]
        .as_i64()
        .expect("topic");
    post(
        &tg,
        "/control/send",
        json!({"from": bob, "peer": peer, "text": "woof", "top_id": dogs}),
    )
    .await;
    let dogs_room = wait_room_named(&user, "Dogs", &room).await;
    user.wait_message(&dogs_room, "woof in the new topic", |_, b| b == "woof")
        .await;
    crate::common::poll(
        "the new topic in the space",
        async || state_of(&user, &space, "m.space.child", &dogs_room).await,
        |v| v["via"].is_array(),
    )
    .await;
    // A delete in a topic reaches that topic's room.
    post(
        &tg,
        "/control/delete",
        json!({"from": bob, "peer": peer, "ids": [meow["id"]]}),
    )
    .await;
    user.wait_event(&cats_room, "the delete in the topic", |e| {
        e["event_id"] == meow_id.as_str() && e["unsigned"]["redacted_because"].is_object()
    })
    .await;
}

both_backends!(forum_topics_as_a_space);

/// Sends a text as `user` without expecting success; returns the HTTP status.
async fn try_send_text(user: &User, room: &str, body: &str) -> u16 {
    let response = http()
        .put(format!(
            "{}/_matrix/client/v3/rooms/{}/send/m.room.message/t{}",
            user.hs(),
            crate::common::enc(room),
            rand::random::<u64>()
        ))
        .bearer_auth(user.token())
        .json(&json!({"msgtype": "m.text", "body": body}))
        .send()
        .await
        .expect("send request");
    response.status().as_u16()
}

async fn channels_are_read_only(backend: Backend) {
    let slot = Slot::claim();
    let sim = Sim::start().await;
    let tg = TelegramServer::start().await.expect("telegram simulator");
    let (ada, bob) = ada_and_bob(&tg, json!({})).await;
    let _ferry = start_ferry(&slot, backend, &sim, &tg).await;
    let bot = slot.bot();
    let user = User::register("tgchan").await;
    let room = login_by_phone(&user, &bot, "+447700900123").await;

    // A channel Ada only reads: its posts come from the channel; she cannot post.
    let news = post(
        &tg,
        "/control/channels",
        json!({"creator": bob, "title": "News", "broadcast": true, "members": [ada]}),
    )
    .await["id"]
        .as_i64()
        .expect("channel");
    post(
        &tg,
        "/control/send",
        json!({"from": bob, "peer": {"type": "channel", "id": news}, "text": "breaking"}),
    )
    .await;
    let news_room = wait_room_named(&user, "News", &room).await;
    // The channel's ghost is its own ("c" + id), never a user's with the same number.
    let channel_ghost = format!("@{}telegram_c{news}:localhost", slot.prefix);
    user.wait_message(&news_room, "the channel post", |s, b| {
        s == channel_ghost && b == "breaking"
    })
    .await;
    assert_eq!(
        user.displayname(&channel_ghost).await.as_deref(),
        Some("News (Telegram)")
    );
    let levels = state_of(&user, &news_room, "m.room.power_levels", "").await;
    assert_eq!(levels["events_default"], 50, "{levels}");
    assert_eq!(levels["users"][channel_ghost.as_str()], 50, "{levels}");
    assert!(
        levels["users"][user.user_id.as_str()].as_i64().unwrap_or(0) < 50,
        "a reader has no posting level: {levels}"
    );
    assert_eq!(
        try_send_text(&user, &news_room, "can I post?").await,
        403,
        "a reader cannot post"
    );

    // A channel Ada administers: she posts from Matrix, as the channel.
    let own = post(
        &tg,
        "/control/channels",
        json!({"creator": bob, "title": "Ada's corner", "broadcast": true,
               "members": [ada], "admins": [ada]}),
    )
    .await["id"]
        .as_i64()
        .expect("channel");
    post(
        &tg,
        "/control/send",
        json!({"from": bob, "peer": {"type": "channel", "id": own}, "text": "welcome"}),
    )
    .await;
    let own_room = wait_room_named(&user, "Ada's corner", &room).await;
    user.wait_message(&own_room, "the welcome post", |_, b| b == "welcome")
        .await;
    let levels = state_of(&user, &own_room, "m.room.power_levels", "").await;
    assert_eq!(levels["users"][user.user_id.as_str()], 50, "{levels}");
    user.send_text(&own_room, "admin post").await;
    let sent = wait_sent(&tg, ada, "the admin's post", |r| {
        r["kind"] == "message" && r["text"] == "admin post"
    })
    .await;
    assert_eq!(sent["peer"], json!({"type": "channel", "id": own}));
    assert_eq!(
        sent_by(&tg, ada)
            .await
            .iter()
            .filter(|r| r["text"] == "can I post?")
            .count(),
        0
    );
}

both_backends!(channels_are_read_only);

async fn edits_deletes_replies_and_presence(backend: Backend) {
    let slot = Slot::claim();
    let sim = Sim::start().await;
    let tg = TelegramServer::start().await.expect("telegram simulator");
    let (ada, bob) = ada_and_bob(&tg, json!({})).await;
    let _ferry = start_ferry(&slot, backend, &sim, &tg).await;
    let bot = slot.bot();
    let user = User::register("tgedit").await;
    let room = login_by_phone(&user, &bot, "+447700900123").await;
    let ghost_bob = format!("@{}telegram_{bob}:localhost", slot.prefix);
    let to_ada = json!({"type": "user", "id": ada});
    let first = post(
        &tg,
        "/control/send",
        json!({"from": bob, "peer": to_ada, "text": "first"}),
    )
    .await;
    let portal = user.wait_portals(1, &room).await[0].clone();
    let first_event = user
        .wait_event(&portal, "bob's first message", |e| {
            e["content"]["body"] == "first"
        })
        .await["event_id"]
        .as_str()
        .expect("id")
        .to_owned();

    // Matrix -> Telegram: an edit, then a delete, of our own message.
    let mine = user.send_text(&portal, "mine").await;
    let mine_tg = wait_sent(&tg, ada, "our message on Telegram", |r| {
        r["kind"] == "message" && r["text"] == "mine"
    })
    .await;
    user.send_event(
        &portal,
        "m.room.message",
        json!({"msgtype": "m.text", "body": "* mine, edited",
               "m.new_content": {"msgtype": "m.text", "body": "mine, edited"},
               "m.relates_to": {"rel_type": "m.replace", "event_id": mine}}),
    )
    .await;
    let edit = wait_sent(&tg, ada, "the edit on Telegram", |r| r["kind"] == "edit").await;
    assert_eq!(edit["id"], mine_tg["id"]);
    assert_eq!(edit["text"], "mine, edited");
    // Bob sees the edited text in his copy.
    let bob_view = control(
        &tg,
        Method::GET,
        &format!("/control/messages?owner={bob}&peer_type=user&peer_id={ada}"),
        None,
    )
    .await;
    assert!(
        bob_view.as_array().is_some_and(|m| m
            .iter()
            .any(|m| m["text"] == "mine, edited" && m["edited"] == true)),
        "{bob_view}"
    );
    user.call(
        Method::PUT,
        &format!(
            "/_matrix/client/v3/rooms/{}/redact/{}/r{}",
            crate::common::enc(&portal),
            crate::common::enc(&mine),
            rand::random::<u32>()
        ),
        Some(json!({})),
    )
    .await;
    let delete = wait_sent(&tg, ada, "the delete on Telegram", |r| {
        r["kind"] == "delete"
    })
    .await;
    assert_eq!(delete["id"], mine_tg["id"]);
    crate::common::poll(
        "the message gone from bob's chat",
        async || {
            control(
                &tg,
                Method::GET,
                &format!("/control/messages?owner={bob}&peer_type=user&peer_id={ada}"),
                None,
            )
            .await
        },
        |v| {
            v.as_array()
                .is_some_and(|m| !m.iter().any(|m| m["text"] == "mine, edited"))
        },
    )
    .await;

    // Telegram -> Matrix: Bob replies to his first message; the reply relation points at it.
    post(
        &tg,
        "/control/send",
        json!({"from": bob, "peer": to_ada, "text": "replying", "reply_to": first["id"]}),
    )
    .await;
    let reply = user
        .wait_event(&portal, "bob's reply", |e| {
            e["content"]["body"] == "replying"
        })
        .await;
    assert_eq!(
        reply["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        first_event.as_str(),
        "{reply}"
    );

    // Presence: Bob's online status is his ghost's presence.
    let presence = |expected: &'static str| {
        let user = &user;
        let ghost = ghost_bob.clone();
        async move {
            crate::common::poll(
                &format!("bob {expected}"),
                async || {
                    user.call(
                        Method::GET,
                        &format!(
                            "/_matrix/client/v3/presence/{}/status",
                            crate::common::enc(&ghost)
                        ),
                        None,
                    )
                    .await
                },
                |p| p["presence"] == expected,
            )
            .await
        }
    };
    post(&tg, "/control/status", json!({"user": bob, "online": true})).await;
    presence("online").await;
    post(
        &tg,
        "/control/status",
        json!({"user": bob, "online": false}),
    )
    .await;
    presence("offline").await;
}

both_backends!(edits_deletes_replies_and_presence);

async fn media_kinds_both_ways(backend: Backend) {
    use base64::Engine as _;
    let b64 = |data: &[u8]| base64::engine::general_purpose::STANDARD.encode(data);
    let slot = Slot::claim();
    let sim = Sim::start().await;
    let tg = TelegramServer::start().await.expect("telegram simulator");
    let (ada, bob) = ada_and_bob(&tg, json!({})).await;
    let _ferry = start_ferry(&slot, backend, &sim, &tg).await;
    let bot = slot.bot();
    let user = User::register("tgmedia").await;
    let room = login_by_phone(&user, &bot, "+447700900123").await;
    let to_ada = json!({"type": "user", "id": ada});
    let send = |media: Value| {
        let tg = &tg;
        let to_ada = to_ada.clone();
        async move {
            post(
                tg,
                "/control/send",
                json!({"from": bob, "peer": to_ada, "media": media}),
            )
            .await
        }
    };

    // A static sticker: an m.sticker with its bytes.
    let webp: Vec<u8> = (0..3000u32).map(|i| (i % 199) as u8).collect();
    send(json!({"kind": "sticker", "emoji": "😀", "w": 512, "h": 512, "data": b64(&webp)})).await;
    let portal = user.wait_portals(1, &room).await[0].clone();
    let sticker = user
        .wait_event(&portal, "the sticker", |e| e["type"] == "m.sticker")
        .await;
    assert_eq!(sticker["content"]["body"], "😀");
    assert_eq!(sticker["content"]["info"]["mimetype"], "image/webp");
    assert_eq!(sticker["content"]["info"]["w"], 512);
    let url = sticker["content"]["url"].as_str().expect("url");
    assert_eq!(user.download(url).await, webp);

    // An animated (Lottie) sticker: its still thumbnail; without one, its emoji.
    let thumb: Vec<u8> = (0..900u32).map(|i| (i % 97) as u8).collect();
    send(
        json!({"kind": "animated_sticker", "emoji": "🐱", "data": b64(b"lottie"),
                "thumb": b64(&thumb)}),
    )
    .await;
    let still = user
        .wait_event(&portal, "the animated sticker's still", |e| {
            e["type"] == "m.sticker" && e["content"]["body"] == "🐱"
        })
        .await;
    let url = still["content"]["url"].as_str().expect("url");
    assert_eq!(user.download(url).await, thumb);
    send(json!({"kind": "animated_sticker", "emoji": "🐶", "data": b64(b"lottie")})).await;
    user.wait_message(&portal, "the thumbnail-less sticker as text", |_, b| {
        b == "🐶 (animated sticker)"
    })
    .await;

    // A video sticker and a GIF: looping videos with the GIF hints.
    send(
        json!({"kind": "video_sticker", "emoji": "🎉", "w": 512, "h": 512, "duration": 3.0,
                "data": b64(b"webm video")}),
    )
    .await;
    let video_sticker = user
        .wait_event(&portal, "the video sticker", |e| {
            e["content"]["msgtype"] == "m.video" && e["content"]["info"]["mimetype"] == "video/webm"
        })
        .await;
    assert_eq!(video_sticker["content"]["info"]["fi.mau.gif"], true);
    let gif: Vec<u8> = (0..5000u32).map(|i| (i % 211) as u8).collect();
    send(
        json!({"kind": "gif", "name": "party.mp4", "w": 320, "h": 240, "duration": 2.5,
                "data": b64(&gif)}),
    )
    .await;
    let animation = user
        .wait_event(&portal, "the GIF", |e| {
            e["content"]["msgtype"] == "m.video" && e["content"]["body"] == "party.mp4"
        })
        .await;
    let info = &animation["content"]["info"];
    assert_eq!(info["fi.mau.loop"], true, "{animation}");
    assert_eq!(info["fi.mau.autoplay"], true);
    assert_eq!(
        (info["w"].clone(), info["duration"].clone()),
        (json!(320), json!(2500))
    );
    let url = animation["content"]["url"].as_str().expect("url");
    assert_eq!(user.download(url).await, gif);

    // A voice note: MSC3245 voice with its duration and waveform.
    let waveform = [0xffu8, 0x00, 0x1f, 0x80, 0x7c];
    send(
        json!({"kind": "voice", "duration": 7.0, "waveform": b64(&waveform),
                "data": b64(b"ogg opus")}),
    )
    .await;
    let voice = user
        .wait_event(&portal, "the voice note", |e| {
            e["content"]["msgtype"] == "m.audio"
        })
        .await;
    assert!(
        voice["content"]["org.matrix.msc3245.voice"].is_object(),
        "{voice}"
    );
    assert_eq!(voice["content"]["info"]["duration"], 7000);
    assert_eq!(
        voice["content"]["org.matrix.msc1767.audio"]["duration"],
        7000
    );
    assert_eq!(
        voice["content"]["org.matrix.msc1767.audio"]["waveform"]
            .as_array()
            .map(Vec::len),
        Some(8),
        "5 packed bytes hold 8 samples"
    );

    // A location, a contact and a poll.
    send(json!({"kind": "geo", "lat": 51.5, "long": -0.12})).await;
    let location = user
        .wait_event(&portal, "the location", |e| {
            e["content"]["msgtype"] == "m.location"
        })
        .await;
    assert_eq!(location["content"]["geo_uri"], "geo:51.5,-0.12");
    send(
        json!({"kind": "contact", "first_name": "Carol", "last_name": "Jones",
                "phone": "+441234567"}),
    )
    .await;
    user.wait_message(&portal, "the contact", |_, b| {
        b == "📇 Contact: Carol Jones (+441234567)"
    })
    .await;
    let poll = send(
        json!({"kind": "poll", "question": "Lunch?", "answers": ["Pizza", "Soup"],
                "votes": [2, 1]}),
    )
    .await;
    let poll_event = user
        .wait_event(&portal, "the poll", |e| {
            e["content"]["body"] == "📊 Poll: Lunch?\n1. Pizza — 2 votes\n2. Soup — 1 vote"
        })
        .await["event_id"]
        .as_str()
        .expect("id")
        .to_owned();
    // A new vote edits the poll's counts.
    post(
        &tg,
        "/control/vote",
        json!({"from": bob, "peer": to_ada, "id": poll["id"], "option": 1}),
    )
    .await;
    user.wait_event(&portal, "the poll's new counts", |e| {
        e["content"]["m.relates_to"]["event_id"] == poll_event.as_str()
            && e["content"]["m.new_content"]["body"]
                == "📊 Poll: Lunch?\n1. Pizza — 2 votes\n2. Soup — 2 votes"
    })
    .await;

    // Matrix -> Telegram: a location, a voice note, a GIF and a sticker keep their kind.
    user.send_event(
        &portal,
        "m.room.message",
        json!({"msgtype": "m.location", "body": "Paris", "geo_uri": "geo:48.85,2.35"}),
    )
    .await;
    let sent = wait_sent(&tg, ada, "the location on Telegram", |r| {
        r["media"] == "geo"
    })
    .await;
    assert_eq!(sent["details"], json!(["geo:48.85,2.35"]));
    let ogg = b"OggS voice".to_vec();
    let mxc = user.upload("audio/ogg", ogg.clone()).await;
    user.send_event(
        &portal,
        "m.room.message",
        json!({"msgtype": "m.audio", "body": "voice.ogg", "url": mxc,
               "info": {"mimetype": "audio/ogg", "size": ogg.len(), "duration": 3000},
               "org.matrix.msc1767.audio": {"duration": 3000, "waveform": [0, 512, 1024]},
               "org.matrix.msc3245.voice": {}}),
    )
    .await;
    let sent = wait_sent(&tg, ada, "the voice note on Telegram", |r| {
        r["details"]
            .as_array()
            .is_some_and(|d| d.iter().any(|x| x == "voice:3s"))
    })
    .await;
    assert!(
        sent["details"]
            .as_array()
            .is_some_and(|d| d.contains(&json!("waveform"))),
        "{sent}"
    );
    let mp4 = b"mp4 loop".to_vec();
    let mxc = user.upload("video/mp4", mp4.clone()).await;
    user.send_event(
        &portal,
        "m.room.message",
        json!({"msgtype": "m.video", "body": "loop.mp4", "url": mxc,
               "info": {"mimetype": "video/mp4", "size": mp4.len(), "fi.mau.gif": true}}),
    )
    .await;
    wait_sent(&tg, ada, "the GIF on Telegram", |r| {
        r["details"]
            .as_array()
            .is_some_and(|d| d.iter().any(|x| x == "animated"))
    })
    .await;
    let mxc = user.upload("image/webp", webp.clone()).await;
    user.send_event(
        &portal,
        "m.sticker",
        json!({"body": "wave", "url": mxc,
               "info": {"mimetype": "image/webp", "size": webp.len(), "w": 256, "h": 256}}),
    )
    .await;
    wait_sent(&tg, ada, "the sticker on Telegram", |r| {
        r["details"]
            .as_array()
            .is_some_and(|d| d.iter().any(|x| x == "sticker"))
    })
    .await;
}

both_backends!(media_kinds_both_ways);

async fn large_groups_lazily_and_file_references(backend: Backend) {
    use base64::Engine as _;
    let slot = Slot::claim();
    let sim = Sim::start().await;
    let tg = TelegramServer::start().await.expect("telegram simulator");
    let (ada, bob) = ada_and_bob(&tg, json!({})).await;
    let mut others = Vec::new();
    for i in 0..12 {
        let id = post(
            &tg,
            "/control/users",
            json!({"first_name": format!("Member{i}")}),
        )
        .await["id"]
            .as_i64()
            .expect("member");
        others.push(id);
    }
    let ferry = start_ferry_with(&slot, backend, &sim, &tg, "    max_initial_members: 5\n").await;
    let bot = slot.bot();
    let user = User::register("tglazy").await;
    let room = login_by_phone(&user, &bot, "+447700900123").await;
    let ghost = |id: i64| format!("@{}telegram_{id}:localhost", slot.prefix);
    let ghost_prefix = format!("@{}telegram_", slot.prefix);

    // A supergroup of 14: its room starts with at most 5 of them.
    let mut members = vec![ada];
    members.extend(&others);
    let big = post(
        &tg,
        "/control/channels",
        json!({"creator": bob, "title": "Crowd", "members": members}),
    )
    .await["id"]
        .as_i64()
        .expect("channel");
    let peer = json!({"type": "channel", "id": big});
    post(
        &tg,
        "/control/send",
        json!({"from": bob, "peer": peer, "text": "welcome all"}),
    )
    .await;
    let crowd = wait_room_named(&user, "Crowd", &room).await;
    user.wait_message(&crowd, "the welcome", |_, b| b == "welcome all")
        .await;
    let ghosts = |m: &[String]| m.iter().filter(|x| x.starts_with(&ghost_prefix)).count();
    let joined = user.members(&crowd).await;
    assert!(
        ghosts(&joined) <= 5,
        "at most 5 members synced up front: {joined:?}"
    );
    // The last member, not synced, writes: their ghost joins then.
    let late = *others.last().expect("members");
    assert!(!joined.contains(&ghost(late)), "{joined:?}");
    post(
        &tg,
        "/control/send",
        json!({"from": late, "peer": peer, "text": "late hello"}),
    )
    .await;
    user.wait_message(&crowd, "the late member's message", |s, b| {
        s == ghost(late) && b == "late hello"
    })
    .await;
    assert!(user.members(&crowd).await.contains(&ghost(late)));

    // A file whose reference expired before ferry downloads it: refetched and bridged.
    post(
        &tg,
        "/control/expire_file_references",
        json!({"on_next_download": true}),
    )
    .await;
    let doc: Vec<u8> = (0..70_000u32).map(|i| (i % 241) as u8).collect();
    post(
        &tg,
        "/control/send",
        json!({"from": bob, "peer": {"type": "user", "id": ada}, "media": {"kind": "document",
               "name": "old.bin", "mime_type": "application/octet-stream",
               "data": base64::engine::general_purpose::STANDARD.encode(&doc)}}),
    )
    .await;
    let dm = crate::common::poll(
        "the DM portal",
        async || {
            user.accept_invites().await;
            for r in user.joined_rooms().await {
                if r != room && r != crowd {
                    return json!(r);
                }
            }
            Value::Null
        },
        |v| v.is_string(),
    )
    .await;
    let dm = dm.as_str().expect("room");
    let file = user
        .wait_event(dm, "the file after its reference expired", |e| {
            e["content"]["msgtype"] == "m.file"
        })
        .await;
    assert_eq!(
        user.download(file["content"]["url"].as_str().expect("url"))
            .await,
        doc
    );
    assert!(
        ferry.log().contains("file reference expired; refetching"),
        "the download went through the refresh"
    );
}

both_backends!(large_groups_lazily_and_file_references);

async fn channel_news_while_ferry_was_down(backend: Backend) {
    let slot = Slot::claim();
    let sim = Sim::start().await;
    let tg = TelegramServer::start().await.expect("telegram simulator");
    let (ada, bob) = ada_and_bob(&tg, json!({})).await;
    let mut ferry = start_ferry(&slot, backend, &sim, &tg).await;
    let bot = slot.bot();
    let user = User::register("tgdown").await;
    let room = login_by_phone(&user, &bot, "+447700900123").await;
    // A supergroup ferry has seen, then a restart during which Ada is added to a new one and
    // both get messages: each arrives once (getDifference names both channels).
    let seen = post(
        &tg,
        "/control/channels",
        json!({"creator": bob, "title": "Seen", "members": [ada]}),
    )
    .await["id"]
        .as_i64()
        .expect("channel");
    post(
        &tg,
        "/control/send",
        json!({"from": bob, "peer": {"type": "channel", "id": seen}, "text": "before"}),
    )
    .await;
    let seen_room = wait_room_named(&user, "Seen", &room).await;
    user.wait_message(&seen_room, "the first message", |_, b| b == "before")
        .await;
    ferry.kill();
    post(
        &tg,
        "/control/send",
        json!({"from": bob, "peer": {"type": "channel", "id": seen}, "text": "while down"}),
    )
    .await;
    let fresh = post(
        &tg,
        "/control/channels",
        json!({"creator": bob, "title": "Fresh", "members": [ada]}),
    )
    .await["id"]
        .as_i64()
        .expect("channel");
    post(
        &tg,
        "/control/send",
        json!({"from": bob, "peer": {"type": "channel", "id": fresh}, "text": "fresh news"}),
    )
    .await;
    ferry.spawn().await;
    user.wait_message(&seen_room, "the message sent while down", |_, b| {
        b == "while down"
    })
    .await;
    let fresh_room = wait_room_named(&user, "Fresh", &room).await;
    user.wait_message(&fresh_room, "the new channel's message", |_, b| {
        b == "fresh news"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (r, body) in [
        (&seen_room, "before"),
        (&seen_room, "while down"),
        (&fresh_room, "fresh news"),
    ] {
        assert_eq!(count_body(&user, r, body).await, 1, "{body}");
    }
}

both_backends!(channel_news_while_ferry_was_down);

/// A group's details as Bob sees them on Telegram (`GET /control/chat`).
async fn chat_on_telegram(tg: &TelegramServer, kind: &str, id: i64) -> Value {
    control(
        tg,
        Method::GET,
        &format!("/control/chat?type={kind}&id={id}"),
        None,
    )
    .await
}

/// Distinct stand-in image bytes (Synapse stores media as given).
fn picture(tag: u8) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend(std::iter::repeat_n(tag, 300));
    bytes
}

/// Waits until `room`'s avatar is an image with exactly `bytes`.
async fn wait_avatar(user: &User, room: &str, what: &str, bytes: &[u8]) {
    crate::common::poll(
        what,
        async || {
            let avatar = state_of(user, room, "m.room.avatar", "").await;
            match avatar["url"].as_str() {
                Some(url) => json!(user.download(url).await == bytes),
                None => json!(false),
            }
        },
        |same| same == true,
    )
    .await;
}

async fn group_about_and_photo(backend: Backend) {
    use base64::Engine as _;
    let b64 = |data: &[u8]| base64::engine::general_purpose::STANDARD.encode(data);
    let slot = Slot::claim();
    let sim = Sim::start().await;
    let tg = TelegramServer::start().await.expect("telegram simulator");
    let (ada, bob) = ada_and_bob(&tg, json!({})).await;
    let _ferry = start_ferry(&slot, backend, &sim, &tg).await;
    let bot = slot.bot();
    let user = User::register("tgabout").await;
    let room = login_by_phone(&user, &bot, "+447700900123").await;

    // A supergroup with a description and a photo: the portal has them as topic and avatar.
    let team = post(
        &tg,
        "/control/channels",
        json!({"creator": bob, "title": "Climbers", "members": [ada], "about": "Weekend plans",
               "photo": b64(&picture(1))}),
    )
    .await["id"]
        .as_i64()
        .expect("channel");
    let team_peer = json!({"type": "channel", "id": team});
    post(
        &tg,
        "/control/send",
        json!({"from": bob, "peer": team_peer, "text": "hello climbers"}),
    )
    .await;
    let team_room = user.wait_portals(1, &room).await[0].clone();
    crate::common::poll(
        "the supergroup's about as the topic",
        async || state_of(&user, &team_room, "m.room.topic", "").await,
        |t| t["topic"] == "Weekend plans",
    )
    .await;
    wait_avatar(&user, &team_room, "the supergroup's photo", &picture(1)).await;

    // Bob changes the photo (a service message) and the about text (updateChannel).
    post(
        &tg,
        "/control/service",
        json!({"from": bob, "peer": team_peer, "action": "edit_photo", "photo": b64(&picture(2))}),
    )
    .await;
    user.wait_event(&team_room, "the photo change line", |e| {
        e["content"]["body"] == "changed the group photo"
    })
    .await;
    wait_avatar(&user, &team_room, "the new photo", &picture(2)).await;
    post(
        &tg,
        "/control/about",
        json!({"peer": team_peer, "about": "Sunday at the crag"}),
    )
    .await;
    crate::common::poll(
        "the new about",
        async || state_of(&user, &team_room, "m.room.topic", "").await,
        |t| t["topic"] == "Sunday at the crag",
    )
    .await;
    // The rename keeps topic and avatar (the chat is read again, not half-known).
    post(
        &tg,
        "/control/service",
        json!({"from": bob, "peer": team_peer, "action": "edit_title", "title": "Crag crew"}),
    )
    .await;
    crate::common::poll(
        "the renamed room",
        async || json!(user.room_name(&team_room).await),
        |n| n == "Crag crew",
    )
    .await;
    assert_eq!(
        state_of(&user, &team_room, "m.room.topic", "").await["topic"],
        "Sunday at the crag"
    );
    wait_avatar(&user, &team_room, "the photo kept", &picture(2)).await;

    // A basic group the same way; removing its photo removes the room's avatar.
    let basic = post(
        &tg,
        "/control/chats",
        json!({"creator": bob, "title": "Flatmates", "members": [ada], "about": "Bills and chores",
               "photo": b64(&picture(3))}),
    )
    .await["id"]
        .as_i64()
        .expect("chat");
    let basic_peer = json!({"type": "chat", "id": basic});
    post(
        &tg,
        "/control/send",
        json!({"from": bob, "peer": basic_peer, "text": "rent is due"}),
    )
    .await;
    let basic_room = user
        .wait_portals(2, &room)
        .await
        .into_iter()
        .find(|r| *r != team_room)
        .expect("the basic group's portal");
    crate::common::poll(
        "the basic group's about",
        async || state_of(&user, &basic_room, "m.room.topic", "").await,
        |t| t["topic"] == "Bills and chores",
    )
    .await;
    wait_avatar(&user, &basic_room, "the basic group's photo", &picture(3)).await;
    post(
        &tg,
        "/control/service",
        json!({"from": bob, "peer": basic_peer, "action": "delete_photo"}),
    )
    .await;
    crate::common::poll(
        "the avatar removed",
        async || state_of(&user, &basic_room, "m.room.avatar", "").await,
        |a| !a.is_null() && a["url"].is_null(),
    )
    .await;
    post(
        &tg,
        "/control/about",
        json!({"peer": basic_peer, "about": "Chores only"}),
    )
    .await;
    crate::common::poll(
        "the basic group's new about",
        async || state_of(&user, &basic_room, "m.room.topic", "").await,
        |t| t["topic"] == "Chores only",
    )
    .await;
}

both_backends!(group_about_and_photo);

async fn group_changes_from_matrix(backend: Backend) {
    let slot = Slot::claim();
    let sim = Sim::start().await;
    let tg = TelegramServer::start().await.expect("telegram simulator");
    let (ada, bob) = ada_and_bob(&tg, json!({})).await;
    let carol = post(&tg, "/control/users", json!({"first_name": "Carol"})).await["id"]
        .as_i64()
        .expect("carol");
    let _ferry = start_ferry(&slot, backend, &sim, &tg).await;
    let bot = slot.bot();
    let user = User::register("tgadmin").await;
    let room = login_by_phone(&user, &bot, "+447700900123").await;
    let ghost = |id: i64| format!("@{}telegram_{id}:localhost", slot.prefix);

    // Ada administers this supergroup: what the room changes, Telegram changes.
    let crew = post(
        &tg,
        "/control/channels",
        json!({"creator": bob, "title": "Crew", "members": [ada, carol], "admins": [ada]}),
    )
    .await["id"]
        .as_i64()
        .expect("channel");
    post(
        &tg,
        "/control/send",
        json!({"from": carol, "peer": {"type": "channel", "id": crew}, "text": "crew here"}),
    )
    .await;
    let crew_room = user.wait_portals(1, &room).await[0].clone();
    user.wait_members(&crew_room, "carol's ghost", |m| m.contains(&ghost(carol)))
        .await;
    let state_path = |kind: &str| {
        format!(
            "/_matrix/client/v3/rooms/{}/state/{kind}/",
            crate::common::enc(&crew_room)
        )
    };
    user.put(
        &state_path("m.room.name"),
        json!({"name": "Crew of the Matrix"}),
    )
    .await;
    user.put(
        &state_path("m.room.topic"),
        json!({"topic": "Set from Matrix"}),
    )
    .await;
    let mxc = user.upload("image/png", picture(7)).await;
    user.put(&state_path("m.room.avatar"), json!({"url": mxc}))
        .await;
    crate::common::poll(
        "the supergroup's details changed on Telegram",
        async || chat_on_telegram(&tg, "channel", crew).await,
        |c| {
            c["title"] == "Crew of the Matrix"
                && c["about"] == "Set from Matrix"
                && c["photo"].is_string()
        },
    )
    .await;
    use base64::Engine as _;
    let photo = chat_on_telegram(&tg, "channel", crew).await["photo"]
        .as_str()
        .map(|p| {
            base64::engine::general_purpose::STANDARD
                .decode(p)
                .expect("base64")
        })
        .expect("photo");
    assert_eq!(photo, picture(7));
    // Bob sees the rename as Telegram shows it: a service message from Ada.
    let on_telegram = control(
        &tg,
        Method::GET,
        &format!("/control/messages?owner={bob}&peer_type=channel&peer_id={crew}"),
        None,
    )
    .await;
    assert!(
        on_telegram
            .as_array()
            .is_some_and(|ms| ms.iter().any(|m| m["service"] == true && m["from"] == ada)),
        "{on_telegram}"
    );

    // Kicking Carol's ghost removes Carol; inviting it back adds her.
    user.call(
        Method::POST,
        &format!(
            "/_matrix/client/v3/rooms/{}/kick",
            crate::common::enc(&crew_room)
        ),
        Some(json!({"user_id": ghost(carol), "reason": "bye"})),
    )
    .await;
    crate::common::poll(
        "carol removed on Telegram",
        async || chat_on_telegram(&tg, "channel", crew).await,
        |c| {
            c["members"]
                .as_array()
                .is_some_and(|m| !m.contains(&json!(carol)))
        },
    )
    .await;
    user.call(
        Method::POST,
        &format!(
            "/_matrix/client/v3/rooms/{}/invite",
            crate::common::enc(&crew_room)
        ),
        Some(json!({"user_id": ghost(carol)})),
    )
    .await;
    crate::common::poll(
        "carol added back on Telegram",
        async || chat_on_telegram(&tg, "channel", crew).await,
        |c| {
            c["members"]
                .as_array()
                .is_some_and(|m| m.contains(&json!(carol)))
        },
    )
    .await;
    user.wait_members(&crew_room, "carol's ghost back", |m| {
        m.contains(&ghost(carol))
    })
    .await;

    // Here Ada is no admin: Telegram refuses, the room says so and its name is set back.
    let others = post(
        &tg,
        "/control/channels",
        json!({"creator": bob, "title": "Others", "members": [ada, carol]}),
    )
    .await["id"]
        .as_i64()
        .expect("channel");
    post(
        &tg,
        "/control/send",
        json!({"from": carol, "peer": {"type": "channel", "id": others}, "text": "not yours"}),
    )
    .await;
    let others_room = user
        .wait_portals(2, &room)
        .await
        .into_iter()
        .find(|r| *r != crew_room)
        .expect("the second portal");
    user.wait_members(&others_room, "carol's ghost", |m| m.contains(&ghost(carol)))
        .await;
    user.put(
        &format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.name/",
            crate::common::enc(&others_room)
        ),
        json!({"name": "Mine now"}),
    )
    .await;
    user.wait_event(&others_room, "the refused rename", |e| {
        e["content"]["body"].as_str().is_some_and(|b| {
            b.contains("not bridged")
                && b.contains("only the group's admins")
                && b.contains("the room's name was set back")
        })
    })
    .await;
    crate::common::poll(
        "the room's name set back",
        async || json!(user.room_name(&others_room).await),
        |n| n == "Others",
    )
    .await;
    user.call(
        Method::POST,
        &format!(
            "/_matrix/client/v3/rooms/{}/kick",
            crate::common::enc(&others_room)
        ),
        Some(json!({"user_id": ghost(carol)})),
    )
    .await;
    user.wait_event(&others_room, "the refused removal", |e| {
        e["content"]["body"].as_str().is_some_and(|b| {
            b.contains(&format!("The removal of {}", ghost(carol)))
                && b.contains("only the group's admins")
        })
    })
    .await;
    let still = chat_on_telegram(&tg, "channel", others).await;
    assert_eq!(still["title"], "Others");
    assert!(
        still["members"]
            .as_array()
            .is_some_and(|m| m.contains(&json!(carol))),
        "{still}"
    );
}

both_backends!(group_changes_from_matrix);

async fn reactions_and_polls_survive_a_restart(backend: Backend) {
    let slot = Slot::claim();
    let sim = Sim::start().await;
    let tg = TelegramServer::start().await.expect("telegram simulator");
    let (ada, bob) = ada_and_bob(&tg, json!({})).await;
    let mut ferry = start_ferry(&slot, backend, &sim, &tg).await;
    let bot = slot.bot();
    let user = User::register("tgrecall").await;
    let room = login_by_phone(&user, &bot, "+447700900123").await;
    let to_ada = json!({"type": "user", "id": ada});

    // Bob writes, reacts to his message and posts a poll; all bridged.
    let text = post(
        &tg,
        "/control/send",
        json!({"from": bob, "peer": to_ada, "text": "who is coming?"}),
    )
    .await;
    let portal = user.wait_portals(1, &room).await[0].clone();
    user.wait_message(&portal, "bob's message", |_, b| b == "who is coming?")
        .await;
    post(
        &tg,
        "/control/react",
        json!({"from": bob, "peer": to_ada, "id": text["id"], "emoji": "👍"}),
    )
    .await;
    let reaction_id = user
        .wait_event(&portal, "the reaction", |e| {
            e["type"] == "m.reaction" && e["content"]["m.relates_to"]["key"] == "👍"
        })
        .await["event_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let poll = post(
        &tg,
        "/control/send",
        json!({"from": bob, "peer": to_ada, "media": {"kind": "poll", "question": "When?",
               "answers": ["Friday", "Saturday"], "votes": [1, 0]}}),
    )
    .await;
    let poll_event = user
        .wait_event(&portal, "the poll", |e| {
            e["content"]["body"] == "📊 Poll: When?\n1. Friday — 1 vote\n2. Saturday — 0 votes"
        })
        .await["event_id"]
        .as_str()
        .expect("id")
        .to_owned();

    // ferry restarts: what it knew of the reaction and the poll is still there. Telegram pushes
    // reaction changes only to connected clients (they carry no pts, so no getDifference brings
    // them back): the removal is made once a message shows ferry's new connection is up.
    ferry.kill();
    ferry.spawn().await;
    post(
        &tg,
        "/control/send",
        json!({"from": bob, "peer": to_ada, "text": "back?"}),
    )
    .await;
    user.wait_message(&portal, "the message after the restart", |_, b| {
        b == "back?"
    })
    .await;
    post(
        &tg,
        "/control/react",
        json!({"from": bob, "peer": to_ada, "id": text["id"], "emoji": null}),
    )
    .await;
    user.wait_event(&portal, "the reaction's removal after the restart", |e| {
        e["event_id"] == reaction_id.as_str() && e["unsigned"]["redacted_because"].is_object()
    })
    .await;
    post(
        &tg,
        "/control/vote",
        json!({"from": bob, "peer": to_ada, "id": poll["id"], "option": 1}),
    )
    .await;
    user.wait_event(&portal, "the vote after the restart", |e| {
        e["content"]["m.relates_to"]["event_id"] == poll_event.as_str()
            && e["content"]["m.new_content"]["body"]
                == "📊 Poll: When?\n1. Friday — 1 vote\n2. Saturday — 1 vote"
    })
    .await;
}

both_backends!(reactions_and_polls_survive_a_restart);
