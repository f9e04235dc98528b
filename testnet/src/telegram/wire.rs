//! Framing: the "full" TCP transport grammers 0.11 speaks by default (`grammers-mtsender`'s
//! `SenderPool` hard-codes `transport::Full`: `len u32 | seq u32 | payload | crc32`), and the
//! MTProto message layer inside a decrypted payload (`salt | session_id | msg_id | seqno | len |
//! body`, with `msg_container` and `gzip_packed` unwrapped).

use std::io::{Read as _, Write as _};

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// msg_container#73f1f8dc messages:vector<message> = MessageContainer;
pub const MSG_CONTAINER: u32 = 0x73f1_f8dc;
/// gzip_packed#3072cfa1 packed_data:bytes = Object;
pub const GZIP_PACKED: u32 = 0x3072_cfa1;
/// rpc_result#f35c6d01 req_msg_id:long result:Object = RpcResult;
pub const RPC_RESULT: u32 = 0xf35c_6d01;

/// Largest frame accepted from a client (Telegram's own limit is about 1 MiB per message).
const MAX_FRAME: usize = 2 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection closed")]
    Closed,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad frame length {0}")]
    Length(i64),
    #[error("bad transport seq: expected {expected}, got {got}")]
    Seq { expected: i32, got: i32 },
    #[error("bad crc32")]
    Crc,
    #[error("malformed message: {0}")]
    Malformed(&'static str),
}

/// The server side of the full transport on one TCP connection.
#[derive(Debug, Default)]
pub struct FullTransport {
    recv_seq: i32,
    send_seq: i32,
}

impl FullTransport {
    pub async fn read_frame<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
    ) -> Result<Vec<u8>, WireError> {
        let mut head = [0u8; 8];
        match reader.read_exact(&mut head[..4]).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(WireError::Closed);
            }
            Err(e) => return Err(e.into()),
        }
        reader.read_exact(&mut head[4..]).await?;
        let len = i32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        if len < 12 || len as usize > MAX_FRAME || len % 4 != 0 {
            return Err(WireError::Length(len.into()));
        }
        let seq = i32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if seq != self.recv_seq {
            return Err(WireError::Seq {
                expected: self.recv_seq,
                got: seq,
            });
        }
        let mut rest = vec![0u8; len as usize - 8];
        reader.read_exact(&mut rest).await?;
        let crc_at = rest.len() - 4;
        let got = u32::from_le_bytes([
            rest[crc_at],
            rest[crc_at + 1],
            rest[crc_at + 2],
            rest[crc_at + 3],
        ]);
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&head);
        hasher.update(&rest[..crc_at]);
        if hasher.finalize() != got {
            return Err(WireError::Crc);
        }
        self.recv_seq += 1;
        rest.truncate(crc_at);
        Ok(rest)
    }

    pub async fn write_frame<W: AsyncWrite + Unpin>(
        &mut self,
        writer: &mut W,
        payload: &[u8],
    ) -> Result<(), WireError> {
        let len = (payload.len() + 12) as i32;
        let mut frame = Vec::with_capacity(payload.len() + 12);
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(&self.send_seq.to_le_bytes());
        frame.extend_from_slice(payload);
        let crc = crc32fast::hash(&frame);
        frame.extend_from_slice(&crc.to_le_bytes());
        writer.write_all(&frame).await?;
        writer.flush().await?;
        self.send_seq += 1;
        Ok(())
    }
}

/// One MTProto message (`msg_id | seqno | bytes | body`).
#[derive(Debug, Clone)]
pub struct Message {
    pub msg_id: i64,
    pub seqno: i32,
    pub body: Vec<u8>,
}

impl Message {
    pub fn constructor(&self) -> u32 {
        constructor_of(&self.body)
    }

    /// Content-related messages (odd seqno) need an acknowledgement.
    pub fn content_related(&self) -> bool {
        self.seqno % 2 == 1
    }
}

pub fn constructor_of(body: &[u8]) -> u32 {
    body.get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .unwrap_or(0)
}

/// The decrypted plaintext's header and its one top-level message.
#[derive(Debug)]
pub struct Plaintext {
    pub salt: i64,
    pub session_id: i64,
    pub message: Message,
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], WireError> {
    if buf.len() < n {
        return Err(WireError::Malformed("truncated"));
    }
    let (head, tail) = buf.split_at(n);
    *buf = tail;
    Ok(head)
}

fn take_i64(buf: &mut &[u8]) -> Result<i64, WireError> {
    let b = take(buf, 8)?;
    Ok(i64::from_le_bytes(
        b.try_into().map_err(|_| WireError::Malformed("i64"))?,
    ))
}

fn take_i32(buf: &mut &[u8]) -> Result<i32, WireError> {
    let b = take(buf, 4)?;
    Ok(i32::from_le_bytes(
        b.try_into().map_err(|_| WireError::Malformed("i32"))?,
    ))
}

fn take_message(buf: &mut &[u8]) -> Result<Message, WireError> {
    let msg_id = take_i64(buf)?;
    let seqno = take_i32(buf)?;
    let len = take_i32(buf)?;
    if len < 0 || len % 4 != 0 {
        return Err(WireError::Malformed("message length"));
    }
    let body = take(buf, len as usize)?.to_vec();
    Ok(Message {
        msg_id,
        seqno,
        body,
    })
}

pub fn parse_plaintext(plain: &[u8]) -> Result<Plaintext, WireError> {
    let mut buf = plain;
    let salt = take_i64(&mut buf)?;
    let session_id = take_i64(&mut buf)?;
    let message = take_message(&mut buf)?;
    Ok(Plaintext {
        salt,
        session_id,
        message,
    })
}

/// The messages inside a `msg_container` body.
pub fn unpack_container(body: &[u8]) -> Result<Vec<Message>, WireError> {
    let mut buf = body.get(4..).ok_or(WireError::Malformed("container"))?;
    let count = take_i32(&mut buf)?;
    if !(0..=1024).contains(&count) {
        return Err(WireError::Malformed("container count"));
    }
    (0..count).map(|_| take_message(&mut buf)).collect()
}

/// Reads a TL `bytes` value.
fn take_tl_bytes(buf: &mut &[u8]) -> Result<Vec<u8>, WireError> {
    let first = *take(buf, 1)?.first().ok_or(WireError::Malformed("bytes"))?;
    let (len, header) = if first == 254 {
        let b = take(buf, 3)?;
        (
            usize::from(b[0]) | usize::from(b[1]) << 8 | usize::from(b[2]) << 16,
            4,
        )
    } else {
        (usize::from(first), 1)
    };
    let data = take(buf, len)?.to_vec();
    let pad = (4 - (header + len) % 4) % 4;
    take(buf, pad)?;
    Ok(data)
}

/// Writes a TL `bytes` value.
pub fn put_tl_bytes(out: &mut Vec<u8>, data: &[u8]) {
    let header = if data.len() < 254 {
        out.push(data.len() as u8);
        1
    } else {
        out.push(254);
        out.extend_from_slice(&(data.len() as u32).to_le_bytes()[..3]);
        4
    };
    out.extend_from_slice(data);
    let pad = (4 - (header + data.len()) % 4) % 4;
    out.extend(std::iter::repeat_n(0u8, pad));
}

/// The object inside a `gzip_packed` body.
pub fn gunzip(body: &[u8]) -> Result<Vec<u8>, WireError> {
    let mut buf = body.get(4..).ok_or(WireError::Malformed("gzip_packed"))?;
    let packed = take_tl_bytes(&mut buf)?;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&packed[..])
        .take(MAX_FRAME as u64 * 8)
        .read_to_end(&mut out)
        .map_err(|_| WireError::Malformed("gzip data"))?;
    Ok(out)
}

/// Wraps an object in `gzip_packed`, as Telegram does for large results.
pub fn gzip(object: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(object);
    let packed = enc.finish().unwrap_or_default();
    let mut out = GZIP_PACKED.to_le_bytes().to_vec();
    put_tl_bytes(&mut out, &packed);
    out
}

/// `rpc_result` for a request, gzip-packed when that makes it smaller (like Telegram).
pub fn rpc_result(req_msg_id: i64, result: &[u8]) -> Vec<u8> {
    let mut out = RPC_RESULT.to_le_bytes().to_vec();
    out.extend_from_slice(&req_msg_id.to_le_bytes());
    if result.len() > 512 {
        let packed = gzip(result);
        if packed.len() < result.len() {
            out.extend_from_slice(&packed);
            return out;
        }
    }
    out.extend_from_slice(result);
    out
}

/// Builds a decrypted server payload with one message.
pub fn plaintext(salt: i64, session_id: i64, msg: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + msg.body.len());
    out.extend_from_slice(&salt.to_le_bytes());
    out.extend_from_slice(&session_id.to_le_bytes());
    out.extend_from_slice(&msg.msg_id.to_le_bytes());
    out.extend_from_slice(&msg.seqno.to_le_bytes());
    out.extend_from_slice(&(msg.body.len() as i32).to_le_bytes());
    out.extend_from_slice(&msg.body);
    out
}

/// Builds a `msg_container` body from messages.
pub fn container(messages: &[Message]) -> Vec<u8> {
    let mut out = MSG_CONTAINER.to_le_bytes().to_vec();
    out.extend_from_slice(&(messages.len() as i32).to_le_bytes());
    for m in messages {
        out.extend_from_slice(&m.msg_id.to_le_bytes());
        out.extend_from_slice(&m.seqno.to_le_bytes());
        out.extend_from_slice(&(m.body.len() as i32).to_le_bytes());
        out.extend_from_slice(&m.body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_round_trips() {
        let data: Vec<u8> = (0..4000u32).flat_map(|i| (i % 7).to_le_bytes()).collect();
        assert_eq!(gunzip(&gzip(&data)).expect("gunzip"), data);
    }

    #[tokio::test]
    async fn frames_round_trip_with_seq_and_crc() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let mut tx = FullTransport::default();
        let mut rx = FullTransport::default();
        tx.write_frame(&mut a, &[1, 2, 3, 4]).await.expect("write");
        tx.write_frame(&mut a, &[5, 6, 7, 8]).await.expect("write");
        assert_eq!(rx.read_frame(&mut b).await.expect("read"), vec![1, 2, 3, 4]);
        assert_eq!(rx.read_frame(&mut b).await.expect("read"), vec![5, 6, 7, 8]);
    }
}
