//! Every event kind crosses both ways through `sim`, checked as a user would see it on the other
//! side: content and formatting, sender, reply target, edit result, reactions, deletions,
//! receipts, typing, presence, media bytes and metadata, group details, send status.

use reqwest::Method;
use serde_json::{Value, json};

use crate::{
    both_backends,
    common::{Backend, Ferry, Sim, Slot, User, enc, logged_in_user},
};

/// Waits for a sim message from `sender` matching `pred`; returns it.
async fn wait_sim(sim: &Sim, chat: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + crate::common::WAIT;
    loop {
        let all = sim
            .control(
                Method::GET,
                &format!("/control/chats/{chat}/messages"),
                None,
            )
            .await;
        if let Some(m) = all["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| pred(m))
        {
            return m.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what} on sim: {all:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

async fn status_of(user: &User, room: &str, event_id: &str) -> Value {
    let id = event_id.to_owned();
    user.wait_event(room, "the send status", move |e| {
        e["type"] == "com.beeper.message_send_status"
            && e["content"]["m.relates_to"]["event_id"] == id.as_str()
    })
    .await
}

async fn every_event_kind_both_ways(backend: Backend) {
    let slot = Slot::claim();
    let sim = Sim::start().await;
    for (id, name) in [
        ("alice", "Alice"),
        ("bob", "Bob Builder"),
        ("carol", "Carol"),
        ("dave", "Dave"),
    ] {
        sim.user(id, name).await;
    }
    let dm = sim.dm("alice", "bob").await;
    let group = sim.group("Team", &["alice", "bob", "carol"]).await;
    let _ferry = Ferry::start(&slot, backend, &sim.url()).await;
    let bot = slot.bot();
    let (user, management) = logged_in_user(&slot, &sim, "alice").await;
    let rooms = user.wait_portals(2, &management).await;
    let (ghost_bob, ghost_carol) = (slot.ghost("bob"), slot.ghost("carol"));
    let mut dm_room = String::new();
    let mut group_room = String::new();
    for room in &rooms {
        // Groups have a name; DMs do not (clients name them after the other member).
        if user.room_name(room).await.as_deref() == Some("Team") {
            group_room = room.clone()
        } else {
            dm_room = room.clone()
        }
    }
    user.wait_members(&group_room, "the group's ghosts", |m| {
        m.contains(&ghost_bob) && m.contains(&ghost_carol)
    })
    .await;
    user.wait_members(&dm_room, "bob's ghost", |m| m.contains(&ghost_bob))
        .await;
    assert!(!dm_room.is_empty() && !group_room.is_empty());

    // The capability state tells clients what crosses.
    let caps = user
        .call(
            Method::GET,
            &format!(
                "/_matrix/client/v3/rooms/{}/state/net.ferry.capabilities/",
                enc(&dm_room)
            ),
            None,
        )
        .await;
    assert_eq!(caps["reaction"], true);
    assert_eq!(caps["file"]["max_size"], 25 * 1024 * 1024);

    // --- Rich text and mentions, remote -> Matrix.
    let body = json!({"sender": "bob", "text": "hello bold world, alice", "entities": [
        {"type": "bold", "offset": 6, "length": 4},
        {"type": "mention", "offset": 18, "length": 5, "user_id": "alice"},
    ]});
    let m1 = sim
        .control(
            Method::POST,
            &format!("/control/chats/{dm}/messages"),
            Some(body),
        )
        .await;
    let event = user
        .wait_event(&dm_room, "formatted message", |e| {
            e["content"]["body"]
                .as_str()
                .is_some_and(|b| b.starts_with("hello"))
        })
        .await;
    assert_eq!(event["sender"], ghost_bob.as_str());
    let html = event["content"]["formatted_body"]
        .as_str()
        .expect("formatted_body");
    assert!(
        html.contains("<strong>bold</strong>") || html.contains("<b>bold</b>"),
        "{html}"
    );
    assert!(
        html.contains(&format!("https://matrix.to/#/{}", user.user_id)),
        "mention pills the Matrix user: {html}"
    );
    assert_eq!(
        event["content"]["m.mentions"]["user_ids"],
        json!([user.user_id])
    );
    let bob_event = event["event_id"].as_str().expect("id").to_owned();

    // --- Rich text, Matrix -> remote, as a reply.
    let reply = user
        .send_event(
            &dm_room,
            "m.room.message",
            json!({
                "msgtype": "m.text", "body": "**yes** `code`", "format": "org.matrix.custom.html",
                "formatted_body": "<b>yes</b> <code>code</code>",
                "m.relates_to": {"m.in_reply_to": {"event_id": bob_event}},
            }),
        )
        .await;
    let sent = wait_sim(&sim, &dm, "the formatted reply", |m| {
        m["sender"] == "alice" && m["text"] == "yes code"
    })
    .await;
    assert_eq!(sent["reply_to"], m1["id"]);
    let kinds: Vec<(String, u64, u64)> = sent["entities"]
        .as_array()
        .expect("entities")
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or("").to_owned(),
                e["offset"].as_u64().unwrap_or(99),
                e["length"].as_u64().unwrap_or(99),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("bold".into(), 0, 3)) && kinds.contains(&("code".into(), 4, 4)),
        "{kinds:?}"
    );
    assert_eq!(
        status_of(&user, &dm_room, &reply).await["content"]["status"],
        "SUCCESS"
    );
    let alice_mid = sent["id"].as_str().expect("id").to_owned();

    // --- Replies, remote -> Matrix.
    sim.control(
        Method::POST,
        &format!("/control/chats/{dm}/messages"),
        Some(json!({"sender": "bob", "text": "replying to you", "reply_to": alice_mid})),
    )
    .await;
    let event = user
        .wait_event(&dm_room, "bob's reply", |e| {
            e["content"]["body"] == "replying to you"
        })
        .await;
    assert_eq!(
        event["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        reply.as_str()
    );

    // --- Edits both ways.
    sim.control(
        Method::PATCH,
        &format!(
            "/control/chats/{dm}/messages/{}",
            m1["id"].as_str().unwrap_or_default()
        ),
        Some(json!({"sender": "bob", "text": "hello edited world"})),
    )
    .await;
    let edit = user
        .wait_event(&dm_room, "bob's edit", |e| {
            e["content"]["m.relates_to"]["rel_type"] == "m.replace"
        })
        .await;
    assert_eq!(
        edit["content"]["m.relates_to"]["event_id"],
        bob_event.as_str()
    );
    assert_eq!(
        edit["content"]["m.new_content"]["body"],
        "hello edited world"
    );
    assert_eq!(edit["sender"], ghost_bob.as_str());
    user.send_event(&dm_room, "m.room.message", json!({
        "msgtype": "m.text", "body": "* yes, edited", "m.new_content": {"msgtype": "m.text", "body": "yes, edited"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": reply},
    })).await;
    user.send_event(&dm_room, "m.room.message", json!({
        "msgtype": "m.text", "body": "* yes, edited twice", "m.new_content": {"msgtype": "m.text", "body": "yes, edited twice"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": reply},
    })).await;
    wait_sim(&sim, &dm, "the latest edit", |m| {
        m["id"] == alice_mid.as_str() && m["text"] == "yes, edited twice"
    })
    .await;

    // --- Reactions both ways, several per user, and removal.
    let react = |emoji: &str, sender: &str, remove: bool| {
        let path = format!(
            "/control/chats/{dm}/messages/{alice_mid}/reactions/{}",
            enc(emoji)
        );
        let sim = &sim;
        let sender = sender.to_owned();
        async move {
            if remove {
                sim.control(Method::DELETE, &format!("{path}?sender={sender}"), None)
                    .await
            } else {
                sim.control(Method::PUT, &path, Some(json!({"sender": sender})))
                    .await
            }
        }
    };
    react("👍", "bob", false).await;
    react("❤️", "bob", false).await;
    for key in ["👍", "❤️"] {
        let ev = user
            .wait_event(&dm_room, "bob's reaction", |e| {
                e["type"] == "m.reaction" && e["content"]["m.relates_to"]["key"] == key
            })
            .await;
        assert_eq!(ev["sender"], ghost_bob.as_str());
        assert_eq!(ev["content"]["m.relates_to"]["event_id"], reply.as_str());
    }
    react("👍", "bob", true).await;
    user.wait_event(&dm_room, "the 👍 to be redacted", |e| {
        e["type"] == "m.reaction" && e["content"].as_object().is_some_and(|c| c.is_empty())
    })
    .await;
    let my_reaction = user.send_event(&dm_room, "m.reaction", json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": bob_event, "key": "🎉"}})).await;
    let reactions_path = format!(
        "/control/chats/{dm}/messages/{}/reactions",
        m1["id"].as_str().unwrap_or_default()
    );
    let deadline = std::time::Instant::now() + crate::common::WAIT;
    loop {
        let r = sim.control(Method::GET, &reactions_path, None).await;
        if r["reactions"].as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x["sender"] == "alice" && x["emoji"] == "🎉")
        }) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "reaction never reached sim: {r}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    user.put(
        &format!(
            "/_matrix/client/v3/rooms/{}/redact/{}/t{}",
            enc(&dm_room),
            enc(&my_reaction),
            rand::random::<u32>()
        ),
        json!({}),
    )
    .await;
    crate::common::poll(
        "reaction removal never reached sim",
        async || sim.control(Method::GET, &reactions_path, None).await,
        |r| r["reactions"].as_array().is_some_and(|a| a.is_empty()),
    )
    .await;

    // --- Read receipts and typing both ways.
    sim.control(
        Method::POST,
        &format!("/control/chats/{dm}/read"),
        Some(json!({"sender": "bob", "up_to": alice_mid})),
    )
    .await;
    let bob_read = ghost_bob.clone();
    let reply_id = reply.clone();
    user.wait_ephemeral(&dm_room, "bob's read receipt", move |e| {
        e["type"] == "m.receipt"
            && e["content"][reply_id.as_str()]["m.read"][bob_read.as_str()].is_object()
    })
    .await;
    user.call(
        Method::POST,
        &format!(
            "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
            enc(&dm_room),
            enc(&bob_event)
        ),
        Some(json!({})),
    )
    .await;
    crate::common::poll(
        "receipt never reached sim",
        async || {
            sim.control(Method::GET, &format!("/control/chats/{dm}/read"), None)
                .await
        },
        |r| r["read"]["alice"] == m1["id"],
    )
    .await;
    sim.control(
        Method::POST,
        &format!("/control/chats/{dm}/typing"),
        Some(json!({"sender": "bob", "typing": true})),
    )
    .await;
    let bob_typing = ghost_bob.clone();
    user.wait_ephemeral(&dm_room, "bob typing", move |e| {
        e["type"] == "m.typing"
            && e["content"]["user_ids"]
                .as_array()
                .is_some_and(|u| u.iter().any(|x| x == bob_typing.as_str()))
    })
    .await;
    user.put(
        &format!(
            "/_matrix/client/v3/rooms/{}/typing/{}",
            enc(&dm_room),
            enc(&user.user_id)
        ),
        json!({"typing": true, "timeout": 10000}),
    )
    .await;
    crate::common::poll(
        "typing never reached sim",
        async || {
            sim.control(Method::GET, &format!("/control/chats/{dm}/typing"), None)
                .await
        },
        |r| {
            r["typing"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == "alice"))
        },
    )
    .await;

    // --- Presence.
    sim.control(
        Method::POST,
        "/control/presence",
        Some(json!({"user_id": "bob", "presence": "online"})),
    )
    .await;
    crate::common::poll(
        "presence never reached Matrix",
        async || {
            user.call(
                Method::GET,
                &format!("/_matrix/client/v3/presence/{}/status", enc(&ghost_bob)),
                None,
            )
            .await
        },
        |p| p["presence"] == "online",
    )
    .await;

    // --- Media both ways: bytes and metadata.
    let image = vec![0x89, b'P', b'N', b'G', 1, 2, 3, 4, 5];
    let upload = sim.upload_media("image/png", image.clone()).await;
    sim.control(
        Method::POST,
        &format!("/control/chats/{dm}/messages"),
        Some(json!({"sender": "bob", "text": "a picture",
        "media": {"id": upload, "kind": "image", "name": "pic.png", "width": 3, "height": 2}})),
    )
    .await;
    let ev = user
        .wait_event(&dm_room, "the image", |e| {
            e["content"]["msgtype"] == "m.image"
        })
        .await;
    assert_eq!(ev["content"]["info"]["mimetype"], "image/png");
    assert_eq!(ev["content"]["info"]["size"], image.len());
    assert_eq!(
        (
            ev["content"]["info"]["w"].as_u64(),
            ev["content"]["info"]["h"].as_u64()
        ),
        (Some(3), Some(2))
    );
    assert_eq!(ev["content"]["body"], "a picture", "the caption");
    assert_eq!(ev["content"]["filename"], "pic.png");
    assert_eq!(
        user.download(ev["content"]["url"].as_str().expect("url"))
            .await,
        image
    );

    let voice = vec![b'O', b'g', b'g', b'S', 9, 9, 9];
    let upload = sim.upload_media("audio/ogg", voice.clone()).await;
    sim.control(Method::POST, &format!("/control/chats/{dm}/messages"), Some(json!({"sender": "bob",
        "media": {"id": upload, "kind": "voice", "name": "voice.ogg", "duration_ms": 2500, "waveform": [0, 128, 255]}}))).await;
    let ev = user
        .wait_event(&dm_room, "the voice note", |e| {
            e["content"]["org.matrix.msc3245.voice"].is_object()
        })
        .await;
    assert_eq!(ev["content"]["msgtype"], "m.audio");
    assert_eq!(ev["content"]["info"]["duration"], 2500);
    assert_eq!(
        ev["content"]["org.matrix.msc1767.audio"]["waveform"],
        json!([0, 512, 1020])
    );

    let file = b"plain file contents".to_vec();
    let mxc = user.upload("text/plain", file.clone()).await;
    let file_event = user
        .send_event(
            &dm_room,
            "m.room.message",
            json!({"msgtype": "m.file", "body": "notes.txt", "url": mxc,
        "info": {"mimetype": "text/plain", "size": file.len()}}),
        )
        .await;
    let sent = wait_sim(&sim, &dm, "the file", |m| m["media"]["name"] == "notes.txt").await;
    assert_eq!(sent["media"]["kind"], "file");
    assert_eq!(sent["media"]["content_type"], "text/plain");
    let media_id = sent["media"]["id"].as_str().expect("media id");
    let bytes = crate::common::http()
        .get(format!("{}/control/media/{media_id}", sim.url()))
        .send()
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(bytes.to_vec(), file);
    assert_eq!(
        status_of(&user, &dm_room, &file_event).await["content"]["status"],
        "SUCCESS"
    );

    // Over the network's size limit: a clear permanent failure.
    let big = user
        .send_event(
            &dm_room,
            "m.room.message",
            json!({"msgtype": "m.file", "body": "huge.bin", "url": mxc,
        "info": {"mimetype": "application/octet-stream", "size": 30 * 1024 * 1024}}),
        )
        .await;
    let status = status_of(&user, &dm_room, &big).await;
    assert_eq!(status["content"]["status"], "FAIL_PERMANENT");
    assert!(
        status["content"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("too large"),
        "{status}"
    );
    user.wait_message(&dm_room, "the failure notice", |s, b| {
        s == bot && b.contains("not bridged") && b.contains("too large")
    })
    .await;

    // Locations both ways.
    sim.control(
        Method::POST,
        &format!("/control/chats/{dm}/messages"),
        Some(json!({"sender": "bob", "location": {"lat": 52.52, "lon": 13.405, "name": "Berlin"}})),
    )
    .await;
    let ev = user
        .wait_event(&dm_room, "the location", |e| {
            e["content"]["msgtype"] == "m.location"
        })
        .await;
    assert_eq!(ev["content"]["geo_uri"], "geo:52.52,13.405");
    user.send_event(
        &dm_room,
        "m.room.message",
        json!({"msgtype": "m.location", "body": "Home", "geo_uri": "geo:48.1,11.5"}),
    )
    .await;
    let sent = wait_sim(&sim, &dm, "the location", |m| m["location"]["lat"] == 48.1).await;
    assert_eq!(sent["location"]["lon"], 11.5);

    // An unsupported msgtype gets a permanent failure status, never silence.
    let odd = user
        .send_event(
            &dm_room,
            "m.room.message",
            json!({"msgtype": "org.example.poll", "body": "?"}),
        )
        .await;
    assert_eq!(
        status_of(&user, &dm_room, &odd).await["content"]["status"],
        "FAIL_PERMANENT"
    );

    // --- Deletes both ways.
    sim.control(
        Method::DELETE,
        &format!(
            "/control/chats/{dm}/messages/{}?sender=bob",
            m1["id"].as_str().unwrap_or_default()
        ),
        None,
    )
    .await;
    let id = bob_event.clone();
    user.wait_event(&dm_room, "bob's message to be redacted", move |e| {
        e["event_id"] == id.as_str() && e["content"].as_object().is_some_and(|c| c.is_empty())
    })
    .await;
    user.put(
        &format!(
            "/_matrix/client/v3/rooms/{}/redact/{}/t{}",
            enc(&dm_room),
            enc(&reply),
            rand::random::<u32>()
        ),
        json!({}),
    )
    .await;
    let deadline = std::time::Instant::now() + crate::common::WAIT;
    loop {
        let all = sim
            .control(Method::GET, &format!("/control/chats/{dm}/messages"), None)
            .await;
        if !all["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["id"] == alice_mid.as_str())
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "delete never reached sim"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // --- Group details and admins.
    sim.control(
        Method::POST,
        &format!("/control/groups/{group}/admins"),
        Some(json!({"user_id": "carol"})),
    )
    .await;
    let carol = ghost_carol.clone();
    user.wait_event(&group_room, "carol's power level", move |e| {
        e["type"] == "m.room.power_levels" && e["content"]["users"][carol.as_str()] == 50
    })
    .await;
    sim.control(
        Method::PATCH,
        &format!("/control/chats/{group}"),
        Some(json!({"sender": "carol", "name": "Team Rocket", "topic": "blast off"})),
    )
    .await;
    user.wait_event(&group_room, "the new name", |e| {
        e["type"] == "m.room.name" && e["content"]["name"] == "Team Rocket"
    })
    .await;
    user.wait_event(&group_room, "the new topic", |e| {
        e["type"] == "m.room.topic" && e["content"]["topic"] == "blast off"
    })
    .await;
    user.put(
        &format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.topic/",
            enc(&group_room)
        ),
        json!({"topic": "from Matrix"}),
    )
    .await;
    crate::common::poll(
        "topic never reached sim",
        async || {
            sim.control(Method::GET, &format!("/control/chats/{group}"), None)
                .await
        },
        |chat| chat["topic"] == "from Matrix",
    )
    .await;

    // --- Relay mode: a Matrix user without a login is relayed with their name.
    let guest = User::register("guest").await;
    user.call(
        Method::POST,
        &format!("/_matrix/client/v3/rooms/{}/invite", enc(&group_room)),
        Some(json!({"user_id": guest.user_id})),
    )
    .await;
    guest
        .call(
            Method::POST,
            &format!("/_matrix/client/v3/join/{}", enc(&group_room)),
            Some(json!({})),
        )
        .await;
    let no_relay = guest.send_text(&group_room, "before relay").await;
    assert_eq!(
        status_of(&user, &group_room, &no_relay).await["content"]["status"],
        "FAIL_PERMANENT"
    );
    user.command(&group_room, &bot, "!ferry set-relay", "relayed through")
        .await;
    guest.send_text(&group_room, "hello via relay").await;
    let relayed = wait_sim(&sim, &group, "the relayed message", |m| {
        m["text"]
            .as_str()
            .is_some_and(|t| t.ends_with("hello via relay"))
    })
    .await;
    assert_eq!(relayed["sender"], "alice");
    assert!(
        relayed["text"].as_str().unwrap_or("").starts_with("guest"),
        "the relayed sender is named: {relayed}"
    );
    user.command(&group_room, &bot, "!ferry unset-relay", "Relaying is off")
        .await;

    // --- Bot commands for chats.
    user.command(&management, &bot, "resolve-identifier dave", "Dave")
        .await;
    user.command(&management, &bot, "pm dave", "Opening your chat with Dave")
        .await;
    let rooms = user.wait_portals(3, &management).await;
    assert_eq!(rooms.len(), 3);
    user.command(
        &management,
        &bot,
        "create-group Book club with bob dave",
        "Created the group Book club",
    )
    .await;
    let rooms = user.wait_portals(4, &management).await;
    assert_eq!(rooms.len(), 4);

    // --- A chat deleted remotely: the room is told and left.
    sim.control(Method::DELETE, &format!("/control/chats/{group}"), None)
        .await;
    user.wait_message(&group_room, "the deletion notice", |s, b| {
        s == bot && b.contains("deleted")
    })
    .await;
    let deadline = std::time::Instant::now() + crate::common::WAIT;
    while user.joined_rooms().await.contains(&group_room) {
        assert!(
            std::time::Instant::now() < deadline,
            "the user was not removed from the deleted chat's room"
        );
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    }
}
both_backends!(every_event_kind_both_ways);

async fn room_changes_members_and_admin_commands(backend: Backend) {
    let slot = Slot::claim();
    let sim = Sim::start().await;
    for (id, name) in [("alice", "Alice"), ("bob", "Bob"), ("dave", "Dave")] {
        sim.user(id, name).await;
    }
    // alice creates the group, so her account is its admin.
    let group = sim.group("Club", &["alice", "bob"]).await;
    let ferry = Ferry::start(&slot, backend, &sim.url()).await;
    let bot = slot.bot();
    let (user, management) = logged_in_user(&slot, &sim, "alice").await;
    let room = user.wait_portals(1, &management).await[0].clone();
    let ghost_dave = slot.ghost("dave");
    let chat = |sim: &Sim| {
        let path = format!("/control/chats/{group}");
        let sim_url = sim.url();
        async move {
            crate::common::http()
                .get(format!("{sim_url}{path}"))
                .send()
                .await
                .expect("chat")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
        let deadline = std::time::Instant::now() + crate::common::WAIT;
        while !check().await {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        }
    }

    // Inviting a ghost in Matrix adds the remote user; kicking removes them.
    user.call(
        Method::POST,
        &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
        Some(json!({"user_id": ghost_dave})),
    )
    .await;
    until("dave to be added on sim", async || {
        chat(&sim).await["members"]
            .as_array()
            .is_some_and(|m| m.iter().any(|u| u["id"] == "dave"))
    })
    .await;
    user.wait_members(&room, "dave's ghost to join", |m| m.contains(&ghost_dave))
        .await;
    user.call(
        Method::POST,
        &format!("/_matrix/client/v3/rooms/{}/kick", enc(&room)),
        Some(json!({"user_id": ghost_dave, "reason": "bye"})),
    )
    .await;
    until("dave to be removed on sim", async || {
        !chat(&sim).await["members"]
            .as_array()
            .is_some_and(|m| m.iter().any(|u| u["id"] == "dave"))
    })
    .await;

    // Renaming and a new picture in Matrix reach the remote group.
    user.put(
        &format!("/_matrix/client/v3/rooms/{}/state/m.room.name/", enc(&room)),
        json!({"name": "Club Deluxe"}),
    )
    .await;
    until("the new name on sim", async || {
        chat(&sim).await["name"] == "Club Deluxe"
    })
    .await;
    let picture = vec![0x89, b'P', b'N', b'G', 7, 7, 7];
    let mxc = user.upload("image/png", picture.clone()).await;
    user.put(
        &format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.avatar/",
            enc(&room)
        ),
        json!({"url": mxc}),
    )
    .await;
    until("the new picture on sim", async || {
        chat(&sim).await["avatar"].is_string()
    })
    .await;
    let avatar = chat(&sim).await["avatar"]
        .as_str()
        .expect("avatar id")
        .to_owned();
    let bytes = crate::common::http()
        .get(format!("{}/control/media/{avatar}", sim.url()))
        .send()
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(bytes.to_vec(), picture);

    // Another room can become the management room.
    let other = user.create_dm(&bot).await;
    user.wait_message(&other, "the bot's greeting", |s, _| s == bot)
        .await;
    user.command(
        &other,
        &bot,
        "!ferry set-management-room",
        "now your management room",
    )
    .await;
    user.command(&other, &bot, "list-logins", "alice").await;

    // Only admins may delete portals; an admin's delete-portal removes the bridge from the room.
    user.command(
        &room,
        &bot,
        "!ferry delete-portal",
        "do not have permission",
    )
    .await;
    let admin = User::register_exact(&format!("admin{}", ferry.tag)).await;
    user.call(
        Method::POST,
        &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
        Some(json!({"user_id": admin.user_id})),
    )
    .await;
    admin
        .call(
            Method::POST,
            &format!("/_matrix/client/v3/join/{}", enc(&room)),
            Some(json!({})),
        )
        .await;
    admin.send_text(&room, "!ferry delete-portal").await;
    until(
        "the user to be removed from the deleted portal",
        async || !user.joined_rooms().await.contains(&room),
    )
    .await;
    // The chat itself lives on; a new message creates a fresh portal.
    sim.send(&group, "bob", "still here").await;
    let known = [room.clone(), management.clone(), other.clone()];
    let mut fresh = Vec::new();
    until("a fresh portal", async || {
        user.accept_invites().await;
        fresh = user
            .joined_rooms()
            .await
            .into_iter()
            .filter(|r| !known.contains(r))
            .collect();
        !fresh.is_empty()
    })
    .await;
    assert_eq!(fresh.len(), 1, "{fresh:?}");
    user.wait_message(&fresh[0], "bob's message in the new portal", |_, b| {
        b == "still here"
    })
    .await;
}
both_backends!(room_changes_members_and_admin_commands);

async fn media_kinds_and_replies_across_a_restart(backend: Backend) {
    let slot = Slot::claim();
    let sim = Sim::start().await;
    sim.user("alice", "Alice").await;
    sim.user("bob", "Bob").await;
    let dm = sim.dm("alice", "bob").await;
    let mut ferry = Ferry::start(&slot, backend, &sim.url()).await;
    let (user, management) = logged_in_user(&slot, &sim, "alice").await;
    let room = user.wait_portals(1, &management).await[0].clone();

    // A reply to a message bridged before a restart still points at it.
    let before = sim.send(&dm, "bob", "from before the restart").await;
    let old = user
        .wait_event(&room, "the old message", |e| {
            e["content"]["body"] == "from before the restart"
        })
        .await;
    ferry.kill();
    ferry.spawn().await;
    user.send_event(
        &room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": "answering the old one",
        "m.relates_to": {"m.in_reply_to": {"event_id": old["event_id"]}}}),
    )
    .await;
    let reply = wait_sim(&sim, &dm, "the reply", |m| {
        m["text"] == "answering the old one"
    })
    .await;
    assert_eq!(reply["reply_to"], before.as_str());
    sim.control(
        Method::POST,
        &format!("/control/chats/{dm}/messages"),
        Some(json!({"sender": "bob", "text": "and back", "reply_to": reply["id"]})),
    )
    .await;
    let back = user
        .wait_event(&room, "bob's reply after the restart", |e| {
            e["content"]["body"] == "and back"
        })
        .await;
    assert!(back["content"]["m.relates_to"]["m.in_reply_to"]["event_id"].is_string());

    // Remote -> Matrix: video, audio, sticker, contact card.
    for (kind, mime, name) in [
        ("video", "video/mp4", "clip.mp4"),
        ("audio", "audio/mpeg", "song.mp3"),
        ("sticker", "image/webp", "wave.webp"),
    ] {
        let id = sim
            .upload_media(mime, format!("{kind} bytes").into_bytes())
            .await;
        sim.control(Method::POST, &format!("/control/chats/{dm}/messages"), Some(json!({"sender": "bob",
            "media": {"id": id, "kind": kind, "name": name, "width": 4, "height": 4, "duration_ms": 1000}}))).await;
    }
    let video = user
        .wait_event(&room, "the video", |e| e["content"]["msgtype"] == "m.video")
        .await;
    assert_eq!(
        (
            video["content"]["info"]["mimetype"].as_str(),
            video["content"]["info"]["duration"].as_u64()
        ),
        (Some("video/mp4"), Some(1000))
    );
    assert_eq!(
        user.download(video["content"]["url"].as_str().expect("url"))
            .await,
        b"video bytes"
    );
    let audio = user
        .wait_event(&room, "the audio", |e| e["content"]["msgtype"] == "m.audio")
        .await;
    assert!(
        audio["content"]["org.matrix.msc3245.voice"].is_null(),
        "plain audio is not a voice note"
    );
    let sticker = user
        .wait_event(&room, "the sticker", |e| e["type"] == "m.sticker")
        .await;
    assert_eq!(sticker["content"]["info"]["mimetype"], "image/webp");
    assert_eq!(
        user.download(sticker["content"]["url"].as_str().expect("url"))
            .await,
        b"sticker bytes"
    );
    sim.control(
        Method::POST,
        &format!("/control/chats/{dm}/messages"),
        Some(json!({"sender": "bob", "contact": {"name": "Carol Card", "phone": "+15550100"}})),
    )
    .await;
    let card = user
        .wait_event(&room, "the contact card", |e| {
            e["content"]["body"]
                .as_str()
                .is_some_and(|b| b.contains("Carol Card"))
        })
        .await;
    assert!(
        card["content"]["body"]
            .as_str()
            .unwrap_or("")
            .contains("+15550100")
    );

    // Matrix -> remote: video, audio, sticker keep their kind and bytes.
    for (msgtype, mime, name, kind) in [
        ("m.video", "video/mp4", "mine.mp4", "video"),
        ("m.audio", "audio/mpeg", "mine.mp3", "audio"),
    ] {
        let mxc = user
            .upload(mime, format!("{name} bytes").into_bytes())
            .await;
        user.send_event(
            &room,
            "m.room.message",
            json!({"msgtype": msgtype, "body": name, "url": mxc,
            "info": {"mimetype": mime, "duration": 1500}}),
        )
        .await;
        let sent = wait_sim(&sim, &dm, name, |m| m["media"]["name"] == name).await;
        assert_eq!(
            (
                sent["media"]["kind"].as_str(),
                sent["media"]["duration_ms"].as_u64()
            ),
            (Some(kind), Some(1500))
        );
    }
    let mxc = user.upload("image/webp", b"my sticker".to_vec()).await;
    user.send_event(
        &room,
        "m.sticker",
        json!({"body": "hi", "url": mxc, "info": {"mimetype": "image/webp", "w": 8, "h": 8}}),
    )
    .await;
    let sent = wait_sim(&sim, &dm, "the sticker", |m| {
        m["sender"] == "alice" && m["media"]["kind"] == "sticker"
    })
    .await;
    let media_id = sent["media"]["id"].as_str().expect("media id");
    let bytes = crate::common::http()
        .get(format!("{}/control/media/{media_id}", sim.url()))
        .send()
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(bytes.to_vec(), b"my sticker");
}
both_backends!(media_kinds_and_replies_across_a_restart);

/// With `message_status_events` off (the default), nothing but the message itself reaches the
/// homeserver for a bridged message, and a failure is still told, by a notice.
async fn failures_are_told_without_status_events(backend: Backend) {
    let slot = Slot::claim();
    let sim = Sim::start().await;
    sim.user("alice", "Alice").await;
    sim.user("bob", "Bob").await;
    let dm = sim.dm("alice", "bob").await;
    let mut ferry = Ferry::start(&slot, backend, &sim.url()).await;
    ferry.kill();
    let config = std::fs::read_to_string(&ferry.config_path).expect("config");
    assert!(config.contains("message_status_events: true"));
    std::fs::write(
        &ferry.config_path,
        config.replace("  message_status_events: true\n", ""),
    )
    .expect("rewrite config");
    ferry.spawn().await;
    let (user, management) = logged_in_user(&slot, &sim, "alice").await;
    let room = user.wait_portals(1, &management).await.remove(0);

    let sent = user.send_text(&room, "no status for me").await;
    sim.wait_message(&dm, "the text", |_, text| text == "no status for me")
        .await;
    let odd = user
        .send_event(
            &room,
            "m.room.message",
            json!({"msgtype": "org.example.poll", "body": "?"}),
        )
        .await;
    let bot = slot.bot();
    user.wait_event(&room, "the failure notice", |e| {
        e["sender"] == bot.as_str()
            && e["content"]["msgtype"] == "m.notice"
            && e["content"]["body"]
                .as_str()
                .is_some_and(|b| b.contains("was not bridged"))
    })
    .await;
    let statuses: Vec<Value> = user
        .events(&room)
        .await
        .into_iter()
        .filter(|e| e["type"] == "com.beeper.message_send_status")
        .collect();
    assert!(
        statuses.is_empty(),
        "status events for {sent} / {odd} although they are off: {statuses:#?}"
    );
}
both_backends!(failures_are_told_without_status_events);
