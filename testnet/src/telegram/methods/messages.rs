//! Reading, sending, editing, deleting and reacting to messages; uploads and downloads.

use grammers_tl_types::{self as tl, Serializable as _};
use tl::{enums, functions as f, types};

use super::{Ctx, input_channel, input_peer};
use crate::telegram::state::{BoxRef, Content, PeerKey, RpcErr, SentRecord, World, now};
use crate::telegram::tl as build;
use crate::telegram::tl_defaults as d;

/// Largest upload.getFile chunk Telegram serves.
const MAX_CHUNK: i32 = 1024 * 1024;

fn messages_result(w: &World, me: i64, at: BoxRef, msgs: Vec<enums::Message>) -> Vec<u8> {
    let (users, chats) = build::everything_for(w, me);
    match at {
        BoxRef::User(_) => enums::messages::Messages::Messages(types::messages::Messages {
            messages: msgs,
            topics: Vec::new(),
            chats,
            users,
        })
        .to_bytes(),
        BoxRef::Channel(c) => {
            let pts = w.channels.get(&c).map(|c| c.mbox.pts).unwrap_or(0);
            enums::messages::Messages::ChannelMessages(types::messages::ChannelMessages {
                inexact: false,
                pts,
                count: msgs.len() as i32,
                offset_id_offset: None,
                messages: msgs,
                topics: Vec::new(),
                chats,
                users,
            })
            .to_bytes()
        }
    }
}

pub fn get_history(w: &World, me: i64, req: f::messages::GetHistory) -> Result<Vec<u8>, RpcErr> {
    let peer = input_peer(w, me, &req.peer)?;
    let at = World::box_of(me, peer);
    let store = match at {
        BoxRef::User(u) => &w.user(u)?.mbox.messages,
        BoxRef::Channel(c) => {
            let ch = w.channel(c)?;
            if !ch.members.contains(&me) && ch.username.is_none() {
                return Err(RpcErr::bad("CHANNEL_PRIVATE"));
            }
            &ch.mbox.messages
        }
    };
    let limit = usize::try_from(req.limit).unwrap_or(100).clamp(1, 100);
    let msgs: Vec<enums::Message> = store
        .values()
        .rev()
        .filter(|m| m.peer == peer)
        .filter(|m| req.offset_id <= 0 || m.id < req.offset_id)
        .filter(|m| req.max_id <= 0 || m.id < req.max_id)
        .filter(|m| m.id > req.min_id)
        .skip(usize::try_from(req.add_offset).unwrap_or(0))
        .take(limit)
        .map(|m| build::msg_tl(w, me, at, m))
        .collect();
    Ok(messages_result(w, me, at, msgs))
}

fn lookup(w: &World, me: i64, at: BoxRef, ids: &[enums::InputMessage]) -> Vec<enums::Message> {
    ids.iter()
        .map(|i| {
            let id = match i {
                enums::InputMessage::Id(x) => x.id,
                _ => 0,
            };
            match w.msg(at, id) {
                Some(m) => build::msg_tl(w, me, at, m),
                None => enums::Message::Empty(types::MessageEmpty { id, peer_id: None }),
            }
        })
        .collect()
}

pub fn get_messages(w: &World, me: i64, req: f::messages::GetMessages) -> Result<Vec<u8>, RpcErr> {
    let msgs = lookup(w, me, BoxRef::User(me), &req.id);
    Ok(messages_result(w, me, BoxRef::User(me), msgs))
}

pub fn get_channel_messages(
    w: &World,
    me: i64,
    req: f::channels::GetMessages,
) -> Result<Vec<u8>, RpcErr> {
    let c = input_channel(w, &req.channel)?;
    let msgs = lookup(w, me, BoxRef::Channel(c), &req.id);
    Ok(messages_result(w, me, BoxRef::Channel(c), msgs))
}

/// (reply_to, top_id) of a send, with forum topics resolved as Telegram does.
fn reply_of(
    w: &World,
    me: i64,
    peer: PeerKey,
    reply: Option<&enums::InputReplyTo>,
) -> (Option<i32>, Option<i32>) {
    let Some(enums::InputReplyTo::Message(r)) = reply else {
        return (None, None);
    };
    let PeerKey::Channel(c) = peer else {
        return (Some(r.reply_to_msg_id), None);
    };
    let Some(ch) = w.channels.get(&c) else {
        return (Some(r.reply_to_msg_id), None);
    };
    if !ch.forum {
        return (Some(r.reply_to_msg_id), None);
    }
    // Replying to the topic's creation message means "post in the topic".
    if ch.topics.iter().any(|t| t.id == r.reply_to_msg_id) {
        return (None, Some(r.reply_to_msg_id));
    }
    let inherited = w
        .msg(BoxRef::Channel(c), r.reply_to_msg_id)
        .and_then(|m| m.top_id);
    let _ = me;
    (Some(r.reply_to_msg_id), r.top_msg_id.or(inherited))
}

fn entity_str(e: &enums::MessageEntity) -> String {
    use enums::MessageEntity as E;
    match e {
        E::Bold(x) => format!("bold:{}:{}", x.offset, x.length),
        E::Italic(x) => format!("italic:{}:{}", x.offset, x.length),
        E::Underline(x) => format!("underline:{}:{}", x.offset, x.length),
        E::Strike(x) => format!("strike:{}:{}", x.offset, x.length),
        E::Spoiler(x) => format!("spoiler:{}:{}", x.offset, x.length),
        E::Code(x) => format!("code:{}:{}", x.offset, x.length),
        E::Pre(x) => format!("pre:{}:{}:{}", x.offset, x.length, x.language),
        E::TextUrl(x) => format!("text_url:{}:{}:{}", x.offset, x.length, x.url),
        E::Url(x) => format!("url:{}:{}", x.offset, x.length),
        E::MentionName(x) => format!("mention_name:{}:{}:{}", x.offset, x.length, x.user_id),
        E::InputMessageEntityMentionName(x) => {
            let id = match &x.user_id {
                enums::InputUser::User(u) => u.user_id,
                _ => 0,
            };
            format!("mention_name:{}:{}:{}", x.offset, x.length, id)
        }
        E::Mention(x) => format!("mention:{}:{}", x.offset, x.length),
        E::CustomEmoji(x) => format!("custom_emoji:{}:{}:{}", x.offset, x.length, x.document_id),
        E::Blockquote(x) => format!("blockquote:{}:{}", x.offset, x.length),
        _ => "other".into(),
    }
}

/// Telegram stores mentions of input users as messageEntityMentionName.
fn normalize_entities(entities: Option<Vec<enums::MessageEntity>>) -> Vec<enums::MessageEntity> {
    entities
        .unwrap_or_default()
        .into_iter()
        .map(|e| match e {
            enums::MessageEntity::InputMessageEntityMentionName(x) => {
                let user_id = match &x.user_id {
                    enums::InputUser::User(u) => u.user_id,
                    enums::InputUser::FromMessage(u) => u.user_id,
                    _ => 0,
                };
                enums::MessageEntity::MentionName(types::MessageEntityMentionName {
                    offset: x.offset,
                    length: x.length,
                    user_id,
                })
            }
            e => e,
        })
        .collect()
}

fn send_result(
    w: &World,
    me: i64,
    peer: PeerKey,
    sent: &crate::telegram::state::Sent,
    random_id: i64,
    content_media: bool,
) -> Vec<u8> {
    let at = World::box_of(me, peer);
    if let (PeerKey::User(_), false) = (peer, content_media) {
        let m = w.msg(at, sent.sender_id);
        return enums::Updates::UpdateShortSentMessage(types::UpdateShortSentMessage {
            out: true,
            id: sent.sender_id,
            pts: sent.pts,
            pts_count: 1,
            date: sent.date,
            media: None,
            entities: m
                .filter(|m| !m.entities.is_empty())
                .map(|m| m.entities.clone()),
            ttl_period: None,
        })
        .to_bytes();
    }
    let new = match peer {
        PeerKey::Channel(c) => build::channel_new_message(w, me, c, sent.sender_id, sent.pts),
        _ => build::new_message_update(w, me, sent.sender_id, sent.pts),
    };
    let (users, chats) = build::everything_for(w, me);
    enums::Updates::Updates(types::Updates {
        updates: vec![
            enums::Update::MessageId(types::UpdateMessageId {
                id: sent.sender_id,
                random_id,
            }),
            new,
        ],
        users,
        chats,
        date: sent.date,
        seq: 0,
    })
    .to_bytes()
}

fn record(w: &mut World, me: i64, peer: PeerKey, id: i32, kind: &'static str) {
    let at = World::box_of(me, peer);
    let Some(m) = w.msg(at, id) else { return };
    let media = m.media.as_ref().map(|md| match md {
        enums::MessageMedia::Document(doc) => match &doc.document {
            Some(enums::Document::Document(d)) => format!("document:{}:{}", d.id, d.mime_type),
            _ => "document".into(),
        },
        enums::MessageMedia::Photo(p) => match &p.photo {
            Some(enums::Photo::Photo(ph)) => format!("photo:{}", ph.id),
            _ => "photo".into(),
        },
        enums::MessageMedia::Geo(_) => "geo".into(),
        enums::MessageMedia::Contact(_) => "contact".into(),
        _ => "other".into(),
    });
    let details = m.media.as_ref().map(media_details).unwrap_or_default();
    let rec = SentRecord {
        from: me,
        peer,
        id,
        text: m.text.clone(),
        kind,
        reply_to: m.reply_to,
        top_id: m.top_id,
        entities: m.entities.iter().map(entity_str).collect(),
        media,
        details,
        reaction: None,
        date: now(),
    };
    w.record(rec);
}

/// What a sent media says beyond its kind, for the control API's `details`.
fn media_details(media: &enums::MessageMedia) -> Vec<String> {
    let mut out = Vec::new();
    match media {
        enums::MessageMedia::Document(doc) => {
            let Some(enums::Document::Document(d)) = &doc.document else {
                return out;
            };
            for a in &d.attributes {
                match a {
                    enums::DocumentAttribute::Audio(x) if x.voice => {
                        out.push(format!("voice:{}s", x.duration));
                        if x.waveform.is_some() {
                            out.push("waveform".into());
                        }
                    }
                    enums::DocumentAttribute::Audio(x) => {
                        out.push(format!("audio:{}s", x.duration))
                    }
                    enums::DocumentAttribute::Video(x) => {
                        out.push(format!("video:{}s:{}x{}", x.duration, x.w, x.h))
                    }
                    enums::DocumentAttribute::Animated => out.push("animated".into()),
                    enums::DocumentAttribute::Sticker(_) => out.push("sticker".into()),
                    enums::DocumentAttribute::Filename(f) => {
                        out.push(format!("name:{}", f.file_name))
                    }
                    _ => {}
                }
            }
        }
        enums::MessageMedia::Geo(g) => {
            if let enums::GeoPoint::Point(p) = &g.geo {
                out.push(format!("geo:{},{}", p.lat, p.long));
            }
        }
        enums::MessageMedia::Contact(c) => out.push(format!("contact:{}", c.phone_number)),
        _ => {}
    }
    out
}

/// Records a content-less action (typing) for the control API.
pub fn record_event(w: &mut World, me: i64, peer: PeerKey, id: i32, kind: &'static str) {
    w.record(SentRecord {
        from: me,
        peer,
        id,
        text: String::new(),
        kind,
        reply_to: None,
        top_id: None,
        entities: Vec::new(),
        media: None,
        details: Vec::new(),
        reaction: None,
        date: now(),
    });
}

pub fn send_message(
    w: &mut World,
    ctx: &Ctx,
    me: i64,
    req: f::messages::SendMessage,
) -> Result<Vec<u8>, RpcErr> {
    let peer = input_peer(w, me, &req.peer)?;
    if req.message.is_empty() {
        return Err(RpcErr::bad("MESSAGE_EMPTY"));
    }
    if req.message.chars().count() > 4096 {
        return Err(RpcErr::bad("MESSAGE_TOO_LONG"));
    }
    let (reply_to, top_id) = reply_of(w, me, peer, req.reply_to.as_ref());
    let content = Content {
        text: req.message,
        entities: normalize_entities(req.entities),
        reply_to,
        top_id,
        ..Content::default()
    };
    let sent = w.send(me, peer, content, Some(ctx.conn_id))?;
    record(w, me, peer, sent.sender_id, "message");
    w.saw_own_change(ctx.key_id, peer);
    Ok(send_result(w, me, peer, &sent, req.random_id, false))
}

pub(super) fn assemble(
    w: &mut World,
    ctx: &Ctx,
    file: &enums::InputFile,
) -> Result<(Vec<u8>, String), RpcErr> {
    let (id, parts, name) = match file {
        enums::InputFile::File(x) => (x.id, x.parts, x.name.clone()),
        enums::InputFile::Big(x) => (x.id, x.parts, x.name.clone()),
        enums::InputFile::StoryDocument(_) => return Err(RpcErr::bad("MEDIA_INVALID")),
    };
    let stored = w
        .uploads
        .remove(&(ctx.key_id, id))
        .ok_or_else(|| RpcErr::bad("FILE_PARTS_INVALID"))?;
    let mut bytes = Vec::new();
    for p in 0..parts {
        let part = stored
            .get(&p)
            .ok_or_else(|| RpcErr::bad(format!("FILE_PART_{p}_MISSING")))?;
        bytes.extend_from_slice(part);
    }
    Ok((bytes, name))
}

pub fn document_tl(id: i64, f: &crate::telegram::state::FileRec) -> enums::Document {
    let mut attributes = vec![enums::DocumentAttribute::Filename(
        types::DocumentAttributeFilename {
            file_name: f.name.clone(),
        },
    )];
    attributes.extend(f.attributes.iter().cloned());
    enums::Document::Document(types::Document {
        id,
        access_hash: f.access_hash,
        file_reference: f.reference.clone(),
        date: now(),
        mime_type: f.mime_type.clone(),
        size: f.bytes.len() as i64,
        dc_id: 2,
        thumbs: f.thumb.as_ref().map(|t| {
            vec![enums::PhotoSize::Size(types::PhotoSize {
                r#type: "m".into(),
                w: 128,
                h: 128,
                size: t.len() as i32,
            })]
        }),
        attributes,
        ..d::document()
    })
}

pub fn photo_tl(id: i64, f: &crate::telegram::state::FileRec) -> enums::Photo {
    enums::Photo::Photo(types::Photo {
        id,
        access_hash: f.access_hash,
        file_reference: f.reference.clone(),
        date: now(),
        sizes: vec![enums::PhotoSize::Size(types::PhotoSize {
            r#type: "y".into(),
            w: 800,
            h: 600,
            size: f.bytes.len() as i32,
        })],
        dc_id: 2,
        ..d::photo()
    })
}

/// Turns an InputMedia into the MessageMedia Telegram would store.
pub fn media_of(
    w: &mut World,
    ctx: &Ctx,
    me: i64,
    media: enums::InputMedia,
) -> Result<enums::MessageMedia, RpcErr> {
    let _ = me;
    Ok(match media {
        enums::InputMedia::UploadedDocument(x) => {
            let (bytes, name) = assemble(w, ctx, &x.file)?;
            let name = x
                .attributes
                .iter()
                .find_map(|a| match a {
                    enums::DocumentAttribute::Filename(f) => Some(f.file_name.clone()),
                    _ => None,
                })
                .unwrap_or(name);
            let id = w.add_file(bytes, x.mime_type.clone(), name);
            let voice = x
                .attributes
                .iter()
                .any(|a| matches!(a, enums::DocumentAttribute::Audio(a) if a.voice));
            let file = w
                .files
                .get_mut(&id)
                .ok_or_else(|| RpcErr::bad("MEDIA_INVALID"))?;
            file.attributes = x
                .attributes
                .into_iter()
                .filter(|a| !matches!(a, enums::DocumentAttribute::Filename(_)))
                .collect();
            let file = file.clone();
            enums::MessageMedia::Document(types::MessageMediaDocument {
                voice,
                document: Some(document_tl(id, &file)),
                ..d::media_document()
            })
        }
        enums::InputMedia::UploadedPhoto(x) => {
            let (bytes, name) = assemble(w, ctx, &x.file)?;
            let id = w.add_file(bytes, "image/jpeg".into(), name);
            let file = w
                .files
                .get(&id)
                .cloned()
                .ok_or_else(|| RpcErr::bad("MEDIA_INVALID"))?;
            enums::MessageMedia::Photo(types::MessageMediaPhoto {
                photo: Some(photo_tl(id, &file)),
                ..d::media_photo()
            })
        }
        enums::InputMedia::Document(x) => {
            let enums::InputDocument::Document(idoc) = x.id else {
                return Err(RpcErr::bad("MEDIA_INVALID"));
            };
            let file = w
                .files
                .get(&idoc.id)
                .filter(|f| f.access_hash == idoc.access_hash)
                .ok_or_else(|| RpcErr::bad("MEDIA_INVALID"))?;
            enums::MessageMedia::Document(types::MessageMediaDocument {
                document: Some(document_tl(idoc.id, file)),
                ..d::media_document()
            })
        }
        enums::InputMedia::Photo(x) => {
            let enums::InputPhoto::Photo(ip) = x.id else {
                return Err(RpcErr::bad("MEDIA_INVALID"));
            };
            let file = w
                .files
                .get(&ip.id)
                .filter(|f| f.access_hash == ip.access_hash)
                .ok_or_else(|| RpcErr::bad("MEDIA_INVALID"))?;
            enums::MessageMedia::Photo(types::MessageMediaPhoto {
                photo: Some(photo_tl(ip.id, file)),
                ..d::media_photo()
            })
        }
        enums::InputMedia::GeoPoint(x) => {
            let enums::InputGeoPoint::Point(p) = x.geo_point else {
                return Err(RpcErr::bad("MEDIA_INVALID"));
            };
            enums::MessageMedia::Geo(types::MessageMediaGeo {
                geo: enums::GeoPoint::Point(types::GeoPoint {
                    long: p.long,
                    lat: p.lat,
                    access_hash: 0,
                    accuracy_radius: p.accuracy_radius,
                }),
            })
        }
        enums::InputMedia::Contact(x) => enums::MessageMedia::Contact(types::MessageMediaContact {
            phone_number: x.phone_number,
            first_name: x.first_name,
            last_name: x.last_name,
            vcard: x.vcard,
            user_id: 0,
        }),
        _ => return Err(RpcErr::bad("MEDIA_INVALID")),
    })
}

pub fn send_media(
    w: &mut World,
    ctx: &Ctx,
    me: i64,
    req: f::messages::SendMedia,
) -> Result<Vec<u8>, RpcErr> {
    let peer = input_peer(w, me, &req.peer)?;
    let media = media_of(w, ctx, me, req.media)?;
    let (reply_to, top_id) = reply_of(w, me, peer, req.reply_to.as_ref());
    let content = Content {
        text: req.message,
        entities: normalize_entities(req.entities),
        reply_to,
        top_id,
        media: Some(media),
        ..Content::default()
    };
    let sent = w.send(me, peer, content, Some(ctx.conn_id))?;
    record(w, me, peer, sent.sender_id, "media");
    w.saw_own_change(ctx.key_id, peer);
    Ok(send_result(w, me, peer, &sent, req.random_id, true))
}

pub fn edit_message(
    w: &mut World,
    ctx: &Ctx,
    me: i64,
    req: f::messages::EditMessage,
) -> Result<Vec<u8>, RpcErr> {
    let peer = input_peer(w, me, &req.peer)?;
    let at = World::box_of(me, peer);
    if let Some(m) = w.msg(at, req.id)
        && req.message.as_deref() == Some(m.text.as_str())
        && req.entities.is_none()
    {
        return Err(RpcErr::bad("MESSAGE_NOT_MODIFIED"));
    }
    let entities = req.entities.map(|e| normalize_entities(Some(e)));
    let pts = w.edit(me, peer, req.id, req.message, entities, Some(ctx.conn_id))?;
    record(w, me, peer, req.id, "edit");
    w.saw_own_change(ctx.key_id, peer);
    let up = build::edit_update(w, me, at, req.id, pts);
    let (users, chats) = build::everything_for(w, me);
    Ok(enums::Updates::Updates(types::Updates {
        updates: vec![up],
        users,
        chats,
        date: now(),
        seq: 0,
    })
    .to_bytes())
}

pub fn delete(
    w: &mut World,
    ctx: &Ctx,
    me: i64,
    peer: PeerKey,
    ids: &[i32],
) -> Result<Vec<u8>, RpcErr> {
    let at = World::box_of(me, peer);
    let recorded: Vec<(PeerKey, i32)> = ids
        .iter()
        .filter_map(|id| w.msg(at, *id).map(|m| (m.peer, *id)))
        .collect();
    for (p, id) in &recorded {
        w.record(SentRecord {
            from: me,
            peer: *p,
            id: *id,
            text: String::new(),
            kind: "delete",
            reply_to: None,
            top_id: None,
            entities: Vec::new(),
            media: None,
            details: Vec::new(),
            reaction: None,
            date: now(),
        });
    }
    let (pts, pts_count) = w.delete(me, peer, ids, Some(ctx.conn_id))?;
    w.saw_own_change(ctx.key_id, peer);
    Ok(
        enums::messages::AffectedMessages::Messages(types::messages::AffectedMessages {
            pts,
            pts_count,
        })
        .to_bytes(),
    )
}

pub fn send_reaction(
    w: &mut World,
    ctx: &Ctx,
    me: i64,
    req: f::messages::SendReaction,
) -> Result<Vec<u8>, RpcErr> {
    let peer = input_peer(w, me, &req.peer)?;
    let emoji = req
        .reaction
        .unwrap_or_default()
        .into_iter()
        .find_map(|r| match r {
            enums::Reaction::Emoji(e) => Some(e.emoticon),
            _ => None,
        });
    w.react(me, peer, req.msg_id, emoji.clone(), Some(ctx.conn_id))?;
    w.record(SentRecord {
        from: me,
        peer,
        id: req.msg_id,
        text: String::new(),
        kind: "reaction",
        reply_to: None,
        top_id: None,
        entities: Vec::new(),
        media: None,
        details: Vec::new(),
        reaction: Some(emoji.unwrap_or_default()),
        date: now(),
    });
    let at = World::box_of(me, peer);
    let updates = build::reactions_update(w, me, at, req.msg_id)
        .into_iter()
        .collect();
    let (users, chats) = build::everything_for(w, me);
    Ok(enums::Updates::Updates(types::Updates {
        updates,
        users,
        chats,
        date: now(),
        seq: 0,
    })
    .to_bytes())
}

pub fn read_history(
    w: &mut World,
    ctx: &Ctx,
    me: i64,
    peer: PeerKey,
    max_id: i32,
) -> Result<Vec<u8>, RpcErr> {
    let at = World::box_of(me, peer);
    let max_id = if max_id <= 0 {
        match at {
            BoxRef::User(u) => w
                .user(u)?
                .mbox
                .messages
                .values()
                .filter(|m| m.peer == peer)
                .map(|m| m.id)
                .max()
                .unwrap_or(0),
            BoxRef::Channel(c) => w.channel(c)?.mbox.next_id,
        }
    } else {
        max_id
    };
    w.record(SentRecord {
        from: me,
        peer,
        id: max_id,
        text: String::new(),
        kind: "read",
        reply_to: None,
        top_id: None,
        entities: Vec::new(),
        media: None,
        details: Vec::new(),
        reaction: None,
        date: now(),
    });
    let (pts, pts_count) = w.read(me, peer, max_id, Some(ctx.conn_id))?;
    Ok(
        enums::messages::AffectedMessages::Messages(types::messages::AffectedMessages {
            pts,
            pts_count,
        })
        .to_bytes(),
    )
}

pub fn save_part(
    w: &mut World,
    ctx: &Ctx,
    file_id: i64,
    part: i32,
    bytes: Vec<u8>,
) -> Result<Vec<u8>, RpcErr> {
    if !(0..4000).contains(&part) {
        return Err(RpcErr::bad("FILE_PART_INVALID"));
    }
    if bytes.len() > 512 * 1024 {
        return Err(RpcErr::bad("FILE_PART_TOO_BIG"));
    }
    w.uploads
        .entry((ctx.key_id, file_id))
        .or_default()
        .insert(part, bytes);
    Ok(true.to_bytes())
}

pub fn get_file(w: &mut World, me: i64, req: f::upload::GetFile) -> Result<Vec<u8>, RpcErr> {
    let (id, hash, reference, thumb) = match &req.location {
        enums::InputFileLocation::InputDocumentFileLocation(x) => (
            x.id,
            x.access_hash,
            &x.file_reference,
            !x.thumb_size.is_empty(),
        ),
        enums::InputFileLocation::InputPhotoFileLocation(x) => {
            (x.id, x.access_hash, &x.file_reference, false)
        }
        enums::InputFileLocation::InputPeerPhotoFileLocation(x) => {
            // A chat's (current) photo, by the peer: no file reference involved.
            let peer = super::input_peer(w, me, &x.peer)?;
            if w.photo_of(peer) != Some(x.photo_id) {
                return Err(RpcErr::bad("LOCATION_INVALID"));
            }
            let file = w
                .files
                .get(&x.photo_id)
                .ok_or_else(|| RpcErr::bad("LOCATION_INVALID"))?;
            return chunk(&file.bytes, req.offset, req.limit);
        }
        _ => return Err(RpcErr::bad("LOCATION_INVALID")),
    };
    let file = w
        .files
        .get(&id)
        .filter(|f| f.access_hash == hash)
        .ok_or_else(|| RpcErr::bad("FILE_REFERENCE_INVALID"))?;
    if *reference != file.reference {
        return Err(RpcErr::bad("FILE_REFERENCE_EXPIRED"));
    }
    if w.expire_on_download {
        w.expire_file_references();
        return Err(RpcErr::bad("FILE_REFERENCE_EXPIRED"));
    }
    let Some(file) = w.files.get(&id) else {
        return Err(RpcErr::bad("FILE_REFERENCE_INVALID"));
    };
    let bytes = if thumb {
        file.thumb
            .as_ref()
            .ok_or_else(|| RpcErr::bad("LOCATION_INVALID"))?
    } else {
        &file.bytes
    };
    chunk(bytes, req.offset, req.limit)
}

/// `upload.file` with `limit` bytes of `bytes` from `offset`.
fn chunk(bytes: &[u8], offset: i64, limit: i32) -> Result<Vec<u8>, RpcErr> {
    if limit <= 0 || limit > MAX_CHUNK || offset < 0 {
        return Err(RpcErr::bad("LIMIT_INVALID"));
    }
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    let end = start
        .saturating_add(usize::try_from(limit).unwrap_or(0))
        .min(bytes.len());
    Ok(enums::upload::File::File(types::upload::File {
        r#type: enums::storage::FileType::FileUnknown,
        mtime: now(),
        bytes: bytes[start..end].to_vec(),
    })
    .to_bytes())
}
