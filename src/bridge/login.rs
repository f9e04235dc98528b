//! Remote logins: logging in through a network's flow, the live sessions, and their state.

use std::sync::{Arc, Mutex};

use ruma::{OwnedRoomId, OwnedUserId, UserId};

use crate::{
    db::logins::LoginRow,
    network::{
        CompletedLogin, ConnectionState, DisplayKind, LoginId, LoginProcess, LoginStep, Network,
        NetworkError, NetworkId, PortalKey, RemoteUserId, Session, StoredLogin,
    },
};

use super::{Bridge, BridgeError};

const QR_SIZE: u32 = 384;

/// A QR code on screen: its room and events (the image and the text with the code).
#[derive(Debug)]
pub(crate) struct ShownQr {
    room: OwnedRoomId,
    events: Vec<ruma::OwnedEventId>,
}

/// Renders `data` as a PNG QR code of about QR_SIZE pixels.
pub fn qr_png(data: &str) -> Result<Vec<u8>, String> {
    let code = qrcode::QrCode::new(data.as_bytes()).map_err(|e| e.to_string())?;
    let image = code
        .render::<image::Luma<u8>>()
        .min_dimensions(QR_SIZE, QR_SIZE)
        .build();
    let mut png = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageLuma8(image)
        .write_to(&mut png, image::ImageFormat::Png)
        .map_err(|e| e.to_string())?;
    Ok(png.into_inner())
}

/// A live login: its session and the Matrix user it belongs to.
#[derive(Clone)]
pub struct LoginHandle {
    pub network: NetworkId,
    pub id: LoginId,
    pub user: OwnedUserId,
    pub remote_name: String,
    pub session: Arc<dyn Session>,
    state: Arc<Mutex<ConnectionState>>,
    outage: Arc<Mutex<Outage>>,
}

/// A login's current cut-off from its network, for the one notice when it lasts.
#[derive(Debug, Default)]
struct Outage {
    /// Bumped when an outage starts or ends; a pending notice for an older one is dropped.
    epoch: u64,
    /// The user was told about the current outage.
    notified: bool,
}

impl LoginHandle {
    pub fn own_user(&self) -> &RemoteUserId {
        self.session.own_user()
    }

    pub fn state(&self) -> ConnectionState {
        self.state.lock().expect("state lock").clone()
    }
}

/// A login a user is in the middle of (waiting for their next input).
pub struct PendingLogin {
    pub network: NetworkId,
    pub room: OwnedRoomId,
    pub process: Box<dyn LoginProcess>,
}

impl Bridge {
    pub fn login_handle(&self, network: NetworkId, login: &LoginId) -> Option<LoginHandle> {
        self.sessions
            .read()
            .expect("sessions lock")
            .get(&(network, login.clone()))
            .cloned()
    }

    pub fn logins_of(&self, user: &UserId) -> Vec<LoginHandle> {
        let sessions = self.sessions.read().expect("sessions lock");
        let mut logins: Vec<_> = sessions
            .values()
            .filter(|h| h.user == user)
            .cloned()
            .collect();
        logins.sort_by(|a, b| (a.network, &a.id).cmp(&(b.network, &b.id)));
        logins
    }

    /// The login `user` sends with in a portal: the DM's own login, or any of theirs on the
    /// network for shared portals.
    pub(crate) fn login_for_portal(&self, key: &PortalKey, user: &UserId) -> Option<LoginHandle> {
        match &key.receiver {
            Some(receiver) => self
                .login_handle(key.network, receiver)
                .filter(|h| h.user == user),
            None => {
                let mut candidates: Vec<_> = self
                    .logins_of(user)
                    .into_iter()
                    .filter(|h| h.network == key.network)
                    .collect();
                candidates.sort_by_key(|h| h.state() != ConnectionState::Connected);
                candidates.into_iter().next()
            }
        }
    }

    pub(crate) fn network_of_login(
        &self,
        login: &LoginHandle,
    ) -> Result<Arc<dyn Network>, BridgeError> {
        self.network(login.network.as_str())
            .cloned()
            .ok_or_else(|| {
                BridgeError::Invalid(format!("network {} is not enabled", login.network))
            })
    }

    /// Loads and connects every stored login (at start-up). Connections run in the background,
    /// so start-up time does not grow with the number of logins.
    pub async fn start_sessions(self: &Arc<Self>) -> Result<(), BridgeError> {
        for row in self.db.all_logins().await? {
            let Some(network) = self.network(&row.network).cloned() else {
                tracing::warn!(
                    network = row.network,
                    "a login exists for a network that is not enabled; skipped"
                );
                continue;
            };
            let Ok(user) = OwnedUserId::try_from(row.user_mxid.as_str()) else {
                continue;
            };
            if let Err(err) = self.activate_login(network, user, &row).await {
                tracing::warn!(%err, network = row.network, "cannot resume a login");
            }
        }
        Ok(())
    }

    async fn activate_login(
        &self,
        network: Arc<dyn Network>,
        user: OwnedUserId,
        row: &LoginRow,
    ) -> Result<LoginHandle, BridgeError> {
        let stored = StoredLogin {
            id: LoginId::new(row.login_id.clone()),
            secret: row.secret.clone(),
            checkpoint: row.checkpoint,
        };
        let session = network.load_session(&stored, self.sink())?;
        let handle = LoginHandle {
            network: network.id(),
            id: stored.id.clone(),
            user,
            remote_name: row.remote_name.clone(),
            session: session.clone(),
            state: Arc::new(Mutex::new(ConnectionState::Connecting)),
            outage: Arc::default(),
        };
        let old = self
            .sessions
            .write()
            .expect("sessions lock")
            .insert((network.id(), stored.id.clone()), handle.clone());
        if let Some(old) = old {
            old.session.disconnect().await;
        }
        self.trackers.lock().expect("trackers lock").insert(
            (network.id(), stored.id.clone()),
            super::checkpoint::CheckpointTracker::new(row.checkpoint),
        );
        session.connect(row.checkpoint).await;
        Ok(handle)
    }

    /// Records a session's state; tells the user in their management room when it needs them.
    pub(crate) async fn session_state(
        self: &Arc<Self>,
        network: NetworkId,
        login: LoginId,
        state: ConnectionState,
    ) {
        let Some(handle) = self.login_handle(network, &login) else {
            return;
        };
        let previous = std::mem::replace(
            &mut *handle.state.lock().expect("state lock"),
            state.clone(),
        );
        if previous == state {
            return;
        }
        let gauge = self
            .metrics
            .logins_connected
            .with_label_values(&[network.as_str()]);
        if state == ConnectionState::Connected {
            gauge.inc();
        } else if previous == ConnectionState::Connected {
            gauge.dec();
        }
        tracing::info!(%network, login = %login, %state, "session state");
        self.track_outage(&handle, &previous, &state).await;
        if let ConnectionState::LoggedOut(_) = &state
            && let Some(room) = self.management_room(&handle.user).await
        {
            let name = self
                .network(network.as_str())
                .map_or("the network", |n| n.display_name());
            self.notice(
                &room,
                &format!(
                    "Your {name} login {} was ended: {state}. Log in again with `login {network}`.",
                    handle.remote_name
                ),
            )
            .await;
        }
    }

    /// A session's message for its user, in their management room.
    pub(crate) async fn session_notice(&self, network: NetworkId, login: &LoginId, text: &str) {
        let Some(handle) = self.login_handle(network, login) else {
            return;
        };
        if let Some(room) = self.management_room(&handle.user).await {
            self.notice(&room, text).await;
        }
    }

    /// One notice when a login stays cut off longer than `outage_notice_seconds` (not one per
    /// retry), and one when it is back; short blips say nothing.
    async fn track_outage(
        self: &Arc<Self>,
        handle: &LoginHandle,
        previous: &ConnectionState,
        state: &ConnectionState,
    ) {
        let down = |s: &ConnectionState| matches!(s, ConnectionState::TransientDisconnect(_));
        let name = self
            .network(handle.network.as_str())
            .map_or("network", |n| n.display_name())
            .to_owned();
        if down(state) && !down(previous) {
            let epoch = {
                let mut outage = handle.outage.lock().expect("outage lock");
                outage.epoch += 1;
                outage.epoch
            };
            let bridge = Arc::clone(self);
            let handle = handle.clone();
            let grace = std::time::Duration::from_secs(self.config.bridge.outage_notice_seconds);
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                {
                    let mut outage = handle.outage.lock().expect("outage lock");
                    if outage.epoch != epoch || outage.notified {
                        return;
                    }
                    outage.notified = true;
                }
                let why = handle.state();
                if let Some(room) = bridge.management_room(&handle.user).await {
                    bridge
                        .notice(
                            &room,
                            &format!(
                                "Your {name} login {} cannot reach {name} ({why}). ferry keeps \
                                 retrying and loses nothing: messages wait and are delivered \
                                 when it is back. You will be told then.",
                                handle.remote_name
                            ),
                        )
                        .await;
                }
            });
        } else if !down(state) {
            let was_notified = {
                let mut outage = handle.outage.lock().expect("outage lock");
                outage.epoch += 1;
                std::mem::take(&mut outage.notified)
            };
            if was_notified
                && *state == ConnectionState::Connected
                && let Some(room) = self.management_room(&handle.user).await
            {
                self.notice(
                    &room,
                    &format!(
                        "Your {name} login {} is connected again.",
                        handle.remote_name
                    ),
                )
                .await;
            }
        }
    }

    /// Starts a login for `user`, answering in `room`.
    pub(crate) async fn begin_login(
        self: &Arc<Self>,
        user: &UserId,
        room: &ruma::RoomId,
        network_name: &str,
        flow_name: Option<&str>,
    ) -> String {
        let Some(network) = self.network(network_name).cloned() else {
            let names: Vec<_> = self.networks.keys().copied().collect();
            return format!(
                "Unknown network `{network_name}`. Enabled networks: {}.",
                names.join(", ")
            );
        };
        let flows = network.login_flows();
        let chosen = match flow_name {
            Some(name) => flows.iter().find(|f| f.id == name),
            None => flows.first(),
        };
        let Some(flow) = chosen else {
            let names: Vec<_> = flows
                .iter()
                .map(|f| format!("`{}` ({})", f.id, f.description))
                .collect();
            return format!("{} logins: {}.", network.display_name(), names.join(", "));
        };
        let mut process = match network.start_login(flow.id) {
            Ok(process) => process,
            Err(err) => return format!("Cannot start the login: {err}"),
        };
        let step = process.start().await;
        self.continue_login(user, room, network.id(), process, step)
            .await
    }

    /// Feeds a message to a user's login in progress; `None` when they have none.
    pub(crate) async fn login_input(
        self: &Arc<Self>,
        user: &UserId,
        room: &ruma::RoomId,
        input: &str,
    ) -> Option<String> {
        let pending = self.pending_logins.lock().await.remove(user)?;
        if pending.room != room {
            self.pending_logins
                .lock()
                .await
                .insert(user.to_owned(), pending);
            return None;
        }
        let PendingLogin {
            network,
            mut process,
            ..
        } = pending;
        let step = process.submit(input.trim()).await;
        Some(
            self.continue_login(user, room, network, process, step)
                .await,
        )
    }

    pub(crate) async fn cancel_login(&self, user: &UserId) -> bool {
        let waiting = self
            .waiting_logins
            .lock()
            .expect("waiting lock")
            .remove(user);
        if let Some(task) = &waiting {
            task.abort();
        }
        self.retire_qr(user).await;
        self.pending_logins.lock().await.remove(user).is_some() || waiting.is_some()
    }

    /// Removes the QR code shown to `user` (it was replaced, scanned or expired).
    async fn retire_qr(&self, user: &UserId) {
        let shown = self.qr_shown.lock().expect("qr lock").remove(user);
        let Some(shown) = shown else { return };
        let bot = self.intents.bot().to_owned();
        for event in shown.events {
            if let Err(err) = self
                .intents
                .redact(
                    &shown.room,
                    &bot,
                    &event,
                    Some("a newer QR code replaces it"),
                )
                .await
            {
                tracing::debug!(%err, "cannot remove an old QR code");
            }
        }
    }

    /// Shows a QR code as an image (and its text below, for copying).
    async fn send_qr(&self, room: &ruma::RoomId, data: &str) -> Option<ruma::OwnedEventId> {
        let png = match qr_png(data) {
            Ok(png) => png,
            Err(err) => {
                tracing::warn!(%err, "cannot render QR code");
                return None;
            }
        };
        let size = png.len();
        let mxc = match self
            .intents
            .upload(png, "image/png", Some("login-qr.png".to_owned()))
            .await
        {
            Ok(mxc) => mxc,
            Err(err) => {
                tracing::warn!(%err, "cannot upload QR code");
                return None;
            }
        };
        let content = serde_json::json!({
            "msgtype": "m.image", "body": "login-qr.png", "url": mxc,
            "info": {"mimetype": "image/png", "size": size, "w": QR_SIZE, "h": QR_SIZE},
        });
        let txn = format!("ferry-qr-{}", ruma::TransactionId::new());
        let bot = self.intents.bot().to_owned();
        match self
            .intents
            .send_event(room, &bot, "m.room.message", &txn, &content)
            .await
        {
            Ok(id) => Some(id),
            Err(err) => {
                tracing::warn!(%err, "cannot send QR code");
                None
            }
        }
    }

    /// Drives a login from `step` on. Returns a boxed future: it can restart itself from a
    /// background task (after a QR scan), which an `async fn` cannot name.
    fn continue_login<'a>(
        self: &'a Arc<Self>,
        user: &'a UserId,
        room: &'a ruma::RoomId,
        network: NetworkId,
        mut process: Box<dyn LoginProcess>,
        step: Result<LoginStep, NetworkError>,
    ) -> futures_util::future::BoxFuture<'a, String> {
        Box::pin(async move {
            match step {
                Err(NetworkError::Rejected(reason)) => {
                    // A wrong answer: the same step may be tried again.
                    self.pending_logins.lock().await.insert(
                        user.to_owned(),
                        PendingLogin {
                            network,
                            room: room.to_owned(),
                            process,
                        },
                    );
                    format!("{reason}. Try again, or send `cancel`.")
                }
                Err(err) => {
                    self.retire_qr(user).await;
                    format!("Login failed: {err}")
                }
                Ok(LoginStep::Input { prompt, .. }) => {
                    self.pending_logins.lock().await.insert(
                        user.to_owned(),
                        PendingLogin {
                            network,
                            room: room.to_owned(),
                            process,
                        },
                    );
                    format!("{prompt} (or send `cancel`)")
                }
                Ok(LoginStep::DisplayAndWait {
                    kind,
                    data,
                    instructions,
                }) => {
                    // A rotated QR code replaces the one shown before (image and text).
                    self.retire_qr(user).await;
                    let image = match kind {
                        DisplayKind::Qr => self.send_qr(room, &data).await,
                        DisplayKind::Code => None,
                    };
                    let text = match self
                        .intents
                        .bot_notice(room, &format!("{instructions}\n\n{data}"))
                        .await
                    {
                        Ok(id) => Some(id),
                        Err(err) => {
                            tracing::warn!(%err, %room, "cannot send notice");
                            None
                        }
                    };
                    if let (DisplayKind::Qr, Some(image)) = (kind, image) {
                        self.qr_shown.lock().expect("qr lock").insert(
                            user.to_owned(),
                            ShownQr {
                                room: room.to_owned(),
                                events: std::iter::once(image).chain(text).collect(),
                            },
                        );
                    }
                    // Waiting (for a scan, for a phone) happens off the command lane, so `cancel`
                    // and other commands still work meanwhile.
                    let bridge = self.clone();
                    let waiter = user.to_owned();
                    let (user, room) = (user.to_owned(), room.to_owned());
                    let task = tokio::spawn(async move {
                        let step = process.wait().await;
                        bridge
                            .waiting_logins
                            .lock()
                            .expect("waiting lock")
                            .remove(&user);
                        let reply = bridge
                            .continue_login(&user, &room, network, process, step)
                            .await;
                        bridge.notice(&room, &reply).await;
                    });
                    self.waiting_logins
                        .lock()
                        .expect("waiting lock")
                        .insert(waiter, task.abort_handle());
                    "Waiting…".to_owned()
                }
                Ok(LoginStep::Complete(done)) => {
                    self.retire_qr(user).await;
                    self.finish_login(user, network, done).await
                }
            }
        })
    }

    async fn finish_login(
        self: &Arc<Self>,
        user: &UserId,
        network: NetworkId,
        done: CompletedLogin,
    ) -> String {
        let Some(net) = self.network(network.as_str()).cloned() else {
            return "The network was disabled during the login.".to_owned();
        };
        if let Some(existing) = self.login_handle(network, &done.id)
            && existing.user != user
        {
            return format!(
                "That {} account is already bridged by another Matrix user.",
                net.display_name()
            );
        }
        let row = LoginRow {
            network: network.as_str().to_owned(),
            login_id: done.id.as_str().to_owned(),
            user_mxid: user.to_string(),
            remote_name: done.remote_name.clone(),
            secret: done.secret,
            checkpoint: None,
        };
        if let Err(err) = self.db.upsert_login(&row).await {
            return format!("Logged in, but the login could not be saved: {err}");
        }
        let row = match self.db.get_login(&row.network, &row.login_id).await {
            Ok(Some(row)) => row,
            _ => row,
        };
        match self
            .activate_login(net.clone(), user.to_owned(), &row)
            .await
        {
            Ok(handle) => {
                let bridge = self.clone();
                tokio::spawn(async move {
                    if let Err(err) = bridge.sync_login(&handle).await {
                        tracing::warn!(%err, "initial sync failed");
                    }
                });
                format!(
                    "Logged in to {} as {} ({}). Your chats will appear as rooms shortly.",
                    net.display_name(),
                    done.remote_name,
                    done.id
                )
            }
            Err(err) => format!("Logged in, but the session could not start: {err}"),
        }
    }

    /// Creates or updates the portal of every chat of a login. Returns how many chats.
    pub(crate) async fn sync_login(
        self: &Arc<Self>,
        handle: &LoginHandle,
    ) -> Result<usize, BridgeError> {
        let chats = handle.session.list_chats().await?;
        let count = chats.len();
        for chat in chats {
            let receiver = (chat.kind == crate::network::ChatKind::Dm).then(|| handle.id.clone());
            let key = PortalKey {
                network: handle.network,
                chat: chat.id.clone(),
                receiver,
            };
            self.queue_sync(key, handle.id.clone(), chat).await;
        }
        Ok(count)
    }

    /// Logs out a login: ends it remotely (best effort) and forgets it.
    pub(crate) async fn logout(&self, handle: &LoginHandle) -> Result<(), BridgeError> {
        if let Err(err) = handle.session.logout().await {
            tracing::warn!(%err, "remote logout failed; forgetting the login anyway");
        }
        handle.session.disconnect().await;
        if handle.state() == ConnectionState::Connected {
            self.metrics
                .logins_connected
                .with_label_values(&[handle.network.as_str()])
                .dec();
        }
        self.sessions
            .write()
            .expect("sessions lock")
            .remove(&(handle.network, handle.id.clone()));
        self.trackers
            .lock()
            .expect("trackers lock")
            .remove(&(handle.network, handle.id.clone()));
        self.db
            .delete_login(handle.network.as_str(), handle.id.as_str())
            .await?;
        Ok(())
    }

    /// Disconnects every session (shutdown).
    pub async fn stop_sessions(&self) {
        let handles: Vec<_> = self
            .sessions
            .read()
            .expect("sessions lock")
            .values()
            .cloned()
            .collect();
        for handle in handles {
            handle.session.disconnect().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qr_codes_render_as_png() {
        let png = qr_png("sgnl://linkdevice?uuid=abc&pub_key=def").expect("renders");
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let decoded = image::load_from_memory(&png).expect("decodes");
        assert!(decoded.width() >= QR_SIZE && decoded.height() >= QR_SIZE);
        assert!(
            qr_png(&"x".repeat(10_000)).is_err(),
            "too long for a QR code: an error, not a panic"
        );
    }
}
