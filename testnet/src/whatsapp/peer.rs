//! Simulated contacts: each one is a real whatsapp-rust client (in-memory store) logged in to
//! this simulator as its account's primary device (device 0). It links itself through the same
//! QR flow a companion uses (the simulator "scans" its code), then keeps its own Signal sessions,
//! sender keys and receipts, so every message between a contact and the bridged device is
//! end-to-end encrypted by the library on both sides and the server only routes ciphertexts.
//!
//! What a contact receives (decrypted by its client) and the receipts it gets are recorded for
//! the control API.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use wacore::store::InMemoryBackend;
use wacore::types::events::Event;
use whatsapp_rust::Client;
use whatsapp_rust::bot::{Bot, BotHandle};

use super::conn::Shared;

/// A message a contact's client received and decrypted.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Received {
    /// The contact that received it.
    pub to: String,
    pub id: String,
    /// The chat (`phone@s.whatsapp.net`, `lid@lid` or `id@g.us`).
    pub chat: String,
    /// The sender's JID (with device).
    pub sender: String,
    pub is_group: bool,
    pub timestamp: i64,
    /// The plain text, when the message has one (conversation, extended text, caption, edit).
    pub text: Option<String>,
    /// The decrypted `waproto::whatsapp::Message` as JSON (field names as in WhatsApp's proto).
    pub message: Value,
    /// The message itself (to download its media).
    #[serde(skip)]
    pub raw: Arc<waproto::whatsapp::Message>,
}

/// A receipt a contact's client got for something it sent.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReceiptSeen {
    pub to: String,
    pub from: String,
    pub chat: String,
    pub ids: Vec<String>,
    pub r#type: String,
}

/// Chat states and presence updates a contact saw.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Seen {
    pub to: String,
    pub kind: String,
    pub detail: Value,
}

#[derive(Default)]
pub struct Inbox {
    pub messages: Vec<Received>,
    pub receipts: Vec<ReceiptSeen>,
    pub events: Vec<Seen>,
}

pub struct Peer {
    pub phone: String,
    pub client: Arc<Client>,
    /// The client's store, read to see when its start-up work has landed.
    backend: Arc<InMemoryBackend>,
    handle: Option<BotHandle>,
}

impl Peer {
    /// Waits until the contact's client is logged in, has published its prekeys (so the
    /// bridged device can start a session with it) and has stored its own device list.
    ///
    /// The last matters for the account's phone: a companion linked while the phone's
    /// start-up device-list query is still in flight is announced by a devices notification
    /// the client cannot apply (it patches only a list it already has), and the query's
    /// answer, from before the link, then leaves the phone without the companion: its own
    /// messages would never be copied to the linked device (seen in a slow, loaded run).
    pub async fn ready(&self, world: &Shared, within: Duration) -> bool {
        use wacore::store::traits::ProtocolStore as _;
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let (keys, lid) = world.lock().map_or((false, None), |w| {
                let account = w.accounts.get(&self.phone);
                (
                    account
                        .and_then(|a| a.devices.get(&0))
                        .is_some_and(|d| !d.keys.prekeys.is_empty()),
                    account.map(|a| a.lid.clone()),
                )
            });
            let mut own_devices = false;
            for user in std::iter::once(self.phone.as_str()).chain(lid.as_deref()) {
                own_devices |= matches!(self.backend.get_devices(user).await, Ok(Some(_)));
            }
            if self.client.is_logged_in() && keys && own_devices {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn text_of(msg: &waproto::whatsapp::Message) -> Option<String> {
    use wacore::proto_helpers::MessageExt as _;
    let base = msg.get_base_message();
    if let Some(t) = base.text_content() {
        return Some(t.to_owned());
    }
    if let Some(p) = base.protocol_message.as_option()
        && let Some(edited) = p.edited_message.as_option()
    {
        return edited.text_content().map(str::to_owned);
    }
    None
}

/// Starts a contact's client; it links itself as the account's device 0 and logs in.
pub async fn spawn(app: &super::control::App, phone: &str, name: &str) -> anyhow::Result<Peer> {
    let world = app.world.clone();
    let inbox = app.inbox.clone();
    let ws_url = app.ws_url.as_str();
    let me = phone.to_owned();
    let transport =
        whatsapp_rust_tokio_transport::TokioWebSocketTransportFactory::new().with_url(ws_url);
    let backend = Arc::new(InMemoryBackend::new());
    let bot = Bot::builder()
        .with_backend_arc(backend.clone())
        .with_transport_factory(transport)
        .with_http_client(super::media::SimHttpClient::new(app.chat_addr))
        .with_version((2, 3000, 1_020_000_000))
        .with_push_name(name)
        .skip_history_sync()
        .on_event(move |event, client| {
            let world = world.clone();
            let inbox = inbox.clone();
            let me = me.clone();
            async move {
                on_event(&world, &inbox, &me, &event);
                if let Event::DeviceListUpdate(u) = &*event
                    && u.user.user.as_str() == me
                    && matches!(
                        u.update_type,
                        wacore::types::events::DeviceListUpdateType::Add
                    )
                {
                    // As a phone does for a newly linked companion: share the app-state key,
                    // so the companion's first start-up does not wait for it.
                    tokio::spawn(async move {
                        if let Err(e) = share_app_state_key(&client, &me).await {
                            tracing::debug!(phone = me, error = %e, "app-state key share not sent");
                        }
                    });
                }
            }
        })
        .build()
        .await?;
    let client = bot.client();
    let handle = bot.spawn();
    Ok(Peer {
        phone: phone.to_owned(),
        client,
        backend,
        handle: Some(handle),
    })
}

fn on_event(world: &Shared, inbox: &Arc<Mutex<Inbox>>, me: &str, event: &Event) {
    match event {
        Event::PairingQrCode(qr) => {
            // The contact's own phone "scans" its code at once.
            if let Ok(mut w) = world.lock() {
                match super::pairing::scan_as(&mut w, me, &qr.code, Some(0)) {
                    Ok(jid) => tracing::debug!(contact = me, jid, "contact device linked"),
                    Err(e) => {
                        tracing::debug!(contact = me, error = %e, "contact QR not linked yet")
                    }
                }
            }
        }
        Event::Messages(batch) => {
            let Ok(mut ib) = inbox.lock() else { return };
            for m in batch.messages.iter() {
                let src = &m.info.source;
                ib.messages.push(Received {
                    to: me.to_owned(),
                    id: m.info.id.to_string(),
                    chat: src.chat.to_string(),
                    sender: src.sender.to_string(),
                    is_group: src.is_group,
                    timestamp: m.info.timestamp.timestamp(),
                    text: text_of(&m.message),
                    message: serde_json::to_value(&*m.message).unwrap_or(Value::Null),
                    raw: m.message.clone(),
                });
            }
        }
        Event::Receipt(r) => {
            let Ok(mut ib) = inbox.lock() else { return };
            ib.receipts.push(ReceiptSeen {
                to: me.to_owned(),
                from: r.source.sender.to_string(),
                chat: r.source.chat.to_string(),
                ids: r.message_ids.iter().map(ToString::to_string).collect(),
                r#type: format!("{:?}", r.r#type).to_lowercase(),
            });
        }
        Event::ChatPresence(p) => {
            let Ok(mut ib) = inbox.lock() else { return };
            ib.events.push(Seen {
                to: me.to_owned(),
                kind: "chatstate".into(),
                detail: serde_json::to_value(p).unwrap_or_else(|_| json!(format!("{p:?}"))),
            });
        }
        Event::Presence(p) => {
            let Ok(mut ib) = inbox.lock() else { return };
            ib.events.push(Seen {
                to: me.to_owned(),
                kind: "presence".into(),
                detail: serde_json::to_value(p).unwrap_or_else(|_| json!(format!("{p:?}"))),
            });
        }
        _ => {}
    }
}

/// Sends the account's own devices an `APP_STATE_SYNC_KEY_SHARE` with a fresh key.
async fn share_app_state_key(client: &Client, phone: &str) -> anyhow::Result<()> {
    use waproto::whatsapp as wa;
    let key_id: [u8; 6] = rand::random();
    let key_data: [u8; 32] = rand::random();
    let share = wa::message::AppStateSyncKeyShare {
        keys: vec![wa::message::AppStateSyncKey {
            key_id: buffa::MessageField::some(wa::message::AppStateSyncKeyId {
                key_id: Some(key_id.to_vec()),
            }),
            key_data: buffa::MessageField::some(wa::message::AppStateSyncKeyData {
                key_data: Some(key_data.to_vec()),
                fingerprint: buffa::MessageField::some(wa::message::AppStateSyncKeyFingerprint {
                    raw_id: Some(rand::random()),
                    current_index: Some(0),
                    device_indexes: vec![0],
                }),
                timestamp: Some(super::world::now() as i64 * 1000),
            }),
        }],
    };
    let msg = wa::Message {
        protocol_message: buffa::MessageField::some(wa::message::ProtocolMessage {
            r#type: Some(wa::message::protocol_message::Type::APP_STATE_SYNC_KEY_SHARE),
            app_state_sync_key_share: buffa::MessageField::some(share),
            ..Default::default()
        }),
        ..Default::default()
    };
    let own: wacore_binary::Jid = format!("{phone}@s.whatsapp.net").parse()?;
    client.send_message(own, msg).await?;
    Ok(())
}
