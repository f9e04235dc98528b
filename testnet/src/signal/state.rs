//! The simulated world behind the daemon: Signal users, the daemon's linked accounts, groups,
//! stored attachments, pending device links, open connections and receive subscriptions, and
//! each account's queue of envelopes still "on the server".
//!
//! Everything lives under one mutex that is never held across an await, so deliveries are
//! written to the connections' channels in queue order.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::util;

/// What signal-cli version the simulator claims to be.
pub(crate) const VERSION: &str = "0.13.19";

/// signal-cli's `--receive-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReceiveMode {
    /// `manual`: nothing is received until a client calls `subscribeReceive`; messages wait on
    /// the server meanwhile. What ferry uses, and the simulator's default.
    #[default]
    Manual,
    /// `on-start` (signal-cli's default): every connection gets every account's messages
    /// without subscribing; messages arriving while nobody is connected are lost.
    OnStart,
    /// `on-connection`: like on-start, but messages wait while nobody is connected.
    OnConnection,
}

impl ReceiveMode {
    /// Parses the CLI spelling (`manual`, `on-start`, `on-connection`).
    pub fn parse(text: &str) -> Option<ReceiveMode> {
        match text {
            "manual" => Some(ReceiveMode::Manual),
            "on-start" => Some(ReceiveMode::OnStart),
            "on-connection" => Some(ReceiveMode::OnConnection),
            _ => None,
        }
    }
}

/// A Signal user somewhere on the network (contacts, and the accounts themselves).
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub number: String,
    pub uuid: String,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub about: Option<String>,
    pub about_emoji: Option<String>,
    pub avatar: Option<Vec<u8>>,
    pub identity_key: Vec<u8>,
    pub registered: bool,
    pub profile_updated: i64,
}

impl User {
    pub fn new(number: &str, uuid: Option<String>, now: i64) -> User {
        User {
            number: number.to_owned(),
            uuid: uuid.unwrap_or_else(util::uuid_v4),
            given_name: None,
            family_name: None,
            about: None,
            about_emoji: None,
            avatar: None,
            identity_key: util::identity_key(),
            registered: true,
            profile_updated: now,
        }
    }

    /// The profile display name (`given family`), if any.
    pub fn display_name(&self) -> Option<String> {
        let name = [self.given_name.as_deref(), self.family_name.as_deref()]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        (!name.is_empty()).then_some(name)
    }

    /// `{"uuid","number","username"}` as in send results.
    pub fn recipient_address(&self) -> Value {
        json!({"uuid": self.uuid, "number": self.number, "username": null})
    }
}

/// signal-cli's identity trust levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TrustLevel {
    Untrusted,
    TrustedUnverified,
    TrustedVerified,
}

impl TrustLevel {
    pub fn name(self) -> &'static str {
        match self {
            TrustLevel::Untrusted => "UNTRUSTED",
            TrustLevel::TrustedUnverified => "TRUSTED_UNVERIFIED",
            TrustLevel::TrustedVerified => "TRUSTED_VERIFIED",
        }
    }
}

/// An account's record of another user's identity key.
#[derive(Debug, Clone)]
pub(crate) struct IdentityRecord {
    pub key: Vec<u8>,
    pub trust: TrustLevel,
    pub added: i64,
}

/// An account's address-book entry for a user.
#[derive(Debug, Clone, Default)]
pub(crate) struct ContactRecord {
    pub name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub note: Option<String>,
    pub blocked: bool,
    pub hidden: bool,
    pub is_contact: bool,
    pub expiration: i64,
}

/// A linked account of the daemon.
#[derive(Debug, Default)]
pub(crate) struct Account {
    pub device_name: String,
    pub linked_at: i64,
    /// Known recipients by number (contacts and everybody the account talked to).
    pub contacts: BTreeMap<String, ContactRecord>,
    pub identities: BTreeMap<String, IdentityRecord>,
    /// Envelopes (notification results) still on the server.
    pub queue: VecDeque<Value>,
    /// Messages from senders with an untrusted identity, released by `trust`.
    pub untrusted: Vec<(String, Value)>,
    /// What the account did through the daemon, for the control API.
    pub sent: Vec<Value>,
    /// Groups the account deleted locally (`quitGroup --delete`).
    pub deleted_groups: BTreeSet<String>,
    pub blocked_groups: BTreeSet<String>,
    /// Sticker packs the account learned from received stickers (hex pack id → fetched yet).
    pub sticker_packs: BTreeMap<String, bool>,
}

/// A v2 group.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub avatar: Option<Vec<u8>>,
    pub members: Vec<String>,
    pub admins: Vec<String>,
    pub revision: u32,
    pub expiration: i64,
    pub permission_add_member: &'static str,
    pub permission_edit_details: &'static str,
    pub permission_send_message: &'static str,
    pub invite_link: Option<String>,
    /// Accounts that have ever been members (they keep seeing the group, `isMember:false`).
    pub known_by: BTreeSet<String>,
}

/// How a pending `finishLink` ends.
#[derive(Debug)]
pub(crate) enum LinkOutcome {
    Linked(String),
    Timeout,
    Io(String),
    Exists(String),
}

/// What the phone's scan provides.
#[derive(Debug, Clone)]
pub(crate) struct LinkCompletion {
    pub number: String,
    pub uuid: Option<String>,
    pub given_name: Option<String>,
}

/// A `startLink` URI not yet finished.
#[derive(Debug)]
pub(crate) struct PendingLink {
    pub uri: String,
    pub device_name: Option<String>,
    /// Set while a `finishLink` call waits.
    pub waiter: Option<oneshot::Sender<LinkOutcome>>,
    /// Set when the phone acted before `finishLink` was called.
    pub early: Option<Result<LinkCompletion, LinkOutcome>>,
    pub claimed: bool,
}

/// An open JSON-RPC connection.
#[derive(Debug)]
pub(crate) struct Conn {
    pub tx: mpsc::UnboundedSender<String>,
    pub kill: Option<oneshot::Sender<()>>,
}

/// A `subscribeReceive` subscription.
#[derive(Debug)]
pub(crate) struct Subscription {
    pub conn: u64,
    pub accounts: Vec<String>,
}

/// A rate-limit rule set through the control API.
#[derive(Debug)]
pub(crate) struct RateLimit {
    pub recipient: Option<String>,
    pub remaining: u32,
    pub retry_after: i64,
}

/// The whole simulated world.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub mode: ReceiveMode,
    pub users: BTreeMap<String, User>,
    pub accounts: BTreeMap<String, Account>,
    pub groups: BTreeMap<String, Group>,
    pub attachments: HashMap<String, Vec<u8>>,
    /// Sticker images on the simulated server, by (hex pack id, sticker id).
    pub stickers: HashMap<(String, i64), Vec<u8>>,
    pub links: Vec<PendingLink>,
    pub conns: BTreeMap<u64, Conn>,
    pub subs: BTreeMap<i64, Subscription>,
    pub next_sub: i64,
    pub next_conn: u64,
    pub last_ts: i64,
    pub requests: Vec<Value>,
    pub rate_limits: Vec<RateLimit>,
    pub delays: HashMap<String, u64>,
    /// Replies to spoil, in order, per method (`POST /control/fault`).
    pub faults: Vec<Fault>,
}

/// A spoiled reply: what the daemon writes instead of (or before) the real answer to `method`.
#[derive(Debug, Clone)]
pub(crate) struct Fault {
    pub method: String,
    pub kind: FaultKind,
}

#[derive(Debug, Clone)]
pub(crate) enum FaultKind {
    /// A line that is not JSON, then the real answer.
    Garbage,
    /// A line of `bytes` bytes, then the real answer.
    Huge(usize),
    /// The real answer under another id (the caller never gets one).
    WrongId,
    /// This `result` instead of the real one.
    Result(Value),
    /// This `error` member instead of the real answer.
    Error(Value),
}

/// The state shared by the RPC listener, its connections and the control API.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
}

impl Shared {
    pub fn new(mode: ReceiveMode) -> Shared {
        Shared {
            state: Mutex::new(State {
                mode,
                ..State::default()
            }),
        }
    }

    /// Locks the state; a poisoned lock (a panic elsewhere) is recovered rather than spread.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// One JSON line.
pub(crate) fn line(value: &Value) -> String {
    value.to_string()
}

impl State {
    /// A fresh timestamp, strictly greater than every earlier one.
    pub fn next_ts(&mut self) -> i64 {
        let ts = now_ms().max(self.last_ts + 1);
        self.last_ts = ts;
        ts
    }

    /// Makes sure a (registered) user with that number exists; answers its uuid.
    pub fn ensure_user(&mut self, number: &str, uuid: Option<String>) -> String {
        let now = now_ms();
        let user = self
            .users
            .entry(number.to_owned())
            .or_insert_with(|| User::new(number, uuid, now));
        user.uuid.clone()
    }

    /// The user a recipient string names (number or uuid), registered or not.
    pub fn find_user(&self, ident: &str) -> Option<&User> {
        if util::is_uuid(ident) {
            let lower = ident.to_ascii_lowercase();
            self.users.values().find(|u| u.uuid == lower)
        } else {
            self.users.get(ident)
        }
    }

    /// `(number, uuid)` of a user by number or uuid; unknown numbers keep their number.
    pub fn address_of(&self, ident: &str) -> (Option<String>, Option<String>) {
        match self.find_user(ident) {
            Some(u) => (Some(u.number.clone()), Some(u.uuid.clone())),
            None if util::is_uuid(ident) => (None, Some(ident.to_ascii_lowercase())),
            None => (Some(ident.to_owned()), None),
        }
    }

    /// The name an account shows for a user: its contact name, else the profile name.
    pub fn display_name_for(&self, account: &str, number: &str) -> Option<String> {
        let contact = self
            .accounts
            .get(account)
            .and_then(|a| a.contacts.get(number))
            .and_then(|c| c.name.clone())
            .filter(|n| !n.is_empty());
        contact.or_else(|| self.users.get(number).and_then(User::display_name))
    }

    /// Makes the account know `number` (recipient list and identity, trusted on first use).
    pub fn touch_recipient(&mut self, account: &str, number: &str) {
        if account == number {
            return;
        }
        let Some(key) = self.users.get(number).map(|u| u.identity_key.clone()) else {
            return;
        };
        let now = now_ms();
        if let Some(acc) = self.accounts.get_mut(account) {
            acc.contacts.entry(number.to_owned()).or_default();
            acc.identities
                .entry(number.to_owned())
                .or_insert(IdentityRecord {
                    key,
                    trust: TrustLevel::TrustedUnverified,
                    added: now,
                });
        }
    }

    /// Whether the account trusts `number`'s current identity key.
    pub fn trusts(&mut self, account: &str, number: &str) -> bool {
        self.touch_recipient(account, number);
        self.accounts
            .get(account)
            .and_then(|a| a.identities.get(number))
            .is_none_or(|r| r.trust != TrustLevel::Untrusted)
    }

    /// Gives a user a new identity key; every account that knew the old one stops trusting it.
    pub fn change_identity(&mut self, number: &str) -> Option<Vec<u8>> {
        let key = util::identity_key();
        let user = self.users.get_mut(number)?;
        user.identity_key = key.clone();
        let now = now_ms();
        for acc in self.accounts.values_mut() {
            if let Some(record) = acc.identities.get_mut(number) {
                record.key = key.clone();
                record.trust = TrustLevel::Untrusted;
                record.added = now;
            }
        }
        Some(key)
    }

    /// Adds a linked account (its user is created if needed); answers the account's uuid.
    pub fn add_account(&mut self, completion: &LinkCompletion, device_name: &str) -> String {
        let uuid = self.ensure_user(&completion.number, completion.uuid.clone());
        if let Some(name) = &completion.given_name
            && let Some(user) = self.users.get_mut(&completion.number)
        {
            user.given_name = Some(name.clone());
        }
        let now = now_ms();
        self.accounts
            .entry(completion.number.clone())
            .or_insert_with(|| Account {
                device_name: device_name.to_owned(),
                linked_at: now,
                ..Account::default()
            });
        // In the automatic receive modes every connection subscribes the new account, which
        // takes a subscription id per connection from the global counter.
        if self.mode != ReceiveMode::Manual {
            self.next_sub += i64::try_from(self.conns.len()).unwrap_or(0);
        }
        self.flush(&completion.number);
        uuid
    }

    /// Queues a notification result (`{"envelope":…,"account":…}`) for an account and delivers
    /// what can be delivered.
    pub fn enqueue(&mut self, account: &str, result: Value) {
        if let Some(acc) = self.accounts.get_mut(account) {
            acc.queue.push_back(result);
            self.flush(account);
        }
    }

    /// Delivers the account's queued envelopes to every subscriber, in order.
    pub fn flush(&mut self, account: &str) {
        let mut targets: Vec<(mpsc::UnboundedSender<String>, Option<i64>)> = self
            .subs
            .iter()
            .filter(|(_, s)| s.accounts.iter().any(|a| a == account))
            .filter_map(|(id, s)| self.conns.get(&s.conn).map(|c| (c.tx.clone(), Some(*id))))
            .collect();
        if self.mode != ReceiveMode::Manual {
            targets.extend(self.conns.values().map(|c| (c.tx.clone(), None)));
        }
        let mode = self.mode;
        let Some(acc) = self.accounts.get_mut(account) else {
            return;
        };
        if targets.is_empty() {
            if mode == ReceiveMode::OnStart {
                // Received by the daemon and printed nowhere a JSON-RPC client could see it.
                acc.queue.clear();
            }
            return;
        }
        while let Some(result) = acc.queue.pop_front() {
            for (tx, sub) in &targets {
                let params = match sub {
                    Some(id) => json!({"subscription": id, "result": result}),
                    None => result.clone(),
                };
                let _ = tx.send(line(
                    &json!({"jsonrpc": "2.0", "method": "receive", "params": params}),
                ));
            }
        }
    }

    /// Closes every connection (their subscriptions end with them).
    pub fn drop_connections(&mut self) {
        for (_, mut conn) in std::mem::take(&mut self.conns) {
            if let Some(kill) = conn.kill.take() {
                let _ = kill.send(());
            }
        }
        self.subs.clear();
    }

    /// Forgets a connection that has gone away.
    pub fn remove_connection(&mut self, id: u64) {
        if let Some(mut conn) = self.conns.remove(&id)
            && let Some(kill) = conn.kill.take()
        {
            let _ = kill.send(());
        }
        self.subs.retain(|_, s| s.conn != id);
    }

    /// Consumes a rate-limit rule matching a delivery to `number`, if one is armed.
    pub fn take_rate_limit(&mut self, number: &str) -> Option<i64> {
        let rule = self
            .rate_limits
            .iter_mut()
            .find(|r| r.remaining > 0 && r.recipient.as_deref().is_none_or(|n| n == number))?;
        rule.remaining -= 1;
        let retry = rule.retry_after;
        self.rate_limits.retain(|r| r.remaining > 0);
        Some(retry)
    }

    /// Stores attachment bytes under a fresh signal-cli style id (`<remote id>.<ext>`).
    pub fn store_attachment(
        &mut self,
        data: Vec<u8>,
        content_type: &str,
        filename: Option<&str>,
    ) -> String {
        let remote = util::b64_encode(&util::random_bytes(15))
            .replace('+', "-")
            .replace('/', "_");
        let ext = filename
            .and_then(|f| f.rsplit_once('.').map(|(_, e)| e.to_owned()))
            .or_else(|| util::extension_for(content_type).map(str::to_owned));
        let id = match ext {
            Some(ext) => format!("{remote}.{ext}"),
            None => remote,
        };
        self.attachments.insert(id.clone(), data);
        id
    }

    /// The groups an account sees (member now or before, not deleted).
    pub fn groups_of(&self, account: &str) -> Vec<&Group> {
        let deleted = self.accounts.get(account).map(|a| &a.deleted_groups);
        self.groups
            .values()
            .filter(|g| g.known_by.contains(account) || g.members.iter().any(|m| m == account))
            .filter(|g| deleted.is_none_or(|d| !d.contains(&g.id)))
            .collect()
    }
}
