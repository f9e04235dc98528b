//! Read receipts and group changes go through the remote inbox like messages (see
//! [`super::super::inbox`]): stored when they arrive, bridged from the inbox in order with the
//! messages, so a restart in between loses none.

use whatsapp_rust::Jid;

use super::{Inner, chat_of_event, lock};
use crate::network::{
    ChatKind, RemoteEvent, RemoteMessage,
    whatsapp::{
        disappearing, groups, ids,
        inbox::{InboxEvent, InboxHook, Stored},
    },
};

impl Inner {
    /// A group change, stored in the inbox (bridged by `deliver_event`).
    pub(super) async fn group_update(&self, g: &whatsapp_rust::wacore::types::events::GroupUpdate) {
        use whatsapp_rust::wacore::stanza::groups::GroupNotificationAction as A;
        let group = g.group_jid.to_string();
        let members = |ps: &[whatsapp_rust::wacore::stanza::groups::GroupParticipantInfo]| {
            ps.iter()
                .map(|p| {
                    (
                        p.jid.to_string(),
                        p.phone_number.as_ref().map(ToString::to_string),
                    )
                })
                .collect::<Vec<_>>()
        };
        let event = match &g.action {
            // A group linked to (or unlinked from) a community: the notification goes to the
            // community and names the groups; each group's place is read again.
            A::Link { raw, .. } | A::Unlink { raw, .. } => {
                for sub in raw.get_children_by_tag("group") {
                    if let Some(jid) = sub.attrs().optional_jid("jid") {
                        self.store_event(InboxEvent::GroupParent {
                            group: jid.to_string(),
                        })
                        .await;
                    }
                }
                return;
            }
            A::Add { participants, .. } => InboxEvent::MembersAdded {
                group,
                members: members(participants),
            },
            A::Remove { participants, .. } => InboxEvent::MembersRemoved {
                group,
                members: members(participants),
            },
            A::Ephemeral { expiration, .. } => InboxEvent::GroupTimer {
                group,
                seconds: *expiration,
                by: g.participant.as_ref().map(|p| {
                    (
                        p.to_string(),
                        g.participant_pn.as_ref().map(ToString::to_string),
                    )
                }),
                notification: g.notification_id.clone(),
                timestamp: g.timestamp.timestamp_millis(),
            },
            // Subject, description, admins: the chat's details again.
            _ => InboxEvent::GroupChanged { group },
        };
        self.store_event(event).await;
    }

    /// Writes a receipt or group change to the inbox and hands it to the running session.
    pub(super) async fn store_event(&self, event: InboxEvent) {
        let Some(feed) = lock(&self.history_feed).clone() else {
            return;
        };
        if let Err(err) = InboxHook::push(
            &self.shared.db,
            self.login.as_str(),
            &feed,
            Stored::event(event),
        )
        .await
        {
            tracing::warn!(%err, "cannot store a WhatsApp event");
        }
    }

    /// Bridges a stored receipt or group change.
    pub(super) async fn deliver_event(&self, position: i64, event: &InboxEvent) -> bool {
        let parse = |s: &str| s.parse::<Jid>().ok();
        let members_of = |members: &[(String, Option<String>)]| {
            members
                .iter()
                .filter_map(|(jid, alt)| {
                    self.canonical(&parse(jid)?, alt.as_deref().and_then(parse).as_ref())
                })
                .collect::<Vec<_>>()
        };
        let group_chat = |group: &str| parse(group).as_ref().and_then(ids::chat_of);
        match event {
            InboxEvent::Read {
                chat,
                reader,
                reader_alt,
                message,
            } => {
                let (Some(chat_jid), Some(reader_jid)) = (parse(chat), parse(reader)) else {
                    return true;
                };
                let alt = reader_alt.as_deref().and_then(parse);
                let Some(reader) = self.canonical(&reader_jid, alt.as_ref()) else {
                    return true;
                };
                let Some((chat, kind)) = chat_of_event(&chat_jid, &reader) else {
                    return true;
                };
                let up_to = ids::message_id(&self.own, message);
                self.emit(
                    kind,
                    Some(position),
                    RemoteEvent::Read {
                        chat,
                        user: reader,
                        up_to,
                    },
                )
                .await
            }
            InboxEvent::MembersAdded { group, members } => {
                let Some(chat) = group_chat(group) else {
                    return true;
                };
                let users = members_of(members);
                let last = users.len();
                for (i, user) in users.into_iter().enumerate() {
                    let joined = RemoteEvent::MemberJoined {
                        chat: chat.clone(),
                        user: self.user_info(&user),
                    };
                    let checkpoint = (i + 1 == last).then_some(position);
                    if !self.emit(ChatKind::Group, checkpoint, joined).await {
                        return false;
                    }
                }
                true
            }
            InboxEvent::MembersRemoved { group, members } => {
                let Some(chat) = group_chat(group) else {
                    return true;
                };
                let users = members_of(members);
                let last = users.len();
                for (i, user) in users.into_iter().enumerate() {
                    let left = RemoteEvent::MemberLeft {
                        chat: chat.clone(),
                        user,
                    };
                    let checkpoint = (i + 1 == last).then_some(position);
                    if !self.emit(ChatKind::Group, checkpoint, left).await {
                        return false;
                    }
                }
                true
            }
            InboxEvent::GroupTimer {
                group,
                seconds,
                by,
                notification,
                timestamp,
            } => {
                let Some(chat) = group_chat(group) else {
                    return true;
                };
                // The group's timer changed (an admin's setting): kept, and told in the room.
                self.timers().set_timer(&chat, *seconds).await;
                let who = by.as_ref().and_then(|(jid, alt)| {
                    self.canonical(&parse(jid)?, alt.as_deref().and_then(parse).as_ref())
                });
                let (Some(who), Some(id)) = (who, notification.as_deref()) else {
                    return true;
                };
                let notice = RemoteEvent::Message {
                    chat,
                    message: RemoteMessage {
                        id: ids::message_id(&who, &format!("{id}-timer")),
                        sender: self.user_info(&who),
                        content: disappearing::notice(*seconds),
                        reply_to: None,
                        timestamp: *timestamp,
                    },
                };
                self.emit(ChatKind::Group, Some(position), notice).await
            }
            InboxEvent::GroupParent { group } => {
                let Some(chat) = group_chat(group) else {
                    return true;
                };
                let layout = match self.client() {
                    Ok(client) => groups::layout(&client, &chat).await,
                    Err(err) => Err(err),
                };
                match layout {
                    Ok(layout) => {
                        let moved = RemoteEvent::ChatParent {
                            chat,
                            parent: layout.parent,
                        };
                        self.emit(ChatKind::Group, Some(position), moved).await
                    }
                    // Not a member of that group (no portal either), or WhatsApp not reachable:
                    // the group's place is read again when its portal is next made.
                    Err(err) => {
                        tracing::warn!(%err, "cannot read a WhatsApp group's community");
                        true
                    }
                }
            }
            InboxEvent::GroupChanged { group } => {
                let Some(chat) = group_chat(group) else {
                    return true;
                };
                match self.group_info(&chat).await {
                    Ok(info) => {
                        self.emit(ChatKind::Group, Some(position), RemoteEvent::Chat(info))
                            .await
                    }
                    Err(err) => {
                        tracing::warn!(%err, "cannot refresh a WhatsApp group");
                        true
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_older_rows_still_read() {
        let stored = Stored::event(InboxEvent::MembersAdded {
            group: "1203630000@g.us".to_owned(),
            members: vec![(
                "211111111111111@lid".to_owned(),
                Some("5511900000002@s.whatsapp.net".to_owned()),
            )],
        });
        let json = serde_json::to_string(&stored).expect("json");
        let back: Stored = serde_json::from_str(&json).expect("reads back");
        match back.event {
            Some(InboxEvent::MembersAdded { group, members }) => {
                assert_eq!(group, "1203630000@g.us");
                assert_eq!(members.len(), 1);
            }
            other => panic!("not the event: {other:?}"),
        }
        // A message row written before events existed has no `event` field.
        let old = r#"{"chat":"5511900000002@s.whatsapp.net","sender":"5511900000002@s.whatsapp.net",
            "from_me":false,"is_group":false,"id":"3EB0","timestamp":1,"message":""}"#;
        let old: Stored = serde_json::from_str(old).expect("old row");
        assert!(old.event.is_none());
        // And a message row does not grow an `event` field.
        assert!(!serde_json::to_string(&old).expect("json").contains("event"));
    }
}
