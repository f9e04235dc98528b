//! Routing between devices, as WhatsApp's servers do it: a `<message>` carries one ciphertext per
//! recipient device (`<participants><to jid>`) plus, in groups, one sender-key ciphertext for
//! everyone; the server acks it to the sender and hands each device its own copy, stamped with
//! the sender, time and push name. Receipts, chat states and presence are routed the same way.

use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Jid, Node, NodeContent, Server};

use super::world::{World, attr, jid_attr, now};

/// `phone[:device]@s.whatsapp.net`, or the LID form.
pub fn device_jid(w: &World, phone: &str, device: u16, lid: bool) -> String {
    let user = if lid {
        w.accounts
            .get(phone)
            .map_or_else(|| phone.to_owned(), |a| a.lid.clone())
    } else {
        phone.to_owned()
    };
    let server = if lid { "lid" } else { "s.whatsapp.net" };
    if device == 0 {
        format!("{user}@{server}")
    } else {
        format!("{user}:{device}@{server}")
    }
}

fn children_tagged(node: &Node, tag: &str) -> Vec<Node> {
    node.get_children_by_tag(tag).cloned().collect()
}

fn copy_attrs(from: &Node, mut b: NodeBuilder, keys: &[&'static str]) -> NodeBuilder {
    for k in keys {
        if let Some(v) = attr(from, k) {
            b = b.attr(k, v);
        }
    }
    b
}

pub fn message(w: &mut World, conn: u64, node: Node) {
    let Some((phone, device)) = w.login_of(conn) else {
        return;
    };
    w.record(&device_jid(w, &phone, device, false), &node);
    let id = attr(&node, "id").unwrap_or_default();
    let Some(to) = jid_attr(&node, "to") else {
        return;
    };
    let t = now().to_string();
    let name = w
        .accounts
        .get(&phone)
        .map(|a| a.name.clone())
        .unwrap_or_default();
    let per_device: Vec<(Jid, Node)> = node
        .get_optional_child("participants")
        .map(|p| {
            p.get_children_by_tag("to")
                .filter_map(|to| {
                    let jid = jid_attr(to, "jid")?;
                    let enc = to.get_optional_child("enc")?.clone();
                    Some((jid, enc))
                })
                .collect()
        })
        .unwrap_or_default();
    let shared_enc = children_tagged(&node, "enc");
    let extras: Vec<Node> = node
        .children()
        .map(|c| {
            c.iter()
                .filter(|c| c.tag == "device-identity")
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let base_keys: &[&'static str] = &["id", "type", "edit", "category", "addressing_mode"];

    if to.server == Server::Group {
        let group = to.to_string();
        let members: Vec<String> = w
            .groups
            .get(to.user.as_str())
            .map(|g| g.participants.iter().map(|(p, _)| p.clone()).collect())
            .unwrap_or_default();
        let lid_mode = attr(&node, "addressing_mode").as_deref() == Some("lid");
        for member in members {
            let devices: Vec<u16> = w
                .accounts
                .get(&member)
                .map(|a| a.devices.keys().copied().collect())
                .unwrap_or_default();
            for d in devices {
                if member == phone && d == device {
                    continue;
                }
                let mut children: Vec<Node> = per_device
                    .iter()
                    .filter(|(j, _)| {
                        w.phone_of(j).as_deref() == Some(member.as_str()) && j.device == d
                    })
                    .map(|(_, e)| e.clone())
                    .collect();
                let had_pkmsg = !children.is_empty();
                children.extend(shared_enc.iter().cloned());
                if had_pkmsg {
                    children.extend(extras.iter().cloned());
                }
                if children.is_empty() {
                    continue;
                }
                let b = NodeBuilder::new("message")
                    .attr("from", group.clone())
                    .attr("participant", device_jid(w, &phone, device, lid_mode))
                    .attr("t", t.clone())
                    .attr("notify", name.clone());
                let out = copy_attrs(&node, b, base_keys).children(children).build();
                w.deliver(&member, d, out);
            }
        }
    } else if per_device.is_empty() && shared_enc.is_empty() {
        // Nothing addressed to any device (e.g. an empty fan-out): nothing to deliver.
        tracing::debug!(id, "message without ciphertexts dropped");
    } else if per_device.is_empty() {
        // A message addressed to one device (peer messages, retries).
        if let Some(target) = w.phone_of(&to) {
            let b = NodeBuilder::new("message")
                .attr(
                    "from",
                    device_jid(w, &phone, device, to.server == Server::Lid),
                )
                .attr("t", t.clone())
                .attr("notify", name.clone());
            let out = copy_attrs(&node, b, base_keys)
                .children(shared_enc.into_iter().chain(extras))
                .build();
            if to.device == 0 && to.server != Server::Lid && target != phone {
                w.deliver_all(&target, None, &out);
            } else {
                w.deliver(&target, to.device, out);
            }
        }
    } else {
        let switched = w.accounts.get(&phone).is_some_and(|a| a.lid_addressing);
        for (jid, enc) in per_device {
            let Some(target) = w.phone_of(&jid) else {
                continue;
            };
            let lid = jid.server == Server::Lid || (switched && target != phone);
            let mut b = NodeBuilder::new("message")
                .attr("from", device_jid(w, &phone, device, lid))
                .attr("t", t.clone())
                .attr("notify", name.clone());
            if lid {
                // The PN<->LID mapping travels with the message, as WhatsApp sends it.
                b = b.attr("sender_pn", format!("{phone}@s.whatsapp.net"));
            }
            if target == phone {
                // To the sender's own other devices: say whom the chat is with.
                b = b.attr("recipient", to.to_non_ad().to_string());
            }
            let mut children = vec![enc.clone()];
            if attr(&enc, "type").as_deref() == Some("pkmsg") {
                children.extend(extras.iter().cloned());
            }
            let out = copy_attrs(&node, b, base_keys).children(children).build();
            w.deliver(&target, jid.device, out);
        }
    }
    w.send(
        conn,
        NodeBuilder::new("ack")
            .attr("class", "message")
            .attr("id", id)
            .attr("from", to.to_string())
            .attr("t", t)
            .build(),
    );
}

pub fn receipt(w: &mut World, conn: u64, node: Node) {
    let Some((phone, device)) = w.login_of(conn) else {
        return;
    };
    w.record(&device_jid(w, &phone, device, false), &node);
    let id = attr(&node, "id").unwrap_or_default();
    let Some(to) = jid_attr(&node, "to") else {
        return;
    };
    // A device's receipt for a message is its ack of that message (WhatsApp clients send no
    // separate `<ack class=message>`): it leaves the device's redelivery queue.
    let mut ids = vec![id.clone()];
    if let Some(list) = node.get_optional_child("list") {
        ids.extend(
            list.get_children_by_tag("item")
                .filter_map(|i| attr(i, "id")),
        );
    }
    for i in ids {
        let as_ack = NodeBuilder::new("ack")
            .attr("class", "message")
            .attr("id", i)
            .attr("to", to.to_string())
            .build();
        w.acked(conn, &as_ack);
    }
    let t = now().to_string();
    let mut ack = NodeBuilder::new("ack")
        .attr("class", "receipt")
        .attr("id", id)
        .attr("from", to.to_string());
    if let Some(ty) = attr(&node, "type") {
        ack = ack.attr("type", ty);
    }
    w.send(conn, ack.build());
    let content = node.content.clone();
    let keys: &[&'static str] = &["id", "type", "recipient"];
    if to.server == Server::Group {
        // A group receipt goes to the original sender, named by `participant`.
        let Some(sender) = jid_attr(&node, "participant").and_then(|p| w.phone_of(&p)) else {
            return;
        };
        let b = NodeBuilder::new("receipt")
            .attr("from", to.to_string())
            .attr("participant", device_jid(w, &phone, device, false))
            .attr("t", t);
        let out = with_content(copy_attrs(&node, b, keys).build(), content);
        w.deliver_all(&sender, None, &out);
    } else if let Some(target) = w.phone_of(&to) {
        let switched = w.accounts.get(&phone).is_some_and(|a| a.lid_addressing);
        let lid = to.server == Server::Lid || switched;
        let b = NodeBuilder::new("receipt")
            .attr("from", device_jid(w, &phone, device, lid))
            .attr("t", t);
        let out = with_content(copy_attrs(&node, b, keys).build(), content);
        if to.device != 0 {
            w.deliver(&target, to.device, out);
        } else {
            w.deliver_all(
                &target,
                if target == phone { Some(device) } else { None },
                &out,
            );
        }
    }
}

fn with_content(mut node: Node, content: Option<NodeContent>) -> Node {
    node.content = content;
    node
}

pub fn chatstate(w: &mut World, conn: u64, node: Node) {
    let Some((phone, device)) = w.login_of(conn) else {
        return;
    };
    let Some(to) = jid_attr(&node, "to") else {
        return;
    };
    let content = node.content.clone();
    if to.server == Server::Group {
        let members: Vec<String> = w
            .groups
            .get(to.user.as_str())
            .map(|g| g.participants.iter().map(|(p, _)| p.clone()).collect())
            .unwrap_or_default();
        let out = with_content(
            NodeBuilder::new("chatstate")
                .attr("from", to.to_string())
                .attr("participant", device_jid(w, &phone, 0, false))
                .build(),
            content,
        );
        for m in members.into_iter().filter(|m| *m != phone) {
            w.deliver_all(&m, None, &out);
        }
    } else if let Some(target) = w.phone_of(&to) {
        let out = with_content(
            NodeBuilder::new("chatstate")
                .attr("from", device_jid(w, &phone, 0, to.server == Server::Lid))
                .build(),
            content,
        );
        let _ = device;
        w.deliver_all(&target, None, &out);
    }
}

pub fn presence(w: &mut World, conn: u64, node: Node) {
    let Some((phone, _device)) = w.login_of(conn) else {
        return;
    };
    let typ = attr(&node, "type").unwrap_or_else(|| "available".into());
    match typ.as_str() {
        "subscribe" => {
            let Some(target) = jid_attr(&node, "to").and_then(|j| w.phone_of(&j)) else {
                return;
            };
            w.presence_subs
                .entry(target.clone())
                .or_default()
                .insert(phone.clone());
            let online = w.online.get(&target).copied().unwrap_or(false);
            let out = presence_node(w, &target, online);
            w.send(conn, out);
        }
        "available" | "unavailable" => {
            let online = typ == "available";
            w.online.insert(phone.clone(), online);
            if let Some(name) = attr(&node, "name")
                && let Some(a) = w.accounts.get_mut(&phone)
                && !name.is_empty()
            {
                a.name = name;
            }
            let subs: Vec<String> = w
                .presence_subs
                .get(&phone)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default();
            let out = presence_node(w, &phone, online);
            for s in subs {
                w.deliver_all(&s, None, &out);
            }
        }
        _ => {}
    }
}

pub fn presence_node(w: &World, phone: &str, online: bool) -> Node {
    let mut b = NodeBuilder::new("presence").attr("from", device_jid(w, phone, 0, false));
    if !online {
        b = b
            .attr("type", "unavailable")
            .attr("last", now().to_string());
    }
    b.build()
}
