//! The simulated WhatsApp server's state: accounts and their devices (with the keys each device
//! uploaded), live connections, groups, queued stanzas for offline devices, and what tests read
//! back (stanzas the bridged client sent, receipts).
//!
//! Like WhatsApp's own servers, the simulator never holds a message key: it routes the
//! per-device ciphertexts the clients produce. Plaintext exists only inside the clients (the
//! bridged one, and the simulated contacts' own whatsapp-rust clients, see `peer.rs`).

use std::collections::{BTreeMap, VecDeque};
use std::str::FromStr as _;

use tokio::sync::mpsc;
use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Jid, Node, NodeContent, Server};
use wacore_libsignal::protocol::KeyPair;

use super::noise::ServerKeys;

/// What a connection task is asked to do.
#[derive(Debug)]
pub enum Out {
    Node(Node),
    /// Close the socket (a dropped connection, or an unlinked device).
    Close,
}

/// Keys a device published (registration payload and `encrypt` uploads).
#[derive(Debug, Clone, Default)]
pub struct DeviceKeys {
    pub registration_id: u32,
    pub identity: [u8; 32],
    pub signed_prekey: Option<(u32, [u8; 32], Vec<u8>)>,
    pub prekeys: VecDeque<(u32, [u8; 32])>,
}

#[derive(Debug)]
pub struct Device {
    pub id: u16,
    /// The Noise static key the device logs in with (from its registration handshake).
    pub noise_static: [u8; 32],
    pub keys: DeviceKeys,
    pub key_index: u32,
    /// `ADVSignedDeviceIdentity` with the device's own signature (from `pair-device-sign`),
    /// served with its prekey bundle so peers can check the account vouches for it.
    pub device_identity: Option<Vec<u8>>,
    /// Stanzas (messages, receipts, notifications) not yet acknowledged by this device: sent
    /// again at its next login, like WhatsApp's offline queue, so nothing is lost when a client
    /// dies between receiving a stanza and acking it.
    pub unacked: VecDeque<Node>,
}

pub struct Account {
    pub phone: String,
    pub lid: String,
    pub name: String,
    /// The account's ADV identity ("the phone's key"): signs its companion devices.
    pub adv_key: KeyPair,
    pub devices: BTreeMap<u16, Device>,
    pub next_key_index: u32,
    /// After `POST /control/lid_switch`: the server addresses this account's messages and
    /// receipts to others by its LID (with `sender_pn`), as WhatsApp does for LID-migrated users.
    pub lid_addressing: bool,
}

#[derive(Debug, Clone)]
pub struct Group {
    pub id: String,
    pub subject: String,
    pub creator: String,
    pub created: u64,
    /// Participants' phone numbers, with an admin flag.
    pub participants: Vec<(String, bool)>,
    /// Description, picture, community links (see `groups.rs`).
    pub meta: super::groups::GroupMeta,
}

/// A fresh device waiting for its QR code to be scanned or its pairing code entered.
#[derive(Clone)]
pub struct PendingPair {
    pub refs: Vec<String>,
    pub noise_static: [u8; 32],
    pub keys: DeviceKeys,
    /// Set when the client asked to link by pairing code (its `companion_hello`).
    pub link: Option<super::paircode::LinkCode>,
}

#[derive(Debug)]
pub struct ConnEntry {
    pub tx: mpsc::UnboundedSender<Out>,
    /// `(phone, device)` once logged in.
    pub login: Option<(String, u16)>,
    /// `(phone, device)` this (registration) connection was just linked as.
    pub paired: Option<(String, u16)>,
}

/// A stanza the server received from a logged-in device, kept for tests.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Logged {
    pub from: String,
    pub tag: String,
    pub to: Option<String>,
    pub id: Option<String>,
    pub r#type: Option<String>,
    pub t: u64,
    /// The stanza rendered as XML-ish text (what WhatsApp's own debug tools show).
    pub xml: String,
}

pub struct World {
    pub keys: ServerKeys,
    pub accounts: BTreeMap<String, Account>,
    pub lid_to_phone: BTreeMap<String, String>,
    pub conns: BTreeMap<u64, ConnEntry>,
    pub pending: BTreeMap<u64, PendingPair>,
    pub groups: BTreeMap<String, Group>,
    pub log: Vec<Logged>,
    next_id: u64,
    /// Base URL of the media endpoint (`http://127.0.0.1:PORT`).
    pub media_url: String,
    pub media: BTreeMap<String, Vec<u8>>,
    /// Who asked for whose presence (phone -> subscribers' phones).
    pub presence_subs: BTreeMap<String, std::collections::BTreeSet<String>>,
    pub online: BTreeMap<String, bool>,
    /// While set, new WebSocket connections are refused (`POST /control/refuse`).
    pub refuse_connections: bool,
    /// Profile pictures: phone -> (picture id, media path).
    pub pictures: BTreeMap<String, (String, String)>,
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Reads a string attribute.
pub fn attr(node: &Node, key: &str) -> Option<String> {
    node.attrs.get(key).map(|v| v.as_str().into_owned())
}

/// Reads a JID attribute.
pub fn jid_attr(node: &Node, key: &str) -> Option<Jid> {
    node.attrs
        .get(key)
        .and_then(|v| v.to_jid().or_else(|| Jid::from_str(&v.as_str()).ok()))
}

pub fn child_bytes<'a>(node: &'a Node, tag: &str) -> Option<&'a [u8]> {
    match &node.get_optional_child(tag)?.content {
        Some(NodeContent::Bytes(b)) => Some(b),
        _ => None,
    }
}

impl World {
    pub fn new() -> Self {
        Self {
            keys: ServerKeys::generate(),
            accounts: BTreeMap::new(),
            lid_to_phone: BTreeMap::new(),
            conns: BTreeMap::new(),
            pending: BTreeMap::new(),
            groups: BTreeMap::new(),
            log: Vec::new(),
            next_id: 1,
            media_url: String::new(),
            media: BTreeMap::new(),
            presence_subs: BTreeMap::new(),
            online: BTreeMap::new(),
            refuse_connections: false,
            pictures: BTreeMap::new(),
        }
    }

    /// A fresh server-side id (stanza ids, group ids, media ids).
    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn stanza_id(&mut self) -> String {
        format!("sim{}", self.next_id())
    }

    /// Creates an account (the bridged user or a contact). The LID defaults to a number derived
    /// from the phone, as WhatsApp's are opaque numbers unrelated to the phone.
    pub fn create_account(
        &mut self,
        phone: &str,
        name: &str,
        lid: Option<&str>,
    ) -> Result<&Account, String> {
        let phone = normalize_phone(phone).ok_or("phone must be digits (optionally with +)")?;
        if self.accounts.contains_key(&phone) {
            return Err(format!("account {phone} already exists"));
        }
        let lid = match lid {
            Some(l) => l.to_owned(),
            None => format!(
                "{}",
                100_000_000_000_000 + self.next_id() * 7919 + phone.len() as u64
            ),
        };
        self.lid_to_phone.insert(lid.clone(), phone.clone());
        self.accounts.insert(
            phone.clone(),
            Account {
                phone: phone.clone(),
                lid,
                name: name.to_owned(),
                adv_key: KeyPair::generate(&mut rand10::rng()),
                devices: BTreeMap::new(),
                next_key_index: 1,
                lid_addressing: false,
            },
        );
        self.accounts
            .get(&phone)
            .ok_or_else(|| "account vanished".to_owned())
    }

    /// The account a user JID names, by phone or by LID.
    pub fn account_of(&self, jid: &Jid) -> Option<&Account> {
        match jid.server {
            Server::Lid => self
                .lid_to_phone
                .get(jid.user.as_str())
                .and_then(|p| self.accounts.get(p)),
            _ => self.accounts.get(jid.user.as_str()),
        }
    }

    pub fn phone_of(&self, jid: &Jid) -> Option<String> {
        self.account_of(jid).map(|a| a.phone.clone())
    }

    /// Sends a node to one connection.
    pub fn send(&self, conn: u64, node: Node) {
        if let Some(c) = self.conns.get(&conn) {
            let _ = c.tx.send(Out::Node(node));
        }
    }

    /// The live connection of a device, if it is online.
    pub fn conn_of(&self, phone: &str, device: u16) -> Option<u64> {
        self.conns
            .iter()
            .find(|(_, c)| {
                c.login
                    .as_ref()
                    .is_some_and(|(p, d)| p == phone && *d == device)
            })
            .map(|(id, _)| *id)
    }

    /// Delivers a stanza to a device now (if it is online) and, for stanzas the client acks
    /// (those with an id), keeps it until acked. Typing and presence for an offline device are
    /// dropped, as WhatsApp does.
    pub fn deliver(&mut self, phone: &str, device: u16, node: Node) {
        let conn = self.conn_of(phone, device);
        if attr(&node, "id").is_some()
            && let Some(d) = self
                .accounts
                .get_mut(phone)
                .and_then(|a| a.devices.get_mut(&device))
        {
            d.unacked.push_back(node.clone());
        }
        if let Some(conn) = conn {
            self.send(conn, node);
        }
    }

    /// The device acked a stanza (`<ack class id to [type]>`, `to` being the stanza's `from`,
    /// in either its phone-number or its LID form).
    pub fn acked(&mut self, conn: u64, ack: &Node) {
        let Some((phone, device)) = self.login_of(conn) else {
            return;
        };
        let Some(id) = attr(ack, "id") else {
            return;
        };
        let class = attr(ack, "class");
        let typ = attr(ack, "type");
        let who = |w: &World, n: &Node, key: &str| {
            jid_attr(n, key).map(|j| w.phone_of(&j).unwrap_or_else(|| j.user.to_string()))
        };
        let to = who(self, ack, "to");
        let senders: Vec<Option<String>> = self
            .accounts
            .get(&phone)
            .and_then(|a| a.devices.get(&device))
            .map(|d| d.unacked.iter().map(|n| who(self, n, "from")).collect())
            .unwrap_or_default();
        if let Some(d) = self
            .accounts
            .get_mut(&phone)
            .and_then(|a| a.devices.get_mut(&device))
        {
            let mut senders = senders.into_iter();
            d.unacked.retain(|n| {
                let from = senders.next().flatten();
                let same = attr(n, "id").as_deref() == Some(id.as_str())
                    && class.as_deref().is_none_or(|c| c == n.tag)
                    && (to.is_none() || from == to)
                    && (n.tag != "receipt" || attr(n, "type") == typ);
                !same
            });
        }
    }

    /// Delivers a stanza to every device of an account except `skip`.
    pub fn deliver_all(&mut self, phone: &str, skip: Option<u16>, node: &Node) {
        let devices: Vec<u16> = self
            .accounts
            .get(phone)
            .map(|a| a.devices.keys().copied().collect())
            .unwrap_or_default();
        for d in devices {
            if Some(d) != skip {
                self.deliver(phone, d, node.clone());
            }
        }
    }

    pub fn login_of(&self, conn: u64) -> Option<(String, u16)> {
        self.conns.get(&conn).and_then(|c| c.login.clone())
    }

    /// Closes every connection of a device (or all, with `None`).
    pub fn drop_connections(&mut self, who: Option<(&str, Option<u16>)>) -> usize {
        let mut n = 0;
        for c in self.conns.values() {
            let hit = match (who, &c.login) {
                (None, _) => true,
                (Some((p, dev)), Some((lp, ld))) => p == lp && dev.is_none_or(|d| d == *ld),
                (Some(_), None) => false,
            };
            if hit {
                let _ = c.tx.send(Out::Close);
                n += 1;
            }
        }
        n
    }

    pub fn record(&mut self, from: &str, node: &Node) {
        self.log.push(Logged {
            from: from.to_owned(),
            tag: node.tag.to_string(),
            to: attr(node, "to"),
            id: attr(node, "id"),
            r#type: attr(node, "type"),
            t: now(),
            xml: format!("{}", wacore::xml::DisplayableNode(node)),
        });
    }

    /// An `<iq type="result">` answering `req`.
    pub fn iq_result(req: &Node, children: Vec<Node>) -> Node {
        let mut b = NodeBuilder::new("iq")
            .attr("type", "result")
            .attr("id", attr(req, "id").unwrap_or_default())
            .attr(
                "from",
                attr(req, "to").unwrap_or_else(|| "s.whatsapp.net".into()),
            );
        if !children.is_empty() {
            b = b.children(children);
        }
        b.build()
    }

    /// An `<iq type="error">` answering `req`.
    pub fn iq_error(req: &Node, code: u16, text: &str) -> Node {
        NodeBuilder::new("iq")
            .attr("type", "error")
            .attr("id", attr(req, "id").unwrap_or_default())
            .attr(
                "from",
                attr(req, "to").unwrap_or_else(|| "s.whatsapp.net".into()),
            )
            .children([NodeBuilder::new("error")
                .attr("code", code.to_string())
                .attr("text", text)
                .build()])
            .build()
    }
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

/// `+49 170 123` -> `49170123`; `None` if anything but digits remains.
pub fn normalize_phone(phone: &str) -> Option<String> {
    let digits: String = phone
        .chars()
        .filter(|c| !matches!(c, '+' | ' ' | '-' | '(' | ')'))
        .collect();
    (!digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())).then_some(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(id: u16) -> Device {
        Device {
            id,
            noise_static: [0; 32],
            keys: DeviceKeys::default(),
            key_index: 1,
            device_identity: None,
            unacked: VecDeque::new(),
        }
    }

    fn msg(id: &str, from: &str) -> Node {
        NodeBuilder::new("message")
            .attr("id", id)
            .attr("from", from)
            .build()
    }

    #[test]
    fn a_stanza_stays_queued_until_the_device_acks_it() {
        let mut w = World::new();
        w.create_account("+1 555 0100", "User", None)
            .expect("account");
        w.accounts
            .get_mut("15550100")
            .expect("account")
            .devices
            .insert(1, device(1));
        let (tx, mut rx) = mpsc::unbounded_channel();
        w.conns.insert(
            7,
            ConnEntry {
                tx,
                login: Some(("15550100".into(), 1)),
                paired: None,
            },
        );
        w.deliver("15550100", 1, msg("A", "1@s.whatsapp.net"));
        w.deliver("15550100", 1, msg("B", "2@s.whatsapp.net"));
        // Typing has no id: sent, never queued.
        w.deliver(
            "15550100",
            1,
            NodeBuilder::new("chatstate")
                .attr("from", "1@s.whatsapp.net")
                .build(),
        );
        let mut sent = 0;
        while rx.try_recv().is_ok() {
            sent += 1;
        }
        assert_eq!(sent, 3);
        let queued = |w: &World| -> Vec<String> {
            w.accounts["15550100"].devices[&1]
                .unacked
                .iter()
                .filter_map(|n| attr(n, "id"))
                .collect()
        };
        assert_eq!(queued(&w), ["A", "B"]);
        // An ack naming another sender does not clear it; the right one does.
        let ack = |id: &str, to: &str| {
            NodeBuilder::new("ack")
                .attr("class", "message")
                .attr("id", id)
                .attr("to", to)
                .build()
        };
        w.acked(7, &ack("A", "9@s.whatsapp.net"));
        assert_eq!(queued(&w), ["A", "B"]);
        w.acked(7, &ack("A", "1@s.whatsapp.net"));
        assert_eq!(queued(&w), ["B"]);
    }

    #[test]
    fn phone_numbers_are_normalized() {
        assert_eq!(
            normalize_phone("+49 (170) 123-45").as_deref(),
            Some("4917012345")
        );
        assert_eq!(normalize_phone("abc"), None);
        assert_eq!(normalize_phone(""), None);
    }
}
