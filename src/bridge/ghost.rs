//! Ghosts: remote users as puppet Matrix users (`@<prefix><escaped remote id>:<domain>`).
//!
//! A remote id may contain anything, so it is escaped into the characters Matrix localparts
//! allow; the escape is reversible so the homeserver's user queries can be answered. Registration
//! and profile are set once and remembered in the `ghost` table, so steady-state sends cost no
//! extra requests.

use ruma::{OwnedUserId, ServerName, UserId};

use crate::{
    db::ghosts::GhostRow,
    network::{Network, RemoteUserId, UserInfo},
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
    pub async fn ensure_ghost(
        &self,
        network: &dyn Network,
        user: &UserInfo,
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
        let displayname = network.ghost_displayname(user);
        let registered = existing.as_ref().is_some_and(|g| g.registered);
        let name_ok =
            existing.as_ref().and_then(|g| g.name.as_deref()) == Some(displayname.as_str());
        if registered && name_ok {
            return Ok(mxid);
        }
        if !registered {
            self.intents.register(&mxid).await?;
            if existing.is_none() {
                self.metrics.ghosts.inc();
            }
        }
        if !name_ok && !displayname.trim().is_empty() {
            self.intents.set_displayname(&mxid, &displayname).await?;
        }
        let row = GhostRow {
            network: net.to_owned(),
            remote_id: user.id.as_str().to_owned(),
            mxid: mxid.to_string(),
            name: Some(displayname),
            avatar_mxc: existing.and_then(|g| g.avatar_mxc),
            registered: true,
        };
        self.db.upsert_ghost(&row).await?;
        Ok(mxid)
    }

    /// The network and remote user a ghost user id stands for, if it is one of ours.
    pub fn parse_ghost(&self, user: &UserId) -> Option<(&dyn Network, RemoteUserId)> {
        if user.server_name() != self.config.homeserver.domain {
            return None;
        }
        self.networks.values().find_map(|network| {
            let rest = user.localpart().strip_prefix(network.ghost_prefix())?;
            let id = unescape_localpart(rest)?;
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
