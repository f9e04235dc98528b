//! The server (responder) side of WhatsApp's Noise handshake, built on wacore-noise's own
//! `NoiseHandshake` (the same symmetric state the client runs), so both ends derive keys with one
//! implementation.
//!
//! Two patterns arrive: `Noise_XX_25519_AESGCM_SHA256` on a first connect (the client knows no
//! server key yet) and `Noise_IK_25519_AESGCM_SHA256` once it has cached our static key from an
//! earlier XX's certificate chain. Both are answered in full, so a reconnect takes the same path
//! it takes against WhatsApp.

use buffa::Message as _;
use wacore_binary::consts::{NOISE_PATTERN_IK, NOISE_PATTERN_XX, WA_CONN_HEADER};
use wacore_libsignal::protocol::KeyPair;
use wacore_noise::{NoiseCipher, NoiseHandshake};
use waproto::whatsapp::{self as wa, HandshakeMessage};

/// Why a handshake failed (logged; the connection is then closed).
#[derive(Debug, thiserror::Error)]
pub enum NoiseError {
    #[error("handshake message is not a valid protobuf: {0}")]
    Decode(String),
    #[error("handshake message lacks {0}")]
    Missing(&'static str),
    #[error("handshake crypto failed: {0}")]
    Crypto(String),
}

fn crypto(e: impl std::fmt::Display) -> NoiseError {
    NoiseError::Crypto(e.to_string())
}

/// The server's long-term Noise identity and the certificate chain that vouches for it.
pub struct ServerKeys {
    pub static_kp: KeyPair,
    pub cert_chain: Vec<u8>,
}

impl ServerKeys {
    pub fn generate() -> Self {
        let static_kp = KeyPair::generate(&mut rand10::rng());
        let mut public = [0u8; 32];
        public.copy_from_slice(static_kp.public_key.public_key_bytes());
        // The client checks the chain's structure, serials, validity window and that the leaf key
        // is our static key; with `danger-skip-cert-chain-verify` it skips the signatures.
        let cert_chain = wacore_noise::test_util::build_cert_chain_bytes(&public);
        Self {
            static_kp,
            cert_chain,
        }
    }
}

/// What a finished handshake hands to the connection.
pub struct Established {
    /// Encrypts server -> client frames.
    pub write: NoiseCipher,
    /// Decrypts client -> server frames.
    pub read: NoiseCipher,
    /// The client's static Noise public key (its QR code carries the same key).
    pub client_static: [u8; 32],
    /// The decrypted `ClientPayload` (registration or login).
    pub payload: wa::ClientPayload,
}

/// A handshake in progress after the ClientHello.
pub enum Step {
    /// XX: send `reply`, then feed the ClientFinish to [`XxResponder::finish`].
    Xx {
        reply: Vec<u8>,
        state: Box<XxResponder>,
    },
    /// IK: send `reply`; the handshake is complete.
    Ik {
        reply: Vec<u8>,
        established: Box<Established>,
    },
}

pub struct XxResponder {
    noise: NoiseHandshake,
    ephemeral: KeyPair,
}

fn key32(bytes: &[u8], what: &'static str) -> Result<[u8; 32], NoiseError> {
    bytes.try_into().map_err(|_| NoiseError::Missing(what))
}

/// Reads the ClientHello and answers it.
pub fn respond_hello(keys: &ServerKeys, hello: &[u8]) -> Result<Step, NoiseError> {
    let msg = waproto::codec::handshake_message_decode(hello)
        .map_err(|e| NoiseError::Decode(e.to_string()))?;
    let hello = msg
        .client_hello
        .into_option()
        .ok_or(NoiseError::Missing("client hello"))?;
    let client_e = key32(
        hello
            .ephemeral
            .as_deref()
            .ok_or(NoiseError::Missing("ephemeral"))?,
        "32-byte ephemeral",
    )?;
    match (hello.r#static, hello.payload) {
        (Some(enc_static), Some(enc_payload)) => {
            respond_ik(keys, client_e, &enc_static, &enc_payload)
        }
        _ => respond_xx(keys, client_e),
    }
}

fn server_hello(ephemeral: &[u8], r#static: Option<Vec<u8>>, payload: Vec<u8>) -> Vec<u8> {
    let msg = HandshakeMessage {
        server_hello: buffa::MessageField::some(wa::handshake_message::ServerHello {
            ephemeral: Some(ephemeral.to_vec()),
            r#static,
            payload: Some(payload),
            ..Default::default()
        }),
        ..Default::default()
    };
    waproto::codec::handshake_message_to_vec(&msg)
}

fn respond_xx(keys: &ServerKeys, client_e: [u8; 32]) -> Result<Step, NoiseError> {
    // -> e ; <- e, ee, s, es
    let mut noise = NoiseHandshake::new(NOISE_PATTERN_XX, &WA_CONN_HEADER).map_err(crypto)?;
    noise.authenticate(&client_e);
    let ephemeral = KeyPair::generate(&mut rand10::rng());
    noise.authenticate(ephemeral.public_key.public_key_bytes());
    noise
        .mix_shared_secret(ephemeral.private_key.serialize(), &client_e)
        .map_err(crypto)?;
    let enc_static = noise
        .encrypt(keys.static_kp.public_key.public_key_bytes())
        .map_err(crypto)?;
    noise
        .mix_shared_secret(keys.static_kp.private_key.serialize(), &client_e)
        .map_err(crypto)?;
    let enc_cert = noise.encrypt(&keys.cert_chain).map_err(crypto)?;
    let reply = server_hello(
        ephemeral.public_key.public_key_bytes(),
        Some(enc_static),
        enc_cert,
    );
    Ok(Step::Xx {
        reply,
        state: Box::new(XxResponder { noise, ephemeral }),
    })
}

impl XxResponder {
    /// Reads the ClientFinish (`-> s, se` and the payload).
    pub fn finish(mut self, finish: &[u8]) -> Result<Established, NoiseError> {
        let msg = waproto::codec::handshake_message_decode(finish)
            .map_err(|e| NoiseError::Decode(e.to_string()))?;
        let fin = msg
            .client_finish
            .into_option()
            .ok_or(NoiseError::Missing("client finish"))?;
        let enc_static = fin.r#static.ok_or(NoiseError::Missing("client static"))?;
        let enc_payload = fin.payload.ok_or(NoiseError::Missing("client payload"))?;
        let client_static = key32(
            &self.noise.decrypt(&enc_static).map_err(crypto)?,
            "32-byte client static",
        )?;
        self.noise
            .mix_shared_secret(self.ephemeral.private_key.serialize(), &client_static)
            .map_err(crypto)?;
        let payload = self.noise.decrypt(&enc_payload).map_err(crypto)?;
        let payload = wa::ClientPayload::decode_from_slice(&payload)
            .map_err(|e| NoiseError::Decode(e.to_string()))?;
        // The initiator's (write, read) is our (read, write).
        let (client_write, client_read) = self.noise.finish().map_err(crypto)?;
        Ok(Established {
            write: client_read,
            read: client_write,
            client_static,
            payload,
        })
    }
}

fn respond_ik(
    keys: &ServerKeys,
    client_e: [u8; 32],
    enc_static: &[u8],
    enc_payload: &[u8],
) -> Result<Step, NoiseError> {
    // <- s (pre-message) ; -> e, es, s, ss ; <- e, ee, se
    let mut noise = NoiseHandshake::new(NOISE_PATTERN_IK, &WA_CONN_HEADER).map_err(crypto)?;
    noise.authenticate(keys.static_kp.public_key.public_key_bytes());
    noise.authenticate(&client_e);
    noise
        .mix_shared_secret(keys.static_kp.private_key.serialize(), &client_e)
        .map_err(crypto)?;
    let client_static = key32(
        &noise.decrypt(enc_static).map_err(crypto)?,
        "32-byte client static",
    )?;
    noise
        .mix_shared_secret(keys.static_kp.private_key.serialize(), &client_static)
        .map_err(crypto)?;
    let payload = noise.decrypt(enc_payload).map_err(crypto)?;
    let payload = wa::ClientPayload::decode_from_slice(&payload)
        .map_err(|e| NoiseError::Decode(e.to_string()))?;
    let ephemeral = KeyPair::generate(&mut rand10::rng());
    noise.authenticate(ephemeral.public_key.public_key_bytes());
    noise
        .mix_shared_secret(ephemeral.private_key.serialize(), &client_e)
        .map_err(crypto)?;
    noise
        .mix_shared_secret(ephemeral.private_key.serialize(), &client_static)
        .map_err(crypto)?;
    let enc_cert = noise.encrypt(&keys.cert_chain).map_err(crypto)?;
    let reply = server_hello(ephemeral.public_key.public_key_bytes(), None, enc_cert);
    let (client_write, client_read) = noise.finish().map_err(crypto)?;
    Ok(Step::Ik {
        reply,
        established: Box::new(Established {
            write: client_read,
            read: client_write,
            client_static,
            payload,
        }),
    })
}
