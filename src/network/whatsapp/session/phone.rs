//! The task that warns the user when their phone has not been seen for too long (the rules
//! are in [`super::super::health`]); it lives as long as the session's run.

use std::{sync::Arc, time::Duration};

use super::Inner;
use crate::network::whatsapp::{WHATSAPP, health};

/// Aborts the watcher when the session's run ends.
pub(super) struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the watcher for a running session.
pub(super) fn watch(inner: Arc<Inner>) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(watch_phone(inner)).abort_handle())
}

/// Warns the user once when their phone stays unseen too long.
async fn watch_phone(inner: Arc<Inner>) {
    let threshold = Duration::from_secs(inner.shared.config.phone_offline_warn_seconds);
    let mut tick = tokio::time::interval(health::check_interval(threshold));
    loop {
        tick.tick().await;
        if let Some(notice) = inner.phone.check(threshold).await {
            inner
                .sink
                .notice(WHATSAPP, inner.login.clone(), health::text(&notice))
                .await;
        }
    }
}
