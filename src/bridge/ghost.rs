//! Ghosts: remote users as puppet Matrix users (`@<prefix><escaped remote id>:<domain>`).
//!
//! A remote id may contain anything, so it is escaped into the characters Matrix localparts
//! allow; the escape is reversible so the homeserver's user queries can be answered. Registration
//! and profile are set once and remembered in the `ghost` table, so steady-state sends cost no
//! extra requests.

use ruma::{OwnedUserId, ServerName, UserId};

use crate::{
    db::ghosts::GhostRow,
    network::{Network, RemoteUserId, Session, UserInfo},
};

use super::{Bridge, BridgeError};

/// Escapes a remote id into localpart characters: `a-z 0-9 . _ -` stay, every other byte
/// becomes `=xx` (lowercase hex).
pub fn escape_localpart(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("={b:02x}"));
        }
    }
    out
}

/// Reverses [`escape_localpart`]; `None` if the text is not a valid escape.
pub fn unescape_localpart(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            let hex = text.get(i + 1..i + 3)?;
            if hex.bytes().any(|c| c.is_ascii_uppercase()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The remote id behind a ghost localpart (after the prefix), only if that localpart is the one
/// [`escape_localpart`] makes for it: `=61` is not another spelling of `a`, and an empty id is
/// no user. Otherwise one remote user would answer to several Matrix ids, and the homeserver
/// would be told ids exist that ferry never registers.
pub fn canonical_remote_id(escaped: &str) -> Option<String> {
    let id = unescape_localpart(escaped)?;
    (!id.is_empty() && escape_localpart(&id) == escaped).then_some(id)
}

/// The ghost user id for a remote user of `network`.
pub fn ghost_user_id(
    network: &dyn Network,
    domain: &ServerName,
    user: &RemoteUserId,
) -> Option<OwnedUserId> {
    let localpart = format!(
        "{}{}",
        network.ghost_prefix(),
        escape_localpart(user.as_str())
    );
    UserId::parse_with_server_name(localpart.as_str(), domain).ok()
}

impl Bridge {
    /// Makes sure the ghost of `user` exists on the homeserver with an up-to-date display name.
    /// Makes sure the ghost of `user` exists on the homeserver. With a `session` (the profile
    /// in `user` is current) its display name and avatar are brought up to date too; without
    /// one (e.g. the homeserver asking about an unknown ghost) only the account is created.
    pub async fn ensure_ghost(
        &self,
        network: &dyn Network,
        user: &UserInfo,
        session: Option<&dyn Session>,
    ) -> Result<OwnedUserId, BridgeError> {
        let mxid =
            ghost_user_id(network, &self.config.homeserver.domain, &user.id).ok_or_else(|| {
                BridgeError::Invalid(format!(
                    "remote user id {:?} cannot be a Matrix user",
                    user.id.as_str()
                ))
            })?;
        let net = network.id().as_str();
        let existing = self.db.get_ghost(net, user.id.as_str()).await?;
        let mut row = existing.clone().unwrap_or_else(|| GhostRow {
            network: net.to_owned(),
            remote_id: user.id.as_str().to_owned(),
            mxid: mxid.to_string(),
            name: None,
            avatar_mxc: None,
            avatar_id: None,
            registered: false,
        });
        let displayname = network.ghost_displayname(user);
        let name_stale = session.is_some()
            && row.name.as_deref() != Some(displayname.as_str())
            && !user.name.trim().is_empty();
        let avatar_stale = session.is_some() && row.avatar_id != user.avatar;
        if row.registered && !name_stale && !avatar_stale {
            return Ok(mxid);
        }
        if !row.registered {
            self.intents.register(&mxid).await?;
            row.registered = true;
            if existing.is_none() {
                self.metrics.ghosts.inc();
            }
        }
        if name_stale {
            self.intents.set_displayname(&mxid, &displayname).await?;
            row.name = Some(displayname);
        }
        if let (true, Some(session)) = (avatar_stale, session) {
            // A failed avatar is not worth failing the message for: it is retried next time.
            match self
                .sync_avatar(&mxid, user.avatar.as_deref(), session)
                .await
            {
                Ok(mxc) => {
                    row.avatar_mxc = mxc;
                    row.avatar_id = user.avatar.clone();
                }
                Err(err) => tracing::warn!(%err, ghost = %mxid, "cannot update ghost avatar"),
            }
        }
        self.db.upsert_ghost(&row).await?;
        Ok(mxid)
    }

    /// Downloads the remote avatar, uploads it to the media repository and sets it.
    async fn sync_avatar(
        &self,
        ghost: &UserId,
        avatar: Option<&str>,
        session: &dyn Session,
    ) -> Result<Option<String>, BridgeError> {
        let mxc = match avatar {
            Some(avatar) => {
                let media = session.download_media(avatar).await?;
                Some(self.intents.client().upload_media(media, "avatar").await?)
            }
            None => None,
        };
        self.intents.set_avatar(ghost, mxc.clone()).await?;
        Ok(mxc.map(|m| m.to_string()))
    }

    /// The network and remote user a ghost user id stands for, if it is one of ours.
    pub fn parse_ghost(&self, user: &UserId) -> Option<(&dyn Network, RemoteUserId)> {
        // The spec's limit. ruma's own check is compiled out: matrix-sdk-crypto turns on its
        // `compat-arbitrary-length-ids` feature, so the limit is enforced here.
        const MAX_USER_ID_BYTES: usize = 255;
        if user.as_str().len() > MAX_USER_ID_BYTES
            || user.server_name() != self.config.homeserver.domain
        {
            return None;
        }
        self.networks.values().find_map(|network| {
            let rest = user.localpart().strip_prefix(network.ghost_prefix())?;
            let id = canonical_remote_id(rest)?;
            Some((network.as_ref(), RemoteUserId::new(id)))
        })
    }

    /// Whether a user id belongs to the appservice (bot or any ghost namespace).
    pub fn is_our_user(&self, user: &UserId) -> bool {
        user == self.intents.bot()
            || (user.server_name() == self.config.homeserver.domain
                && self
                    .networks
                    .values()
                    .any(|n| user.localpart().starts_with(n.ghost_prefix())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_escapes_name_a_remote_user() {
        assert_eq!(canonical_remote_id("bob").as_deref(), Some("bob"));
        assert_eq!(canonical_remote_id("=42ob").as_deref(), Some("Bob"));
        assert_eq!(canonical_remote_id("=62ob"), None, "b spelled as =62");
        assert_eq!(canonical_remote_id(""), None, "empty remote id");
        assert_eq!(canonical_remote_id("=zz"), None);
    }

    #[test]
    fn escaping_round_trips_and_yields_valid_localparts() {
        for id in [
            "bob",
            "Bob",
            "+4915112345678",
            "a b/c",
            "ünï",
            "=41",
            "",
            "x:y@z",
        ] {
            let escaped = escape_localpart(id);
            assert!(
                escaped
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-=".contains(&b)),
                "{escaped}"
            );
            assert_eq!(unescape_localpart(&escaped).as_deref(), Some(id));
        }
    }

    #[test]
    fn bad_escapes_are_refused() {
        assert_eq!(unescape_localpart("=4"), None);
        assert_eq!(unescape_localpart("=zz"), None);
        assert_eq!(unescape_localpart("=4A"), None);
        assert_eq!(unescape_localpart("=ff"), None, "lone 0xff is not UTF-8");
    }
}
