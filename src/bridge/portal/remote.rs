//! Remote -> Matrix: each remote event kind becomes what a Matrix user expects to see.

use std::sync::Arc;

use ruma::{OwnedEventId, OwnedUserId, RoomId};
use serde_json::json;

use super::{PortalState, matrix_txn_id};
use crate::{
    bridge::{Bridge, BridgeError, convert, ghost::ghost_user_id, login::LoginHandle},
    db::{messages::MessageRow, reactions::ReactionRow},
    matrix::client::MatrixError,
    network::{
        MessageContent, MessageId, RemoteEnvelope, RemoteEvent, RemoteMessage, RemoteUserId,
        UserInfo,
        richtext::{EntityKind, FormattedText, MentionTarget},
    },
};

impl Bridge {
    pub(super) async fn portal_remote_event(
        self: &Arc<Self>,
        portal: &mut PortalState,
        envelope: &RemoteEnvelope,
    ) -> Result<(), BridgeError> {
        let login = self.login_handle(envelope.network, &envelope.login);
        match &envelope.event {
            RemoteEvent::Message { message, .. } => {
                self.remote_message(portal, login.as_ref(), message).await
            }
            RemoteEvent::Edit {
                id,
                sender,
                content,
                timestamp,
                ..
            } => {
                let Some(login) = login else { return Ok(()) };
                self.remote_edit(portal, &login, id, sender, content, *timestamp)
                    .await
            }
            RemoteEvent::Delete { id, by, .. } => {
                let Some(room) = portal.room() else {
                    return Ok(());
                };
                self.remote_delete(portal, &room, login.as_ref(), id, by)
                    .await
            }
            RemoteEvent::Reaction {
                target,
                sender,
                emoji,
                removed,
                ..
            } => {
                let (Some(login), Some(room)) = (login, portal.room()) else {
                    return Ok(());
                };
                self.remote_reaction(portal, &room, &login, target, sender, emoji, *removed)
                    .await
            }
            RemoteEvent::Read { user, up_to, .. } => {
                self.remote_receipt(
                    portal,
                    login.as_ref(),
                    user,
                    std::slice::from_ref(up_to),
                    true,
                )
                .await
            }
            RemoteEvent::Delivered { user, ids, .. } => {
                self.remote_receipt(portal, login.as_ref(), user, ids, false)
                    .await
            }
            RemoteEvent::Typing { user, typing, .. } => {
                let (Some(login), Some(room)) = (login, portal.room()) else {
                    return Ok(());
                };
                let Some(typist) = self.puppet_of(&login, user)? else {
                    return Ok(());
                };
                self.intents.ensure_joined(&room, &typist).await?;
                Ok(self.intents.typing(&room, &typist, *typing).await?)
            }
            RemoteEvent::Chat(info) => {
                let Some(login) = login else { return Ok(()) };
                self.sync_with(portal, &login, info).await
            }
            RemoteEvent::ChatDeleted { .. } => {
                let network = self.network_of(&portal.key)?;
                self.teardown_portal(
                    portal,
                    &format!("This chat was deleted on {}.", network.display_name()),
                )
                .await
            }
            RemoteEvent::ChatParent { parent, .. } => {
                // A chat without a room yet gets its place when the room is made.
                let Some(room) = portal.room() else {
                    return Ok(());
                };
                self.move_to_space(&portal.key, &room, parent.as_ref())
                    .await
            }
            RemoteEvent::MemberJoined { user, .. } => {
                let Some(login) = login else { return Ok(()) };
                let Some(room) = portal.room() else {
                    // First sight of this chat: create the portal with its full member list.
                    self.ensure_portal_room(portal, Some(&login), None).await?;
                    return Ok(());
                };
                self.add_member(&room, &login, user).await
            }
            RemoteEvent::MemberLeft { user, .. } => {
                let Some(room) = portal.room() else {
                    return Ok(());
                };
                let network = self.network_of(&portal.key)?;
                if let Some(login) = &login
                    && login.own_user() == user
                {
                    let reason = format!("You left this chat on {}", network.display_name());
                    self.intents.kick(&room, &login.user, &reason).await?;
                    return Ok(());
                }
                let Some(ghost) =
                    ghost_user_id(network.as_ref(), &self.config.homeserver.domain, user)
                else {
                    return Ok(());
                };
                match self.intents.leave(&room, &ghost).await {
                    Ok(()) => Ok(()),
                    // Not in the room (never joined): nothing to do.
                    Err(MatrixError::Api {
                        status: 403 | 404, ..
                    }) => Ok(()),
                    Err(err) => Err(err.into()),
                }
            }
        }
    }

    /// The ghost (or, for the login's own account, nobody: we cannot act as a Matrix user) that
    /// stands for a remote user in receipts and typing.
    /// A read receipt (`read`: `user` read up to the message in `ids`) or a delivery receipt
    /// (the messages in `ids` reached `user`: the send status of those sent from Matrix says
    /// so). Messages ferry never bridged are passed over.
    async fn remote_receipt(
        &self,
        portal: &PortalState,
        login: Option<&LoginHandle>,
        user: &RemoteUserId,
        ids: &[MessageId],
        read: bool,
    ) -> Result<(), BridgeError> {
        let (Some(login), Some(room)) = (login, portal.room()) else {
            return Ok(());
        };
        let Some(by) = self.puppet_of(login, user)? else {
            return Ok(());
        };
        let (network, chat, receiver) = portal.db_key();
        for id in ids {
            let Some(row) = self
                .db
                .message_by_remote(network, chat, receiver, id.as_str())
                .await?
                .pop()
            else {
                continue;
            };
            let event = OwnedEventId::try_from(row.event_id)
                .map_err(|e| BridgeError::Invalid(e.to_string()))?;
            if read {
                self.intents.read_receipt(&room, &by, &event).await?;
                continue;
            }
            // Only messages from Matrix users have a send status to update.
            let from_matrix = OwnedUserId::try_from(row.sender_mxid.as_str())
                .is_ok_and(|sender| !self.is_our_user(&sender));
            if from_matrix {
                self.report_delivered(&room, &event, network, &by).await;
            }
        }
        Ok(())
    }

    fn puppet_of(
        &self,
        login: &LoginHandle,
        user: &RemoteUserId,
    ) -> Result<Option<OwnedUserId>, BridgeError> {
        if login.own_user() == user {
            return Ok(None);
        }
        let network = self.network_of_login(login)?;
        Ok(ghost_user_id(
            network.as_ref(),
            &self.config.homeserver.domain,
            user,
        ))
    }

    /// Resolves mention targets to (mxid, display name) before rendering.
    async fn mention_names(
        &self,
        login: Option<&LoginHandle>,
        text: &FormattedText,
    ) -> Vec<(MentionTarget, (String, String))> {
        let mut names: Vec<(MentionTarget, (String, String))> = Vec::new();
        for entity in &text.entities {
            let EntityKind::Mention(target) = &entity.kind else {
                continue;
            };
            if names.iter().any(|(t, _)| t == target) {
                continue;
            }
            let resolved = match target {
                MentionTarget::Matrix(mxid) => Some((mxid.clone(), mxid.clone())),
                MentionTarget::Remote(remote) => match login {
                    Some(login) if login.own_user() == remote => {
                        Some((login.user.to_string(), login.remote_name.clone()))
                    }
                    Some(login) => {
                        let network = self.network_of_login(login).ok();
                        let ghost = network.as_ref().and_then(|n| {
                            ghost_user_id(n.as_ref(), &self.config.homeserver.domain, remote)
                        });
                        match ghost {
                            Some(ghost) => {
                                let name = self
                                    .db
                                    .get_ghost_by_mxid(ghost.as_str())
                                    .await
                                    .ok()
                                    .flatten()
                                    .and_then(|g| g.name);
                                Some((
                                    ghost.to_string(),
                                    name.unwrap_or_else(|| remote.to_string()),
                                ))
                            }
                            None => None,
                        }
                    }
                    None => None,
                },
            };
            if let Some(resolved) = resolved {
                names.push((target.clone(), resolved));
            }
        }
        names
    }

    async fn remote_message(
        self: &Arc<Self>,
        portal: &mut PortalState,
        login: Option<&LoginHandle>,
        message: &RemoteMessage,
    ) -> Result<(), BridgeError> {
        let (network_id, chat, receiver) = portal.db_key();
        let (network_id, chat, receiver) =
            (network_id.to_owned(), chat.to_owned(), receiver.to_owned());
        if !self
            .db
            .message_by_remote(&network_id, &chat, &receiver, message.id.as_str())
            .await?
            .is_empty()
        {
            return Ok(());
        }
        let room = self.ensure_portal_room(portal, login, None).await?;
        let network = self.network_of(&portal.key)?;
        let session = login.map(|l| l.session.as_ref());
        let ghost = self
            .ensure_ghost(network.as_ref(), &message.sender, session)
            .await?;
        self.intents.ensure_joined(&room, &ghost).await?;
        let (event_type, mut content) = self
            .render_content(login, &message.content, &network.capabilities())
            .await?;
        if let Some(reply_to) = &message.reply_to
            && let Some(target) = self
                .db
                .message_by_remote(&network_id, &chat, &receiver, reply_to.as_str())
                .await?
                .first()
        {
            content["m.relates_to"] = json!({"m.in_reply_to": {"event_id": target.event_id}});
        }
        let txn = matrix_txn_id(&portal.key, "message", message.id.as_str());
        let event_id = self
            .intents
            .send_event(&room, &ghost, event_type, &txn, &content)
            .await?;
        self.db
            .insert_message(&MessageRow {
                network: network_id,
                chat_id: chat,
                receiver,
                remote_id: message.id.as_str().to_owned(),
                part_id: String::new(),
                event_id: event_id.to_string(),
                room_id: room.to_string(),
                sender_remote: message.sender.id.as_str().to_owned(),
                sender_mxid: ghost.to_string(),
                ts: message.timestamp,
            })
            .await?;
        Ok(())
    }

    /// Matrix content for a remote message; media is streamed from the network to the media
    /// repository. A file over the network's limit becomes a notice-like text instead.
    async fn render_content(
        &self,
        login: Option<&LoginHandle>,
        content: &MessageContent,
        caps: &crate::network::Capabilities,
    ) -> Result<(&'static str, serde_json::Value), BridgeError> {
        let mut texts: Vec<&FormattedText> = Vec::new();
        let mut media_url = None;
        match content {
            MessageContent::Text(text) => texts.push(text),
            MessageContent::Media { media, caption } => {
                if let Some(caption) = caption {
                    texts.push(caption);
                }
                let login = login
                    .ok_or_else(|| BridgeError::Invalid("media without a session".to_owned()))?;
                if caps.max_file_size > 0 && media.size > caps.max_file_size {
                    return Ok((
                        "m.room.message",
                        json!({"msgtype": "m.notice", "body": format!("⚠️ {} ({} bytes) is too large to bridge.", media.name, media.size)}),
                    ));
                }
                let stream = login.session.download_media(&media.id).await?;
                media_url = Some(
                    self.intents
                        .client()
                        .upload_media(stream, &media.name)
                        .await?
                        .to_string(),
                );
            }
            _ => {}
        }
        let mut names = Vec::new();
        for text in texts {
            names.extend(self.mention_names(login, text).await);
        }
        Ok(convert::to_matrix_content(
            content,
            media_url.as_deref(),
            &|target| {
                names
                    .iter()
                    .find(|(t, _)| t == target)
                    .map(|(_, n)| n.clone())
            },
        ))
    }

    async fn remote_edit(
        &self,
        portal: &mut PortalState,
        login: &LoginHandle,
        id: &MessageId,
        sender: &UserInfo,
        content: &MessageContent,
        timestamp: i64,
    ) -> Result<(), BridgeError> {
        let Some(room) = portal.room() else {
            return Ok(());
        };
        let (network_id, chat, receiver) = portal.db_key();
        let Some(original) = self
            .db
            .message_by_remote(network_id, chat, receiver, id.as_str())
            .await?
            .pop()
        else {
            return Ok(());
        };
        let network = self.network_of(&portal.key)?;
        let ghost = self
            .ensure_ghost(network.as_ref(), sender, Some(login.session.as_ref()))
            .await?;
        let (_, new_content) = self
            .render_content(Some(login), content, &network.capabilities())
            .await?;
        let mut body = new_content.clone();
        body["body"] = json!(format!(
            "* {}",
            new_content["body"].as_str().unwrap_or_default()
        ));
        if let Some(html) = new_content["formatted_body"].as_str() {
            body["formatted_body"] = json!(format!("* {html}"));
        }
        body["m.new_content"] = new_content;
        body["m.relates_to"] = json!({"rel_type": "m.replace", "event_id": original.event_id});
        // Each edit gets its own transaction id (the edit timestamp tells edits apart).
        let txn = matrix_txn_id(&portal.key, "edit", &format!("{id}\0{timestamp}"));
        self.intents
            .send_event(&room, &ghost, "m.room.message", &txn, &body)
            .await?;
        self.db.count_edit(&original.event_id).await?;
        Ok(())
    }

    async fn remote_delete(
        &self,
        portal: &mut PortalState,
        room: &RoomId,
        login: Option<&LoginHandle>,
        id: &MessageId,
        by: &RemoteUserId,
    ) -> Result<(), BridgeError> {
        let (network_id, chat, receiver) = portal.db_key();
        let parts = self
            .db
            .message_by_remote(network_id, chat, receiver, id.as_str())
            .await?;
        let redactor = match login {
            Some(login) => self
                .puppet_of(login, by)?
                .unwrap_or_else(|| self.intents.bot().to_owned()),
            None => self.intents.bot().to_owned(),
        };
        for part in &parts {
            let event = OwnedEventId::try_from(part.event_id.as_str())
                .map_err(|e| BridgeError::Invalid(e.to_string()))?;
            // The deleter's ghost may lack the power to redact others' messages: the bot has it.
            if self
                .intents
                .redact(room, &redactor, &event, None)
                .await
                .is_err()
            {
                self.intents
                    .redact(
                        room,
                        self.intents.bot(),
                        &event,
                        Some("Deleted on the remote network"),
                    )
                    .await?;
            }
        }
        self.db
            .delete_message(network_id, chat, receiver, id.as_str())
            .await?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn remote_reaction(
        &self,
        portal: &mut PortalState,
        room: &RoomId,
        login: &LoginHandle,
        target: &MessageId,
        sender: &UserInfo,
        emoji: &str,
        removed: bool,
    ) -> Result<(), BridgeError> {
        let (network_id, chat, receiver) = portal.db_key();
        let (network_id, chat, receiver) =
            (network_id.to_owned(), chat.to_owned(), receiver.to_owned());
        let existing = self
            .db
            .reaction_by_key(
                (&network_id, &chat, &receiver),
                target.as_str(),
                sender.id.as_str(),
                emoji,
            )
            .await?;
        let network = self.network_of(&portal.key)?;
        let reactor = match self.puppet_of(login, &sender.id)? {
            Some(_) => {
                self.ensure_ghost(network.as_ref(), sender, Some(login.session.as_ref()))
                    .await?
            }
            // Our own account reacted elsewhere: show it from the bot rather than lose it.
            None => self.intents.bot().to_owned(),
        };
        if removed {
            if let Some(reaction) = existing {
                let event = OwnedEventId::try_from(reaction.event_id.as_str())
                    .map_err(|e| BridgeError::Invalid(e.to_string()))?;
                self.intents.redact(room, &reactor, &event, None).await?;
                self.db.delete_reaction(&reaction.event_id).await?;
            }
            return Ok(());
        }
        if existing.is_some() {
            return Ok(());
        }
        let Some(message) = self
            .db
            .message_by_remote(&network_id, &chat, &receiver, target.as_str())
            .await?
            .pop()
        else {
            return Ok(());
        };
        self.intents.ensure_joined(room, &reactor).await?;
        let content = json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": message.event_id, "key": emoji}});
        let txn = matrix_txn_id(
            &portal.key,
            "reaction",
            &format!("{target}\0{}\0{emoji}", sender.id),
        );
        let event_id = self
            .intents
            .send_event(room, &reactor, "m.reaction", &txn, &content)
            .await?;
        self.db
            .insert_reaction(&ReactionRow {
                network: network_id,
                chat_id: chat,
                receiver,
                message_id: target.as_str().to_owned(),
                part_id: String::new(),
                sender_remote: sender.id.as_str().to_owned(),
                emoji: emoji.to_owned(),
                event_id: event_id.to_string(),
                ts: crate::db::now_ms(),
            })
            .await?;
        Ok(())
    }
}
