//! The WhatsApp simulator driven by the real whatsapp-rust client (in-memory store), the client
//! ferry uses in production: linking by QR code and by pairing code, reconnecting as the linked
//! device, and messages both ways with the simulated contacts (themselves whatsapp-rust clients),
//! decrypted on the other side.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use testnet::whatsapp::WhatsAppServer;
use tokio::sync::mpsc;
use wacore::store::InMemoryBackend;
use wacore::types::events::Event;
use whatsapp_rust::Client;
use whatsapp_rust::bot::{Bot, BotHandle};

const USER: &str = "15550100001";
const ALICE: &str = "15550200002";
const BOB: &str = "15550200003";

struct Control {
    base: String,
    http: reqwest::Client,
}

impl Control {
    fn new(server: &WhatsAppServer) -> Self {
        Self {
            base: server.control_url(),
            http: reqwest::Client::new(),
        }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("control API reachable");
        let status = resp.status();
        let v: Value = resp.json().await.expect("control API answers JSON");
        assert!(status.is_success(), "POST {path} {body} -> {status}: {v}");
        v
    }

    async fn get(&self, path: &str) -> Value {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("control API reachable");
        let status = resp.status();
        let v: Value = resp.json().await.expect("control API answers JSON");
        assert!(status.is_success(), "GET {path} -> {status}: {v}");
        v
    }

    /// Polls `GET path` until `pick` finds something (or fails after `secs`).
    async fn wait_for<T>(&self, path: &str, secs: u64, pick: impl Fn(&Value) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.get(path).await;
            if let Some(t) = pick(&v) {
                return t;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting on {path}; last answer: {v}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The bridged device: a whatsapp-rust client with an in-memory store, and what it saw.
struct Device {
    client: Arc<Client>,
    handle: Option<BotHandle>,
    events: mpsc::UnboundedReceiver<Arc<Event>>,
}

impl Device {
    async fn start(server: &WhatsAppServer, backend: Arc<InMemoryBackend>) -> Self {
        Self::start_with(server, backend, None).await
    }

    async fn start_with(
        server: &WhatsAppServer,
        backend: Arc<InMemoryBackend>,
        pair_code: Option<wacore::pair_code::PairCodeOptions>,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let transport = whatsapp_rust_tokio_transport::TokioWebSocketTransportFactory::new()
            .with_url(server.ws_url());
        let mut builder = Bot::builder()
            .with_backend_arc(backend)
            .with_transport_factory(transport)
            .with_http_client(testnet::whatsapp::SimHttpClient::new(server.chat_addr()))
            .with_version((2, 3000, 1_020_000_000))
            .on_event(move |event, _client| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(event);
                }
            });
        if let Some(options) = pair_code {
            builder = builder.with_pair_code(options);
        }
        let bot = builder.build().await.expect("bot builds");
        let client = bot.client();
        let handle = bot.spawn();
        Self {
            client,
            handle: Some(handle),
            events: rx,
        }
    }

    /// The next event `pick` accepts, within `secs`.
    async fn next<T>(&mut self, secs: u64, pick: impl Fn(&Event) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let ev = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .expect("timed out waiting for a client event")
                .expect("client event stream ended");
            if let Some(t) = pick(&ev) {
                return t;
            }
        }
    }

    fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }

    /// Stops the client as a process exit would: the connection closes.
    async fn shutdown(mut self) {
        // Write the Signal state the client still holds in memory now, so nothing it flushes
        // later lands in the store after the test has changed it (seen under load).
        let _ = self.client.flush_pending_signal_state().await;
        self.client.disconnect().await;
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.stop();
    }
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// Starts the simulator, the user's account, and links a fresh device by QR code.
async fn linked_device(server: &WhatsAppServer, ctl: &Control) -> (Device, Arc<InMemoryBackend>) {
    ctl.post(
        "/control/accounts",
        json!({ "phone": USER, "name": "Bridge User" }),
    )
    .await;
    let backend = Arc::new(InMemoryBackend::new());
    let mut dev = Device::start(server, backend.clone()).await;
    let code = dev
        .next(20, |e| match e {
            Event::PairingQrCode(q) => Some(q.code.clone()),
            _ => None,
        })
        .await;
    let linked = ctl
        .post("/control/qr/scan", json!({ "phone": USER, "code": code }))
        .await;
    assert_eq!(linked["device"], format!("{USER}:1@s.whatsapp.net"));
    dev.next(20, |e| matches!(e, Event::PairSuccess(_)).then_some(()))
        .await;
    dev.next(30, |e| matches!(e, Event::Connected(_)).then_some(()))
        .await;
    (dev, backend)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn qr_linking_then_reconnect_as_the_linked_device() {
    init_logs();
    let server = WhatsAppServer::start().await.expect("simulator starts");
    let ctl = Control::new(&server);
    let (dev, backend) = linked_device(&server, &ctl).await;
    let jid = dev.client.pn().expect("device has its JID");
    assert_eq!(jid.to_string(), format!("{USER}:1@s.whatsapp.net"));
    // The account's phone (device 0) and the linked device, both online.
    let devices = ctl.get(&format!("/control/devices?phone={USER}")).await;
    assert_eq!(devices["devices"][0]["device"], 0);
    assert_eq!(devices["devices"][1]["device"], 1);
    assert_eq!(devices["devices"][1]["online"], true);

    // A new process with the same store logs in again without linking.
    dev.shutdown().await;
    let mut again = Device::start(&server, backend).await;
    again
        .next(30, |e| match e {
            Event::Connected(_) => Some(()),
            Event::PairingQrCode(_) => panic!("a linked device must not be asked to link again"),
            _ => None,
        })
        .await;

    // Logging out from the device unlinks it, answered at once (the client would give up after
    // its 3 s timeout otherwise): only the phone remains.
    let started = std::time::Instant::now();
    again.client.logout().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "logout took {:?}",
        started.elapsed()
    );
    let devices = ctl.get(&format!("/control/devices?phone={USER}")).await;
    assert_eq!(
        devices["devices"].as_array().map(Vec::len),
        Some(1),
        "{devices}"
    );
    server.shutdown().await;
}

fn text_of(m: &wacore::types::events::InboundMessage) -> Option<String> {
    use wacore::proto_helpers::MessageExt as _;
    m.message
        .get_base_message()
        .text_content()
        .map(str::to_owned)
}

/// The first message the device receives whose text `pick` accepts, with its sender and id.
async fn next_text(dev: &mut Device, secs: u64, want: &str) -> (String, String, String) {
    dev.next(secs, |e| match e {
        Event::Messages(batch) => batch.messages.iter().find_map(|m| {
            let text = text_of(m)?;
            (text == want).then(|| {
                (
                    m.info.source.chat.to_string(),
                    m.info.source.sender.to_string(),
                    m.info.id.to_string(),
                )
            })
        }),
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn text_both_ways_is_decrypted_on_the_other_side_with_receipts() {
    init_logs();
    let server = WhatsAppServer::start().await.expect("simulator starts");
    let ctl = Control::new(&server);
    let (mut dev, _backend) = linked_device(&server, &ctl).await;
    let alice = ctl
        .post(
            "/control/contacts",
            json!({ "phone": ALICE, "name": "Alice" }),
        )
        .await;
    assert_eq!(alice["jid"], format!("{ALICE}@s.whatsapp.net"));

    // Contact -> bridged device (pkmsg: Alice starts the Signal session).
    let sent = ctl
        .post(
            "/control/send",
            json!({ "from": ALICE, "to": USER, "text": "hello from Alice" }),
        )
        .await;
    let (chat, sender, id) = next_text(&mut dev, 20, "hello from Alice").await;
    assert_eq!(chat, format!("{ALICE}@s.whatsapp.net"));
    assert!(sender.starts_with(ALICE), "sender {sender}");
    assert_eq!(id, sent["id"].as_str().expect("id"));

    // Bridged device -> contact, decrypted by Alice's client.
    let alice_jid: wacore_binary::Jid = format!("{ALICE}@s.whatsapp.net").parse().expect("jid");
    let out = dev
        .client
        .send_message(
            alice_jid.clone(),
            waproto::whatsapp::Message {
                conversation: Some("hi Alice, from the bridge".into()),
                ..Default::default()
            },
        )
        .await
        .expect("send to Alice");
    let got = ctl
        .wait_for(&format!("/control/received?to={ALICE}"), 20, |v| {
            v["messages"]
                .as_array()?
                .iter()
                .find(|m| m["text"] == "hi Alice, from the bridge")
                .cloned()
        })
        .await;
    assert_eq!(got["id"], out.message_id.to_string());
    assert!(
        got["sender"]
            .as_str()
            .is_some_and(|s| s.starts_with(&format!("{USER}:1")))
    );

    // Alice's client confirmed delivery by itself; she then reads it.
    dev.next(20, |e| match e {
        Event::Receipt(r) if r.message_ids.contains(&out.message_id) => Some(()),
        _ => None,
    })
    .await;
    ctl.post(
        "/control/receipt",
        json!({ "from": ALICE, "chat": USER, "ids": [out.message_id.to_string()] }),
    )
    .await;
    dev.next(20, |e| match e {
        Event::Receipt(r)
            if format!("{:?}", r.r#type).to_lowercase().contains("read")
                && r.message_ids.contains(&out.message_id) =>
        {
            Some(())
        }
        _ => None,
    })
    .await;

    // The bridged device reads Alice's message: Alice's client gets the read receipt.
    dev.client
        .mark_as_read(&alice_jid, None, &[id.as_str()])
        .await
        .expect("mark as read");
    ctl.wait_for(&format!("/control/receipts?to={ALICE}"), 20, |v| {
        v["receipts"]
            .as_array()?
            .iter()
            .find(|r| r["ids"][0] == id && r["type"].as_str().is_some_and(|t| t.contains("read")))
            .cloned()
    })
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_messages_both_ways_with_sender_keys() {
    init_logs();
    let server = WhatsAppServer::start().await.expect("simulator starts");
    let ctl = Control::new(&server);
    let (mut dev, _backend) = linked_device(&server, &ctl).await;
    for (phone, name) in [(ALICE, "Alice"), (BOB, "Bob")] {
        ctl.post("/control/contacts", json!({ "phone": phone, "name": name }))
            .await;
    }
    let group = ctl
        .post(
            "/control/groups",
            json!({ "subject": "Test group", "creator": ALICE, "members": [USER, BOB] }),
        )
        .await;
    let gjid = group["jid"].as_str().expect("group jid").to_owned();

    // A contact writes to the group (skmsg, with the sender key distributed by pkmsg).
    ctl.post(
        "/control/send",
        json!({ "from": ALICE, "to": gjid, "text": "hello group" }),
    )
    .await;
    let (chat, sender, _id) = next_text(&mut dev, 20, "hello group").await;
    assert_eq!(chat, gjid);
    assert!(sender.starts_with(ALICE), "sender {sender}");

    // The bridged device writes to the group; both contacts decrypt it.
    let g: wacore_binary::Jid = gjid.parse().expect("group jid");
    let out = dev
        .client
        .send_message(
            g,
            waproto::whatsapp::Message {
                conversation: Some("hello from the bridge".into()),
                ..Default::default()
            },
        )
        .await
        .expect("send to group");
    for who in [ALICE, BOB] {
        let got = ctl
            .wait_for(
                &format!("/control/received?to={who}&chat={gjid}"),
                20,
                |v| {
                    v["messages"]
                        .as_array()?
                        .iter()
                        .find(|m| m["text"] == "hello from the bridge")
                        .cloned()
                },
            )
            .await;
        assert_eq!(got["id"], out.message_id.to_string());
        assert_eq!(got["is_group"], true);
    }

    // Bob leaves: the bridged device learns it from the group notification.
    ctl.post(
        "/control/groups/members",
        json!({ "group": gjid, "author": ALICE, "remove": [BOB] }),
    )
    .await;
    dev.next(20, |e| match e {
        Event::GroupUpdate(u) => format!("{u:?}").contains(BOB).then_some(()),
        _ => None,
    })
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pairing_code_linking() {
    init_logs();
    let server = WhatsAppServer::start().await.expect("simulator starts");
    let ctl = Control::new(&server);
    ctl.post(
        "/control/accounts",
        json!({ "phone": USER, "name": "Bridge User" }),
    )
    .await;
    let options = wacore::pair_code::PairCodeOptions {
        phone_number: format!("+{USER}"),
        ..Default::default()
    };
    let mut dev =
        Device::start_with(&server, Arc::new(InMemoryBackend::new()), Some(options)).await;
    let code = dev
        .next(30, |e| match e {
            Event::PairingCode(c) => Some(c.code.clone()),
            _ => None,
        })
        .await;
    assert_eq!(code.len(), 8, "code {code}");

    // A wrong code is refused by the device's own key-bundle check: nothing gets linked.
    let wrong: String = code.chars().rev().collect();
    if wrong != code {
        ctl.post(
            "/control/pair_code",
            json!({ "phone": USER, "code": wrong }),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let devices = ctl.get(&format!("/control/devices?phone={USER}")).await;
        assert_eq!(
            devices["devices"].as_array().map(Vec::len),
            Some(1),
            "only the phone: {devices}"
        );
    }

    let linked = ctl
        .post("/control/pair_code", json!({ "phone": USER, "code": code }))
        .await;
    assert_eq!(linked["entered"], true);
    dev.next(20, |e| matches!(e, Event::PairSuccess(_)).then_some(()))
        .await;
    dev.next(30, |e| matches!(e, Event::Connected(_)).then_some(()))
        .await;
    assert_eq!(
        dev.client.pn().map(|j| j.to_string()),
        Some(format!("{USER}:1@s.whatsapp.net"))
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_sync_after_linking() {
    history_sync(false).await;
}

/// As WhatsApp normally sends it: the phone uploads the encrypted blob, the companion's
/// library downloads and decrypts it from the media host.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_sync_as_a_downloaded_blob() {
    history_sync(true).await;
}

async fn history_sync(blob: bool) {
    init_logs();
    let server = WhatsAppServer::start().await.expect("simulator starts");
    let ctl = Control::new(&server);
    let (mut dev, _backend) = linked_device(&server, &ctl).await;
    ctl.post(
        "/control/contacts",
        json!({ "phone": ALICE, "name": "Alice" }),
    )
    .await;
    let pushed = ctl
        .post(
            "/control/history_sync",
            json!({
                "phone": USER,
                "blob": blob,
                "conversations": [{
                    "chat": ALICE,
                    "name": "Alice",
                    "messages": [
                        { "id": "HIST1", "text": "an old hello" },
                        { "id": "HIST2", "text": "an old answer", "from_me": true },
                    ],
                }],
            }),
        )
        .await;
    assert_eq!(pushed["message_ids"], json!(["HIST1", "HIST2"]));
    if blob {
        let path = pushed["blob_path"].as_str().expect("the blob's path");
        assert!(path.contains("md-msg-hist"), "{path}");
        // The media host holds ciphertext only: it does not inflate as the zlib stream would.
        let stored = reqwest::get(format!("http://{}{path}", server.chat_addr()))
            .await
            .expect("media host")
            .bytes()
            .await
            .expect("blob");
        let mut inflated = Vec::new();
        let plain = std::io::Read::read_to_end(
            &mut flate2::read::ZlibDecoder::new(&stored[..]),
            &mut inflated,
        );
        assert!(
            stored.len() > 10 && plain.is_err(),
            "{} bytes",
            stored.len()
        );
    } else {
        assert!(pushed["blob_path"].is_null());
    }
    let history = dev
        .next(30, |e| match e {
            Event::HistorySync(h) => h.get().cloned(),
            _ => None,
        })
        .await;
    let conv = history
        .conversations
        .iter()
        .find(|c| c.id == format!("{ALICE}@s.whatsapp.net"))
        .expect("Alice's conversation is in the history");
    let texts: Vec<(String, bool)> = conv
        .messages
        .iter()
        .filter_map(|m| {
            let info = m.message.as_option()?;
            Some((
                info.message.as_option()?.conversation.clone()?,
                info.key.as_option()?.from_me?,
            ))
        })
        .collect();
    assert_eq!(
        texts,
        vec![
            ("an old hello".to_owned(), false),
            ("an old answer".to_owned(), true)
        ]
    );
    let alice_name = history
        .pushnames
        .iter()
        .find(|p| p.id.as_deref() == Some(format!("{ALICE}@s.whatsapp.net").as_str()))
        .and_then(|p| p.pushname.clone());
    assert_eq!(alice_name.as_deref(), Some("Alice"));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_contact_known_by_phone_number_switches_to_its_lid() {
    init_logs();
    let server = WhatsAppServer::start().await.expect("simulator starts");
    let ctl = Control::new(&server);
    let (mut dev, _backend) = linked_device(&server, &ctl).await;
    let alice = ctl
        .post(
            "/control/contacts",
            json!({ "phone": ALICE, "name": "Alice", "lid": "211111111111111" }),
        )
        .await;
    assert_eq!(alice["lid_jid"], "211111111111111@lid");
    ctl.post(
        "/control/send",
        json!({ "from": ALICE, "to": USER, "text": "by phone" }),
    )
    .await;
    let (chat, _, _) = next_text(&mut dev, 20, "by phone").await;
    assert_eq!(chat, format!("{ALICE}@s.whatsapp.net"));

    ctl.post("/control/lid_switch", json!({ "phone": ALICE }))
        .await;
    ctl.post(
        "/control/send",
        json!({ "from": ALICE, "to": USER, "text": "by lid" }),
    )
    .await;
    let alt = dev
        .next(20, |e| match e {
            Event::Messages(b) => b.messages.iter().find_map(|m| {
                (text_of(m).as_deref() == Some("by lid")).then(|| {
                    (
                        m.info.source.chat.to_string(),
                        m.info.source.sender_alt.as_ref().map(ToString::to_string),
                    )
                })
            }),
            _ => None,
        })
        .await;
    assert_eq!(alt.0, "211111111111111@lid");
    assert_eq!(
        alt.1.as_deref(),
        Some(format!("{ALICE}@s.whatsapp.net").as_str())
    );
    // The client learned the mapping: it resolves the LID to the phone number.
    let pn = dev
        .client
        .get_lid_pn_entry(&"211111111111111@lid".parse().expect("lid"))
        .await
        .expect("lookup")
        .map(|e| e.phone_number.to_string());
    assert_eq!(pn.as_deref(), Some(ALICE));
    server.shutdown().await;
}

/// The next message the device receives that `pick` accepts.
async fn next_message<T>(
    dev: &mut Device,
    secs: u64,
    pick: impl Fn(&waproto::whatsapp::Message) -> Option<T>,
) -> T {
    dev.next(secs, |e| match e {
        Event::Messages(b) => b.messages.iter().find_map(|m| pick(&m.message)),
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_message_kind_both_ways() {
    use waproto::whatsapp::message::protocol_message::Type;
    init_logs();
    let server = WhatsAppServer::start().await.expect("simulator starts");
    let ctl = Control::new(&server);
    let (mut dev, _backend) = linked_device(&server, &ctl).await;
    ctl.post(
        "/control/contacts",
        json!({ "phone": ALICE, "name": "Alice" }),
    )
    .await;
    let first = ctl
        .post(
            "/control/send",
            json!({ "from": ALICE, "to": USER, "text": "first" }),
        )
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    next_text(&mut dev, 20, "first").await;

    // Extended text with a link.
    ctl.post(
        "/control/send",
        json!({ "from": ALICE, "to": USER, "kind": "extended_text", "text": "see", "url": "https://example.org/x" }),
    )
    .await;
    let matched = next_message(&mut dev, 20, |m| {
        m.extended_text_message.as_option()?.matched_text.clone()
    })
    .await;
    assert_eq!(matched, "https://example.org/x");

    // A reply quoting the first message.
    ctl.post(
        "/control/send",
        json!({ "from": ALICE, "to": USER, "kind": "reply", "text": "replying", "target": first, "target_from_me": false, "target_sender": ALICE, "quoted_text": "first" }),
    )
    .await;
    let (text, quoted) = next_message(&mut dev, 20, |m| {
        let e = m.extended_text_message.as_option()?;
        let ctx = e.context_info.as_option()?;
        Some((e.text.clone()?, ctx.stanza_id.clone()?))
    })
    .await;
    assert_eq!(
        (text.as_str(), quoted.as_str()),
        ("replying", first.as_str())
    );

    // Edit, reaction, revoke of Alice's first message.
    ctl.post(
        "/control/send",
        json!({ "from": ALICE, "to": USER, "kind": "edit", "target": first, "text": "first (edited)" }),
    )
    .await;
    let (edited_id, edited_text) = next_message(&mut dev, 20, |m| {
        use wacore::proto_helpers::MessageExt as _;
        let p = m.get_base_message().protocol_message.as_option()?;
        (p.r#type == Some(Type::MESSAGE_EDIT)).then(|| {
            (
                p.key.as_option().and_then(|k| k.id.clone()),
                p.edited_message
                    .as_option()
                    .and_then(|e| e.text_content().map(str::to_owned)),
            )
        })
    })
    .await;
    assert_eq!(edited_id.as_deref(), Some(first.as_str()));
    assert_eq!(edited_text.as_deref(), Some("first (edited)"));

    ctl.post(
        "/control/send",
        json!({ "from": ALICE, "to": USER, "kind": "reaction", "target": first, "target_from_me": false, "emoji": "❤️" }),
    )
    .await;
    let (reacted, emoji) = next_message(&mut dev, 20, |m| {
        let r = m.reaction_message.as_option()?;
        Some((r.key.as_option()?.id.clone()?, r.text.clone()?))
    })
    .await;
    assert_eq!((reacted.as_str(), emoji.as_str()), (first.as_str(), "❤️"));

    ctl.post(
        "/control/send",
        json!({ "from": ALICE, "to": USER, "kind": "revoke", "target": first }),
    )
    .await;
    let revoked = next_message(&mut dev, 20, |m| {
        let p = m.protocol_message.as_option()?;
        (p.r#type == Some(Type::REVOKE)).then(|| p.key.as_option().and_then(|k| k.id.clone()))?
    })
    .await;
    assert_eq!(revoked, first);

    // The bridged device edits, reacts to and revokes its own message; Alice's client sees each.
    let alice_jid: wacore_binary::Jid = format!("{ALICE}@s.whatsapp.net").parse().expect("jid");
    let mine = dev
        .client
        .send_text(alice_jid.clone(), "mine")
        .await
        .expect("send")
        .message_id
        .to_string();
    dev.client
        .edit_message(
            alice_jid.clone(),
            mine.clone(),
            waproto::whatsapp::Message {
                conversation: Some("mine (edited)".into()),
                ..Default::default()
            },
        )
        .await
        .expect("edit");
    ctl.wait_for(&format!("/control/received?to={ALICE}"), 20, |v| {
        v["messages"]
            .as_array()?
            .iter()
            .find(|m| m["text"] == "mine (edited)")
            .cloned()
    })
    .await;
    let key = waproto::whatsapp::MessageKey {
        remote_jid: Some(alice_jid.to_string()),
        from_me: Some(true),
        id: Some(mine.clone()),
        ..Default::default()
    };
    dev.client
        .send_reaction(alice_jid.clone(), key, "👍")
        .await
        .expect("react");
    dev.client
        .revoke_message(
            alice_jid.clone(),
            mine.clone(),
            whatsapp_rust::send::RevokeType::Sender,
        )
        .await
        .expect("revoke");
    ctl.wait_for(&format!("/control/received?to={ALICE}"), 20, |v| {
        v["messages"].as_array()?.iter().find(|m| {
            let r = &m["message"]["reaction_message"];
            r["key"]["id"] == mine.as_str() && r["text"] == "👍"
        })?;
        Some(())
    })
    .await;
    ctl.wait_for(&format!("/control/received?to={ALICE}"), 20, |v| {
        v["messages"].as_array()?.iter().find(|m| {
            let p = &m["message"]["protocol_message"];
            p["key"]["id"] == mine.as_str() && p["type"] == "REVOKE"
        })?;
        Some(())
    })
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn media_both_ways_through_the_media_host() {
    use base64::Engine as _;
    init_logs();
    let server = WhatsAppServer::start().await.expect("simulator starts");
    let ctl = Control::new(&server);
    let (mut dev, _backend) = linked_device(&server, &ctl).await;
    ctl.post(
        "/control/contacts",
        json!({ "phone": ALICE, "name": "Alice" }),
    )
    .await;
    let picture: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
    ctl.post(
        "/control/send",
        json!({
            "from": ALICE, "to": USER, "kind": "image", "text": "a picture",
            "mimetype": "image/png",
            "data_base64": base64::engine::general_purpose::STANDARD.encode(&picture),
        }),
    )
    .await;
    let image = next_message(&mut dev, 20, |m| m.image_message.as_option().cloned()).await;
    assert_eq!(image.caption.as_deref(), Some("a picture"));
    let bytes = dev
        .client
        .download(&image)
        .await
        .expect("download the image");
    assert_eq!(bytes, picture);

    // The bridged device uploads a document; Alice's client downloads and decrypts it.
    let doc = b"%PDF-1.4 not really a pdf".to_vec();
    let up = dev
        .client
        .upload(
            doc.clone(),
            wacore::download::MediaType::Document,
            Default::default(),
        )
        .await
        .expect("upload");
    let msg = waproto::whatsapp::Message {
        document_message: buffa::MessageField::some(waproto::whatsapp::message::DocumentMessage {
            url: Some(up.url),
            direct_path: Some(up.direct_path),
            media_key: Some(up.media_key.to_vec()),
            file_enc_sha256: Some(up.file_enc_sha256.to_vec()),
            file_sha256: Some(up.file_sha256.to_vec()),
            file_length: Some(up.file_length),
            mimetype: Some("application/pdf".into()),
            file_name: Some("report.pdf".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let alice_jid: wacore_binary::Jid = format!("{ALICE}@s.whatsapp.net").parse().expect("jid");
    let id = dev
        .client
        .send_message(alice_jid, msg)
        .await
        .expect("send document")
        .message_id
        .to_string();
    ctl.wait_for(&format!("/control/received?to={ALICE}"), 20, |v| {
        v["messages"]
            .as_array()?
            .iter()
            .find(|m| m["id"] == id.as_str())
            .cloned()
    })
    .await;
    let got = ctl.get(&format!("/control/media?to={ALICE}&id={id}")).await;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(got["data_base64"].as_str().expect("data"))
            .expect("base64"),
        doc
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn typing_presence_offline_queue_and_unlinking() {
    init_logs();
    let server = WhatsAppServer::start().await.expect("simulator starts");
    let ctl = Control::new(&server);
    let (mut dev, _backend) = linked_device(&server, &ctl).await;
    ctl.post(
        "/control/contacts",
        json!({ "phone": ALICE, "name": "Alice" }),
    )
    .await;
    let alice_jid: wacore_binary::Jid = format!("{ALICE}@s.whatsapp.net").parse().expect("jid");

    // Typing both ways.
    ctl.post("/control/typing", json!({ "from": ALICE, "to": USER }))
        .await;
    dev.next(20, |e| matches!(e, Event::ChatPresence(_)).then_some(()))
        .await;
    dev.client
        .chatstate()
        .send_composing(&alice_jid)
        .await
        .expect("typing");
    ctl.wait_for(&format!("/control/events?to={ALICE}"), 20, |v| {
        v["events"]
            .as_array()?
            .iter()
            .find(|e| e["kind"] == "chatstate")
            .cloned()
    })
    .await;

    // Presence: the device subscribes to Alice, who comes online.
    dev.client
        .presence()
        .subscribe(alice_jid.clone())
        .await
        .expect("subscribe");
    ctl.post(
        "/control/presence",
        json!({ "from": ALICE, "available": true }),
    )
    .await;
    dev.next(20, |e| matches!(e, Event::Presence(_)).then_some(()))
        .await;

    // The network goes down for the device; a message waits for it and arrives on reconnect.
    ctl.post("/control/refuse", json!({ "refuse": true })).await;
    let dropped = ctl
        .post("/control/drop", json!({ "phone": USER, "device": 1 }))
        .await;
    assert_eq!(dropped["dropped"], 1);
    dev.next(20, |e| matches!(e, Event::Disconnected(_)).then_some(()))
        .await;
    ctl.post(
        "/control/send",
        json!({ "from": ALICE, "to": USER, "text": "while you were away" }),
    )
    .await;
    let devices = ctl.get(&format!("/control/devices?phone={USER}")).await;
    assert_eq!(devices["devices"][1]["online"], false);
    ctl.post("/control/refuse", json!({ "refuse": false }))
        .await;
    next_text(&mut dev, 60, "while you were away").await;

    // Unlinked on the phone: the device is logged out and cannot log in again.
    ctl.post("/control/unlink", json!({ "phone": USER, "device": 1 }))
        .await;
    dev.next(20, |e| matches!(e, Event::LoggedOut(_)).then_some(()))
        .await;
    let devices = ctl.get(&format!("/control/devices?phone={USER}")).await;
    assert_eq!(devices["devices"].as_array().map(Vec::len), Some(1));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_device_gets_what_arrived_meanwhile_and_sees_the_phones_messages() {
    init_logs();
    let server = WhatsAppServer::start().await.expect("simulator starts");
    let ctl = Control::new(&server);
    let (mut dev, backend) = linked_device(&server, &ctl).await;
    ctl.post(
        "/control/contacts",
        json!({ "phone": ALICE, "name": "Alice" }),
    )
    .await;
    ctl.post(
        "/control/send",
        json!({ "from": ALICE, "to": USER, "text": "before" }),
    )
    .await;
    next_text(&mut dev, 20, "before").await;

    // The process stops; Alice writes; a new process with the same store catches up.
    dev.shutdown().await;
    ctl.wait_for(&format!("/control/devices?phone={USER}"), 20, |v| {
        (v["devices"][1]["online"] == false).then_some(())
    })
    .await;
    ctl.post(
        "/control/send",
        json!({ "from": ALICE, "to": USER, "text": "meanwhile" }),
    )
    .await;
    let mut dev = Device::start(&server, backend).await;
    let (chat, _, _) = next_text(&mut dev, 30, "meanwhile").await;
    assert_eq!(chat, format!("{ALICE}@s.whatsapp.net"));

    // The user writes to Alice from the phone: the device sees it as its own message.
    let sent = ctl
        .post(
            "/control/send",
            json!({ "from": USER, "to": ALICE, "text": "from my phone" }),
        )
        .await;
    let (id, from_me, chat) = dev
        .next(20, |e| match e {
            Event::Messages(b) => b.messages.iter().find_map(|m| {
                (text_of(m).as_deref() == Some("from my phone")).then(|| {
                    (
                        m.info.id.to_string(),
                        m.info.source.is_from_me,
                        m.info.source.chat.to_string(),
                    )
                })
            }),
            _ => None,
        })
        .await;
    assert_eq!(id, sent["id"].as_str().expect("id"));
    assert!(from_me);
    assert_eq!(chat, format!("{ALICE}@s.whatsapp.net"));
    ctl.wait_for(&format!("/control/received?to={ALICE}"), 20, |v| {
        v["messages"]
            .as_array()?
            .iter()
            .find(|m| m["text"] == "from my phone")
            .cloned()
    })
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_session_recovers_through_a_retry_receipt() {
    use wacore::store::traits::SignalStore as _;
    init_logs();
    let server = WhatsAppServer::start().await.expect("simulator starts");
    let ctl = Control::new(&server);
    let (mut dev, backend) = linked_device(&server, &ctl).await;
    ctl.post(
        "/control/contacts",
        json!({ "phone": ALICE, "name": "Alice", "lid": "211111111111112" }),
    )
    .await;
    ctl.post(
        "/control/send",
        json!({ "from": ALICE, "to": USER, "text": "one" }),
    )
    .await;
    next_text(&mut dev, 20, "one").await;

    // The device forgets its session with Alice (as after restoring an old backup).
    dev.shutdown().await;
    for address in [
        format!("{ALICE}@c.us.0"),
        format!("{ALICE}@s.whatsapp.net.0"),
        "211111111111112@lid.0".to_owned(),
    ] {
        backend
            .delete_session(&address)
            .await
            .expect("delete session");
    }
    let mut dev = Device::start(&server, backend).await;
    dev.next(20, |e| matches!(e, Event::Connected(_)).then_some(()))
        .await;

    // Alice's next message cannot be decrypted; the device asks for it again (retry receipt,
    // routed to Alice's client), Alice re-sends it in a fresh session, and it arrives.
    ctl.post(
        "/control/send",
        json!({ "from": ALICE, "to": USER, "text": "two" }),
    )
    .await;
    next_text(&mut dev, 30, "two").await;
    let stanzas = ctl
        .get(&format!("/control/stanzas?from={USER}&tag=receipt"))
        .await;
    assert!(
        stanzas["stanzas"]
            .as_array()
            .is_some_and(|s| s.iter().any(|r| r["type"] == "retry")),
        "the device sent a retry receipt: {stanzas}"
    );
    server.shutdown().await;
}

/// A contact's profile picture: the library's lookup finds it (and its bytes at the URL), a
/// change reaches the linked device as a picture notification, a removal too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn profile_pictures_lookup_and_changes() {
    use base64::Engine as _;
    init_logs();
    let server = WhatsAppServer::start().await.expect("simulator starts");
    let ctl = Control::new(&server);
    let (mut dev, _backend) = linked_device(&server, &ctl).await;
    ctl.post(
        "/control/contacts",
        json!({ "phone": ALICE, "name": "Alice" }),
    )
    .await;
    let alice: wacore_binary::Jid = format!("{ALICE}@s.whatsapp.net").parse().expect("jid");
    let none = dev
        .client
        .contacts()
        .get_profile_picture(&alice, false)
        .await
        .expect("lookup");
    assert!(none.is_none(), "no picture yet: {none:?}");

    let bytes = b"\x89PNG picture bytes".to_vec();
    let set = ctl
        .post(
            "/control/picture",
            json!({ "phone": ALICE, "data_base64": base64::engine::general_purpose::STANDARD.encode(&bytes) }),
        )
        .await;
    let id = set["id"].as_str().expect("picture id").to_owned();
    let update = dev
        .next(20, |e| match e {
            Event::PictureUpdate(p) => Some(p.clone()),
            _ => None,
        })
        .await;
    assert_eq!(update.jid.user, ALICE);
    assert!(!update.removed);
    assert_eq!(update.picture_id.as_deref(), Some(id.as_str()));
    let picture = dev
        .client
        .contacts()
        .get_profile_picture(&alice, false)
        .await
        .expect("lookup")
        .expect("a picture now");
    assert_eq!(picture.id, id);
    let fetched = reqwest::get(&picture.url)
        .await
        .expect("picture URL")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(fetched.to_vec(), bytes);

    ctl.post("/control/picture", json!({ "phone": ALICE }))
        .await;
    let removed = dev
        .next(20, |e| match e {
            Event::PictureUpdate(p) if p.removed => Some(p.clone()),
            _ => None,
        })
        .await;
    assert_eq!(removed.jid.user, ALICE);
    server.shutdown().await;
}
