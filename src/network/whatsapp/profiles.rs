//! What ferry knows of WhatsApp contacts' profiles (push names and profile-picture ids), kept
//! across restarts.
//!
//! WhatsApp has no profile lookup for names: a contact's push name arrives with their
//! messages, in the history sync and in push-name updates. Held in memory only, every ghost
//! created or refreshed after a restart (a group's member list, a member joining) would show
//! `+number` until that person writes again, and a group refresh would even overwrite a good
//! display name with the number. So the names are written to ferry's database (one `kv_store`
//! row per login, a JSON map) whenever one changes, and read back when the session starts.
//!
//! Profile pictures: ferry asks WhatsApp for a contact's picture the first time it bridges
//! something from them in a process, and again when WhatsApp announces a change. The ghost's
//! avatar id is `wapic:<user>:<picture id>`, so the core replaces the avatar exactly when the
//! picture id changes; the picture id is stored with the names, since a ghost refreshed with
//! no avatar after a restart would lose its picture. The bytes are fetched when the core asks
//! (`download_media`), from the URL WhatsApp gives for the current picture.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
};

use serde::{Deserialize, Serialize};

use crate::db::Db;

/// What is stored per login.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Known {
    /// Push names by ferry user id.
    #[serde(default)]
    names: BTreeMap<String, String>,
    /// Current profile-picture ids by ferry user id (absent: none, or not asked yet).
    #[serde(default)]
    pictures: BTreeMap<String, String>,
}

/// The avatar id the core keeps for a ghost.
pub fn avatar_id(user: &str, picture: &str) -> String {
    format!("wapic:{user}:{picture}")
}

/// The user of an avatar id.
pub fn avatar_user(id: &str) -> Option<&str> {
    let rest = id.strip_prefix("wapic:")?;
    rest.rsplit_once(':').map(|(user, _)| user)
}

/// One login's contact profiles, by ferry user id.
pub struct Profiles {
    db: Db,
    key: String,
    known: Mutex<Known>,
    /// Users whose picture this process asked for already.
    asked: Mutex<BTreeSet<String>>,
    /// Serializes writes so an older map never overwrites a newer one.
    write: tokio::sync::Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Profiles {
    pub fn new(db: Db, login: &str) -> Arc<Self> {
        Arc::new(Self {
            db,
            key: format!("whatsapp:{login}:profiles"),
            known: Mutex::new(Known::default()),
            asked: Mutex::new(BTreeSet::new()),
            write: tokio::sync::Mutex::new(()),
        })
    }

    /// Reads the stored names (a name learnt meanwhile wins over the stored one).
    pub async fn load(&self) {
        match self.db.kv_get(&self.key).await {
            Ok(Some(json)) => match serde_json::from_str::<Known>(&json) {
                Ok(stored) => {
                    let mut known = lock(&self.known);
                    for (user, name) in stored.names {
                        known.names.entry(user).or_insert(name);
                    }
                    for (user, picture) in stored.pictures {
                        known.pictures.entry(user).or_insert(picture);
                    }
                }
                Err(err) => tracing::warn!(%err, "stored WhatsApp profiles unreadable"),
            },
            Ok(None) => {}
            Err(err) => tracing::warn!(%err, "cannot read stored WhatsApp push names"),
        }
    }

    /// The push name of a ferry user id, if known.
    pub fn name(&self, user: &str) -> Option<String> {
        lock(&self.known)
            .names
            .get(user)
            .filter(|n| !n.is_empty())
            .cloned()
    }

    /// The ghost avatar id of a ferry user id, if they have a picture.
    pub fn avatar(&self, user: &str) -> Option<String> {
        lock(&self.known)
            .pictures
            .get(user)
            .map(|picture| avatar_id(user, picture))
    }

    /// True the first time this process asks about `user`'s picture.
    pub fn first_ask(&self, user: &str) -> bool {
        lock(&self.asked).insert(user.to_owned())
    }

    /// Records a user's current picture id (`None`: no picture); returns whether it changed.
    pub async fn set_picture(&self, user: &str, picture: Option<String>) -> bool {
        let changed = {
            let mut known = lock(&self.known);
            let before = known.pictures.get(user).cloned();
            if before == picture {
                false
            } else {
                match picture {
                    Some(p) => known.pictures.insert(user.to_owned(), p),
                    None => known.pictures.remove(user),
                };
                true
            }
        };
        if changed {
            self.persist().await;
        }
        changed
    }

    async fn persist(&self) {
        let _guard = self.write.lock().await;
        let json = serde_json::to_string(&*lock(&self.known)).unwrap_or_default();
        if let Err(err) = self.db.kv_set(&self.key, &json).await {
            tracing::warn!(%err, "cannot store WhatsApp profiles");
        }
    }

    /// Records names (ferry user id, name); writes them when any changed. A failed write is
    /// logged: the names stay in memory and go out with the next change.
    pub async fn set(&self, updates: impl IntoIterator<Item = (String, String)>) {
        let changed = {
            let names = &mut lock(&self.known).names;
            let mut changed = false;
            for (user, name) in updates {
                if name.trim().is_empty() {
                    continue;
                }
                if names.get(&user) != Some(&name) {
                    names.insert(user, name);
                    changed = true;
                }
            }
            changed
        };
        if changed {
            self.persist().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avatar_ids_name_their_user() {
        let id = avatar_id("5511900000002", "1700000001");
        assert_eq!(avatar_user(&id), Some("5511900000002"));
        assert_eq!(avatar_user(&avatar_id("lid-21:1", "7")), Some("lid-21:1"));
        assert_eq!(avatar_user("wamedia-00"), None);
    }
}
