//! The whole simulated network in memory, behind one lock.
//!
//! Accounts, chats, messages, each account's event log, login flows, tokens, the `txn_id`
//! dedupe table and the registry of open event sockets all sit in one [`State`], so every
//! operation is one short critical section and sees a consistent world.
//!
//! Why one lock: an operation appends its events to the accounts' logs and wakes their sockets
//! under the lock, and a socket marks itself woken and reads the log under the same lock. An
//! event is therefore never lost or sent twice between a socket's replay and its live delivery,
//! and closing sockets (logout, network down) cannot race with opening them. The lock is a std
//! mutex held only for non-blocking work, never across an `.await`.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;
use tokio::sync::{oneshot, watch};

use super::error::ApiError;
use super::limits;
use super::model::{Chat, ChatKind, Event, EventBody, LoginFinished, LoginStarted, Message, User};

/// The simulated network. Shared by the HTTP handlers; also usable in-process.
///
/// Its methods are the operations of the client and control APIs, with the same validation and
/// the same errors, minus authentication and the network switch (in-process callers are trusted).
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
    /// Chat `c<N>` is at index N - 1.
    chats: Vec<ChatRecord>,
    messages_created: u64,
    /// Open login flows by flow id.
    flows: BTreeMap<String, Flow>,
    flows_started: u64,
    /// Account id by token.
    tokens: BTreeMap<String, String>,
    /// The message each (account, txn_id) created.
    sent: BTreeMap<(String, String), Message>,
    sockets: BTreeMap<u64, SocketEntry>,
    sockets_opened: u64,
    /// Avatar images by media id: (content type, bytes).
    media: BTreeMap<String, (String, Vec<u8>)>,
}

#[derive(Debug)]
struct Account {
    user: User,
    log: Vec<Event>,
    /// Carries the newest seq; the account's sockets wait on it.
    changed: watch::Sender<u64>,
}

#[derive(Debug)]
struct ChatRecord {
    id: String,
    kind: ChatKind,
    name: Option<String>,
    /// Member ids in the order they joined.
    members: Vec<String>,
    messages: Vec<Message>,
}

#[derive(Debug)]
struct Flow {
    username: String,
    code: String,
    /// Start order, to find a user's newest flow.
    number: u64,
}

#[derive(Debug)]
struct SocketEntry {
    token: String,
    close: oneshot::Sender<CloseReason>,
}

/// Why the server closes an event socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    NetworkDown,
    LoggedOut,
    ServerShutdown,
}

/// What an event socket needs once it is registered.
#[derive(Debug)]
pub(crate) struct SocketTicket {
    pub(crate) id: u64,
    pub(crate) account: String,
    /// Changes whenever the account's log grows.
    pub(crate) changes: watch::Receiver<u64>,
    /// Fires (or its sender is dropped) when the server closes the socket.
    pub(crate) close: oneshot::Receiver<CloseReason>,
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

    /// Whether the network is up (see [`Sim::set_network_up`]).
    pub fn network_up(&self) -> bool {
        !self.lock().network_down
    }

    /// Takes the network down (closing every event socket) or brings it back up.
    pub fn set_network_up(&self, up: bool) {
        let mut state = self.lock();
        state.network_down = !up;
        if !up {
            state.close_sockets(|_| true, CloseReason::NetworkDown);
        }
    }

    /// Creates a user, or renames it if the id exists.
    pub fn create_user(&self, id: &str, name: &str) -> Result<User, ApiError> {
        limits::user_id("id", id)?;
        limits::name("name", name)?;
        let user = User {
            id: id.to_owned(),
            name: name.to_owned(),
            avatar: None,
        };
        let mut state = self.lock();
        match state.accounts.get_mut(id) {
            Some(account) => {
                account.user.name = user.name.clone();
                return Ok(account.user.clone());
            }
            None => {
                let (changed, _) = watch::channel(0);
                let account = Account {
                    user: user.clone(),
                    log: Vec::new(),
                    changed,
                };
                state.accounts.insert(id.to_owned(), account);
            }
        }
        Ok(user)
    }

    /// A user by id.
    pub fn user(&self, id: &str) -> Result<User, ApiError> {
        Ok(self.lock().account(id)?.user.clone())
    }

    /// Gives a user a new avatar image (a new media id, so clients notice the change).
    pub fn set_avatar(
        &self,
        id: &str,
        content_type: &str,
        data: Vec<u8>,
    ) -> Result<User, ApiError> {
        if data.is_empty() || content_type.is_empty() || content_type.len() > 128 {
            return Err(ApiError::bad_request(
                "an avatar needs a content type and some bytes",
            ));
        }
        let mut state = self.lock();
        state.account(id)?;
        let media_id = format!("a{}", state.media.len() + 1);
        state
            .media
            .insert(media_id.clone(), (content_type.to_owned(), data));
        let account = state
            .accounts
            .get_mut(id)
            .ok_or_else(|| ApiError::not_found("no such user"))?;
        account.user.avatar = Some(media_id);
        Ok(account.user.clone())
    }

    /// An avatar image: (content type, bytes).
    pub fn media(&self, media_id: &str) -> Result<(String, Vec<u8>), ApiError> {
        self.lock()
            .media
            .get(media_id)
            .cloned()
            .ok_or_else(|| ApiError::not_found("no such media"))
    }

    /// Opens a login flow for `username` with a fresh random code.
    pub fn login_start(&self, username: &str) -> Result<LoginStarted, ApiError> {
        let mut state = self.lock();
        state.account(username)?;
        let open: Vec<(u64, String)> = state
            .flows
            .iter()
            .filter(|(_, flow)| flow.username == username)
            .map(|(id, flow)| (flow.number, id.clone()))
            .collect();
        if open.len() >= limits::MAX_OPEN_FLOWS_PER_USER
            && let Some((_, oldest)) = open.iter().min()
        {
            state.flows.remove(oldest);
        }
        let flow_id = random_hex();
        let width = limits::LOGIN_CODE_LENGTH as usize;
        let code = rand::rng().random_range(0..10u32.pow(limits::LOGIN_CODE_LENGTH));
        state.flows_started += 1;
        let flow = Flow {
            username: username.to_owned(),
            code: format!("{code:0width$}"),
            number: state.flows_started,
        };
        state.flows.insert(flow_id.clone(), flow);
        Ok(LoginStarted {
            flow_id,
            code_length: limits::LOGIN_CODE_LENGTH,
        })
    }

    /// Finishes a login flow: a right code closes the flow and issues a token; a wrong code
    /// leaves the flow open.
    pub fn login_finish(&self, flow_id: &str, code: &str) -> Result<LoginFinished, ApiError> {
        let mut state = self.lock();
        let flow = state
            .flows
            .get(flow_id)
            .ok_or_else(|| ApiError::not_found("no open login flow with this id"))?;
        if flow.code != code {
            return Err(ApiError::new(super::ErrorCode::BadCode, "wrong login code"));
        }
        let username = flow.username.clone();
        state.flows.remove(flow_id);
        let user = state.account(&username)?.user.clone();
        let token = random_hex();
        state.tokens.insert(token.clone(), username);
        Ok(LoginFinished { token, user })
    }

    /// The code of the user's newest open login flow.
    pub fn login_code(&self, username: &str) -> Result<String, ApiError> {
        let state = self.lock();
        state
            .flows
            .values()
            .filter(|flow| flow.username == username)
            .max_by_key(|flow| flow.number)
            .map(|flow| flow.code.clone())
            .ok_or_else(|| ApiError::not_found(format!("no open login flow for `{username}`")))
    }

    /// The account a token belongs to.
    pub fn account_for_token(&self, token: &str) -> Result<String, ApiError> {
        self.lock().account_for_token(token)
    }

    /// Ends a token and closes the event sockets opened with it.
    pub fn logout(&self, token: &str) -> Result<(), ApiError> {
        let mut state = self.lock();
        if state.tokens.remove(token).is_none() {
            return Err(ApiError::unauthorized("unknown token"));
        }
        state.close_sockets(|entry| entry.token == token, CloseReason::LoggedOut);
        Ok(())
    }

    /// Every chat `account` is a member of, oldest first.
    pub fn chats_of(&self, account: &str) -> Vec<Chat> {
        let state = self.lock();
        state
            .chats
            .iter()
            .filter(|chat| chat.has_member(account))
            .map(|chat| state.render(chat))
            .collect()
    }

    /// A chat as seen by `account`, which must be a member.
    pub fn chat_for(&self, account: &str, chat_id: &str) -> Result<Chat, ApiError> {
        let state = self.lock();
        let chat = state.chat(chat_id)?;
        if !chat.has_member(account) {
            return Err(ApiError::not_member(format!(
                "you are not a member of `{chat_id}`"
            )));
        }
        Ok(state.render(chat))
    }

    /// A chat by id, whoever asks.
    pub fn chat(&self, chat_id: &str) -> Result<Chat, ApiError> {
        let state = self.lock();
        Ok(state.render(state.chat(chat_id)?))
    }

    /// Sends a message as `account`. Idempotent per account and `txn_id`: a repeat returns the
    /// first message and creates nothing, whatever chat and text it names.
    pub fn send_as(
        &self,
        account: &str,
        chat_id: &str,
        txn_id: &str,
        text: &str,
    ) -> Result<Message, ApiError> {
        limits::txn_id(txn_id)?;
        limits::text(text)?;
        let mut state = self.lock();
        let key = (account.to_owned(), txn_id.to_owned());
        if let Some(first) = state.sent.get(&key) {
            return Ok(first.clone());
        }
        let index = state.chat_index(chat_id)?;
        if !state.chats[index].has_member(account) {
            return Err(ApiError::not_member(format!(
                "you are not a member of `{chat_id}`"
            )));
        }
        let message = state.post(index, account, text, Some(txn_id.to_owned()));
        state.sent.insert(key, message.clone());
        Ok(message)
    }

    /// Posts a message from `sender`, who must be a member (control API).
    pub fn post_message(
        &self,
        chat_id: &str,
        sender: &str,
        text: &str,
    ) -> Result<Message, ApiError> {
        limits::text(text)?;
        let mut state = self.lock();
        let index = state.chat_index(chat_id)?;
        state.account(sender)?;
        if !state.chats[index].has_member(sender) {
            return Err(ApiError::not_member(format!(
                "`{sender}` is not a member of `{chat_id}`"
            )));
        }
        Ok(state.post(index, sender, text, None))
    }

    /// Every message of a chat, in order.
    pub fn messages(&self, chat_id: &str) -> Result<Vec<Message>, ApiError> {
        let state = self.lock();
        Ok(state.chat(chat_id)?.messages.clone())
    }

    /// The DM of `a` and `b`: the existing one, or a new one pushed to both as a `chat` event.
    pub fn ensure_dm(&self, a: &str, b: &str) -> Result<Chat, ApiError> {
        let mut state = self.lock();
        state.account(a)?;
        state.account(b)?;
        if a == b {
            return Err(ApiError::bad_request("a DM needs two different users"));
        }
        let existing = state
            .chats
            .iter()
            .find(|chat| chat.kind == ChatKind::Dm && chat.has_member(a) && chat.has_member(b));
        if let Some(chat) = existing {
            return Ok(state.render(chat));
        }
        let members = vec![a.to_owned(), b.to_owned()];
        Ok(state.create_chat(ChatKind::Dm, None, members))
    }

    /// A new group, pushed to every member as a `chat` event. Repeated member ids count once.
    pub fn create_group(&self, name: &str, members: &[String]) -> Result<Chat, ApiError> {
        limits::name("name", name)?;
        let mut state = self.lock();
        let mut unique: Vec<String> = Vec::with_capacity(members.len());
        for member in members {
            state.account(member)?;
            if !unique.contains(member) {
                unique.push(member.clone());
            }
        }
        Ok(state.create_chat(ChatKind::Group, Some(name.to_owned()), unique))
    }

    /// Adds a user to a group: `chat` to the new member, `member_joined` to the others. Adding a
    /// member again changes nothing.
    pub fn add_member(&self, chat_id: &str, user_id: &str) -> Result<Chat, ApiError> {
        let mut state = self.lock();
        let index = state.group_index(chat_id)?;
        let user = state.account(user_id)?.user.clone();
        if state.chats[index].has_member(user_id) {
            return Ok(state.render(&state.chats[index]));
        }
        let others = state.chats[index].members.clone();
        state.chats[index].members.push(user_id.to_owned());
        for other in &others {
            let body = EventBody::MemberJoined {
                chat_id: chat_id.to_owned(),
                user: user.clone(),
            };
            state.push(other, body);
        }
        let chat = state.render(&state.chats[index]);
        state.push(user_id, EventBody::Chat { chat: chat.clone() });
        Ok(chat)
    }

    /// Removes a member from a group: `member_left` to everyone who was a member, the leaver
    /// included.
    pub fn remove_member(&self, chat_id: &str, user_id: &str) -> Result<Chat, ApiError> {
        let mut state = self.lock();
        let index = state.group_index(chat_id)?;
        if !state.chats[index].has_member(user_id) {
            return Err(ApiError::not_member(format!(
                "`{user_id}` is not a member of `{chat_id}`"
            )));
        }
        let before = state.chats[index].members.clone();
        state.chats[index]
            .members
            .retain(|member| member != user_id);
        for member in &before {
            let body = EventBody::MemberLeft {
                chat_id: chat_id.to_owned(),
                user_id: user_id.to_owned(),
            };
            state.push(member, body);
        }
        Ok(state.render(&state.chats[index]))
    }

    /// The account's events with `seq > since`, in order.
    pub fn events(&self, account: &str, since: u64) -> Result<Vec<Event>, ApiError> {
        let state = self.lock();
        Ok(state.account(account)?.after(since, usize::MAX))
    }

    /// Registers an event socket for `token`. Refused, with the reason to close the socket,
    /// while the network is down, once the server is shutting down, or for a token that is not
    /// (or no longer) valid.
    pub(crate) fn open_socket(&self, token: &str) -> Result<SocketTicket, CloseReason> {
        let mut state = self.lock();
        if state.shut_down {
            return Err(CloseReason::ServerShutdown);
        }
        if state.network_down {
            return Err(CloseReason::NetworkDown);
        }
        let account = state
            .account_for_token(token)
            .map_err(|_| CloseReason::LoggedOut)?;
        let changes = state
            .account(&account)
            .map_err(|_| CloseReason::LoggedOut)?
            .changed
            .subscribe();
        state.sockets_opened += 1;
        let id = state.sockets_opened;
        let (close_tx, close) = oneshot::channel();
        state.sockets.insert(
            id,
            SocketEntry {
                token: token.to_owned(),
                close: close_tx,
            },
        );
        Ok(SocketTicket {
            id,
            account,
            changes,
            close,
        })
    }

    /// Forgets a socket that has ended (a no-op if the server already closed it).
    pub(crate) fn forget_socket(&self, id: u64) {
        self.lock().sockets.remove(&id);
    }

    /// Closes every open event socket and refuses new ones: the server is stopping.
    pub(crate) fn shut_down(&self) {
        let mut state = self.lock();
        state.shut_down = true;
        state.close_sockets(|_| true, CloseReason::ServerShutdown);
    }

    /// Up to `max` of the account's events with `seq > after`. Marks `changes` seen under the
    /// lock first, so any event appended later wakes the socket.
    pub(crate) fn next_events(
        &self,
        account: &str,
        after: u64,
        changes: &mut watch::Receiver<u64>,
        max: usize,
    ) -> Vec<Event> {
        let state = self.lock();
        changes.mark_unchanged();
        state
            .accounts
            .get(account)
            .map(|acc| acc.after(after, max))
            .unwrap_or_default()
    }
}

impl State {
    fn account(&self, id: &str) -> Result<&Account, ApiError> {
        self.accounts
            .get(id)
            .ok_or_else(|| ApiError::not_found(format!("no user `{id}`")))
    }

    fn account_for_token(&self, token: &str) -> Result<String, ApiError> {
        self.tokens
            .get(token)
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("unknown token"))
    }

    fn chat_index(&self, id: &str) -> Result<usize, ApiError> {
        id.strip_prefix('c')
            .and_then(|number| number.parse::<usize>().ok())
            .and_then(|number| number.checked_sub(1))
            .filter(|&index| self.chats.get(index).is_some_and(|chat| chat.id == id))
            .ok_or_else(|| ApiError::not_found(format!("no chat `{id}`")))
    }

    fn chat(&self, id: &str) -> Result<&ChatRecord, ApiError> {
        let index = self.chat_index(id)?;
        Ok(&self.chats[index])
    }

    fn group_index(&self, id: &str) -> Result<usize, ApiError> {
        let index = self.chat_index(id)?;
        if self.chats[index].kind != ChatKind::Group {
            return Err(ApiError::bad_request(format!(
                "`{id}` is a DM; only groups change members"
            )));
        }
        Ok(index)
    }

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
        }
    }

    fn create_chat(&mut self, kind: ChatKind, name: Option<String>, members: Vec<String>) -> Chat {
        let id = format!("c{}", self.chats.len() + 1);
        let record = ChatRecord {
            id,
            kind,
            name,
            members,
            messages: Vec::new(),
        };
        let chat = self.render(&record);
        for member in &record.members {
            self.push(member, EventBody::Chat { chat: chat.clone() });
        }
        self.chats.push(record);
        chat
    }

    /// Appends a message to a chat and pushes it to every member.
    fn post(&mut self, index: usize, sender: &str, text: &str, txn_id: Option<String>) -> Message {
        self.messages_created += 1;
        let chat = &mut self.chats[index];
        let message = Message {
            id: format!("m{}", self.messages_created),
            chat_id: chat.id.clone(),
            sender: sender.to_owned(),
            text: text.to_owned(),
            ts: unix_millis(),
            txn_id,
        };
        chat.messages.push(message.clone());
        let members = chat.members.clone();
        for member in &members {
            self.push(
                member,
                EventBody::Message {
                    message: message.clone(),
                },
            );
        }
        message
    }

    /// Appends an event to an account's log and wakes its sockets.
    fn push(&mut self, account: &str, body: EventBody) {
        if let Some(account) = self.accounts.get_mut(account) {
            let seq = account.log.len() as u64 + 1;
            account.log.push(Event { seq, body });
            account.changed.send_replace(seq);
        }
    }

    fn close_sockets(&mut self, should_close: impl Fn(&SocketEntry) -> bool, reason: CloseReason) {
        let (closing, open): (BTreeMap<_, _>, BTreeMap<_, _>) = std::mem::take(&mut self.sockets)
            .into_iter()
            .partition(|(_, entry)| should_close(entry));
        self.sockets = open;
        for entry in closing.into_values() {
            // The socket may have ended on its own already; then nobody listens.
            let _ = entry.close.send(reason);
        }
    }
}

impl Account {
    fn after(&self, since: u64, max: usize) -> Vec<Event> {
        // seq N is at index N - 1, so the events after `since` start at index `since`.
        let start = usize::try_from(since).unwrap_or(usize::MAX);
        self.log
            .get(start..)
            .map(|rest| rest.iter().take(max).cloned().collect())
            .unwrap_or_default()
    }
}

impl ChatRecord {
    fn has_member(&self, id: &str) -> bool {
        self.members.iter().any(|member| member == id)
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
