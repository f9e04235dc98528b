//! A group's details both ways: its about text (the room topic) and photo (the room avatar)
//! read from Telegram, and the room's name, topic, avatar and members changed from Matrix.
//!
//! Telegram keeps the about text in the *full* chat (`messages.getFullChat`,
//! `channels.getFullChannel`), the photo's id in the chat object itself. The photo is fetched
//! by peer (`inputPeerPhotoFileLocation`), which needs no file reference, so its media id never
//! expires; the id names the photo, so a new photo is a new id and the bridge notices the change.
//! Basic groups and channels/supergroups use different methods for everything, hence the pairs.

use grammers_client::peer::Peer;
use grammers_client::session::types::{PeerKind, PeerRef};
use grammers_client::{Client, tl};

use super::media::encode_location;
use crate::network::NetworkError;

/// The about text and photo (media id) of a group or channel; `(None, None)` for users.
pub async fn read(
    client: &Client,
    peer: PeerRef,
    resolved: &Peer,
) -> Result<(Option<String>, Option<String>), NetworkError> {
    let photo = match resolved {
        Peer::User(_) => return Ok((None, None)),
        Peer::Group(g) => g.photo().map(|p| p.photo_id),
        Peer::Channel(c) => c.photo().map(|p| p.photo_id),
        Peer::Community(c) => c.photo().map(|p| p.photo_id),
    };
    let full = match peer.id.kind() {
        PeerKind::Channel => {
            client
                .invoke(&tl::functions::channels::GetFullChannel {
                    channel: peer.into(),
                })
                .await
        }
        _ => {
            client
                .invoke(&tl::functions::messages::GetFullChat {
                    chat_id: peer.id.bare_id().unwrap_or_default(),
                })
                .await
        }
    }
    .map_err(map_err)?;
    let tl::enums::messages::ChatFull::Full(full) = full;
    let about = match full.full_chat {
        tl::enums::ChatFull::Full(c) => c.about,
        tl::enums::ChatFull::ChannelFull(c) => c.about,
        tl::enums::ChatFull::CommunityFull(c) => c.about,
    };
    let avatar = photo.map(|photo_id| photo_media_id(peer, photo_id));
    Ok(((!about.is_empty()).then_some(about), avatar))
}

/// The media id of chat photo `photo_id` of `peer` (downloaded by peer, the big size).
pub fn photo_media_id(peer: PeerRef, photo_id: i64) -> String {
    let location = tl::enums::InputFileLocation::InputPeerPhotoFileLocation(
        tl::types::InputPeerPhotoFileLocation {
            big: true,
            peer: peer.into(),
            photo_id,
        },
    );
    encode_location(&location, None)
}

/// Telegram's error, with what it means to the Matrix user for the refusals group changes meet.
fn map_err(e: grammers_client::InvocationError) -> NetworkError {
    let meaning = match &e {
        grammers_client::InvocationError::Rpc(rpc) => match rpc.name.as_str() {
            "CHAT_ADMIN_REQUIRED" => Some("only the group's admins may do that on Telegram"),
            "USER_PRIVACY_RESTRICTED" => Some("the user's privacy settings forbid adding them"),
            "USER_NOT_MUTUAL_CONTACT" => Some("only a mutual contact may add this user"),
            "USER_ALREADY_PARTICIPANT" => Some("the user is already in the group"),
            "USER_NOT_PARTICIPANT" => Some("the user is not in the group"),
            "CHAT_NOT_MODIFIED" => Some("nothing changed"),
            _ => None,
        },
        _ => None,
    };
    match (meaning, &e) {
        (Some(meaning), grammers_client::InvocationError::Rpc(rpc)) => {
            NetworkError::Rejected(format!("{meaning} ({})", rpc.name))
        }
        _ => super::session::map_err(e),
    }
}

fn is_channel(peer: PeerRef) -> bool {
    peer.id.kind() == PeerKind::Channel
}

fn chat_id(peer: PeerRef) -> Result<i64, NetworkError> {
    match peer.id.kind() {
        PeerKind::Chat => peer
            .id
            .bare_id()
            .ok_or_else(|| NetworkError::Rejected("not a Telegram group".into())),
        _ => Err(NetworkError::Unsupported("changing a private chat")),
    }
}

/// The method that renames `peer`.
pub async fn set_title(client: &Client, peer: PeerRef, title: &str) -> Result<(), NetworkError> {
    if is_channel(peer) {
        client
            .invoke(&tl::functions::channels::EditTitle {
                channel: peer.into(),
                title: title.to_owned(),
            })
            .await
            .map(drop)
            .map_err(map_err)
    } else {
        let chat_id = peer.id.bare_id().unwrap_or_default();
        client
            .invoke(&tl::functions::messages::EditChatTitle {
                chat_id,
                title: title.to_owned(),
            })
            .await
            .map(drop)
            .map_err(map_err)
    }
}

/// Sets the about text (one method for both kinds).
pub async fn set_about(client: &Client, peer: PeerRef, about: &str) -> Result<(), NetworkError> {
    client
        .invoke(&tl::functions::messages::EditChatAbout {
            peer: peer.into(),
            about: about.to_owned(),
        })
        .await
        .map(drop)
        .map_err(map_err)
}

/// Sets the photo to an uploaded file, or removes it (`None`).
pub async fn set_photo(
    client: &Client,
    peer: PeerRef,
    file: Option<tl::enums::InputFile>,
) -> Result<(), NetworkError> {
    let photo = match file {
        Some(file) => {
            tl::enums::InputChatPhoto::InputChatUploadedPhoto(tl::types::InputChatUploadedPhoto {
                file: Some(file),
                video: None,
                video_start_ts: None,
                video_emoji_markup: None,
            })
        }
        None => tl::enums::InputChatPhoto::Empty,
    };
    if is_channel(peer) {
        client
            .invoke(&tl::functions::channels::EditPhoto {
                channel: peer.into(),
                photo,
            })
            .await
            .map(drop)
            .map_err(map_err)
    } else {
        let chat_id = peer.id.bare_id().unwrap_or_default();
        client
            .invoke(&tl::functions::messages::EditChatPhoto { chat_id, photo })
            .await
            .map(drop)
            .map_err(map_err)
    }
}

/// Adds `user` to the group `peer`.
pub async fn add(client: &Client, peer: PeerRef, user: PeerRef) -> Result<(), NetworkError> {
    if is_channel(peer) {
        client
            .invoke(&tl::functions::channels::InviteToChannel {
                channel: peer.into(),
                users: vec![user.into()],
            })
            .await
            .map(drop)
            .map_err(map_err)
    } else {
        client
            .invoke(&tl::functions::messages::AddChatUser {
                chat_id: chat_id(peer)?,
                user_id: user.into(),
                fwd_limit: 100,
            })
            .await
            .map(drop)
            .map_err(map_err)
    }
}

/// Removes `user` from the group `peer` (in a supergroup: banned from viewing, which is what
/// Telegram's "remove from group" does).
pub async fn remove(client: &Client, peer: PeerRef, user: PeerRef) -> Result<(), NetworkError> {
    if is_channel(peer) {
        client
            .invoke(&tl::functions::channels::EditBanned {
                channel: peer.into(),
                participant: user.into(),
                banned_rights: tl::enums::ChatBannedRights::Rights(tl::types::ChatBannedRights {
                    view_messages: true,
                    send_messages: false,
                    send_media: false,
                    send_stickers: false,
                    send_gifs: false,
                    send_games: false,
                    send_inline: false,
                    embed_links: false,
                    send_polls: false,
                    change_info: false,
                    invite_users: false,
                    pin_messages: false,
                    manage_topics: false,
                    send_photos: false,
                    send_videos: false,
                    send_roundvideos: false,
                    send_audios: false,
                    send_voices: false,
                    send_docs: false,
                    send_plain: false,
                    edit_rank: false,
                    send_reactions: false,
                    manage_linked_peers: false,
                    until_date: 0,
                }),
            })
            .await
            .map(drop)
            .map_err(map_err)
    } else {
        client
            .invoke(&tl::functions::messages::DeleteChatUser {
                revoke_history: false,
                chat_id: chat_id(peer)?,
                user_id: user.into(),
            })
            .await
            .map(drop)
            .map_err(map_err)
    }
}
