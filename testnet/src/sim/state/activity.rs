//! Signals about people rather than content: read receipts, typing and presence.

use std::collections::{BTreeMap, BTreeSet};

use super::Sim;
use crate::sim::error::ApiError;
use crate::sim::model::{EventBody, Presence};

impl Sim {
    /// Moves `actor`'s read marker in a chat forward to message `up_to` (a message of the chat,
    /// else 400) and pushes `read`; a message not newer than the marker changes nothing.
    pub fn mark_read(&self, actor: &str, chat_id: &str, up_to: &str) -> Result<(), ApiError> {
        let mut state = self.lock();
        state.member_chat(chat_id, actor)?;
        let number = state.referenced_message(chat_id, up_to)?;
        let chat = state.chat_mut(chat_id)?;
        if chat.read.get(actor).is_some_and(|&marker| marker >= number) {
            return Ok(());
        }
        chat.read.insert(actor.to_owned(), number);
        let body = EventBody::Read {
            chat_id: chat_id.to_owned(),
            user_id: actor.to_owned(),
            up_to: format!("m{number}"),
        };
        state.push_to_members(chat_id, &body)
    }

    /// Every member's read marker in a chat: user id → message id.
    pub fn read_markers(&self, chat_id: &str) -> Result<BTreeMap<String, String>, ApiError> {
        let state = self.lock();
        Ok(state
            .chat(chat_id)?
            .read
            .iter()
            .map(|(user, number)| (user.clone(), format!("m{number}")))
            .collect())
    }

    /// Says whether `actor` is typing in a chat. Every call pushes `typing`: it is a signal.
    pub fn set_typing(&self, actor: &str, chat_id: &str, typing: bool) -> Result<(), ApiError> {
        let mut state = self.lock();
        state.member_chat(chat_id, actor)?;
        let chat = state.chat_mut(chat_id)?;
        if typing {
            chat.typing.insert(actor.to_owned());
        } else {
            chat.typing.remove(actor);
        }
        let body = EventBody::Typing {
            chat_id: chat_id.to_owned(),
            user_id: actor.to_owned(),
            typing,
        };
        state.push_to_members(chat_id, &body)
    }

    /// The members whose last typing call said `true`, in member order.
    pub fn typing(&self, chat_id: &str) -> Result<Vec<String>, ApiError> {
        let state = self.lock();
        let chat = state.chat(chat_id)?;
        Ok(chat
            .members
            .iter()
            .filter(|member| chat.typing.contains(*member))
            .cloned()
            .collect())
    }

    /// Sets a user's presence; a change pushes `presence` to the user and to every account
    /// sharing a chat with it.
    pub fn set_presence(&self, user_id: &str, presence: Presence) -> Result<(), ApiError> {
        let mut state = self.lock();
        let account = state.account_mut(user_id)?;
        if account.presence == presence {
            return Ok(());
        }
        account.presence = presence;
        let mut audience = BTreeSet::from([user_id.to_owned()]);
        for chat in state.chats.iter().flatten() {
            if chat.has_member(user_id) {
                audience.extend(chat.members.iter().cloned());
            }
        }
        let audience: Vec<String> = audience.into_iter().collect();
        let body = EventBody::Presence {
            user_id: user_id.to_owned(),
            presence,
        };
        state.push_all(&audience, &body);
        Ok(())
    }

    /// A user's presence; everyone starts offline.
    pub fn presence(&self, user_id: &str) -> Result<Presence, ApiError> {
        Ok(self.lock().account(user_id)?.presence)
    }
}
