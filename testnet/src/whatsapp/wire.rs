//! Bytes on the WebSocket: the connection header, the 3-byte length framing, and binary nodes
//! (wacore-binary's encoder/decoder, the client's own) with their one-byte flags prefix.

use wacore_binary::Node;

/// Why a frame or node could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection header is not WhatsApp's ('WA' + version)")]
    BadHeader,
    #[error("binary node cannot be decoded: {0}")]
    Node(String),
}

/// Splits the client's byte stream into frames. The first bytes of a connection are the header
/// (`WA` + magic + dictionary version), optionally preceded by an edge-routing pre-intro (`ED\0\1`
/// + 3-byte length + routing info) on reconnects.
#[derive(Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    header_seen: bool,
}

impl FrameReader {
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, WireError> {
        if !self.header_seen {
            let mut at = 0;
            if self.buf.starts_with(b"ED") {
                if self.buf.len() < 7 {
                    return Ok(None);
                }
                let len = usize::from(self.buf[4]) << 16
                    | usize::from(self.buf[5]) << 8
                    | usize::from(self.buf[6]);
                at = 7 + len;
            }
            if self.buf.len() < at + 4 {
                return Ok(None);
            }
            if &self.buf[at..at + 2] != b"WA" {
                return Err(WireError::BadHeader);
            }
            self.buf.drain(..at + 4);
            self.header_seen = true;
        }
        if self.buf.len() < 3 {
            return Ok(None);
        }
        let len = usize::from(self.buf[0]) << 16
            | usize::from(self.buf[1]) << 8
            | usize::from(self.buf[2]);
        if self.buf.len() < 3 + len {
            return Ok(None);
        }
        let frame = self.buf[3..3 + len].to_vec();
        self.buf.drain(..3 + len);
        Ok(Some(frame))
    }
}

/// Prefixes a payload with its 3-byte big-endian length (server frames carry no header).
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = Vec::with_capacity(len + 3);
    // Frames are at most 16 MiB by the protocol; every node the simulator builds is far smaller.
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8]);
    out.extend_from_slice(payload);
    out
}

/// Decodes a decrypted frame (flags byte, optionally zlib-compressed, then the node).
pub fn decode_node(plain: &[u8]) -> Result<Node, WireError> {
    let unpacked =
        wacore_binary::util::unpack(plain).map_err(|e| WireError::Node(e.to_string()))?;
    let node = wacore_binary::marshal::unmarshal_ref(&unpacked)
        .map_err(|e| WireError::Node(e.to_string()))?;
    Ok(node.to_owned())
}

/// Encodes a node for sending (flags byte 0: uncompressed).
pub fn encode_node(node: &Node) -> Result<Vec<u8>, WireError> {
    wacore_binary::marshal(node).map_err(|e| WireError::Node(e.to_string()))
}
