//! A portal's room: created on first sight with every member, then kept in line with the remote
//! chat (name, topic, picture, members, admins as power level 50), and torn down when the chat
//! is gone.

use std::sync::Arc;

use ruma::{OwnedRoomId, OwnedUserId, RoomId};
use serde_json::json;

use super::{PortalState, is_permanent};
use crate::{
    bridge::{Bridge, BridgeError, ghost::ghost_user_id, login::LoginHandle},
    db::portals::PortalRow,
    matrix::intent::RoomSpec,
    network::{Capabilities, ChatInfo, ChatKind, LoginId, NetworkError, RoomLayout, UserInfo},
};

/// Power level given to remote admins' ghosts (and the portal's own users).
pub(super) const ADMIN_LEVEL: i64 = 50;

/// The `com.beeper.room_features`-style capability state: what will and will not cross.
pub(super) fn capability_content(network: &str, caps: &Capabilities) -> serde_json::Value {
    json!({
        "network": network,
        "formatting": caps.formatting,
        "edit": caps.edits,
        "delete": caps.deletes,
        "reaction": caps.reactions,
        "multiple_reactions": caps.multiple_reactions,
        "reply": caps.replies,
        "read_receipts": caps.receipts,
        "typing_notifications": caps.typing,
        "presence": caps.presence,
        "file": {"enabled": caps.media, "max_size": caps.max_file_size},
        "location_message": caps.locations,
        "contact_message": caps.contacts,
        "chat_details": caps.chat_details,
        "member_management": caps.group_membership,
    })
}

pub(super) const CAPABILITY_EVENT: &str = "net.ferry.capabilities";

impl Bridge {
    pub(super) async fn portal_sync(
        self: &Arc<Self>,
        portal: &mut PortalState,
        login: &LoginId,
        info: &ChatInfo,
    ) -> Result<(), BridgeError> {
        let Some(login) = self.login_handle(portal.key.network, login) else {
            return Ok(());
        };
        self.sync_with(portal, &login, info).await
    }

    /// Creates the room if needed, else brings details and members in line with `info`.
    pub(super) async fn sync_with(
        &self,
        portal: &mut PortalState,
        login: &LoginHandle,
        info: &ChatInfo,
    ) -> Result<(), BridgeError> {
        let Some(room) = portal.room() else {
            self.ensure_portal_room(portal, Some(login), Some(info))
                .await?;
            return Ok(());
        };
        if info.kind == ChatKind::Group {
            self.sync_details(portal, &room, login, info).await?;
        }
        for member in &info.members {
            self.add_member(&room, login, member).await?;
        }
        for admin in &info.admins {
            if let Some(user) = self.member_mxid(login, admin)? {
                self.intents
                    .set_power_level(&room, &user, ADMIN_LEVEL)
                    .await?;
            }
        }
        if info.kind == ChatKind::Group {
            self.demote_former_admins(&room, login, info).await?;
            if let Some(read_only) = info.read_only {
                let level = if read_only { ADMIN_LEVEL } else { 0 };
                self.intents.set_events_default(&room, level).await?;
            }
        }
        Ok(())
    }

    /// Ghosts that hold the admin level but are no longer remote admins lose it.
    async fn demote_former_admins(
        &self,
        room: &RoomId,
        login: &LoginHandle,
        info: &ChatInfo,
    ) -> Result<(), BridgeError> {
        let levels = self
            .intents
            .state(room, "m.room.power_levels", "")
            .await?
            .unwrap_or_default();
        for member in &info.members {
            if info.admins.contains(&member.id) || login.own_user() == &member.id {
                continue;
            }
            let Some(user) = self.member_mxid(login, &member.id)? else {
                continue;
            };
            let level = levels
                .get("users")
                .and_then(|u| u.get(user.as_str()))
                .and_then(serde_json::Value::as_i64);
            if level == Some(ADMIN_LEVEL) {
                self.intents.set_power_level(room, &user, 0).await?;
            }
        }
        Ok(())
    }

    /// The Matrix user standing for a remote member: the login's own Matrix user, or a ghost.
    fn member_mxid(
        &self,
        login: &LoginHandle,
        user: &crate::network::RemoteUserId,
    ) -> Result<Option<OwnedUserId>, BridgeError> {
        if login.own_user() == user {
            return Ok(Some(login.user.clone()));
        }
        let network = self.network_of_login(login)?;
        Ok(ghost_user_id(
            network.as_ref(),
            &self.config.homeserver.domain,
            user,
        ))
    }

    /// Name, topic and picture of a group.
    async fn sync_details(
        &self,
        portal: &mut PortalState,
        room: &RoomId,
        login: &LoginHandle,
        info: &ChatInfo,
    ) -> Result<(), BridgeError> {
        let Some(row) = portal.row.as_mut() else {
            return Ok(());
        };
        let bot = self.intents.bot().to_owned();
        let mut changed = false;
        if info.name.is_some() && info.name != row.name {
            let name = info.name.clone().unwrap_or_default();
            self.intents
                .send_state(room, &bot, "m.room.name", "", &json!({"name": name}))
                .await?;
            row.name = info.name.clone();
            changed = true;
        }
        if info.topic != row.topic {
            let topic = info.topic.clone().unwrap_or_default();
            self.intents
                .send_state(room, &bot, "m.room.topic", "", &json!({"topic": topic}))
                .await?;
            row.topic = info.topic.clone();
            changed = true;
        }
        // avatar_mxc stores "<remote id> <mxc>" so a change of picture is noticed.
        let stored_avatar = row
            .avatar_mxc
            .as_deref()
            .and_then(|a| a.split_once(' '))
            .map(|(id, _)| id.to_owned());
        if info.avatar != stored_avatar {
            let content = match &info.avatar {
                Some(id) => {
                    let media = login.session.download_media(id).await?;
                    let mxc = self.intents.client().upload_media(media, "avatar").await?;
                    row.avatar_mxc = Some(format!("{id} {mxc}"));
                    json!({"url": mxc})
                }
                None => {
                    row.avatar_mxc = None;
                    json!({})
                }
            };
            self.intents
                .send_state(room, &bot, "m.room.avatar", "", &content)
                .await?;
            changed = true;
        }
        if changed {
            self.db.upsert_portal(row).await?;
        }
        Ok(())
    }

    pub(super) async fn add_member(
        &self,
        room: &RoomId,
        login: &LoginHandle,
        user: &UserInfo,
    ) -> Result<(), BridgeError> {
        if login.own_user() == &user.id {
            return Ok(self
                .intents
                .invite(room, &login.user, self.intents.bot())
                .await?);
        }
        let network = self.network_of_login(login)?;
        let ghost = self
            .ensure_ghost(network.as_ref(), user, Some(login.session.as_ref()))
            .await?;
        Ok(self.intents.ensure_joined(room, &ghost).await?)
    }

    /// The portal's room, created (with every member) if it has none yet.
    pub(super) async fn ensure_portal_room(
        &self,
        portal: &mut PortalState,
        login: Option<&LoginHandle>,
        info: Option<&ChatInfo>,
    ) -> Result<OwnedRoomId, BridgeError> {
        if let Some(room) = portal.room() {
            return Ok(room);
        }
        let login = login.ok_or(BridgeError::Network(NetworkError::NotConnected(
            portal.key.network,
        )))?;
        let info = match info {
            Some(info) => info.clone(),
            None => login.session.chat_info(&portal.key.chat).await?,
        };
        let network = self.network_of(&portal.key)?;
        let layout = match login.session.room_layout(&portal.key.chat).await {
            Ok(layout) => layout,
            Err(err) if err.is_transient() => return Err(err.into()),
            Err(err) => {
                tracing::warn!(%err, portal = %portal.key, "no room layout; an ordinary room");
                RoomLayout::default()
            }
        };
        let parent_room = match &layout.parent {
            Some(parent) => Some(self.space_room(&portal.key, parent).await?),
            None => None,
        };
        let mut ghosts: Vec<OwnedUserId> = Vec::new();
        for member in info.members.iter().filter(|m| &m.id != login.own_user()) {
            ghosts.push(
                self.ensure_ghost(network.as_ref(), member, Some(login.session.as_ref()))
                    .await?,
            );
        }
        let key = &portal.key;
        let bridge_info = json!({
            "bridgebot": self.intents.bot(),
            "creator": self.intents.bot(),
            "protocol": {"id": key.network.as_str(), "displayname": network.display_name()},
            "channel": {"id": key.chat.as_str(), "displayname": info.name},
        });
        let state_key = format!("ferry://{}/{}", key.network, key.chat);
        let mut invite = vec![login.user.clone()];
        invite.extend(ghosts.iter().cloned());
        // In a read-only chat (a channel) only its admins may post, the login's user included.
        let mut power_users = Vec::new();
        if !layout.read_only || info.admins.contains(login.own_user()) {
            power_users.push((login.user.clone(), ADMIN_LEVEL));
        }
        for admin in &info.admins {
            if let Some(user) = self.member_mxid(login, admin)?
                && user != login.user
            {
                power_users.push((user, ADMIN_LEVEL));
            }
        }
        let mut initial_state = vec![
            (
                "m.bridge".to_owned(),
                state_key.clone(),
                bridge_info.clone(),
            ),
            ("uk.half-shot.bridge".to_owned(), state_key, bridge_info),
            (
                CAPABILITY_EVENT.to_owned(),
                String::new(),
                capability_content(key.network.as_str(), &network.capabilities()),
            ),
        ];
        let domain = &self.config.homeserver.domain;
        if let Some(parent) = &parent_room {
            initial_state.push((
                "m.space.parent".to_owned(),
                parent.to_string(),
                json!({"via": [domain], "canonical": true}),
            ));
        }
        let mut avatar_row = None;
        if let (ChatKind::Group, Some(avatar)) = (info.kind, &info.avatar) {
            match login.session.download_media(avatar).await {
                Ok(media) => match self.intents.client().upload_media(media, "avatar").await {
                    Ok(mxc) => {
                        initial_state.push((
                            "m.room.avatar".to_owned(),
                            String::new(),
                            json!({"url": mxc}),
                        ));
                        avatar_row = Some(format!("{avatar} {mxc}"));
                    }
                    Err(err) => tracing::warn!(%err, "cannot upload group picture"),
                },
                Err(err) => tracing::warn!(%err, "cannot download group picture"),
            }
        }
        let spec = RoomSpec {
            room_type: layout.space.then(|| "m.space".to_owned()),
            events_default: layout.read_only.then_some(ADMIN_LEVEL),
            name: (info.kind == ChatKind::Group)
                .then(|| info.name.clone())
                .flatten(),
            topic: info.topic.clone(),
            is_direct: info.kind == ChatKind::Dm,
            invite,
            initial_state,
            power_users,
        };
        let room = self.intents.create_room(spec).await?;
        let row = PortalRow {
            network: key.network.as_str().to_owned(),
            chat_id: key.chat.as_str().to_owned(),
            receiver: key.receiver_str().to_owned(),
            room_id: Some(room.to_string()),
            kind: info.kind.as_str().to_owned(),
            name: info.name.clone(),
            topic: info.topic.clone(),
            avatar_mxc: avatar_row,
            relay_login: None,
        };
        self.db.upsert_portal(&row).await?;
        self.db
            .set_portal_room(
                &row.network,
                &row.chat_id,
                &row.receiver,
                Some(room.as_str()),
            )
            .await?;
        portal.row = Some(row);
        self.remember_room(room.clone(), key.clone());
        self.metrics.portals.inc();
        tracing::info!(portal = %key, %room, "portal room created");
        if let Some(parent) = &parent_room {
            self.space_child(parent, &room, true).await?;
        }
        for ghost in &ghosts {
            self.intents.ensure_joined(&room, ghost).await?;
        }
        Ok(room)
    }

    /// Lists `room` among the children of `space` (or withdraws it), as the bot.
    async fn space_child(
        &self,
        space: &RoomId,
        room: &RoomId,
        listed: bool,
    ) -> Result<(), BridgeError> {
        let content = if listed {
            json!({"via": [&self.config.homeserver.domain]})
        } else {
            json!({})
        };
        let bot = self.intents.bot().to_owned();
        self.intents
            .send_state(space, &bot, "m.space.child", room.as_str(), &content)
            .await?;
        Ok(())
    }

    /// Puts a portal's room in the space of `parent` (another portal), or takes it out of the
    /// space it is in (`None`): both the space's child link and the room's parent link, so
    /// clients show the change from either side. What is already so is left as it is.
    pub(super) async fn move_to_space(
        &self,
        key: &crate::network::PortalKey,
        room: &RoomId,
        parent: Option<&crate::network::ChatId>,
    ) -> Result<(), BridgeError> {
        let target = match parent {
            Some(parent) => Some(self.space_room(key, parent).await?),
            None => None,
        };
        let current = self.intents.state_keys(room, "m.space.parent").await?;
        let stays = |space: &str| target.as_ref().is_some_and(|t| t.as_str() == space);
        let already = match &target {
            None => current.is_empty(),
            Some(t) => current.iter().map(String::as_str).eq([t.as_str()]),
        };
        if already {
            return Ok(());
        }
        let bot = self.intents.bot().to_owned();
        for old in current.iter().filter(|c| !stays(c)) {
            // The room's side first, then the space's (as when linking), so a client that
            // sees the space without the room also finds the room without the space.
            self.intents
                .send_state(room, &bot, "m.space.parent", old, &json!({}))
                .await?;
            if let Ok(old_space) = OwnedRoomId::try_from(old.as_str()) {
                // The space may be gone or no longer the bot's: the room's side is done.
                if let Err(err) = self.space_child(&old_space, room, false).await {
                    if !is_permanent(&err) {
                        return Err(err);
                    }
                    tracing::warn!(%err, space = %old_space, "cannot withdraw a space child");
                }
            }
        }
        if let Some(space) = target
            && !current.iter().any(|c| c == space.as_str())
        {
            self.intents
                .send_state(
                    room,
                    &bot,
                    "m.space.parent",
                    space.as_str(),
                    &json!({"via": [&self.config.homeserver.domain], "canonical": true}),
                )
                .await?;
            self.space_child(&space, room, true).await?;
        }
        tracing::info!(portal = %key, %room, space = ?parent, "portal's space changed");
        Ok(())
    }

    /// The room of the space `parent` that the portal `child` belongs to. The space is another
    /// portal, created in its own lane (the network announces it first): until it exists the
    /// child's event fails transiently and its lane retries.
    async fn space_room(
        &self,
        child: &crate::network::PortalKey,
        parent: &crate::network::ChatId,
    ) -> Result<OwnedRoomId, BridgeError> {
        let row = self
            .db
            .get_portal(child.network.as_str(), parent.as_str(), "")
            .await?;
        match row.and_then(|r| r.room_id) {
            Some(room) => {
                OwnedRoomId::try_from(room).map_err(|e| BridgeError::Invalid(e.to_string()))
            }
            None => Err(BridgeError::Network(NetworkError::Transient(format!(
                "the space {parent} of {} has no room yet",
                child.chat
            )))),
        }
    }

    /// Removes the bridge from a portal's room and forgets the portal: used when the remote
    /// chat is deleted and by `delete-portal`.
    pub(crate) async fn teardown_portal(
        &self,
        portal: &mut PortalState,
        reason: &str,
    ) -> Result<(), BridgeError> {
        let Some(room) = portal.room() else {
            return Ok(());
        };
        self.notice(&room, reason).await;
        let members = self.room_members(&room).await.unwrap_or_default();
        for member in members {
            if member == self.intents.bot() {
                continue;
            }
            let outcome = if self.is_our_user(&member) {
                self.intents.leave(&room, &member).await
            } else {
                self.intents.kick(&room, &member, reason).await
            };
            if let Err(err) = outcome {
                let err = BridgeError::from(err);
                if !is_permanent(&err) {
                    return Err(err);
                }
            }
        }
        let _ = self.intents.leave(&room, self.intents.bot()).await;
        let (network, chat, receiver) = portal.db_key();
        self.db.delete_portal(network, chat, receiver).await?;
        self.forget_room(&room);
        self.metrics.portals.dec();
        portal.row = None;
        Ok(())
    }

    async fn room_members(&self, room: &RoomId) -> Result<Vec<OwnedUserId>, BridgeError> {
        let request =
            ruma::api::client::membership::joined_members::v3::Request::new(room.to_owned());
        let response = self.intents.client().send(request, None).await?;
        Ok(response.joined.into_keys().collect())
    }
}
