//! WhatsApp through ferry's whatsapp-rust client against testnet's WhatsApp simulator
//! (testnet/WHATSAPP_PROTOCOL.md), whose contacts are real whatsapp-rust clients with their own
//! Signal sessions: linking from the management room by QR code and by pairing code; texts both
//! ways with formatting; replies, edits, reactions (and removal) and revokes from WhatsApp;
//! replies, reactions, edits and redactions from Matrix; read receipts; a group with its members;
//! the history WhatsApp sends after linking; a contact switching from phone number to LID
//! without a second portal; media both ways; typing and read receipts both ways; a redaction
//! from Matrix; a restart while messages arrive (each bridged once); every media kind
//! (voice notes, audio, documents, video, stickers) with locations and contact cards both ways
//! where Matrix has a form for them; a contact's presence; a group renamed and joined after its
//! portal exists; and mentions both ways.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use testnet::whatsapp::WhatsAppServer;

use crate::{
    both_backends,
    common::{Backend, Ferry, Sim, Slot, User, http, poll},
};

pub(crate) const USER: &str = "5511900000001";
pub(crate) const ALICE: &str = "5511900000002";
pub(crate) const BOB: &str = "5511900000003";
/// The simulator serves any version; the client must not ask web.whatsapp.com offline.
const VERSION: &str = "2.3000.1020000000";

pub(crate) async fn control(
    wa: &WhatsAppServer,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let mut request = http().request(method, format!("{}{path}", wa.control_url()));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("whatsapp control");
    let status = response.status();
    let value = response.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{path}: {status} {value}");
    value
}

pub(crate) async fn post(wa: &WhatsAppServer, path: &str, body: Value) -> Value {
    control(wa, Method::POST, path, Some(body)).await
}

/// Waits until contact `to` has received (decrypted) a message satisfying `pred`.
pub(crate) async fn wait_received(
    wa: &WhatsAppServer,
    to: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    poll(
        what,
        async || {
            let got = control(wa, Method::GET, &format!("/control/received?to={to}"), None).await;
            got["messages"]
                .as_array()
                .and_then(|m| m.iter().find(|m| pred(m)).cloned())
                .unwrap_or(Value::Null)
        },
        |v| !v.is_null(),
    )
    .await
}

pub(crate) async fn received_count(wa: &WhatsAppServer, to: &str, text: &str) -> usize {
    let got = control(wa, Method::GET, &format!("/control/received?to={to}"), None).await;
    got["messages"]
        .as_array()
        .map(|m| m.iter().filter(|m| m["text"] == text).count())
        .unwrap_or(0)
}

/// A contact of the simulator: `{phone, name}` (add `lid` where the scenario needs one).
pub(crate) fn contact(phone: &str, name: &str) -> Value {
    json!({ "phone": phone, "name": name })
}

/// One WhatsApp scenario's world: the simulator with the user's account ("Bridge User") and its
/// contacts, ferry running against it on `backend`, and a Matrix user with the management room.
pub(crate) struct Scenario {
    pub slot: Slot,
    pub sim: Sim,
    pub wa: WhatsAppServer,
    pub ferry: Ferry,
    pub bot: String,
    pub user: User,
    pub room: String,
}

impl Scenario {
    /// The world before linking; `settings` are more `networks.whatsapp` lines (see
    /// [`start_ferry_with`]).
    pub(crate) async fn start(
        backend: Backend,
        localpart: &str,
        contacts: &[Value],
        settings: &str,
    ) -> Self {
        let slot = Slot::claim();
        let sim = Sim::start().await;
        let wa = WhatsAppServer::start().await.expect("whatsapp simulator");
        post(
            &wa,
            "/control/accounts",
            json!({ "phone": USER, "name": "Bridge User" }),
        )
        .await;
        for contact in contacts {
            post(&wa, "/control/contacts", contact.clone()).await;
        }
        let ferry = start_ferry_with(&slot, backend, &sim, &wa, settings).await;
        let bot = slot.bot();
        let user = User::register(localpart).await;
        let room = user.open_management_room(&bot).await;
        Self {
            slot,
            sim,
            wa,
            ferry,
            bot,
            user,
            room,
        }
    }

    /// The world with the user's WhatsApp linked by QR code.
    pub(crate) async fn linked(backend: Backend, localpart: &str, contacts: &[Value]) -> Self {
        Self::linked_with(backend, localpart, contacts, "").await
    }

    /// [`Scenario::linked`] with more `networks.whatsapp` settings.
    pub(crate) async fn linked_with(
        backend: Backend,
        localpart: &str,
        contacts: &[Value],
        settings: &str,
    ) -> Self {
        let world = Self::start(backend, localpart, contacts, settings).await;
        qr_login(&world.user, &world.room, &world.bot, &world.wa).await;
        world
    }
}

/// Starts ferry with WhatsApp against `wa`, with more `networks.whatsapp` settings (YAML lines
/// indented by four spaces).
pub(crate) async fn start_ferry_with(
    slot: &Slot,
    backend: Backend,
    sim: &Sim,
    wa: &WhatsAppServer,
    settings: &str,
) -> Ferry {
    let extra = format!(
        "  whatsapp:\n    enabled: true\n    ghost_prefix: {}whatsapp_\n    ws_url: \"{}\"\n    version: \"{VERSION}\"\n    history_pace_ms: 10\n    media_http_host: \"{}\"\n{settings}encryption:\n  pickle_key: \"wa-test-pickle-key-0123456789\"\n",
        slot.prefix,
        wa.ws_url(),
        wa.chat_addr()
    );
    Ferry::start_configured(slot, backend, &sim.url(), None, &extra).await
}

pub(crate) fn ghost(slot: &Slot, phone: &str) -> String {
    format!("@{}whatsapp_{phone}:localhost", slot.prefix)
}

/// `login whatsapp qr` in the management room; the simulated phone scans the code the bot
/// shows (as an image, with its text for copying). Returns when the bot confirms the login.
pub(crate) async fn qr_login(user: &User, room: &str, bot: &str, wa: &WhatsAppServer) {
    user.send_text(room, "login whatsapp qr").await;
    let image = user
        .wait_event(room, "the QR code image", |e| {
            e["content"]["msgtype"] == "m.image"
        })
        .await;
    assert_eq!(image["content"]["info"]["mimetype"], "image/png");
    let png = user
        .download(image["content"]["url"].as_str().expect("url"))
        .await;
    assert_eq!(&png[..4], b"\x89PNG");
    let (_, text) = user
        .wait_message(room, "the QR code text", |s, b| {
            s == bot && b.contains("Linked devices")
        })
        .await;
    let code = text
        .lines()
        .last()
        .expect("the code line")
        .trim()
        .to_owned();
    assert!(code.contains(','), "a WhatsApp QR payload: {code}");
    post(
        wa,
        "/control/qr/scan",
        json!({ "phone": USER, "code": code }),
    )
    .await;
    user.wait_message(room, "the login", |s, b| {
        s == bot && b.contains("Logged in to WhatsApp")
    })
    .await;
}

pub(crate) async fn event_id(
    user: &User,
    room: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> String {
    user.wait_event(room, what, pred).await["event_id"]
        .as_str()
        .expect("event id")
        .to_owned()
}

async fn qr_login_messages_and_restart(backend: Backend) {
    let Scenario {
        slot,
        sim: _sim,
        wa,
        mut ferry,
        bot,
        user,
        room,
    } = Scenario::linked(backend, "wa", &[contact(ALICE, "Alice")]).await;
    let devices = control(
        &wa,
        Method::GET,
        &format!("/control/devices?phone={USER}"),
        None,
    )
    .await;
    assert!(
        devices["devices"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["device"] == 1 && d["online"] == true)),
        "ferry is a linked device: {devices}"
    );

    // WhatsApp -> Matrix: Alice's formatted text opens a DM portal, from her ghost.
    let first = post(
        &wa,
        "/control/send",
        json!({ "from": ALICE, "to": USER, "text": "hello *from* WhatsApp" }),
    )
    .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let portal = user.wait_portals(1, &room).await[0].clone();
    let event = user
        .wait_event(&portal, "Alice's message", |e| {
            e["content"]["body"] == "hello from WhatsApp"
        })
        .await;
    assert_eq!(event["sender"], ghost(&slot, ALICE));
    let html = event["content"]["formatted_body"]
        .as_str()
        .unwrap_or_default();
    assert!(html.contains("<strong>from</strong>"), "{html}");
    let alice_event = event["event_id"].as_str().expect("id").to_owned();

    // Matrix -> WhatsApp: a formatted reply, decrypted by Alice's client.
    user.send_event(
        &portal,
        "m.room.message",
        json!({"msgtype": "m.text", "body": "answer", "format": "org.matrix.custom.html",
               "formatted_body": "<em>answer</em>",
               "m.relates_to": {"m.in_reply_to": {"event_id": alice_event}}}),
    )
    .await;
    let reply = wait_received(&wa, ALICE, "the reply on WhatsApp", |m| {
        m["text"] == "_answer_"
    })
    .await;
    let context = &reply["message"]["extended_text_message"]["context_info"];
    assert_eq!(context["stanza_id"], first.as_str(), "{reply}");

    // WhatsApp -> Matrix: reply, edit, reaction and its removal, revoke.
    post(
        &wa,
        "/control/send",
        json!({ "from": ALICE, "to": USER, "kind": "reply", "text": "replying", "target": first,
                "target_from_me": false, "target_sender": ALICE, "quoted_text": "hello" }),
    )
    .await;
    let quoting = user
        .wait_event(&portal, "Alice's reply", |e| {
            e["content"]["body"] == "replying"
        })
        .await;
    assert_eq!(
        quoting["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        alice_event.as_str()
    );
    post(
        &wa,
        "/control/send",
        json!({ "from": ALICE, "to": USER, "kind": "edit", "target": first, "text": "hello (edited)" }),
    )
    .await;
    user.wait_event(&portal, "the edit", |e| {
        e["content"]["m.relates_to"]["rel_type"] == "m.replace"
            && e["content"]["m.relates_to"]["event_id"] == alice_event.as_str()
            && e["content"]["m.new_content"]["body"] == "hello (edited)"
    })
    .await;
    post(
        &wa,
        "/control/send",
        json!({ "from": ALICE, "to": USER, "kind": "reaction", "target": first,
                "target_from_me": false, "emoji": "🎉" }),
    )
    .await;
    let reaction_id = event_id(&user, &portal, "the reaction", |e| {
        e["type"] == "m.reaction" && e["content"]["m.relates_to"]["key"] == "🎉"
    })
    .await;
    post(
        &wa,
        "/control/send",
        json!({ "from": ALICE, "to": USER, "kind": "reaction", "target": first,
                "target_from_me": false, "emoji": "" }),
    )
    .await;
    user.wait_event(&portal, "the reaction's removal", |e| {
        e["event_id"] == reaction_id.as_str() && e["unsigned"]["redacted_because"].is_object()
    })
    .await;
    post(
        &wa,
        "/control/send",
        json!({ "from": ALICE, "to": USER, "kind": "revoke", "target": first }),
    )
    .await;
    user.wait_event(&portal, "the revoke", |e| {
        e["event_id"] == alice_event.as_str() && e["unsigned"]["redacted_because"].is_object()
    })
    .await;

    // Matrix -> WhatsApp: a reaction to Alice's message, an edit and a redaction of ours.
    let second = post(
        &wa,
        "/control/send",
        json!({ "from": ALICE, "to": USER, "text": "second" }),
    )
    .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let second_event = event_id(&user, &portal, "the second message", |e| {
        e["content"]["body"] == "second"
    })
    .await;
    user.send_event(
        &portal,
        "m.reaction",
        json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": second_event, "key": "👍"}}),
    )
    .await;
    let reacted = wait_received(&wa, ALICE, "the reaction on WhatsApp", |m| {
        m["message"]["reaction_message"]["text"] == "👍"
    })
    .await;
    assert_eq!(
        reacted["message"]["reaction_message"]["key"]["id"],
        second.as_str()
    );
    let mine = user.send_text(&portal, "typo here").await;
    wait_received(&wa, ALICE, "our message", |m| m["text"] == "typo here").await;
    user.send_event(
        &portal,
        "m.room.message",
        json!({"msgtype": "m.text", "body": "* fixed here",
               "m.new_content": {"msgtype": "m.text", "body": "fixed here"},
               "m.relates_to": {"rel_type": "m.replace", "event_id": mine}}),
    )
    .await;
    wait_received(&wa, ALICE, "our edit", |m| m["text"] == "fixed here").await;

    // Read receipt: Alice reads our message; the user's Matrix side shows her receipt.
    post(
        &wa,
        "/control/receipt",
        json!({ "from": ALICE, "chat": USER, "ids": [reply["id"]] }),
    )
    .await;

    // A restart while Alice writes: every message arrives once.
    ferry.kill();
    for i in 1..=3 {
        post(
            &wa,
            "/control/send",
            json!({ "from": ALICE, "to": USER, "text": format!("while down {i}") }),
        )
        .await;
    }
    ferry.spawn().await;
    for i in 1..=3 {
        let body = format!("while down {i}");
        user.wait_message(&portal, &body, |_, b| b == body).await;
    }
    post(
        &wa,
        "/control/send",
        json!({ "from": ALICE, "to": USER, "text": "after the restart" }),
    )
    .await;
    user.wait_message(&portal, "the live message", |_, b| b == "after the restart")
        .await;
    user.send_text(&portal, "still linked").await;
    wait_received(&wa, ALICE, "a send after the restart", |m| {
        m["text"] == "still linked"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for body in [
        "while down 1",
        "while down 2",
        "while down 3",
        "after the restart",
        "second",
    ] {
        let n = user
            .messages(&portal)
            .await
            .iter()
            .filter(|(_, _, b)| b == body)
            .count();
        assert_eq!(n, 1, "{body}");
    }
    assert_eq!(
        received_count(&wa, ALICE, "_answer_").await,
        1,
        "the reply went once"
    );
    // Still one portal with Alice.
    assert_eq!(user.wait_portals(1, &room).await.len(), 1);
    assert!(
        !ferry.log().contains("wa-test-pickle-key"),
        "the pickle key reached the log"
    );

    // Logging out unlinks the device on WhatsApp and forgets the login.
    let answer = user
        .command(&room, &bot, "logout whatsapp", "Logged out of whatsapp")
        .await;
    assert!(!answer.contains("failed"), "{answer}");
    poll(
        "ferry's device gone from the phone's list",
        async || {
            control(
                &wa,
                Method::GET,
                &format!("/control/devices?phone={USER}"),
                None,
            )
            .await
        },
        |devices| {
            devices["devices"]
                .as_array()
                .is_some_and(|d| !d.iter().any(|d| d["device"] == 1))
        },
    )
    .await;
    user.command(&room, &bot, "list-logins", "You have no logins")
        .await;
}

both_backends!(qr_login_messages_and_restart);

async fn pair_code_login(backend: Backend) {
    let Scenario {
        slot,
        sim: _sim,
        wa,
        ferry: _ferry,
        bot,
        user,
        room,
    } = Scenario::start(backend, "wapc", &[contact(ALICE, "Alice")], "").await;
    user.send_text(&room, "login whatsapp phone").await;
    user.wait_message(&room, "the phone prompt", |s, b| {
        s == bot && b.contains("phone number in international format")
    })
    .await;
    user.send_text(&room, "+55 11 90000-0001").await;
    let (_, text) = user
        .wait_message(&room, "the pairing code", |s, b| {
            s == bot && b.contains("Link with phone number instead")
        })
        .await;
    let code = text
        .lines()
        .last()
        .expect("the code line")
        .trim()
        .to_owned();
    assert_eq!(code.chars().count(), 8, "an 8-character code: {text}");
    post(
        &wa,
        "/control/pair_code",
        json!({ "phone": USER, "code": code }),
    )
    .await;
    user.wait_message(&room, "the login", |s, b| {
        s == bot && b.contains("Logged in to WhatsApp") && b.contains(USER)
    })
    .await;
    post(
        &wa,
        "/control/send",
        json!({ "from": ALICE, "to": USER, "text": "hello after a pairing code" }),
    )
    .await;
    let portal = user.wait_portals(1, &room).await[0].clone();
    user.wait_message(&portal, "Alice's message", |s, b| {
        s == ghost(&slot, ALICE) && b == "hello after a pairing code"
    })
    .await;
}

both_backends!(pair_code_login);

async fn group_history_and_lid_switch(backend: Backend) {
    let Scenario {
        slot,
        sim: _sim,
        wa,
        ferry: _ferry,
        bot: _bot,
        user,
        room,
    } = Scenario::linked(
        backend,
        "wagrp",
        &[
            json!({ "phone": ALICE, "name": "Alice", "lid": "211111111111111" }),
            contact(BOB, "Bob"),
        ],
    )
    .await;

    // History after linking: Alice's conversation, with what both sides wrote.
    post(
        &wa,
        "/control/history_sync",
        json!({ "phone": USER, "conversations": [{ "chat": ALICE, "name": "Alice", "messages": [
            { "id": "HIST1", "text": "an old hello" },
            { "id": "HIST2", "text": "an old answer", "from_me": true },
        ]}]}),
    )
    .await;
    let dm = user.wait_portals(1, &room).await[0].clone();
    user.wait_message(&dm, "the old hello", |s, b| {
        s == ghost(&slot, ALICE) && b == "an old hello"
    })
    .await;
    user.wait_message(&dm, "the old answer", |_, b| b == "an old answer")
        .await;

    // The LID switch: Alice's next messages come from her LID; same ghost, same portal.
    post(
        &wa,
        "/control/send",
        json!({ "from": ALICE, "to": USER, "text": "by phone" }),
    )
    .await;
    user.wait_message(&dm, "by phone", |s, b| {
        s == ghost(&slot, ALICE) && b == "by phone"
    })
    .await;
    post(&wa, "/control/lid_switch", json!({ "phone": ALICE })).await;
    post(
        &wa,
        "/control/send",
        json!({ "from": ALICE, "to": USER, "text": "by lid" }),
    )
    .await;
    user.wait_message(&dm, "by lid", |s, b| {
        s == ghost(&slot, ALICE) && b == "by lid"
    })
    .await;

    // A group: name, members, messages both ways.
    let group = post(
        &wa,
        "/control/groups",
        json!({ "subject": "Test group", "creator": BOB, "members": [USER, ALICE] }),
    )
    .await;
    let gjid = group["jid"].as_str().expect("group jid").to_owned();
    post(
        &wa,
        "/control/send",
        json!({ "from": BOB, "to": gjid, "text": "hello group" }),
    )
    .await;
    let rooms = user.wait_portals(2, &room).await;
    assert_eq!(
        rooms.len(),
        2,
        "one DM and one group, no second DM after the LID switch"
    );
    let group_room = rooms
        .into_iter()
        .find(|r| *r != dm)
        .expect("the group portal");
    user.wait_message(&group_room, "Bob's group message", |s, b| {
        s == ghost(&slot, BOB) && b == "hello group"
    })
    .await;
    assert_eq!(
        user.room_name(&group_room).await.as_deref(),
        Some("Test group")
    );
    user.wait_members(&group_room, "Alice and Bob", |members| {
        members.contains(&ghost(&slot, ALICE)) && members.contains(&ghost(&slot, BOB))
    })
    .await;
    // The group's creator is its admin: power level 50.
    let power = user
        .call(
            Method::GET,
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.power_levels/",
                crate::common::enc(&group_room)
            ),
            None,
        )
        .await;
    assert_eq!(power["users"][ghost(&slot, BOB).as_str()], 50, "{power}");
    user.send_text(&group_room, "hello from Matrix").await;
    wait_received(&wa, BOB, "the group message at Bob", |m| {
        m["text"] == "hello from Matrix" && m["is_group"] == true
    })
    .await;
    wait_received(&wa, ALICE, "the group message at Alice", |m| {
        m["text"] == "hello from Matrix"
    })
    .await;
    // Bob removes Alice: her ghost leaves the room.
    post(
        &wa,
        "/control/groups/members",
        json!({ "group": gjid, "author": BOB, "remove": [ALICE] }),
    )
    .await;
    user.wait_members(&group_room, "Alice gone", |members| {
        !members.contains(&ghost(&slot, ALICE)) && members.contains(&ghost(&slot, BOB))
    })
    .await;
}

both_backends!(group_history_and_lid_switch);

async fn media_both_ways(backend: Backend) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let Scenario {
        slot,
        sim: _sim,
        wa,
        ferry: _ferry,
        bot: _bot,
        user,
        room,
    } = Scenario::linked(backend, "wamedia", &[contact(ALICE, "Alice")]).await;

    // WhatsApp -> Matrix: an image with a caption, its bytes through WhatsApp's encryption.
    let picture: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
    post(
        &wa,
        "/control/send",
        json!({ "from": ALICE, "to": USER, "kind": "image", "text": "a picture",
                "mimetype": "image/png", "data_base64": b64.encode(&picture) }),
    )
    .await;
    let portal = user.wait_portals(1, &room).await[0].clone();
    let image = user
        .wait_event(&portal, "the image", |e| {
            e["content"]["msgtype"] == "m.image"
        })
        .await;
    assert_eq!(image["sender"], ghost(&slot, ALICE));
    assert_eq!(image["content"]["info"]["mimetype"], "image/png");
    let got = user
        .download(image["content"]["url"].as_str().expect("mxc"))
        .await;
    assert_eq!(got, picture, "the image's bytes");
    user.wait_message(&portal, "the caption", |_, b| b.contains("a picture"))
        .await;

    // Matrix -> WhatsApp: a file, decrypted by Alice's client.
    let doc = b"%PDF-1.4 not really a pdf".to_vec();
    let mxc = user.upload("application/pdf", doc.clone()).await;
    user.send_event(
        &portal,
        "m.room.message",
        json!({"msgtype": "m.file", "body": "report.pdf", "url": mxc,
               "info": {"mimetype": "application/pdf", "size": doc.len()}}),
    )
    .await;
    let sent = wait_received(&wa, ALICE, "the document on WhatsApp", |m| {
        m["message"]["document_message"].is_object()
    })
    .await;
    assert_eq!(
        sent["message"]["document_message"]["file_name"], "report.pdf",
        "{sent}"
    );
    let id = sent["id"].as_str().expect("id");
    let media = control(
        &wa,
        Method::GET,
        &format!("/control/media?to={ALICE}&id={id}"),
        None,
    )
    .await;
    let bytes = b64
        .decode(media["data_base64"].as_str().expect("data"))
        .expect("base64");
    assert_eq!(bytes, doc, "the document's bytes at Alice");

    // Matrix -> WhatsApp: a voice message (MSC3245) becomes a voice note WhatsApp plays as one.
    let ogg = b"OggS fake opus voice".to_vec();
    let mxc = user.upload("audio/ogg", ogg.clone()).await;
    user.send_event(
        &portal,
        "m.room.message",
        json!({"msgtype": "m.audio", "body": "Voice message", "url": mxc,
               "info": {"mimetype": "audio/ogg", "size": ogg.len(), "duration": 3000},
               "org.matrix.msc1767.audio": {"duration": 3000, "waveform": [0, 512, 1024]},
               "org.matrix.msc3245.voice": {}}),
    )
    .await;
    let voice = wait_received(&wa, ALICE, "the voice note on WhatsApp", |m| {
        m["message"]["audio_message"].is_object()
    })
    .await;
    let audio = &voice["message"]["audio_message"];
    assert_eq!(audio["ptt"], true, "{voice}");
    assert_eq!(audio["seconds"], 3, "{voice}");
    assert_eq!(audio["mimetype"], "audio/ogg; codecs=opus", "{voice}");
    assert!(
        audio["waveform"].is_string() || audio["waveform"].is_array(),
        "{voice}"
    );
}

both_backends!(media_both_ways);

async fn typing_receipts_and_redactions(backend: Backend) {
    use crate::common::enc;
    let Scenario {
        slot,
        sim: _sim,
        wa,
        ferry: _ferry,
        bot: _bot,
        user,
        room,
    } = Scenario::linked(backend, "watyping", &[contact(ALICE, "Alice")]).await;
    let first = post(
        &wa,
        "/control/send",
        json!({ "from": ALICE, "to": USER, "text": "hi" }),
    )
    .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let portal = user.wait_portals(1, &room).await[0].clone();
    let hi = event_id(&user, &portal, "Alice's hi", |e| {
        e["content"]["body"] == "hi"
    })
    .await;
    let alice = ghost(&slot, ALICE);

    // Typing, both ways.
    post(
        &wa,
        "/control/typing",
        json!({ "from": ALICE, "to": USER, "state": "composing" }),
    )
    .await;
    user.wait_ephemeral(&portal, "Alice typing", |e| {
        e["type"] == "m.typing"
            && e["content"]["user_ids"]
                .as_array()
                .is_some_and(|u| u.iter().any(|id| id == alice.as_str()))
    })
    .await;
    user.put(
        &format!(
            "/_matrix/client/v3/rooms/{}/typing/{}",
            enc(&portal),
            enc(&user.user_id)
        ),
        json!({"typing": true, "timeout": 10000}),
    )
    .await;
    poll(
        "typing on WhatsApp",
        async || {
            let seen = control(
                &wa,
                Method::GET,
                &format!("/control/events?to={ALICE}"),
                None,
            )
            .await;
            seen["events"]
                .as_array()
                .and_then(|e| e.iter().find(|e| e["kind"] == "chatstate").cloned())
                .unwrap_or(Value::Null)
        },
        |v| !v.is_null(),
    )
    .await;

    // Read receipts, both ways; delivery receipts as the send status.
    user.call(
        Method::POST,
        &format!(
            "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
            enc(&portal),
            enc(&hi)
        ),
        Some(json!({})),
    )
    .await;
    poll(
        "the read receipt on WhatsApp",
        async || {
            let seen = control(
                &wa,
                Method::GET,
                &format!("/control/receipts?to={ALICE}"),
                None,
            )
            .await;
            seen["receipts"]
                .as_array()
                .and_then(|r| {
                    r.iter()
                        .find(|r| {
                            r["type"] == "read"
                                && r["ids"]
                                    .as_array()
                                    .is_some_and(|i| i.iter().any(|i| i == first.as_str()))
                        })
                        .cloned()
                })
                .unwrap_or(Value::Null)
        },
        |v| !v.is_null(),
    )
    .await;
    let ours = user.send_text(&portal, "did you read this?").await;
    let ours_wa = wait_received(&wa, ALICE, "our text", |m| {
        m["text"] == "did you read this?"
    })
    .await;
    // Alice's phone acknowledged it (a delivery receipt): its send status says delivered to her.
    poll(
        "the delivery in the message's status",
        async || {
            let events = user.events(&portal).await;
            json!(events.iter().any(|e| {
                e["type"] == "com.beeper.message_send_status"
                    && e["content"]["m.relates_to"]["event_id"] == ours.as_str()
                    && e["content"]["status"] == "SUCCESS"
                    && e["content"]["delivered_to_users"] == json!([alice])
            }))
        },
        |found| found == true,
    )
    .await;
    post(
        &wa,
        "/control/receipt",
        json!({ "from": ALICE, "chat": USER, "ids": [ours_wa["id"]] }),
    )
    .await;
    user.wait_ephemeral(&portal, "Alice's read receipt", |e| {
        e["type"] == "m.receipt"
            && e["content"][ours.as_str()]["m.read"][alice.as_str()].is_object()
    })
    .await;

    // A redaction of our message deletes it for everyone on WhatsApp.
    user.call(
        Method::PUT,
        &format!(
            "/_matrix/client/v3/rooms/{}/redact/{}/ferry-test-redact",
            enc(&portal),
            enc(&ours)
        ),
        Some(json!({})),
    )
    .await;
    wait_received(&wa, ALICE, "the revoke on WhatsApp", |m| {
        m["message"]["protocol_message"]["key"]["id"] == ours_wa["id"]
    })
    .await;
}

both_backends!(typing_receipts_and_redactions);

/// Downloads what contact `to` received in message `id`, decrypted by its client.
pub(crate) async fn received_media(wa: &WhatsAppServer, to: &str, id: &str) -> Vec<u8> {
    use base64::Engine as _;
    let media = control(
        wa,
        Method::GET,
        &format!("/control/media?to={to}&id={id}"),
        None,
    )
    .await;
    base64::engine::general_purpose::STANDARD
        .decode(media["data_base64"].as_str().expect("data"))
        .expect("base64")
}

/// Waits for the ghost's presence (`online` / `offline`) as Matrix shows it.
async fn wait_presence(user: &User, ghost: &str, expected: &str) {
    poll(
        &format!("{ghost} {expected}"),
        async || {
            user.call(
                Method::GET,
                &format!(
                    "/_matrix/client/v3/presence/{}/status",
                    crate::common::enc(ghost)
                ),
                None,
            )
            .await
        },
        |p| p["presence"] == expected,
    )
    .await;
}

/// Every media kind, locations and contact cards both ways where Matrix has a form for them,
/// and a contact's presence: what a WhatsApp contact sends is checked in Matrix (kind, bytes,
/// duration, waveform), what Matrix sends is decrypted by the contact's own client.
async fn kinds_both_ways_and_presence(backend: Backend) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let Scenario {
        slot,
        sim: _sim,
        wa,
        ferry: _ferry,
        bot: _bot,
        user,
        room,
    } = Scenario::linked(backend, "wakinds", &[contact(ALICE, "Alice")]).await;
    let alice = ghost(&slot, ALICE);

    // WhatsApp -> Matrix: a voice note (ptt) with its duration and waveform.
    let voice: Vec<u8> = b"OggS voice note from alice"
        .iter()
        .copied()
        .chain((0..3000u32).map(|i| (i % 253) as u8))
        .collect();
    post(
        &wa,
        "/control/send",
        json!({ "from": ALICE, "to": USER, "kind": "audio", "ptt": true, "seconds": 4,
                "waveform": [0, 50, 100], "data_base64": b64.encode(&voice) }),
    )
    .await;
    let portal = user.wait_portals(1, &room).await[0].clone();
    let note = user
        .wait_event(&portal, "the voice note", |e| {
            e["content"]["msgtype"] == "m.audio"
        })
        .await;
    assert_eq!(note["sender"], alice, "{note}");
    let c = &note["content"];
    assert!(c["org.matrix.msc3245.voice"].is_object(), "{note}");
    assert_eq!(c["info"]["duration"], 4000, "{note}");
    assert_eq!(c["info"]["mimetype"], "audio/ogg; codecs=opus", "{note}");
    assert_eq!(
        c["org.matrix.msc1767.audio"]["waveform"],
        json!([0, 512, 1024]),
        "{note}"
    );
    assert_eq!(user.download(c["url"].as_str().expect("mxc")).await, voice);

    // Audio that is not a voice note.
    let song: Vec<u8> = (0..4000u32).map(|i| (i * 3 % 251) as u8).collect();
    post(
        &wa,
        "/control/send",
        json!({ "from": ALICE, "to": USER, "kind": "audio", "seconds": 7,
                "mimetype": "audio/mpeg", "data_base64": b64.encode(&song) }),
    )
    .await;
    let audio = user
        .wait_event(&portal, "the audio", |e| {
            e["content"]["msgtype"] == "m.audio" && e["content"]["info"]["duration"] == 7000
        })
        .await;
    assert!(
        audio["content"].get("org.matrix.msc3245.voice").is_none(),
        "{audio}"
    );
    assert_eq!(audio["content"]["info"]["mimetype"], "audio/mpeg");
    let url = audio["content"]["url"].as_str().expect("mxc");
    assert_eq!(user.download(url).await, song);

    // A document with its file name.
    let notes = b"meeting notes\nline two\n".to_vec();
    post(
        &wa,
        "/control/send",
        json!({ "from": ALICE, "to": USER, "kind": "document", "file_name": "notes.txt",
                "mimetype": "text/plain", "data_base64": b64.encode(&notes) }),
    )
    .await;
    let file = user
        .wait_event(&portal, "the file", |e| e["content"]["msgtype"] == "m.file")
        .await;
    assert_eq!(file["content"]["body"], "notes.txt", "{file}");
    assert_eq!(file["content"]["info"]["mimetype"], "text/plain");
    let url = file["content"]["url"].as_str().expect("mxc");
    assert_eq!(user.download(url).await, notes);

    // A video with a caption and its duration.
    let clip: Vec<u8> = (0..6000u32).map(|i| (i * 11 % 241) as u8).collect();
    post(
        &wa,
        "/control/send",
        json!({ "from": ALICE, "to": USER, "kind": "video", "seconds": 2, "text": "a clip",
                "mimetype": "video/mp4", "data_base64": b64.encode(&clip) }),
    )
    .await;
    let video = user
        .wait_event(&portal, "the video", |e| {
            e["content"]["msgtype"] == "m.video"
        })
        .await;
    assert_eq!(video["content"]["info"]["duration"], 2000, "{video}");
    assert_eq!(video["content"]["info"]["mimetype"], "video/mp4");
    assert!(
        video["content"]["body"]
            .as_str()
            .unwrap_or_default()
            .contains("a clip"),
        "{video}"
    );
    let url = video["content"]["url"].as_str().expect("mxc");
    assert_eq!(user.download(url).await, clip);

    // A GIF (a silent looping MP4 on WhatsApp) becomes a video with the GIF hints.
    let gif: Vec<u8> = (0..1500u32).map(|i| (i * 17 % 239) as u8).collect();
    post(
        &wa,
        "/control/send",
        json!({ "from": ALICE, "to": USER, "kind": "video", "gif": true, "seconds": 1,
                "mimetype": "video/mp4", "data_base64": b64.encode(&gif) }),
    )
    .await;
    let anim = user
        .wait_event(&portal, "the GIF", |e| {
            e["content"]["msgtype"] == "m.video" && e["content"]["info"]["fi.mau.gif"] == true
        })
        .await;
    assert_eq!(anim["content"]["info"]["fi.mau.loop"], true, "{anim}");
    let url = anim["content"]["url"].as_str().expect("mxc");
    assert_eq!(user.download(url).await, gif);

    // A sticker (WebP) becomes an m.sticker event.
    let webp: Vec<u8> = b"RIFF\x10\x00\x00\x00WEBPVP8 fake sticker".to_vec();
    post(
        &wa,
        "/control/send",
        json!({ "from": ALICE, "to": USER, "kind": "sticker",
                "mimetype": "image/webp", "data_base64": b64.encode(&webp) }),
    )
    .await;
    let sticker = user
        .wait_event(&portal, "the sticker", |e| e["type"] == "m.sticker")
        .await;
    assert_eq!(sticker["sender"], alice);
    assert_eq!(sticker["content"]["info"]["mimetype"], "image/webp");
    let url = sticker["content"]["url"].as_str().expect("mxc");
    assert_eq!(user.download(url).await, webp);

    // A location and a contact card.
    post(
        &wa,
        "/control/send",
        json!({ "from": ALICE, "to": USER, "kind": "location",
                "latitude": -23.5, "longitude": -46.625, "name": "Sao Paulo" }),
    )
    .await;
    let place = user
        .wait_event(&portal, "the location", |e| {
            e["content"]["msgtype"] == "m.location"
        })
        .await;
    assert_eq!(place["content"]["geo_uri"], "geo:-23.5,-46.625", "{place}");
    assert!(
        place["content"]["body"]
            .as_str()
            .unwrap_or_default()
            .contains("Sao Paulo"),
        "{place}"
    );
    post(
        &wa,
        "/control/send",
        json!({ "from": ALICE, "to": USER, "kind": "contact",
                "name": "Carol Card", "phone": "5511900000009" }),
    )
    .await;
    user.wait_message(&portal, "the contact card", |s, b| {
        s == alice && b.contains("Carol Card") && b.contains("5511900000009")
    })
    .await;

    // Matrix -> WhatsApp: an image, a video, audio, a sticker and a location, each decrypted
    // by Alice's client.
    let png: Vec<u8> = b"\x89PNG\r\n\x1a\n"
        .iter()
        .copied()
        .chain((0..2000u32).map(|i| (i % 199) as u8))
        .collect();
    let mxc = user.upload("image/png", png.clone()).await;
    user.send_event(
        &portal,
        "m.room.message",
        json!({"msgtype": "m.image", "body": "photo.png", "url": mxc,
               "info": {"mimetype": "image/png", "size": png.len(), "w": 10, "h": 20}}),
    )
    .await;
    let got = wait_received(&wa, ALICE, "the image on WhatsApp", |m| {
        m["message"]["image_message"].is_object()
    })
    .await;
    assert_eq!(got["message"]["image_message"]["mimetype"], "image/png");
    let id = got["id"].as_str().expect("id");
    assert_eq!(received_media(&wa, ALICE, id).await, png, "image bytes");

    let mp4: Vec<u8> = (0..3000u32).map(|i| (i * 5 % 233) as u8).collect();
    let mxc = user.upload("video/mp4", mp4.clone()).await;
    user.send_event(
        &portal,
        "m.room.message",
        json!({"msgtype": "m.video", "body": "clip.mp4", "url": mxc,
               "info": {"mimetype": "video/mp4", "size": mp4.len(), "duration": 3000}}),
    )
    .await;
    let got = wait_received(&wa, ALICE, "the video on WhatsApp", |m| {
        m["message"]["video_message"].is_object()
    })
    .await;
    let v = &got["message"]["video_message"];
    assert_eq!(v["mimetype"], "video/mp4", "{got}");
    assert_eq!(v["seconds"], 3, "{got}");
    let id = got["id"].as_str().expect("id");
    assert_eq!(received_media(&wa, ALICE, id).await, mp4, "video bytes");

    let mp3: Vec<u8> = (0..2500u32).map(|i| (i * 13 % 229) as u8).collect();
    let mxc = user.upload("audio/mpeg", mp3.clone()).await;
    user.send_event(
        &portal,
        "m.room.message",
        json!({"msgtype": "m.audio", "body": "song.mp3", "url": mxc,
               "info": {"mimetype": "audio/mpeg", "size": mp3.len(), "duration": 5000}}),
    )
    .await;
    let got = wait_received(&wa, ALICE, "the audio on WhatsApp", |m| {
        m["message"]["audio_message"]["mimetype"] == "audio/mpeg"
    })
    .await;
    let a = &got["message"]["audio_message"];
    assert_ne!(a["ptt"], true, "plain audio is no voice note: {got}");
    assert_eq!(a["seconds"], 5, "{got}");
    let id = got["id"].as_str().expect("id");
    assert_eq!(received_media(&wa, ALICE, id).await, mp3, "audio bytes");

    let sticker_bytes = b"RIFF\x10\x00\x00\x00WEBPVP8 matrix sticker".to_vec();
    let mxc = user.upload("image/webp", sticker_bytes.clone()).await;
    user.send_event(
        &portal,
        "m.sticker",
        json!({"body": "a sticker", "url": mxc,
               "info": {"mimetype": "image/webp", "size": sticker_bytes.len()}}),
    )
    .await;
    let got = wait_received(&wa, ALICE, "the sticker on WhatsApp (as an image)", |m| {
        m["message"]["image_message"]["mimetype"] == "image/webp"
    })
    .await;
    let id = got["id"].as_str().expect("id");
    assert_eq!(
        received_media(&wa, ALICE, id).await,
        sticker_bytes,
        "sticker bytes"
    );

    user.send_event(
        &portal,
        "m.room.message",
        json!({"msgtype": "m.location", "body": "Paris", "geo_uri": "geo:48.85,2.35"}),
    )
    .await;
    let got = wait_received(&wa, ALICE, "the location on WhatsApp", |m| {
        m["message"]["location_message"].is_object()
    })
    .await;
    let l = &got["message"]["location_message"];
    assert_eq!(l["degrees_latitude"], 48.85, "{got}");
    assert_eq!(l["degrees_longitude"], 2.35, "{got}");
    assert_eq!(l["name"], "Paris", "{got}");

    // Presence: ferry subscribed to Alice when her first message arrived.
    post(
        &wa,
        "/control/presence",
        json!({ "from": ALICE, "available": true }),
    )
    .await;
    wait_presence(&user, &alice, "online").await;
    post(
        &wa,
        "/control/presence",
        json!({ "from": ALICE, "available": false }),
    )
    .await;
    wait_presence(&user, &alice, "offline").await;
}

both_backends!(kinds_both_ways_and_presence);

/// A group renamed and joined after its portal exists, and mentions both ways.
async fn group_changes_and_mentions(backend: Backend) {
    const CAROL: &str = "5511900000004";
    let Scenario {
        slot,
        sim: _sim,
        wa,
        ferry: _ferry,
        bot: _bot,
        user,
        room,
    } = Scenario::linked(
        backend,
        "wagroup2",
        &[
            contact(ALICE, "Alice"),
            contact(BOB, "Bob"),
            contact(CAROL, "Carol"),
        ],
    )
    .await;

    let group = post(
        &wa,
        "/control/groups",
        json!({ "subject": "First name", "creator": BOB, "members": [USER, ALICE] }),
    )
    .await;
    let gjid = group["jid"].as_str().expect("group jid").to_owned();
    post(
        &wa,
        "/control/send",
        json!({ "from": BOB, "to": gjid, "text": "welcome" }),
    )
    .await;
    let portal = user.wait_portals(1, &room).await[0].clone();
    user.wait_message(&portal, "Bob's welcome", |s, b| {
        s == ghost(&slot, BOB) && b == "welcome"
    })
    .await;
    assert_eq!(user.room_name(&portal).await.as_deref(), Some("First name"));

    // Bob renames the group: the room's name follows.
    post(
        &wa,
        "/control/groups/subject",
        json!({ "group": gjid, "author": BOB, "subject": "Second name" }),
    )
    .await;
    poll(
        "the room renamed",
        async || json!(user.room_name(&portal).await),
        |n| n == "Second name",
    )
    .await;

    // The room renamed in Matrix renames the WhatsApp group.
    user.call(
        Method::PUT,
        &format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.name/",
            crate::common::enc(&portal)
        ),
        Some(json!({"name": "Named in Matrix"})),
    )
    .await;
    poll(
        "the WhatsApp group renamed",
        async || control(&wa, Method::GET, &format!("/control/group?id={gjid}"), None).await,
        |g| g["subject"] == "Named in Matrix",
    )
    .await;

    // Bob adds Carol: her ghost joins, and what she writes arrives.
    post(
        &wa,
        "/control/groups/members",
        json!({ "group": gjid, "author": BOB, "add": [CAROL] }),
    )
    .await;
    user.wait_members(&portal, "Carol joined", |members| {
        members.contains(&ghost(&slot, CAROL))
    })
    .await;
    post(
        &wa,
        "/control/send",
        json!({ "from": CAROL, "to": gjid, "text": "hi, I'm new" }),
    )
    .await;
    user.wait_message(&portal, "Carol's first message", |s, b| {
        s == ghost(&slot, CAROL) && b == "hi, I'm new"
    })
    .await;

    // WhatsApp -> Matrix: Alice mentions the bridged user and Bob; both become pills.
    post(
        &wa,
        "/control/send",
        json!({ "from": ALICE, "to": gjid,
                "text": format!("@{USER} and @{BOB} look"), "mentions": [USER, BOB] }),
    )
    .await;
    let mention = user
        .wait_event(&portal, "Alice's mentions", |e| {
            e["sender"] == ghost(&slot, ALICE)
                && e["content"]["body"]
                    .as_str()
                    .is_some_and(|b| b.ends_with("look"))
        })
        .await;
    let ids = &mention["content"]["m.mentions"]["user_ids"];
    assert!(
        ids.as_array().is_some_and(
            |ids| ids.contains(&json!(user.user_id)) && ids.contains(&json!(ghost(&slot, BOB)))
        ),
        "{mention}"
    );
    let html = mention["content"]["formatted_body"]
        .as_str()
        .unwrap_or_default();
    assert!(
        html.contains(&format!("https://matrix.to/#/{}", ghost(&slot, BOB))),
        "{mention}"
    );

    // Matrix -> WhatsApp: a pill to Alice's ghost is an @mention of her number.
    let alice = ghost(&slot, ALICE);
    user.send_event(
        &portal,
        "m.room.message",
        json!({"msgtype": "m.text", "body": "Alice: see this",
               "format": "org.matrix.custom.html",
               "formatted_body": format!("<a href=\"https://matrix.to/#/{alice}\">Alice</a>: see this"),
               "m.mentions": {"user_ids": [alice]}}),
    )
    .await;
    let got = wait_received(&wa, ALICE, "the mention at Alice", |m| {
        m["text"].as_str().is_some_and(|t| t.ends_with("see this"))
    })
    .await;
    assert_eq!(got["text"], format!("@{ALICE}: see this"), "{got}");
    let mentioned = &got["message"]["extended_text_message"]["context_info"]["mentioned_jid"];
    assert_eq!(
        mentioned,
        &json!([format!("{ALICE}@s.whatsapp.net")]),
        "{got}"
    );
}

both_backends!(group_changes_and_mentions);
