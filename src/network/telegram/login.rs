//! The three ways to log in to Telegram, as [`LoginProcess`] state machines: phone number +
//! code (+ 2FA password), QR code (scanned from a logged-in phone), and bot token (for a relay).
//!
//! Each login runs its own grammers client on a fresh session; when it completes, the session
//! (with its auth key) is stored under the login id, the Telegram user id, and the client stops.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use grammers_client::client::{LoginToken, PasswordToken, UpdateStream};
use grammers_client::sender::UpdatesConfiguration;
use grammers_client::update::Update;
use grammers_client::{Client, InvocationError, SignInError, tl};
use serde_json::json;

use super::TelegramConfig;
use super::store::{DbSession, data_for};
use crate::db::Db;
use crate::network::{CompletedLogin, DisplayKind, LoginId, LoginProcess, LoginStep, NetworkError};

/// Longest wait for the phone to scan one QR code before a fresh one is shown.
const QR_WAIT: Duration = Duration::from_secs(30);

fn transient(e: InvocationError) -> NetworkError {
    NetworkError::Transient(format!("Telegram: {e}"))
}

/// A grammers client on a fresh session, with its runner task.
struct LoginClient {
    client: Client,
    session: Arc<DbSession>,
    updates: Option<tokio::sync::mpsc::Receiver<grammers_client::session::updates::UpdatesLike>>,
    runner: tokio::task::JoinHandle<()>,
}

impl LoginClient {
    fn new(db: &Db, config: &TelegramConfig) -> Self {
        let session = Arc::new(DbSession::fresh(db.clone(), data_for(config.dc_override())));
        let pool = config.sender_pool(Arc::clone(&session));
        let client = Client::new(pool.handle);
        let runner = tokio::spawn(pool.runner.run());
        Self {
            client,
            session,
            updates: Some(pool.updates),
            runner,
        }
    }

    /// Stores the session under the new login and stops the client.
    async fn finish(self, user: &grammers_client::peer::User) -> Result<LoginStep, NetworkError> {
        let id = user.id().bare_id_unchecked().to_string();
        self.session
            .attach(&id)
            .await
            .map_err(|e| NetworkError::Transient(e.to_string()))?;
        self.client.disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.runner).await;
        let name = match (user.first_name(), user.username(), user.phone()) {
            (_, Some(username), _) => format!("@{username}"),
            (_, None, Some(phone)) => format!("+{phone}"),
            (Some(first), None, None) => first.to_owned(),
            _ => id.clone(),
        };
        Ok(LoginStep::Complete(CompletedLogin {
            id: LoginId::new(id.clone()),
            remote_name: name,
            // The session itself is in the database; the login row only names it.
            secret: json!({ "session": id }),
        }))
    }

    fn stop(self) {
        self.client.disconnect();
        self.runner.abort();
    }
}

enum PhoneState {
    AskPhone,
    AskCode(LoginToken),
    AskPassword(PasswordToken),
    Done,
}

/// Phone number, then the code Telegram sends to the user's other devices, then (if set) the
/// 2FA password.
pub struct PhoneLogin {
    db: Db,
    config: TelegramConfig,
    client: Option<LoginClient>,
    state: PhoneState,
}

impl PhoneLogin {
    pub fn new(db: Db, config: TelegramConfig) -> Self {
        Self {
            db,
            config,
            client: None,
            state: PhoneState::AskPhone,
        }
    }

    fn client(&mut self) -> &LoginClient {
        let (db, config) = (&self.db, &self.config);
        self.client
            .get_or_insert_with(|| LoginClient::new(db, config))
    }

    async fn complete(
        &mut self,
        user: grammers_client::peer::User,
    ) -> Result<LoginStep, NetworkError> {
        self.state = PhoneState::Done;
        match self.client.take() {
            Some(c) => c.finish(&user).await,
            None => Err(NetworkError::Rejected(
                "the login was already finished".into(),
            )),
        }
    }
}

fn ask_code(retry: bool) -> LoginStep {
    LoginStep::Input {
        prompt: if retry {
            "That code was not accepted. Send the code Telegram sent you again.".into()
        } else {
            "Send the login code Telegram sent to your other devices.".into()
        },
        secret: false,
    }
}

fn ask_password(hint: Option<&str>, retry: bool) -> LoginStep {
    let hint = hint.map(|h| format!(" (hint: {h})")).unwrap_or_default();
    LoginStep::Input {
        prompt: if retry {
            format!("Wrong password. Send your two-step verification password{hint}.")
        } else {
            format!("Your account has two-step verification. Send its password{hint}.")
        },
        secret: true,
    }
}

#[async_trait]
impl LoginProcess for PhoneLogin {
    async fn start(&mut self) -> Result<LoginStep, NetworkError> {
        Ok(LoginStep::Input {
            prompt: "Send your phone number in international format (e.g. +44 20 7946 0000)."
                .into(),
            secret: false,
        })
    }

    async fn submit(&mut self, input: &str) -> Result<LoginStep, NetworkError> {
        let input = input.trim();
        match std::mem::replace(&mut self.state, PhoneState::Done) {
            PhoneState::AskPhone => {
                let phone: String = input
                    .chars()
                    .filter(|c| c.is_ascii_digit() || *c == '+')
                    .collect();
                let api_hash = self.config.api_hash.clone();
                match self
                    .client()
                    .client
                    .request_login_code(&phone, &api_hash)
                    .await
                {
                    Ok(token) => {
                        self.state = PhoneState::AskCode(token);
                        Ok(ask_code(false))
                    }
                    Err(e) if e.is("PHONE_NUMBER_INVALID") => {
                        self.state = PhoneState::AskPhone;
                        Ok(LoginStep::Input {
                            prompt: "Telegram does not know that phone number. Send it again."
                                .into(),
                            secret: false,
                        })
                    }
                    Err(e) => {
                        self.state = PhoneState::AskPhone;
                        Err(transient(e))
                    }
                }
            }
            PhoneState::AskCode(token) => {
                let result = self.client().client.sign_in(&token, input).await;
                match result {
                    Ok(user) => self.complete(user).await,
                    Err(SignInError::InvalidCode) => {
                        self.state = PhoneState::AskCode(token);
                        Ok(ask_code(true))
                    }
                    Err(SignInError::PasswordRequired(password)) => {
                        let step = ask_password(password.hint(), false);
                        self.state = PhoneState::AskPassword(password);
                        Ok(step)
                    }
                    Err(SignInError::SignUpRequired) => Err(NetworkError::Rejected(
                        "this phone number has no Telegram account; sign up in an official app first".into(),
                    )),
                    Err(SignInError::InvalidPassword(_)) | Err(SignInError::Other(_)) => {
                        self.state = PhoneState::AskCode(token);
                        Err(NetworkError::Transient("Telegram refused the code; try again".into()))
                    }
                }
            }
            PhoneState::AskPassword(password) => {
                let result = self.client().client.check_password(password, input).await;
                match result {
                    Ok(user) => self.complete(user).await,
                    Err(SignInError::InvalidPassword(password)) => {
                        let step = ask_password(password.hint(), true);
                        self.state = PhoneState::AskPassword(password);
                        Ok(step)
                    }
                    Err(e) => Err(NetworkError::Rejected(format!(
                        "Telegram refused the password: {e}"
                    ))),
                }
            }
            PhoneState::Done => Err(NetworkError::Rejected(
                "the login is already finished".into(),
            )),
        }
    }

    async fn wait(&mut self) -> Result<LoginStep, NetworkError> {
        Err(NetworkError::Rejected(
            "this login step needs your input".into(),
        ))
    }
}

impl Drop for PhoneLogin {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            c.stop();
        }
    }
}

/// A QR code (`tg://login?token=…`) the user scans in Settings → Devices on a logged-in phone.
pub struct QrLogin {
    config: TelegramConfig,
    client: Option<LoginClient>,
    stream: Option<UpdateStream>,
}

impl QrLogin {
    pub fn new(db: Db, config: TelegramConfig) -> Self {
        let client = LoginClient::new(&db, &config);
        Self {
            config,
            client: Some(client),
            stream: None,
        }
    }

    fn export(&self) -> tl::functions::auth::ExportLoginToken {
        tl::functions::auth::ExportLoginToken {
            api_id: self.config.api_id,
            api_hash: self.config.api_hash.clone(),
            except_ids: Vec::new(),
        }
    }

    /// Exports a token: a QR step to show, or the finished login once it was scanned.
    async fn step(&mut self) -> Result<LoginStep, NetworkError> {
        let request = self.export();
        let client = self
            .client
            .as_ref()
            .ok_or_else(|| NetworkError::Rejected("the login is already finished".into()))?;
        match client.client.invoke(&request).await {
            Ok(tl::enums::auth::LoginToken::Token(t)) => {
                let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&t.token);
                Ok(LoginStep::DisplayAndWait {
                    kind: DisplayKind::Qr,
                    data: format!("tg://login?token={token}"),
                    instructions: "On your phone, open Telegram → Settings → Devices → Link Desktop Device and scan this code.".into(),
                })
            }
            Ok(tl::enums::auth::LoginToken::Success(s)) => {
                let tl::enums::auth::Authorization::Authorization(auth) = s.authorization else {
                    return Err(NetworkError::Rejected("Telegram asked to sign up instead".into()));
                };
                let user = grammers_client::peer::User::from_raw(&client.client, auth.user);
                match self.client.take() {
                    Some(c) => c.finish(&user).await,
                    None => Err(NetworkError::Rejected("the login is already finished".into())),
                }
            }
            Ok(tl::enums::auth::LoginToken::MigrateTo(_)) => Err(NetworkError::Rejected(
                "Telegram moved this account to another data centre; QR login across data centres is not supported yet".into(),
            )),
            Err(e) if e.is("SESSION_PASSWORD_NEEDED") => Err(NetworkError::Rejected(
                "this account has two-step verification; log in with your phone number instead".into(),
            )),
            Err(e) => Err(transient(e)),
        }
    }
}

#[async_trait]
impl LoginProcess for QrLogin {
    async fn start(&mut self) -> Result<LoginStep, NetworkError> {
        if self.stream.is_none()
            && let Some(c) = self.client.as_mut()
            && let Some(rx) = c.updates.take()
        {
            let stream = c
                .client
                .stream_updates(rx, UpdatesConfiguration { catch_up: false })
                .await
                .map_err(|e| NetworkError::Transient(e.to_string()))?;
            self.stream = Some(stream);
        }
        self.step().await
    }

    async fn submit(&mut self, _input: &str) -> Result<LoginStep, NetworkError> {
        Err(NetworkError::Rejected(
            "scan the QR code; there is nothing to type".into(),
        ))
    }

    async fn wait(&mut self) -> Result<LoginStep, NetworkError> {
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| NetworkError::Rejected("the login was not started".into()))?;
        let scanned = tokio::time::timeout(QR_WAIT, async {
            loop {
                match stream.next().await {
                    Ok(Update::Raw(raw)) if matches!(raw.raw, tl::enums::Update::LoginToken) => {
                        return Ok(());
                    }
                    Ok(_) => {}
                    Err(e) => return Err(transient(e)),
                }
            }
        })
        .await;
        match scanned {
            // Scanned, or expired: either way export again (a new code, or the login).
            Ok(Ok(())) | Err(_) => self.step().await,
            Ok(Err(e)) => Err(e),
        }
    }
}

impl Drop for QrLogin {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            c.stop();
        }
    }
}

/// A bot token from @BotFather, for a relay bot.
pub struct BotLogin {
    db: Db,
    config: TelegramConfig,
    done: bool,
}

impl BotLogin {
    pub fn new(db: Db, config: TelegramConfig) -> Self {
        Self {
            db,
            config,
            done: false,
        }
    }
}

#[async_trait]
impl LoginProcess for BotLogin {
    async fn start(&mut self) -> Result<LoginStep, NetworkError> {
        Ok(LoginStep::Input {
            prompt: "Send the bot token @BotFather gave you.".into(),
            secret: true,
        })
    }

    async fn submit(&mut self, input: &str) -> Result<LoginStep, NetworkError> {
        if self.done {
            return Err(NetworkError::Rejected(
                "the login is already finished".into(),
            ));
        }
        let client = LoginClient::new(&self.db, &self.config);
        match client
            .client
            .bot_sign_in(input.trim(), &self.config.api_hash)
            .await
        {
            Ok(user) => {
                self.done = true;
                client.finish(&user).await
            }
            Err(e) if e.is("ACCESS_TOKEN_INVALID") => {
                client.stop();
                Ok(LoginStep::Input {
                    prompt: "Telegram did not accept that bot token. Send it again.".into(),
                    secret: true,
                })
            }
            Err(e) => {
                client.stop();
                Err(transient(e))
            }
        }
    }

    async fn wait(&mut self) -> Result<LoginStep, NetworkError> {
        Err(NetworkError::Rejected(
            "this login step needs your input".into(),
        ))
    }
}
