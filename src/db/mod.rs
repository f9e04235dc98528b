//! ferry's one database: SQLite (embedded default) or PostgreSQL, behind sqlx's `Any` driver.
//!
//! All SQL is portable (`$N` placeholders, `ON CONFLICT`, `RETURNING`), so one query string
//! serves both backends and one test-suite checks both. Only the schema files differ per dialect
//! (`migrations/sqlite`, `migrations/postgres`); they are applied at start-up. One module per
//! table keeps each query next to the table it touches.

pub mod crypto;
pub mod ghosts;
pub mod inbox;
pub mod kv;
pub mod logins;
pub mod messages;
pub mod portals;
pub mod reactions;
pub mod remote_inbox;
pub mod users;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::{
    AnyPool, Executor,
    any::{AnyPoolOptions, install_default_drivers},
    migrate::Migrator,
};

use crate::config::{DatabaseConfig, DatabaseType};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// Database errors. The message never includes connection strings (they may hold passwords).
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
}

pub type Result<T, E = DbError> = std::result::Result<T, E>;

/// A handle to the database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    kind: DatabaseType,
}

impl Db {
    /// A fresh, migrated in-memory SQLite database, for unit tests.
    #[cfg(test)]
    pub async fn memory() -> Self {
        Self::connect(&crate::config::DatabaseConfig {
            kind: crate::config::DatabaseType::Sqlite,
            uri: "sqlite::memory:".to_owned(),
            max_connections: 1,
        })
        .await
        .expect("in-memory database")
    }

    /// Connects and applies pending migrations.
    pub async fn connect(config: &DatabaseConfig) -> Result<Self> {
        install_default_drivers();
        let kind = config.kind;
        let uri = match kind {
            DatabaseType::Sqlite if !config.uri.contains("mode=") => {
                let sep = if config.uri.contains('?') { '&' } else { '?' };
                format!("{}{sep}mode=rwc", config.uri)
            }
            _ => config.uri.clone(),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if kind == DatabaseType::Sqlite {
                        // WAL lets readers run beside the writer; NORMAL is durable across a
                        // process crash (only an OS crash can lose the last commits).
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                    }
                    Ok(())
                })
            })
            .connect(&uri)
            .await?;
        let db = Self { pool, kind };
        db.migrate().await?;
        Ok(db)
    }

    async fn migrate(&self) -> Result<()> {
        match self.kind {
            DatabaseType::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await?,
            DatabaseType::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await?,
        }
        Ok(())
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn kind(&self) -> DatabaseType {
        self.kind
    }

    /// Checks the database answers (for health and start-up).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
