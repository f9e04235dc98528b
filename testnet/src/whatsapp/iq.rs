//! `<iq>` requests from logged-in devices: prekeys (upload, count, fetch), usync device lists
//! and LIDs, media_conn, props, ping, passive/active, groups, and a plain `result` for the rest
//! (logged, so a missing answer shows up in the log rather than as a client hang).

use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Jid, Node};
use waproto::whatsapp as wa;

use super::world::{World, attr, child_bytes, jid_attr, now};

fn be_uint(b: &[u8]) -> u32 {
    b.iter().fold(0u32, |acc, x| (acc << 8) | u32::from(*x))
}

fn key32(b: Option<&[u8]>) -> Option<[u8; 32]> {
    b.and_then(|b| <[u8; 32]>::try_from(b).ok())
}

pub fn handle(w: &mut World, conn: u64, node: Node) {
    let typ = attr(&node, "type").unwrap_or_default();
    if typ == "result" || typ == "error" {
        // Answers to the server's own iqs (pair-device ack, pair-device-sign).
        if node
            .get_optional_child_by_tag(&["pair-device-sign"])
            .is_some()
            && let Some((phone, device)) = w.conns.get(&conn).and_then(|c| c.paired.clone())
        {
            super::pairing::store_device_sign(w, &phone, device, &node);
            // As WhatsApp does: "restart required", so the client logs in as the new device.
            w.send(
                conn,
                NodeBuilder::new("stream:error").attr("code", "515").build(),
            );
            if let Some(c) = w.conns.get(&conn) {
                let _ = c.tx.send(super::world::Out::Close);
            }
        }
        return;
    }
    let xmlns = attr(&node, "xmlns").unwrap_or_default();
    let first = node
        .children()
        .and_then(|c| c.first())
        .map(|c| c.tag.to_string())
        .unwrap_or_default();
    if super::paircode::handle_iq(w, conn, &node, &xmlns, &first) {
        return;
    }
    let Some((phone, device)) = w.login_of(conn) else {
        tracing::debug!(conn, xmlns, first, "iq before login");
        w.send(conn, World::iq_error(&node, 401, "not-authorized"));
        return;
    };
    let reply = match (xmlns.as_str(), first.as_str()) {
        ("encrypt", "count") => {
            let n = w
                .accounts
                .get(&phone)
                .and_then(|a| a.devices.get(&device))
                .map_or(0, |d| d.keys.prekeys.len());
            World::iq_result(
                &node,
                vec![
                    NodeBuilder::new("count")
                        .attr("value", n.to_string())
                        .build(),
                ],
            )
        }
        ("encrypt", "registration" | "list" | "identity" | "skey" | "type") => {
            upload_keys(w, &phone, device, &node);
            World::iq_result(&node, vec![])
        }
        ("encrypt", "rotate") => {
            if let Some(skey) = node.get_optional_child_by_tag(&["rotate", "skey"]) {
                set_skey(w, &phone, device, skey);
            }
            World::iq_result(&node, vec![])
        }
        ("encrypt", "key") => fetch_keys(w, &node),
        ("encrypt", "digest") => digest(w, &phone, device, &node),
        ("usync", _) => usync(w, &node),
        ("w:m", "media_conn") => media_conn(w, &node),
        ("w:p", _) => World::iq_result(&node, vec![]),
        ("w:sync:app:state", "sync") => app_state(&node),
        ("privacy", "privacy") => World::iq_result(
            &node,
            vec![
                NodeBuilder::new("privacy")
                    .children(
                        [
                            ("last", "all"),
                            ("online", "all"),
                            ("profile", "all"),
                            ("status", "all"),
                            ("groupadd", "all"),
                            ("readreceipts", "all"),
                        ]
                        .map(|(n, v)| {
                            NodeBuilder::new("category")
                                .attr("name", n)
                                .attr("value", v)
                                .build()
                        }),
                    )
                    .build(),
            ],
        ),
        ("w" | "abt", "props") => World::iq_result(
            &node,
            vec![
                NodeBuilder::new("props")
                    .attr("protocol", "2")
                    .attr("hash", "sim")
                    .build(),
            ],
        ),
        ("w:g2", _) => super::groups::handle_iq(w, &phone, &node),
        // A group's picture (get and set) is the group's; anyone else's is a user's picture.
        ("w:profile:picture", _)
            if attr(&node, "target").is_some_and(|t| t.ends_with("@g.us"))
                || attr(&node, "to").is_some_and(|t| t.ends_with("@g.us")) =>
        {
            super::groups::picture_iq(w, &phone, &node)
        }
        ("w:profile:picture", "picture") if attr(&node, "type").as_deref() == Some("get") => {
            super::pictures::get(w, &node)
        }
        ("md", "remove-companion-device") => {
            // The device logs itself out: answer first, then unlink (which closes the socket).
            let removed = node
                .get_optional_child("remove-companion-device")
                .and_then(|r| jid_attr(r, "jid"))
                .filter(|j| w.phone_of(j).as_deref() == Some(phone.as_str()))
                .map_or(device, |j| j.device);
            w.send(conn, World::iq_result(&node, vec![]));
            super::control::unlink_device(w, &phone, removed);
            return;
        }
        _ => {
            tracing::debug!(conn, xmlns, first, "iq answered with an empty result");
            World::iq_result(&node, vec![])
        }
    };
    w.send(conn, reply);
}

/// App-state sync: every collection is empty (version 0, no patches, no snapshot), so the
/// client's critical sync completes without the app-state keys only a phone could share.
fn app_state(node: &Node) -> Node {
    let collections: Vec<Node> = node
        .get_optional_child("sync")
        .map(|s| {
            s.get_children_by_tag("collection")
                .map(|c| {
                    NodeBuilder::new("collection")
                        .attr("name", attr(c, "name").unwrap_or_default())
                        .attr("version", attr(c, "version").unwrap_or_else(|| "0".into()))
                        .attr("has_more_patches", "false")
                        .build()
                })
                .collect()
        })
        .unwrap_or_default();
    World::iq_result(
        node,
        vec![NodeBuilder::new("sync").children(collections).build()],
    )
}

fn set_skey(w: &mut World, phone: &str, device: u16, skey: &Node) {
    let id = child_bytes(skey, "id").map(be_uint);
    let value = key32(child_bytes(skey, "value"));
    let sig = child_bytes(skey, "signature").map(<[u8]>::to_vec);
    if let (Some(id), Some(value), Some(sig)) = (id, value, sig)
        && let Some(d) = w
            .accounts
            .get_mut(phone)
            .and_then(|a| a.devices.get_mut(&device))
    {
        d.keys.signed_prekey = Some((id, value, sig));
    }
}

fn upload_keys(w: &mut World, phone: &str, device: u16, node: &Node) {
    let reg = child_bytes(node, "registration").map(be_uint);
    let identity = key32(child_bytes(node, "identity"));
    let prekeys: Vec<(u32, [u8; 32])> = node
        .get_optional_child("list")
        .map(|l| {
            l.get_children_by_tag("key")
                .filter_map(|k| {
                    Some((
                        be_uint(child_bytes(k, "id")?),
                        key32(child_bytes(k, "value"))?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    if let Some(skey) = node.get_optional_child("skey") {
        set_skey(w, phone, device, skey);
    }
    if let Some(d) = w
        .accounts
        .get_mut(phone)
        .and_then(|a| a.devices.get_mut(&device))
    {
        if let Some(reg) = reg {
            d.keys.registration_id = reg;
        }
        if let Some(identity) = identity {
            d.keys.identity = identity;
        }
        let n = prekeys.len();
        d.keys.prekeys.extend(prekeys);
        tracing::debug!(phone, device, n, "prekeys uploaded");
    }
}

fn digest(w: &World, phone: &str, device: u16, node: &Node) -> Node {
    let Some(d) = w.accounts.get(phone).and_then(|a| a.devices.get(&device)) else {
        return World::iq_error(node, 404, "item-not-found");
    };
    let mut children = vec![
        NodeBuilder::new("registration")
            .bytes(d.keys.registration_id.to_be_bytes().to_vec())
            .build(),
        NodeBuilder::new("type").bytes(vec![5u8]).build(),
        NodeBuilder::new("identity")
            .bytes(d.keys.identity.to_vec())
            .build(),
    ];
    if let Some((id, value, sig)) = &d.keys.signed_prekey {
        children.push(skey_node(*id, value, sig));
    }
    let ids: Vec<Node> = d
        .keys
        .prekeys
        .iter()
        .map(|(id, _)| {
            NodeBuilder::new("id")
                .bytes(id.to_be_bytes()[1..].to_vec())
                .build()
        })
        .collect();
    children.push(NodeBuilder::new("list").children(ids).build());
    let pubs: Vec<&[u8]> = d.keys.prekeys.iter().map(|(_, k)| k.as_slice()).collect();
    let hash =
        d.keys.signed_prekey.as_ref().map(|(_, v, s)| {
            wacore::prekeys::compute_key_bundle_digest(&d.keys.identity, v, s, &pubs)
        });
    children.push(
        NodeBuilder::new("hash")
            .bytes(hash.unwrap_or_default())
            .build(),
    );
    World::iq_result(
        node,
        vec![NodeBuilder::new("digest").children(children).build()],
    )
}

fn skey_node(id: u32, value: &[u8; 32], sig: &[u8]) -> Node {
    NodeBuilder::new("skey")
        .children([
            NodeBuilder::new("id")
                .bytes(id.to_be_bytes()[1..].to_vec())
                .build(),
            NodeBuilder::new("value").bytes(value.to_vec()).build(),
            NodeBuilder::new("signature").bytes(sig.to_vec()).build(),
        ])
        .build()
}

/// Prekey bundles for the requested devices; each one-time prekey is handed out once.
fn fetch_keys(w: &mut World, node: &Node) -> Node {
    let users: Vec<Jid> = node
        .get_optional_child("key")
        .map(|k| {
            k.get_children_by_tag("user")
                .filter_map(|u| jid_attr(u, "jid"))
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for jid in users {
        let Some(phone) = w.phone_of(&jid) else {
            out.push(user_error(&jid, 404, "item-not-found"));
            continue;
        };
        let Some(d) = w
            .accounts
            .get_mut(&phone)
            .and_then(|a| a.devices.get_mut(&jid.device))
        else {
            out.push(user_error(&jid, 404, "item-not-found"));
            continue;
        };
        let Some((sid, sval, ssig)) = d.keys.signed_prekey.clone() else {
            out.push(user_error(&jid, 404, "item-not-found"));
            continue;
        };
        let mut children = vec![
            NodeBuilder::new("registration")
                .bytes(d.keys.registration_id.to_be_bytes().to_vec())
                .build(),
            NodeBuilder::new("type").bytes(vec![5u8]).build(),
            NodeBuilder::new("identity")
                .bytes(d.keys.identity.to_vec())
                .build(),
        ];
        if let Some((id, key)) = d.keys.prekeys.pop_front() {
            children.push(
                NodeBuilder::new("key")
                    .children([
                        NodeBuilder::new("id")
                            .bytes(id.to_be_bytes()[1..].to_vec())
                            .build(),
                        NodeBuilder::new("value").bytes(key.to_vec()).build(),
                    ])
                    .build(),
            );
        }
        children.push(skey_node(sid, &sval, &ssig));
        if let Some(di) = &d.device_identity {
            children.push(
                NodeBuilder::new("device-identity")
                    .bytes(di.clone())
                    .build(),
            );
        }
        out.push(
            NodeBuilder::new("user")
                .attr("jid", jid.to_string())
                .children(children)
                .build(),
        );
    }
    World::iq_result(node, vec![NodeBuilder::new("list").children(out).build()])
}

fn user_error(jid: &Jid, code: u16, text: &str) -> Node {
    NodeBuilder::new("user")
        .attr("jid", jid.to_string())
        .children([NodeBuilder::new("error")
            .attr("code", code.to_string())
            .attr("text", text)
            .build()])
        .build()
}

/// The account's signed key-index list: which companion key indexes are valid.
pub fn key_index_list(w: &World, phone: &str) -> Option<Node> {
    let a = w.accounts.get(phone)?;
    let valid: Vec<u32> = a
        .devices
        .values()
        .filter(|d| d.id != 0)
        .map(|d| d.key_index)
        .collect();
    let details = wa::ADVKeyIndexList {
        raw_id: Some(a.lid.len() as u32 ^ 0x5151),
        timestamp: Some(now()),
        current_index: valid.iter().copied().max(),
        valid_indexes: valid,
        ..Default::default()
    };
    let details = buffa::Message::encode_to_vec(&details);
    let mut msg = vec![6u8, 2];
    msg.extend_from_slice(&details);
    let sig = a
        .adv_key
        .private_key
        .calculate_signature(&msg, &mut rand10::rng())
        .ok()?;
    let signed = wa::ADVSignedKeyIndexList {
        details: Some(details),
        account_signature: Some(sig.to_vec()),
        account_signature_key: Some(a.adv_key.public_key.public_key_bytes().to_vec()),
    };
    Some(
        NodeBuilder::new("key-index-list")
            .attr("ts", now().to_string())
            .bytes(buffa::Message::encode_to_vec(&signed))
            .build(),
    )
}

fn usync(w: &World, node: &Node) -> Node {
    let Some(us) = node.get_optional_child("usync") else {
        return World::iq_error(node, 400, "bad-request");
    };
    let protocols: Vec<String> = us
        .get_optional_child("query")
        .and_then(|q| q.children())
        .map(|c| c.iter().map(|p| p.tag.to_string()).collect())
        .unwrap_or_default();
    let users: Vec<&Node> = us
        .get_optional_child("list")
        .map(|l| l.get_children_by_tag("user").collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    for u in users {
        // A user is named by JID, or by phone number in a <contact> child.
        let jid = jid_attr(u, "jid").or_else(|| {
            u.get_optional_child("contact")
                .and_then(|c| c.content_as_string())
                .and_then(|s| super::world::normalize_phone(&s))
                .map(|p| Jid::pn(p.as_str()))
        });
        let account = jid.as_ref().and_then(|j| w.account_of(j));
        let mut children = Vec::new();
        for p in &protocols {
            match (p.as_str(), account) {
                ("devices", Some(a)) => {
                    let mut list = Vec::new();
                    for d in a.devices.values() {
                        let mut b = NodeBuilder::new("device").attr("id", d.id.to_string());
                        if d.id != 0 {
                            b = b.attr("key-index", d.key_index.to_string());
                        }
                        list.push(b.build());
                    }
                    let mut dev = vec![
                        NodeBuilder::new("device-list")
                            .attr("hash", format!("2:{}", a.devices.len()))
                            .children(list)
                            .build(),
                    ];
                    if let Some(k) = key_index_list(w, &a.phone) {
                        dev.push(k);
                    }
                    children.push(NodeBuilder::new("devices").children(dev).build());
                }
                ("lid", Some(a)) => {
                    children.push(
                        NodeBuilder::new("lid")
                            .attr("val", format!("{}@lid", a.lid))
                            .build(),
                    );
                }
                ("contact", Some(_)) => {
                    children.push(NodeBuilder::new("contact").attr("type", "in").build());
                }
                ("contact", None) => {
                    children.push(NodeBuilder::new("contact").attr("type", "out").build());
                }
                ("status", Some(_)) => {
                    children.push(
                        NodeBuilder::new("status")
                            .attr("t", now().to_string())
                            .string_content("Hey there! I am using WhatsApp.")
                            .build(),
                    );
                }
                _ => {}
            }
        }
        let mut b = NodeBuilder::new("user");
        match (account, &jid) {
            (Some(a), Some(j)) if j.server == wacore_binary::Server::Lid => {
                b = b
                    .attr("jid", format!("{}@lid", a.lid))
                    .attr("pn_jid", format!("{}@s.whatsapp.net", a.phone));
            }
            (Some(a), _) => b = b.attr("jid", format!("{}@s.whatsapp.net", a.phone)),
            (None, Some(j)) => b = b.attr("jid", j.to_non_ad().to_string()),
            (None, None) => {}
        }
        out.push(b.children(children).build());
    }
    let result: Vec<Node> = protocols
        .iter()
        .map(|p| NodeBuilder::new_dynamic(p.clone()).build())
        .collect();
    World::iq_result(
        node,
        vec![
            NodeBuilder::new("usync")
                .attr("sid", attr(us, "sid").unwrap_or_default())
                .attr("mode", attr(us, "mode").unwrap_or_else(|| "query".into()))
                .attr(
                    "context",
                    attr(us, "context").unwrap_or_else(|| "message".into()),
                )
                .children([
                    NodeBuilder::new("result").children(result).build(),
                    NodeBuilder::new("list").children(out).build(),
                ])
                .build(),
        ],
    )
}

fn media_conn(w: &World, node: &Node) -> Node {
    let host = w
        .media_url
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .to_owned();
    World::iq_result(
        node,
        vec![
            NodeBuilder::new("media_conn")
                .attr("auth", "sim-media-auth")
                .attr("ttl", "3600")
                .attr("auth_ttl", "3600")
                .attr("max_buckets", "12")
                .children([NodeBuilder::new("host").attr("hostname", host).build()])
                .build(),
        ],
    )
}
