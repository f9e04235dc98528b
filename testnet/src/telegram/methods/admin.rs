//! Group administration over MTProto: title, about, photo, adding and removing members, in
//! basic groups (`messages.*`) and channels/supergroups (`channels.*`).
//!
//! Each is checked as Telegram checks it ([`Change`]), applied to the world, answered as Telegram
//! answers (the service message in `updates`, `messages.invitedUsers`, `Bool`) and recorded for
//! the control API's `GET /control/sent` (kinds `edit_title`, `edit_about`, `edit_photo`,
//! `add_user`, `delete_user`).

use grammers_tl_types::{self as tl, Serializable as _};
use tl::{enums, functions as f, types};

use super::{Ctx, input_channel, input_peer, input_user};
use crate::telegram::details::Change;
use crate::telegram::state::{PeerKey, RpcErr, Sent, SentRecord, World, now};
use crate::telegram::tl as build;

/// The `updates` answer carrying the service message an action posted.
fn service_result(w: &World, me: i64, peer: PeerKey, sent: &Sent) -> enums::Updates {
    let new = match peer {
        PeerKey::Channel(c) => build::channel_new_message(w, me, c, sent.sender_id, sent.pts),
        _ => build::new_message_update(w, me, sent.sender_id, sent.pts),
    };
    let (users, chats) = build::everything_for(w, me);
    enums::Updates::Updates(types::Updates {
        updates: vec![new],
        users,
        chats,
        date: sent.date,
        seq: 0,
    })
}

fn record(
    w: &mut World,
    me: i64,
    peer: PeerKey,
    kind: &'static str,
    text: String,
    details: Vec<String>,
) {
    w.record(SentRecord {
        from: me,
        peer,
        id: 0,
        text,
        kind,
        reply_to: None,
        top_id: None,
        entities: Vec::new(),
        media: None,
        details,
        reaction: None,
        date: now(),
    });
}

/// Runs a checked service action and answers with its `updates`.
fn act(
    w: &mut World,
    ctx: &Ctx,
    me: i64,
    peer: PeerKey,
    change: Change,
    action: enums::MessageAction,
) -> Result<enums::Updates, RpcErr> {
    w.may_change(me, peer, change)?;
    let sent = w.chat_action(me, peer, action, None, Some(ctx.conn_id))?;
    w.saw_own_change(ctx.key_id, peer);
    Ok(service_result(w, me, peer, &sent))
}

fn edit_title(
    w: &mut World,
    ctx: &Ctx,
    me: i64,
    peer: PeerKey,
    title: String,
) -> Result<Vec<u8>, RpcErr> {
    if title.trim().is_empty() {
        return Err(RpcErr::bad("CHAT_TITLE_EMPTY"));
    }
    let current = match peer {
        PeerKey::Chat(c) => w.chats.get(&c).map(|c| c.title.clone()),
        PeerKey::Channel(c) => w.channels.get(&c).map(|c| c.title.clone()),
        PeerKey::User(_) => None,
    };
    if current.as_deref() == Some(title.as_str()) {
        return Err(RpcErr::bad("CHAT_NOT_MODIFIED"));
    }
    let action = enums::MessageAction::ChatEditTitle(types::MessageActionChatEditTitle {
        title: title.clone(),
    });
    let result = act(w, ctx, me, peer, Change::Info, action)?;
    record(w, me, peer, "edit_title", title, Vec::new());
    Ok(result.to_bytes())
}

pub fn edit_chat_title(
    w: &mut World,
    ctx: &Ctx,
    me: i64,
    req: f::messages::EditChatTitle,
) -> Result<Vec<u8>, RpcErr> {
    edit_title(w, ctx, me, PeerKey::Chat(req.chat_id), req.title)
}

pub fn edit_channel_title(
    w: &mut World,
    ctx: &Ctx,
    me: i64,
    req: f::channels::EditTitle,
) -> Result<Vec<u8>, RpcErr> {
    let channel = input_channel(w, &req.channel)?;
    edit_title(w, ctx, me, PeerKey::Channel(channel), req.title)
}

pub fn edit_about(
    w: &mut World,
    ctx: &Ctx,
    me: i64,
    req: f::messages::EditChatAbout,
) -> Result<Vec<u8>, RpcErr> {
    let peer = input_peer(w, me, &req.peer)?;
    if req.about.chars().count() > 255 {
        return Err(RpcErr::bad("CHAT_ABOUT_TOO_LONG"));
    }
    w.may_change(me, peer, Change::Info)?;
    w.set_about(peer, &req.about, Some(ctx.conn_id))?;
    record(w, me, peer, "edit_about", req.about, Vec::new());
    Ok(true.to_bytes())
}

fn edit_photo(
    w: &mut World,
    ctx: &Ctx,
    me: i64,
    peer: PeerKey,
    photo: enums::InputChatPhoto,
) -> Result<Vec<u8>, RpcErr> {
    w.may_change(me, peer, Change::Info)?;
    let action = match photo {
        enums::InputChatPhoto::Empty => enums::MessageAction::ChatDeletePhoto,
        enums::InputChatPhoto::InputChatUploadedPhoto(up) => {
            let file = up.file.ok_or_else(|| RpcErr::bad("PHOTO_FILE_MISSING"))?;
            let (bytes, _) = super::messages::assemble(w, ctx, &file)?;
            if bytes.is_empty() {
                return Err(RpcErr::bad("PHOTO_INVALID"));
            }
            let photo = w.add_chat_photo(bytes);
            enums::MessageAction::ChatEditPhoto(types::MessageActionChatEditPhoto { photo })
        }
        enums::InputChatPhoto::Photo(p) => {
            let enums::InputPhoto::Photo(p) = p.id else {
                return Err(RpcErr::bad("PHOTO_INVALID"));
            };
            let file = w
                .files
                .get(&p.id)
                .filter(|f| f.access_hash == p.access_hash)
                .ok_or_else(|| RpcErr::bad("PHOTO_INVALID"))?;
            let photo = super::messages::photo_tl(p.id, file);
            enums::MessageAction::ChatEditPhoto(types::MessageActionChatEditPhoto { photo })
        }
    };
    let result = act(w, ctx, me, peer, Change::Info, action)?;
    let detail = match w.photo_of(peer) {
        Some(id) => format!("photo:{id}"),
        None => "photo:none".to_owned(),
    };
    record(w, me, peer, "edit_photo", String::new(), vec![detail]);
    Ok(result.to_bytes())
}

pub fn edit_chat_photo(
    w: &mut World,
    ctx: &Ctx,
    me: i64,
    req: f::messages::EditChatPhoto,
) -> Result<Vec<u8>, RpcErr> {
    edit_photo(w, ctx, me, PeerKey::Chat(req.chat_id), req.photo)
}

pub fn edit_channel_photo(
    w: &mut World,
    ctx: &Ctx,
    me: i64,
    req: f::channels::EditPhoto,
) -> Result<Vec<u8>, RpcErr> {
    let channel = input_channel(w, &req.channel)?;
    edit_photo(w, ctx, me, PeerKey::Channel(channel), req.photo)
}

fn is_member(w: &World, peer: PeerKey, user: i64) -> bool {
    match peer {
        PeerKey::Chat(c) => w.chats.get(&c).is_some_and(|c| c.members.contains(&user)),
        PeerKey::Channel(c) => w
            .channels
            .get(&c)
            .is_some_and(|c| c.members.contains(&user)),
        PeerKey::User(_) => false,
    }
}

fn add_users(
    w: &mut World,
    ctx: &Ctx,
    me: i64,
    peer: PeerKey,
    users: Vec<i64>,
) -> Result<Vec<u8>, RpcErr> {
    if users.iter().all(|u| is_member(w, peer, *u)) {
        return Err(RpcErr::bad("USER_ALREADY_PARTICIPANT"));
    }
    let users: Vec<i64> = users
        .into_iter()
        .filter(|u| !is_member(w, peer, *u))
        .collect();
    let action = enums::MessageAction::ChatAddUser(types::MessageActionChatAddUser {
        users: users.clone(),
    });
    let updates = act(w, ctx, me, peer, Change::AddMember, action)?;
    record(
        w,
        me,
        peer,
        "add_user",
        String::new(),
        users.iter().map(i64::to_string).collect(),
    );
    Ok(
        enums::messages::InvitedUsers::Users(types::messages::InvitedUsers {
            updates,
            missing_invitees: Vec::new(),
        })
        .to_bytes(),
    )
}

pub fn add_chat_user(
    w: &mut World,
    ctx: &Ctx,
    me: i64,
    req: f::messages::AddChatUser,
) -> Result<Vec<u8>, RpcErr> {
    let user = input_user(w, me, &req.user_id)?;
    add_users(w, ctx, me, PeerKey::Chat(req.chat_id), vec![user])
}

pub fn invite_to_channel(
    w: &mut World,
    ctx: &Ctx,
    me: i64,
    req: f::channels::InviteToChannel,
) -> Result<Vec<u8>, RpcErr> {
    let channel = input_channel(w, &req.channel)?;
    let users = req
        .users
        .iter()
        .map(|u| input_user(w, me, u))
        .collect::<Result<Vec<_>, _>>()?;
    add_users(w, ctx, me, PeerKey::Channel(channel), users)
}

fn delete_user(
    w: &mut World,
    ctx: &Ctx,
    me: i64,
    peer: PeerKey,
    user: i64,
) -> Result<Vec<u8>, RpcErr> {
    if !is_member(w, peer, user) {
        return Err(RpcErr::bad("USER_NOT_PARTICIPANT"));
    }
    // Leaving needs no rights; removing someone else does.
    let change = if user == me {
        Change::Info
    } else {
        Change::RemoveMember
    };
    let action =
        enums::MessageAction::ChatDeleteUser(types::MessageActionChatDeleteUser { user_id: user });
    let updates = act(w, ctx, me, peer, change, action)?;
    record(
        w,
        me,
        peer,
        "delete_user",
        String::new(),
        vec![user.to_string()],
    );
    Ok(updates.to_bytes())
}

pub fn delete_chat_user(
    w: &mut World,
    ctx: &Ctx,
    me: i64,
    req: f::messages::DeleteChatUser,
) -> Result<Vec<u8>, RpcErr> {
    let user = input_user(w, me, &req.user_id)?;
    delete_user(w, ctx, me, PeerKey::Chat(req.chat_id), user)
}

/// `channels.editBanned`: banning `view_messages` removes the member (what "remove from group"
/// does); lesser restrictions are not simulated and change nothing.
pub fn edit_banned(
    w: &mut World,
    ctx: &Ctx,
    me: i64,
    req: f::channels::EditBanned,
) -> Result<Vec<u8>, RpcErr> {
    let channel = input_channel(w, &req.channel)?;
    let PeerKey::User(user) = input_peer(w, me, &req.participant)? else {
        return Err(RpcErr::bad("PARTICIPANT_ID_INVALID"));
    };
    let enums::ChatBannedRights::Rights(rights) = req.banned_rights;
    if !rights.view_messages {
        w.may_change(me, PeerKey::Channel(channel), Change::RemoveMember)?;
        let (users, chats) = build::everything_for(w, me);
        return Ok(enums::Updates::Updates(types::Updates {
            updates: Vec::new(),
            users,
            chats,
            date: now(),
            seq: 0,
        })
        .to_bytes());
    }
    delete_user(w, ctx, me, PeerKey::Channel(channel), user)
}
