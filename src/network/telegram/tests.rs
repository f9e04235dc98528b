//! The login flows and the stored session, against the Telegram simulator (`testnet`).

use std::sync::Arc;

use base64::Engine as _;
use grammers_client::Client;
use grammers_client::sender::{SenderPool, UpdatesConfiguration};
use grammers_client::update::Update;
use rand::RngCore as _;
use serde_json::{Value, json};
use testnet::telegram::TelegramServer;

use super::store::DbSession;
use super::{TelegramConfig, TelegramNetwork};
use crate::config::{DatabaseConfig, DatabaseType};
use crate::db::Db;
use crate::network::{
    ChatId, DisplayKind, EventSink, LoginStep, MessageContent, Network as _, OutgoingMessage,
    RemoteEvent, SessionSignal, StoredLogin,
    richtext::{Entity, EntityKind, FormattedText},
};

struct Fixture {
    sim: TelegramServer,
    db: Db,
    dir: std::path::PathBuf,
    http: reqwest::Client,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = std::env::temp_dir().join(format!("ferry-tg-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let db = Db::connect(&DatabaseConfig {
            kind: DatabaseType::Sqlite,
            uri: format!("sqlite://{}", dir.join("ferry.db").display()),
            max_connections: 2,
        })
        .await
        .expect("database");
        Fixture {
            sim: TelegramServer::start().await.expect("simulator"),
            db,
            dir,
            http: reqwest::Client::new(),
        }
    }

    /// A network whose logins use a fresh key shared with the simulator.
    fn network(&self) -> TelegramNetwork {
        let mut key = [0u8; 256];
        rand::rng().fill_bytes(&mut key);
        self.sim.add_auth_key(key);
        let std::net::SocketAddr::V4(addr) = self.sim.mtproto_addr() else {
            panic!("IPv4 simulator")
        };
        TelegramNetwork::new(TelegramConfig::for_test_server(addr, key), self.db.clone())
    }

    async fn control(&self, path: &str, body: Value) -> Value {
        let resp = self
            .http
            .post(format!("{}{path}", self.sim.control_url()))
            .json(&body)
            .send()
            .await
            .expect("control API");
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().await.expect("json")
    }

    async fn done(self) {
        self.db.close().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn prompt(step: &LoginStep) -> (&str, bool) {
    match step {
        LoginStep::Input { prompt, secret } => (prompt.as_str(), *secret),
        other => panic!("expected an input step, got {other:?}"),
    }
}

type Updates = tokio::sync::mpsc::Receiver<grammers_client::session::updates::UpdatesLike>;

/// A client on a login's stored session, as a restarted ferry would build it.
async fn resume_with_updates(
    db: &Db,
    login: &str,
) -> (Client, Updates, tokio::task::JoinHandle<()>) {
    let session = DbSession::load(db.clone(), login)
        .await
        .expect("readable")
        .expect("stored");
    let pool = SenderPool::new(Arc::new(session), 611);
    let client = Client::new(pool.handle);
    (client, pool.updates, tokio::spawn(pool.runner.run()))
}

async fn resume(db: &Db, login: &str) -> (Client, tokio::task::JoinHandle<()>) {
    let (client, _updates, runner) = resume_with_updates(db, login).await;
    (client, runner)
}

#[tokio::test]
async fn phone_code_and_password_login_is_stored_and_resumes() {
    let f = Fixture::new().await;
    let id = f
        .control(
            "/control/users",
            json!({"first_name": "Ada", "username": "ada",
                 "phone": "+447700900123", "code": "31415", "password": "s3cret", "hint": "usual"}),
        )
        .await["id"]
        .as_i64()
        .expect("id");
    let network = f.network();
    let mut login = network.start_login("phone").expect("flow");
    let step = login.start().await.expect("start");
    assert!(prompt(&step).0.contains("phone number"));
    let step = login.submit("+44 7700 900123").await.expect("phone");
    assert!(prompt(&step).0.contains("code"));
    let step = login.submit("00000").await.expect("wrong code is a retry");
    assert!(prompt(&step).0.contains("not accepted"));
    let step = login.submit("31415").await.expect("code");
    let (text, secret) = prompt(&step);
    assert!(text.contains("two-step") && text.contains("usual") && secret);
    let step = login
        .submit("nope")
        .await
        .expect("wrong password is a retry");
    assert!(prompt(&step).0.contains("Wrong password"));
    let step = login.submit("s3cret").await.expect("password");
    let LoginStep::Complete(done) = step else {
        panic!("expected completion, got {step:?}")
    };
    assert_eq!(done.id.as_str(), id.to_string());
    assert_eq!(done.remote_name, "@ada");
    assert!(
        !done.secret.to_string().contains("auth_key"),
        "the login row names the session, the key stays in the session store"
    );
    drop(login);

    // A restarted ferry resumes from the database alone.
    let (client, runner) = resume(&f.db, done.id.as_str()).await;
    let me = client.get_me().await.expect("still logged in");
    assert_eq!(me.id().bare_id_unchecked(), id);
    client.disconnect();
    let _ = runner.await;
    f.done().await;
}

#[tokio::test]
async fn qr_login_completes_when_the_phone_scans() {
    let f = Fixture::new().await;
    let id = f
        .control(
            "/control/users",
            json!({"first_name": "Grace", "phone": "+15550199"}),
        )
        .await["id"]
        .as_i64()
        .expect("id");
    let network = f.network();
    let mut login = network.start_login("qr").expect("flow");
    let step = login.start().await.expect("start");
    let LoginStep::DisplayAndWait {
        kind: DisplayKind::Qr,
        data,
        ..
    } = step
    else {
        panic!("expected a QR code, got {step:?}")
    };
    let token = data
        .strip_prefix("tg://login?token=")
        .expect("tg:// login URL");
    assert!(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .is_ok()
    );
    f.control(
        "/control/login_tokens/scan",
        json!({"token": token, "user": id}),
    )
    .await;
    let step = login.wait().await.expect("scanned");
    let LoginStep::Complete(done) = step else {
        panic!("expected completion, got {step:?}")
    };
    assert_eq!(done.id.as_str(), id.to_string());
    drop(login);
    let (client, runner) = resume(&f.db, done.id.as_str()).await;
    assert_eq!(
        client
            .get_me()
            .await
            .expect("logged in")
            .id()
            .bare_id_unchecked(),
        id
    );
    client.disconnect();
    let _ = runner.await;
    f.done().await;
}

#[tokio::test]
async fn bot_token_login_and_update_state_survive_a_restart() {
    let f = Fixture::new().await;
    let bot = f
        .control(
            "/control/users",
            json!({"first_name": "Relay", "username": "relay_bot",
                 "bot_token": "77:xyz"}),
        )
        .await["id"]
        .as_i64()
        .expect("id");
    let peer = f
        .control(
            "/control/users",
            json!({"first_name": "Linus", "phone": "+15550198"}),
        )
        .await["id"]
        .as_i64()
        .expect("id");
    let network = f.network();
    let mut login = network.start_login("bot").expect("flow");
    let step = login.start().await.expect("start");
    assert!(prompt(&step).1, "a bot token is typed as a secret");
    let step = login.submit("77:wrong").await.expect("retry");
    assert!(prompt(&step).0.contains("did not accept"));
    let LoginStep::Complete(done) = login.submit("77:xyz").await.expect("token") else {
        panic!("expected completion")
    };
    assert_eq!(done.id.as_str(), bot.to_string());
    assert_eq!(done.remote_name, "@relay_bot");

    // A message arrives through the update stream; the state it advances is stored, so a
    // restarted ferry asks Telegram only for what came after it.
    let (client, updates, runner) = resume_with_updates(&f.db, done.id.as_str()).await;
    let mut stream = client
        .stream_updates(updates, UpdatesConfiguration { catch_up: true })
        .await
        .expect("stream");
    f.control(
        "/control/send",
        json!({"from": peer, "peer": {"type": "user", "id": bot}, "text": "ping"}),
    )
    .await;
    let update = tokio::time::timeout(std::time::Duration::from_secs(20), stream.next())
        .await
        .expect("an update in time")
        .expect("stream works");
    let Update::NewMessage(m) = update else {
        panic!("expected the message, got {update:?}")
    };
    assert_eq!(m.text(), "ping");
    stream.sync_update_state().await.expect("state stored");
    drop(stream);
    client.disconnect();
    let _ = runner.await;
    let stored = DbSession::load(f.db.clone(), done.id.as_str())
        .await
        .expect("readable")
        .expect("stored");
    assert_eq!(
        stored.update_state().expect("state").pts,
        2,
        "pts 1 at login, 2 after 'ping'"
    );
    f.done().await;
}

/// Waits for the next remote event from a session (skipping connection-state signals).
async fn next_event(rx: &mut tokio::sync::mpsc::Receiver<SessionSignal>) -> RemoteEvent {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(SessionSignal::Event(env))) => return env.event,
            Ok(Some(_)) => {}
            Ok(None) => panic!("sink closed"),
            Err(_) => panic!("no remote event in time"),
        }
    }
}

async fn wait_connected(session: &dyn crate::network::Session) {
    for _ in 0..200 {
        if session.state() == crate::network::ConnectionState::Connected {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("session did not connect: {}", session.state());
}

#[tokio::test]
async fn live_session_bridges_both_ways_and_catches_up_after_a_restart() {
    let f = Fixture::new().await;
    let ada = f
        .control(
            "/control/users",
            json!({"first_name": "Ada", "phone": "+15550190"}),
        )
        .await["id"]
        .as_i64()
        .expect("id");
    let bob = f
        .control(
            "/control/users",
            json!({"first_name": "Bob", "phone": "+15550191"}),
        )
        .await["id"]
        .as_i64()
        .expect("id");
    let network = f.network();
    let mut login = network.start_login("phone").expect("flow");
    login.start().await.expect("start");
    login.submit("+15550190").await.expect("phone");
    let LoginStep::Complete(done) = login.submit("12345").await.expect("code") else {
        panic!("expected completion")
    };
    drop(login);
    let stored = StoredLogin {
        id: done.id.clone(),
        secret: done.secret.clone(),
        checkpoint: None,
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let session = network
        .load_session(&stored, EventSink::new(tx))
        .expect("session");
    session.connect(None).await;
    wait_connected(session.as_ref()).await;
    assert_eq!(session.own_user().as_str(), ada.to_string());

    // Telegram -> bridge: a formatted message, its edit, typing, deletion.
    let to_ada = json!({"type": "user", "id": ada});
    let sent = f
        .control(
            "/control/send",
            json!({"from": bob, "peer": to_ada, "text": "hi 😀 bold",
                 "entities": [{"type": "bold", "offset": 6, "length": 4}]}),
        )
        .await;
    let RemoteEvent::Message { chat, message } = next_event(&mut rx).await else {
        panic!("expected a message")
    };
    assert_eq!(chat, ChatId::new(format!("u{bob}")));
    assert_eq!(message.sender.id.as_str(), bob.to_string());
    assert_eq!(message.sender.name, "Bob");
    let MessageContent::Text(text) = &message.content else {
        panic!("text expected")
    };
    assert_eq!(text.text, "hi 😀 bold");
    assert_eq!(
        text.entities,
        vec![Entity::new(5, 4, EntityKind::Bold)],
        "UTF-16 offset 6 is char 5"
    );
    f.control(
        "/control/edit",
        json!({"from": bob, "peer": to_ada, "id": sent["id"], "text": "hi (edited)"}),
    )
    .await;
    let RemoteEvent::Edit { id, content, .. } = next_event(&mut rx).await else {
        panic!("expected an edit")
    };
    assert_eq!(id, message.id);
    assert_eq!(content, MessageContent::text("hi (edited)"));
    f.control(
        "/control/react",
        json!({"from": bob, "peer": to_ada, "id": sent["id"], "emoji": "🎉"}),
    )
    .await;
    let RemoteEvent::Reaction {
        target,
        sender,
        emoji,
        removed,
        ..
    } = next_event(&mut rx).await
    else {
        panic!("expected a reaction")
    };
    assert_eq!(target, message.id);
    assert_eq!(sender.id.as_str(), bob.to_string());
    assert_eq!((emoji.as_str(), removed), ("🎉", false));
    f.control(
        "/control/react",
        json!({"from": bob, "peer": to_ada, "id": sent["id"], "emoji": null}),
    )
    .await;
    let RemoteEvent::Reaction { emoji, removed, .. } = next_event(&mut rx).await else {
        panic!("expected the reaction's removal")
    };
    assert_eq!((emoji.as_str(), removed), ("🎉", true));
    f.control("/control/typing", json!({"from": bob, "peer": to_ada}))
        .await;
    assert!(matches!(
        next_event(&mut rx).await,
        RemoteEvent::Typing { typing: true, .. }
    ));
    f.control(
        "/control/delete",
        json!({"from": bob, "peer": to_ada, "ids": [sent["id"]]}),
    )
    .await;
    let RemoteEvent::Delete { id, .. } = next_event(&mut rx).await else {
        panic!("expected a delete")
    };
    assert_eq!(id, message.id);

    // Bridge -> Telegram: a formatted reply target, an edit, a reaction, a read, typing.
    let again = f
        .control(
            "/control/send",
            json!({"from": bob, "peer": to_ada, "text": "second"}),
        )
        .await;
    let RemoteEvent::Message {
        message: second, ..
    } = next_event(&mut rx).await
    else {
        panic!("expected a message")
    };
    let out = session
        .send_message(
            &chat,
            "txn1",
            &OutgoingMessage {
                content: MessageContent::Text(FormattedText::new(
                    "answer",
                    vec![Entity::new(0, 6, EntityKind::Italic)],
                )),
                reply_to: Some(second.id.clone()),
            },
        )
        .await
        .expect("sent");
    session
        .edit_message(&chat, &out.id, &MessageContent::text("answer!"))
        .await
        .expect("edited");
    session
        .react(&chat, &second.id, "👍", false)
        .await
        .expect("reacted");
    session.mark_read(&chat, &second.id).await.expect("read");
    session.set_typing(&chat, true).await.expect("typing");
    let log = f
        .http
        .get(format!("{}/control/sent?from={ada}", f.sim.control_url()))
        .send()
        .await
        .expect("control")
        .json::<Value>()
        .await
        .expect("json");
    let log = log.as_array().expect("list");
    let kinds: Vec<&str> = log.iter().filter_map(|r| r["kind"].as_str()).collect();
    assert_eq!(kinds, ["message", "edit", "reaction", "read", "typing"]);
    assert_eq!(log[0]["text"], "answer");
    assert_eq!(log[0]["entities"], json!(["italic:0:6"]));
    assert_eq!(
        log[0]["reply_to"],
        json!(second.id.as_str().parse::<i64>().expect("id"))
    );
    assert_eq!(log[2]["reaction"], "👍");
    let _ = again;

    // Media both ways: a document from Bob downloads through the session; a file from Matrix is
    // uploaded and sent with its caption.
    let doc: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    f.control(
        "/control/send",
        json!({"from": bob, "peer": to_ada, "text": "the spec", "media": {"kind": "document",
               "name": "spec.pdf", "mime_type": "application/pdf",
               "data": base64::engine::general_purpose::STANDARD.encode(&doc)}}),
    )
    .await;
    // (The account's own sends come back as events first; skip to Bob's.)
    let with_doc = loop {
        if let RemoteEvent::Message { message, .. } = next_event(&mut rx).await
            && message.sender.id.as_str() == bob.to_string()
        {
            break message;
        }
    };
    let MessageContent::Media { media, caption } = &with_doc.content else {
        panic!("expected media, got {:?}", with_doc.content)
    };
    assert_eq!(media.kind, crate::network::MediaKind::File);
    assert_eq!(media.name, "spec.pdf");
    assert_eq!(media.content_type, "application/pdf");
    assert_eq!(media.size, doc.len() as u64);
    assert_eq!(caption.as_ref().map(|c| c.text.as_str()), Some("the spec"));
    let mut stream = session
        .download_media(&media.id)
        .await
        .expect("download starts");
    let mut got = Vec::new();
    while let Some(chunk) = futures_util::StreamExt::next(&mut stream.body).await {
        got.extend_from_slice(&chunk.expect("chunk"));
    }
    assert!(
        got == doc,
        "downloaded {} bytes, expected {}",
        got.len(),
        doc.len()
    );
    let upload = crate::network::MediaStream {
        content_type: "text/plain".into(),
        size: Some(5),
        body: Box::pin(futures_util::stream::iter([Ok(bytes::Bytes::from_static(
            b"hello",
        ))])),
    };
    let up_id = session
        .upload_media(upload, "hello.txt")
        .await
        .expect("uploaded");
    session
        .send_message(
            &chat,
            "txn2",
            &OutgoingMessage {
                content: MessageContent::Media {
                    media: crate::network::Media {
                        id: up_id,
                        kind: crate::network::MediaKind::File,
                        name: "hello.txt".into(),
                        content_type: "text/plain".into(),
                        size: 5,
                        width: None,
                        height: None,
                        duration_ms: None,
                        waveform: None,
                    },
                    caption: Some(FormattedText::plain("a file")),
                },
                reply_to: None,
            },
        )
        .await
        .expect("media sent");
    let log = f
        .http
        .get(format!("{}/control/sent?from={ada}", f.sim.control_url()))
        .send()
        .await
        .expect("control")
        .json::<Value>()
        .await
        .expect("json");
    let last = log
        .as_array()
        .and_then(|l| l.last())
        .cloned()
        .expect("record");
    assert_eq!(last["kind"], "media");
    assert_eq!(last["text"], "a file");
    assert!(
        last["media"]
            .as_str()
            .is_some_and(|m| m.starts_with("document:") && m.ends_with(":text/plain")),
        "{last}"
    );

    // A supergroup: its info lists members and admins (for power levels).
    let group = f
        .control(
            "/control/channels",
            json!({"creator": bob, "title": "Team", "members": [ada], "admins": [bob]}),
        )
        .await["id"]
        .as_i64()
        .expect("id");
    f.control(
        "/control/send",
        json!({"from": bob, "peer": {"type": "channel", "id": group}, "text": "welcome"}),
    )
    .await;
    let group_chat = ChatId::new(format!("c{group}"));
    loop {
        if let RemoteEvent::Message { chat, message } = next_event(&mut rx).await
            && chat == group_chat
        {
            assert_eq!(text_of(&message.content), "welcome");
            break;
        }
    }
    let info = session.chat_info(&group_chat).await.expect("group info");
    assert_eq!(info.name.as_deref(), Some("Team"));
    assert_eq!(info.kind, crate::network::ChatKind::Group);
    let mut names: Vec<&str> = info.members.iter().map(|m| m.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["Ada", "Bob"]);
    assert_eq!(
        info.admins,
        vec![crate::network::RemoteUserId::new(bob.to_string())]
    );

    // Own sends come back as updates; drain them before the restart.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    while rx.try_recv().is_ok() {}

    // A "restart": messages sent while ferry is down arrive once when it is back.
    session.disconnect().await;
    for text in ["while down 1", "while down 2"] {
        f.control(
            "/control/send",
            json!({"from": bob, "peer": to_ada, "text": text}),
        )
        .await;
    }
    let session = network
        .load_session(
            &stored,
            EventSink::new({
                let (tx2, rx2) = tokio::sync::mpsc::channel(64);
                rx = rx2;
                tx2
            }),
        )
        .expect("session");
    session.connect(None).await;
    let mut texts = Vec::new();
    for _ in 0..2 {
        if let RemoteEvent::Message { message, .. } = next_event(&mut rx).await {
            texts.push(text_of(&message.content));
        }
    }
    assert_eq!(texts, ["while down 1", "while down 2"]);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let mut extra = Vec::new();
    while let Ok(SessionSignal::Event(env)) = rx.try_recv() {
        extra.push(env.event.kind());
    }
    assert!(extra.is_empty(), "nothing delivered twice: {extra:?}");
    session.disconnect().await;
    f.done().await;
}

fn text_of(content: &MessageContent) -> String {
    match content {
        MessageContent::Text(t) => t.text.clone(),
        other => other.kind().to_owned(),
    }
}
