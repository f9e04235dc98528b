//! The store key: what encrypts pickles and secrets at rest.
//!
//! A random [`StoreCipher`] (XChaCha20-Poly1305 keys from matrix-sdk-store-encryption, the same
//! scheme matrix-sdk's SQLite and IndexedDB stores use) is made the first time the bridge starts
//! with encryption on, encrypted with the operator's pickle passphrase (PBKDF2-SHA256, 200,000
//! rounds) or a raw 32-byte key, and kept in the `crypto_store_cipher` table. Every later start
//! decrypts it with the same passphrase; a different passphrase is refused with
//! [`SqlCryptoStoreError::WrongKey`] instead of producing unreadable data. One [`StoreKey`] serves
//! all devices: open it once at start-up and clone it into each [`super::SqlCryptoStore`].
//!
//! Values are stored compactly as `[format 1][cipher version][24-byte nonce][ciphertext+tag]`
//! (the cipher's own serialisation writes the ciphertext as a JSON array of numbers, about
//! 3.5 times the size).

use std::sync::Arc;

use matrix_sdk_store_encryption::{EncryptedValue, StoreCipher};
use serde::{Serialize, de::DeserializeOwned};
use zeroize::{Zeroize, Zeroizing};

use super::error::{Result, SqlCryptoStoreError};
use crate::db::{Db, now_ms};

const CIPHER_ROW: &str = "store_cipher";
const FORMAT: u8 = 1;
const NONCE_LEN: usize = 24;

/// How the store cipher is protected in the database.
#[derive(Clone)]
pub enum StoreSecret {
    /// A passphrase from the configuration, stretched with PBKDF2 (slow on purpose: about
    /// 0.1 s in a release build, once per start).
    Passphrase(Zeroizing<String>),
    /// A random 32-byte key held elsewhere (no key stretching).
    Key(Zeroizing<[u8; 32]>),
}

impl std::fmt::Debug for StoreSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Passphrase(_) => f.write_str("StoreSecret::Passphrase(..)"),
            Self::Key(_) => f.write_str("StoreSecret::Key(..)"),
        }
    }
}

/// The decrypted store cipher, shared by every device's store. Cheap to clone; its `Debug`
/// prints nothing secret.
#[derive(Clone)]
pub struct StoreKey {
    cipher: Arc<StoreCipher>,
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreKey(..)")
    }
}

impl StoreKey {
    /// Loads the store cipher from `db` and decrypts it with `secret`, or makes, encrypts and
    /// stores a new one when the database has none yet. Run once at start-up.
    pub async fn load_or_create(db: &Db, secret: StoreSecret) -> Result<Self> {
        if let Some(export) = Self::stored_export(db).await? {
            return Self::import(secret, export).await;
        }
        let (cipher, export) = {
            let secret = secret.clone();
            blocking(move || {
                let cipher = StoreCipher::new()?;
                let export = match &secret {
                    StoreSecret::Passphrase(p) => cipher.export(p)?,
                    StoreSecret::Key(k) => cipher.export_with_key(k)?,
                };
                Ok((cipher, export))
            })
            .await?
        };
        let inserted = sqlx::query(
            "INSERT INTO crypto_store_cipher (name, value, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(CIPHER_ROW)
        .bind(export)
        .bind(now_ms())
        .execute(db.pool())
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(Self {
                cipher: Arc::new(cipher),
            });
        }
        // Another process made one first: use that one.
        let export = Self::stored_export(db)
            .await?
            .ok_or_else(|| SqlCryptoStoreError::corrupt("store cipher", "vanished after insert"))?;
        Self::import(secret, export).await
    }

    async fn stored_export(db: &Db) -> Result<Option<Vec<u8>>> {
        let row: Option<(Vec<u8>,)> =
            sqlx::query_as("SELECT value FROM crypto_store_cipher WHERE name = $1")
                .bind(CIPHER_ROW)
                .fetch_optional(db.pool())
                .await?;
        Ok(row.map(|(v,)| v))
    }

    async fn import(secret: StoreSecret, export: Vec<u8>) -> Result<Self> {
        let cipher = blocking(move || {
            let imported = match &secret {
                StoreSecret::Passphrase(p) => StoreCipher::import(p, &export),
                StoreSecret::Key(k) => StoreCipher::import_with_key(k, &export),
            };
            imported.map_err(|e| match e {
                matrix_sdk_store_encryption::Error::Encryption(_)
                | matrix_sdk_store_encryption::Error::KdfMismatch => SqlCryptoStoreError::WrongKey,
                other => SqlCryptoStoreError::Cipher(other),
            })
        })
        .await?;
        Ok(Self {
            cipher: Arc::new(cipher),
        })
    }

    /// Serialises `value` as JSON and encrypts it.
    pub(crate) fn encrypt<T: Serialize + ?Sized>(
        &self,
        what: &'static str,
        value: &T,
    ) -> Result<Vec<u8>> {
        let json = serde_json::to_vec(value).map_err(|e| SqlCryptoStoreError::serde(what, &e))?;
        self.encrypt_bytes(what, json)
    }

    /// Decrypts and deserialises what [`Self::encrypt`] made.
    pub(crate) fn decrypt<T: DeserializeOwned>(
        &self,
        what: &'static str,
        data: &[u8],
    ) -> Result<T> {
        let mut plain = self.decrypt_bytes(what, data)?;
        let value =
            serde_json::from_slice(&plain).map_err(|e| SqlCryptoStoreError::serde(what, &e));
        plain.zeroize();
        value
    }

    /// Encrypts raw bytes (zeroised after use).
    pub(crate) fn encrypt_bytes(&self, what: &'static str, plain: Vec<u8>) -> Result<Vec<u8>> {
        let sealed = self.cipher.encrypt_value_data(plain)?;
        // EncryptedValue's fields are private; read them back through serde.
        let value =
            serde_json::to_value(&sealed).map_err(|e| SqlCryptoStoreError::serde(what, &e))?;
        let version = value["version"].as_u64().and_then(|v| u8::try_from(v).ok());
        let nonce = bytes_of(&value["nonce"]);
        let ciphertext = bytes_of(&value["ciphertext"]);
        let (Some(version), Some(nonce), Some(ciphertext)) = (version, nonce, ciphertext) else {
            return Err(SqlCryptoStoreError::corrupt(
                what,
                "unexpected cipher output",
            ));
        };
        if nonce.len() != NONCE_LEN {
            return Err(SqlCryptoStoreError::corrupt(
                what,
                "unexpected nonce length",
            ));
        }
        let mut out = Vec::with_capacity(2 + NONCE_LEN + ciphertext.len());
        out.push(FORMAT);
        out.push(version);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// Decrypts what [`Self::encrypt_bytes`] made. The caller zeroises the result.
    pub(crate) fn decrypt_bytes(&self, what: &'static str, data: &[u8]) -> Result<Vec<u8>> {
        if data.len() < 2 + NONCE_LEN || data[0] != FORMAT {
            return Err(SqlCryptoStoreError::corrupt(what, "not an encrypted value"));
        }
        let sealed: EncryptedValue = serde_json::from_value(serde_json::json!({
            "version": data[1],
            "nonce": &data[2..2 + NONCE_LEN],
            "ciphertext": &data[2 + NONCE_LEN..],
        }))
        .map_err(|e| SqlCryptoStoreError::serde(what, &e))?;
        self.cipher.decrypt_value_data(sealed).map_err(|e| match e {
            matrix_sdk_store_encryption::Error::Encryption(_) => {
                SqlCryptoStoreError::corrupt(what, "does not decrypt with the store key")
            }
            other => SqlCryptoStoreError::Cipher(other),
        })
    }
}

fn bytes_of(value: &serde_json::Value) -> Option<Vec<u8>> {
    value
        .as_array()?
        .iter()
        .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
        .collect()
}

/// Runs CPU-heavy key work (PBKDF2) off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        SqlCryptoStoreError::corrupt("store cipher", format!("key task failed: {e}"))
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> StoreKey {
        StoreKey {
            cipher: Arc::new(StoreCipher::new().expect("a new cipher")),
        }
    }

    #[test]
    fn values_round_trip_compactly() {
        let key = key();
        let value = serde_json::json!({ "pickle": "very secret", "n": 42 });
        let sealed = key.encrypt("test value", &value).expect("encrypt");
        let plain_len = serde_json::to_vec(&value).expect("json").len();
        // Format byte, version byte, 24-byte nonce, ciphertext with a 16-byte tag.
        assert_eq!(sealed.len(), 2 + NONCE_LEN + plain_len + 16);
        assert!(!String::from_utf8_lossy(&sealed).contains("very secret"));
        let back: serde_json::Value = key.decrypt("test value", &sealed).expect("decrypt");
        assert_eq!(back, value);
    }

    #[test]
    fn tampering_and_other_keys_are_detected_without_leaking() {
        let key = key();
        let mut sealed = key.encrypt("test value", "the secret").expect("encrypt");
        let other = super::tests::key();
        let err = other
            .decrypt::<String>("test value", &sealed)
            .expect_err("another key cannot decrypt");
        assert!(err.to_string().contains("does not decrypt"), "{err}");
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        let err = key
            .decrypt::<String>("test value", &sealed)
            .expect_err("a flipped bit is refused");
        assert!(!err.to_string().contains("the secret"), "{err}");
        assert!(key.decrypt::<String>("test value", b"short").is_err());
        assert!(key.decrypt::<String>("test value", &[9; 64]).is_err());
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let secret = StoreSecret::Passphrase(Zeroizing::new("hunter2".to_owned()));
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert!(!format!("{:?}", key()).contains('['));
    }
}
