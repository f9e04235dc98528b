//! WhatsApp groups and communities through ferry against testnet's simulator (real Synapse,
//! whatsapp-rust at both ends): a group's description and picture become the room's topic and
//! avatar at creation and when they change, and the room's topic and avatar set in Matrix become
//! the group's; admins promoted and demoted move their ghosts' power level; a member leaving
//! leaves the room; inviting and kicking ghosts from Matrix adds and removes people, and
//! WhatsApp's refusal (not an admin) is undone in the room and explained. A community becomes a
//! space whose children are its groups' portals, its announcement group read-only, and a group
//! linked later joins the space.

use std::time::Duration;

use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};
use testnet::whatsapp::WhatsAppServer;

use crate::{
    both_backends,
    common::{Backend, User, enc, poll},
    whatsapp::{
        ALICE, BOB, Scenario, USER, contact, control, ghost, post, qr_login, wait_received,
    },
};

const CAROL: &str = "5511900000004";
const DAVE: &str = "5511900000005";

/// A picture of `w` x `h` pixels in one colour, encoded as `format`.
fn picture(w: u32, h: u32, rgb: [u8; 3], format: image::ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_pixel(w, h, image::Rgb(rgb))
        .write_to(&mut out, format)
        .expect("encode picture");
    out.into_inner()
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// A state event of a room (`None` when unset).
async fn state(user: &User, room: &str, kind: &str, key: &str) -> Option<Value> {
    let all = user
        .call(
            Method::GET,
            &format!("/_matrix/client/v3/rooms/{}/state", enc(room)),
            None,
        )
        .await;
    all.as_array()?
        .iter()
        .find(|e| e["type"] == kind && e["state_key"] == key)
        .map(|e| e["content"].clone())
}

async fn state_keys(user: &User, room: &str, kind: &str) -> Vec<String> {
    let all = user
        .call(
            Method::GET,
            &format!("/_matrix/client/v3/rooms/{}/state", enc(room)),
            None,
        )
        .await;
    all.as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["type"] == kind && e["content"].as_object().is_some_and(|c| !c.is_empty()))
        .filter_map(|e| e["state_key"].as_str().map(str::to_owned))
        .collect()
}

/// The space's children and the room's parents, as `{children, parents}`.
async fn space_links(user: &User, space: &str, room: &str) -> Value {
    json!({
        "children": state_keys(user, space, "m.space.child").await,
        "parents": state_keys(user, room, "m.space.parent").await,
    })
}

async fn set_state(user: &User, room: &str, kind: &str, content: Value) {
    user.call(
        Method::PUT,
        &format!("/_matrix/client/v3/rooms/{}/state/{kind}/", enc(room)),
        Some(content),
    )
    .await;
}

async fn power_level(user: &User, room: &str, who: &str) -> i64 {
    let levels = state(user, room, "m.room.power_levels", "")
        .await
        .unwrap_or_default();
    levels["users"][who]
        .as_i64()
        .unwrap_or_else(|| levels["users_default"].as_i64().unwrap_or(0))
}

async fn wait_power_level(user: &User, room: &str, who: &str, level: i64) {
    poll(
        &format!("{who} at power level {level}"),
        async || json!(power_level(user, room, who).await),
        |l| l == &json!(level),
    )
    .await;
}

/// The room's avatar image (downloaded), once its URL satisfies `pred`.
async fn wait_avatar(user: &User, room: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let content = poll(
        what,
        async || {
            state(user, room, "m.room.avatar", "")
                .await
                .unwrap_or(Value::Null)
        },
        |c| c["url"].as_str().is_some_and(&pred),
    )
    .await;
    content["url"].as_str().expect("avatar url").to_owned()
}

async fn details(wa: &WhatsAppServer, group: &str) -> Value {
    control(
        wa,
        Method::GET,
        &format!("/control/groups/details?id={group}"),
        None,
    )
    .await
}

async fn member_state(user: &User, room: &str, who: &str) -> String {
    state(user, room, "m.room.member", who)
        .await
        .and_then(|c| c["membership"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

async fn invite(user: &User, room: &str, who: &str) {
    user.call(
        Method::POST,
        &format!("/_matrix/client/v3/rooms/{}/invite", enc(room)),
        Some(json!({ "user_id": who })),
    )
    .await;
}

async fn kick(user: &User, room: &str, who: &str) {
    user.call(
        Method::POST,
        &format!("/_matrix/client/v3/rooms/{}/kick", enc(room)),
        Some(json!({ "user_id": who, "reason": "test" })),
    )
    .await;
}

async fn group_details_and_members(backend: Backend) {
    let Scenario {
        slot,
        sim: _sim,
        wa,
        ferry: _ferry,
        bot,
        user,
        room,
    } = Scenario::linked(
        backend,
        "wagroups",
        &[
            contact(ALICE, "Alice"),
            contact(BOB, "Bob"),
            contact(CAROL, "Carol"),
            contact(DAVE, "Dave"),
        ],
    )
    .await;

    // Bob's group has a description and a picture before ferry sees it.
    let gjid = post(
        &wa,
        "/control/groups",
        json!({ "subject": "Allotment", "creator": BOB, "members": [USER, ALICE, CAROL] }),
    )
    .await["jid"]
        .as_str()
        .expect("group jid")
        .to_owned();
    post(
        &wa,
        "/control/groups/description",
        json!({ "group": gjid, "author": BOB, "description": "Plots 4 to 9" }),
    )
    .await;
    let green = picture(32, 32, [0, 160, 0], image::ImageFormat::Jpeg);
    post(
        &wa,
        "/control/groups/picture",
        json!({ "group": gjid, "author": BOB, "image": b64(&green) }),
    )
    .await;
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

    // At creation: the description is the topic, the picture the avatar.
    let topic = poll(
        "the topic from the description",
        async || json!(state(&user, &portal, "m.room.topic", "").await),
        |t| t["topic"] == "Plots 4 to 9",
    )
    .await;
    assert_eq!(topic["topic"], "Plots 4 to 9");
    let first = wait_avatar(&user, &portal, "the group picture as avatar", |_| true).await;
    assert_eq!(
        user.download(&first).await,
        green,
        "the avatar is the group's picture"
    );

    // WhatsApp -> Matrix on change: description and picture.
    post(
        &wa,
        "/control/groups/description",
        json!({ "group": gjid, "author": BOB, "description": "Plots 4 to 12" }),
    )
    .await;
    poll(
        "the topic changed",
        async || json!(state(&user, &portal, "m.room.topic", "").await),
        |t| t["topic"] == "Plots 4 to 12",
    )
    .await;
    let red = picture(48, 48, [200, 0, 0], image::ImageFormat::Jpeg);
    let red_id = post(
        &wa,
        "/control/groups/picture",
        json!({ "group": gjid, "author": BOB, "image": b64(&red) }),
    )
    .await["picture"]
        .clone();
    let second = wait_avatar(&user, &portal, "the new group picture", |u| u != first).await;
    assert_eq!(user.download(&second).await, red);

    // Matrix -> WhatsApp: the topic becomes the description, the avatar the picture (a JPEG of
    // at most 640 px a side, from a larger PNG).
    set_state(
        &user,
        &portal,
        "m.room.topic",
        json!({"topic": "Set in Matrix"}),
    )
    .await;
    poll(
        "the WhatsApp description",
        async || details(&wa, &gjid).await,
        |g| g["description"] == "Set in Matrix",
    )
    .await;
    let blue = picture(900, 700, [0, 0, 220], image::ImageFormat::Png);
    let mxc = user.upload("image/png", blue).await;
    set_state(&user, &portal, "m.room.avatar", json!({"url": mxc})).await;
    let group = poll(
        "the WhatsApp group picture",
        async || details(&wa, &gjid).await,
        |g| g["picture"]["image"].is_string() && g["picture"]["id"] != red_id,
    )
    .await;
    let got = base64::engine::general_purpose::STANDARD
        .decode(group["picture"]["image"].as_str().expect("image"))
        .expect("base64");
    let jpeg = image::load_from_memory_with_format(&got, image::ImageFormat::Jpeg)
        .expect("WhatsApp got a JPEG");
    assert_eq!(jpeg.width(), 640, "scaled to WhatsApp's size");
    assert!((497..=498).contains(&jpeg.height()), "{}", jpeg.height());
    let pixel = jpeg.to_rgb8().get_pixel(320, 200).0;
    assert!(pixel[2] > 180 && pixel[0] < 40, "still blue: {pixel:?}");

    // Admins: Bob promotes Alice (her ghost gets 50), then demotes her (back to default).
    let alice = ghost(&slot, ALICE);
    post(
        &wa,
        "/control/groups/admins",
        json!({ "group": gjid, "author": BOB, "promote": [ALICE] }),
    )
    .await;
    wait_power_level(&user, &portal, &alice, 50).await;
    post(
        &wa,
        "/control/groups/admins",
        json!({ "group": gjid, "author": BOB, "demote": [ALICE] }),
    )
    .await;
    wait_power_level(&user, &portal, &alice, 0).await;
    // WhatsApp's echo of the picture set from Matrix did not replace the room's avatar.
    assert_eq!(
        state(&user, &portal, "m.room.avatar", "")
            .await
            .expect("avatar")["url"],
        json!(mxc),
        "the avatar set in Matrix stays"
    );
    // Bob removes the picture: so does the room.
    post(
        &wa,
        "/control/groups/picture",
        json!({ "group": gjid, "author": BOB }),
    )
    .await;
    poll(
        "the room's avatar removed",
        async || {
            state(&user, &portal, "m.room.avatar", "")
                .await
                .unwrap_or(Value::Null)
        },
        |c| c.is_object() && c["url"].is_null(),
    )
    .await;

    // Alice leaves by herself: her ghost leaves the room.
    post(
        &wa,
        "/control/groups/leave",
        json!({ "group": gjid, "member": ALICE }),
    )
    .await;
    user.wait_members(&portal, "Alice left", |m| !m.contains(&alice))
        .await;

    // Dave writes to the user first (so his ghost exists in Matrix).
    let dave = ghost(&slot, DAVE);
    post(
        &wa,
        "/control/send",
        json!({ "from": DAVE, "to": USER, "text": "hello from Dave" }),
    )
    .await;
    user.wait_portals(2, &room).await;

    // Not an admin: inviting Dave is refused by WhatsApp; the invitation is withdrawn and the
    // room says why.
    invite(&user, &portal, &dave).await;
    user.wait_message(&portal, "the refusal notice", |s, b| {
        s == bot
            && b.contains(&format!("The invite of {dave}"))
            && b.contains("only group admins")
            && b.contains("invitation was withdrawn")
    })
    .await;
    poll(
        "Dave's invitation withdrawn",
        async || json!(member_state(&user, &portal, &dave).await),
        |m| m == "leave",
    )
    .await;
    assert!(
        !details(&wa, &gjid).await["members"]
            .as_array()
            .expect("members")
            .contains(&json!(DAVE))
    );

    // As an admin: the invitation adds Dave to the group (his ghost joins), the kick removes
    // Carol.
    post(
        &wa,
        "/control/groups/admins",
        json!({ "group": gjid, "author": BOB, "promote": [USER] }),
    )
    .await;
    invite(&user, &portal, &dave).await;
    poll(
        "Dave in the WhatsApp group",
        async || details(&wa, &gjid).await,
        |g| {
            g["members"]
                .as_array()
                .is_some_and(|m| m.contains(&json!(DAVE)))
        },
    )
    .await;
    user.wait_members(&portal, "Dave joined", |m| m.contains(&dave))
        .await;
    let carol = ghost(&slot, CAROL);
    kick(&user, &portal, &carol).await;
    poll(
        "Carol out of the WhatsApp group",
        async || details(&wa, &gjid).await,
        |g| {
            g["members"]
                .as_array()
                .is_some_and(|m| !m.contains(&json!(CAROL)))
        },
    )
    .await;

    // Demoted again, a kick is refused: Dave comes back into the room, and the room says why.
    post(
        &wa,
        "/control/groups/admins",
        json!({ "group": gjid, "author": BOB, "demote": [USER] }),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    kick(&user, &portal, &dave).await;
    user.wait_message(&portal, "the refused kick notice", |s, b| {
        s == bot && b.contains(&dave) && b.contains("They are back")
    })
    .await;
    user.wait_members(&portal, "Dave back", |m| m.contains(&dave))
        .await;
    assert!(
        details(&wa, &gjid).await["members"]
            .as_array()
            .expect("members")
            .contains(&json!(DAVE)),
        "Dave is still in the WhatsApp group"
    );

    // Disappearing messages: Bob's timer is a line in the room; the user's, set with the bot's
    // command, reaches WhatsApp as the group's setting, and what the user sends next carries it.
    post(
        &wa,
        "/control/groups/ephemeral",
        json!({ "group": gjid, "author": BOB, "seconds": 604_800 }),
    )
    .await;
    user.wait_message(&portal, "Bob's timer line", |_, b| {
        b == "set disappearing messages to 7 days"
    })
    .await;
    let set = user
        .command(&portal, &bot, "!ferry disappearing 24h", "disappear")
        .await;
    assert_eq!(set, "Messages in this chat now disappear after 1 day.");
    assert_eq!(details(&wa, &gjid).await["ephemeral"], 86_400);
    user.send_text(&portal, "for a day").await;
    let got = wait_received(&wa, BOB, "the user's message with the group's timer", |m| {
        m["text"] == "for a day"
    })
    .await;
    assert_eq!(
        got["message"]["extended_text_message"]["context_info"]["expiration"], 86_400,
        "{got}"
    );

    // Bob lets only admins send, then everyone again: the room's sending level follows.
    for (on, level) in [(true, 50), (false, 0)] {
        post(
            &wa,
            "/control/groups/announce",
            json!({ "group": gjid, "author": BOB, "on": on }),
        )
        .await;
        poll(
            "the room's sending level",
            async || {
                state(&user, &portal, "m.room.power_levels", "")
                    .await
                    .unwrap_or_default()
            },
            |levels| levels["events_default"].as_i64().unwrap_or(0) == level,
        )
        .await;
    }

    // Bob keeps the group's details to admins: the user's new room name is refused by
    // WhatsApp, set back in the room, and the room says why.
    post(
        &wa,
        "/control/groups/locked",
        json!({ "group": gjid, "author": BOB, "on": true }),
    )
    .await;
    poll(
        "the group locked",
        async || details(&wa, &gjid).await,
        |g| g["locked"] == true,
    )
    .await;
    set_state(
        &user,
        &portal,
        "m.room.name",
        json!({"name": "Renamed in Matrix"}),
    )
    .await;
    user.wait_message(&portal, "the refused rename notice", |s, b| {
        s == bot && b.contains("only group admins") && b.contains("the room's name was set back")
    })
    .await;
    poll(
        "the room's name set back",
        async || json!(user.room_name(&portal).await),
        |n| n == "Allotment",
    )
    .await;
    assert_eq!(details(&wa, &gjid).await["subject"], "Allotment");
}

both_backends!(group_details_and_members);

async fn community_as_space(backend: Backend) {
    let Scenario {
        slot,
        sim: _sim,
        wa,
        ferry: _ferry,
        bot,
        user,
        room,
    } = Scenario::start(
        backend,
        "wacommunity",
        &[contact(ALICE, "Alice"), contact(BOB, "Bob")],
        "",
    )
    .await;
    // Bob's community exists before ferry links: its groups come with the chat list.
    let community = post(
        &wa,
        "/control/communities",
        json!({ "subject": "Neighbours", "creator": BOB, "members": [USER, ALICE],
                "description": "Our street",
                "groups": [{ "subject": "Gardening", "members": [USER, ALICE] }] }),
    )
    .await;
    let announcement = format!("{}@g.us", community["announcement"].as_str().expect("id"));
    qr_login(&user, &room, &bot, &wa).await;

    // The community, its announcement group and Gardening: three rooms, one a space.
    let rooms = user.wait_portals(3, &room).await;
    let mut space = None;
    for r in &rooms {
        let create = state(&user, r, "m.room.create", "")
            .await
            .unwrap_or_default();
        if create["type"] == "m.space" {
            space = Some(r.clone());
        }
    }
    let space = space.expect("the community is a space");
    assert_eq!(user.room_name(&space).await.as_deref(), Some("Neighbours"));
    let topic = state(&user, &space, "m.room.topic", "")
        .await
        .unwrap_or_default();
    assert_eq!(topic["topic"], "Our street");
    let children = poll(
        "the space's two children",
        async || json!(state_keys(&user, &space, "m.space.child").await),
        |c| c.as_array().is_some_and(|c| c.len() == 2),
    )
    .await;
    let mut announcement_room = None;
    let mut gardening_room = None;
    for child in children.as_array().expect("children") {
        let child = child.as_str().expect("room id");
        assert!(rooms.iter().any(|r| r == child), "a child is a portal");
        let parent = state_keys(&user, child, "m.space.parent").await;
        assert_eq!(parent, vec![space.clone()], "each child names its space");
        if state(&user, child, "m.room.power_levels", "")
            .await
            .unwrap_or_default()["events_default"]
            == 50
        {
            announcement_room = Some(child.to_owned());
        } else {
            assert_eq!(user.room_name(child).await.as_deref(), Some("Gardening"));
            gardening_room = Some(child.to_owned());
        }
    }
    let gardening_room = gardening_room.expect("Gardening's room");
    // The announcement group: read-only for the user (not an admin), Bob (admin) posts.
    let announcement_room = announcement_room.expect("a read-only announcement room");
    assert_eq!(
        user.room_name(&announcement_room).await.as_deref(),
        Some("Neighbours")
    );
    assert!(power_level(&user, &announcement_room, &user.user_id).await < 50);
    assert_eq!(
        power_level(&user, &announcement_room, &ghost(&slot, BOB)).await,
        50
    );
    post(
        &wa,
        "/control/send",
        json!({ "from": BOB, "to": announcement, "text": "bins on Tuesday" }),
    )
    .await;
    user.wait_message(&announcement_room, "Bob's announcement", |s, b| {
        s == ghost(&slot, BOB) && b == "bins on Tuesday"
    })
    .await;

    // Bob links a new group: its portal appears, inside the space.
    post(
        &wa,
        "/control/communities/groups",
        json!({ "community": community["id"], "author": BOB, "subject": "Events",
                "members": [USER, ALICE] }),
    )
    .await;
    let rooms = user.wait_portals(4, &room).await;
    let children = poll(
        "the space's third child",
        async || json!(state_keys(&user, &space, "m.space.child").await),
        |c| c.as_array().is_some_and(|c| c.len() == 3),
    )
    .await;
    let mut named = Vec::new();
    for child in children.as_array().expect("children") {
        let child = child.as_str().expect("room id");
        assert!(rooms.iter().any(|r| r == child));
        named.push(user.room_name(child).await.unwrap_or_default());
    }
    assert!(named.contains(&"Events".to_owned()), "{named:?}");

    // Bob unlinks Gardening: its room leaves the space (from both sides) and stays a portal.
    let gardening = &community["groups"][0];
    post(
        &wa,
        "/control/communities/unlink",
        json!({ "community": community["id"], "author": BOB, "group": gardening }),
    )
    .await;
    poll(
        "Gardening out of the space, and no longer naming it",
        async || space_links(&user, &space, &gardening_room).await,
        |v| {
            v["parents"].as_array().is_some_and(Vec::is_empty)
                && v["children"].as_array().is_some_and(|c| {
                    c.len() == 2 && !c.iter().any(|r| r == gardening_room.as_str())
                })
        },
    )
    .await;
    assert_eq!(
        user.room_name(&gardening_room).await.as_deref(),
        Some("Gardening")
    );

    // And links it again: back in the space.
    post(
        &wa,
        "/control/communities/groups",
        json!({ "community": community["id"], "author": BOB, "group": gardening }),
    )
    .await;
    poll(
        "Gardening back in the space, and naming it",
        async || space_links(&user, &space, &gardening_room).await,
        |v| {
            v["parents"] == json!([space])
                && v["children"]
                    .as_array()
                    .is_some_and(|c| c.len() == 3 && c.iter().any(|r| r == gardening_room.as_str()))
        },
    )
    .await;
    assert_eq!(user.wait_portals(4, &room).await.len(), 4, "no new portal");
}

both_backends!(community_as_space);
