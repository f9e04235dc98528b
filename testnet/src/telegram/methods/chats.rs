//! Users, dialogs, chat and channel info, participants and forum topics.

use grammers_tl_types::{self as tl, Serializable as _};
use tl::{enums, functions as f, types};

use super::{input_channel, input_user};
use crate::telegram::state::{BoxRef, PeerKey, RpcErr, World};
use crate::telegram::tl as build;
use crate::telegram::tl_defaults as d;

pub fn get_full_user(w: &World, me: i64, req: f::users::GetFullUser) -> Result<Vec<u8>, RpcErr> {
    let id = input_user(w, me, &req.id)?;
    let (users, _) = build::everything_for(w, me);
    Ok(enums::users::UserFull::Full(types::users::UserFull {
        full_user: enums::UserFull::Full(types::UserFull {
            id,
            about: Some(String::new()),
            ..d::user_full()
        }),
        chats: Vec::new(),
        users,
    })
    .to_bytes())
}

pub fn resolve_username(
    w: &World,
    me: i64,
    req: f::contacts::ResolveUsername,
) -> Result<Vec<u8>, RpcErr> {
    let peer = w
        .resolve_username(&req.username)
        .ok_or_else(|| RpcErr::bad("USERNAME_NOT_OCCUPIED"))?;
    let (users, chats) = build::everything_for(w, me);
    let chats = match peer {
        PeerKey::Channel(c) => build::chat_tl(w, me, PeerKey::Channel(c))
            .into_iter()
            .chain(chats)
            .collect(),
        _ => chats,
    };
    Ok(
        enums::contacts::ResolvedPeer::Peer(types::contacts::ResolvedPeer {
            peer: build::peer_tl(peer),
            chats,
            users,
        })
        .to_bytes(),
    )
}

pub fn get_dialogs(w: &World, me: i64) -> Result<Vec<u8>, RpcErr> {
    let u = w.user(me)?;
    let mut tops: std::collections::BTreeMap<PeerKey, i32> = std::collections::BTreeMap::new();
    for m in u.mbox.messages.values() {
        let e = tops.entry(m.peer).or_insert(0);
        *e = (*e).max(m.id);
    }
    let mut dialogs = Vec::new();
    let mut messages = Vec::new();
    for (peer, top) in &tops {
        let unread = u
            .mbox
            .messages
            .values()
            .filter(|m| m.peer == *peer && !m.out && m.id > *u.read_inbox.get(peer).unwrap_or(&0))
            .count() as i32;
        dialogs.push(enums::Dialog::Dialog(types::Dialog {
            peer: build::peer_tl(*peer),
            top_message: *top,
            read_inbox_max_id: *u.read_inbox.get(peer).unwrap_or(&0),
            read_outbox_max_id: *u.read_outbox.get(peer).unwrap_or(&0),
            unread_count: unread,
            ..d::dialog()
        }));
        if let Some(m) = u.mbox.messages.get(top) {
            messages.push(build::msg_tl(w, me, BoxRef::User(me), m));
        }
    }
    for ch in w.channels.values().filter(|c| c.members.contains(&me)) {
        let top = ch.mbox.next_id;
        dialogs.push(enums::Dialog::Dialog(types::Dialog {
            peer: build::peer_tl(PeerKey::Channel(ch.id)),
            top_message: top,
            read_inbox_max_id: *ch.read_inbox.get(&me).unwrap_or(&0),
            read_outbox_max_id: 0,
            pts: Some(ch.mbox.pts),
            ..d::dialog()
        }));
        if let Some(m) = ch.mbox.messages.values().next_back() {
            messages.push(build::msg_tl(w, me, BoxRef::Channel(ch.id), m));
        }
    }
    let (users, chats) = build::everything_for(w, me);
    Ok(enums::messages::Dialogs::Dialogs(types::messages::Dialogs {
        dialogs,
        messages,
        chats,
        users,
    })
    .to_bytes())
}

/// A chat's photo as the full chat carries it.
fn full_photo(w: &World, photo: Option<i64>) -> Option<enums::Photo> {
    let id = photo?;
    Some(super::messages::photo_tl(id, w.files.get(&id)?))
}

pub fn get_full_chat(w: &World, me: i64, req: f::messages::GetFullChat) -> Result<Vec<u8>, RpcErr> {
    let c = w
        .chats
        .get(&req.chat_id)
        .ok_or_else(|| RpcErr::bad("CHAT_ID_INVALID"))?;
    let participants = c
        .members
        .iter()
        .map(|m| {
            if *m == c.creator {
                enums::ChatParticipant::Creator(types::ChatParticipantCreator {
                    user_id: *m,
                    rank: None,
                })
            } else if c.admins.contains(m) {
                enums::ChatParticipant::Admin(types::ChatParticipantAdmin {
                    user_id: *m,
                    inviter_id: c.creator,
                    date: c.date,
                    rank: None,
                })
            } else {
                enums::ChatParticipant::Participant(types::ChatParticipant {
                    user_id: *m,
                    inviter_id: c.creator,
                    date: c.date,
                    rank: None,
                })
            }
        })
        .collect();
    let (users, chats) = build::everything_for(w, me);
    Ok(enums::messages::ChatFull::Full(types::messages::ChatFull {
        full_chat: enums::ChatFull::Full(types::ChatFull {
            id: c.id,
            about: c.about.clone(),
            chat_photo: full_photo(w, c.photo),
            participants: enums::ChatParticipants::Participants(types::ChatParticipants {
                chat_id: c.id,
                participants,
                version: 1,
            }),
            ..d::chat_full()
        }),
        chats,
        users,
    })
    .to_bytes())
}

pub fn get_full_channel(
    w: &World,
    me: i64,
    req: f::channels::GetFullChannel,
) -> Result<Vec<u8>, RpcErr> {
    let id = input_channel(w, &req.channel)?;
    let c = w.channel(id)?;
    let (users, chats) = build::everything_for(w, me);
    Ok(enums::messages::ChatFull::Full(types::messages::ChatFull {
        full_chat: enums::ChatFull::ChannelFull(types::ChannelFull {
            can_view_participants: true,
            id,
            about: c.about.clone(),
            chat_photo: full_photo(w, c.photo)
                .unwrap_or(enums::Photo::Empty(types::PhotoEmpty { id: 0 })),
            participants_count: Some(c.members.len() as i32),
            admins_count: Some(c.admins.len() as i32),
            read_inbox_max_id: *c.read_inbox.get(&me).unwrap_or(&0),
            read_outbox_max_id: 0,
            unread_count: 0,
            pts: c.mbox.pts,
            ..d::channel_full()
        }),
        chats,
        users,
    })
    .to_bytes())
}

pub fn get_participants(
    w: &World,
    me: i64,
    req: f::channels::GetParticipants,
) -> Result<Vec<u8>, RpcErr> {
    let id = input_channel(w, &req.channel)?;
    let c = w.channel(id)?;
    let admins_only = matches!(
        req.filter,
        enums::ChannelParticipantsFilter::ChannelParticipantsAdmins
    );
    let rights = || {
        enums::ChatAdminRights::Rights(types::ChatAdminRights {
            change_info: true,
            delete_messages: true,
            ban_users: true,
            invite_users: true,
            pin_messages: true,
            manage_topics: true,
            ..d::admin_rights()
        })
    };
    let all: Vec<i64> = c
        .members
        .iter()
        .copied()
        .filter(|m| !admins_only || c.admins.contains(m))
        .collect();
    let count = all.len() as i32;
    let participants = all
        .into_iter()
        .skip(usize::try_from(req.offset).unwrap_or(0))
        .take(usize::try_from(req.limit).unwrap_or(200).clamp(1, 200))
        .map(|m| {
            if m == c.creator {
                enums::ChannelParticipant::Creator(types::ChannelParticipantCreator {
                    user_id: m,
                    admin_rights: rights(),
                    rank: None,
                })
            } else if c.admins.contains(&m) {
                enums::ChannelParticipant::Admin(types::ChannelParticipantAdmin {
                    can_edit: false,
                    is_self: m == me,
                    user_id: m,
                    inviter_id: Some(c.creator),
                    promoted_by: c.creator,
                    date: c.date,
                    admin_rights: rights(),
                    rank: None,
                })
            } else {
                enums::ChannelParticipant::Participant(types::ChannelParticipant {
                    user_id: m,
                    date: c.date,
                    subscription_until_date: None,
                    rank: None,
                })
            }
        })
        .collect();
    let (users, chats) = build::everything_for(w, me);
    Ok(
        enums::channels::ChannelParticipants::Participants(types::channels::ChannelParticipants {
            count,
            participants,
            chats,
            users,
        })
        .to_bytes(),
    )
}

pub fn forum_topics(w: &World, me: i64, c: i64) -> Result<Vec<u8>, RpcErr> {
    let ch = w.channel(c)?;
    if !ch.forum {
        return Err(RpcErr::bad("CHANNEL_FORUM_MISSING"));
    }
    let mut messages = Vec::new();
    let topics = ch
        .topics
        .iter()
        .map(|t| {
            let top = ch
                .mbox
                .messages
                .values()
                .filter(|m| m.id == t.id || m.top_id == Some(t.id))
                .map(|m| m.id)
                .max()
                .unwrap_or(t.id);
            if let Some(m) = ch.mbox.messages.get(&top) {
                messages.push(build::msg_tl(w, me, BoxRef::Channel(c), m));
            }
            enums::ForumTopic::Topic(types::ForumTopic {
                my: t.from == me,
                id: t.id,
                date: t.date,
                peer: build::peer_tl(PeerKey::Channel(c)),
                title: t.title.clone(),
                icon_color: 0x6FB9F0,
                top_message: top,
                from_id: build::peer_tl(PeerKey::User(t.from)),
                ..d::forum_topic()
            })
        })
        .collect::<Vec<_>>();
    let (users, chats) = build::everything_for(w, me);
    Ok(
        enums::messages::ForumTopics::Topics(types::messages::ForumTopics {
            order_by_create_date: false,
            count: topics.len() as i32,
            topics,
            messages,
            chats,
            users,
            pts: ch.mbox.pts,
        })
        .to_bytes(),
    )
}
