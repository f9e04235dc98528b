//! What ferry knows of WhatsApp contacts' profiles (push names), kept across restarts.
//!
//! WhatsApp has no profile lookup for names: a contact's push name arrives with their
//! messages, in the history sync and in push-name updates. Held in memory only, every ghost
//! created or refreshed after a restart (a group's member list, a member joining) would show
//! `+number` until that person writes again, and a group refresh would even overwrite a good
//! display name with the number. So the names are written to ferry's database (one `kv_store`
//! row per login, a JSON map) whenever one changes, and read back when the session starts.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use crate::db::Db;

/// One login's contact names, by ferry user id.
pub struct Profiles {
    db: Db,
    key: String,
    names: Mutex<BTreeMap<String, String>>,
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
            key: format!("whatsapp:{login}:push_names"),
            names: Mutex::new(BTreeMap::new()),
            write: tokio::sync::Mutex::new(()),
        })
    }

    /// Reads the stored names (a name learnt meanwhile wins over the stored one).
    pub async fn load(&self) {
        match self.db.kv_get(&self.key).await {
            Ok(Some(json)) => match serde_json::from_str::<BTreeMap<String, String>>(&json) {
                Ok(stored) => {
                    let mut names = lock(&self.names);
                    for (user, name) in stored {
                        names.entry(user).or_insert(name);
                    }
                }
                Err(err) => tracing::warn!(%err, "stored WhatsApp push names unreadable"),
            },
            Ok(None) => {}
            Err(err) => tracing::warn!(%err, "cannot read stored WhatsApp push names"),
        }
    }

    /// The push name of a ferry user id, if known.
    pub fn name(&self, user: &str) -> Option<String> {
        lock(&self.names)
            .get(user)
            .filter(|n| !n.is_empty())
            .cloned()
    }

    /// Records names (ferry user id, name); writes them when any changed. A failed write is
    /// logged: the names stay in memory and go out with the next change.
    pub async fn set(&self, updates: impl IntoIterator<Item = (String, String)>) {
        let changed = {
            let mut names = lock(&self.names);
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
        if !changed {
            return;
        }
        let _guard = self.write.lock().await;
        let json = serde_json::to_string(&*lock(&self.names)).unwrap_or_default();
        if let Err(err) = self.db.kv_set(&self.key, &json).await {
            tracing::warn!(%err, "cannot store WhatsApp push names");
        }
    }
}
