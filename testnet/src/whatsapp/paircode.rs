//! Linking with a pairing code (phone number + 8-character code) instead of a QR code: the
//! client's `link_code_companion_reg` stages, with the phone's side played by the control API.
//!
//! 1. `companion_hello` (iq from the fresh device): its ephemeral key wrapped with the code
//!    (PBKDF2 + AES-CTR), for a phone number. The server answers with a pairing ref. The server
//!    never learns the code: the user reads it off the device.
//! 2. The user types the code on the phone (`POST /control/pair_code`): the phone unwraps the
//!    device's ephemeral key with it, wraps its own, and the server sends the device a
//!    `primary_hello` notification (with the account's identity key).
//! 3. `companion_finish` (iq): the device's key bundle, AES-GCM under a key from the ephemeral
//!    agreement. The phone decrypts it, derives the ADV secret both sides now share
//!    (HKDF of both agreements and the bundle's random bytes), and links the device with a
//!    `pair-success` HMAC'd with that secret, as after a QR scan.

use wacore::pair_code::PairCodeUtils;
use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;
use wacore_libsignal::protocol::{KeyPair, PublicKey};

use super::world::{World, attr, child_bytes, normalize_phone};

/// Pairing-code state of a device waiting to be linked.
#[derive(Clone)]
pub struct LinkCode {
    pub phone: String,
    pub pairing_ref: String,
    /// The device's ephemeral key, wrapped with the code (salt ‖ iv ‖ AES-CTR ciphertext).
    pub wrapped_companion: Vec<u8>,
    /// Set once the code was entered on the phone.
    pub entered: Option<Entered>,
}

#[derive(Clone)]
pub struct Entered {
    pub companion_ephemeral: [u8; 32],
    pub primary_ephemeral: KeyPair,
}

impl std::fmt::Debug for LinkCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkCode")
            .field("phone", &self.phone)
            .field("pairing_ref", &self.pairing_ref)
            .field("entered", &self.entered.is_some())
            .finish_non_exhaustive()
    }
}

/// Handles (and answers) the `md` iqs of the pairing-code flow; `false` for any other iq.
pub fn handle_iq(w: &mut World, conn: u64, node: &Node, xmlns: &str, first: &str) -> bool {
    if xmlns != "md" || first != "link_code_companion_reg" {
        return false;
    }
    let Some(reg) = node.get_optional_child("link_code_companion_reg") else {
        return false;
    };
    match attr(reg, "stage").as_deref() {
        Some("companion_hello") => {
            let reply = companion_hello(w, conn, node, reg);
            w.send(conn, reply);
        }
        Some("companion_finish") => companion_finish(w, conn, node, reg),
        _ => w.send(conn, World::iq_error(node, 400, "bad-request")),
    }
    true
}

fn companion_hello(w: &mut World, conn: u64, node: &Node, reg: &Node) -> Node {
    let phone = attr(reg, "jid")
        .and_then(|j| j.split('@').next().map(str::to_owned))
        .and_then(|p| normalize_phone(&p));
    let wrapped = child_bytes(reg, "link_code_pairing_wrapped_companion_ephemeral_pub");
    let (Some(phone), Some(wrapped)) = (phone, wrapped) else {
        return World::iq_error(node, 400, "bad-request");
    };
    if wrapped.len() != 80 {
        return World::iq_error(node, 400, "bad-request");
    }
    if !w.accounts.contains_key(&phone) {
        return World::iq_error(node, 404, "item-not-found");
    }
    let pairing_ref = format!("simref{}", w.next_id());
    let Some(p) = w.pending.get_mut(&conn) else {
        return World::iq_error(node, 401, "not-authorized");
    };
    p.link = Some(LinkCode {
        phone,
        pairing_ref: pairing_ref.clone(),
        wrapped_companion: wrapped.to_vec(),
        entered: None,
    });
    World::iq_result(
        node,
        vec![
            NodeBuilder::new("link_code_companion_reg")
                .children([NodeBuilder::new("link_code_pairing_ref")
                    .bytes(pairing_ref.into_bytes())
                    .build()])
                .build(),
        ],
    )
}

/// The phone's user enters `code`: unwraps the waiting device's ephemeral key and sends it the
/// phone's half (`primary_hello`). Linking completes when the device answers (`companion_finish`).
pub fn enter_code(w: &mut World, phone: &str, code: &str) -> Result<(), String> {
    let code: String = code
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .collect::<String>()
        .to_uppercase();
    if !PairCodeUtils::validate_code(&code) {
        return Err("a pairing code is 8 characters of Crockford base32".into());
    }
    let conn = w
        .pending
        .iter()
        .find(|(_, p)| p.link.as_ref().is_some_and(|l| l.phone == phone))
        .map(|(c, _)| *c)
        .ok_or("no device is waiting for a pairing code for that phone")?;
    let adv_public = w
        .accounts
        .get(phone)
        .map(|a| a.adv_key.public_key.public_key_bytes().to_vec())
        .ok_or("no such account")?;
    let Some(link) = w.pending.get_mut(&conn).and_then(|p| p.link.as_mut()) else {
        return Err("no device is waiting for a pairing code for that phone".into());
    };
    // Unwrapping never fails on its own (AES-CTR); a wrong code shows up when the device's
    // `companion_finish` cannot be decrypted, as on a real phone.
    let companion_ephemeral =
        PairCodeUtils::decrypt_primary_ephemeral_pub(&link.wrapped_companion, &code)
            .map_err(|e| e.to_string())?;
    let primary_ephemeral = KeyPair::generate(&mut rand10::rng());
    let mut primary_pub = [0u8; 32];
    primary_pub.copy_from_slice(primary_ephemeral.public_key.public_key_bytes());
    let wrapped_primary = PairCodeUtils::encrypt_ephemeral_pub(&primary_pub, &code);
    let pairing_ref = link.pairing_ref.clone();
    link.entered = Some(Entered {
        companion_ephemeral,
        primary_ephemeral,
    });
    let id = w.stanza_id();
    w.send(
        conn,
        NodeBuilder::new("notification")
            .attr("from", "s.whatsapp.net")
            .attr("type", "link_code_companion_reg")
            .attr("id", id)
            .attr("t", super::world::now().to_string())
            .children([NodeBuilder::new("link_code_companion_reg")
                .attr("stage", "primary_hello")
                .children([
                    NodeBuilder::new("link_code_pairing_ref")
                        .bytes(pairing_ref.into_bytes())
                        .build(),
                    NodeBuilder::new("link_code_pairing_wrapped_primary_ephemeral_pub")
                        .bytes(wrapped_primary.to_vec())
                        .build(),
                    NodeBuilder::new("primary_identity_pub")
                        .bytes(adv_public)
                        .build(),
                ])
                .build()])
            .build(),
    );
    Ok(())
}

fn companion_finish(w: &mut World, conn: u64, node: &Node, reg: &Node) {
    let Some(link) = w.pending.get(&conn).and_then(|p| p.link.clone()) else {
        return w.send(conn, World::iq_error(node, 401, "not-authorized"));
    };
    let Some(entered) = link.entered.clone() else {
        return w.send(conn, World::iq_error(node, 400, "bad-request"));
    };
    let Some(wrapped) = child_bytes(reg, "link_code_pairing_wrapped_key_bundle") else {
        return w.send(conn, World::iq_error(node, 400, "bad-request"));
    };
    let Some(adv_key) = w.accounts.get(&link.phone).map(|a| a.adv_key.clone()) else {
        return w.send(conn, World::iq_error(node, 404, "item-not-found"));
    };
    match open_bundle(&entered, &adv_key, wrapped) {
        Ok((identity, adv_secret)) => {
            // The answer first, then pair-success, as WhatsApp orders them.
            w.send(conn, World::iq_result(node, vec![]));
            if let Err(e) =
                super::pairing::approve(w, conn, &link.phone, identity, adv_secret, None)
            {
                tracing::warn!(error = %e, "pairing-code linking failed");
            }
        }
        Err(e) => {
            tracing::info!(error = %e, "pairing code did not match (key bundle does not decrypt)");
            w.send(conn, World::iq_error(node, 403, "wrong-code"));
        }
    }
}

/// Decrypts the device's key bundle and derives the shared ADV secret.
fn open_bundle(
    entered: &Entered,
    adv_key: &KeyPair,
    wrapped: &[u8],
) -> Result<([u8; 32], [u8; 32]), String> {
    if wrapped.len() < 32 + 12 + 16 {
        return Err("key bundle too short".into());
    }
    let companion_eph = PublicKey::from_djb_public_key_bytes(&entered.companion_ephemeral)
        .map_err(|e| e.to_string())?;
    let ephemeral_shared = entered
        .primary_ephemeral
        .private_key
        .calculate_agreement(&companion_eph)
        .map_err(|e| e.to_string())?;
    let (salt, rest) = wrapped.split_at(32);
    let (iv, ct) = rest.split_at(12);
    let mut key = [0u8; 32];
    wacore::crypto::hkdf_sha256_into(
        &ephemeral_shared,
        Some(salt),
        b"link_code_pairing_key_bundle_encryption_key",
        &mut key,
    )
    .map_err(|e| e.to_string())?;
    let iv: [u8; 12] = iv.try_into().map_err(|_| "bad iv".to_owned())?;
    let mut bundle = Vec::new();
    wacore_libsignal::crypto::aes_256_gcm_decrypt(&key, &iv, b"", ct, &mut bundle)
        .map_err(|e| format!("key bundle does not decrypt: {e:?}"))?;
    if bundle.len() != 96 {
        return Err("key bundle has the wrong size".into());
    }
    let mut identity = [0u8; 32];
    identity.copy_from_slice(&bundle[..32]);
    let random = &bundle[64..96];
    let identity_pub =
        PublicKey::from_djb_public_key_bytes(&identity).map_err(|e| e.to_string())?;
    let identity_shared = adv_key
        .private_key
        .calculate_agreement(&identity_pub)
        .map_err(|e| e.to_string())?;
    let mut combined = Vec::with_capacity(96);
    combined.extend_from_slice(&ephemeral_shared);
    combined.extend_from_slice(&identity_shared);
    combined.extend_from_slice(random);
    let mut adv_secret = [0u8; 32];
    wacore::crypto::hkdf_sha256_into(&combined, None, b"adv_secret", &mut adv_secret)
        .map_err(|e| e.to_string())?;
    Ok((identity, adv_secret))
}
