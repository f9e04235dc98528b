//! Chat details and membership: title, about, photo, members added and removed.
//!
//! Telegram users change them through the control API (no permission checks: the test plays
//! whoever may), accounts over MTProto (checked as Telegram does: see [`World::may_change`]). A
//! title, photo or member change is a service message in the chat, which every member's client
//! receives like a message; the about text has no service message, so members get
//! `updateChat` / `updateChannel` and fetch the full chat again, as on Telegram.

use grammers_tl_types::enums::{self, MessageAction};
use grammers_tl_types::types;

use super::state::{Content, PeerKey, RpcErr, Sent, World};

/// What an account wants to change, for the permission check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Title, about, photo.
    Info,
    AddMember,
    RemoveMember,
}

impl World {
    /// Whether `user` may make `change` in `peer`. Basic groups: every member may edit the
    /// details and add members (Telegram's default rights), removing needs an admin. Channels
    /// and supergroups: admins only. Errors are Telegram's (`CHAT_ADMIN_REQUIRED`, ...).
    pub fn may_change(&self, user: i64, peer: PeerKey, change: Change) -> Result<(), RpcErr> {
        match peer {
            PeerKey::User(_) => Err(RpcErr::bad("PEER_ID_INVALID")),
            PeerKey::Chat(c) => {
                let chat = self
                    .chats
                    .get(&c)
                    .ok_or_else(|| RpcErr::bad("CHAT_ID_INVALID"))?;
                if !chat.members.contains(&user) {
                    return Err(RpcErr::new(403, "CHAT_WRITE_FORBIDDEN"));
                }
                let admin = chat.creator == user || chat.admins.contains(&user);
                if change == Change::RemoveMember && !admin {
                    return Err(RpcErr::bad("CHAT_ADMIN_REQUIRED"));
                }
                Ok(())
            }
            PeerKey::Channel(c) => {
                let channel = self.channel(c)?;
                if !channel.members.contains(&user) {
                    return Err(RpcErr::new(403, "CHANNEL_PRIVATE"));
                }
                if !(channel.creator == user || channel.admins.contains(&user)) {
                    return Err(RpcErr::bad("CHAT_ADMIN_REQUIRED"));
                }
                Ok(())
            }
        }
    }

    /// The current photo (a file id) of a group or channel.
    pub fn photo_of(&self, peer: PeerKey) -> Option<i64> {
        match peer {
            PeerKey::User(_) => None,
            PeerKey::Chat(c) => self.chats.get(&c)?.photo,
            PeerKey::Channel(c) => self.channels.get(&c)?.photo,
        }
    }

    /// Applies what a service action changes (title, photo, members) and posts its service
    /// message from `from` (a removed member still gets the message of their removal).
    pub fn chat_action(
        &mut self,
        from: i64,
        peer: PeerKey,
        action: MessageAction,
        reply_to: Option<i32>,
        origin: Option<u64>,
    ) -> Result<Sent, RpcErr> {
        match &action {
            MessageAction::ChatEditTitle(t) => self.set_title(peer, &t.title),
            MessageAction::ChatEditPhoto(p) => {
                let photo = match &p.photo {
                    enums::Photo::Photo(photo) => Some(photo.id),
                    enums::Photo::Empty(_) => None,
                };
                self.set_photo(peer, photo);
            }
            MessageAction::ChatDeletePhoto => self.set_photo(peer, None),
            MessageAction::ChatAddUser(add) => {
                for user in &add.users {
                    self.user(*user)?;
                }
                match peer {
                    PeerKey::Chat(c) => {
                        if let Some(chat) = self.chats.get_mut(&c) {
                            for u in &add.users {
                                if !chat.members.contains(u) {
                                    chat.members.push(*u);
                                }
                            }
                        }
                    }
                    PeerKey::Channel(c) => {
                        if let Some(channel) = self.channels.get_mut(&c) {
                            channel.members.extend(add.users.iter().copied());
                        }
                    }
                    PeerKey::User(_) => {}
                }
            }
            _ => {}
        }
        let sent = self.send(
            from,
            peer,
            Content {
                action: Some(action.clone()),
                reply_to,
                ..Content::default()
            },
            origin,
        )?;
        if let MessageAction::ChatDeleteUser(gone) = &action {
            match peer {
                PeerKey::Chat(c) => {
                    if let Some(chat) = self.chats.get_mut(&c) {
                        chat.members.retain(|m| *m != gone.user_id);
                        chat.admins.remove(&gone.user_id);
                    }
                }
                PeerKey::Channel(c) => {
                    if let Some(channel) = self.channels.get_mut(&c) {
                        channel.members.remove(&gone.user_id);
                        channel.admins.remove(&gone.user_id);
                    }
                }
                PeerKey::User(_) => {}
            }
        }
        Ok(sent)
    }

    fn set_title(&mut self, peer: PeerKey, title: &str) {
        match peer {
            PeerKey::Chat(c) => {
                if let Some(chat) = self.chats.get_mut(&c) {
                    title.clone_into(&mut chat.title);
                }
            }
            PeerKey::Channel(c) => {
                if let Some(channel) = self.channels.get_mut(&c) {
                    title.clone_into(&mut channel.title);
                }
            }
            PeerKey::User(_) => {}
        }
    }

    fn set_photo(&mut self, peer: PeerKey, photo: Option<i64>) {
        match peer {
            PeerKey::Chat(c) => {
                if let Some(chat) = self.chats.get_mut(&c) {
                    chat.photo = photo;
                }
            }
            PeerKey::Channel(c) => {
                if let Some(channel) = self.channels.get_mut(&c) {
                    channel.photo = photo;
                }
            }
            PeerKey::User(_) => {}
        }
    }

    /// Sets the about text and tells every member's client (`updateChat` / `updateChannel`,
    /// after which clients fetch the full chat), except the connection that made the change.
    pub fn set_about(
        &mut self,
        peer: PeerKey,
        about: &str,
        origin: Option<u64>,
    ) -> Result<(), RpcErr> {
        let (members, update) = match peer {
            PeerKey::Chat(c) => {
                let chat = self
                    .chats
                    .get_mut(&c)
                    .ok_or_else(|| RpcErr::bad("CHAT_ID_INVALID"))?;
                about.clone_into(&mut chat.about);
                (
                    chat.members.clone(),
                    enums::Update::Chat(types::UpdateChat { chat_id: c }),
                )
            }
            PeerKey::Channel(c) => {
                let channel = self
                    .channels
                    .get_mut(&c)
                    .ok_or_else(|| RpcErr::bad("CHANNEL_INVALID"))?;
                about.clone_into(&mut channel.about);
                (
                    channel.members.iter().copied().collect(),
                    enums::Update::Channel(types::UpdateChannel { channel_id: c }),
                )
            }
            PeerKey::User(_) => return Err(RpcErr::bad("PEER_ID_INVALID")),
        };
        for member in members {
            self.push_updates(member, vec![update.clone()], false, origin);
        }
        Ok(())
    }

    /// A chat photo from image bytes (a new file; its id is the photo id).
    pub fn add_chat_photo(&mut self, bytes: Vec<u8>) -> enums::Photo {
        let id = self.add_file(bytes, "image/jpeg".into(), "photo.jpg".into());
        match self.files.get(&id) {
            Some(file) => super::methods::messages::photo_tl(id, file),
            None => enums::Photo::Empty(types::PhotoEmpty { id }),
        }
    }
}
