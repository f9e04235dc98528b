//! Routes each node a client sends to the part of the server that answers it.

use wacore_binary::Node;

use super::world::World;

pub fn handle(w: &mut World, conn: u64, node: Node) {
    match node.tag.as_ref() {
        "iq" => super::iq::handle(w, conn, node),
        "message" => super::relay::message(w, conn, node),
        "receipt" => super::relay::receipt(w, conn, node),
        "chatstate" => super::relay::chatstate(w, conn, node),
        "presence" => super::relay::presence(w, conn, node),
        // Acks of what the server delivered: no longer kept for redelivery.
        "ack" => w.acked(conn, &node),
        other => {
            tracing::debug!(conn, tag = other, "stanza ignored");
        }
    }
}
