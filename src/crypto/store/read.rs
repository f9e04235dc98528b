//! Reading: row fetches and turning stored rows back into matrix-sdk-crypto types.

use matrix_sdk_crypto::olm::{InboundGroupSession, PickledInboundGroupSession};
use serde::de::DeserializeOwned;
use sqlx::any::AnyRow;

use super::{SqlCryptoStore, SqlCryptoStoreError, error::Result};

/// A bind argument after the owner pair.
pub(super) enum Param<'a> {
    Text(&'a str),
    Int(i64),
}

impl SqlCryptoStore {
    /// Runs `sql` with the owner as `$1, $2` and `params` after it; returns all rows.
    pub(super) async fn rows<T>(&self, sql: &'static str, params: &[Param<'_>]) -> Result<Vec<T>>
    where
        T: for<'r> sqlx::FromRow<'r, AnyRow> + Send + Unpin,
    {
        let mut query = sqlx::query_as::<_, T>(sql)
            .bind(self.own_user())
            .bind(self.own_device());
        for param in params {
            query = match param {
                Param::Text(t) => query.bind(*t),
                Param::Int(i) => query.bind(*i),
            };
        }
        Ok(query.fetch_all(self.pool()?).await?)
    }

    /// Like [`Self::rows`], at most one row.
    pub(super) async fn row<T>(&self, sql: &'static str, params: &[Param<'_>]) -> Result<Option<T>>
    where
        T: for<'r> sqlx::FromRow<'r, AnyRow> + Send + Unpin,
    {
        let mut query = sqlx::query_as::<_, T>(sql)
            .bind(self.own_user())
            .bind(self.own_device());
        for param in params {
            query = match param {
                Param::Text(t) => query.bind(*t),
                Param::Int(i) => query.bind(*i),
            };
        }
        Ok(query.fetch_optional(self.pool()?).await?)
    }

    /// One encrypted `data` value, decrypted.
    pub(super) async fn value<T: DeserializeOwned>(
        &self,
        what: &'static str,
        sql: &'static str,
        params: &[Param<'_>],
    ) -> Result<Option<T>> {
        match self.row::<(Vec<u8>,)>(sql, params).await? {
            Some((data,)) => Ok(Some(self.key().decrypt(what, &data)?)),
            None => Ok(None),
        }
    }

    /// All encrypted `data` values, decrypted.
    pub(super) async fn values<T: DeserializeOwned>(
        &self,
        what: &'static str,
        sql: &'static str,
        params: &[Param<'_>],
    ) -> Result<Vec<T>> {
        self.rows::<(Vec<u8>,)>(sql, params)
            .await?
            .iter()
            .map(|(data,)| self.key().decrypt(what, data))
            .collect()
    }

    pub(super) async fn kv_value<T: DeserializeOwned>(
        &self,
        what: &'static str,
        key: &str,
    ) -> Result<Option<T>> {
        self.value(
            what,
            "SELECT data FROM crypto_kv WHERE own_user = $1 AND own_device = $2 AND key = $3",
            &[Param::Text(key)],
        )
        .await
    }

    /// Inbound group sessions from `(pickle, backed_up_to)` rows. The `backed_up_to` column is
    /// the truth about backups: marking a session backed up only updates the column.
    pub(super) async fn inbound_sessions(
        &self,
        sql: &'static str,
        params: &[Param<'_>],
    ) -> Result<Vec<InboundGroupSession>> {
        self.rows::<(Vec<u8>, Option<String>)>(sql, params)
            .await?
            .into_iter()
            .map(|(pickle, backed_up_to)| self.inbound_session(&pickle, backed_up_to.as_deref()))
            .collect()
    }

    pub(super) fn inbound_session(
        &self,
        pickle: &[u8],
        backed_up_to: Option<&str>,
    ) -> Result<InboundGroupSession> {
        let pickle: PickledInboundGroupSession =
            self.key().decrypt("inbound group session", pickle)?;
        let session = InboundGroupSession::from_pickle(pickle)
            .map_err(|_| SqlCryptoStoreError::Unpickle("inbound group session"))?;
        if backed_up_to.is_some() {
            session.mark_as_backed_up();
        } else {
            session.reset_backup_state();
        }
        Ok(session)
    }
}
