//! Linking ferry as a WhatsApp companion device: by QR code (WhatsApp on the phone → Linked
//! devices → Link a device) or by pairing code (… → Link with phone number instead, then the
//! eight characters ferry shows).
//!
//! A login runs its own whatsapp-rust client over a fresh store. WhatsApp rotates the QR code
//! every 20 seconds (60 for the first); each new code is a new step, which the bot shows by
//! replacing the previous image. Once the phone confirms, the client logs in with its new keys;
//! then the login is complete and the client is stopped: the session starts its own over the
//! same store. An abandoned login removes its store.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use whatsapp_rust::{bot::BotHandle, types::events::Event};

use super::{
    client::{self, Events, Shared},
    ids,
    store::WaStore,
};
use crate::network::{CompletedLogin, DisplayKind, LoginId, LoginProcess, LoginStep, NetworkError};

/// How long one step may wait for the phone.
const STEP_WAIT: Duration = Duration::from_secs(180);

/// How the user links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Qr,
    /// By pairing code for this phone number (digits only); `None` asks for it first.
    Phone(Option<String>),
}

/// The phone number in what the user typed (`+55 11 98765-0001`), digits only.
pub fn phone_digits(input: &str) -> Option<String> {
    let digits: String = input.chars().filter(char::is_ascii_digit).collect();
    let allowed = input
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '(' | ')' | '.'));
    (allowed && (7..=15).contains(&digits.len())).then_some(digits)
}

struct Running {
    store: WaStore,
    handle: BotHandle,
    events: Events,
}

pub struct WhatsAppLogin {
    shared: Arc<Shared>,
    method: Method,
    running: Option<Running>,
    /// The account, once the phone confirmed.
    paired: Option<(LoginId, String)>,
    done: bool,
}

impl WhatsAppLogin {
    pub fn new(shared: Arc<Shared>, method: Method) -> Self {
        Self {
            shared,
            method,
            running: None,
            paired: None,
            done: false,
        }
    }

    async fn launch(&mut self, phone: Option<String>) -> Result<(), NetworkError> {
        let store = self.shared.store(&WaStore::new_id()).await?;
        let (bot, events) = client::build(&self.shared, store.clone(), phone, None).await?;
        let handle = bot.spawn();
        self.running = Some(Running {
            store,
            handle,
            events,
        });
        Ok(())
    }

    /// Waits for the next thing to show or the end of the login.
    async fn next(&mut self) -> Result<LoginStep, NetworkError> {
        let running = self
            .running
            .as_mut()
            .ok_or_else(|| NetworkError::Rejected("the login was not started".into()))?;
        let deadline = tokio::time::Instant::now() + STEP_WAIT;
        loop {
            let event = tokio::time::timeout_at(deadline, running.events.recv())
                .await
                .map_err(|_| {
                    NetworkError::Rejected(
                        "the phone did not link in time; start again with `login whatsapp`".into(),
                    )
                })?
                .ok_or_else(|| NetworkError::Transient("the WhatsApp client stopped".into()))?;
            match &*event {
                Event::PairingQrCode(qr) if self.paired.is_none() => {
                    return Ok(LoginStep::DisplayAndWait {
                        kind: DisplayKind::Qr,
                        data: qr.code.clone(),
                        instructions: "Scan this QR code with WhatsApp on your phone: Settings → \
                                       Linked devices → Link a device. It changes every 20 \
                                       seconds; the newest image is the valid one."
                            .into(),
                    });
                }
                Event::PairingCode(code) if self.paired.is_none() => {
                    return Ok(LoginStep::DisplayAndWait {
                        kind: DisplayKind::Code,
                        data: code.code.clone(),
                        instructions: format!(
                            "On your phone: WhatsApp → Settings → Linked devices → Link a device \
                             → Link with phone number instead, and enter this code (valid for {} \
                             seconds).",
                            code.timeout.as_secs()
                        ),
                    });
                }
                Event::PairSuccess(ok) => {
                    let user = ids::user_of(&ok.id).ok_or_else(|| {
                        NetworkError::Rejected("WhatsApp linked an account without a number".into())
                    })?;
                    let name = if ok.business_name.is_empty() {
                        format!("+{}", user.as_str())
                    } else {
                        format!("+{} ({})", user.as_str(), ok.business_name)
                    };
                    self.paired = Some((LoginId::new(user.as_str()), name));
                }
                Event::Connected(_) if self.paired.is_some() => {
                    return self.complete().await;
                }
                Event::PairError(e) => {
                    return Err(NetworkError::Rejected(format!(
                        "the phone refused to link ({})",
                        e.error
                    )));
                }
                Event::PairingCodeError(e) => {
                    return Err(NetworkError::Rejected(format!(
                        "WhatsApp refused the pairing code request ({})",
                        e.error
                    )));
                }
                Event::PairingQrCodesExhausted(_) => {
                    return Err(NetworkError::Rejected(
                        "no QR code was scanned in time; start again with `login whatsapp`".into(),
                    ));
                }
                Event::QrScannedWithoutMultidevice(_) => {
                    return Err(NetworkError::Rejected(
                        "the phone's WhatsApp is too old for linked devices".into(),
                    ));
                }
                Event::ClientOutdated(_) => {
                    return Err(NetworkError::Rejected(
                        "WhatsApp says this client version is outdated (networks.whatsapp.version)"
                            .into(),
                    ));
                }
                Event::LoggedOut(_) => {
                    return Err(NetworkError::Rejected(
                        "WhatsApp ended the new link at once; try again".into(),
                    ));
                }
                _ => {}
            }
        }
    }

    async fn complete(&mut self) -> Result<LoginStep, NetworkError> {
        let (id, remote_name) = self
            .paired
            .clone()
            .ok_or_else(|| NetworkError::Rejected("not linked yet".into()))?;
        let running = self
            .running
            .take()
            .ok_or_else(|| NetworkError::Rejected("the login was not started".into()))?;
        // The session runs its own client over this store; this one flushes and stops.
        running.handle.shutdown().await;
        self.done = true;
        Ok(LoginStep::Complete(CompletedLogin {
            id,
            remote_name,
            secret: serde_json::json!({ "store": running.store.id() }),
        }))
    }
}

#[async_trait]
impl LoginProcess for WhatsAppLogin {
    async fn start(&mut self) -> Result<LoginStep, NetworkError> {
        match self.method.clone() {
            Method::Qr => {
                self.launch(None).await?;
                self.next().await
            }
            Method::Phone(Some(phone)) => {
                self.launch(Some(phone)).await?;
                self.next().await
            }
            Method::Phone(None) => Ok(LoginStep::Input {
                prompt: "Send your WhatsApp phone number in international format (+<country \
                         code><number>)."
                    .into(),
                secret: false,
            }),
        }
    }

    async fn submit(&mut self, input: &str) -> Result<LoginStep, NetworkError> {
        if self.running.is_some() || self.done {
            return Err(NetworkError::Rejected(
                "nothing to type now: follow the instructions on your phone".into(),
            ));
        }
        let phone = phone_digits(input).ok_or_else(|| {
            NetworkError::Rejected(
                "that is not a phone number in international format (+<country code><number>)"
                    .into(),
            )
        })?;
        self.method = Method::Phone(Some(phone.clone()));
        self.launch(Some(phone)).await?;
        self.next().await
    }

    async fn wait(&mut self) -> Result<LoginStep, NetworkError> {
        self.next().await
    }
}

impl Drop for WhatsAppLogin {
    fn drop(&mut self) {
        // Abandoned (cancelled, failed, timed out): stop the client, forget its keys.
        if let Some(running) = self.running.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                running.handle.shutdown().await;
                if let Err(err) = running.store.destroy().await {
                    tracing::warn!(%err, "cannot remove an abandoned WhatsApp login's keys");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_in_international_format() {
        assert_eq!(
            phone_digits("+55 11 98765-0001").as_deref(),
            Some("5511987650001")
        );
        assert_eq!(
            phone_digits("+1 (555) 010.2000").as_deref(),
            Some("15550102000")
        );
        assert_eq!(phone_digits("12345"), None);
        assert_eq!(phone_digits("+55 11 abc"), None);
        assert_eq!(phone_digits("1234567890123456"), None);
    }
}
