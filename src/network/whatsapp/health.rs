//! "Your phone has been offline too long": when the user's phone was last seen, kept across
//! restarts, and one warning when that gets too long ago.
//!
//! A companion device keeps working while the phone is off, but WhatsApp unlinks it once the
//! phone stays offline for about 14 days, and the server sends the companion no signal before
//! that. Like mautrix-whatsapp, ferry watches for anything that can only come from the phone
//! (the account's device 0): its own messages fanned out to companions, its read receipts,
//! history pushes, and app-state changes the user makes (pins, mutes, archives, stars, chats
//! marked read, deleted or cleared: these carry no device, and a change made in another
//! companion such as WhatsApp Web counts too, a small overestimate). The time is stored (a
//! `kv_store` row per linked device, written at most once a minute unless the warning state
//! changes), and when it is older than `phone_offline_warn_seconds` the user is told once in
//! the management room; seeing the phone again re-arms the warning (and says so). A fresh link
//! counts as seen: linking needs the phone. Unlinking on the phone is explicit (a `LoggedOut` event), reported by the session.
//!
//! The other parts of connection health live elsewhere: whatsapp-rust reconnects with backoff
//! and reports its state (mirrored by the session; the core tells the user when an outage
//! lasts), and every received message, receipt and group change is stored in the inbox before
//! it is bridged ([`super::inbox`]).

use std::{
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use whatsapp_rust::Jid;

use crate::db::Db;

/// How often `last_seen` is written at most while nothing else changes.
const PERSIST_EVERY_SECS: i64 = 60;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What is stored per login.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Seen {
    /// Unix seconds.
    last_seen: i64,
    /// The user was warned about this silence.
    warned: bool,
}

/// What the watcher should tell the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The phone has been silent this long (whole seconds).
    Offline(u64),
    /// The phone is back after a warning.
    Back,
}

/// One linked device's phone watch.
pub struct PhoneWatch {
    db: Db,
    key: String,
    seen: Mutex<Seen>,
    persisted_at: Mutex<i64>,
    /// A "back" notice waiting for the watcher.
    back: Mutex<bool>,
}

impl PhoneWatch {
    /// `device` names the linked device (its store id), so linking again starts afresh.
    pub fn new(db: Db, device: &str) -> Self {
        Self {
            db,
            key: format!("whatsapp:{device}:phone_seen"),
            seen: Mutex::new(Seen {
                last_seen: now(),
                warned: false,
            }),
            persisted_at: Mutex::new(0),
            back: Mutex::new(false),
        }
    }

    /// Reads the stored state; without one (a fresh login) the phone counts as seen now.
    pub async fn load(&self) {
        match self.db.kv_get(&self.key).await {
            Ok(Some(json)) => match serde_json::from_str::<Seen>(&json) {
                Ok(stored) => {
                    let mut seen = lock(&self.seen);
                    if stored.last_seen >= seen.last_seen {
                        *seen = stored;
                    } else {
                        // Seen during start-up already: newer, and it re-arms the warning.
                        seen.warned = false;
                    }
                }
                Err(err) => tracing::warn!(%err, "stored WhatsApp phone state unreadable"),
            },
            Ok(None) => self.persist(true).await,
            Err(err) => tracing::warn!(%err, "cannot read the WhatsApp phone state"),
        }
    }

    async fn persist(&self, force: bool) {
        let t = now();
        {
            let mut at = lock(&self.persisted_at);
            if !force && t - *at < PERSIST_EVERY_SECS {
                return;
            }
            *at = t;
        }
        let json = serde_json::to_string(&*lock(&self.seen)).unwrap_or_default();
        if let Err(err) = self.db.kv_set(&self.key, &json).await {
            tracing::warn!(%err, "cannot store the WhatsApp phone state");
        }
    }

    /// The phone did something just now.
    pub async fn seen(&self) {
        let was_warned = {
            let mut seen = lock(&self.seen);
            seen.last_seen = now();
            std::mem::take(&mut seen.warned)
        };
        if was_warned {
            *lock(&self.back) = true;
        }
        self.persist(was_warned).await;
    }

    /// What to tell the user now, given the threshold; marks it told.
    pub async fn check(&self, threshold: Duration) -> Option<Notice> {
        if std::mem::take(&mut *lock(&self.back)) {
            return Some(Notice::Back);
        }
        let silent = {
            let mut seen = lock(&self.seen);
            let silent = u64::try_from(now() - seen.last_seen).unwrap_or(0);
            if seen.warned || silent < threshold.as_secs() {
                return None;
            }
            seen.warned = true;
            silent
        };
        self.persist(true).await;
        Some(Notice::Offline(silent))
    }
}

/// How often the watcher looks: a quarter of the threshold, between 1 s and 1 h.
pub fn check_interval(threshold: Duration) -> Duration {
    (threshold / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

/// Whether `sender` is the user's phone: device 0 of the user's own account.
pub fn is_phone(sender: &Jid, from_me: bool) -> bool {
    from_me && sender.device == 0
}

/// The management-room text for a notice.
pub fn text(notice: &Notice) -> String {
    match notice {
        Notice::Offline(secs) => {
            let since = match (secs / 86_400, secs / 3600) {
                (0, 0) => format!("{secs} seconds"),
                (0, hours) => format!("{hours} hours"),
                (days, _) => format!("{days} days"),
            };
            format!(
                "Your phone has not been seen by WhatsApp for {since}. ferry stays \
                 connected for now, but WhatsApp unlinks a linked device when the phone stays \
                 offline for about 14 days: open WhatsApp on your phone to keep ferry linked."
            )
        }
        Notice::Back => "Your phone is back online with WhatsApp.".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_is_device_zero_of_own_account() {
        let phone: Jid = "5511900000001@s.whatsapp.net".parse().expect("jid");
        let companion = phone.with_device(3);
        assert!(is_phone(&phone, true));
        assert!(!is_phone(&companion, true));
        assert!(!is_phone(&phone, false));
    }

    #[test]
    fn interval_bounds() {
        assert_eq!(
            check_interval(Duration::from_secs(2)),
            Duration::from_secs(1)
        );
        assert_eq!(
            check_interval(Duration::from_secs(12 * 86_400)),
            Duration::from_secs(3600)
        );
    }
}
