//! The core flow a user sees: log in from the bot, sync, talk both ways, group membership.

use reqwest::Method;
use serde_json::json;

use crate::{
    both_backends,
    common::{Backend, Ferry, Sim, Slot, logged_in_user},
};

async fn login_sync_dm_and_group(backend: Backend) {
    let slot = Slot::claim();
    let sim = Sim::start().await;
    sim.user("alice", "Alice Liddell").await;
    sim.user("bob", "Bob Builder").await;
    sim.user("carol", "Carol").await;
    sim.user("dave", "Dave").await;
    let bob_avatar = b"\x89PNG\r\n\x1a\n bob's face".to_vec();
    sim.avatar("bob", "image/png", bob_avatar.clone()).await;
    let dm = sim.dm("alice", "bob").await;
    let group = sim.group("Team", &["alice", "bob", "carol"]).await;
    let ferry = Ferry::start(&slot, backend, &sim.url()).await;
    let bot = slot.bot();

    let (user, management) = logged_in_user(&slot, &sim, "alice").await;
    let answer = user
        .command(&management, &bot, "list-logins", "alice")
        .await;
    assert!(answer.contains("Alice Liddell"), "{answer}");
    let answer = user
        .command(&management, &bot, "sync", "syncing 2 chats")
        .await;
    assert!(answer.contains("sim"), "{answer}");
    let rooms = user.wait_portals(2, &management).await;
    assert_eq!(
        rooms.len(),
        2,
        "one portal per chat, no duplicates: {rooms:?}"
    );

    // Find which room is which by their members.
    let (ghost_bob, ghost_carol, ghost_dave) =
        (slot.ghost("bob"), slot.ghost("carol"), slot.ghost("dave"));
    let mut dm_room = None;
    let mut group_room = None;
    for room in &rooms {
        let members = user
            .wait_members(room, "ghosts to join", |m| m.contains(&ghost_bob))
            .await;
        if members.contains(&ghost_carol) {
            group_room = Some(room.clone());
        } else {
            dm_room = Some(room.clone());
        }
    }
    let (dm_room, group_room) = (
        dm_room.expect("DM portal"),
        group_room.expect("group portal"),
    );
    let members = user.members(&dm_room).await;
    assert_eq!(members, {
        let mut m = vec![bot.clone(), ghost_bob.clone(), user.user_id.clone()];
        m.sort();
        m
    });
    assert_eq!(
        user.displayname(&ghost_bob).await.as_deref(),
        Some("Bob Builder (Sim)")
    );
    // The ghost's avatar is bob's picture, uploaded to the media repository.
    let (bytes, content_type) = user
        .avatar(&ghost_bob)
        .await
        .expect("bob's ghost has an avatar");
    assert_eq!((bytes, content_type.as_str()), (bob_avatar, "image/png"));
    assert_eq!(
        user.avatar(&ghost_carol).await,
        None,
        "carol has no picture"
    );

    // Remote -> Matrix: from the right ghost.
    sim.send(&dm, "bob", "hello from bob").await;
    let (sender, _) = user
        .wait_message(&dm_room, "bob's message", |_, b| b == "hello from bob")
        .await;
    assert_eq!(sender, ghost_bob);

    // Matrix -> remote: as alice.
    user.send_text(&dm_room, "hi bob, it's alice").await;
    sim.wait_message(&dm, "alice's reply", |s, t| {
        s == "alice" && t == "hi bob, it's alice"
    })
    .await;
    // The echo of our own message must not come back into Matrix as a second message.
    sim.send(&dm, "bob", "second from bob").await;
    user.wait_message(&dm_room, "bob's second message", |_, b| {
        b == "second from bob"
    })
    .await;
    let texts: Vec<_> = user
        .messages(&dm_room)
        .await
        .into_iter()
        .map(|(_, _, b)| b)
        .collect();
    assert_eq!(
        texts,
        ["hello from bob", "hi bob, it's alice", "second from bob"]
    );

    // Group messages and membership.
    sim.send(&group, "carol", "carol in the group").await;
    let (sender, _) = user
        .wait_message(&group_room, "carol's message", |_, b| {
            b == "carol in the group"
        })
        .await;
    assert_eq!(sender, ghost_carol);
    user.send_text(&group_room, "alice to the team").await;
    sim.wait_message(&group, "alice in the group", |s, t| {
        s == "alice" && t == "alice to the team"
    })
    .await;

    sim.control(
        Method::POST,
        &format!("/control/groups/{group}/members"),
        Some(json!({"user_id": "dave"})),
    )
    .await;
    user.wait_members(&group_room, "dave's ghost to join", |m| {
        m.contains(&ghost_dave)
    })
    .await;
    sim.control(
        Method::DELETE,
        &format!("/control/groups/{group}/members/carol"),
        None,
    )
    .await;
    let members = user
        .wait_members(&group_room, "carol's ghost to leave", |m| {
            !m.contains(&ghost_carol)
        })
        .await;
    assert!(
        members.contains(&ghost_bob)
            && members.contains(&ghost_dave)
            && members.contains(&user.user_id)
    );

    // A new chat after the sync becomes a portal on first sight.
    let late = sim.group("Late group", &["alice", "dave"]).await;
    sim.send(&late, "dave", "first words").await;
    let rooms = user.wait_portals(3, &management).await;
    let late_room = rooms
        .iter()
        .find(|r| **r != dm_room && **r != group_room)
        .expect("new portal")
        .clone();
    let (sender, _) = user
        .wait_message(&late_room, "dave's message", |_, b| b == "first words")
        .await;
    assert_eq!(sender, ghost_dave);

    let answer = user.command(&management, &bot, "ping", "sim").await;
    assert!(answer.contains("connected"), "{answer}");

    // The metrics tell the same story.
    let metrics = crate::common::http()
        .get(ferry.metrics_url())
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("metric {name} missing:\n{metrics}"))
    };
    assert_eq!(value("ferry_portals "), 3.0);
    assert_eq!(value("ferry_logins_connected{network=\"sim\"}"), 1.0);
    assert!(value("ferry_transactions_total{outcome=\"stored\"}") >= 1.0);
    assert!(
        value("ferry_events_handled_total{direction=\"remote_to_matrix\",outcome=\"success\"}")
            >= 4.0
    );
    assert!(
        value("ferry_events_handled_total{direction=\"matrix_to_remote\",outcome=\"success\"}")
            >= 2.0
    );
}
both_backends!(login_sync_dm_and_group);

async fn commands_check_permissions_and_answer_unknown_input(backend: Backend) {
    let slot = Slot::claim();
    let sim = Sim::start().await;
    let _ferry = Ferry::start(&slot, backend, &sim.url()).await;
    let bot = slot.bot();
    let user = crate::common::User::register("cmd").await;
    let room = user.open_management_room(&bot).await;
    let answer = user
        .command(&room, &bot, "frobnicate", "Unknown command")
        .await;
    assert!(
        answer.contains("login <network>"),
        "unknown input gets help: {answer}"
    );
    user.command(&room, &bot, "version", "ferry ").await;
    user.command(&room, &bot, "login telegraph", "Unknown network")
        .await;
    user.command(&room, &bot, "login sim", "username").await;
    user.command(&room, &bot, "nobody-here", "no Sim user")
        .await;
    user.command(&room, &bot, "cancel", "cancelled").await;
    user.command(&room, &bot, "logout", "No matching login")
        .await;
    // The prefix works in the management room too.
    user.command(&room, &bot, "!ferry help", "Commands").await;
}
both_backends!(commands_check_permissions_and_answer_unknown_input);

async fn permissions_are_enforced(backend: Backend) {
    let slot = Slot::claim();
    let sim = Sim::start().await;
    sim.user("erin", "Erin").await;
    let ferry = Ferry::start(&slot, backend, &sim.url()).await;
    let bot = slot.bot();

    // `commands` level: may talk to the bot, may not log in.
    let limited = crate::common::User::register_exact(&format!("cmdonly{}", ferry.tag)).await;
    let room = limited.open_management_room(&bot).await;
    limited.command(&room, &bot, "help", "Commands").await;
    let answer = limited
        .command(&room, &bot, "login sim", "permission")
        .await;
    assert!(answer.contains("do not have permission"), "{answer}");

    // `block` level: the bot does not stay in their room and does not answer.
    let blocked = crate::common::User::register_exact(&format!("blocked{}", ferry.tag)).await;
    let room = blocked.create_dm(&bot).await;
    blocked
        .wait_members(&room, "the bot to refuse the invite", |m| !m.contains(&bot))
        .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        let members = blocked.members(&room).await;
        assert!(
            !members.contains(&bot),
            "blocked user got the bot to join: {members:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}
both_backends!(permissions_are_enforced);
