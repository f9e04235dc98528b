//! Builds grammers' TL values (layer 230) from the world's records, as one viewer sees them.

use grammers_tl_types::{enums, types};

use super::state::{BoxRef, Logged, Msg, PeerKey, World, access_hash, now};
use super::tl_defaults as d;

pub fn peer_tl(p: PeerKey) -> enums::Peer {
    match p {
        PeerKey::User(user_id) => enums::Peer::User(types::PeerUser { user_id }),
        PeerKey::Chat(chat_id) => enums::Peer::Chat(types::PeerChat { chat_id }),
        PeerKey::Channel(channel_id) => enums::Peer::Channel(types::PeerChannel { channel_id }),
    }
}

pub fn user_status(online: bool) -> enums::UserStatus {
    if online {
        enums::UserStatus::Online(types::UserStatusOnline {
            expires: now() + 300,
        })
    } else {
        enums::UserStatus::Offline(types::UserStatusOffline {
            was_online: now() - 60,
        })
    }
}

pub fn user_tl(w: &World, viewer: i64, id: i64) -> Option<enums::User> {
    let u = w.users.get(&id)?;
    let me = viewer == id;
    Some(enums::User::User(types::User {
        is_self: me,
        contact: !me && !u.bot,
        mutual_contact: !me && !u.bot,
        bot: u.bot,
        bot_info_version: u.bot.then_some(1),
        id,
        access_hash: Some(access_hash(id)),
        first_name: Some(u.first_name.clone()),
        last_name: u.last_name.clone(),
        username: u.username.clone(),
        phone: if me || !u.bot { u.phone.clone() } else { None },
        status: (!u.bot).then(|| user_status(u.online)),
        ..d::user()
    }))
}

fn no_rights() -> types::ChatAdminRights {
    d::admin_rights()
}

fn full_rights() -> types::ChatAdminRights {
    types::ChatAdminRights {
        change_info: true,
        post_messages: true,
        edit_messages: true,
        delete_messages: true,
        ban_users: true,
        invite_users: true,
        pin_messages: true,
        manage_call: true,
        other: true,
        manage_topics: true,
        ..no_rights()
    }
}

pub fn chat_tl(w: &World, viewer: i64, peer: PeerKey) -> Option<enums::Chat> {
    match peer {
        PeerKey::User(_) => None,
        PeerKey::Chat(id) => {
            let c = w.chats.get(&id)?;
            Some(enums::Chat::Chat(types::Chat {
                creator: c.creator == viewer,
                left: !c.members.contains(&viewer),
                id,
                title: c.title.clone(),
                participants_count: c.members.len() as i32,
                date: c.date,
                version: 1,
                admin_rights: (c.admins.contains(&viewer) || c.creator == viewer)
                    .then(|| enums::ChatAdminRights::Rights(full_rights())),
                photo: chat_photo(c.photo),
                ..d::chat()
            }))
        }
        PeerKey::Channel(id) => {
            let c = w.channels.get(&id)?;
            Some(enums::Chat::Channel(types::Channel {
                creator: c.creator == viewer,
                left: !c.members.contains(&viewer),
                broadcast: c.broadcast,
                megagroup: !c.broadcast,
                forum: c.forum,
                id,
                access_hash: Some(access_hash(id)),
                title: c.title.clone(),
                username: c.username.clone(),
                date: c.date,
                admin_rights: c
                    .admins
                    .contains(&viewer)
                    .then(|| enums::ChatAdminRights::Rights(full_rights())),
                participants_count: Some(c.members.len() as i32),
                photo: chat_photo(c.photo),
                ..d::channel()
            }))
        }
    }
}

/// A chat's photo as chat objects carry it (the id names the picture; clients download it with
/// `inputPeerPhotoFileLocation`).
fn chat_photo(photo: Option<i64>) -> enums::ChatPhoto {
    match photo {
        Some(photo_id) => enums::ChatPhoto::Photo(types::ChatPhoto {
            has_video: false,
            photo_id,
            stripped_thumb: None,
            dc_id: 2,
        }),
        None => enums::ChatPhoto::Empty,
    }
}

/// Every user and chat `viewer` can see (the simulated world is small).
pub fn everything_for(w: &World, viewer: i64) -> (Vec<enums::User>, Vec<enums::Chat>) {
    let users = w
        .users
        .keys()
        .filter_map(|id| user_tl(w, viewer, *id))
        .collect();
    let mut chats: Vec<enums::Chat> = w
        .chats
        .values()
        .filter(|c| c.members.contains(&viewer))
        .filter_map(|c| chat_tl(w, viewer, PeerKey::Chat(c.id)))
        .collect();
    chats.extend(
        w.channels
            .values()
            .filter(|c| c.members.contains(&viewer) || c.username.is_some())
            .filter_map(|c| chat_tl(w, viewer, PeerKey::Channel(c.id))),
    );
    (users, chats)
}

fn reactions_tl(viewer: i64, reactions: &[(i64, String)]) -> Option<enums::MessageReactions> {
    if reactions.is_empty() {
        return None;
    }
    let mut counts: Vec<(String, i32, Option<i32>)> = Vec::new();
    for (u, e) in reactions {
        match counts.iter_mut().find(|(x, _, _)| x == e) {
            Some(c) => c.1 += 1,
            None => counts.push((e.clone(), 1, None)),
        }
        if *u == viewer
            && let Some(c) = counts.iter_mut().find(|(x, _, _)| x == e)
        {
            c.2 = Some(0);
        }
    }
    Some(enums::MessageReactions::Reactions(
        types::MessageReactions {
            min: false,
            can_see_list: true,
            reactions_as_tags: false,
            results: counts
                .into_iter()
                .map(|(e, count, chosen_order)| {
                    enums::ReactionCount::Count(types::ReactionCount {
                        chosen_order,
                        reaction: enums::Reaction::Emoji(types::ReactionEmoji { emoticon: e }),
                        count,
                    })
                })
                .collect(),
            recent_reactions: Some(
                reactions
                    .iter()
                    .map(|(u, e)| {
                        enums::MessagePeerReaction::Reaction(types::MessagePeerReaction {
                            big: false,
                            unread: *u != viewer,
                            my: *u == viewer,
                            peer_id: peer_tl(PeerKey::User(*u)),
                            date: now(),
                            reaction: enums::Reaction::Emoji(types::ReactionEmoji {
                                emoticon: e.clone(),
                            }),
                        })
                    })
                    .collect(),
            ),
            top_reactors: None,
        },
    ))
}

/// A stored media with the file references as they are now (they change when they expire).
fn fresh_media(w: &World, media: &enums::MessageMedia) -> enums::MessageMedia {
    let mut media = media.clone();
    match &mut media {
        enums::MessageMedia::Document(types::MessageMediaDocument {
            document: Some(enums::Document::Document(d)),
            ..
        }) => {
            if let Some(f) = w.files.get(&d.id) {
                d.file_reference = f.reference.clone();
            }
        }
        enums::MessageMedia::Photo(types::MessageMediaPhoto {
            photo: Some(enums::Photo::Photo(p)),
            ..
        }) => {
            if let Some(f) = w.files.get(&p.id) {
                p.file_reference = f.reference.clone();
            }
        }
        _ => {}
    }
    media
}

pub fn msg_tl(w: &World, viewer: i64, at: BoxRef, m: &Msg) -> enums::Message {
    let (out, post) = match at {
        BoxRef::User(_) => (m.out, false),
        BoxRef::Channel(c) => (
            m.from == Some(viewer),
            w.channels.get(&c).is_some_and(|ch| ch.broadcast),
        ),
    };
    // Telegram omits from_id for incoming private messages and for channel posts.
    let from_id = match (m.peer, post) {
        (_, true) => None,
        (PeerKey::User(_), _) if !out => None,
        _ => m.from.map(|f| peer_tl(PeerKey::User(f))),
    };
    let reply_to = if m.reply_to.is_some() || m.top_id.is_some() {
        Some(enums::MessageReplyHeader::Header(
            types::MessageReplyHeader {
                forum_topic: m.top_id.is_some(),
                reply_to_msg_id: m.reply_to.or(m.top_id),
                reply_to_top_id: if m.reply_to.is_some() { m.top_id } else { None },
                ..d::reply_header()
            },
        ))
    } else {
        None
    };
    if let Some(action) = &m.action {
        return enums::Message::Service(types::MessageService {
            out,
            post,
            id: m.id,
            from_id,
            peer_id: peer_tl(m.peer),
            reply_to,
            date: m.date,
            action: action.clone(),
            ..d::message_service()
        });
    }
    enums::Message::Message(types::Message {
        out,
        post,
        id: m.id,
        from_id,
        peer_id: peer_tl(m.peer),
        reply_to,
        date: m.date,
        message: m.text.clone(),
        media: m.media.as_ref().map(|media| fresh_media(w, media)),
        entities: (!m.entities.is_empty()).then(|| m.entities.clone()),
        edit_date: m.edit_date,
        reactions: reactions_tl(viewer, &m.reactions),
        ..d::message()
    })
}

fn built(w: &World, viewer: i64, at: BoxRef, id: i32) -> Option<enums::Message> {
    w.msg(at, id).map(|m| msg_tl(w, viewer, at, m))
}

fn empty_msg(id: i32, peer: PeerKey) -> enums::Message {
    enums::Message::Empty(types::MessageEmpty {
        id,
        peer_id: Some(peer_tl(peer)),
    })
}

pub fn new_message_update(w: &World, owner: i64, id: i32, pts: i32) -> enums::Update {
    let message = built(w, owner, BoxRef::User(owner), id)
        .unwrap_or_else(|| empty_msg(id, PeerKey::User(owner)));
    enums::Update::NewMessage(types::UpdateNewMessage {
        message,
        pts,
        pts_count: 1,
    })
}

pub fn channel_new_message(w: &World, viewer: i64, c: i64, id: i32, pts: i32) -> enums::Update {
    let message = built(w, viewer, BoxRef::Channel(c), id)
        .unwrap_or_else(|| empty_msg(id, PeerKey::Channel(c)));
    enums::Update::NewChannelMessage(types::UpdateNewChannelMessage {
        message,
        pts,
        pts_count: 1,
    })
}

pub fn edit_update(w: &World, viewer: i64, at: BoxRef, id: i32, pts: i32) -> enums::Update {
    let peer = match at {
        BoxRef::User(u) => PeerKey::User(u),
        BoxRef::Channel(c) => PeerKey::Channel(c),
    };
    let message = built(w, viewer, at, id).unwrap_or_else(|| empty_msg(id, peer));
    match at {
        BoxRef::User(_) => enums::Update::EditMessage(types::UpdateEditMessage {
            message,
            pts,
            pts_count: 1,
        }),
        BoxRef::Channel(_) => enums::Update::EditChannelMessage(types::UpdateEditChannelMessage {
            message,
            pts,
            pts_count: 1,
        }),
    }
}

pub fn delete_update(at: BoxRef, ids: &[i32], pts: i32, pts_count: i32) -> enums::Update {
    match at {
        BoxRef::User(_) => enums::Update::DeleteMessages(types::UpdateDeleteMessages {
            messages: ids.to_vec(),
            pts,
            pts_count,
        }),
        BoxRef::Channel(channel_id) => {
            enums::Update::DeleteChannelMessages(types::UpdateDeleteChannelMessages {
                channel_id,
                messages: ids.to_vec(),
                pts,
                pts_count,
            })
        }
    }
}

pub fn reactions_update(w: &World, viewer: i64, at: BoxRef, id: i32) -> Option<enums::Update> {
    let m = w.msg(at, id)?;
    let reactions = reactions_tl(viewer, &m.reactions).unwrap_or(
        enums::MessageReactions::Reactions(types::MessageReactions {
            min: false,
            can_see_list: true,
            reactions_as_tags: false,
            results: Vec::new(),
            recent_reactions: Some(Vec::new()),
            top_reactors: None,
        }),
    );
    Some(enums::Update::MessageReactions(
        types::UpdateMessageReactions {
            peer: peer_tl(m.peer),
            msg_id: id,
            top_msg_id: m.top_id,
            saved_peer_id: None,
            reactions,
        },
    ))
}

pub fn read_inbox_update(peer: PeerKey, max_id: i32, pts: i32) -> enums::Update {
    enums::Update::ReadHistoryInbox(types::UpdateReadHistoryInbox {
        folder_id: None,
        peer: peer_tl(peer),
        top_msg_id: None,
        max_id,
        still_unread_count: 0,
        pts,
        pts_count: 1,
    })
}

pub fn read_outbox_update(peer: PeerKey, max_id: i32, pts: i32) -> enums::Update {
    enums::Update::ReadHistoryOutbox(types::UpdateReadHistoryOutbox {
        peer: peer_tl(peer),
        max_id,
        pts,
        pts_count: 1,
    })
}

/// Replays a box's log after `from_pts` for `viewer`: (new messages, other updates).
pub fn replay(
    w: &World,
    viewer: i64,
    at: BoxRef,
    from_pts: i32,
    limit: usize,
) -> (Vec<enums::Message>, Vec<enums::Update>, i32) {
    let log = match at {
        BoxRef::User(u) => w.users.get(&u).map(|u| &u.mbox.log),
        BoxRef::Channel(c) => w.channels.get(&c).map(|c| &c.mbox.log),
    };
    let mut messages = Vec::new();
    let mut others = Vec::new();
    let mut last_pts = from_pts;
    for e in log
        .into_iter()
        .flatten()
        .filter(|e| e.pts > from_pts)
        .take(limit)
    {
        last_pts = e.pts;
        match &e.what {
            Logged::NewMessage(id) => {
                if let Some(m) = built(w, viewer, at, *id) {
                    messages.push(m);
                }
            }
            Logged::EditMessage(id) => {
                if built(w, viewer, at, *id).is_some() {
                    others.push(edit_update(w, viewer, at, *id, e.pts));
                }
            }
            Logged::Delete(ids) => others.push(delete_update(at, ids, e.pts, e.pts_count)),
            Logged::ReadInbox { peer, max_id } => {
                others.push(read_inbox_update(*peer, *max_id, e.pts))
            }
            Logged::ReadOutbox { peer, max_id } => {
                others.push(read_outbox_update(*peer, *max_id, e.pts))
            }
        }
    }
    (messages, others, last_pts)
}
