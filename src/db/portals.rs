//! Portals: remote chat <-> Matrix room.

use super::{Db, Result, now_ms};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalRow {
    pub network: String,
    pub chat_id: String,
    /// '' for shared portals.
    pub receiver: String,
    pub room_id: Option<String>,
    pub kind: String,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub avatar_mxc: Option<String>,
    pub relay_login: Option<String>,
}

type Raw = (
    String,
    String,
    String,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn from_raw(r: Raw) -> PortalRow {
    let (network, chat_id, receiver, room_id, kind, name, topic, avatar_mxc, relay_login) = r;
    PortalRow {
        network,
        chat_id,
        receiver,
        room_id,
        kind,
        name,
        topic,
        avatar_mxc,
        relay_login,
    }
}

macro_rules! columns {
    () => {
        "network, chat_id, receiver, room_id, kind, name, topic, avatar_mxc, relay_login"
    };
}

impl Db {
    pub async fn get_portal(
        &self,
        network: &str,
        chat_id: &str,
        receiver: &str,
    ) -> Result<Option<PortalRow>> {
        let row: Option<Raw> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM portal WHERE network = $1 AND chat_id = $2 AND receiver = $3"
        ))
        .bind(network)
        .bind(chat_id)
        .bind(receiver)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(from_raw))
    }

    pub async fn portal_by_room(&self, room_id: &str) -> Result<Option<PortalRow>> {
        let row: Option<Raw> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM portal WHERE room_id = $1"
        ))
        .bind(room_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(from_raw))
    }

    /// Inserts or updates everything but the room id (set with [`Db::set_portal_room`]).
    pub async fn upsert_portal(&self, row: &PortalRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO portal (network, chat_id, receiver, room_id, kind, name, topic, avatar_mxc, relay_login, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (network, chat_id, receiver) DO UPDATE SET kind = excluded.kind, \
             name = excluded.name, topic = excluded.topic, avatar_mxc = excluded.avatar_mxc, \
             relay_login = excluded.relay_login",
        )
        .bind(&row.network)
        .bind(&row.chat_id)
        .bind(&row.receiver)
        .bind(&row.room_id)
        .bind(&row.kind)
        .bind(&row.name)
        .bind(&row.topic)
        .bind(&row.avatar_mxc)
        .bind(&row.relay_login)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn set_portal_room(
        &self,
        network: &str,
        chat_id: &str,
        receiver: &str,
        room_id: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE portal SET room_id = $4 WHERE network = $1 AND chat_id = $2 AND receiver = $3",
        )
        .bind(network)
        .bind(chat_id)
        .bind(receiver)
        .bind(room_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn delete_portal(&self, network: &str, chat_id: &str, receiver: &str) -> Result<()> {
        sqlx::query("DELETE FROM portal WHERE network = $1 AND chat_id = $2 AND receiver = $3")
            .bind(network)
            .bind(chat_id)
            .bind(receiver)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn count_portals(&self) -> Result<i64> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM portal WHERE room_id IS NOT NULL")
            .fetch_one(self.pool())
            .await?;
        Ok(n)
    }
}

impl Db {
    /// Every portal with a room (for `delete-all-portals`).
    pub async fn all_portals(&self) -> Result<Vec<PortalRow>> {
        let rows: Vec<Raw> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM portal WHERE room_id IS NOT NULL"
        ))
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(from_raw).collect())
    }

    pub async fn set_portal_relay(
        &self,
        network: &str,
        chat_id: &str,
        receiver: &str,
        relay: Option<&str>,
    ) -> Result<()> {
        sqlx::query("UPDATE portal SET relay_login = $4 WHERE network = $1 AND chat_id = $2 AND receiver = $3")
            .bind(network)
            .bind(chat_id)
            .bind(receiver)
            .bind(relay)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
