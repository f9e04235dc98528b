//! One client TCP connection: decrypts its packets, enforces server salts and msg_id rules,
//! announces new sessions, unwraps containers and gzip, answers service messages (pings, future
//! salts, acks) itself, hands RPC calls to [`super::methods`], and interleaves pushed updates.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use grammers_tl_types::{self as tl, Deserializable as _, Identifiable as _, Serializable as _};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::crypto::{self, AuthKey};
use super::methods;
use super::state::{ConnCmd, ConnRec, World};
use super::wire::{self, FullTransport, Message, WireError};

/// Server-side MTProto session state of one connection.
struct Session {
    conn_id: u64,
    key: AuthKey,
    session_id: Option<i64>,
    salt: i64,
    last_msg_id: i64,
    seq: i32,
}

impl Session {
    /// Server msg_ids: time-based, strictly increasing, ≡ 1 (mod 4) for answers to the client
    /// and ≡ 3 for messages the server sends on its own.
    fn next_msg_id(&mut self, answer: bool) -> i64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut id = ((now.as_secs() as i64) << 32) | (i64::from(now.subsec_nanos()) & !3);
        if id <= self.last_msg_id {
            id = (self.last_msg_id & !3) + 4;
        }
        id |= if answer { 1 } else { 3 };
        self.last_msg_id = id;
        id
    }

    fn message(&mut self, body: Vec<u8>, answer: bool, content_related: bool) -> Message {
        let msg_id = self.next_msg_id(answer);
        let seqno = if content_related {
            self.seq += 1;
            self.seq * 2 - 1
        } else {
            self.seq * 2
        };
        Message {
            msg_id,
            seqno,
            body,
        }
    }
}

pub async fn serve(world: Arc<Mutex<World>>, stream: TcpStream, conn_id: u64) {
    let peer = stream.peer_addr().ok();
    if let Err(e) = run(&world, stream, conn_id).await {
        match e {
            WireError::Closed => tracing::debug!(?peer, "telegram client disconnected"),
            e => tracing::info!(?peer, error = %e, "telegram connection ended"),
        }
    }
    if let Ok(mut w) = world.lock() {
        w.conns.remove(&conn_id);
    }
}

async fn run(world: &Arc<Mutex<World>>, stream: TcpStream, conn_id: u64) -> Result<(), WireError> {
    let (mut reader, mut writer) = stream.into_split();
    let mut transport = FullTransport::default();
    let mut out_transport = FullTransport::default();
    // grammers' full transport starts straight away (no 0xeeeeeeee-style tag byte).
    let first = transport.read_frame(&mut reader).await?;
    let Some(key_id) = crypto::packet_key_id(&first) else {
        return Err(WireError::Malformed("short packet"));
    };
    let (key, salt) = {
        let w = world
            .lock()
            .map_err(|_| WireError::Malformed("world poisoned"))?;
        match w.keys.get(&key_id) {
            Some(k) => (k.key.clone(), k.salts.iter().next().copied().unwrap_or(0)),
            None => {
                // Telegram answers -404 here; grammers would then start an RSA/DH handshake the
                // simulator cannot finish, so the connection is closed instead.
                tracing::warn!(
                    key_id = format_args!("{key_id:016x}"),
                    plain = key_id == 0,
                    "unknown auth key (register it through the control API); closing"
                );
                return Err(WireError::Malformed("unknown auth key"));
            }
        }
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    if let Ok(mut w) = world.lock() {
        w.conns.insert(conn_id, ConnRec { key_id, tx });
    }
    let mut s = Session {
        conn_id,
        key,
        session_id: None,
        salt,
        last_msg_id: 0,
        seq: 0,
    };
    let mut pending = Some(first);
    loop {
        let packet = match pending.take() {
            Some(p) => p,
            None => tokio::select! {
                frame = transport.read_frame(&mut reader) => frame?,
                cmd = rx.recv() => match cmd {
                    Some(ConnCmd::Push(updates)) => {
                        if let Some(session_id) = s.session_id {
                            let m = s.message(updates, false, true);
                            send(&mut out_transport, &mut writer, &s, session_id, &m).await?;
                        }
                        continue;
                    }
                    Some(ConnCmd::Close) | None => return Ok(()),
                },
            },
        };
        if crypto::packet_key_id(&packet) != Some(s.key.id) {
            return Err(WireError::Malformed("auth key changed mid-connection"));
        }
        let plain = crypto::decrypt_from_client(&s.key, &packet)
            .map_err(|_| WireError::Malformed("undecryptable packet"))?;
        let plain = wire::parse_plaintext(&plain)?;
        let mut outgoing = Vec::new();
        let valid_salt = world
            .lock()
            .map(|w| {
                w.keys
                    .get(&s.key.id)
                    .is_some_and(|k| k.salts.contains(&plain.salt))
            })
            .unwrap_or(false);
        if s.session_id != Some(plain.session_id) {
            s.session_id = Some(plain.session_id);
        }
        let session_id = plain.session_id;
        if !valid_salt {
            let body = tl::enums::BadMsgNotification::BadServerSalt(tl::types::BadServerSalt {
                bad_msg_id: plain.message.msg_id,
                bad_msg_seqno: plain.message.seqno,
                error_code: 48,
                new_server_salt: s.salt,
            })
            .to_bytes();
            let m = s.message(body, true, false);
            send(&mut out_transport, &mut writer, &s, session_id, &m).await?;
            continue;
        }
        s.salt = plain.salt;
        if let Some(code) = bad_msg_id(plain.message.msg_id) {
            let body = tl::enums::BadMsgNotification::Notification(tl::types::BadMsgNotification {
                bad_msg_id: plain.message.msg_id,
                bad_msg_seqno: plain.message.seqno,
                error_code: code,
            })
            .to_bytes();
            let m = s.message(body, true, false);
            send(&mut out_transport, &mut writer, &s, session_id, &m).await?;
            continue;
        }
        let new_session = world
            .lock()
            .map(|mut w| {
                w.keys
                    .get_mut(&s.key.id)
                    .is_some_and(|k| k.sessions.insert(session_id))
            })
            .unwrap_or(false);
        if new_session {
            let body = tl::enums::NewSession::Created(tl::types::NewSessionCreated {
                first_msg_id: plain.message.msg_id,
                unique_id: rand::random(),
                server_salt: s.salt,
            })
            .to_bytes();
            outgoing.push(s.message(body, false, true));
        }
        let mut acks = Vec::new();
        handle(world, &mut s, plain.message, &mut outgoing, &mut acks, 0).await;
        if !acks.is_empty() {
            let body = tl::enums::MsgsAck::Ack(tl::types::MsgsAck { msg_ids: acks }).to_bytes();
            outgoing.insert(0, s.message(body, false, false));
        }
        match outgoing.len() {
            0 => {}
            1 => {
                send(
                    &mut out_transport,
                    &mut writer,
                    &s,
                    session_id,
                    &outgoing[0],
                )
                .await?
            }
            _ => {
                let body = wire::container(&outgoing);
                let m = s.message(body, false, false);
                send(&mut out_transport, &mut writer, &s, session_id, &m).await?;
            }
        }
    }
}

/// MTProto's msg_id rules for client messages: divisible by 4, and within -300 s / +30 s of now.
fn bad_msg_id(msg_id: i64) -> Option<i32> {
    if msg_id % 4 != 0 {
        return Some(18);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let t = msg_id >> 32;
    if t < now - 300 {
        Some(16)
    } else if t > now + 30 {
        Some(17)
    } else {
        None
    }
}

async fn send(
    transport: &mut FullTransport,
    writer: &mut tokio::net::tcp::OwnedWriteHalf,
    s: &Session,
    session_id: i64,
    m: &Message,
) -> Result<(), WireError> {
    let plain = wire::plaintext(s.salt, session_id, m);
    let packet = crypto::encrypt_to_client(&s.key, plain);
    transport.write_frame(writer, &packet).await
}

/// Handles one client message (recursing into containers and gzip_packed).
fn handle<'a>(
    world: &'a Arc<Mutex<World>>,
    s: &'a mut Session,
    msg: Message,
    out: &'a mut Vec<Message>,
    acks: &'a mut Vec<i64>,
    depth: u8,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
    Box::pin(async move {
        if msg.content_related() {
            acks.push(msg.msg_id);
        }
        let ctor = msg.constructor();
        if ctor == wire::MSG_CONTAINER && depth == 0 {
            match wire::unpack_container(&msg.body) {
                Ok(inner) => {
                    for m in inner {
                        handle(world, s, m, out, acks, depth + 1).await;
                    }
                }
                Err(e) => tracing::info!(error = %e, "bad container"),
            }
            return;
        }
        if ctor == wire::GZIP_PACKED {
            match wire::gunzip(&msg.body) {
                Ok(body) => {
                    let inner = Message {
                        msg_id: msg.msg_id,
                        seqno: msg.seqno & !1,
                        body,
                    };
                    handle(world, s, inner, out, acks, depth + 1).await;
                }
                Err(e) => tracing::info!(error = %e, "bad gzip_packed"),
            }
            return;
        }
        match ctor {
            tl::types::MsgsAck::CONSTRUCTOR_ID => {}
            tl::functions::Ping::CONSTRUCTOR_ID
            | tl::functions::PingDelayDisconnect::CONSTRUCTOR_ID => {
                let ping_id = msg
                    .body
                    .get(4..12)
                    .and_then(|b| b.try_into().ok())
                    .map(i64::from_le_bytes)
                    .unwrap_or(0);
                let body = tl::enums::Pong::Pong(tl::types::Pong {
                    msg_id: msg.msg_id,
                    ping_id,
                })
                .to_bytes();
                out.push(s.message(body, true, true));
            }
            tl::functions::GetFutureSalts::CONSTRUCTOR_ID => {
                let num =
                    tl::functions::GetFutureSalts::from_bytes(msg.body.get(4..).unwrap_or(&[]))
                        .map(|f| f.num.clamp(1, 64))
                        .unwrap_or(1);
                let now = super::state::now();
                let salts: Vec<tl::types::FutureSalt> = (0..num)
                    .map(|i| tl::types::FutureSalt {
                        valid_since: now + i * 3600,
                        valid_until: now + (i + 1) * 3600,
                        salt: rand::random(),
                    })
                    .collect();
                if let Ok(mut w) = world.lock()
                    && let Some(k) = w.keys.get_mut(&s.key.id)
                {
                    k.salts.extend(salts.iter().map(|f| f.salt));
                }
                let body = tl::enums::FutureSalts::Salts(tl::types::FutureSalts {
                    req_msg_id: msg.msg_id,
                    now,
                    salts: tl::RawVec(salts),
                })
                .to_bytes();
                out.push(s.message(body, true, true));
            }
            tl::functions::DestroySession::CONSTRUCTOR_ID => {
                let sid = msg
                    .body
                    .get(4..12)
                    .and_then(|b| b.try_into().ok())
                    .map(i64::from_le_bytes)
                    .unwrap_or(0);
                let body =
                    tl::enums::DestroySessionRes::DestroySessionOk(tl::types::DestroySessionOk {
                        session_id: sid,
                    })
                    .to_bytes();
                out.push(s.message(body, true, true));
            }
            _ => {
                let result = methods::call(world, s.key.id, s.conn_id, &msg.body).await;
                let body = match result {
                    Ok(bytes) => wire::rpc_result(msg.msg_id, &bytes),
                    Err(e) => {
                        let err = tl::enums::RpcError::Error(tl::types::RpcError {
                            error_code: e.code,
                            error_message: e.message,
                        })
                        .to_bytes();
                        wire::rpc_result(msg.msg_id, &err)
                    }
                };
                out.push(s.message(body, true, true));
            }
        }
    })
}
