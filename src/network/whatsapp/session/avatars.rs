//! Ghost avatars from contacts' WhatsApp profile pictures (the stored ids live in
//! [`super::super::profiles`]): asked once per contact and process, followed on WhatsApp's
//! picture notifications, and fetched when the core wants the bytes.

use std::time::Duration;

use super::{Inner, transient};
use crate::network::{
    ChatKind, MediaStream, NetworkError, RemoteEvent, RemoteUserId,
    whatsapp::{WHATSAPP, ids},
};

/// Largest profile picture ferry fetches.
const MAX_PICTURE: usize = 5 * 1024 * 1024;

impl Inner {
    /// Asks WhatsApp for a contact's profile picture, once per contact and process (see
    /// `profiles`). A failure is logged and leaves what was known.
    pub(super) async fn check_picture(&self, user: &RemoteUserId) {
        // Not connected yet (the inbox replay at start-up): ask with a later message.
        let (Ok(client), Ok(jid)) = (self.client(), ids::user_jid(user)) else {
            return;
        };
        if user == &self.own || !self.profiles.first_ask(user.as_str()) {
            return;
        }
        match client
            .contacts()
            .get_profile_picture_with_timeout(&jid, false, Some(Duration::from_secs(5)))
            .await
        {
            Ok(picture) => {
                self.profiles
                    .set_picture(user.as_str(), picture.map(|p| p.id))
                    .await;
            }
            Err(err) => tracing::debug!(%err, "cannot ask for a WhatsApp profile picture"),
        }
    }

    /// A contact changed or removed their picture: the ghost follows at once when the login
    /// has a DM portal with them (else with their next message or membership change).
    pub(super) async fn picture_changed(
        &self,
        p: &whatsapp_rust::wacore::types::events::PictureUpdate,
    ) {
        if ids::is_group(&p.jid) {
            return;
        }
        let Some(user) = self.canonical(&p.jid, None) else {
            return;
        };
        let picture = if p.removed {
            None
        } else if let Some(id) = &p.picture_id {
            Some(id.clone())
        } else {
            // No id in the notification: ask.
            self.profiles.first_ask(user.as_str());
            let Ok(client) = self.client() else { return };
            match client.contacts().get_profile_picture(&p.jid, false).await {
                Ok(picture) => picture.map(|p| p.id),
                Err(err) => {
                    tracing::debug!(%err, "cannot ask for a WhatsApp profile picture");
                    return;
                }
            }
        };
        self.profiles.first_ask(user.as_str());
        if !self.profiles.set_picture(user.as_str(), picture).await {
            return;
        }
        let has_dm = self
            .shared
            .db
            .get_portal(WHATSAPP.as_str(), user.as_str(), self.login.as_str())
            .await
            .ok()
            .flatten()
            .is_some_and(|row| row.room_id.is_some());
        if has_dm {
            self.emit(ChatKind::Dm, None, RemoteEvent::Chat(self.dm_info(&user)))
                .await;
        }
    }

    /// The current picture of a ghost's avatar id, fetched from the URL WhatsApp gives.
    pub(super) async fn download_picture(&self, user: &str) -> Result<MediaStream, NetworkError> {
        let jid = ids::user_jid(&RemoteUserId::new(user))
            .map_err(|e| NetworkError::Rejected(e.to_string()))?;
        let client = self.client()?;
        let picture = client
            .contacts()
            .get_profile_picture(&jid, false)
            .await
            .map_err(|e| transient("profile picture lookup", e))?
            .ok_or_else(|| NetworkError::Rejected("this contact has no picture now".into()))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| transient("profile picture download", e))?;
        let mut response = http
            .get(&picture.url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| transient("profile picture download", e.without_url()))?;
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.starts_with("image/"))
            .unwrap_or("image/jpeg")
            .to_owned();
        // WhatsApp's pictures are small (640 px JPEGs); anything far larger is not one.
        let mut data = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| transient("profile picture download", e.without_url()))?
        {
            if data.len() + chunk.len() > MAX_PICTURE {
                return Err(NetworkError::Rejected(
                    "the WhatsApp profile picture is too large".into(),
                ));
            }
            data.extend_from_slice(&chunk);
        }
        let data = bytes::Bytes::from(data);
        let size = data.len() as u64;
        Ok(MediaStream {
            content_type,
            size: Some(size),
            body: Box::pin(futures_util::stream::once(async move { Ok(data) })),
        })
    }
}
