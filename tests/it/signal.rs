//! Signal through the signal-cli daemon simulator (testnet/SIGNAL_PROTOCOL.md): linking by QR
//! code, messages both ways with styles, and a daemon restart mid-conversation with nothing lost.

use reqwest::Method;
use serde_json::{Value, json};

use crate::{
    both_backends,
    common::{Backend, Ferry, Sim, Slot, User, WAIT, http},
};

const ACCOUNT: &str = "+15550001";
const BOB: &str = "+15550002";
const CAROL: &str = "+15550003";
const DAVE: &str = "+15550004";

async fn control(url: &str, method: Method, path: &str, body: Option<Value>) -> Value {
    let mut request = http().request(method, format!("{url}{path}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("signal control");
    let status = response.status();
    let value = response.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{path}: {status} {value}");
    value
}

async fn sent_messages(url: &str) -> Vec<Value> {
    let sent = control(
        url,
        Method::GET,
        &format!("/control/accounts/{}/sent", crate::common::enc(ACCOUNT)),
        None,
    )
    .await;
    sent.as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["method"] == "send")
        .cloned()
        .collect()
}

async fn link_send_receive_and_survive_a_daemon_restart(backend: Backend) {
    let slot = Slot::claim();
    let sim = Sim::start().await;
    let signal = testnet::signal::SignalServer::start("127.0.0.1:0")
        .await
        .expect("signal simulator");
    let url = signal.control_url();
    control(
        &url,
        Method::POST,
        "/control/users",
        Some(json!({"number": BOB, "givenName": "Bob"})),
    )
    .await;
    let _ferry = Ferry::start_with(
        &slot,
        backend,
        &sim.url(),
        Some(&signal.rpc_addr().to_string()),
    )
    .await;
    let bot = slot.bot();

    // Link by QR: the bot shows the code as an image and as text; the "phone" scans it.
    let user = User::register("sig").await;
    let room = user.open_management_room(&bot).await;
    let (text, _) = user
        .start_qr_login(&room, &bot, "login signal", "sgnl://linkdevice")
        .await;
    let uri = text
        .lines()
        .find(|l| l.starts_with("sgnl://"))
        .expect("uri line")
        .to_owned();
    control(
        &url,
        Method::POST,
        "/control/link",
        Some(json!({"uri": uri, "number": ACCOUNT, "givenName": "Alice"})),
    )
    .await;
    user.wait_message(&room, "the login", |s, b| {
        s == bot && b.contains("Logged in to Signal")
    })
    .await;

    // Bob writes first: a portal appears with his message, styled.
    control(&url, Method::POST, &format!("/control/accounts/{}/message", crate::common::enc(ACCOUNT)), Some(json!({
        "from": BOB, "message": "hello from Signal", "textStyles": [{"start": 6, "length": 4, "style": "BOLD"}]
    }))).await;
    let portal = user.wait_portals(1, &room).await[0].clone();
    let event = user
        .wait_event(&portal, "bob's message", |e| {
            e["content"]["body"] == "hello from Signal"
        })
        .await;
    let html = event["content"]["formatted_body"]
        .as_str()
        .unwrap_or_default();
    assert!(
        html.contains("<strong>from</strong>") || html.contains("<b>from</b>"),
        "{html}"
    );
    assert!(
        event["sender"]
            .as_str()
            .unwrap_or_default()
            .contains("signal_"),
        "from bob's ghost: {event}"
    );

    // The Matrix reply goes out through the daemon to bob.
    let reply = user.send_text(&portal, "hi bob, from Matrix").await;
    let deadline = std::time::Instant::now() + WAIT;
    let reply_ts = loop {
        let sent = sent_messages(&url).await;
        if let Some(call) = sent
            .iter()
            .find(|c| c["params"]["message"] == "hi bob, from Matrix")
        {
            let recipients = call["params"]["recipient"].to_string();
            assert!(
                recipients.contains('-') || recipients.contains(BOB),
                "sent to bob: {call}"
            );
            break call["timestamp"].as_i64().expect("send timestamp");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the reply never reached the daemon: {sent:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    };

    // Bob reacts to and quotes the Matrix message (Signal names it by the account's ACI), then
    // edits and deletes his own.
    let acct = crate::common::enc(ACCOUNT);
    control(&url, Method::POST, &format!("/control/accounts/{acct}/reaction"),
        Some(json!({"from": BOB, "emoji": "👍", "targetAuthor": ACCOUNT, "targetSentTimestamp": reply_ts}))).await;
    let reaction = user
        .wait_event(&portal, "bob's reaction", |e| e["type"] == "m.reaction")
        .await;
    assert_eq!(
        reaction["content"]["m.relates_to"]["event_id"],
        reply.as_str()
    );
    assert_eq!(reaction["content"]["m.relates_to"]["key"], "👍");
    let quoted = control(&url, Method::POST, &format!("/control/accounts/{acct}/message"),
        Some(json!({"from": BOB, "message": "quoting you", "quote": {"id": reply_ts, "author": ACCOUNT}}))).await;
    let quote = user
        .wait_event(&portal, "bob's quote", |e| {
            e["content"]["body"] == "quoting you"
        })
        .await;
    assert_eq!(
        quote["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        reply.as_str()
    );
    let quoted_ts = quoted["timestamp"].as_i64().expect("timestamp");
    control(&url, Method::POST, &format!("/control/accounts/{acct}/edit"),
        Some(json!({"from": BOB, "targetSentTimestamp": quoted_ts, "message": "quoting you, edited"}))).await;
    let edit = user
        .wait_event(&portal, "bob's edit", |e| {
            e["content"]["m.relates_to"]["rel_type"] == "m.replace"
        })
        .await;
    assert_eq!(
        edit["content"]["m.new_content"]["body"],
        "quoting you, edited"
    );
    // A reaction from Matrix goes to Signal, naming bob's message.
    let quote_id = quote["event_id"].as_str().expect("id").to_owned();
    user.send_event(
        &portal,
        "m.reaction",
        json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": quote_id, "key": "🎉"}}),
    )
    .await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let sent = control(
            &url,
            Method::GET,
            &format!("/control/accounts/{acct}/sent"),
            None,
        )
        .await;
        if let Some(call) = sent
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["method"] == "sendReaction")
        {
            assert_eq!(call["params"]["emoji"], "🎉");
            assert_eq!(call["params"]["targetTimestamp"], quoted_ts);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the reaction never reached the daemon: {sent:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    }
    control(
        &url,
        Method::POST,
        &format!("/control/accounts/{acct}/delete"),
        Some(json!({"from": BOB, "targetSentTimestamp": quoted_ts})),
    )
    .await;
    let id = quote_id.clone();
    user.wait_event(&portal, "bob's deleted message to be redacted", move |e| {
        e["event_id"] == id.as_str() && e["content"].as_object().is_some_and(|c| c.is_empty())
    })
    .await;

    // Attachments both ways, bytes intact; typing and read receipts from bob.
    use base64::Engine as _;
    let photo = vec![0x89, b'P', b'N', b'G', 1, 2, 3];
    let b64 = base64::engine::general_purpose::STANDARD.encode(&photo);
    control(&url, Method::POST, &format!("/control/accounts/{acct}/message"), Some(json!({"from": BOB, "message": "a photo",
        "attachments": [{"contentType": "image/png", "filename": "p.png", "data": b64, "width": 2, "height": 1}]}))).await;
    let image = user
        .wait_event(&portal, "bob's photo", |e| {
            e["content"]["msgtype"] == "m.image"
        })
        .await;
    assert_eq!(image["content"]["info"]["mimetype"], "image/png");
    assert_eq!(image["content"]["body"], "a photo");
    assert_eq!(
        user.download(image["content"]["url"].as_str().expect("url"))
            .await,
        photo
    );
    let file = b"notes for bob".to_vec();
    let mxc = user.upload("text/plain", file.clone()).await;
    user.send_event(
        &portal,
        "m.room.message",
        json!({"msgtype": "m.file", "body": "notes.txt", "url": mxc,
        "info": {"mimetype": "text/plain", "size": file.len()}}),
    )
    .await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let sent = sent_messages(&url).await;
        if let Some(att) = sent
            .iter()
            .filter_map(|c| c["attachments"].as_array())
            .flatten()
            .find(|a| a["filename"] == "notes.txt")
        {
            assert_eq!(att["contentType"], "text/plain");
            assert_eq!(
                att["data"],
                base64::engine::general_purpose::STANDARD.encode(&file)
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the file never reached the daemon: {sent:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    }

    // Video and a voice note from bob. signal-cli 0.13.19's JSON has no voice-note flag, so a
    // voice note is an audio attachment (often without a file name) and arrives as m.audio.
    let clip = b"\0\0\0\x18ftypmp42 video bytes".to_vec();
    let voice = b"\xff\xf1 aac voice note".to_vec();
    control(&url, Method::POST, &format!("/control/accounts/{acct}/message"), Some(json!({"from": BOB,
        "attachments": [
            {"contentType": "video/mp4", "filename": "clip.mp4", "data": base64::engine::general_purpose::STANDARD.encode(&clip), "width": 4, "height": 2},
            {"contentType": "audio/aac", "data": base64::engine::general_purpose::STANDARD.encode(&voice)}]}))).await;
    let video = user
        .wait_event(&portal, "bob's video", |e| {
            e["content"]["msgtype"] == "m.video"
        })
        .await;
    assert_eq!(video["content"]["body"], "clip.mp4");
    assert_eq!(video["content"]["info"]["mimetype"], "video/mp4");
    assert_eq!(video["content"]["info"]["size"], clip.len());
    assert_eq!(video["content"]["info"]["w"], 4);
    assert_eq!(
        user.download(video["content"]["url"].as_str().expect("url"))
            .await,
        clip
    );
    let audio = user
        .wait_event(&portal, "bob's voice note", |e| {
            e["content"]["msgtype"] == "m.audio"
        })
        .await;
    assert_eq!(audio["content"]["info"]["mimetype"], "audio/aac");
    assert_eq!(audio["content"]["info"]["size"], voice.len());
    assert_eq!(
        user.download(audio["content"]["url"].as_str().expect("url"))
            .await,
        voice
    );
    // Video, audio and a Matrix voice message to Signal: attachments with the same bytes, type
    // and name (the voice message is a plain audio attachment: signal-cli cannot mark one).
    let outgoing = [
        (
            "m.video",
            "holiday.mp4",
            "video/mp4",
            b"mp4 from matrix".to_vec(),
            json!({}),
        ),
        (
            "m.audio",
            "song.ogg",
            "audio/ogg",
            b"ogg from matrix".to_vec(),
            json!({}),
        ),
        (
            "m.audio",
            "Voice message.ogg",
            "audio/ogg",
            b"opus voice from matrix".to_vec(),
            json!({"org.matrix.msc3245.voice": {}, "org.matrix.msc1767.audio": {"duration": 1200}}),
        ),
    ];
    for (msgtype, name, mime, bytes, extra) in &outgoing {
        let mxc = user.upload(mime, bytes.clone()).await;
        let mut content = json!({"msgtype": msgtype, "body": name, "url": mxc,
            "info": {"mimetype": mime, "size": bytes.len()}});
        if let (Some(c), Some(e)) = (content.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        user.send_event(&portal, "m.room.message", content).await;
        let want = base64::engine::general_purpose::STANDARD.encode(bytes);
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let sent = sent_messages(&url).await;
            if let Some(att) = sent
                .iter()
                .filter_map(|c| c["attachments"].as_array())
                .flatten()
                .find(|a| a["data"] == want.as_str())
            {
                assert_eq!(att["contentType"], *mime, "{name}");
                assert_eq!(att["filename"], *name, "{name}");
                assert_eq!(att["size"], bytes.len(), "{name}");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name} never reached the daemon: {sent:#?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        }
    }

    // A sticker from bob: signal-cli names it by pack (hex) and id only; ferry fetches the
    // image with getSticker and posts an m.sticker with the same bytes.
    let webp = b"RIFF\x1a\0\0\0WEBPVP8L sticker bytes".to_vec();
    control(
        &url,
        Method::POST,
        &format!("/control/accounts/{acct}/message"),
        Some(json!({"from": BOB,
        "sticker": {"packId": "00ff10aa", "stickerId": 7,
            "data": base64::engine::general_purpose::STANDARD.encode(&webp)}})),
    )
    .await;
    let sticker = user
        .wait_event(&portal, "bob's sticker", |e| e["type"] == "m.sticker")
        .await;
    assert_eq!(sticker["content"]["info"]["mimetype"], "image/webp");
    assert_eq!(
        user.download(sticker["content"]["url"].as_str().expect("url"))
            .await,
        webp
    );
    // A Matrix sticker goes to Signal as an image attachment (signal-cli sends stickers only
    // from installed packs, never by bytes).
    let mine = b"\x89PNG matrix sticker".to_vec();
    let mxc = user.upload("image/png", mine.clone()).await;
    user.send_event(
        &portal,
        "m.sticker",
        json!({"body": "wave", "url": mxc, "info": {"mimetype": "image/png", "size": mine.len()}}),
    )
    .await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let sent = sent_messages(&url).await;
        if let Some(att) = sent
            .iter()
            .filter_map(|c| c["attachments"].as_array())
            .flatten()
            .find(|a| a["data"] == base64::engine::general_purpose::STANDARD.encode(&mine))
        {
            assert_eq!(att["contentType"], "image/png");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the Matrix sticker never reached the daemon: {sent:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    }
    control(
        &url,
        Method::POST,
        &format!("/control/accounts/{acct}/typing"),
        Some(json!({"from": BOB})),
    )
    .await;
    user.wait_ephemeral(&portal, "bob typing", |e| {
        e["type"] == "m.typing"
            && e["content"]["user_ids"]
                .as_array()
                .is_some_and(|u| !u.is_empty())
    })
    .await;
    // Bob's phone got the reply (a delivery receipt: its send status names his ghost), then
    // he reads it.
    control(
        &url,
        Method::POST,
        &format!("/control/accounts/{acct}/receipt"),
        Some(json!({"from": BOB, "type": "delivery", "timestamps": [reply_ts]})),
    )
    .await;
    let delivered_id = reply.clone();
    let bob_ghost = event["sender"].as_str().expect("bob's ghost").to_owned();
    crate::common::poll(
        "the delivery in the reply's status",
        async || {
            let events = user.events(&portal).await;
            json!(events.iter().any(|e| {
                e["type"] == "com.beeper.message_send_status"
                    && e["content"]["m.relates_to"]["event_id"] == delivered_id.as_str()
                    && e["content"]["delivered_to_users"] == json!([bob_ghost])
            }))
        },
        |found| found == true,
    )
    .await;
    control(
        &url,
        Method::POST,
        &format!("/control/accounts/{acct}/receipt"),
        Some(json!({"from": BOB, "type": "read", "timestamps": [reply_ts]})),
    )
    .await;
    let reply_id = reply.clone();
    user.wait_ephemeral(&portal, "bob's read receipt", move |e| {
        e["type"] == "m.receipt" && e["content"][reply_id.as_str()]["m.read"].is_object()
    })
    .await;

    // The daemon restarts mid-conversation: messages sent meanwhile arrive once it is back.
    control(&url, Method::POST, "/control/restart", Some(json!({}))).await;
    for i in 0..3 {
        control(
            &url,
            Method::POST,
            &format!("/control/accounts/{}/message", crate::common::enc(ACCOUNT)),
            Some(json!({"from": BOB, "message": format!("after restart {i}")})),
        )
        .await;
    }
    for i in 0..3 {
        user.wait_event(&portal, "a message sent across the restart", |e| {
            e["content"]["body"] == format!("after restart {i}")
        })
        .await;
    }
    let bodies: Vec<String> = user
        .messages(&portal)
        .await
        .into_iter()
        .map(|(_, _, b)| b)
        .filter(|b| b.starts_with("after restart"))
        .collect();
    assert_eq!(
        bodies,
        ["after restart 0", "after restart 1", "after restart 2"],
        "once each, in order"
    );

    // The daemon stays down past the grace period (2 s in the tests' config): the management
    // room gets one notice, not one per reconnect attempt, and one when it is back; a message
    // sent meanwhile goes out then. The short restart above said nothing.
    control(
        &url,
        Method::POST,
        "/control/outage",
        Some(json!({"down": true})),
    )
    .await;
    user.wait_message(&room, "the daemon-down notice", |s, b| {
        s == bot && b.contains("cannot reach")
    })
    .await;
    user.send_text(&portal, "sent while the daemon is down")
        .await;
    // Several reconnect attempts fail meanwhile.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    control(
        &url,
        Method::POST,
        "/control/outage",
        Some(json!({"down": false})),
    )
    .await;
    user.wait_message(&room, "the daemon-back notice", |s, b| {
        s == bot && b.contains("connected again")
    })
    .await;
    wait_sent(&url, "the message sent while down", "send", |c| {
        c["params"]["message"] == "sent while the daemon is down"
    })
    .await;
    let count = |needle: &'static str| {
        let user = &user;
        let room = &room;
        let bot = bot.clone();
        async move {
            user.messages(room)
                .await
                .into_iter()
                .filter(|(s, _, b)| *s == bot && b.contains(needle))
                .count()
        }
    };
    assert_eq!(count("cannot reach").await, 1, "one notice for the outage");
    assert_eq!(count("connected again").await, 1, "one notice when back");
    signal.shutdown().await;
}
both_backends!(link_send_receive_and_survive_a_daemon_restart);

/// Polls the account's outgoing daemon calls until one of `method` satisfies `pred`.
async fn wait_sent(url: &str, what: &str, method: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let path = format!("/control/accounts/{}/sent", crate::common::enc(ACCOUNT));
    let calls = crate::common::poll(
        what,
        async || control(url, Method::GET, &path, None).await,
        |sent| {
            sent.as_array()
                .into_iter()
                .flatten()
                .any(|c| c["method"] == method && pred(c))
        },
    )
    .await;
    calls
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["method"] == method && pred(c))
        .cloned()
        .expect("found")
}

/// A room state event's content, if set.
async fn state(user: &User, room: &str, kind: &str) -> Value {
    let path = format!(
        "/_matrix/client/v3/rooms/{}/state/{kind}/",
        crate::common::enc(room)
    );
    user.call(Method::GET, &path, None).await
}

async fn power_of(user: &User, room: &str, who: &str) -> i64 {
    state(user, room, "m.room.power_levels").await["users"][who]
        .as_i64()
        .unwrap_or(0)
}

/// Logs a Matrix user in to an account signal-cli already has; returns the management room.
async fn existing_login(slot: &Slot, user: &User) -> String {
    let bot = slot.bot();
    let room = user.open_management_room(&bot).await;
    user.command(&room, &bot, "login signal existing", "phone number")
        .await;
    user.command(&room, &bot, ACCOUNT, "Logged in to Signal")
        .await;
    room
}

/// Groups v2 both ways (details, picture, members, admins as power levels, changes re-read from
/// `listGroups`), contacts' profile names and pictures on ghosts, typing and read receipts from
/// Matrix, and a changed safety number announced and then trusted.
async fn groups_profiles_receipts_and_safety_numbers(backend: Backend) {
    let slot = Slot::claim();
    let sim = Sim::start().await;
    let signal = testnet::signal::SignalServer::start("127.0.0.1:0")
        .await
        .expect("signal simulator");
    let url = signal.control_url();
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let carol_png = b"\x89PNG carol".to_vec();
    let group_png = b"\x89PNG hikers".to_vec();
    let mut uuids = std::collections::BTreeMap::new();
    for (number, name, avatar) in [
        (BOB, "Bob", None),
        (CAROL, "Carol", Some(b64(&carol_png))),
        (DAVE, "Dave", None),
    ] {
        let mut body = json!({"number": number, "givenName": name});
        if let Some(avatar) = avatar {
            body["avatar"] = json!(avatar);
        }
        let made = control(&url, Method::POST, "/control/users", Some(body)).await;
        uuids.insert(number, made["uuid"].as_str().expect("uuid").to_owned());
    }
    control(
        &url,
        Method::POST,
        "/control/accounts",
        Some(json!({"number": ACCOUNT, "givenName": "Alice"})),
    )
    .await;
    let _ferry = Ferry::start_with(
        &slot,
        backend,
        &sim.url(),
        Some(&signal.rpc_addr().to_string()),
    )
    .await;
    let user = User::register("sigg").await;
    let management = existing_login(&slot, &user).await;
    let acct = crate::common::enc(ACCOUNT);

    // A DM portal; typing and a read receipt from Matrix reach bob through the daemon.
    let hello = control(
        &url,
        Method::POST,
        &format!("/control/accounts/{acct}/message"),
        Some(json!({"from": BOB, "message": "hello alice"})),
    )
    .await;
    let hello_ts = hello["timestamp"].as_i64().expect("timestamp");
    let dm = user.wait_portals(1, &management).await[0].clone();
    let hello_event = user
        .wait_event(&dm, "bob's message", |e| {
            e["content"]["body"] == "hello alice"
        })
        .await;
    let typing_path = format!(
        "/_matrix/client/v3/rooms/{}/typing/{}",
        crate::common::enc(&dm),
        crate::common::enc(&user.user_id)
    );
    user.put(&typing_path, json!({"typing": true, "timeout": 20000}))
        .await;
    let typing = wait_sent(&url, "typing sent to bob", "sendTyping", |c| {
        c["params"]["stop"] == false
    })
    .await;
    assert!(
        typing["params"]["recipient"]
            .to_string()
            .contains(&uuids[BOB])
            || typing["params"]["recipient"].to_string().contains(BOB),
        "{typing}"
    );
    user.put(&typing_path, json!({"typing": false})).await;
    wait_sent(&url, "typing stopped", "sendTyping", |c| {
        c["params"]["stop"] == true
    })
    .await;
    user.call(
        Method::POST,
        &format!(
            "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
            crate::common::enc(&dm),
            crate::common::enc(hello_event["event_id"].as_str().expect("id"))
        ),
        Some(json!({})),
    )
    .await;
    let receipt = wait_sent(&url, "read receipt sent to bob", "sendReceipt", |_| true).await;
    assert_eq!(receipt["params"]["type"], "read");
    assert_eq!(receipt["params"]["targetTimestamp"], json!([hello_ts]));

    // Styles and mentions both ways (ranges in UTF-16 units on the Signal side).
    let bob_ghost = slot.ghost(&uuids[BOB]).replacen("sim_", "signal_", 1);
    user.send_event(
        &dm,
        "m.room.message",
        json!({"msgtype": "m.text", "body": "😀 hey Bob, look", "format": "org.matrix.custom.html",
            "formatted_body": format!("😀 hey <a href=\"https://matrix.to/#/{bob_ghost}\">Bob</a>, <strong>look</strong>")}),
    )
    .await;
    let styled = wait_sent(&url, "the styled mention", "send", |c| {
        c["params"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("look"))
    })
    .await;
    assert_eq!(
        styled["params"]["textStyle"],
        json!(["12:4:BOLD"]),
        "{styled}"
    );
    let mention = styled["params"]["mention"].to_string();
    assert!(mention.contains(&format!("7:3:{}", uuids[BOB])), "{styled}");
    control(
        &url,
        Method::POST,
        &format!("/control/accounts/{acct}/message"),
        Some(json!({
        "from": BOB, "message": "\u{fffc} see this",
        "mentions": [{"start": 0, "length": 1, "number": ACCOUNT}],
        "textStyles": [{"start": 2, "length": 3, "style": "ITALIC"}]})),
    )
    .await;
    let pill = user
        .wait_event(&dm, "bob's mention", |e| {
            e["content"]["body"]
                .as_str()
                .is_some_and(|b| b.ends_with("see this"))
        })
        .await;
    let html = pill["content"]["formatted_body"]
        .as_str()
        .unwrap_or_default();
    assert!(
        html.contains(&user.user_id),
        "a pill to the Matrix user: {html}"
    );
    assert!(html.contains("<em>see</em>"), "{html}");

    // A Matrix edit and redaction reach Signal as an edit and a remote delete of that message.
    let mine = user.send_text(&dm, "edit me").await;
    let original = wait_sent(&url, "the message to edit", "send", |c| {
        c["params"]["message"] == "edit me"
    })
    .await["timestamp"]
        .as_i64()
        .expect("timestamp");
    user.send_event(
        &dm,
        "m.room.message",
        json!({"msgtype": "m.text", "body": "* edited", "m.new_content": {"msgtype": "m.text", "body": "edited"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": mine}}),
    )
    .await;
    wait_sent(&url, "the edit", "send", |c| {
        c["params"]["message"] == "edited" && c["params"]["editTimestamp"] == original
    })
    .await;
    user.call(
        Method::PUT,
        &format!(
            "/_matrix/client/v3/rooms/{}/redact/{}/ferry-test-redact",
            crate::common::enc(&dm),
            crate::common::enc(&mine)
        ),
        Some(json!({})),
    )
    .await;
    wait_sent(&url, "the remote delete", "remoteDelete", |c| {
        c["params"]["targetTimestamp"] == original
    })
    .await;

    // Bob makes a group with a picture: a portal with its name, topic, picture, members and
    // bob (admin) at power level 50; carol's ghost has her profile name and picture.
    let made = control(
        &url,
        Method::POST,
        "/control/groups",
        Some(
            json!({"by": BOB, "name": "Hikers", "description": "Trails", "avatar": b64(&group_png),
            "members": [BOB, ACCOUNT, CAROL], "admins": [BOB]}),
        ),
    )
    .await;
    let group_id = made["groupId"].as_str().expect("group id").to_owned();
    let rooms = user.wait_portals(2, &management).await;
    let group = rooms
        .into_iter()
        .find(|r| r != &dm)
        .expect("the group portal");
    crate::common::poll(
        "the group's name",
        async || json!(user.room_name(&group).await),
        |n| n == "Hikers",
    )
    .await;
    crate::common::poll(
        "the group's topic",
        async || state(&user, &group, "m.room.topic").await,
        |t| t["topic"] == "Trails",
    )
    .await;
    let avatar_url = crate::common::poll(
        "the group's picture",
        async || state(&user, &group, "m.room.avatar").await,
        |a| a["url"].is_string(),
    )
    .await;
    assert_eq!(
        user.download(avatar_url["url"].as_str().expect("url"))
            .await,
        group_png
    );
    let ghost_of = |number: &str| slot.ghost(&uuids[number]).replacen("sim_", "signal_", 1);
    let members = user
        .wait_members(&group, "bob and carol", |m| {
            m.contains(&ghost_of(BOB)) && m.contains(&ghost_of(CAROL))
        })
        .await;
    assert!(!members.contains(&ghost_of(DAVE)), "{members:?}");
    assert_eq!(power_of(&user, &group, &ghost_of(BOB)).await, 50);
    assert_eq!(power_of(&user, &group, &ghost_of(CAROL)).await, 0);
    let carol_name = user.displayname(&ghost_of(CAROL)).await.unwrap_or_default();
    assert!(carol_name.contains("Carol"), "{carol_name}");
    let (carol_avatar, _) = user
        .avatar(&ghost_of(CAROL))
        .await
        .expect("carol's picture");
    assert_eq!(carol_avatar, carol_png);

    // Bob renames it, adds dave as admin and removes carol: re-read from listGroups.
    control(&url, Method::POST, "/control/groups/update", Some(json!({"groupId": group_id, "by": BOB,
        "name": "Peak baggers", "description": "Summits", "addMembers": [DAVE], "removeMembers": [CAROL],
        "addAdmins": [DAVE]}))).await;
    crate::common::poll(
        "the new name",
        async || json!(user.room_name(&group).await),
        |n| n == "Peak baggers",
    )
    .await;
    crate::common::poll(
        "the new topic",
        async || state(&user, &group, "m.room.topic").await,
        |t| t["topic"] == "Summits",
    )
    .await;
    user.wait_members(&group, "dave in, carol out", |m| {
        m.contains(&ghost_of(DAVE)) && !m.contains(&ghost_of(CAROL))
    })
    .await;
    crate::common::poll(
        "dave an admin",
        async || json!(power_of(&user, &group, &ghost_of(DAVE)).await),
        |l| l == 50,
    )
    .await;
    control(
        &url,
        Method::POST,
        "/control/groups/update",
        Some(json!({"groupId": group_id, "by": BOB,
        "removeAdmins": [DAVE]})),
    )
    .await;
    crate::common::poll(
        "dave no longer an admin",
        async || json!(power_of(&user, &group, &ghost_of(DAVE)).await),
        |l| l == 0,
    )
    .await;

    // Matrix renames the room: the group is renamed through updateGroup.
    user.put(
        &format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.name/",
            crate::common::enc(&group)
        ),
        json!({"name": "Named in Matrix"}),
    )
    .await;
    let update = wait_sent(&url, "the rename", "updateGroup", |c| {
        c["params"]["name"] == "Named in Matrix"
    })
    .await;
    assert_eq!(update["params"]["groupId"], group_id.as_str());

    // Kicking a ghost in Matrix removes that member on Signal; inviting one adds them.
    user.call(
        Method::POST,
        &format!(
            "/_matrix/client/v3/rooms/{}/kick",
            crate::common::enc(&group)
        ),
        Some(json!({"user_id": ghost_of(DAVE), "reason": "bye"})),
    )
    .await;
    let removed = wait_sent(&url, "dave removed", "updateGroup", |c| {
        c["params"]["removeMember"].is_array()
    })
    .await;
    assert_eq!(removed["params"]["groupId"], group_id.as_str());
    assert_eq!(removed["params"]["removeMember"], json!([uuids[DAVE]]));
    user.call(
        Method::POST,
        &format!(
            "/_matrix/client/v3/rooms/{}/invite",
            crate::common::enc(&group)
        ),
        Some(json!({"user_id": ghost_of(CAROL)})),
    )
    .await;
    let added = wait_sent(&url, "carol added", "updateGroup", |c| {
        c["params"]["member"].is_array()
    })
    .await;
    assert_eq!(added["params"]["member"], json!([uuids[CAROL]]));
    user.wait_members(&group, "carol back in the room", |m| {
        m.contains(&ghost_of(CAROL)) && !m.contains(&ghost_of(DAVE))
    })
    .await;

    // Bob's safety number changes: the send fails with a notice naming him and the way on;
    // `trust` accepts the new key and the next message goes through.
    control(
        &url,
        Method::POST,
        "/control/users/identity",
        Some(json!({"number": BOB})),
    )
    .await;
    let refused = user.send_text(&dm, "are you there?").await;
    let bot = slot.bot();
    let (_, notice) = user
        .wait_message(&dm, "the safety-number notice", |s, b| {
            s == bot && b.contains("safety number")
        })
        .await;
    assert!(notice.contains("Bob"), "{notice}");
    assert!(notice.contains("trust signal"), "{notice}");
    let status = user
        .wait_event(&dm, "the failed status", |e| {
            e["type"] == "com.beeper.message_send_status"
                && e["content"]["m.relates_to"]["event_id"] == refused.as_str()
        })
        .await;
    assert_eq!(status["content"]["status"], "FAIL_PERMANENT");
    assert!(
        status["content"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("safety number"),
        "{status}"
    );
    // In the group (bob, carol and the account) the same change fails only for bob: signal-cli
    // sends to carol and answers with results[] naming bob as IDENTITY_FAILURE. The message is
    // sent (status SUCCESS) and the room is told who missed it and how to trust them.
    let partial = user.send_text(&group, "hello both of you").await;
    let sent = wait_sent(&url, "the group message", "send", |c| {
        c["params"]["message"] == "hello both of you"
    })
    .await;
    assert_eq!(sent["params"]["groupId"], group_id.as_str());
    let (_, group_notice) = user
        .wait_message(&group, "the partial-delivery notice", |s, b| {
            s == bot && b.contains("not delivered to everyone")
        })
        .await;
    assert!(group_notice.contains("Bob"), "{group_notice}");
    assert!(!group_notice.contains("Carol"), "{group_notice}");
    assert!(
        group_notice.contains(&format!("trust signal {}", uuids[BOB])),
        "{group_notice}"
    );
    let status = status_of(&user, &group, &partial).await;
    assert_eq!(status["status"], "SUCCESS", "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Bob"),
        "{status}"
    );
    let command = notice
        .split('`')
        .find(|p| p.starts_with("trust signal"))
        .expect("the command in the notice")
        .to_owned();
    user.command(&management, &bot, &command, "is trusted")
        .await;
    user.send_text(&dm, "now it works").await;
    wait_sent(&url, "the message after trusting", "send", |c| {
        c["params"]["message"] == "now it works"
    })
    .await;
    signal.shutdown().await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_profiles_receipts_and_safety_numbers_sqlite() {
    groups_profiles_receipts_and_safety_numbers(Backend::Sqlite).await;
}

/// Waits for the message-send status of `event`.
async fn status_of(user: &User, room: &str, event: &str) -> Value {
    let id = event.to_owned();
    user.wait_event(room, "the message status", move |e| {
        e["type"] == "com.beeper.message_send_status"
            && e["content"]["m.relates_to"]["event_id"] == id.as_str()
    })
    .await["content"]
        .clone()
}

/// Malformed and unexpected daemon replies (the simulator's fault hooks): each one is a clear
/// error on the message it hit or is skipped, ferry keeps going, and nothing else is lost.
async fn malformed_daemon_replies(backend: Backend) {
    let slot = Slot::claim();
    let sim = Sim::start().await;
    let signal = testnet::signal::SignalServer::start("127.0.0.1:0")
        .await
        .expect("signal simulator");
    let url = signal.control_url();
    control(
        &url,
        Method::POST,
        "/control/users",
        Some(json!({"number": BOB, "givenName": "Bob"})),
    )
    .await;
    control(
        &url,
        Method::POST,
        "/control/accounts",
        Some(json!({"number": ACCOUNT, "givenName": "Alice"})),
    )
    .await;
    let mut ferry = Ferry::start_with(
        &slot,
        backend,
        &sim.url(),
        Some(&signal.rpc_addr().to_string()),
    )
    .await;
    let user = User::register("sigf").await;
    let management = existing_login(&slot, &user).await;
    let acct = crate::common::enc(ACCOUNT);
    let say = async |text: &str| {
        control(
            &url,
            Method::POST,
            &format!("/control/accounts/{acct}/message"),
            Some(json!({"from": BOB, "message": text})),
        )
        .await;
    };
    say("hello").await;
    let dm = user.wait_portals(1, &management).await[0].clone();
    user.wait_event(&dm, "bob's hello", |e| e["content"]["body"] == "hello")
        .await;
    let fault = async |body: Value| {
        control(&url, Method::POST, "/control/fault", Some(body)).await;
    };

    // A result of the wrong shape, an error with an odd code, an error that is not an object:
    // each fails its message with a clear reason.
    for (spoiled, expect) in [
        (
            json!({"method": "send", "kind": "result", "result": "surprise"}),
            "without a timestamp",
        ),
        (
            json!({"method": "send", "kind": "error", "error": {"code": 12345, "message": "odd failure", "data": null}}),
            "odd failure",
        ),
        (
            json!({"method": "send", "kind": "error", "error": "just a string"}),
            "just a string",
        ),
    ] {
        fault(spoiled.clone()).await;
        let event = user.send_text(&dm, &format!("spoiled by {spoiled}")).await;
        let status = status_of(&user, &dm, &event).await;
        assert_eq!(status["status"], "FAIL_PERMANENT", "{spoiled}: {status}");
        assert!(
            status["message"]
                .as_str()
                .unwrap_or_default()
                .contains(expect),
            "{spoiled}: {status}"
        );
    }

    // A garbage line, or a 70 MB line (over ferry's 64 MiB limit) before the answer: skipped,
    // the answer still counts.
    for (spoiled, text) in [
        (
            json!({"method": "send", "kind": "garbage"}),
            "after garbage",
        ),
        (
            json!({"method": "send", "kind": "huge", "bytes": 70 * 1024 * 1024}),
            "after a huge line",
        ),
    ] {
        fault(spoiled).await;
        let event = user.send_text(&dm, text).await;
        assert_eq!(status_of(&user, &dm, &event).await["status"], "SUCCESS");
        wait_sent(&url, text, "send", |c| c["params"]["message"] == text).await;
    }

    // The answer under the wrong id: the call times out (transient) and is sent again.
    fault(json!({"method": "send", "kind": "wrong-id"})).await;
    let event = user.send_text(&dm, "after a wrong id").await;
    assert_eq!(status_of(&user, &dm, &event).await["status"], "SUCCESS");

    // Unsolicited junk on the connection: garbage, an answer nobody asked for, a notification
    // without an envelope. Bob's next messages still arrive, in order.
    for junk in [
        json!("not json at all"),
        json!({"jsonrpc": "2.0", "id": 987654, "result": {"timestamp": 1}}),
        json!({"jsonrpc": "2.0", "method": "receive", "params": {"subscription": 0, "result": {}}}),
        json!({"jsonrpc": "2.0", "method": "receive", "params": {"subscription": 0, "result": {"envelope": {"timestamp": "yesterday"}}}}),
    ] {
        control(
            &url,
            Method::POST,
            "/control/inject",
            Some(json!({"line": junk})),
        )
        .await;
    }
    say("still here 1").await;
    say("still here 2").await;
    user.wait_event(&dm, "bob after the junk", |e| {
        e["content"]["body"] == "still here 2"
    })
    .await;
    let bodies: Vec<String> = user
        .messages(&dm)
        .await
        .into_iter()
        .map(|(_, _, b)| b)
        .filter(|b| b.starts_with("still here"))
        .collect();
    assert_eq!(bodies, ["still here 1", "still here 2"]);
    let log = ferry.log();
    assert!(!log.contains("panicked"), "ferry panicked:\n{log}");
    ferry.kill();
    signal.shutdown().await;
}
both_backends!(malformed_daemon_replies);

/// Disappearing messages: a timer change is shown in the room, messages of a chat with a timer
/// (bridged from Signal or sent from Matrix) are redacted when it runs out, also across a
/// restart of ferry (deadlines are stored), and Matrix messages go out with the chat's timer.
async fn disappearing_messages(backend: Backend) {
    let slot = Slot::claim();
    let sim = Sim::start().await;
    let signal = testnet::signal::SignalServer::start("127.0.0.1:0")
        .await
        .expect("signal simulator");
    let url = signal.control_url();
    control(
        &url,
        Method::POST,
        "/control/users",
        Some(json!({"number": BOB, "givenName": "Bob"})),
    )
    .await;
    control(
        &url,
        Method::POST,
        "/control/accounts",
        Some(json!({"number": ACCOUNT, "givenName": "Alice"})),
    )
    .await;
    let mut ferry = Ferry::start_with(
        &slot,
        backend,
        &sim.url(),
        Some(&signal.rpc_addr().to_string()),
    )
    .await;
    let user = User::register("sigd").await;
    let management = existing_login(&slot, &user).await;
    let acct = crate::common::enc(ACCOUNT);
    let say = async |text: &str, timer: u64| {
        control(
            &url,
            Method::POST,
            &format!("/control/accounts/{acct}/message"),
            Some(json!({"from": BOB, "message": text, "expiresInSeconds": timer})),
        )
        .await;
    };
    say("no timer yet", 0).await;
    let dm = user.wait_portals(1, &management).await[0].clone();
    let kept = user
        .wait_event(&dm, "the first message", |e| {
            e["content"]["body"] == "no timer yet"
        })
        .await;

    say("this will vanish", 8).await;
    user.wait_event(&dm, "the timer notice", |e| {
        e["content"]["body"] == "Bob set disappearing messages to 8 seconds."
    })
    .await;
    let secret = user
        .wait_event(&dm, "the disappearing message", |e| {
            e["content"]["body"] == "this will vanish"
        })
        .await;
    let reply = user.send_text(&dm, "so will this").await;
    let sent = wait_sent(&url, "the reply", "send", |c| {
        c["params"]["message"] == "so will this"
    })
    .await;
    assert_eq!(sent["expiresInSeconds"], 8, "sent with the chat's timer");
    assert_eq!(status_of(&user, &dm, &reply).await["status"], "SUCCESS");

    // ferry restarts before the deadline; both messages still go when it passes.
    let before = user.events(&dm).await;
    let still = before
        .iter()
        .find(|e| e["event_id"] == secret["event_id"])
        .expect("bob's message");
    assert_eq!(
        still["content"]["body"], "this will vanish",
        "not yet redacted"
    );
    ferry.kill();
    ferry.spawn().await;
    for (what, id) in [
        (
            "bob's message redacted",
            secret["event_id"].as_str().expect("id").to_owned(),
        ),
        ("the Matrix reply redacted", reply.clone()),
    ] {
        user.wait_event(&dm, what, move |e| {
            e["event_id"] == id.as_str() && e["content"].as_object().is_some_and(|c| c.is_empty())
        })
        .await;
    }

    // Timer off: announced, and later messages stay.
    say("this one stays", 0).await;
    user.wait_event(&dm, "the timer-off notice", |e| {
        e["content"]["body"] == "Bob turned off disappearing messages."
    })
    .await;
    let stays = user
        .wait_event(&dm, "the lasting message", |e| {
            e["content"]["body"] == "this one stays"
        })
        .await;
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let events = user.events(&dm).await;
    for keep in [&kept, &stays] {
        let now = events
            .iter()
            .find(|e| e["event_id"] == keep["event_id"])
            .expect("still in the room");
        assert_eq!(
            now["content"]["body"], keep["content"]["body"],
            "not redacted"
        );
    }

    // The user sets the chat's timer with the bot's command: signal-cli sets Bob's timer (the
    // chat's id is his ACI), and what the user sends next carries it.
    let bot = slot.bot();
    let set = user
        .command(&dm, &bot, "!ferry disappearing 7d", "disappear")
        .await;
    assert_eq!(set, "Messages in this chat now disappear after 1 week.");
    wait_sent(&url, "the timer change", "updateContact", |c| {
        c["params"]["expiration"] == 604_800
    })
    .await;
    user.send_text(&dm, "for a week").await;
    let sent = wait_sent(&url, "the message with the new timer", "send", |c| {
        c["params"]["message"] == "for a week"
    })
    .await;
    assert_eq!(sent["expiresInSeconds"], 604_800, "{sent}");
    signal.shutdown().await;
}
both_backends!(disappearing_messages);
