//! Signal, through a signal-cli daemon (JSON-RPC, multi-account mode), which keeps the Signal
//! Protocol sessions and keys; ferry is the Matrix-side endpoint.
//!
//! One connection serves every login. The daemon acknowledges messages to the Signal server as
//! it receives them, so each envelope is stored in ferry's remote inbox on arrival, before it is
//! bridged, and replayed from the login's checkpoint after a crash: nothing is lost between the
//! daemon and Matrix.

pub mod login;
pub mod rpc;
pub mod session;
pub mod wire;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use serde_json::json;
use tokio::sync::mpsc;

use self::rpc::{Endpoint, Incoming, RpcClient, RpcError};
use crate::{
    config::SignalConfig,
    db::Db,
    network::{
        Capabilities, EventSink, LoginFlowInfo, LoginProcess, Network, NetworkError, NetworkId,
        Session, StoredLogin, UserInfo,
    },
};

pub const SIGNAL: NetworkId = NetworkId::new("signal");

/// Maps daemon errors to what the bridge does with them.
pub(crate) fn link_error(err: RpcError) -> NetworkError {
    match err {
        RpcError::Unavailable(why) => {
            NetworkError::Transient(format!("the signal-cli daemon is unavailable ({why})"))
        }
        RpcError::Timeout(after) => {
            NetworkError::Transient(format!("signal-cli did not answer within {after:?}"))
        }
        // -5: rate limited by the Signal server; retrying later works.
        RpcError::Remote {
            code: -5, message, ..
        } => NetworkError::Transient(format!("rate limited by Signal: {message}")),
        RpcError::Remote {
            code: -4, message, ..
        } => NetworkError::Rejected(format!(
            "the recipient's safety number changed; verify it on your phone before sending ({message})"
        )),
        RpcError::Remote {
            code: -3, message, ..
        } => NetworkError::Transient(format!("signal-cli network error: {message}")),
        RpcError::Remote { message, .. } => NetworkError::Rejected(message),
        RpcError::Protocol(why) => NetworkError::Rejected(why),
    }
}

pub struct SignalNetwork {
    config: SignalConfig,
    db: Db,
    rpc: OnceLock<Arc<RpcClient>>,
    /// Live sessions by account number, fed by the dispatcher.
    sessions: Arc<Mutex<HashMap<String, mpsc::Sender<session::Feed>>>>,
}

impl SignalNetwork {
    pub fn new(config: SignalConfig, db: Db) -> Self {
        Self {
            config,
            db,
            rpc: OnceLock::new(),
            sessions: Arc::default(),
        }
    }

    /// The daemon connection, started on first use.
    fn rpc(&self) -> Result<Arc<RpcClient>, NetworkError> {
        if let Some(rpc) = self.rpc.get() {
            return Ok(rpc.clone());
        }
        let endpoint = Endpoint::parse(&self.config.daemon).ok_or_else(|| {
            NetworkError::Rejected(
                "networks.signal.daemon is not a tcp:// or unix:// address".to_owned(),
            )
        })?;
        let (tx, rx) = mpsc::channel(1024);
        let rpc = RpcClient::start(
            endpoint,
            Duration::from_secs(self.config.request_timeout_seconds),
            tx,
        );
        if self.rpc.set(rpc.clone()).is_err() {
            // Another caller won the race; use theirs (ours stops when dropped).
            return self
                .rpc
                .get()
                .cloned()
                .ok_or(NetworkError::NotConnected(SIGNAL));
        }
        tokio::spawn(dispatch(rx, self.sessions.clone()));
        Ok(rpc)
    }
}

/// Routes what the connection reports to the sessions.
async fn dispatch(
    mut incoming: mpsc::Receiver<Incoming>,
    sessions: Arc<Mutex<HashMap<String, mpsc::Sender<session::Feed>>>>,
) {
    while let Some(item) = incoming.recv().await {
        let targets: Vec<(Option<String>, session::Feed)> = match item {
            Incoming::Connected => {
                let all = sessions
                    .lock()
                    .expect("sessions lock")
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>();
                all.into_iter()
                    .map(|a| (Some(a), session::Feed::Connected))
                    .collect()
            }
            Incoming::Disconnected(why) => {
                let all = sessions
                    .lock()
                    .expect("sessions lock")
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>();
                all.into_iter()
                    .map(|a| (Some(a), session::Feed::Disconnected(why.clone())))
                    .collect()
            }
            Incoming::Notification { method, params } if method == "receive" => {
                // Subscriptions wrap the envelope in `result`; the on-start mode does not.
                let body = params
                    .get("result")
                    .cloned()
                    .unwrap_or_else(|| params.clone());
                let account = body
                    .get("account")
                    .or_else(|| params.get("account"))
                    .and_then(|a| a.as_str())
                    .map(str::to_owned);
                match body.get("envelope") {
                    Some(envelope) => {
                        vec![(account, session::Feed::Envelope(envelope.to_string()))]
                    }
                    None => {
                        tracing::warn!(
                            "signal-cli sent a receive notification without an envelope; skipped"
                        );
                        Vec::new()
                    }
                }
            }
            Incoming::Notification { method, .. } => {
                tracing::debug!(%method, "ignoring signal-cli notification");
                Vec::new()
            }
        };
        for (account, feed) in targets {
            let Some(account) = account else {
                tracing::warn!("signal-cli envelope names no account; skipped");
                continue;
            };
            let tx = sessions
                .lock()
                .expect("sessions lock")
                .get(&account)
                .cloned();
            if let Some(tx) = tx {
                let _ = tx.send(feed).await;
            }
        }
    }
}

impl Network for SignalNetwork {
    fn id(&self) -> NetworkId {
        SIGNAL
    }

    fn display_name(&self) -> &'static str {
        "Signal"
    }

    fn ghost_prefix(&self) -> &str {
        &self.config.ghost_prefix
    }

    fn ghost_displayname(&self, user: &UserInfo) -> String {
        crate::network::render_displayname(&self.config.displayname_template, user)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            formatting: true,
            group_membership: true,
            edits: true,
            reactions: true,
            multiple_reactions: false,
            replies: true,
            deletes: true,
            receipts: true,
            typing: true,
            presence: false,
            media: true,
            locations: false,
            contacts: false,
            chat_details: true,
            create_groups: false,
            max_file_size: 100 * 1024 * 1024,
        }
    }

    fn login_flows(&self) -> Vec<LoginFlowInfo> {
        vec![
            LoginFlowInfo {
                id: "qr",
                name: "QR code",
                description: "Link ferry as a device of your Signal account",
            },
            LoginFlowInfo {
                id: "existing",
                name: "Existing",
                description: "Use an account signal-cli already has",
            },
        ]
    }

    fn start_login(&self, flow: &str) -> Result<Box<dyn LoginProcess>, NetworkError> {
        let rpc = self.rpc()?;
        match flow {
            "qr" => Ok(Box::new(login::LinkLogin::new(
                rpc,
                self.config.device_name.clone(),
            ))),
            "existing" => Ok(Box::new(login::ExistingLogin::new(rpc))),
            _ => Err(NetworkError::Unsupported("that login flow")),
        }
    }

    fn load_session(
        &self,
        login: &StoredLogin,
        sink: EventSink,
    ) -> Result<Arc<dyn Session>, NetworkError> {
        let rpc = self.rpc()?;
        let (tx, rx) = mpsc::channel(1024);
        self.sessions
            .lock()
            .expect("sessions lock")
            .insert(login.id.as_str().to_owned(), tx);
        Ok(Arc::new(session::SignalSession::new(
            rpc,
            self.db.clone(),
            login.id.clone(),
            sink,
            rx,
        )))
    }
}

/// Params naming the account and the chat (a DM recipient or a group).
pub(crate) fn target_params(account: &str, chat: &crate::network::ChatId) -> serde_json::Value {
    match wire::group_of(chat) {
        Some(group) => json!({"account": account, "groupId": group}),
        None => json!({"account": account, "recipient": [chat.as_str()]}),
    }
}
