//! Groups and communities: what a group looks like to ferry ([`ChatInfo`]: subject,
//! description, picture, members, admins), how its room is laid out (a community is a space, its
//! linked groups the space's children, an announcement-only group read-only), and the changes
//! made from Matrix (name, description, picture, members added and removed).
//!
//! Pictures are not media messages: WhatsApp serves a group's picture by URL (the
//! `w:profile:picture` IQ) and announces a change with a picture notification carrying a new
//! picture id. A picture's ferry id (`wagpic:<group>:<picture id>`) changes with the picture, so
//! the core notices a change; it is fetched again when downloaded. A picture set from Matrix
//! comes back from WhatsApp with an id of WhatsApp's choosing: ferry remembers it as the upload's
//! id, so the echo does not replace the room's avatar with a copy of itself.
//!
//! WhatsApp refuses member changes by non-admins (an IQ error 401/403) or per person (e.g. a
//! privacy setting that only allows invitations): each becomes a clear [`NetworkError::Rejected`]
//! that the core shows in the room.

use std::{collections::HashMap, sync::Mutex};

use whatsapp_rust::{
    Client, Jid,
    features::{GroupDescription, GroupError, GroupSubject, PreviousDescription},
};

use super::ids;
use crate::network::{
    ChatChanges, ChatId, ChatInfo, ChatKind, MediaStream, NetworkError, RemoteUserId, RoomLayout,
    UserInfo,
};

/// Prefix of a group picture's ferry id.
const PICTURE: &str = "wagpic:";
/// The name the core gives an upload meant as a chat's picture.
pub const AVATAR_NAME: &str = "avatar";
/// WhatsApp's group pictures are JPEGs of at most this many pixels a side.
const PICTURE_SIZE: u32 = 640;
/// Avatars from Matrix waiting for `update_chat` (kept this many at most).
const PENDING_AVATARS: usize = 16;

/// An image from Matrix as a group picture: the JPEG, or why it cannot be one.
type Picture = Result<Vec<u8>, String>;

/// A session's memory of group pictures.
#[derive(Default)]
pub struct GroupState {
    /// WhatsApp picture id -> the id ferry's upload had (pictures set from Matrix).
    aliases: Mutex<HashMap<String, String>>,
    /// Uploaded room avatars until the change that sets them, by upload id: the JPEG, or why
    /// the image cannot be a group picture.
    avatars: Mutex<Vec<(String, Picture)>>,
    /// Held while a picture is being set: WhatsApp's notification of it can arrive before the
    /// answer that names it, and must not be read as someone else's picture.
    setting: tokio::sync::Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How the session names people (canonical ids across phone number and LID, push names).
pub struct People<'a> {
    pub canonical: &'a (dyn Fn(&Jid, Option<&Jid>) -> Option<RemoteUserId> + Sync),
    pub user_info: &'a (dyn Fn(&RemoteUserId) -> UserInfo + Sync),
}

fn transient(what: &str, err: impl std::fmt::Display) -> NetworkError {
    NetworkError::Transient(format!("WhatsApp {what} failed: {err}"))
}

fn bad_chat(chat: &ChatId) -> Result<Jid, NetworkError> {
    ids::chat_jid(chat).map_err(|e| NetworkError::Rejected(e.to_string()))
}

/// A group error as the user should read it: refusals are final and say why.
fn refused(what: &str, err: &GroupError) -> NetworkError {
    use whatsapp_rust::IqError;
    match err {
        GroupError::Iq(IqError::ServerError {
            code: 401 | 403, ..
        }) => NetworkError::Rejected(format!(
            "WhatsApp refused the {what}: only group admins may do that"
        )),
        GroupError::Iq(IqError::ServerError { code: 404, .. }) => {
            NetworkError::Rejected(format!("WhatsApp refused the {what}: no such group"))
        }
        GroupError::Iq(IqError::ServerError { code, text, .. }) if (400..500).contains(code) => {
            NetworkError::Rejected(format!("WhatsApp refused the {what} ({code} {text})"))
        }
        other => transient(what, other),
    }
}

impl GroupState {
    /// The group's details as ferry shows them.
    pub async fn info(
        &self,
        client: &Client,
        chat: &ChatId,
        people: &People<'_>,
    ) -> Result<ChatInfo, NetworkError> {
        let jid = bad_chat(chat)?;
        let meta = client
            .groups()
            .get_metadata(&jid)
            .await
            .map_err(|e| transient("group lookup", e))?;
        let mut members = Vec::new();
        let mut admins = Vec::new();
        for p in &meta.participants {
            let Some(user) = (people.canonical)(&p.jid, p.phone_number.as_ref()) else {
                continue;
            };
            if p.is_admin() {
                admins.push(user.clone());
            }
            members.push((people.user_info)(&user));
        }
        Ok(ChatInfo {
            id: chat.clone(),
            kind: ChatKind::Group,
            name: Some(meta.subject.clone()).filter(|s| !s.is_empty()),
            topic: meta.description.clone().filter(|d| !d.is_empty()),
            avatar: self.picture_id(client, &jid).await?,
            members,
            admins,
            read_only: Some(meta.is_announcement),
        })
    }

    /// The ferry id of the group's current picture, `None` without one.
    async fn picture_id(&self, client: &Client, jid: &Jid) -> Result<Option<String>, NetworkError> {
        let picture = client
            .contacts()
            .get_profile_picture(jid, false)
            .await
            .map_err(|e| transient("group picture lookup", e))?;
        let _set = self.setting.lock().await;
        Ok(picture.map(|p| {
            lock(&self.aliases)
                .get(&p.id)
                .cloned()
                .unwrap_or_else(|| format!("{PICTURE}{}:{}", jid.user, p.id))
        }))
    }

    /// Keeps an image uploaded from Matrix as `id` (converted by [`to_jpeg`]) for the group
    /// picture change that may follow.
    pub fn keep_picture(&self, id: &str, jpeg: Result<Vec<u8>, NetworkError>) {
        let mut avatars = lock(&self.avatars);
        if avatars.len() >= PENDING_AVATARS {
            drop(avatars.remove(0));
        }
        avatars.push((id.to_owned(), jpeg.map_err(|e| e.to_string())));
    }

    /// Name, description and picture changes from Matrix.
    pub async fn update(
        &self,
        client: &Client,
        chat: &ChatId,
        changes: &ChatChanges,
    ) -> Result<(), NetworkError> {
        let jid = bad_chat(chat)?;
        if let Some(name) = &changes.name {
            let subject = GroupSubject::new(name.as_str()).map_err(|e| {
                NetworkError::Rejected(format!("WhatsApp refuses that group name: {e}"))
            })?;
            client
                .groups()
                .set_subject(jid.clone(), subject)
                .await
                .map_err(|e| refused("group name change", &e))?;
        }
        if let Some(topic) = &changes.topic {
            let description = if topic.is_empty() {
                None
            } else {
                Some(GroupDescription::new(topic.as_str()).map_err(|e| {
                    NetworkError::Rejected(format!("WhatsApp refuses that description: {e}"))
                })?)
            };
            client
                .groups()
                .set_description(jid.clone(), description, PreviousDescription::Resolve)
                .await
                .map_err(|e| refused("group description change", &e))?;
        }
        match &changes.avatar {
            None => {}
            Some(Some(id)) => {
                let jpeg = {
                    let mut avatars = lock(&self.avatars);
                    let at = avatars.iter().position(|(a, _)| a == id).ok_or_else(|| {
                        NetworkError::Rejected("the new group picture was not uploaded".into())
                    })?;
                    avatars.remove(at).1.map_err(NetworkError::Rejected)?
                };
                let _setting = self.setting.lock().await;
                let set = client
                    .groups()
                    .set_profile_picture(jid.clone(), jpeg)
                    .await
                    .map_err(|e| refused("group picture change", &e))?;
                lock(&self.aliases).insert(set.id, id.clone());
            }
            Some(None) => {
                client
                    .groups()
                    .remove_profile_picture(jid.clone())
                    .await
                    .map_err(|e| refused("group picture removal", &e))?;
            }
        }
        Ok(())
    }

    /// Adds (`add`) or removes a person, as the login (an admin of the group).
    pub async fn change_member(
        &self,
        client: &Client,
        chat: &ChatId,
        user: &RemoteUserId,
        add: bool,
    ) -> Result<(), NetworkError> {
        let group = bad_chat(chat)?;
        let person = ids::user_jid(user).map_err(|e| NetworkError::Rejected(e.to_string()))?;
        let what = if add { "invitation" } else { "removal" };
        let groups = client.groups();
        let result = if add {
            groups.add_participants(group, &[person]).await
        } else {
            groups.remove_participants(group, &[person]).await
        }
        .map_err(|e| refused(what, &e))?;
        match result.iter().find_map(|r| r.error.clone()) {
            None => Ok(()),
            Some(code) => Err(NetworkError::Rejected(match (add, code.as_str()) {
                (true, "403") => {
                    "WhatsApp refused the invitation: their privacy settings only allow an invite link"
                        .to_owned()
                }
                (true, "409") => "they are already in this WhatsApp group".to_owned(),
                (false, "404") => "they are not in this WhatsApp group".to_owned(),
                (_, code) => format!("WhatsApp refused the {what} (error {code})"),
            })),
        }
    }
}

/// The room layout of a group: a community is a space, its groups are the space's children,
/// and a group where only admins send (a community's announcement group) is read-only.
/// Only for groups (a DM's layout is the default, see the session's `room_layout`).
pub async fn layout(client: &Client, chat: &ChatId) -> Result<RoomLayout, NetworkError> {
    let jid = bad_chat(chat)?;
    let meta = client
        .groups()
        .get_metadata(&jid)
        .await
        .map_err(|e| transient("group lookup", e))?;
    Ok(RoomLayout {
        space: meta.is_parent_group,
        parent: meta.parent_group_jid.as_ref().and_then(ids::chat_of),
        read_only: meta.is_announcement,
    })
}

/// The groups of a chat list in the order their portals are made: communities first, so a
/// space exists before the rooms that go in it.
pub fn listing_order<'a>(
    groups: impl IntoIterator<Item = (&'a Jid, &'a whatsapp_rust::features::GroupMetadata)>,
) -> Vec<ChatId> {
    let mut groups: Vec<(bool, ChatId)> = groups
        .into_iter()
        .filter_map(|(jid, meta)| Some((!meta.is_parent_group, ids::chat_of(jid)?)))
        .collect();
    groups.sort();
    groups.into_iter().map(|(_, chat)| chat).collect()
}

/// Whether `id` names a group picture.
pub fn is_picture(id: &str) -> bool {
    id.starts_with(PICTURE)
}

/// Downloads a group picture (the group's current one) from WhatsApp's picture host.
pub async fn download_picture(client: &Client, id: &str) -> Result<MediaStream, NetworkError> {
    let group = id
        .strip_prefix(PICTURE)
        .and_then(|rest| rest.split_once(':'))
        .map(|(group, _)| group)
        .ok_or_else(|| NetworkError::Rejected(format!("not a WhatsApp group picture: {id}")))?;
    let jid = Jid::group(group);
    let picture = client
        .contacts()
        .get_profile_picture(&jid, false)
        .await
        .map_err(|e| transient("group picture lookup", e))?
        .ok_or_else(|| NetworkError::Rejected("the group has no picture any more".to_owned()))?;
    let response = client
        .http_client
        .execute(whatsapp_rust::http::HttpRequest::get(picture.url))
        .await
        .map_err(|e| transient("group picture download", e))?;
    if response.status_code != 200 {
        return Err(transient(
            "group picture download",
            format!("HTTP {}", response.status_code),
        ));
    }
    let body = response.body;
    let size = body.len() as u64;
    Ok(MediaStream {
        content_type: "image/jpeg".to_owned(),
        size: Some(size),
        body: Box::pin(futures_util::stream::once(async move {
            Ok(bytes::Bytes::from(body))
        })),
    })
}

/// An image as WhatsApp takes a group picture: a JPEG, at most 640 pixels a side.
pub fn to_jpeg(data: &[u8]) -> Result<Vec<u8>, NetworkError> {
    let image = image::load_from_memory(data).map_err(|e| {
        NetworkError::Rejected(format!(
            "the picture is not an image WhatsApp can take: {e}"
        ))
    })?;
    let image = if image.width() > PICTURE_SIZE || image.height() > PICTURE_SIZE {
        image.thumbnail(PICTURE_SIZE, PICTURE_SIZE)
    } else {
        image
    };
    let mut out = std::io::Cursor::new(Vec::new());
    image
        .to_rgb8()
        .write_to(&mut out, image::ImageFormat::Jpeg)
        .map_err(|e| NetworkError::Rejected(format!("cannot convert the picture: {e}")))?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        image::RgbImage::from_pixel(w, h, image::Rgb([200, 10, 10]))
            .write_to(&mut out, image::ImageFormat::Png)
            .expect("png");
        out.into_inner()
    }

    #[test]
    fn avatars_become_jpegs_of_whatsapp_size() {
        let jpeg = to_jpeg(&png(1000, 500)).expect("converted");
        assert_eq!(&jpeg[..3], b"\xFF\xD8\xFF", "a JPEG");
        let back = image::load_from_memory(&jpeg).expect("decodes");
        assert_eq!((back.width(), back.height()), (640, 320));
        let small =
            image::load_from_memory(&to_jpeg(&png(64, 64)).expect("small")).expect("decodes");
        assert_eq!((small.width(), small.height()), (64, 64));
    }

    #[test]
    fn non_images_are_refused_clearly() {
        let err = to_jpeg(b"not an image").expect_err("refused");
        assert!(matches!(err, NetworkError::Rejected(m) if m.contains("not an image")));
    }

    #[test]
    fn kept_pictures_are_bounded_and_keep_why_they_failed() {
        let state = GroupState::default();
        state.keep_picture("first", to_jpeg(b"not an image"));
        assert!(matches!(&lock(&state.avatars)[0].1, Err(why) if why.contains("not an image")));
        for n in 0..PENDING_AVATARS {
            state.keep_picture(&format!("id{n}"), to_jpeg(&png(8, 8)));
        }
        let avatars = lock(&state.avatars);
        assert_eq!(avatars.len(), PENDING_AVATARS);
        assert!(
            avatars.iter().all(|(id, _)| id != "first"),
            "the oldest went"
        );
        assert!(avatars.iter().all(|(_, jpeg)| jpeg.is_ok()));
    }

    #[test]
    fn picture_ids_name_their_group() {
        assert!(is_picture("wagpic:120363000000000001:42"));
        assert!(!is_picture("wapic:5511900000002:42"), "a contact's picture");
        assert!(!is_picture("wamedia-00"));
    }
}
