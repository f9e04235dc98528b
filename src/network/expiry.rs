//! Disappearing-message timers and deadlines, for the networks that have them (Signal,
//! WhatsApp). A chat's timer is kept in the key-value table (`<network>/<login>/timer/<chat>`):
//! what ferry sends into the chat carries it. Each bridged message of a chat with a timer gets
//! a deadline in the network's table (`signal_expiry`, `whatsapp_expiry`), so it survives a
//! restart of ferry, and a task per running session turns due deadlines into the network's
//! delete events, which the bridge shows as redactions. How a deadline is counted (from sending
//! or from receipt) is the connector's.

use std::{future::Future, time::Duration};

use crate::{
    db::{Db, Result},
    network::{ChatId, MessageId},
};

/// How often due deadlines are looked for.
const TICK: Duration = Duration::from_secs(1);
/// Deadlines handled per look.
const BATCH: i64 = 100;

/// The networks with disappearing messages, each with its own deadline table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerNetwork {
    Signal,
    WhatsApp,
}

impl TimerNetwork {
    /// The key-value prefix of its chat timers and the table of its deadlines.
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Self::Signal => ("signal", "signal_expiry"),
            Self::WhatsApp => ("whatsapp", "whatsapp_expiry"),
        }
    }
}

/// The timers and deadlines of one login.
#[derive(Clone)]
pub struct Timers {
    db: Db,
    network: TimerNetwork,
    login: String,
}

impl Timers {
    pub fn new(db: Db, network: TimerNetwork, login: &str) -> Self {
        Self {
            db,
            network,
            login: login.to_owned(),
        }
    }

    fn timer_key(&self, chat: &ChatId) -> String {
        let (prefix, _) = self.network.names();
        format!("{prefix}/{}/timer/{}", self.login, chat.as_str())
    }

    fn table(&self) -> &'static str {
        self.network.names().1
    }

    /// The chat's timer in seconds (0: off), as last seen.
    pub async fn timer(&self, chat: &ChatId) -> u32 {
        match self.db.kv_get(&self.timer_key(chat)).await {
            Ok(Some(value)) => value.parse().unwrap_or(0),
            Ok(None) => 0,
            Err(err) => {
                tracing::warn!(%err, "cannot read a chat's disappearing timer");
                0
            }
        }
    }

    /// Keeps the chat's timer; a failure is logged (the next message tells it again).
    pub async fn set_timer(&self, chat: &ChatId, seconds: u32) {
        if self.timer(chat).await == seconds {
            return;
        }
        if let Err(err) = self
            .db
            .kv_set(&self.timer_key(chat), &seconds.to_string())
            .await
        {
            tracing::warn!(%err, "cannot store a chat's disappearing timer");
        }
    }

    /// Records that `message` must be redacted at `deadline_ms`.
    pub async fn schedule(&self, chat: &ChatId, message: &MessageId, deadline_ms: i64) {
        // The table name comes from `TimerNetwork`, never from input.
        let sql = format!(
            "INSERT INTO {} (login_id, chat_id, message_id, deadline_ms) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (login_id, message_id) DO UPDATE SET deadline_ms = excluded.deadline_ms",
            self.table()
        );
        let result = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&self.login)
            .bind(chat.as_str())
            .bind(message.as_str())
            .bind(deadline_ms)
            .execute(self.db.pool())
            .await;
        if let Err(err) = result {
            tracing::warn!(%err, "cannot store a disappearing message's deadline");
        }
    }

    /// Messages whose deadline has passed, oldest first.
    pub async fn due(&self, now_ms: i64) -> Result<Vec<(ChatId, MessageId)>> {
        let sql = format!(
            "SELECT chat_id, message_id FROM {} \
             WHERE login_id = $1 AND deadline_ms <= $2 ORDER BY deadline_ms LIMIT $3",
            self.table()
        );
        let rows: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(&self.login)
            .bind(now_ms)
            .bind(BATCH)
            .fetch_all(self.db.pool())
            .await?;
        Ok(rows
            .into_iter()
            .map(|(chat, id)| (ChatId::new(chat), MessageId::new(id)))
            .collect())
    }

    /// Forgets a deadline once its delete was handed to the bridge.
    pub async fn done(&self, message: &MessageId) -> Result<()> {
        let sql = format!(
            "DELETE FROM {} WHERE login_id = $1 AND message_id = $2",
            self.table()
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&self.login)
            .bind(message.as_str())
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Forgets every deadline of the login (it logged out).
    pub async fn forget_all(&self) -> Result<()> {
        let sql = format!("DELETE FROM {} WHERE login_id = $1", self.table());
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&self.login)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Hands each due deadline's message to `delete` (which turns it into the network's
    /// delete event) until it reports the bridge gone, checking every second for as long as
    /// the session runs. A delete the bridge did not take stays due and is tried again.
    pub async fn run<F, Fut>(self, delete: F)
    where
        F: Fn(ChatId, MessageId) -> Fut,
        Fut: Future<Output = bool>,
    {
        loop {
            match self.due(crate::db::now_ms()).await {
                Ok(due) => {
                    for (chat, id) in due {
                        if !delete(chat, id.clone()).await {
                            return;
                        }
                        if let Err(err) = self.done(&id).await {
                            tracing::warn!(%err, "cannot forget a handled deadline");
                        }
                    }
                }
                Err(err) => tracing::warn!(%err, "cannot read disappearing-message deadlines"),
            }
            tokio::time::sleep(TICK).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn deadlines_and_timers_are_kept_per_login() {
        let db = Db::memory().await;
        let mine = Timers::new(db.clone(), TimerNetwork::WhatsApp, "111");
        let other = Timers::new(db.clone(), TimerNetwork::WhatsApp, "222");
        let chat = ChatId::new("5511900000002");
        mine.set_timer(&chat, 86_400).await;
        assert_eq!(mine.timer(&chat).await, 86_400);
        assert_eq!(other.timer(&chat).await, 0);
        let early = MessageId::new("5511900000002:A");
        let late = MessageId::new("5511900000002:B");
        mine.schedule(&chat, &late, 5_000).await;
        mine.schedule(&chat, &early, 1_000).await;
        other.schedule(&chat, &early, 1_000).await;
        assert_eq!(mine.due(999).await.expect("due"), vec![]);
        assert_eq!(
            mine.due(5_000).await.expect("due"),
            vec![(chat.clone(), early.clone()), (chat.clone(), late.clone())]
        );
        mine.done(&early).await.expect("done");
        assert_eq!(
            mine.due(5_000).await.expect("due"),
            vec![(chat.clone(), late)]
        );
        assert_eq!(
            other.due(5_000).await.expect("due"),
            vec![(chat.clone(), early.clone())]
        );
        // Another network's timers and deadlines are its own.
        let signal = Timers::new(db.clone(), TimerNetwork::Signal, "111");
        assert_eq!(signal.timer(&chat).await, 0);
        assert_eq!(signal.due(5_000).await.expect("due"), vec![]);
        signal.schedule(&chat, &early, 1_000).await;
        assert_eq!(signal.due(5_000).await.expect("due"), vec![(chat, early)]);
    }
}
