//! Chats: DMs and groups, their members, admins and settings, and deleting them.

use std::collections::{BTreeMap, BTreeSet};

use super::messages::MessageRecord;
use super::{Sim, State};
use crate::sim::error::ApiError;
use crate::sim::limits;
use crate::sim::model::{Chat, ChatKind, ChatUpdate, EventBody};

#[derive(Debug)]
pub(super) struct ChatRecord {
    pub(super) id: String,
    pub(super) kind: ChatKind,
    pub(super) name: Option<String>,
    pub(super) topic: Option<String>,
    /// The group picture's media id.
    pub(super) avatar: Option<String>,
    /// Member ids in the order they joined.
    pub(super) members: Vec<String>,
    /// Admin ids (all members) in the order they became admins; empty for a DM.
    pub(super) admins: Vec<String>,
    /// Messages not deleted, by message number (`m<N>`): creation order is id order.
    pub(super) messages: BTreeMap<u64, MessageRecord>,
    /// Each member's read marker, as a message number.
    pub(super) read: BTreeMap<String, u64>,
    /// Members whose last typing call said `true`.
    pub(super) typing: BTreeSet<String>,
}

impl ChatRecord {
    pub(super) fn has_member(&self, id: &str) -> bool {
        self.members.iter().any(|member| member == id)
    }

    pub(super) fn is_admin(&self, id: &str) -> bool {
        self.kind == ChatKind::Group && self.admins.iter().any(|admin| admin == id)
    }
}

impl Sim {
    /// Every chat `account` is a member of, oldest first.
    pub fn chats_of(&self, account: &str) -> Vec<Chat> {
        let state = self.lock();
        state
            .chats
            .iter()
            .flatten()
            .filter(|chat| chat.has_member(account))
            .map(|chat| state.render(chat))
            .collect()
    }

    /// A chat as seen by `account`, which must be a member.
    pub fn chat_for(&self, account: &str, chat_id: &str) -> Result<Chat, ApiError> {
        let state = self.lock();
        Ok(state.render(state.member_chat(chat_id, account)?))
    }

    /// A chat by id, whoever asks.
    pub fn chat(&self, chat_id: &str) -> Result<Chat, ApiError> {
        let state = self.lock();
        Ok(state.render(state.chat(chat_id)?))
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
            .flatten()
            .find(|chat| chat.kind == ChatKind::Dm && chat.has_member(a) && chat.has_member(b));
        if let Some(chat) = existing {
            return Ok(state.render(chat));
        }
        let members = vec![a.to_owned(), b.to_owned()];
        Ok(state.create_chat(ChatKind::Dm, None, members))
    }

    /// A new group, pushed to every member as a `chat` event. Repeated member ids count once;
    /// the first member is the creator and first admin.
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

    /// A new group created by `creator` (its first member and admin) with `members`.
    pub fn create_group_as(
        &self,
        creator: &str,
        name: &str,
        members: &[String],
    ) -> Result<Chat, ApiError> {
        let mut all = Vec::with_capacity(members.len() + 1);
        all.push(creator.to_owned());
        all.extend(members.iter().cloned());
        self.create_group(name, &all)
    }

    /// Adds a user to a group: `chat` to the new member, `member_joined` to the others. Adding a
    /// member again changes nothing.
    pub fn add_member(&self, chat_id: &str, user_id: &str) -> Result<Chat, ApiError> {
        self.lock().add_member(chat_id, user_id)
    }

    /// [`Sim::add_member`] done by `actor`, who must be an admin of the group.
    pub fn add_member_as(
        &self,
        actor: &str,
        chat_id: &str,
        user_id: &str,
    ) -> Result<Chat, ApiError> {
        let mut state = self.lock();
        state.require_admin(chat_id, actor)?;
        state.add_member(chat_id, user_id)
    }

    /// Removes a member from a group: `member_left` to everyone who was a member, the leaver
    /// included. The leaver stops being an admin.
    pub fn remove_member(&self, chat_id: &str, user_id: &str) -> Result<Chat, ApiError> {
        self.lock().remove_member(chat_id, user_id)
    }

    /// [`Sim::remove_member`] done by `actor`: an admin, or the member itself (leaving).
    pub fn remove_member_as(
        &self,
        actor: &str,
        chat_id: &str,
        user_id: &str,
    ) -> Result<Chat, ApiError> {
        let mut state = self.lock();
        if actor == user_id {
            state.group(chat_id)?;
            state.member_chat(chat_id, actor)?;
        } else {
            state.require_admin(chat_id, actor)?;
        }
        state.remove_member(chat_id, user_id)
    }

    /// Makes a member an admin of a group (`admin`) or not; a change pushes `chat` to every
    /// member.
    pub fn set_admin(&self, chat_id: &str, user_id: &str, admin: bool) -> Result<Chat, ApiError> {
        self.lock().set_admin(chat_id, user_id, admin)
    }

    /// [`Sim::set_admin`] done by `actor`, who must be an admin of the group.
    pub fn set_admin_as(
        &self,
        actor: &str,
        chat_id: &str,
        user_id: &str,
        admin: bool,
    ) -> Result<Chat, ApiError> {
        let mut state = self.lock();
        state.require_admin(chat_id, actor)?;
        state.set_admin(chat_id, user_id, admin)
    }

    /// Changes a group's name, topic or picture as `actor`, an admin; a change pushes `chat` to
    /// every member.
    pub fn update_chat(
        &self,
        actor: &str,
        chat_id: &str,
        update: &ChatUpdate,
    ) -> Result<Chat, ApiError> {
        if let Some(name) = &update.name {
            limits::name("name", name)?;
        }
        if let Some(Some(topic)) = &update.topic {
            limits::topic(topic)?;
        }
        let mut state = self.lock();
        state.require_admin(chat_id, actor)?;
        if let Some(Some(avatar)) = &update.avatar {
            state.referenced_media(avatar)?;
        }
        let chat = state.chat_mut(chat_id)?;
        let mut changed = false;
        if let Some(name) = &update.name
            && chat.name.as_ref() != Some(name)
        {
            chat.name = Some(name.clone());
            changed = true;
        }
        if let Some(topic) = &update.topic
            && &chat.topic != topic
        {
            chat.topic.clone_from(topic);
            changed = true;
        }
        if let Some(avatar) = &update.avatar
            && &chat.avatar != avatar
        {
            chat.avatar.clone_from(avatar);
            changed = true;
        }
        let chat = state.render(state.chat(chat_id)?);
        if changed {
            state.push_to_members(chat_id, &EventBody::Chat { chat: chat.clone() })?;
        }
        Ok(chat)
    }

    /// Deletes a chat with its messages; everyone who was a member gets `chat_deleted`. The id
    /// answers 404 from then on and is never reused.
    pub fn delete_chat(&self, chat_id: &str) -> Result<(), ApiError> {
        let mut state = self.lock();
        let index = state.chat_index(chat_id)?;
        let Some(record) = state.chats.get_mut(index).and_then(Option::take) else {
            return Err(ApiError::not_found(format!("no chat `{chat_id}`")));
        };
        let body = EventBody::ChatDeleted {
            chat_id: chat_id.to_owned(),
        };
        state.push_all(&record.members, &body);
        Ok(())
    }
}

impl State {
    /// Group `id`: 404 if there is no such chat, 400 for a DM.
    fn group(&self, id: &str) -> Result<&ChatRecord, ApiError> {
        let chat = self.chat(id)?;
        if chat.kind != ChatKind::Group {
            return Err(ApiError::bad_request(format!(
                "`{id}` is a DM; only groups have members, admins and settings that change"
            )));
        }
        Ok(chat)
    }

    /// `actor` may administer group `id`: it is a group (404/400), the actor a member (404/403
    /// `not_member`) and an admin (403 `forbidden`).
    fn require_admin(&self, id: &str, actor: &str) -> Result<(), ApiError> {
        self.group(id)?;
        if !self.member_chat(id, actor)?.is_admin(actor) {
            return Err(ApiError::forbidden(format!(
                "`{actor}` is not an admin of `{id}`"
            )));
        }
        Ok(())
    }

    fn create_chat(&mut self, kind: ChatKind, name: Option<String>, members: Vec<String>) -> Chat {
        let id = format!("c{}", self.chats.len() + 1);
        let admins = match kind {
            ChatKind::Group => members.first().cloned().into_iter().collect(),
            ChatKind::Dm => Vec::new(),
        };
        let record = ChatRecord {
            id,
            kind,
            name,
            topic: None,
            avatar: None,
            members,
            admins,
            messages: BTreeMap::new(),
            read: BTreeMap::new(),
            typing: BTreeSet::new(),
        };
        let chat = self.render(&record);
        let members = record.members.clone();
        self.chats.push(Some(record));
        self.push_all(&members, &EventBody::Chat { chat: chat.clone() });
        chat
    }

    fn add_member(&mut self, chat_id: &str, user_id: &str) -> Result<Chat, ApiError> {
        self.group(chat_id)?;
        let user = self.account(user_id)?.user.clone();
        let chat = self.chat_mut(chat_id)?;
        if chat.has_member(user_id) {
            return Ok(self.render(self.chat(chat_id)?));
        }
        let others = chat.members.clone();
        chat.members.push(user_id.to_owned());
        let joined = EventBody::MemberJoined {
            chat_id: chat_id.to_owned(),
            user,
        };
        self.push_all(&others, &joined);
        let chat = self.render(self.chat(chat_id)?);
        self.push(user_id, EventBody::Chat { chat: chat.clone() });
        Ok(chat)
    }

    fn remove_member(&mut self, chat_id: &str, user_id: &str) -> Result<Chat, ApiError> {
        self.group(chat_id)?;
        let chat = self.chat_mut(chat_id)?;
        if !chat.has_member(user_id) {
            return Err(ApiError::not_member(format!(
                "`{user_id}` is not a member of `{chat_id}`"
            )));
        }
        let before = chat.members.clone();
        chat.members.retain(|member| member != user_id);
        chat.admins.retain(|admin| admin != user_id);
        chat.typing.remove(user_id);
        chat.read.remove(user_id);
        let left = EventBody::MemberLeft {
            chat_id: chat_id.to_owned(),
            user_id: user_id.to_owned(),
        };
        self.push_all(&before, &left);
        Ok(self.render(self.chat(chat_id)?))
    }

    fn set_admin(&mut self, chat_id: &str, user_id: &str, admin: bool) -> Result<Chat, ApiError> {
        self.group(chat_id)?;
        self.member_chat(chat_id, user_id)?;
        let chat = self.chat_mut(chat_id)?;
        let changed = if admin && !chat.is_admin(user_id) {
            chat.admins.push(user_id.to_owned());
            true
        } else if !admin && chat.is_admin(user_id) {
            chat.admins.retain(|id| id != user_id);
            true
        } else {
            false
        };
        let chat = self.render(self.chat(chat_id)?);
        if changed {
            self.push_to_members(chat_id, &EventBody::Chat { chat: chat.clone() })?;
        }
        Ok(chat)
    }
}
