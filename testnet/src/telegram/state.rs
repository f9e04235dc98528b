//! The simulated Telegram world: accounts, chats, message boxes with their pts logs, auth keys and
//! live connections, and the operations both the MTProto methods and the control API perform on it.
//!
//! As on Telegram, private chats and basic groups live in each account's own message box (own
//! message ids, one `pts` sequence per account, plus `seq` for pushed `updates`), while channels and
//! supergroups have one box of their own with a per-channel `pts`. Each logged change is kept so
//! `updates.getDifference` / `updates.getChannelDifference` can replay what a client missed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use super::crypto::{AuthKey, SrpChallenge, SrpVerifier};

pub fn now() -> i32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i32)
        .unwrap_or(0)
}

/// A chat as its owner sees it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(tag = "type", content = "id", rename_all = "snake_case")]
pub enum PeerKey {
    User(i64),
    Chat(i64),
    Channel(i64),
}

/// Which message box a message lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BoxRef {
    User(i64),
    Channel(i64),
}

/// One stored message (one copy of it, in one box).
#[derive(Debug, Clone)]
pub struct Msg {
    pub id: i32,
    pub peer: PeerKey,
    pub from: Option<i64>,
    pub out: bool,
    pub date: i32,
    pub text: String,
    pub entities: Vec<grammers_tl_types::enums::MessageEntity>,
    pub reply_to: Option<i32>,
    pub top_id: Option<i32>,
    pub media: Option<grammers_tl_types::enums::MessageMedia>,
    pub action: Option<grammers_tl_types::enums::MessageAction>,
    pub edit_date: Option<i32>,
    /// (user, emoji) in the order they were set.
    pub reactions: Vec<(i64, String)>,
    pub link: u64,
}

/// A pts-advancing change, rebuilt for the reader when replayed.
#[derive(Debug, Clone)]
pub enum Logged {
    NewMessage(i32),
    EditMessage(i32),
    Delete(Vec<i32>),
    ReadInbox { peer: PeerKey, max_id: i32 },
    ReadOutbox { peer: PeerKey, max_id: i32 },
}

#[derive(Debug, Clone)]
pub struct LogEntry {
    pub pts: i32,
    pub pts_count: i32,
    pub what: Logged,
}

#[derive(Debug, Default)]
pub struct MsgBox {
    pub pts: i32,
    pub next_id: i32,
    pub messages: BTreeMap<i32, Msg>,
    pub log: Vec<LogEntry>,
}

impl MsgBox {
    pub fn log(&mut self, pts_count: i32, what: Logged) -> i32 {
        self.pts += pts_count;
        self.log.push(LogEntry {
            pts: self.pts,
            pts_count,
            what,
        });
        self.pts
    }

    pub fn alloc_id(&mut self) -> i32 {
        self.next_id += 1;
        self.next_id
    }
}

#[derive(Debug)]
pub struct UserRec {
    pub id: i64,
    pub first_name: String,
    pub last_name: Option<String>,
    pub username: Option<String>,
    pub phone: Option<String>,
    pub bot: bool,
    pub password: Option<SrpVerifier>,
    pub hint: Option<String>,
    pub mbox: MsgBox,
    pub seq: i32,
    /// The secondary sequence (`qts`) of updates Telegram numbers separately: here
    /// `updateBotStopped` for bots. Starts at 0 (nothing happened yet).
    pub qts: i32,
    pub qts_log: Vec<(i32, grammers_tl_types::enums::Update)>,
    pub online: bool,
    /// read_inbox_max_id per peer (what this user has read).
    pub read_inbox: HashMap<PeerKey, i32>,
    pub read_outbox: HashMap<PeerKey, i32>,
}

#[derive(Debug)]
pub struct ChatRec {
    pub id: i64,
    pub title: String,
    pub about: String,
    /// The chat photo: a file in [`World::files`] (its id is the photo id).
    pub photo: Option<i64>,
    pub creator: i64,
    pub members: Vec<i64>,
    pub admins: BTreeSet<i64>,
    pub date: i32,
}

#[derive(Debug, Clone)]
pub struct Topic {
    pub id: i32,
    pub title: String,
    pub date: i32,
    pub from: i64,
}

#[derive(Debug)]
pub struct ChannelRec {
    pub id: i64,
    pub title: String,
    pub about: String,
    /// The channel photo: a file in [`World::files`] (its id is the photo id).
    pub photo: Option<i64>,
    pub username: Option<String>,
    pub broadcast: bool,
    pub forum: bool,
    pub creator: i64,
    pub members: BTreeSet<i64>,
    pub admins: BTreeSet<i64>,
    pub mbox: MsgBox,
    pub topics: Vec<Topic>,
    pub read_inbox: HashMap<i64, i32>,
    pub date: i32,
}

#[derive(Debug)]
pub struct KeyRec {
    pub key: AuthKey,
    pub user: Option<i64>,
    pub salts: HashSet<i64>,
    pub sessions: HashSet<i64>,
    /// The open account.getPassword challenge for this key.
    pub srp: Option<(i64, SrpChallenge)>,
    /// Pending QR login token of this key.
    pub login_token: Option<Vec<u8>>,
    /// The account that passed auth.signIn but still owes its 2FA password.
    pub pending_user: Option<i64>,
    /// Users this key's client has been sent (so it can take an updateShortMessage from them).
    pub known: HashSet<i64>,
    /// The highest pts of each channel this key's client has been given (pushed updates, its
    /// own changes, dialogs, channel differences): a channel further ahead is announced with
    /// `updateChannelTooLong` in the next `updates.getDifference`.
    pub channel_pts: HashMap<i64, i32>,
}

/// What the world asks a connection task to do.
#[derive(Debug)]
pub enum ConnCmd {
    /// Send this serialized `Updates` as a server-initiated message.
    Push(Vec<u8>),
    Close,
}

#[derive(Debug)]
pub struct ConnRec {
    pub key_id: i64,
    pub tx: mpsc::UnboundedSender<ConnCmd>,
}

#[derive(Debug)]
pub struct SentCodeRec {
    pub phone: String,
    pub code: String,
}

#[derive(Debug)]
pub struct LoginTokenRec {
    pub key_id: i64,
    pub expires: i32,
    pub accepted_by: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct FileRec {
    pub access_hash: i64,
    pub bytes: Vec<u8>,
    pub mime_type: String,
    pub name: String,
    /// The current file reference; an older one gets `FILE_REFERENCE_EXPIRED`, as on Telegram
    /// once a reference has aged (`POST /control/expire_file_references`).
    pub reference: Vec<u8>,
    /// A still thumbnail (size type "m"), served for `thumb_size = "m"`.
    pub thumb: Option<Vec<u8>>,
    /// Document attributes beyond the file name (voice, video, sticker, animated, ...).
    pub attributes: Vec<grammers_tl_types::enums::DocumentAttribute>,
}

#[derive(Debug)]
pub struct FloodRule {
    pub method: String,
    pub remaining: u32,
    pub seconds: i32,
}

/// Something the bridged account sent, as the control API reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SentRecord {
    pub from: i64,
    pub peer: PeerKey,
    pub id: i32,
    pub text: String,
    pub kind: &'static str,
    pub reply_to: Option<i32>,
    pub top_id: Option<i32>,
    pub entities: Vec<String>,
    pub media: Option<String>,
    /// What the media says beyond its kind: `voice:7s`, `audio:7s`, `video:2s:320x240`,
    /// `animated`, `sticker`, `geo:51.5,-0.12`, `contact:+44…`.
    pub details: Vec<String>,
    pub reaction: Option<String>,
    pub date: i32,
}

#[derive(Debug)]
pub struct World {
    pub port: u16,
    pub users: BTreeMap<i64, UserRec>,
    pub chats: BTreeMap<i64, ChatRec>,
    pub channels: BTreeMap<i64, ChannelRec>,
    pub keys: HashMap<i64, KeyRec>,
    pub conns: HashMap<u64, ConnRec>,
    pub codes: HashMap<String, SentCodeRec>,
    /// The login code each phone number receives (digits only -> code).
    pub login_codes: HashMap<String, String>,
    pub bot_tokens: HashMap<String, i64>,
    pub login_tokens: HashMap<Vec<u8>, LoginTokenRec>,
    pub uploads: HashMap<(i64, i64), BTreeMap<i32, Vec<u8>>>,
    pub files: HashMap<i64, FileRec>,
    pub floods: Vec<FloodRule>,
    pub links: HashMap<u64, Vec<(BoxRef, i32)>>,
    pub sent: Vec<SentRecord>,
    pub next_user: i64,
    pub next_chat: i64,
    pub next_channel: i64,
    pub next_link: u64,
    pub next_file: i64,
    /// The next download of a file with its current reference finds it expired (and renewed):
    /// the reference aged between the message's arrival and its download.
    pub expire_on_download: bool,
}

/// Access hashes are a pure function of the id (Telegram's differ per viewer; tests need not care).
pub fn access_hash(id: i64) -> i64 {
    ((id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5151_7e1e_9a3b_0001) as i64
}

/// Why an operation was refused, as an RPC error (code, TELEGRAM_STYLE_NAME).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcErr {
    pub code: i32,
    pub message: String,
}

impl RpcErr {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }
}

/// Content of a message being sent.
#[derive(Debug, Clone, Default)]
pub struct Content {
    pub text: String,
    pub entities: Vec<grammers_tl_types::enums::MessageEntity>,
    pub reply_to: Option<i32>,
    pub top_id: Option<i32>,
    pub media: Option<grammers_tl_types::enums::MessageMedia>,
    pub action: Option<grammers_tl_types::enums::MessageAction>,
}

impl World {
    pub fn new(port: u16) -> Self {
        Self {
            port,
            users: BTreeMap::new(),
            chats: BTreeMap::new(),
            channels: BTreeMap::new(),
            keys: HashMap::new(),
            conns: HashMap::new(),
            codes: HashMap::new(),
            login_codes: HashMap::new(),
            bot_tokens: HashMap::new(),
            login_tokens: HashMap::new(),
            uploads: HashMap::new(),
            files: HashMap::new(),
            floods: Vec::new(),
            links: HashMap::new(),
            sent: Vec::new(),
            next_user: 7_000_000_000,
            next_chat: 4_000,
            next_channel: 1_900_000_000,
            expire_on_download: false,
            next_link: 1,
            next_file: 5_000_000_000,
        }
    }

    pub fn add_key(&mut self, data: [u8; 256]) -> i64 {
        let key = AuthKey::new(data);
        let id = key.id;
        self.keys.entry(id).or_insert_with(|| KeyRec {
            key,
            user: None,
            salts: HashSet::from([rand::random::<i64>()]),
            sessions: HashSet::new(),
            srp: None,
            login_token: None,
            pending_user: None,
            known: HashSet::new(),
            channel_pts: HashMap::new(),
        });
        id
    }

    pub fn key_user(&self, key_id: i64) -> Option<i64> {
        self.keys.get(&key_id).and_then(|k| k.user)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn create_user(
        &mut self,
        first_name: &str,
        last_name: Option<&str>,
        username: Option<&str>,
        phone: Option<&str>,
        bot: bool,
        password: Option<SrpVerifier>,
        hint: Option<String>,
    ) -> Result<i64, RpcErr> {
        if let Some(phone) = phone
            && self.user_by_phone(phone).is_some()
        {
            return Err(RpcErr::bad("PHONE_NUMBER_OCCUPIED"));
        }
        if let Some(name) = username
            && self.resolve_username(name).is_some()
        {
            return Err(RpcErr::bad("USERNAME_OCCUPIED"));
        }
        self.next_user += 1;
        let id = self.next_user;
        self.users.insert(
            id,
            UserRec {
                id,
                first_name: first_name.to_owned(),
                last_name: last_name.map(str::to_owned),
                username: username.map(str::to_owned),
                phone: phone.map(normalize_phone),
                bot,
                password,
                hint,
                // Telegram's pts starts at 1; 0 would mean "no state" to clients.
                mbox: MsgBox {
                    pts: 1,
                    ..MsgBox::default()
                },
                seq: 0,
                qts: 0,
                qts_log: Vec::new(),
                online: false,
                read_inbox: HashMap::new(),
                read_outbox: HashMap::new(),
            },
        );
        Ok(id)
    }

    pub fn user_by_phone(&self, phone: &str) -> Option<i64> {
        let phone = normalize_phone(phone);
        self.users
            .values()
            .find(|u| u.phone.as_deref() == Some(phone.as_str()))
            .map(|u| u.id)
    }

    pub fn resolve_username(&self, name: &str) -> Option<PeerKey> {
        let name = name.trim_start_matches('@').to_lowercase();
        if let Some(u) = self
            .users
            .values()
            .find(|u| u.username.as_deref().map(str::to_lowercase) == Some(name.clone()))
        {
            return Some(PeerKey::User(u.id));
        }
        self.channels
            .values()
            .find(|c| c.username.as_deref().map(str::to_lowercase) == Some(name.clone()))
            .map(|c| PeerKey::Channel(c.id))
    }

    pub fn user(&self, id: i64) -> Result<&UserRec, RpcErr> {
        self.users
            .get(&id)
            .ok_or_else(|| RpcErr::bad("USER_ID_INVALID"))
    }

    pub fn user_mut(&mut self, id: i64) -> Result<&mut UserRec, RpcErr> {
        self.users
            .get_mut(&id)
            .ok_or_else(|| RpcErr::bad("USER_ID_INVALID"))
    }

    pub fn channel(&self, id: i64) -> Result<&ChannelRec, RpcErr> {
        self.channels
            .get(&id)
            .ok_or_else(|| RpcErr::bad("CHANNEL_INVALID"))
    }

    pub fn create_chat(
        &mut self,
        creator: i64,
        title: &str,
        members: &[i64],
        admins: &[i64],
    ) -> Result<i64, RpcErr> {
        self.user(creator)?;
        for m in members {
            self.user(*m)?;
        }
        self.next_chat += 1;
        let id = self.next_chat;
        let mut all = vec![creator];
        all.extend(members.iter().copied().filter(|m| *m != creator));
        self.chats.insert(
            id,
            ChatRec {
                id,
                title: title.to_owned(),
                about: String::new(),
                photo: None,
                creator,
                members: all.clone(),
                admins: admins.iter().copied().collect(),
                date: now(),
            },
        );
        let action = grammers_tl_types::enums::MessageAction::ChatCreate(
            grammers_tl_types::types::MessageActionChatCreate {
                title: title.to_owned(),
                users: all,
            },
        );
        self.send(
            creator,
            PeerKey::Chat(id),
            Content {
                action: Some(action),
                ..Content::default()
            },
            None,
        )?;
        Ok(id)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn create_channel(
        &mut self,
        creator: i64,
        title: &str,
        username: Option<&str>,
        broadcast: bool,
        forum: bool,
        members: &[i64],
        admins: &[i64],
    ) -> Result<i64, RpcErr> {
        self.user(creator)?;
        for m in members {
            self.user(*m)?;
        }
        self.next_channel += 1;
        let id = self.next_channel;
        let mut all: BTreeSet<i64> = members.iter().copied().collect();
        all.insert(creator);
        let mut admin_set: BTreeSet<i64> = admins.iter().copied().collect();
        admin_set.insert(creator);
        let mut ch = ChannelRec {
            id,
            title: title.to_owned(),
            about: String::new(),
            photo: None,
            username: username.map(str::to_owned),
            broadcast,
            forum,
            creator,
            members: all,
            admins: admin_set,
            mbox: MsgBox::default(),
            topics: Vec::new(),
            read_inbox: HashMap::new(),
            date: now(),
        };
        // channelCreate service message is message 1 (pts 1), as on Telegram.
        let link = self.alloc_link();
        let msg_id = ch.mbox.alloc_id();
        ch.mbox.messages.insert(
            msg_id,
            Msg {
                id: msg_id,
                peer: PeerKey::Channel(id),
                from: Some(creator),
                out: false,
                date: now(),
                text: String::new(),
                entities: Vec::new(),
                reply_to: None,
                top_id: None,
                media: None,
                action: Some(grammers_tl_types::enums::MessageAction::ChannelCreate(
                    grammers_tl_types::types::MessageActionChannelCreate {
                        title: title.to_owned(),
                    },
                )),
                edit_date: None,
                reactions: Vec::new(),
                link,
            },
        );
        ch.mbox.log(1, Logged::NewMessage(msg_id));
        self.links.insert(link, vec![(BoxRef::Channel(id), msg_id)]);
        self.channels.insert(id, ch);
        Ok(id)
    }

    /// Creates a forum topic: its id is the id of its `messageActionTopicCreate` service message.
    pub fn create_topic(&mut self, channel: i64, from: i64, title: &str) -> Result<i32, RpcErr> {
        let ch = self.channel(channel)?;
        if !ch.forum {
            return Err(RpcErr::bad("CHANNEL_FORUM_MISSING"));
        }
        let action = grammers_tl_types::enums::MessageAction::TopicCreate(
            grammers_tl_types::types::MessageActionTopicCreate {
                title_missing: false,
                title: title.to_owned(),
                icon_color: 0x6FB9F0,
                icon_emoji_id: None,
            },
        );
        let sent = self.send(
            from,
            PeerKey::Channel(channel),
            Content {
                action: Some(action),
                ..Content::default()
            },
            None,
        )?;
        let id = sent.sender_id;
        if let Some(ch) = self.channels.get_mut(&channel) {
            ch.topics.push(Topic {
                id,
                title: title.to_owned(),
                date: now(),
                from,
            });
        }
        Ok(id)
    }

    fn alloc_link(&mut self) -> u64 {
        self.next_link += 1;
        self.next_link
    }

    /// Members whose boxes receive a message sent to `peer` by `from` (private and basic chats).
    fn recipients(&self, from: i64, peer: PeerKey) -> Result<Vec<(i64, PeerKey)>, RpcErr> {
        match peer {
            PeerKey::User(to) => {
                self.user(to)?;
                if to == from {
                    Ok(vec![(from, PeerKey::User(from))])
                } else {
                    Ok(vec![(from, PeerKey::User(to)), (to, PeerKey::User(from))])
                }
            }
            PeerKey::Chat(chat) => {
                let c = self
                    .chats
                    .get(&chat)
                    .ok_or_else(|| RpcErr::bad("CHAT_ID_INVALID"))?;
                if !c.members.contains(&from) {
                    return Err(RpcErr::new(403, "CHAT_WRITE_FORBIDDEN"));
                }
                Ok(c.members
                    .iter()
                    .map(|m| (*m, PeerKey::Chat(chat)))
                    .collect())
            }
            PeerKey::Channel(_) => Ok(Vec::new()),
        }
    }

    /// Finds the copy of a linked message in another box.
    pub fn copy_in(&self, link: u64, target: BoxRef) -> Option<i32> {
        self.links
            .get(&link)?
            .iter()
            .find(|(b, _)| *b == target)
            .map(|(_, id)| *id)
    }

    pub fn msg(&self, at: BoxRef, id: i32) -> Option<&Msg> {
        match at {
            BoxRef::User(u) => self.users.get(&u)?.mbox.messages.get(&id),
            BoxRef::Channel(c) => self.channels.get(&c)?.mbox.messages.get(&id),
        }
    }

    fn msg_mut(&mut self, at: BoxRef, id: i32) -> Option<&mut Msg> {
        match at {
            BoxRef::User(u) => self.users.get_mut(&u)?.mbox.messages.get_mut(&id),
            BoxRef::Channel(c) => self.channels.get_mut(&c)?.mbox.messages.get_mut(&id),
        }
    }

    fn mbox_mut(&mut self, at: BoxRef) -> Option<&mut MsgBox> {
        match at {
            BoxRef::User(u) => Some(&mut self.users.get_mut(&u)?.mbox),
            BoxRef::Channel(c) => Some(&mut self.channels.get_mut(&c)?.mbox),
        }
    }

    /// The box that holds `viewer`'s copy of messages in `peer`.
    pub fn box_of(viewer: i64, peer: PeerKey) -> BoxRef {
        match peer {
            PeerKey::Channel(c) => BoxRef::Channel(c),
            _ => BoxRef::User(viewer),
        }
    }

    /// Sends a message from `from` into `peer` (as `from` names it) and pushes the updates.
    /// `origin` is the connection that asked, which gets its own update in the RPC result.
    pub fn send(
        &mut self,
        from: i64,
        peer: PeerKey,
        content: Content,
        origin: Option<u64>,
    ) -> Result<Sent, RpcErr> {
        let link = self.alloc_link();
        let date = now();
        let sender_box = Self::box_of(from, peer);
        let reply_link = content
            .reply_to
            .and_then(|r| self.msg(sender_box, r))
            .map(|m| m.link);
        if content.reply_to.is_some() && reply_link.is_none() {
            return Err(RpcErr::bad("REPLY_MESSAGE_ID_INVALID"));
        }
        if let PeerKey::Channel(c) = peer {
            let ch = self.channel(c)?;
            if !ch.members.contains(&from) {
                return Err(RpcErr::new(403, "CHANNEL_PRIVATE"));
            }
            if ch.broadcast && !ch.admins.contains(&from) {
                return Err(RpcErr::new(403, "CHAT_WRITE_FORBIDDEN"));
            }
            if let Some(top) = content.top_id
                && !ch.topics.iter().any(|t| t.id == top)
            {
                return Err(RpcErr::bad("TOPIC_ID_INVALID"));
            }
            let members: Vec<i64> = ch.members.iter().copied().collect();
            let chm = self
                .channels
                .get_mut(&c)
                .ok_or_else(|| RpcErr::bad("CHANNEL_INVALID"))?;
            let id = chm.mbox.alloc_id();
            chm.mbox.messages.insert(
                id,
                Msg {
                    id,
                    peer,
                    from: Some(from),
                    out: false,
                    date,
                    text: content.text.clone(),
                    entities: content.entities.clone(),
                    reply_to: content.reply_to,
                    top_id: content.top_id,
                    media: content.media.clone(),
                    action: content.action.clone(),
                    edit_date: None,
                    reactions: Vec::new(),
                    link,
                },
            );
            let pts = chm.mbox.log(1, Logged::NewMessage(id));
            self.links.insert(link, vec![(BoxRef::Channel(c), id)]);
            for m in members {
                if m == from && origin.is_some() {
                    continue;
                }
                let update = super::tl::channel_new_message(self, m, c, id, pts);
                self.push_updates(m, vec![update], false, origin);
            }
            return Ok(Sent {
                sender_id: id,
                pts,
                date,
                copies: vec![(from, id)],
            });
        }
        let recipients = self.recipients(from, peer)?;
        let mut copies = Vec::new();
        let mut sender_id = 0;
        let mut sender_pts = 0;
        for (owner, owner_peer) in &recipients {
            let reply_to = match reply_link {
                Some(l) => self.copy_in(l, BoxRef::User(*owner)),
                None => None,
            };
            let u = self.user_mut(*owner)?;
            let id = u.mbox.alloc_id();
            u.mbox.messages.insert(
                id,
                Msg {
                    id,
                    peer: *owner_peer,
                    from: Some(from),
                    out: *owner == from,
                    date,
                    text: content.text.clone(),
                    entities: content.entities.clone(),
                    reply_to,
                    top_id: None,
                    media: content.media.clone(),
                    action: content.action.clone(),
                    edit_date: None,
                    reactions: Vec::new(),
                    link,
                },
            );
            let pts = u.mbox.log(1, Logged::NewMessage(id));
            copies.push((*owner, id));
            if *owner == from {
                sender_id = id;
                sender_pts = pts;
            }
        }
        self.links.insert(
            link,
            copies
                .iter()
                .map(|(o, id)| (BoxRef::User(*o), *id))
                .collect(),
        );
        for (owner, id) in &copies {
            if *owner == from && origin.is_some() {
                continue;
            }
            let pts = self
                .users
                .get(owner)
                .and_then(|u| u.mbox.log.last())
                .map(|e| e.pts)
                .unwrap_or(0);
            let short = *owner != from
                && matches!(peer, PeerKey::User(_))
                && content.media.is_none()
                && content.action.is_none();
            if short {
                self.push_short_message(*owner, from, *id, pts, origin);
            } else {
                let update = super::tl::new_message_update(self, *owner, *id, pts);
                self.push_updates(*owner, vec![update], *owner != from, origin);
            }
        }
        Ok(Sent {
            sender_id,
            pts: sender_pts,
            date,
            copies,
        })
    }

    /// Edits `id` (in `editor`'s view of `peer`) everywhere it was delivered.
    pub fn edit(
        &mut self,
        editor: i64,
        peer: PeerKey,
        id: i32,
        text: Option<String>,
        entities: Option<Vec<grammers_tl_types::enums::MessageEntity>>,
        origin: Option<u64>,
    ) -> Result<i32, RpcErr> {
        let at = Self::box_of(editor, peer);
        let msg = self
            .msg(at, id)
            .ok_or_else(|| RpcErr::bad("MESSAGE_ID_INVALID"))?;
        if msg.from != Some(editor) {
            return Err(RpcErr::new(403, "MESSAGE_AUTHOR_REQUIRED"));
        }
        let link = msg.link;
        let copies = self.links.get(&link).cloned().unwrap_or_default();
        let date = now();
        let mut editor_pts = 0;
        for (b, mid) in copies {
            if let Some(m) = self.msg_mut(b, mid) {
                // As on Telegram: a new text without entities is plain text.
                if let Some(t) = &text {
                    m.text = t.clone();
                    m.entities = entities.clone().unwrap_or_default();
                } else if let Some(e) = &entities {
                    m.entities = e.clone();
                }
                m.edit_date = Some(date);
            }
            let Some(mbox) = self.mbox_mut(b) else {
                continue;
            };
            let pts = mbox.log(1, Logged::EditMessage(mid));
            match b {
                BoxRef::User(owner) => {
                    if owner == editor {
                        editor_pts = pts;
                        if origin.is_some() {
                            continue;
                        }
                    }
                    let up = super::tl::edit_update(self, owner, b, mid, pts);
                    self.push_updates(owner, vec![up], owner != editor, origin);
                }
                BoxRef::Channel(c) => {
                    editor_pts = pts;
                    let members: Vec<i64> = self
                        .channels
                        .get(&c)
                        .map(|ch| ch.members.iter().copied().collect())
                        .unwrap_or_default();
                    for m in members {
                        if m == editor && origin.is_some() {
                            continue;
                        }
                        let up = super::tl::edit_update(self, m, b, mid, pts);
                        self.push_updates(m, vec![up], false, origin);
                    }
                }
            }
        }
        Ok(editor_pts)
    }

    /// Deletes messages (ids in `actor`'s view of `peer`) for everyone; returns actor's pts.
    pub fn delete(
        &mut self,
        actor: i64,
        peer: PeerKey,
        ids: &[i32],
        origin: Option<u64>,
    ) -> Result<(i32, i32), RpcErr> {
        let at = Self::box_of(actor, peer);
        let mut per_box: HashMap<BoxRef, Vec<i32>> = HashMap::new();
        for id in ids {
            let Some(m) = self.msg(at, *id) else { continue };
            if let PeerKey::Channel(c) = peer {
                let ch = self.channel(c)?;
                if m.from != Some(actor) && !ch.admins.contains(&actor) {
                    return Err(RpcErr::new(403, "MESSAGE_DELETE_FORBIDDEN"));
                }
            }
            for (b, mid) in self.links.get(&m.link).cloned().unwrap_or_default() {
                per_box.entry(b).or_default().push(mid);
            }
        }
        let mut actor_pts = (self.box_pts(at), 0);
        for (b, mids) in per_box {
            let Some(mbox) = self.mbox_mut(b) else {
                continue;
            };
            for mid in &mids {
                mbox.messages.remove(mid);
            }
            let count = mids.len() as i32;
            let pts = mbox.log(count, Logged::Delete(mids.clone()));
            if b == at {
                actor_pts = (pts, count);
            }
            let viewers: Vec<i64> = match b {
                BoxRef::User(u) => vec![u],
                BoxRef::Channel(c) => self
                    .channels
                    .get(&c)
                    .map(|ch| ch.members.iter().copied().collect())
                    .unwrap_or_default(),
            };
            for v in viewers {
                if v == actor && origin.is_some() {
                    continue;
                }
                let up = super::tl::delete_update(b, &mids, pts, count);
                let seq = matches!(b, BoxRef::User(_)) && v != actor;
                self.push_updates(v, vec![up], seq, origin);
            }
        }
        Ok(actor_pts)
    }

    pub fn box_pts(&self, at: BoxRef) -> i32 {
        match at {
            BoxRef::User(u) => self.users.get(&u).map(|u| u.mbox.pts).unwrap_or(0),
            BoxRef::Channel(c) => self.channels.get(&c).map(|c| c.mbox.pts).unwrap_or(0),
        }
    }

    /// Sets (or with `None` removes) `actor`'s reaction; pushes updateMessageReactions.
    pub fn react(
        &mut self,
        actor: i64,
        peer: PeerKey,
        id: i32,
        emoji: Option<String>,
        origin: Option<u64>,
    ) -> Result<(), RpcErr> {
        let at = Self::box_of(actor, peer);
        let link = self
            .msg(at, id)
            .ok_or_else(|| RpcErr::bad("MESSAGE_ID_INVALID"))?
            .link;
        for (b, mid) in self.links.get(&link).cloned().unwrap_or_default() {
            if let Some(m) = self.msg_mut(b, mid) {
                m.reactions.retain(|(u, _)| *u != actor);
                if let Some(e) = &emoji {
                    m.reactions.push((actor, e.clone()));
                }
            }
            let viewers: Vec<i64> = match b {
                BoxRef::User(u) => vec![u],
                BoxRef::Channel(c) => self
                    .channels
                    .get(&c)
                    .map(|ch| ch.members.iter().copied().collect())
                    .unwrap_or_default(),
            };
            for v in viewers {
                if v == actor && origin.is_some() {
                    continue;
                }
                if let Some(up) = super::tl::reactions_update(self, v, b, mid) {
                    self.push_short(v, up, origin);
                }
            }
        }
        Ok(())
    }

    /// `voter` votes for answer `option` (0-based) of the poll in message `id` (in the voter's
    /// ids): every copy's results change and every holder gets `updateMessagePoll`.
    pub fn vote(&mut self, voter: i64, peer: PeerKey, id: i32, option: u8) -> Result<(), RpcErr> {
        use grammers_tl_types::{enums, types};
        let at = Self::box_of(voter, peer);
        let link = self
            .msg(at, id)
            .ok_or_else(|| RpcErr::bad("MESSAGE_ID_INVALID"))?
            .link;
        let mut pushes = Vec::new();
        for (b, mid) in self.links.get(&link).cloned().unwrap_or_default() {
            let Some(m) = self.msg_mut(b, mid) else {
                continue;
            };
            let Some(enums::MessageMedia::Poll(poll)) = &mut m.media else {
                return Err(RpcErr::bad("MESSAGE_POLL_CLOSED"));
            };
            let enums::Poll::Poll(p) = &poll.poll;
            let poll_id = p.id;
            if usize::from(option) >= p.answers.len() {
                return Err(RpcErr::bad("OPTION_INVALID"));
            }
            let enums::PollResults::Results(results) = &mut poll.results;
            let list = results.results.get_or_insert_with(Vec::new);
            match list.iter_mut().find_map(|r| {
                let enums::PollAnswerVoters::Voters(r) = r;
                (r.option == [option]).then_some(r)
            }) {
                Some(r) => r.voters = Some(r.voters.unwrap_or(0) + 1),
                None => list.push(enums::PollAnswerVoters::Voters(types::PollAnswerVoters {
                    chosen: false,
                    correct: false,
                    option: vec![option],
                    voters: Some(1),
                    // Layer 230 puts voters and recent_voters under one flag bit.
                    recent_voters: Some(Vec::new()),
                })),
            }
            results.total_voters = Some(results.total_voters.unwrap_or(0) + 1);
            let update = enums::Update::MessagePoll(types::UpdateMessagePoll {
                peer: None,
                msg_id: None,
                top_msg_id: None,
                poll_id,
                poll: None,
                results: enums::PollResults::Results(results.clone()),
            });
            let viewers: Vec<i64> = match b {
                BoxRef::User(u) => vec![u],
                BoxRef::Channel(c) => self
                    .channels
                    .get(&c)
                    .map(|ch| ch.members.iter().copied().collect())
                    .unwrap_or_default(),
            };
            pushes.extend(viewers.into_iter().map(|v| (v, update.clone())));
        }
        for (viewer, update) in pushes {
            self.push_short(viewer, update, None);
        }
        Ok(())
    }

    /// `reader` has read `peer` up to `max_id` (in the reader's ids).
    pub fn read(
        &mut self,
        reader: i64,
        peer: PeerKey,
        max_id: i32,
        origin: Option<u64>,
    ) -> Result<(i32, i32), RpcErr> {
        match peer {
            PeerKey::Channel(c) => {
                let ch = self
                    .channels
                    .get_mut(&c)
                    .ok_or_else(|| RpcErr::bad("CHANNEL_INVALID"))?;
                ch.read_inbox.insert(reader, max_id);
                let pts = ch.mbox.pts;
                let senders: BTreeSet<i64> = ch
                    .mbox
                    .messages
                    .range(..=max_id)
                    .filter_map(|(_, m)| m.from)
                    .filter(|f| *f != reader)
                    .collect();
                for s in senders {
                    let up = grammers_tl_types::enums::Update::ReadChannelOutbox(
                        grammers_tl_types::types::UpdateReadChannelOutbox {
                            channel_id: c,
                            max_id,
                        },
                    );
                    self.push_short(s, up, origin);
                }
                Ok((pts, 0))
            }
            _ => {
                let u = self.user_mut(reader)?;
                u.read_inbox.insert(peer, max_id);
                let pts = u.mbox.log(1, Logged::ReadInbox { peer, max_id });
                if origin.is_none() {
                    let up = super::tl::read_inbox_update(peer, max_id, pts);
                    self.push_updates(reader, vec![up], true, origin);
                }
                // The other side learns its messages were read (read_outbox in its own ids).
                let links: Vec<u64> = self
                    .user(reader)?
                    .mbox
                    .messages
                    .range(..=max_id)
                    .filter(|(_, m)| m.peer == peer && !m.out)
                    .map(|(_, m)| m.link)
                    .collect();
                let mut outbox: HashMap<i64, (PeerKey, i32)> = HashMap::new();
                for l in links {
                    for (b, mid) in self.links.get(&l).cloned().unwrap_or_default() {
                        let BoxRef::User(owner) = b else { continue };
                        if owner == reader {
                            continue;
                        }
                        let Some(m) = self.msg(b, mid) else { continue };
                        if !m.out {
                            continue;
                        }
                        let e = outbox.entry(owner).or_insert((m.peer, 0));
                        e.1 = e.1.max(mid);
                    }
                }
                for (owner, (opeer, omax)) in outbox {
                    let Ok(o) = self.user_mut(owner) else {
                        continue;
                    };
                    o.read_outbox.insert(opeer, omax);
                    let opts = o.mbox.log(
                        1,
                        Logged::ReadOutbox {
                            peer: opeer,
                            max_id: omax,
                        },
                    );
                    let up = super::tl::read_outbox_update(opeer, omax, opts);
                    self.push_updates(owner, vec![up], true, origin);
                }
                Ok((pts, 1))
            }
        }
    }

    /// Pushes a typing notification from `actor` in `peer` to the others.
    pub fn typing(
        &mut self,
        actor: i64,
        peer: PeerKey,
        top_id: Option<i32>,
        action: grammers_tl_types::enums::SendMessageAction,
        origin: Option<u64>,
    ) -> Result<(), RpcErr> {
        use grammers_tl_types::{enums, types};
        match peer {
            PeerKey::User(to) => {
                self.user(to)?;
                let up = enums::Update::UserTyping(types::UpdateUserTyping {
                    user_id: actor,
                    top_msg_id: None,
                    action,
                });
                self.push_short(to, up, origin);
            }
            PeerKey::Chat(c) => {
                let members = self
                    .chats
                    .get(&c)
                    .map(|ch| ch.members.clone())
                    .ok_or_else(|| RpcErr::bad("CHAT_ID_INVALID"))?;
                for m in members.into_iter().filter(|m| *m != actor) {
                    let up = enums::Update::ChatUserTyping(types::UpdateChatUserTyping {
                        chat_id: c,
                        from_id: enums::Peer::User(types::PeerUser { user_id: actor }),
                        action: action.clone(),
                    });
                    self.push_short(m, up, origin);
                }
            }
            PeerKey::Channel(c) => {
                let members: Vec<i64> = self.channel(c)?.members.iter().copied().collect();
                for m in members.into_iter().filter(|m| *m != actor) {
                    let up = enums::Update::ChannelUserTyping(types::UpdateChannelUserTyping {
                        channel_id: c,
                        top_msg_id: top_id,
                        from_id: enums::Peer::User(types::PeerUser { user_id: actor }),
                        action: action.clone(),
                    });
                    self.push_short(m, up, origin);
                }
            }
        }
        Ok(())
    }

    /// Sets a user's online status and tells everyone who shares a chat with them.
    pub fn set_online(&mut self, user: i64, online: bool) -> Result<(), RpcErr> {
        use grammers_tl_types::{enums, types};
        self.user_mut(user)?.online = online;
        let status = super::tl::user_status(online);
        let others: Vec<i64> = self.users.keys().copied().filter(|u| *u != user).collect();
        for o in others {
            let up = enums::Update::UserStatus(types::UpdateUserStatus {
                user_id: user,
                status: status.clone(),
            });
            self.push_short(o, up, None);
        }
        Ok(())
    }

    /// Notes that `key`'s client knows channel `channel` up to `pts`.
    pub fn saw_channel(&mut self, key: i64, channel: i64, pts: i32) {
        if let Some(k) = self.keys.get_mut(&key) {
            let known = k.channel_pts.entry(channel).or_insert(0);
            *known = (*known).max(pts);
        }
    }

    /// The answer to a change `key`'s client made in `peer` carried the channel's new pts.
    pub fn saw_own_change(&mut self, key: i64, peer: PeerKey) {
        if let PeerKey::Channel(c) = peer
            && let Some(pts) = self.channels.get(&c).map(|ch| ch.mbox.pts)
        {
            self.saw_channel(key, c, pts);
        }
    }

    /// The channels of `user` that `key`'s client is behind on, with the pts it last had
    /// (0: it never saw the channel): `updateChannelTooLong` for each.
    pub fn channels_behind(&self, key: i64, user: i64) -> Vec<(i64, i32)> {
        let known = self.keys.get(&key).map(|k| &k.channel_pts);
        self.channels
            .values()
            .filter(|c| c.members.contains(&user))
            .filter_map(|c| {
                let had = known.and_then(|k| k.get(&c.id)).copied().unwrap_or(0);
                (had < c.mbox.pts).then_some((c.id, had))
            })
            .collect()
    }

    /// A user stopped (or restarted) a bot: `updateBotStopped` in the bot's qts sequence.
    pub fn bot_stopped(&mut self, user: i64, bot: i64, stopped: bool) -> Result<i32, RpcErr> {
        use grammers_tl_types::{enums, types};
        self.user(user)?;
        let b = self.user_mut(bot)?;
        if !b.bot {
            return Err(RpcErr::bad("BOT_INVALID"));
        }
        b.qts += 1;
        let qts = b.qts;
        let update = enums::Update::BotStopped(types::UpdateBotStopped {
            user_id: user,
            date: now(),
            stopped,
            qts,
        });
        b.qts_log.push((qts, update.clone()));
        self.push_updates(bot, vec![update], false, None);
        Ok(qts)
    }

    /// Connections bound to `user` (optionally except one).
    fn conns_of(&self, user: i64, except: Option<u64>) -> Vec<u64> {
        self.conns
            .iter()
            .filter(|(id, c)| Some(**id) != except && self.key_user(c.key_id) == Some(user))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Pushes an `updates` envelope; `with_seq` gives it the account's next seq.
    pub fn push_updates(
        &mut self,
        user: i64,
        updates: Vec<grammers_tl_types::enums::Update>,
        with_seq: bool,
        except: Option<u64>,
    ) {
        use grammers_tl_types::Serializable as _;
        let seq = if with_seq {
            match self.users.get_mut(&user) {
                Some(u) => {
                    u.seq += 1;
                    u.seq
                }
                None => 0,
            }
        } else {
            0
        };
        let (users, chats) = super::tl::everything_for(self, user);
        let env = grammers_tl_types::enums::Updates::Updates(grammers_tl_types::types::Updates {
            updates,
            users,
            chats,
            date: now(),
            seq,
        });
        let bytes = env.to_bytes();
        let grammers_tl_types::enums::Updates::Updates(env) = env else {
            return;
        };
        let channel_pts: Vec<(i64, i32)> = env.updates.iter().filter_map(channel_pts_of).collect();
        let everyone: Vec<i64> = self.users.keys().copied().collect();
        for c in self.conns_of(user, except) {
            let Some(conn) = self.conns.get(&c) else {
                continue;
            };
            let _ = conn.tx.send(ConnCmd::Push(bytes.clone()));
            let key_id = conn.key_id;
            if let Some(k) = self.keys.get_mut(&key_id) {
                k.known.extend(everyone.iter().copied());
            }
            for (channel, pts) in &channel_pts {
                self.saw_channel(key_id, *channel, *pts);
            }
        }
    }

    /// Pushes a private text message as Telegram does: `updateShortMessage` (pts, no seq, no
    /// user objects) to clients that already know the sender, a full `updates` to the others.
    fn push_short_message(
        &mut self,
        owner: i64,
        from: i64,
        id: i32,
        pts: i32,
        except: Option<u64>,
    ) {
        use grammers_tl_types::{Serializable as _, enums, types};
        let Some(m) = self.msg(BoxRef::User(owner), id).cloned() else {
            return;
        };
        let short = enums::Updates::UpdateShortMessage(types::UpdateShortMessage {
            out: false,
            mentioned: false,
            media_unread: false,
            silent: false,
            id,
            user_id: from,
            message: m.text.clone(),
            pts,
            pts_count: 1,
            date: m.date,
            fwd_from: None,
            via_bot_id: None,
            reply_to: m.reply_to.map(|r| {
                enums::MessageReplyHeader::Header(types::MessageReplyHeader {
                    reply_to_msg_id: Some(r),
                    ..super::tl_defaults::reply_header()
                })
            }),
            entities: (!m.entities.is_empty()).then(|| m.entities.clone()),
            ttl_period: None,
        })
        .to_bytes();
        let full = {
            let (users, chats) = super::tl::everything_for(self, owner);
            enums::Updates::Updates(types::Updates {
                updates: vec![super::tl::new_message_update(self, owner, id, pts)],
                users,
                chats,
                date: now(),
                // Not every connection gets this envelope, so it takes no seq.
                seq: 0,
            })
            .to_bytes()
        };
        let everyone: Vec<i64> = self.users.keys().copied().collect();
        for c in self.conns_of(owner, except) {
            let Some(conn) = self.conns.get(&c) else {
                continue;
            };
            let key_id = conn.key_id;
            let knows = self
                .keys
                .get(&key_id)
                .is_some_and(|k| k.known.contains(&from));
            let _ = conn.tx.send(ConnCmd::Push(if knows {
                short.clone()
            } else {
                full.clone()
            }));
            if !knows && let Some(k) = self.keys.get_mut(&key_id) {
                k.known.extend(everyone.iter().copied());
            }
        }
    }

    /// Pushes an `updateShort` (no pts, no seq: typing, status, reactions).
    pub fn push_short(
        &mut self,
        user: i64,
        update: grammers_tl_types::enums::Update,
        except: Option<u64>,
    ) {
        use grammers_tl_types::Serializable as _;
        let env =
            grammers_tl_types::enums::Updates::UpdateShort(grammers_tl_types::types::UpdateShort {
                update,
                date: now(),
            });
        let bytes = env.to_bytes();
        for c in self.conns_of(user, except) {
            if let Some(conn) = self.conns.get(&c) {
                let _ = conn.tx.send(ConnCmd::Push(bytes.clone()));
            }
        }
    }

    /// Closes every connection (or those of one user).
    pub fn drop_connections(&mut self, user: Option<i64>) -> usize {
        let ids: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| user.is_none() || self.key_user(c.key_id) == user)
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            if let Some(c) = self.conns.remove(id) {
                let _ = c.tx.send(ConnCmd::Close);
            }
        }
        ids.len()
    }

    /// Consumes one injected FLOOD_WAIT for `method` (a TL name like `messages.sendMessage`).
    pub fn take_flood(&mut self, method: &str) -> Option<i32> {
        let rule = self
            .floods
            .iter_mut()
            .find(|r| r.method == method && r.remaining > 0)?;
        rule.remaining -= 1;
        let secs = rule.seconds;
        self.floods.retain(|r| r.remaining > 0);
        Some(secs)
    }

    pub fn add_file(&mut self, bytes: Vec<u8>, mime_type: String, name: String) -> i64 {
        self.next_file += 1;
        let id = self.next_file;
        self.files.insert(
            id,
            FileRec {
                access_hash: access_hash(id),
                bytes,
                mime_type,
                name,
                reference: vec![1],
                thumb: None,
                attributes: Vec::new(),
            },
        );
        id
    }

    /// Makes every file reference handed out so far stale (`FILE_REFERENCE_EXPIRED` on
    /// download); messages fetched again carry the new one. Returns how many files changed.
    pub fn expire_file_references(&mut self) -> usize {
        self.expire_on_download = false;
        for file in self.files.values_mut() {
            let next = file.reference.first().copied().unwrap_or(0).wrapping_add(1);
            file.reference = vec![next];
        }
        self.files.len()
    }

    /// Records what an account sent through MTProto, for the control API.
    pub fn record(&mut self, rec: SentRecord) {
        self.sent.push(rec);
    }
}

/// Result of [`World::send`].
#[derive(Debug, Clone)]
pub struct Sent {
    pub sender_id: i32,
    pub pts: i32,
    pub date: i32,
    /// (owner, message id in the owner's box) for private chats and basic groups.
    pub copies: Vec<(i64, i32)>,
}

/// The (channel, pts) a pushed update carries, if it is a channel's pts update.
fn channel_pts_of(update: &grammers_tl_types::enums::Update) -> Option<(i64, i32)> {
    use grammers_tl_types::enums::{Message, Peer, Update};
    let channel_of = |m: &Message| match m {
        Message::Message(m) => Some(m.peer_id.clone()),
        Message::Service(m) => Some(m.peer_id.clone()),
        Message::Empty(m) => m.peer_id.clone(),
    };
    match update {
        Update::NewChannelMessage(u) => match channel_of(&u.message)? {
            Peer::Channel(c) => Some((c.channel_id, u.pts)),
            _ => None,
        },
        Update::EditChannelMessage(u) => match channel_of(&u.message)? {
            Peer::Channel(c) => Some((c.channel_id, u.pts)),
            _ => None,
        },
        Update::DeleteChannelMessages(u) => Some((u.channel_id, u.pts)),
        _ => None,
    }
}

pub fn normalize_phone(phone: &str) -> String {
    phone.chars().filter(char::is_ascii_digit).collect()
}
