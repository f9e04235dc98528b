//! Signal logins: link ferry as a secondary device (the phone scans a QR code), or use an
//! account the signal-cli daemon already has.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use serde_json::{Value as JsonValue, json};

use super::{link_error, rpc::RpcClient};
use crate::network::{CompletedLogin, DisplayKind, LoginId, LoginProcess, LoginStep, NetworkError};

/// How long the phone has to scan the code.
const LINK_TIMEOUT: Duration = Duration::from_secs(600);

pub struct LinkLogin {
    rpc: Arc<RpcClient>,
    device_name: String,
    uri: Option<String>,
}

impl LinkLogin {
    pub fn new(rpc: Arc<RpcClient>, device_name: String) -> Self {
        Self {
            rpc,
            device_name,
            uri: None,
        }
    }
}

/// The account number a `finishLink` or `listAccounts` entry names.
fn number_of(value: &JsonValue) -> Option<String> {
    value
        .get("number")
        .or_else(|| value.get("account"))
        .and_then(JsonValue::as_str)
        .or_else(|| value.as_str())
        .map(str::to_owned)
}

#[async_trait]
impl LoginProcess for LinkLogin {
    async fn start(&mut self) -> Result<LoginStep, NetworkError> {
        let result = self
            .rpc
            .call("startLink", json!({}))
            .await
            .map_err(link_error)?;
        let uri = result
            .get("deviceLinkUri")
            .and_then(JsonValue::as_str)
            .filter(|u| u.starts_with("sgnl://") || u.starts_with("tsdevice:"))
            .ok_or_else(|| {
                NetworkError::Rejected(
                    "signal-cli answered startLink without a link URI".to_owned(),
                )
            })?
            .to_owned();
        self.uri = Some(uri.clone());
        Ok(LoginStep::DisplayAndWait {
            kind: DisplayKind::Qr,
            data: uri,
            instructions: "Scan this QR code with Signal on your phone: Settings → Linked devices → Link new device.".to_owned(),
        })
    }

    async fn submit(&mut self, _input: &str) -> Result<LoginStep, NetworkError> {
        Err(NetworkError::Rejected(
            "Scan the QR code with your phone; nothing needs to be typed".to_owned(),
        ))
    }

    async fn wait(&mut self) -> Result<LoginStep, NetworkError> {
        let uri = self
            .uri
            .clone()
            .ok_or(NetworkError::Unsupported("waiting before the link started"))?;
        let result = self
            .rpc
            .call_with_timeout(
                "finishLink",
                json!({"deviceLinkUri": uri, "deviceName": self.device_name}),
                LINK_TIMEOUT,
            )
            .await
            .map_err(link_error)?;
        let number = number_of(&result).ok_or_else(|| {
            NetworkError::Rejected("signal-cli did not say which account was linked".to_owned())
        })?;
        Ok(LoginStep::Complete(CompletedLogin {
            id: LoginId::new(number.clone()),
            remote_name: number,
            secret: json!({}),
        }))
    }
}

/// Uses an account the daemon already has (registered or linked outside ferry).
pub struct ExistingLogin {
    rpc: Arc<RpcClient>,
}

impl ExistingLogin {
    pub fn new(rpc: Arc<RpcClient>) -> Self {
        Self { rpc }
    }
}

#[async_trait]
impl LoginProcess for ExistingLogin {
    async fn start(&mut self) -> Result<LoginStep, NetworkError> {
        Ok(LoginStep::Input {
            prompt:
                "Send the phone number of an account signal-cli already has (e.g. +15551234567)."
                    .to_owned(),
            secret: false,
        })
    }

    async fn submit(&mut self, input: &str) -> Result<LoginStep, NetworkError> {
        let accounts = self
            .rpc
            .call("listAccounts", json!({}))
            .await
            .map_err(link_error)?;
        let known: Vec<String> = accounts
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(number_of)
            .collect();
        if !known.iter().any(|n| n == input) {
            return Err(NetworkError::Rejected(format!(
                "signal-cli has no account {input}"
            )));
        }
        Ok(LoginStep::Complete(CompletedLogin {
            id: LoginId::new(input),
            remote_name: input.to_owned(),
            secret: json!({}),
        }))
    }

    async fn wait(&mut self) -> Result<LoginStep, NetworkError> {
        Err(NetworkError::Unsupported("waiting in this login"))
    }
}

#[cfg(test)]
mod tests {
    use super::number_of;
    use serde_json::json;

    #[test]
    fn account_numbers_are_found_in_either_shape() {
        assert_eq!(number_of(&json!({"number": "+1"})).as_deref(), Some("+1"));
        assert_eq!(number_of(&json!("+2")).as_deref(), Some("+2"));
        assert_eq!(number_of(&json!({"other": 1})), None);
    }
}
