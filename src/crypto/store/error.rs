//! Errors of the SQL crypto store. Messages name what failed, never a value: a pickle, a secret
//! or the store key must not reach a log through an error's text (serde's messages can quote the
//! input, so only its position is kept).

use matrix_sdk_crypto::CryptoStoreError;
use ruma::{OwnedDeviceId, OwnedUserId};

/// What can go wrong reading or writing the crypto store.
#[derive(Debug, thiserror::Error)]
pub enum SqlCryptoStoreError {
    #[error("crypto store database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("crypto store encryption failed: {0}")]
    Cipher(#[from] matrix_sdk_store_encryption::Error),
    #[error(
        "the configured crypto store key does not open this database's store cipher \
         (was the pickle key changed?)"
    )]
    WrongKey,
    #[error("a stored {what} is invalid: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("a stored {0} could not be unpickled")]
    Unpickle(&'static str),
    #[error("no Olm account is stored for this device yet")]
    AccountUnset,
    #[error(
        "this crypto store belongs to {expected_user} {expected_device}, not {got_user} {got_device}"
    )]
    MismatchedAccount {
        expected_user: OwnedUserId,
        expected_device: OwnedDeviceId,
        got_user: OwnedUserId,
        got_device: OwnedDeviceId,
    },
    #[error("the crypto store is closed")]
    Closed,
}

impl SqlCryptoStoreError {
    /// A (de)serialization failure of `what`, keeping only where it failed, not the data.
    pub(crate) fn serde(what: &'static str, e: &serde_json::Error) -> Self {
        Self::Corrupt {
            what,
            detail: format!(
                "{:?} error at line {}, column {}",
                e.classify(),
                e.line(),
                e.column()
            ),
        }
    }

    pub(crate) fn corrupt(what: &'static str, detail: impl Into<String>) -> Self {
        Self::Corrupt {
            what,
            detail: detail.into(),
        }
    }
}

impl From<SqlCryptoStoreError> for CryptoStoreError {
    fn from(e: SqlCryptoStoreError) -> Self {
        match e {
            SqlCryptoStoreError::AccountUnset => CryptoStoreError::AccountUnset,
            SqlCryptoStoreError::MismatchedAccount {
                expected_user,
                expected_device,
                got_user,
                got_device,
            } => CryptoStoreError::MismatchedAccount {
                expected: (expected_user, expected_device),
                got: (got_user, got_device),
            },
            SqlCryptoStoreError::Unpickle(_) => CryptoStoreError::UnpicklingError,
            other => CryptoStoreError::backend(other),
        }
    }
}

pub type Result<T, E = SqlCryptoStoreError> = std::result::Result<T, E>;
