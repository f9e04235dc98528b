//! The Telegram simulator driven by grammers 0.11 exactly as ferry uses it in production: a
//! `SenderPool` over a session whose DC option points at the simulator and carries the auth key
//! the simulator was told about, a `Client`, and its update stream. Other Telegram users are
//! played through the control API.

use std::net::{SocketAddrV4, SocketAddrV6};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use grammers_client::sender::{ConnectionParams, NoRetries, SenderPool, UpdatesConfiguration};
use grammers_client::session::SessionData;
use grammers_client::session::storages::MemorySession;
use grammers_client::session::types::{DcOption, PeerAuth, PeerId, PeerRef};
use grammers_client::update::Update;
use grammers_client::{Client, InvocationError, SignInError, tl};
use rand::RngCore as _;
use serde_json::{Value, json};
use testnet::telegram::TelegramServer;

const API_ID: i32 = 12345;
const API_HASH: &str = "0123456789abcdef0123456789abcdef";
const WAIT: Duration = Duration::from_secs(20);

struct Sim {
    server: TelegramServer,
    http: reqwest::Client,
}

impl Sim {
    async fn start() -> Sim {
        Sim {
            server: TelegramServer::start().await.expect("simulator starts"),
            http: reqwest::Client::new(),
        }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let resp = self
            .http
            .post(format!("{}{path}", self.server.control_url()))
            .json(&body)
            .send()
            .await
            .expect("control API answers");
        let status = resp.status();
        let v: Value = resp.json().await.expect("control API returns JSON");
        assert!(status.is_success(), "{path} {body} -> {status} {v}");
        v
    }

    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.server.control_url()))
            .send()
            .await
            .expect("control API answers")
            .json()
            .await
            .expect("control API returns JSON")
    }

    async fn user(&self, body: Value) -> i64 {
        self.post("/control/users", body).await["id"]
            .as_i64()
            .expect("user id")
    }

    /// A session as ferry would store it: DC 2 at the simulator, with the shared auth key.
    fn session(&self) -> Arc<MemorySession> {
        let mut key = [0u8; 256];
        rand::rng().fill_bytes(&mut key);
        self.server.add_auth_key(key);
        let addr = self.server.mtproto_addr();
        let std::net::SocketAddr::V4(v4) = addr else {
            panic!("simulator listens on IPv4 loopback")
        };
        let mut data = SessionData {
            home_dc: 2,
            ..SessionData::default()
        };
        data.dc_options.insert(
            2,
            DcOption {
                id: 2,
                ipv4: SocketAddrV4::new(*v4.ip(), v4.port()),
                ipv6: SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0),
                auth_key: Some(key),
            },
        );
        Arc::new(MemorySession::from(data))
    }
}

struct Account {
    client: Client,
    updates: Option<tokio::sync::mpsc::Receiver<grammers_client::session::updates::UpdatesLike>>,
    runner: tokio::task::JoinHandle<()>,
}

impl Account {
    fn connect(session: Arc<MemorySession>, params: ConnectionParams) -> Account {
        let pool = SenderPool::with_configuration(session, API_ID, params);
        let client = Client::new(pool.handle);
        let runner = tokio::spawn(pool.runner.run());
        Account {
            client,
            updates: Some(pool.updates),
            runner,
        }
    }

    async fn stream(&mut self) -> grammers_client::client::UpdateStream {
        let rx = self.updates.take().expect("stream taken once");
        self.client
            .stream_updates(rx, UpdatesConfiguration { catch_up: true })
            .await
            .expect("update stream")
    }

    async fn stop(self) {
        self.client.disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.runner).await;
    }
}

/// Logs in by phone + code on a fresh session; returns the account and its session.
async fn login(sim: &Sim, phone: &str) -> (Account, Arc<MemorySession>, i64) {
    let session = sim.session();
    let acc = Account::connect(Arc::clone(&session), ConnectionParams::default());
    let token = acc
        .client
        .request_login_code(phone, API_HASH)
        .await
        .expect("code sent");
    let user = acc
        .client
        .sign_in(&token, "12345")
        .await
        .expect("signed in");
    (acc, session, user.id().bare_id_unchecked())
}

fn peer_user(id: i64) -> PeerRef {
    PeerRef {
        id: PeerId::user_unchecked(id),
        auth: PeerAuth::from_hash(access_hash(id)),
    }
}

fn peer_channel(id: i64, hash: i64) -> PeerRef {
    PeerRef {
        id: PeerId::channel_unchecked(id),
        auth: PeerAuth::from_hash(hash),
    }
}

/// The simulator's access hash rule (also returned by the control API).
fn access_hash(id: i64) -> i64 {
    ((id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5151_7e1e_9a3b_0001) as i64
}

async fn next_update(
    stream: &mut grammers_client::client::UpdateStream,
    what: &str,
    mut want: impl FnMut(&Update) -> bool,
) -> Update {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let u = tokio::time::timeout(left, stream.next())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .expect("update stream works");
        if want(&u) {
            return u;
        }
    }
}

/// Collects the updates that arrive within `window`.
async fn drain(
    stream: &mut grammers_client::client::UpdateStream,
    window: Duration,
) -> Vec<Update> {
    let mut out = Vec::new();
    let deadline = Instant::now() + window;
    while let Ok(Ok(u)) = tokio::time::timeout(
        deadline.saturating_duration_since(Instant::now()),
        stream.next(),
    )
    .await
    {
        out.push(u);
    }
    out
}

#[tokio::test]
async fn login_by_phone_code_and_2fa_password() {
    let sim = Sim::start().await;
    let id = sim
        .user(
            json!({"first_name": "Alice", "phone": "+1 555 0100", "code": "24680",
                      "password": "correct horse", "hint": "horse"}),
        )
        .await;
    let acc = Account::connect(sim.session(), ConnectionParams::default());
    assert!(!acc.client.is_authorized().await.expect("getState answers"));
    let token = acc
        .client
        .request_login_code("+15550100", API_HASH)
        .await
        .expect("code sent");
    match acc.client.sign_in(&token, "11111").await {
        Err(SignInError::InvalidCode) => {}
        other => panic!("wrong code accepted: {other:?}"),
    }
    let token = acc
        .client
        .request_login_code("+15550100", API_HASH)
        .await
        .expect("code sent again");
    let password = match acc.client.sign_in(&token, "24680").await {
        Err(SignInError::PasswordRequired(p)) => p,
        other => panic!("expected a 2FA prompt, got {other:?}"),
    };
    assert_eq!(password.hint(), Some("horse"));
    let password = match acc.client.check_password(password, "wrong horse").await {
        Err(SignInError::InvalidPassword(p)) => p,
        other => panic!("wrong password accepted: {other:?}"),
    };
    let user = acc
        .client
        .check_password(password, "correct horse")
        .await
        .expect("right password logs in");
    assert_eq!(user.id().bare_id_unchecked(), id);
    assert!(acc.client.is_authorized().await.expect("getState answers"));
    let me = acc.client.get_me().await.expect("get_me");
    assert_eq!(me.id().bare_id_unchecked(), id);
    assert_eq!(me.first_name(), Some("Alice"));
    acc.client.sign_out().await.expect("logs out");
    assert!(!acc.client.is_authorized().await.expect("getState answers"));
    acc.stop().await;
}

#[tokio::test]
async fn login_by_qr_token_scanned_from_the_phone() {
    let sim = Sim::start().await;
    let phone_user = sim
        .user(json!({"first_name": "Pat", "phone": "+15550111"}))
        .await;
    let mut acc = Account::connect(sim.session(), ConnectionParams::default());
    let mut stream = acc.stream().await;
    let request = tl::functions::auth::ExportLoginToken {
        api_id: API_ID,
        api_hash: API_HASH.into(),
        except_ids: Vec::new(),
    };
    let token = match acc.client.invoke(&request).await.expect("token exported") {
        tl::enums::auth::LoginToken::Token(t) => t.token,
        other => panic!("expected a token, got {other:?}"),
    };
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&token);
    sim.post(
        "/control/login_tokens/scan",
        json!({"token": url, "user": phone_user}),
    )
    .await;
    next_update(
        &mut stream,
        "updateLoginToken",
        |u| matches!(u, Update::Raw(r) if matches!(r.raw, tl::enums::Update::LoginToken)),
    )
    .await;
    let user = match acc
        .client
        .invoke(&request)
        .await
        .expect("token exported again")
    {
        tl::enums::auth::LoginToken::Success(s) => match s.authorization {
            tl::enums::auth::Authorization::Authorization(a) => a.user,
            other => panic!("unexpected {other:?}"),
        },
        other => panic!("expected success, got {other:?}"),
    };
    let tl::enums::User::User(user) = user else {
        panic!("empty user")
    };
    assert_eq!(user.id, phone_user);
    assert!(acc.client.is_authorized().await.expect("getState answers"));
    acc.stop().await;
}

#[tokio::test]
async fn login_by_bot_token() {
    let sim = Sim::start().await;
    let bot = sim
        .user(json!({"first_name": "Relay", "username": "relay_bot", "bot_token": "4242:AAbbCC"}))
        .await;
    let acc = Account::connect(sim.session(), ConnectionParams::default());
    let err = acc
        .client
        .bot_sign_in("4242:wrong", API_HASH)
        .await
        .expect_err("a wrong token is refused");
    assert!(err.is("ACCESS_TOKEN_INVALID"), "{err}");
    let user = acc
        .client
        .bot_sign_in("4242:AAbbCC", API_HASH)
        .await
        .expect("bot logs in");
    assert_eq!(user.id().bare_id_unchecked(), bot);
    assert!(user.is_bot());
    acc.stop().await;
}

#[tokio::test]
async fn messages_both_ways_with_entities_replies_edits_deletes_reactions() {
    let sim = Sim::start().await;
    let alice = sim
        .user(json!({"first_name": "Alice", "phone": "+15550200"}))
        .await;
    let bob = sim
        .user(json!({"first_name": "Bob", "username": "bob", "phone": "+15550201"}))
        .await;
    let (mut acc, _session, me) = login(&sim, "+15550200").await;
    assert_eq!(me, alice);
    let mut stream = acc.stream().await;

    // A message from Bob arrives as an update, with its formatting.
    let sent = sim
        .post(
            "/control/send",
            json!({"from": bob, "peer": {"type": "user", "id": alice},
              "text": "hello there", "entities": [{"type": "bold", "offset": 0, "length": 5}]}),
        )
        .await;
    let bob_first = sent["id"].as_i64().expect("id") as i32;
    let u = next_update(
        &mut stream,
        "Bob's message",
        |u| matches!(u, Update::NewMessage(m) if !m.outgoing()),
    )
    .await;
    let Update::NewMessage(incoming) = u else {
        unreachable!()
    };
    assert_eq!(incoming.text(), "hello there");
    assert!(!incoming.outgoing());
    assert_eq!(incoming.sender_id().and_then(|p| p.bare_id()), Some(bob));
    assert!(matches!(
        incoming.fmt_entities().map(|e| e.as_slice()),
        Some([tl::enums::MessageEntity::Bold(b)]) if b.offset == 0 && b.length == 5
    ));

    // Alice answers with formatting and a reply; the control API sees it as Bob would.
    let reply = grammers_client::message::InputMessage::new()
        .text("hi Bob, welcome")
        .fmt_entities(vec![tl::enums::MessageEntity::Italic(
            tl::types::MessageEntityItalic {
                offset: 3,
                length: 3,
            },
        )])
        .reply_to(Some(incoming.id()));
    let mine = acc
        .client
        .send_message(peer_user(bob), reply)
        .await
        .expect("message sent");
    assert_eq!(mine.text(), "hi Bob, welcome");
    let sent_log = sim.get(&format!("/control/sent?from={alice}")).await;
    let last = &sent_log.as_array().expect("list")[0];
    assert_eq!(last["text"], "hi Bob, welcome");
    assert_eq!(last["entities"], json!(["italic:3:3"]));
    assert_eq!(last["reply_to"], json!(incoming.id()));
    let bobs_view = sim
        .get(&format!(
            "/control/messages?owner={bob}&peer_type=user&peer_id={alice}"
        ))
        .await;
    let bobs_view = bobs_view.as_array().expect("list");
    assert_eq!(bobs_view.len(), 2);
    assert_eq!(bobs_view[1]["text"], "hi Bob, welcome");
    assert_eq!(
        bobs_view[1]["reply_to"],
        json!(bob_first),
        "reply points at Bob's own copy"
    );

    // Bob edits, reacts and deletes; each arrives as its update.
    sim.post(
        "/control/edit",
        json!({"from": bob, "peer": {"type": "user", "id": alice},
              "id": bob_first, "text": "hello there (edited)"}),
    )
    .await;
    let u = next_update(&mut stream, "edit", |u| {
        matches!(u, Update::MessageEdited(_))
    })
    .await;
    let Update::MessageEdited(edited) = u else {
        unreachable!()
    };
    assert_eq!(edited.id(), incoming.id());
    assert_eq!(edited.text(), "hello there (edited)");
    assert!(edited.edit_date().is_some());

    sim.post(
        "/control/react",
        json!({"from": bob, "peer": {"type": "user", "id": alice},
              "id": bobs_view[1]["id"], "emoji": "👍"}),
    )
    .await;
    let u = next_update(
        &mut stream,
        "reaction",
        |u| matches!(u, Update::Raw(r) if matches!(r.raw, tl::enums::Update::MessageReactions(_))),
    )
    .await;
    let Update::Raw(raw) = u else { unreachable!() };
    let tl::enums::Update::MessageReactions(r) = raw.raw else {
        unreachable!()
    };
    assert_eq!(r.msg_id, mine.id());
    let tl::enums::MessageReactions::Reactions(list) = r.reactions;
    let emojis: Vec<String> = list
        .results
        .iter()
        .map(|tl::enums::ReactionCount::Count(c)| match &c.reaction {
            tl::enums::Reaction::Emoji(e) => e.emoticon.clone(),
            _ => String::new(),
        })
        .collect();
    assert_eq!(emojis, vec!["👍".to_owned()]);

    sim.post(
        "/control/delete",
        json!({"from": bob, "peer": {"type": "user", "id": alice},
              "ids": [bob_first]}),
    )
    .await;
    let u = next_update(&mut stream, "delete", |u| {
        matches!(u, Update::MessageDeleted(_))
    })
    .await;
    let Update::MessageDeleted(del) = u else {
        unreachable!()
    };
    assert_eq!(del.messages(), &[incoming.id()]);

    // Alice edits, reacts to Bob's next message, and deletes her own; Bob's view follows.
    acc.client
        .edit_message(peer_user(bob), mine.id(), "hi Bob, welcome!")
        .await
        .expect("edited");
    let sent = sim
        .post(
            "/control/send",
            json!({"from": bob, "peer": {"type": "user", "id": alice}, "text": "react to me"}),
        )
        .await;
    let u = next_update(
        &mut stream,
        "second message",
        |u| matches!(u, Update::NewMessage(m) if !m.outgoing()),
    )
    .await;
    let Update::NewMessage(second) = u else {
        unreachable!()
    };
    acc.client
        .send_reactions(peer_user(bob), second.id(), "❤")
        .await
        .expect("reaction sent");
    let bobs_view = sim
        .get(&format!(
            "/control/messages?owner={bob}&peer_type=user&peer_id={alice}"
        ))
        .await;
    let by_id = |id: &Value| {
        bobs_view
            .as_array()
            .expect("list")
            .iter()
            .find(|m| &m["id"] == id)
            .cloned()
            .expect("message in Bob's view")
    };
    assert_eq!(by_id(&bobs_view[0]["id"])["text"], "hi Bob, welcome!");
    assert_eq!(by_id(&bobs_view[0]["id"])["edited"], true);
    assert_eq!(
        by_id(&sent["id"])["reactions"],
        json!([{"user": alice, "emoji": "❤"}])
    );
    acc.client
        .delete_messages(peer_user(bob), &[mine.id()])
        .await
        .expect("deleted");
    let bobs_view = sim
        .get(&format!(
            "/control/messages?owner={bob}&peer_type=user&peer_id={alice}"
        ))
        .await;
    assert_eq!(
        bobs_view.as_array().expect("list").len(),
        1,
        "only 'react to me' is left"
    );
    let kinds: Vec<String> = sim
        .get(&format!("/control/sent?from={alice}"))
        .await
        .as_array()
        .expect("list")
        .iter()
        .map(|r| r["kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(kinds, ["message", "edit", "reaction", "delete"]);
    acc.stop().await;
}

#[tokio::test]
async fn files_upload_and_download() {
    let sim = Sim::start().await;
    let alice = sim
        .user(json!({"first_name": "Alice", "phone": "+15550300"}))
        .await;
    let bob = sim
        .user(json!({"first_name": "Bob", "phone": "+15550301"}))
        .await;
    let (mut acc, _session, _) = login(&sim, "+15550300").await;
    let mut stream = acc.stream().await;

    // Upload (two 512 KiB parts and a tail) and send as a document.
    let mut data = vec![0u8; 1_100_000];
    rand::rng().fill_bytes(&mut data);
    let uploaded = acc
        .client
        .upload_stream(&mut &data[..], data.len(), "notes.bin".into())
        .await
        .expect("uploaded");
    let msg = acc
        .client
        .send_message(
            peer_user(bob),
            grammers_client::message::InputMessage::new()
                .text("the file")
                .document(uploaded),
        )
        .await
        .expect("document sent");
    let media = msg.media().expect("sent message has media");
    let mut back = Vec::new();
    let mut it = acc.client.iter_download(&media);
    while let Some(chunk) = it.next().await.expect("download") {
        back.extend(chunk);
    }
    assert_eq!(back.len(), data.len());
    assert!(back == data, "downloaded bytes equal the upload");
    let sent = sim.get(&format!("/control/sent?from={alice}")).await;
    assert_eq!(sent[0]["kind"], "media");
    assert_eq!(sent[0]["text"], "the file");

    // A photo from Bob arrives and downloads.
    let photo = b"\xff\xd8\xff\xe0 not really a jpeg".to_vec();
    sim.post(
        "/control/send",
        json!({"from": bob, "peer": {"type": "user", "id": alice},
              "text": "look", "media": {"kind": "photo",
              "data": base64::engine::general_purpose::STANDARD.encode(&photo)}}),
    )
    .await;
    let u = next_update(
        &mut stream,
        "photo",
        |u| matches!(u, Update::NewMessage(m) if !m.outgoing()),
    )
    .await;
    let Update::NewMessage(m) = u else {
        unreachable!()
    };
    assert_eq!(m.text(), "look");
    let media = m.media().expect("photo media");
    let mut got = Vec::new();
    let mut it = acc.client.iter_download(&media);
    while let Some(chunk) = it.next().await.expect("download") {
        got.extend(chunk);
    }
    assert_eq!(got, photo);
    acc.stop().await;
}

#[tokio::test]
async fn flood_wait_surfaces_as_the_documented_error() {
    let sim = Sim::start().await;
    sim.user(json!({"first_name": "Alice", "phone": "+15550400"}))
        .await;
    let bob = sim
        .user(json!({"first_name": "Bob", "phone": "+15550401"}))
        .await;
    let session = sim.session();
    let params = ConnectionParams {
        retry_policy: Box::new(NoRetries),
        ..Default::default()
    };
    let acc = Account::connect(session, params);
    let token = acc
        .client
        .request_login_code("+15550400", API_HASH)
        .await
        .expect("code");
    acc.client.sign_in(&token, "12345").await.expect("login");
    sim.post(
        "/control/flood",
        json!({"method": "messages.sendMessage", "count": 1, "seconds": 7}),
    )
    .await;
    match acc.client.send_message(peer_user(bob), "too fast").await {
        Err(InvocationError::Rpc(e)) => {
            assert_eq!(e.code, 420);
            assert_eq!(e.name, "FLOOD_WAIT");
            assert_eq!(e.value, Some(7));
        }
        other => panic!("expected FLOOD_WAIT_7, got {other:?}"),
    }
    acc.client
        .send_message(peer_user(bob), "later")
        .await
        .expect("the next call goes through");
    acc.stop().await;

    // With grammers' default AutoSleep policy a short flood wait is slept through.
    let (acc, _, _) = login(&sim, "+15550400").await;
    sim.post(
        "/control/flood",
        json!({"method": "messages.sendMessage", "count": 1, "seconds": 1}),
    )
    .await;
    let start = Instant::now();
    acc.client
        .send_message(peer_user(bob), "after a nap")
        .await
        .expect("retried after the wait");
    assert!(start.elapsed() >= Duration::from_secs(1));
    let texts: Vec<Value> = sim
        .get("/control/sent")
        .await
        .as_array()
        .expect("list")
        .iter()
        .map(|r| r["text"].clone())
        .collect();
    assert_eq!(
        texts,
        [json!("later"), json!("after a nap")],
        "nothing sent twice"
    );
    acc.stop().await;
}

fn texts_of(updates: &[Update]) -> Vec<String> {
    updates
        .iter()
        .filter_map(|u| match u {
            Update::NewMessage(m) => Some(m.text().to_owned()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn missed_messages_arrive_after_reconnect_exactly_once() {
    let sim = Sim::start().await;
    let alice = sim
        .user(json!({"first_name": "Alice", "phone": "+15550500"}))
        .await;
    let bob = sim
        .user(json!({"first_name": "Bob", "phone": "+15550501"}))
        .await;
    let (mut acc, session, _) = login(&sim, "+15550500").await;
    let mut stream = acc.stream().await;
    let to_alice = json!({"type": "user", "id": alice});
    sim.post(
        "/control/send",
        json!({"from": bob, "peer": to_alice, "text": "online 1"}),
    )
    .await;
    next_update(&mut stream, "online 1", |u| {
        matches!(u, Update::NewMessage(_))
    })
    .await;
    stream.sync_update_state().await.expect("state saved");
    drop(stream);
    acc.stop().await;

    // While the client is away: three messages, an edit and a delete.
    let mut ids = Vec::new();
    for text in ["away 1", "away 2", "away 3"] {
        let v = sim
            .post(
                "/control/send",
                json!({"from": bob, "peer": to_alice, "text": text}),
            )
            .await;
        ids.push(v["id"].clone());
    }
    sim.post(
        "/control/edit",
        json!({"from": bob, "peer": to_alice, "id": ids[1], "text": "away 2 (edited)"}),
    )
    .await;
    sim.post(
        "/control/delete",
        json!({"from": bob, "peer": to_alice, "ids": [ids[2]]}),
    )
    .await;

    let mut acc = Account::connect(Arc::clone(&session), ConnectionParams::default());
    let mut stream = acc.stream().await;
    let got = drain(&mut stream, Duration::from_secs(4)).await;
    let texts = texts_of(&got);
    assert_eq!(
        texts,
        ["away 1", "away 2 (edited)"],
        "caught up, none twice: {got:?}"
    );

    // The server drops the connection; a message sent meanwhile is recovered through the pts gap
    // the next pushed message reveals.
    let dropped = sim.post("/control/drop", json!({"user": alice})).await;
    assert_eq!(dropped["dropped"], 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    sim.post(
        "/control/send",
        json!({"from": bob, "peer": to_alice, "text": "while dropped"}),
    )
    .await;
    acc.client.get_me().await.expect("reconnects");
    sim.post(
        "/control/send",
        json!({"from": bob, "peer": to_alice, "text": "after"}),
    )
    .await;
    let got = drain(&mut stream, Duration::from_secs(4)).await;
    assert_eq!(
        texts_of(&got),
        ["while dropped", "after"],
        "gap filled in order: {got:?}"
    );
    acc.stop().await;
}

#[tokio::test]
async fn supergroup_channel_and_forum_topic_with_per_channel_pts() {
    let sim = Sim::start().await;
    let alice = sim
        .user(json!({"first_name": "Alice", "phone": "+15550600"}))
        .await;
    let bob = sim
        .user(json!({"first_name": "Bob", "phone": "+15550601"}))
        .await;
    let (mut acc, session, _) = login(&sim, "+15550600").await;
    let mut stream = acc.stream().await;

    let group = sim
        .post(
            "/control/channels",
            json!({"creator": bob, "title": "Rustaceans",
              "members": [alice], "admins": [bob]}),
        )
        .await;
    let (gid, ghash) = (
        group["id"].as_i64().expect("id"),
        group["access_hash"].as_i64().expect("hash"),
    );
    let to_group = json!({"type": "channel", "id": gid});
    let first = sim
        .post(
            "/control/send",
            json!({"from": bob, "peer": to_group, "text": "in the group"}),
        )
        .await;
    let second = sim
        .post(
            "/control/send",
            json!({"from": bob, "peer": to_group, "text": "again"}),
        )
        .await;
    // The channelCreate service message took pts 1; the two messages are 2 and 3, whatever
    // the account's own pts is.
    assert_eq!(first["pts"], 2);
    assert_eq!(second["pts"], 3);
    let got = drain(&mut stream, Duration::from_secs(3)).await;
    let msgs: Vec<_> = got
        .iter()
        .filter_map(|u| match u {
            Update::NewMessage(m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(
        msgs.iter().map(|m| m.text()).collect::<Vec<_>>(),
        ["in the group", "again"]
    );
    assert!(
        msgs.iter()
            .all(|m| m.peer_id() == PeerId::channel_unchecked(gid))
    );
    assert_eq!(msgs[0].sender_id().and_then(|p| p.bare_id()), Some(bob));

    let mine = acc
        .client
        .send_message(peer_channel(gid, ghash), "from Alice")
        .await
        .expect("sent to the group");
    assert_eq!(mine.id(), 4);
    // The account's own message comes back as an update too (as on Telegram).
    let own = drain(&mut stream, Duration::from_secs(2)).await;
    assert_eq!(texts_of(&own), ["from Alice"]);
    let view = sim
        .get(&format!(
            "/control/messages?owner={bob}&peer_type=channel&peer_id={gid}"
        ))
        .await;
    assert_eq!(
        view.as_array().expect("list").last().expect("msg")["text"],
        "from Alice"
    );

    // Missed channel messages come back through getChannelDifference after a reconnect.
    stream.sync_update_state().await.expect("state saved");
    drop(stream);
    acc.stop().await;
    sim.post(
        "/control/send",
        json!({"from": bob, "peer": to_group, "text": "missed in group"}),
    )
    .await;
    let mut acc = Account::connect(Arc::clone(&session), ConnectionParams::default());
    let mut stream = acc.stream().await;
    let got = drain(&mut stream, Duration::from_secs(4)).await;
    assert_eq!(texts_of(&got), ["missed in group"]);

    // A forum: a topic, a message in it from Bob, Alice's answer in the same topic.
    let forum = sim
        .post(
            "/control/channels",
            json!({"creator": bob, "title": "Forum", "forum": true,
              "members": [alice]}),
        )
        .await;
    let (fid, fhash) = (
        forum["id"].as_i64().expect("id"),
        forum["access_hash"].as_i64().expect("hash"),
    );
    let topic = sim
        .post(
            "/control/topics",
            json!({"channel": fid, "from": bob, "title": "Releases"}),
        )
        .await;
    let topic_id = topic["id"].as_i64().expect("topic id") as i32;
    sim.post(
        "/control/send",
        json!({"from": bob, "peer": {"type": "channel", "id": fid},
              "text": "0.1 is out", "top_id": topic_id}),
    )
    .await;
    let u = next_update(
        &mut stream,
        "topic message",
        |u| matches!(u, Update::NewMessage(m) if m.text() == "0.1 is out"),
    )
    .await;
    let Update::NewMessage(m) = u else {
        unreachable!()
    };
    let Some(tl::enums::MessageReplyHeader::Header(h)) = m.reply_header() else {
        panic!("topic messages carry a reply header")
    };
    assert!(h.forum_topic);
    assert_eq!(h.reply_to_msg_id, Some(topic_id));
    let topics = acc
        .client
        .invoke(&tl::functions::messages::GetForumTopics {
            peer: tl::enums::InputPeer::Channel(tl::types::InputPeerChannel {
                channel_id: fid,
                access_hash: fhash,
            }),
            q: None,
            offset_date: 0,
            offset_id: 0,
            offset_topic: 0,
            limit: 10,
        })
        .await
        .expect("topics listed");
    let tl::enums::messages::ForumTopics::Topics(topics) = topics;
    let titles: Vec<String> = topics
        .topics
        .iter()
        .filter_map(|t| match t {
            tl::enums::ForumTopic::Topic(t) => Some(t.title.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(titles, ["Releases"]);
    acc.client
        .send_message(
            peer_channel(fid, fhash),
            grammers_client::message::InputMessage::new()
                .text("congrats")
                .reply_to(Some(topic_id)),
        )
        .await
        .expect("answered in the topic");
    let sent = sim.get(&format!("/control/sent?from={alice}")).await;
    let last = sent
        .as_array()
        .expect("list")
        .last()
        .cloned()
        .expect("record");
    assert_eq!(last["text"], "congrats");
    assert_eq!(last["top_id"], topic_id);
    assert_eq!(last["reply_to"], Value::Null);
    acc.stop().await;
}

#[tokio::test]
async fn basic_group_service_messages_presence_reads_and_lookups() {
    let sim = Sim::start().await;
    let alice = sim
        .user(json!({"first_name": "Alice", "phone": "+15550700"}))
        .await;
    let bob = sim
        .user(json!({"first_name": "Bob", "username": "bob", "phone": "+15550701"}))
        .await;
    let carol = sim
        .user(json!({"first_name": "Carol", "phone": "+15550702"}))
        .await;
    let (mut acc, _session, _) = login(&sim, "+15550700").await;
    let mut stream = acc.stream().await;
    let incoming = |u: &Update| matches!(u, Update::NewMessage(m) if !m.outgoing());

    // A basic group: its creation is a service message, then a message from Bob.
    let chat = sim
        .post(
            "/control/chats",
            json!({"creator": bob, "title": "Lunch", "members": [alice, carol]}),
        )
        .await["id"]
        .as_i64()
        .expect("chat id");
    let u = next_update(&mut stream, "chat creation", incoming).await;
    let Update::NewMessage(created) = u else {
        unreachable!()
    };
    assert!(matches!(
        created.action(),
        Some(tl::enums::MessageAction::ChatCreate(c)) if c.title == "Lunch" && c.users.len() == 3
    ));
    assert_eq!(created.peer_id(), PeerId::chat_unchecked(chat));
    let to_chat = json!({"type": "chat", "id": chat});
    sim.post(
        "/control/send",
        json!({"from": bob, "peer": to_chat, "text": "who's hungry"}),
    )
    .await;
    let u = next_update(&mut stream, "group message", incoming).await;
    let Update::NewMessage(m) = u else {
        unreachable!()
    };
    assert_eq!(m.text(), "who's hungry");
    assert_eq!(m.sender_id().and_then(|p| p.bare_id()), Some(bob));
    let chat_ref = PeerRef {
        id: PeerId::chat_unchecked(chat),
        auth: PeerAuth::from_hash(0),
    };
    acc.client
        .send_message(chat_ref, "me!")
        .await
        .expect("sent to the group");
    let carols = sim
        .get(&format!(
            "/control/messages?owner={carol}&peer_type=chat&peer_id={chat}"
        ))
        .await;
    let texts: Vec<&str> = carols
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert_eq!(
        texts,
        ["", "who's hungry", "me!"],
        "Carol sees the group in order"
    );
    sim.post(
        "/control/service",
        json!({"from": bob, "peer": to_chat, "action": "edit_title", "title": "Dinner"}),
    )
    .await;
    let u = next_update(&mut stream, "title change", incoming).await;
    let Update::NewMessage(m) = u else {
        unreachable!()
    };
    assert!(matches!(
        m.action(),
        Some(tl::enums::MessageAction::ChatEditTitle(t)) if t.title == "Dinner"
    ));

    // Typing and online status, both ways.
    sim.post(
        "/control/typing",
        json!({"from": bob, "peer": {"type": "user", "id": alice}}),
    )
    .await;
    next_update(&mut stream, "typing", |u| {
        matches!(u, Update::Raw(r) if matches!(&r.raw,
            tl::enums::Update::UserTyping(t) if t.user_id == bob))
    })
    .await;
    sim.post("/control/status", json!({"user": bob, "online": true}))
        .await;
    next_update(&mut stream, "status", |u| {
        matches!(u, Update::Raw(r) if matches!(&r.raw,
            tl::enums::Update::UserStatus(s) if s.user_id == bob
                && matches!(s.status, tl::enums::UserStatus::Online(_))))
    })
    .await;
    acc.client
        .action(peer_user(bob))
        .oneshot(tl::enums::SendMessageAction::SendMessageTypingAction)
        .await
        .expect("typing sent");

    // Read receipts: Alice reads the group; Bob reads Alice's private message.
    acc.client.mark_as_read(chat_ref).await.expect("read");
    let mine = acc
        .client
        .send_message(peer_user(bob), "read this")
        .await
        .expect("sent");
    let bobs_copy = sim
        .get(&format!(
            "/control/messages?owner={bob}&peer_type=user&peer_id={alice}"
        ))
        .await[0]["id"]
        .clone();
    sim.post(
        "/control/read",
        json!({"from": bob, "peer": {"type": "user", "id": alice}, "max_id": bobs_copy}),
    )
    .await;
    next_update(&mut stream, "read outbox", |u| {
        matches!(u, Update::Raw(r) if matches!(&r.raw,
            tl::enums::Update::ReadHistoryOutbox(o) if o.max_id == mine.id()))
    })
    .await;
    let kinds: Vec<String> = sim
        .get(&format!("/control/sent?from={alice}"))
        .await
        .as_array()
        .expect("list")
        .iter()
        .map(|r| r["kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(kinds, ["message", "typing", "read", "message"]);

    // Lookups: dialogs, history, usernames, full chat.
    let mut dialogs = acc.client.iter_dialogs();
    let mut peers = Vec::new();
    while let Some(d) = dialogs.next().await.expect("dialogs") {
        peers.push(d.peer_id());
    }
    assert!(peers.contains(&PeerId::chat_unchecked(chat)), "{peers:?}");
    assert!(peers.contains(&PeerId::user_unchecked(bob)), "{peers:?}");
    let mut history = acc.client.iter_messages(chat_ref);
    let mut texts = Vec::new();
    while let Some(m) = history.next().await.expect("history") {
        texts.push(m.text().to_owned());
    }
    assert_eq!(
        texts,
        ["", "me!", "who's hungry", ""],
        "newest first, service messages empty"
    );
    let found = acc
        .client
        .resolve_username("bob")
        .await
        .expect("resolve")
        .expect("bob exists");
    assert_eq!(found.id(), PeerId::user_unchecked(bob));
    assert!(
        acc.client
            .resolve_username("nobody_here")
            .await
            .expect("resolve")
            .is_none()
    );
    let full = acc
        .client
        .invoke(&tl::functions::messages::GetFullChat { chat_id: chat })
        .await
        .expect("full chat");
    let tl::enums::messages::ChatFull::Full(full) = full;
    let tl::enums::ChatFull::Full(full) = full.full_chat else {
        panic!("a basic group")
    };
    let tl::enums::ChatParticipants::Participants(p) = full.participants else {
        panic!("participants listed")
    };
    assert_eq!(p.participants.len(), 3);

    // A broadcast channel: members cannot post, the participants list shows the admin.
    let channel = sim
        .post(
            "/control/channels",
            json!({"creator": bob, "title": "News", "broadcast": true,
              "username": "news", "members": [alice, carol]}),
        )
        .await;
    let (cid, chash) = (
        channel["id"].as_i64().expect("id"),
        channel["access_hash"].as_i64().expect("hash"),
    );
    let err = acc
        .client
        .send_message(peer_channel(cid, chash), "can I post?")
        .await
        .expect_err("members cannot post in a channel");
    assert!(err.is("CHAT_WRITE_FORBIDDEN"), "{err}");
    let mut participants = acc.client.iter_participants(peer_channel(cid, chash));
    let mut n = 0;
    while participants.next().await.expect("participants").is_some() {
        n += 1;
    }
    assert_eq!(n, 3);
    acc.stop().await;
}

#[tokio::test]
async fn channel_news_while_away_arrive_through_channel_too_long() {
    let sim = Sim::start().await;
    let alice = sim
        .user(json!({"first_name": "Alice", "phone": "+15550700"}))
        .await;
    let bob = sim
        .user(json!({"first_name": "Bob", "phone": "+15550701"}))
        .await;
    let (mut acc, session, _) = login(&sim, "+15550700").await;
    // A supergroup Alice's client has seen.
    let known = sim
        .post(
            "/control/channels",
            json!({"creator": bob, "title": "Known", "members": [alice]}),
        )
        .await["id"]
        .as_i64()
        .expect("channel");
    let mut stream = acc.stream().await;
    sim.post(
        "/control/send",
        json!({"from": bob, "peer": {"type": "channel", "id": known}, "text": "seen live"}),
    )
    .await;
    next_update(
        &mut stream,
        "the live channel message",
        |u| matches!(u, Update::NewMessage(m) if m.text() == "seen live"),
    )
    .await;
    stream.sync_update_state().await.expect("state saved");
    drop(stream);
    acc.stop().await;

    // While away: news in the known supergroup, and a new channel Alice was added to.
    sim.post(
        "/control/send",
        json!({"from": bob, "peer": {"type": "channel", "id": known}, "text": "known news"}),
    )
    .await;
    let fresh = sim
        .post(
            "/control/channels",
            json!({"creator": bob, "title": "Fresh", "members": [alice]}),
        )
        .await["id"]
        .as_i64()
        .expect("channel");
    for text in ["fresh 1", "fresh 2"] {
        sim.post(
            "/control/send",
            json!({"from": bob, "peer": {"type": "channel", "id": fresh}, "text": text}),
        )
        .await;
    }

    let mut acc = Account::connect(Arc::clone(&session), ConnectionParams::default());
    let mut stream = acc.stream().await;
    let got = drain(&mut stream, Duration::from_secs(4)).await;
    let texts: Vec<String> = texts_of(&got)
        .into_iter()
        .filter(|t| !t.is_empty())
        .collect();
    assert_eq!(
        texts,
        ["known news", "fresh 1", "fresh 2"],
        "each channel's news once, through getChannelDifference: {got:?}"
    );
    acc.stop().await;
}

#[tokio::test]
async fn bot_qts_updates_are_recovered_after_reconnect() {
    let sim = Sim::start().await;
    let bot = sim
        .user(json!({"first_name": "Relay", "username": "qts_bot", "bot_token": "77:qts"}))
        .await;
    let bob = sim.user(json!({"first_name": "Bob"})).await;
    let session = sim.session();
    let mut acc = Account::connect(Arc::clone(&session), ConnectionParams::default());
    acc.client
        .bot_sign_in("77:qts", API_HASH)
        .await
        .expect("bot logs in");
    let mut stream = acc.stream().await;
    // Let the fresh stream take its state first (getState's qts counts what came before).
    drain(&mut stream, Duration::from_secs(1)).await;
    let stopped = |want: bool| {
        move |u: &Update| {
            matches!(u, Update::Raw(raw) if matches!(&raw.raw,
                tl::enums::Update::BotStopped(s) if s.user_id == bob && s.stopped == want))
        }
    };
    let first = sim
        .post("/control/bot_stopped", json!({"user": bob, "bot": bot}))
        .await;
    assert_eq!(first["qts"], 1);
    next_update(&mut stream, "the live updateBotStopped", stopped(true)).await;
    stream.sync_update_state().await.expect("state saved");
    drop(stream);
    acc.stop().await;

    // While away Bob restarts the bot: the qts gap is recovered with getDifference, once.
    sim.post(
        "/control/bot_stopped",
        json!({"user": bob, "bot": bot, "stopped": false}),
    )
    .await;
    let mut acc = Account::connect(Arc::clone(&session), ConnectionParams::default());
    let mut stream = acc.stream().await;
    let got = drain(&mut stream, Duration::from_secs(4)).await;
    let restarts = got.iter().filter(|u| stopped(false)(u)).count();
    let stops = got.iter().filter(|u| stopped(true)(u)).count();
    assert_eq!((restarts, stops), (1, 0), "{got:?}");
    let state = acc
        .client
        .invoke(&tl::functions::updates::GetState {})
        .await
        .expect("state");
    let tl::enums::updates::State::State(state) = state;
    assert_eq!(state.qts, 2);
    acc.stop().await;
}

/// The name of the RPC error `result` failed with.
fn rpc_error<T: std::fmt::Debug>(result: Result<T, InvocationError>) -> String {
    match result {
        Err(InvocationError::Rpc(e)) => e.name,
        other => panic!("expected an RPC error, got {other:?}"),
    }
}

#[tokio::test]
async fn group_details_photos_and_admin_methods() {
    let sim = Sim::start().await;
    let alice = sim
        .user(json!({"first_name": "Alice", "phone": "+15550700"}))
        .await;
    let bob = sim.user(json!({"first_name": "Bob"})).await;
    let carol = sim.user(json!({"first_name": "Carol"})).await;
    let (acc, _session, _) = login(&sim, "+15550700").await;
    let photo = vec![9u8; 3000];

    // Bob's supergroup with a description and a photo; Alice is a plain member.
    let made = sim
        .post(
            "/control/channels",
            json!({"creator": bob, "title": "Bobs", "members": [alice, carol],
                   "about": "Bob's people",
                   "photo": base64::engine::general_purpose::STANDARD.encode(&photo)}),
        )
        .await;
    let (cid, chash) = (
        made["id"].as_i64().expect("id"),
        made["access_hash"].as_i64().expect("hash"),
    );
    let channel = peer_channel(cid, chash);
    let tl::enums::messages::ChatFull::Full(full) = acc
        .client
        .invoke(&tl::functions::channels::GetFullChannel {
            channel: channel.into(),
        })
        .await
        .expect("full channel");
    let tl::enums::ChatFull::ChannelFull(full_channel) = full.full_chat else {
        panic!("a channel's full chat");
    };
    assert_eq!(full_channel.about, "Bob's people");
    let photo_id = full
        .chats
        .iter()
        .find_map(|c| match c {
            tl::enums::Chat::Channel(c) if c.id == cid => match &c.photo {
                tl::enums::ChatPhoto::Photo(p) => Some(p.photo_id),
                tl::enums::ChatPhoto::Empty => None,
            },
            _ => None,
        })
        .expect("the channel object carries its photo");
    let tl::enums::upload::File::File(file) = acc
        .client
        .invoke(&tl::functions::upload::GetFile {
            precise: false,
            cdn_supported: false,
            location: tl::enums::InputFileLocation::InputPeerPhotoFileLocation(
                tl::types::InputPeerPhotoFileLocation {
                    big: true,
                    peer: channel.into(),
                    photo_id,
                },
            ),
            offset: 0,
            limit: 1024 * 1024,
        })
        .await
        .expect("the photo downloads by peer")
    else {
        panic!("upload.file");
    };
    assert_eq!(file.bytes, photo);

    // Not an admin: Telegram refuses the rename and the removal, and nothing changes.
    let refused = acc
        .client
        .invoke(&tl::functions::channels::EditTitle {
            channel: channel.into(),
            title: "Alice's".into(),
        })
        .await;
    assert_eq!(rpc_error(refused), "CHAT_ADMIN_REQUIRED");
    let refused = acc
        .client
        .invoke(&tl::functions::messages::EditChatAbout {
            peer: channel.into(),
            about: "mine".into(),
        })
        .await;
    assert_eq!(rpc_error(refused), "CHAT_ADMIN_REQUIRED");
    let chat = sim
        .get(&format!("/control/chat?type=channel&id={cid}"))
        .await;
    assert_eq!(
        (chat["title"].as_str(), chat["about"].as_str()),
        (Some("Bobs"), Some("Bob's people"))
    );

    // A basic group: members may rename, describe and add; only admins remove.
    let group = sim
        .post(
            "/control/chats",
            json!({"creator": bob, "title": "Basic", "members": [alice]}),
        )
        .await["id"]
        .as_i64()
        .expect("chat");
    acc.client
        .invoke(&tl::functions::messages::EditChatTitle {
            chat_id: group,
            title: "Renamed by Alice".into(),
        })
        .await
        .expect("a member may rename a basic group");
    assert!(matches!(
        acc.client
            .invoke(&tl::functions::messages::EditChatAbout {
                peer: tl::enums::InputPeer::Chat(tl::types::InputPeerChat { chat_id: group }),
                about: "Described".into(),
            })
            .await,
        Ok(true)
    ));
    acc.client
        .invoke(&tl::functions::messages::AddChatUser {
            chat_id: group,
            user_id: peer_user(carol).into(),
            fwd_limit: 0,
        })
        .await
        .expect("a member may add");
    let refused = acc
        .client
        .invoke(&tl::functions::messages::DeleteChatUser {
            revoke_history: false,
            chat_id: group,
            user_id: peer_user(carol).into(),
        })
        .await;
    assert_eq!(rpc_error(refused), "CHAT_ADMIN_REQUIRED");
    let chat = sim
        .get(&format!("/control/chat?type=chat&id={group}"))
        .await;
    assert_eq!(chat["title"], "Renamed by Alice");
    assert_eq!(chat["about"], "Described");
    assert_eq!(chat["members"], json!([bob, alice, carol]));
    let sent = sim.get(&format!("/control/sent?from={alice}")).await;
    let kinds: Vec<&str> = sent
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|r| r["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["edit_title", "edit_about", "add_user"]);
    acc.stop().await;
}
