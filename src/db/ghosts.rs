//! Ghosts: remote users' puppets, with what has already been set up on the homeserver.

use super::{Db, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GhostRow {
    pub network: String,
    pub remote_id: String,
    pub mxid: String,
    pub name: Option<String>,
    pub avatar_mxc: Option<String>,
    /// The network's id of the image behind `avatar_mxc`.
    pub avatar_id: Option<String>,
    pub registered: bool,
}

type Raw = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
);

fn from_raw((network, remote_id, mxid, name, avatar_mxc, avatar_id, registered): Raw) -> GhostRow {
    GhostRow {
        network,
        remote_id,
        mxid,
        name,
        avatar_mxc,
        avatar_id,
        registered: registered != 0,
    }
}

macro_rules! columns {
    () => {
        "network, remote_id, mxid, name, avatar_mxc, avatar_id, registered"
    };
}

impl Db {
    pub async fn get_ghost_by_mxid(&self, mxid: &str) -> Result<Option<GhostRow>> {
        let row: Option<Raw> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM ghost WHERE mxid = $1"
        ))
        .bind(mxid)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(from_raw))
    }

    pub async fn get_ghost(&self, network: &str, remote_id: &str) -> Result<Option<GhostRow>> {
        let row: Option<Raw> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM ghost WHERE network = $1 AND remote_id = $2"
        ))
        .bind(network)
        .bind(remote_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(from_raw))
    }

    pub async fn upsert_ghost(&self, row: &GhostRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO ghost (network, remote_id, mxid, name, avatar_mxc, avatar_id, registered) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (network, remote_id) DO UPDATE SET name = excluded.name, \
             avatar_mxc = excluded.avatar_mxc, avatar_id = excluded.avatar_id, \
             registered = excluded.registered",
        )
        .bind(&row.network)
        .bind(&row.remote_id)
        .bind(&row.mxid)
        .bind(&row.name)
        .bind(&row.avatar_mxc)
        .bind(&row.avatar_id)
        .bind(i64::from(row.registered))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn count_ghosts(&self) -> Result<i64> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM ghost")
            .fetch_one(self.pool())
            .await?;
        Ok(n)
    }
}
