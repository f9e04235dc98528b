//! Remote logins: which Matrix user owns which remote account, its resume state and checkpoint.

use super::{Db, DbError, Result, now_ms};

#[derive(Debug, Clone)]
pub struct LoginRow {
    pub network: String,
    pub login_id: String,
    pub user_mxid: String,
    pub remote_name: String,
    pub secret: serde_json::Value,
    pub checkpoint: Option<i64>,
}

type Raw = (String, String, String, String, String, Option<i64>);

fn from_raw(
    (network, login_id, user_mxid, remote_name, secret, checkpoint): Raw,
) -> Result<LoginRow> {
    let secret = serde_json::from_str(&secret).map_err(|e| {
        DbError::Corrupt(format!(
            "login {network}/{login_id}: secret is not JSON: {e}"
        ))
    })?;
    Ok(LoginRow {
        network,
        login_id,
        user_mxid,
        remote_name,
        secret,
        checkpoint,
    })
}

macro_rules! columns {
    () => {
        "network, login_id, user_mxid, remote_name, secret, checkpoint"
    };
}

impl Db {
    /// Stores a login; logging in again to the same account replaces its state and owner.
    pub async fn upsert_login(&self, row: &LoginRow) -> Result<()> {
        self.ensure_user(&row.user_mxid).await?;
        sqlx::query(
            "INSERT INTO remote_login (network, login_id, user_mxid, remote_name, secret, checkpoint, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (network, login_id) DO UPDATE SET user_mxid = excluded.user_mxid, \
             remote_name = excluded.remote_name, secret = excluded.secret",
        )
        .bind(&row.network)
        .bind(&row.login_id)
        .bind(&row.user_mxid)
        .bind(&row.remote_name)
        .bind(row.secret.to_string())
        .bind(row.checkpoint)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// All logins, oldest first (ties by key, so the order is the same on both backends).
    pub async fn all_logins(&self) -> Result<Vec<LoginRow>> {
        let rows: Vec<Raw> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM remote_login ORDER BY created_at, network, login_id"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(from_raw).collect()
    }

    pub async fn logins_of_user(&self, mxid: &str) -> Result<Vec<LoginRow>> {
        let rows: Vec<Raw> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM remote_login WHERE user_mxid = $1 ORDER BY network, login_id"
        ))
        .bind(mxid)
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(from_raw).collect()
    }

    pub async fn get_login(&self, network: &str, login_id: &str) -> Result<Option<LoginRow>> {
        let row: Option<Raw> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM remote_login WHERE network = $1 AND login_id = $2"
        ))
        .bind(network)
        .bind(login_id)
        .fetch_optional(self.pool())
        .await?;
        row.map(from_raw).transpose()
    }

    pub async fn delete_login(&self, network: &str, login_id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM remote_login WHERE network = $1 AND login_id = $2")
            .bind(network)
            .bind(login_id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Moves a login's checkpoint forward (never back).
    pub async fn advance_checkpoint(
        &self,
        network: &str,
        login_id: &str,
        checkpoint: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE remote_login SET checkpoint = $3 WHERE network = $1 AND login_id = $2 \
             AND (checkpoint IS NULL OR checkpoint < $3)",
        )
        .bind(network)
        .bind(login_id)
        .bind(checkpoint)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}
