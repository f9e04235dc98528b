//! The network switch, the accounts' event logs as sockets read them, and the registry of open
//! event sockets.

use std::collections::BTreeMap;

use tokio::sync::{oneshot, watch};

use super::accounts::Account;
use super::{Sim, State};
use crate::sim::error::ApiError;
use crate::sim::model::Event;

#[derive(Debug)]
pub(super) struct SocketEntry {
    pub(super) token: String,
    close: oneshot::Sender<CloseReason>,
}

/// Why the server closes an event socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    NetworkDown,
    LoggedOut,
    ServerShutdown,
}

/// What an event socket needs once it is registered.
#[derive(Debug)]
pub(crate) struct SocketTicket {
    pub(crate) id: u64,
    pub(crate) account: String,
    /// Changes whenever the account's log grows.
    pub(crate) changes: watch::Receiver<u64>,
    /// Fires (or its sender is dropped) when the server closes the socket.
    pub(crate) close: oneshot::Receiver<CloseReason>,
}

impl Sim {
    /// Whether the network is up (see [`Sim::set_network_up`]).
    pub fn network_up(&self) -> bool {
        !self.lock().network_down
    }

    /// Takes the network down (closing every event socket) or brings it back up.
    pub fn set_network_up(&self, up: bool) {
        let mut state = self.lock();
        state.network_down = !up;
        if !up {
            state.close_sockets(|_| true, CloseReason::NetworkDown);
        }
    }

    /// The account's events with `seq > since`, in order.
    pub fn events(&self, account: &str, since: u64) -> Result<Vec<Event>, ApiError> {
        let state = self.lock();
        Ok(state.account(account)?.after(since, usize::MAX))
    }

    /// At most `max` of the account's events with `seq > since`, in order.
    pub fn events_page(
        &self,
        account: &str,
        since: u64,
        max: usize,
    ) -> Result<Vec<Event>, ApiError> {
        let state = self.lock();
        Ok(state.account(account)?.after(since, max))
    }

    /// Registers an event socket for `token`. Refused, with the reason to close the socket,
    /// while the network is down, once the server is shutting down, or for a token that is not
    /// (or no longer) valid.
    pub(crate) fn open_socket(&self, token: &str) -> Result<SocketTicket, CloseReason> {
        let mut state = self.lock();
        if state.shut_down {
            return Err(CloseReason::ServerShutdown);
        }
        if state.network_down {
            return Err(CloseReason::NetworkDown);
        }
        let account = state
            .account_for_token(token)
            .map_err(|_| CloseReason::LoggedOut)?;
        let changes = state
            .account(&account)
            .map_err(|_| CloseReason::LoggedOut)?
            .changed
            .subscribe();
        state.sockets_opened += 1;
        let id = state.sockets_opened;
        let (close_tx, close) = oneshot::channel();
        state.sockets.insert(
            id,
            SocketEntry {
                token: token.to_owned(),
                close: close_tx,
            },
        );
        Ok(SocketTicket {
            id,
            account,
            changes,
            close,
        })
    }

    /// Forgets a socket that has ended (a no-op if the server already closed it).
    pub(crate) fn forget_socket(&self, id: u64) {
        self.lock().sockets.remove(&id);
    }

    /// Closes every open event socket and refuses new ones: the server is stopping.
    pub(crate) fn shut_down(&self) {
        let mut state = self.lock();
        state.shut_down = true;
        state.close_sockets(|_| true, CloseReason::ServerShutdown);
    }

    /// Up to `max` of the account's events with `seq > after`. Marks `changes` seen under the
    /// lock first, so any event appended later wakes the socket.
    pub(crate) fn next_events(
        &self,
        account: &str,
        after: u64,
        changes: &mut watch::Receiver<u64>,
        max: usize,
    ) -> Vec<Event> {
        let state = self.lock();
        changes.mark_unchanged();
        state
            .accounts
            .get(account)
            .map(|acc| acc.after(after, max))
            .unwrap_or_default()
    }
}

impl State {
    pub(super) fn close_sockets(
        &mut self,
        should_close: impl Fn(&SocketEntry) -> bool,
        reason: CloseReason,
    ) {
        let (closing, open): (BTreeMap<_, _>, BTreeMap<_, _>) = std::mem::take(&mut self.sockets)
            .into_iter()
            .partition(|(_, entry)| should_close(entry));
        self.sockets = open;
        for entry in closing.into_values() {
            // The socket may have ended on its own already; then nobody listens.
            let _ = entry.close.send(reason);
        }
    }
}

impl Account {
    fn after(&self, since: u64, max: usize) -> Vec<Event> {
        // seq N is at index N - 1, so the events after `since` start at index `since`.
        let start = usize::try_from(since).unwrap_or(usize::MAX);
        self.log
            .get(start..)
            .map(|rest| rest.iter().take(max).cloned().collect())
            .unwrap_or_default()
    }
}
