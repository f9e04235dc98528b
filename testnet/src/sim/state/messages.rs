//! Messages: sending (idempotent client sends, control posts), history, edits, deletes and
//! reactions.

use super::{Sim, State, unix_millis};
use crate::sim::error::ApiError;
use crate::sim::limits;
use crate::sim::model::{Entity, EventBody, Media, Message, MessageContent, Reaction};

/// A message that is not deleted, with its reactions in the order they were added.
#[derive(Debug)]
pub(super) struct MessageRecord {
    pub(super) message: Message,
    pub(super) reactions: Vec<Reaction>,
}

/// What a client send with a `txn_id` created, so a repeat can answer it again.
#[derive(Debug)]
pub(super) struct SentRecord {
    chat_id: String,
    number: u64,
    /// The message as it was sent, answered if it has been deleted since.
    first: Message,
}

/// The number N of a message id `m<N>` (exactly that spelling).
pub(super) fn message_number(id: &str) -> Option<u64> {
    let number: u64 = id.strip_prefix('m')?.parse().ok()?;
    (format!("m{number}") == id).then_some(number)
}

impl Sim {
    /// Sends a text message as `account`; see [`Sim::send_content_as`].
    pub fn send_as(
        &self,
        account: &str,
        chat_id: &str,
        txn_id: &str,
        text: &str,
    ) -> Result<Message, ApiError> {
        self.send_content_as(account, chat_id, txn_id, &MessageContent::text(text))
    }

    /// Sends a message as `account`, which must be a member. Idempotent per account and
    /// `txn_id`: a repeat returns the first message (as it is now, or as it was if it has been
    /// deleted) and creates nothing, whatever chat and content it names.
    pub fn send_content_as(
        &self,
        account: &str,
        chat_id: &str,
        txn_id: &str,
        content: &MessageContent,
    ) -> Result<Message, ApiError> {
        limits::txn_id(txn_id)?;
        limits::content(content)?;
        let mut state = self.lock();
        let key = (account.to_owned(), txn_id.to_owned());
        if let Some(sent) = state.sent.get(&key) {
            let current = state
                .chat(&sent.chat_id)
                .ok()
                .and_then(|chat| chat.messages.get(&sent.number));
            return Ok(current
                .map_or(&sent.first, |record| &record.message)
                .clone());
        }
        let message = state.post(chat_id, account, content, Some(txn_id.to_owned()))?;
        let sent = SentRecord {
            chat_id: chat_id.to_owned(),
            number: state.messages_created,
            first: message.clone(),
        };
        state.sent.insert(key, sent);
        Ok(message)
    }

    /// Posts a text message from `sender`, who must be a member (control API).
    pub fn post_message(
        &self,
        chat_id: &str,
        sender: &str,
        text: &str,
    ) -> Result<Message, ApiError> {
        self.post_content(chat_id, sender, &MessageContent::text(text))
    }

    /// Posts a message from `sender`, who must be a member (control API).
    pub fn post_content(
        &self,
        chat_id: &str,
        sender: &str,
        content: &MessageContent,
    ) -> Result<Message, ApiError> {
        limits::content(content)?;
        self.lock().post(chat_id, sender, content, None)
    }

    /// Every message of a chat that is not deleted, in order.
    pub fn messages(&self, chat_id: &str) -> Result<Vec<Message>, ApiError> {
        let state = self.lock();
        let chat = state.chat(chat_id)?;
        Ok(chat
            .messages
            .values()
            .map(|record| record.message.clone())
            .collect())
    }

    /// The newest `limit` (at most 1000) messages older than `before` (all if `None`), oldest
    /// first, as `account`, a member, sees them.
    pub fn history_for(
        &self,
        account: &str,
        chat_id: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Message>, ApiError> {
        let state = self.lock();
        let chat = state.member_chat(chat_id, account)?;
        let end = match before {
            Some(before) => state.referenced_message(chat_id, before)?,
            None => u64::MAX,
        };
        let limit = limit.min(limits::MAX_PAGE);
        let mut page: Vec<Message> = chat
            .messages
            .range(..end)
            .rev()
            .take(limit)
            .map(|(_, record)| record.message.clone())
            .collect();
        page.reverse();
        Ok(page)
    }

    /// One message, whoever asks.
    pub fn message(&self, chat_id: &str, message_id: &str) -> Result<Message, ApiError> {
        let state = self.lock();
        Ok(state.message_record(chat_id, message_id)?.message.clone())
    }

    /// One message, as `account`, a member, sees it.
    pub fn message_for(
        &self,
        account: &str,
        chat_id: &str,
        message_id: &str,
    ) -> Result<Message, ApiError> {
        let state = self.lock();
        state.member_chat(chat_id, account)?;
        Ok(state.message_record(chat_id, message_id)?.message.clone())
    }

    /// Edits `actor`'s own message: new text (a media message's caption) and entities. Pushes
    /// `message_edited`.
    pub fn edit_message(
        &self,
        actor: &str,
        chat_id: &str,
        message_id: &str,
        text: &str,
        entities: Vec<Entity>,
    ) -> Result<Message, ApiError> {
        limits::text(text)?;
        limits::entities(text, &entities)?;
        let mut state = self.lock();
        state.member_chat(chat_id, actor)?;
        let record = state.message_record_mut(chat_id, message_id)?;
        let message = &mut record.message;
        if message.sender != actor {
            return Err(ApiError::forbidden(format!(
                "`{actor}` may only edit its own messages"
            )));
        }
        if message.location.is_some() || message.contact.is_some() {
            return Err(ApiError::bad_request(
                "a location or contact message has no text to edit",
            ));
        }
        message.text = text.to_owned();
        message.entities = entities;
        message.edited_ts = Some(unix_millis());
        message.edit_count = message.edit_count.saturating_add(1);
        let message = message.clone();
        state.push_to_members(
            chat_id,
            &EventBody::MessageEdited {
                message: message.clone(),
            },
        )?;
        Ok(message)
    }

    /// Deletes a message as `actor`: its own, or any message of a group it administers. Pushes
    /// `message_deleted`.
    pub fn delete_message(
        &self,
        actor: &str,
        chat_id: &str,
        message_id: &str,
    ) -> Result<(), ApiError> {
        let mut state = self.lock();
        let chat = state.member_chat(chat_id, actor)?;
        let record = state.message_record(chat_id, message_id)?;
        if record.message.sender != actor && !chat.is_admin(actor) {
            return Err(ApiError::forbidden(format!(
                "`{actor}` may only delete its own messages here"
            )));
        }
        let number = message_number(&record.message.id);
        let message_id = record.message.id.clone();
        if let Some(number) = number {
            state.chat_mut(chat_id)?.messages.remove(&number);
        }
        let body = EventBody::MessageDeleted {
            chat_id: chat_id.to_owned(),
            message_id,
            by: actor.to_owned(),
        };
        state.push_to_members(chat_id, &body)
    }

    /// A message's reactions in the order they were added, whoever asks.
    pub fn reactions(&self, chat_id: &str, message_id: &str) -> Result<Vec<Reaction>, ApiError> {
        let state = self.lock();
        Ok(state.message_record(chat_id, message_id)?.reactions.clone())
    }

    /// A message's reactions, as `account`, a member, sees them.
    pub fn reactions_for(
        &self,
        account: &str,
        chat_id: &str,
        message_id: &str,
    ) -> Result<Vec<Reaction>, ApiError> {
        let state = self.lock();
        state.member_chat(chat_id, account)?;
        Ok(state.message_record(chat_id, message_id)?.reactions.clone())
    }

    /// Adds (`add`) or removes `actor`'s reaction `emoji` on a message and answers the message's
    /// reactions after it. A change pushes `reaction`; adding a reaction the actor already has,
    /// or removing one it does not have, changes nothing.
    pub fn react(
        &self,
        actor: &str,
        chat_id: &str,
        message_id: &str,
        emoji: &str,
        add: bool,
    ) -> Result<Vec<Reaction>, ApiError> {
        limits::emoji(emoji)?;
        let mut state = self.lock();
        state.member_chat(chat_id, actor)?;
        let record = state.message_record_mut(chat_id, message_id)?;
        let existing = record
            .reactions
            .iter()
            .position(|reaction| reaction.sender == actor && reaction.emoji == emoji);
        let changed = match (add, existing) {
            (true, Some(_)) | (false, None) => false,
            (true, None) => {
                let mine = record
                    .reactions
                    .iter()
                    .filter(|reaction| reaction.sender == actor)
                    .count();
                if mine >= limits::MAX_REACTIONS_PER_USER {
                    return Err(ApiError::bad_request(format!(
                        "one user has at most {} reactions on a message",
                        limits::MAX_REACTIONS_PER_USER
                    )));
                }
                record.reactions.push(Reaction {
                    sender: actor.to_owned(),
                    emoji: emoji.to_owned(),
                    ts: unix_millis(),
                });
                true
            }
            (false, Some(index)) => {
                record.reactions.remove(index);
                true
            }
        };
        let reactions = record.reactions.clone();
        let message_id = record.message.id.clone();
        if changed {
            let body = EventBody::Reaction {
                chat_id: chat_id.to_owned(),
                message_id,
                sender: actor.to_owned(),
                emoji: emoji.to_owned(),
                removed: !add,
            };
            state.push_to_members(chat_id, &body)?;
        }
        Ok(reactions)
    }
}

impl State {
    /// Appends a message from `sender` (an existing member) to a chat and pushes it to every
    /// member. The content has passed [`limits::content`]; its references are checked here.
    fn post(
        &mut self,
        chat_id: &str,
        sender: &str,
        content: &MessageContent,
        txn_id: Option<String>,
    ) -> Result<Message, ApiError> {
        self.member_chat(chat_id, sender)?;
        if let Some(reply_to) = &content.reply_to {
            self.referenced_message(chat_id, reply_to)?;
        }
        let media = match &content.media {
            Some(media) => {
                let stored = self.referenced_media(&media.id)?;
                Some(Media {
                    content_type: stored.content_type.clone(),
                    size: stored.data.len() as u64,
                    ..media.clone()
                })
            }
            None => None,
        };
        self.messages_created += 1;
        let number = self.messages_created;
        let message = Message {
            id: format!("m{number}"),
            chat_id: chat_id.to_owned(),
            sender: sender.to_owned(),
            text: content.text.clone(),
            ts: unix_millis(),
            txn_id,
            entities: content.entities.clone(),
            reply_to: content.reply_to.clone(),
            media,
            location: content.location.clone(),
            contact: content.contact.clone(),
            edited_ts: None,
            edit_count: 0,
        };
        let record = MessageRecord {
            message: message.clone(),
            reactions: Vec::new(),
        };
        self.chat_mut(chat_id)?.messages.insert(number, record);
        self.push_to_members(
            chat_id,
            &EventBody::Message {
                message: message.clone(),
            },
        )?;
        Ok(message)
    }

    /// The number of message `id` named in a request body (`reply_to`, `up_to`, `before`): it
    /// must be a message of chat `chat_id` that is not deleted, else 400.
    pub(super) fn referenced_message(&self, chat_id: &str, id: &str) -> Result<u64, ApiError> {
        let chat = self.chat(chat_id)?;
        message_number(id)
            .filter(|number| chat.messages.contains_key(number))
            .ok_or_else(|| ApiError::bad_request(format!("no message `{id}` in `{chat_id}`")))
    }

    /// Message `id` of chat `chat_id` named in a path: 404 if there is none (or it is deleted).
    fn message_record(&self, chat_id: &str, id: &str) -> Result<&MessageRecord, ApiError> {
        let chat = self.chat(chat_id)?;
        message_number(id)
            .and_then(|number| chat.messages.get(&number))
            .ok_or_else(|| ApiError::not_found(format!("no message `{id}` in `{chat_id}`")))
    }

    fn message_record_mut(
        &mut self,
        chat_id: &str,
        id: &str,
    ) -> Result<&mut MessageRecord, ApiError> {
        let chat = self.chat_mut(chat_id)?;
        message_number(id)
            .and_then(|number| chat.messages.get_mut(&number))
            .ok_or_else(|| ApiError::not_found(format!("no message `{id}` in `{chat_id}`")))
    }
}
