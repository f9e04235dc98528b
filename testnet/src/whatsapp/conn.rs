//! One client connection: the WebSocket at `/ws/chat`, the Noise handshake, then encrypted
//! binary nodes both ways (each direction counts its own AES-GCM nonces from 0). Incoming nodes go
//! to [`super::dispatch`]; outgoing ones arrive on the connection's channel from anywhere in the
//! world (answers, relayed messages, receipts, notifications).

use std::sync::{Arc, Mutex};

use axum::extract::ws::{Message, WebSocket};
use tokio::sync::mpsc;
use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;
use wacore_noise::NoiseCipher;

use super::noise::{self, Established, Step};
use super::wire::{self, FrameReader};
use super::world::{ConnEntry, DeviceKeys, Out, PendingPair, World, now};

pub type Shared = Arc<Mutex<World>>;

/// Why a connection ended early (logged at debug; the client reconnects by itself).
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("socket closed")]
    Closed,
    #[error(transparent)]
    Wire(#[from] wire::WireError),
    #[error(transparent)]
    Noise(#[from] noise::NoiseError),
    #[error("frame does not decrypt")]
    Decrypt,
    #[error("world lock poisoned")]
    Poisoned,
}

struct Socket {
    ws: WebSocket,
    reader: FrameReader,
}

impl Socket {
    async fn next_frame(&mut self) -> Result<Vec<u8>, ConnError> {
        loop {
            if let Some(f) = self.reader.next_frame()? {
                return Ok(f);
            }
            match self.ws.recv().await {
                Some(Ok(Message::Binary(b))) => self.reader.feed(&b),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Err(ConnError::Closed),
                Some(Ok(_)) => {}
            }
        }
    }

    async fn send_raw(&mut self, payload: &[u8]) -> Result<(), ConnError> {
        self.ws
            .send(Message::Binary(wire::frame(payload).into()))
            .await
            .map_err(|_| ConnError::Closed)
    }
}

struct Ciphers {
    write: NoiseCipher,
    read: NoiseCipher,
    write_n: u32,
    read_n: u32,
}

impl Ciphers {
    fn seal(&mut self, node: &Node) -> Result<Vec<u8>, ConnError> {
        let mut buf = wire::encode_node(node)?;
        self.write
            .encrypt_in_place_with_counter(self.write_n, &mut buf)
            .map_err(|_| ConnError::Decrypt)?;
        self.write_n = self.write_n.wrapping_add(1);
        Ok(buf)
    }

    fn open(&mut self, mut frame: Vec<u8>) -> Result<Node, ConnError> {
        self.read
            .decrypt_in_place_with_counter(self.read_n, &mut frame)
            .map_err(|_| ConnError::Decrypt)?;
        self.read_n = self.read_n.wrapping_add(1);
        Ok(wire::decode_node(&frame)?)
    }
}

fn lock(world: &Shared) -> Result<std::sync::MutexGuard<'_, World>, ConnError> {
    world.lock().map_err(|_| ConnError::Poisoned)
}

pub async fn serve(world: Shared, ws: WebSocket, id: u64) {
    match run(&world, ws, id).await {
        Ok(()) | Err(ConnError::Closed) => tracing::debug!(conn = id, "connection closed"),
        Err(e) => tracing::info!(conn = id, error = %e, "connection ended"),
    }
    if let Ok(mut w) = world.lock() {
        w.conns.remove(&id);
        w.pending.remove(&id);
    }
}

async fn handshake(world: &Shared, sock: &mut Socket) -> Result<Established, ConnError> {
    let hello = sock.next_frame().await?;
    let step = {
        let w = lock(world)?;
        noise::respond_hello(&w.keys, &hello)?
    };
    match step {
        Step::Ik { reply, established } => {
            sock.send_raw(&reply).await?;
            Ok(*established)
        }
        Step::Xx { reply, state } => {
            sock.send_raw(&reply).await?;
            let finish = sock.next_frame().await?;
            Ok(state.finish(&finish)?)
        }
    }
}

async fn run(world: &Shared, ws: WebSocket, id: u64) -> Result<(), ConnError> {
    let mut sock = Socket {
        ws,
        reader: FrameReader::default(),
    };
    let est = handshake(world, &mut sock).await?;
    let mut ciphers = Ciphers {
        write: est.write,
        read: est.read,
        write_n: 0,
        read_n: 0,
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    {
        let mut w = lock(world)?;
        w.conns.insert(
            id,
            ConnEntry {
                tx,
                login: None,
                paired: None,
            },
        );
        start_session(&mut w, id, est.client_static, &est.payload);
    }
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(Out::Node(node)) => {
                    tracing::trace!(conn = id, node = %wacore::xml::DisplayableNode(&node), "->");
                    let sealed = ciphers.seal(&node)?;
                    sock.send_raw(&sealed).await?;
                }
                Some(Out::Close) | None => {
                    let _ = sock.ws.send(Message::Close(None)).await;
                    return Ok(());
                }
            },
            frame = sock.next_frame() => {
                let node = ciphers.open(frame?)?;
                tracing::trace!(conn = id, node = %wacore::xml::DisplayableNode(&node), "<-");
                let mut w = lock(world)?;
                super::dispatch::handle(&mut w, id, node);
            }
        }
    }
}

/// After the handshake: a registration payload waits for linking (pair-device refs); a login
/// payload of a linked device gets `<success>` and its queued stanzas, anything else `<failure>`.
fn start_session(
    w: &mut World,
    id: u64,
    client_static: [u8; 32],
    payload: &waproto::whatsapp::ClientPayload,
) {
    if let Some(reg) = payload.device_pairing_data.as_option() {
        let be = |b: &Option<Vec<u8>>| {
            b.as_deref().map_or(0u32, |b| {
                b.iter().fold(0u32, |acc, x| (acc << 8) | u32::from(*x))
            })
        };
        let key32 = |b: &Option<Vec<u8>>| {
            b.as_deref()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .unwrap_or_default()
        };
        let keys = DeviceKeys {
            registration_id: be(&reg.e_regid),
            identity: key32(&reg.e_ident),
            signed_prekey: Some((
                be(&reg.e_skey_id),
                key32(&reg.e_skey_val),
                reg.e_skey_sig.clone().unwrap_or_default(),
            )),
            prekeys: Default::default(),
        };
        w.pending.insert(
            id,
            PendingPair {
                refs: Vec::new(),
                noise_static: client_static,
                keys,
                link: None,
            },
        );
        if let Some(node) = super::pairing::pair_device_iq(w, id) {
            w.send(id, node);
        }
        tracing::info!(conn = id, "new device waiting to be linked");
        return;
    }
    let phone = payload.username.map(|u| u.to_string()).unwrap_or_default();
    let device = payload.device.unwrap_or(0) as u16;
    let known = w
        .accounts
        .get(&phone)
        .and_then(|a| a.devices.get(&device))
        .is_some_and(|d| d.noise_static == client_static);
    if !known {
        tracing::info!(
            conn = id,
            phone,
            device,
            "login of an unknown device refused"
        );
        w.send(
            id,
            NodeBuilder::new("failure")
                .attr("reason", "401")
                .attr("location", "sim")
                .build(),
        );
        if let Some(c) = w.conns.get(&id) {
            let _ = c.tx.send(Out::Close);
        }
        return;
    }
    // One connection per device: a newer login replaces the older one, which stops being the
    // device's at once (it may take a moment to close; what is delivered meanwhile must go to
    // the new one, or it would sit unacked until the next reconnect).
    while let Some(old) = w.conn_of(&phone, device)
        && let Some(c) = w.conns.get_mut(&old)
    {
        c.login = None;
        let _ = c.tx.send(Out::Close);
    }
    if let Some(c) = w.conns.get_mut(&id) {
        c.login = Some((phone.clone(), device));
    }
    let lid = w
        .accounts
        .get(&phone)
        .map(|a| a.lid.clone())
        .unwrap_or_default();
    w.send(
        id,
        NodeBuilder::new("success")
            .attr("t", now().to_string())
            .attr("lid", format!("{lid}@lid"))
            .attr("location", "sim")
            .attr("creation", now().to_string())
            .attr("props", "1")
            .build(),
    );
    let queued: Vec<Node> = w
        .accounts
        .get_mut(&phone)
        .and_then(|a| a.devices.get_mut(&device))
        .map(|d| d.unacked.iter().cloned().collect())
        .unwrap_or_default();
    let count = queued.len();
    for node in queued {
        w.send(id, node);
    }
    w.send(
        id,
        NodeBuilder::new("ib")
            .children([NodeBuilder::new("offline")
                .attr("count", count.to_string())
                .build()])
            .build(),
    );
    tracing::info!(conn = id, phone, device, queued = count, "device logged in");
}
