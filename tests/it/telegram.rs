//! Telegram through ferry's grammers client against testnet's MTProto simulator
//! (testnet/TELEGRAM_PROTOCOL.md): login from the management room by phone + code + two-step
//! password, messages both ways with formatting, replies, edits, reactions (and their removal),
//! deletes, and a restart of ferry while Telegram messages arrive (all bridged once).

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
    let mut key = [0u8; 256];
    rand::rng().fill_bytes(&mut key);
    tg.add_auth_key(key);
    let mut ferry = Ferry::start(slot, backend, &sim.url()).await;
    ferry.kill();
    let config = std::fs::read_to_string(&ferry.config_path).expect("config");
    let telegram = format!(
        "  telegram:\n    enabled: true\n    api_id: 611\n    api_hash: \"0123456789abcdef0123456789abcdef\"\n    ghost_prefix: {}telegram_\n    dc_address: \"{}\"\n    dc_auth_key: \"{}\"\nmetrics:\n",
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
    let room = user.create_dm(&bot).await;
    user.wait_message(&room, "welcome", |s, b| {
        s == bot && b.contains("management room")
    })
    .await;
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
    for i in 1..=3 {
        post(
            &tg,
            "/control/send",
            json!({"from": bob, "peer": to_ada, "text": format!("while down {i}")}),
        )
        .await;
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
    tokio::time::sleep(Duration::from_secs(2)).await;
    for body in [
        "while down 1",
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
