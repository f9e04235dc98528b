//! Linking with a pairing code (phone number + 8-character code) instead of a QR code: the
//! client's `link_code_companion_reg` stages. Filled in below.

use wacore_binary::Node;

use super::world::World;

pub fn handle_iq(
    _w: &mut World,
    _conn: u64,
    _node: &Node,
    _xmlns: &str,
    _first: &str,
) -> Option<Node> {
    None
}

/// The code a device waiting for pairing-code linking shows for `phone`.
pub fn waiting_code(w: &World, phone: &str) -> Option<String> {
    w.pending
        .values()
        .find(|p| p.code_phone.as_deref() == Some(phone))
        .and_then(|p| p.code.clone())
}

/// The phone's user types the code: links the waiting device.
pub fn enter_code(_w: &mut World, _phone: &str, _code: &str) -> Result<String, String> {
    Err("pairing-code linking is not implemented yet".into())
}
