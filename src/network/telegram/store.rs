//! The grammers session of one Telegram login, kept in ferry's own database.
//!
//! grammers' `SqliteSession` would bundle a second SQLite that silently replaces sqlx's, so ferry
//! implements grammers' `Session` trait itself: the state (home DC, DC options with the auth key,
//! cached peers with their access hashes, the update state: pts, qts, seq, date and per-channel
//! pts) lives in memory and is written as one JSON document to the `kv_store` row
//! `telegram/session/<login id>` after every change, so a restart resumes the login and catches
//! up on missed updates from the stored state. The document holds the auth key: it is a secret
//! and never logged.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use grammers_session::types::{
    ChannelState, DcOption, PeerId, PeerInfo, UpdateState, UpdatesState,
};
use grammers_session::{BoxFuture, Session, SessionData};
use serde::{Deserialize, Serialize};

use crate::db::Db;

/// Why the session could not be read or stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the Telegram session lock is poisoned")]
    Poisoned,
    #[error("cannot store the Telegram session: {0}")]
    Db(String),
    #[error("the stored Telegram session is unreadable: {0}")]
    Corrupt(String),
}

/// What is written to the database (grammers' `SessionData` is not serde itself).
#[derive(Serialize, Deserialize)]
struct Snapshot {
    home_dc: i32,
    dc_options: Vec<DcOption>,
    peers: Vec<PeerInfo>,
    updates_state: UpdatesState,
}

fn kv_key(login: &str) -> String {
    format!("telegram/session/{login}")
}

/// A grammers session persisted through [`Db::kv_set`].
pub struct DbSession {
    db: Db,
    /// None while a login is in progress (nothing is stored before it completes).
    login: Mutex<Option<String>>,
    data: Mutex<SessionData>,
}

impl std::fmt::Debug for DbSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbSession").finish_non_exhaustive()
    }
}

impl DbSession {
    /// A fresh session (a login in progress) whose DC options are `data`'s.
    pub fn fresh(db: Db, data: SessionData) -> Self {
        Self {
            db,
            login: Mutex::new(None),
            data: Mutex::new(data),
        }
    }

    /// Loads a stored login's session.
    pub async fn load(db: Db, login: &str) -> Result<Option<Self>, StoreError> {
        let Some(json) = db
            .kv_get(&kv_key(login))
            .await
            .map_err(|e| StoreError::Db(e.to_string()))?
        else {
            return Ok(None);
        };
        if json.is_empty() {
            return Ok(None);
        }
        let snap: Snapshot =
            serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let data = SessionData {
            home_dc: snap.home_dc,
            dc_options: snap.dc_options.into_iter().map(|o| (o.id, o)).collect(),
            peer_infos: snap.peers.into_iter().map(|p| (p.id(), p)).collect(),
            updates_state: snap.updates_state,
        };
        Ok(Some(Self {
            db,
            login: Mutex::new(Some(login.to_owned())),
            data: Mutex::new(data),
        }))
    }

    /// Binds a just-completed login to this session and stores it.
    pub async fn attach(&self, login: &str) -> Result<(), StoreError> {
        *self.login.lock().map_err(|_| StoreError::Poisoned)? = Some(login.to_owned());
        self.persist().await
    }

    /// Removes a login's stored session (after logging out).
    pub async fn forget(db: &Db, login: &str) -> Result<(), StoreError> {
        // kv_store has no delete: an empty document reads as "no session".
        db.kv_set(&kv_key(login), "")
            .await
            .map_err(|e| StoreError::Db(e.to_string()))
    }

    fn data(&self) -> Result<MutexGuard<'_, SessionData>, StoreError> {
        self.data.lock().map_err(|_| StoreError::Poisoned)
    }

    async fn persist(&self) -> Result<(), StoreError> {
        let Some(login) = self.login.lock().map_err(|_| StoreError::Poisoned)?.clone() else {
            return Ok(());
        };
        let json = {
            let data = self.data()?;
            let snap = Snapshot {
                home_dc: data.home_dc,
                dc_options: data.dc_options.values().cloned().collect(),
                peers: data.peer_infos.values().cloned().collect(),
                updates_state: data.updates_state.clone(),
            };
            serde_json::to_string(&snap).map_err(|e| StoreError::Corrupt(e.to_string()))?
        };
        self.db
            .kv_set(&kv_key(&login), &json)
            .await
            .map_err(|e| StoreError::Db(e.to_string()))
    }

    /// The stored update state (for tests and diagnostics).
    pub fn update_state(&self) -> Result<UpdatesState, StoreError> {
        Ok(self.data()?.updates_state.clone())
    }
}

impl Session for DbSession {
    type Error = StoreError;

    fn home_dc_id(&self) -> Result<i32, StoreError> {
        Ok(self.data()?.home_dc)
    }

    fn set_home_dc_id(&self, dc_id: i32) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.data()?.home_dc = dc_id;
            self.persist().await
        })
    }

    fn dc_option(&self, dc_id: i32) -> Result<Option<DcOption>, StoreError> {
        Ok(self.data()?.dc_options.get(&dc_id).cloned())
    }

    fn set_dc_option(&self, dc_option: &DcOption) -> BoxFuture<'_, Result<(), StoreError>> {
        let dc_option = dc_option.clone();
        Box::pin(async move {
            self.data()?.dc_options.insert(dc_option.id, dc_option);
            self.persist().await
        })
    }

    fn peer(&self, peer: PeerId) -> BoxFuture<'_, Result<Option<PeerInfo>, StoreError>> {
        Box::pin(async move { Ok(self.data()?.peer_infos.get(&peer).cloned()) })
    }

    fn cache_peer(&self, peer: PeerInfo) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let changed = {
                let mut data = self.data()?;
                let entry = data.peer_infos.entry(peer.id());
                match entry {
                    std::collections::hash_map::Entry::Occupied(mut e) => {
                        e.get_mut().extend_info(&peer)
                    }
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(peer);
                        true
                    }
                }
            };
            if changed {
                self.persist().await?;
            }
            Ok(())
        })
    }

    fn updates_state(&self) -> BoxFuture<'_, Result<UpdatesState, StoreError>> {
        Box::pin(async move { Ok(self.data()?.updates_state.clone()) })
    }

    fn set_update_state(&self, update: UpdateState) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            {
                let mut data = self.data()?;
                match update {
                    UpdateState::All(state) => data.updates_state = state,
                    UpdateState::Primary { pts, date, seq } => {
                        data.updates_state.pts = pts;
                        data.updates_state.date = date;
                        data.updates_state.seq = seq;
                    }
                    UpdateState::Secondary { qts } => data.updates_state.qts = qts,
                    UpdateState::Channel { id, pts } => {
                        data.updates_state.channels.retain(|c| c.id != id);
                        data.updates_state.channels.push(ChannelState { id, pts });
                    }
                }
            }
            self.persist().await
        })
    }
}

/// Session data pointing every DC at one address (a test network, or a proxy in front of
/// Telegram), optionally with a pre-shared auth key.
pub fn data_for(dc_override: Option<(std::net::SocketAddrV4, Option<[u8; 256]>)>) -> SessionData {
    let mut data = SessionData::default();
    if let Some((addr, key)) = dc_override {
        let ipv6 = std::net::SocketAddrV6::new(addr.ip().to_ipv6_mapped(), addr.port(), 0, 0);
        let ids: Vec<i32> = data.dc_options.keys().copied().collect();
        let mut options = HashMap::new();
        for id in ids {
            options.insert(
                id,
                DcOption {
                    id,
                    ipv4: addr,
                    ipv6,
                    auth_key: if id == data.home_dc { key } else { None },
                },
            );
        }
        data.dc_options = options;
    }
    data
}
