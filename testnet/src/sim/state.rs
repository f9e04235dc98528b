//! The whole simulated network in memory, behind one lock.
//!
//! Accounts, chats, messages, media, each account's event log, login flows, tokens, the
//! `txn_id` dedupe table and the registry of open event sockets all sit in one [`State`], so
//! every operation is one short critical section and sees a consistent world.
//!
//! Why one lock: an operation appends its events to the accounts' logs and wakes their sockets
//! under the lock, and a socket marks itself woken and reads the log under the same lock. An
//! event is therefore never lost or sent twice between a socket's replay and its live delivery,
//! every account sees every action in the same relative order, and closing sockets (logout,
//! network down) cannot race with opening them. The lock is a std mutex held only for
//! non-blocking work, never across an `.await`.
//!
//! The operations are split by subject, each submodule adding its part of [`Sim`]'s methods
//! and owning its records: `accounts` (users, login, tokens, rate limits), `chats` (DMs,
//! groups, members, admins, settings), `messages` (sending, history, edits, deletes,
//! reactions), `activity` (read receipts, typing, presence), `media` (the one media store) and
//! `sockets` (the network switch, event logs and the socket registry). This file holds the
//! [`State`] they share and the few helpers all of them use: finding things and pushing events.

mod accounts;
mod activity;
mod chats;
mod media;
mod messages;
mod sockets;

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use super::error::ApiError;
use super::model::{Chat, ChatKind, Event, EventBody, User};
use accounts::{Account, Flow};
use chats::ChatRecord;
use media::MediaStore;
use messages::SentRecord;
use sockets::SocketEntry;

pub use media::StoredMedia;
pub(crate) use sockets::{CloseReason, SocketTicket};

/// The simulated network. Shared by the HTTP handlers; also usable in-process.
///
/// Its methods are the operations of the client and control APIs, with the same validation and
/// the same errors, minus authentication, the rate limit and the network switch (in-process
/// callers are trusted). Methods that act as a user take it as their first argument (`actor`,
/// `account` or `sender`): the logged-in account for the client API, the control call's
/// `sender` for the control API.
#[derive(Debug, Default)]
pub struct Sim {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    network_down: bool,
    /// Set when the server stops: no socket may open any more.
    shut_down: bool,
    accounts: BTreeMap<String, Account>,
    /// Chat `c<N>` is at index N - 1; `None` once deleted (ids are never reused).
    chats: Vec<Option<ChatRecord>>,
    messages_created: u64,
    /// Open login flows by flow id.
    flows: BTreeMap<String, Flow>,
    flows_started: u64,
    /// Account id by token.
    tokens: BTreeMap<String, String>,
    /// The message each (account, txn_id) created.
    sent: BTreeMap<(String, String), SentRecord>,
    sockets: BTreeMap<u64, SocketEntry>,
    sockets_opened: u64,
    media: MediaStore,
}

impl Sim {
    /// An empty network, up.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; if something ever did, the state is still
        // consistent enough for a test server, so keep serving.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    fn account(&self, id: &str) -> Result<&Account, ApiError> {
        self.accounts
            .get(id)
            .ok_or_else(|| ApiError::not_found(format!("no user `{id}`")))
    }

    fn account_mut(&mut self, id: &str) -> Result<&mut Account, ApiError> {
        self.accounts
            .get_mut(id)
            .ok_or_else(|| ApiError::not_found(format!("no user `{id}`")))
    }

    /// Where chat `id` lives in `chats`, if it exists and is not deleted.
    fn chat_index(&self, id: &str) -> Result<usize, ApiError> {
        id.strip_prefix('c')
            .and_then(|number| number.parse::<usize>().ok())
            .and_then(|number| number.checked_sub(1))
            .filter(|&index| {
                self.chats
                    .get(index)
                    .and_then(Option::as_ref)
                    .is_some_and(|chat| chat.id == id)
            })
            .ok_or_else(|| ApiError::not_found(format!("no chat `{id}`")))
    }

    fn chat(&self, id: &str) -> Result<&ChatRecord, ApiError> {
        let index = self.chat_index(id)?;
        self.chats
            .get(index)
            .and_then(Option::as_ref)
            .ok_or_else(|| ApiError::not_found(format!("no chat `{id}`")))
    }

    fn chat_mut(&mut self, id: &str) -> Result<&mut ChatRecord, ApiError> {
        let index = self.chat_index(id)?;
        self.chats
            .get_mut(index)
            .and_then(Option::as_mut)
            .ok_or_else(|| ApiError::not_found(format!("no chat `{id}`")))
    }

    /// Chat `id` as `actor` may act in it: the chat exists (404), the actor exists (404) and is
    /// a member (403 `not_member`).
    fn member_chat(&self, id: &str, actor: &str) -> Result<&ChatRecord, ApiError> {
        let chat = self.chat(id)?;
        self.account(actor)?;
        if !chat.has_member(actor) {
            return Err(ApiError::not_member(format!(
                "`{actor}` is not a member of `{id}`"
            )));
        }
        Ok(chat)
    }

    /// A chat's wire form, with the members' current profiles.
    fn render(&self, chat: &ChatRecord) -> Chat {
        let members = chat
            .members
            .iter()
            .map(|id| match self.accounts.get(id) {
                Some(account) => account.user.clone(),
                // Users are never deleted; this is only a fallback.
                None => User {
                    id: id.clone(),
                    name: id.clone(),
                    avatar: None,
                },
            })
            .collect();
        Chat {
            id: chat.id.clone(),
            kind: chat.kind,
            name: chat.name.clone(),
            members,
            topic: chat.topic.clone(),
            avatar: chat.avatar.clone(),
            admins: match chat.kind {
                ChatKind::Group => chat.admins.clone(),
                ChatKind::Dm => Vec::new(),
            },
        }
    }

    /// Appends an event to an account's log and wakes its sockets.
    fn push(&mut self, account: &str, body: EventBody) {
        if let Some(account) = self.accounts.get_mut(account) {
            let seq = account.log.len() as u64 + 1;
            account.log.push(Event { seq, body });
            account.changed.send_replace(seq);
        }
    }

    /// Appends the same event to several accounts' logs, in the given order.
    fn push_all(&mut self, accounts: &[String], body: &EventBody) {
        for account in accounts {
            self.push(account, body.clone());
        }
    }

    /// Pushes an event to every current member of chat `id`.
    fn push_to_members(&mut self, id: &str, body: &EventBody) -> Result<(), ApiError> {
        let members = self.chat(id)?.members.clone();
        self.push_all(&members, body);
        Ok(())
    }
}

/// 32 random hex digits, for tokens and flow ids.
fn random_hex() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
