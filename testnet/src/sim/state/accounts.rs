//! Users, login flows, tokens and the simulated rate limit.

use axum::body::Bytes;
use rand::Rng;
use tokio::sync::watch;

use super::{Sim, random_hex};
use crate::sim::error::{ApiError, ErrorCode};
use crate::sim::limits;
use crate::sim::model::{Event, LoginFinished, LoginStarted, Presence, User};

#[derive(Debug)]
pub(super) struct Account {
    pub(super) user: User,
    pub(super) log: Vec<Event>,
    /// Carries the newest seq; the account's sockets wait on it.
    pub(super) changed: watch::Sender<u64>,
    pub(super) presence: Presence,
    /// How many more rate-limited client calls answer 429.
    pub(super) rate_limited: u32,
}

#[derive(Debug)]
pub(super) struct Flow {
    username: String,
    code: String,
    /// Start order, to find a user's newest flow.
    number: u64,
}

impl Sim {
    /// Creates a user, or renames it if the id exists.
    pub fn create_user(&self, id: &str, name: &str) -> Result<User, ApiError> {
        limits::user_id("id", id)?;
        limits::name("name", name)?;
        let mut state = self.lock();
        if let Some(account) = state.accounts.get_mut(id) {
            account.user.name = name.to_owned();
            return Ok(account.user.clone());
        }
        let user = User {
            id: id.to_owned(),
            name: name.to_owned(),
            avatar: None,
        };
        let (changed, _) = watch::channel(0);
        let account = Account {
            user: user.clone(),
            log: Vec::new(),
            changed,
            presence: Presence::Offline,
            rate_limited: 0,
        };
        state.accounts.insert(id.to_owned(), account);
        Ok(user)
    }

    /// A user by id.
    pub fn user(&self, id: &str) -> Result<User, ApiError> {
        Ok(self.lock().account(id)?.user.clone())
    }

    /// The user an identifier names, for a bridge's "start chat": a user id.
    pub fn resolve(&self, identifier: &str) -> Result<User, ApiError> {
        self.lock()
            .accounts
            .get(identifier)
            .map(|account| account.user.clone())
            .ok_or_else(|| ApiError::not_found(format!("nobody is known as `{identifier}`")))
    }

    /// Gives a user a new avatar image (a new media id, so clients notice the change).
    pub fn set_avatar(
        &self,
        id: &str,
        content_type: &str,
        data: impl Into<Bytes>,
    ) -> Result<User, ApiError> {
        let data = data.into();
        if data.is_empty() || content_type.is_empty() {
            return Err(ApiError::bad_request(
                "an avatar needs a content type and some bytes",
            ));
        }
        limits::content_type(content_type)?;
        let mut state = self.lock();
        state.account(id)?;
        let info = state.media.insert("a", content_type, data)?;
        let account = state.account_mut(id)?;
        account.user.avatar = Some(info.id);
        Ok(account.user.clone())
    }

    /// Opens a login flow for `username` with a fresh random code.
    pub fn login_start(&self, username: &str) -> Result<LoginStarted, ApiError> {
        let mut state = self.lock();
        state.account(username)?;
        let open: Vec<(u64, String)> = state
            .flows
            .iter()
            .filter(|(_, flow)| flow.username == username)
            .map(|(id, flow)| (flow.number, id.clone()))
            .collect();
        if open.len() >= limits::MAX_OPEN_FLOWS_PER_USER
            && let Some((_, oldest)) = open.iter().min()
        {
            state.flows.remove(oldest);
        }
        let flow_id = random_hex();
        let width = limits::LOGIN_CODE_LENGTH as usize;
        let code = rand::rng().random_range(0..10u32.pow(limits::LOGIN_CODE_LENGTH));
        state.flows_started += 1;
        let flow = Flow {
            username: username.to_owned(),
            code: format!("{code:0width$}"),
            number: state.flows_started,
        };
        state.flows.insert(flow_id.clone(), flow);
        Ok(LoginStarted {
            flow_id,
            code_length: limits::LOGIN_CODE_LENGTH,
        })
    }

    /// Finishes a login flow: a right code closes the flow and issues a token; a wrong code
    /// leaves the flow open.
    pub fn login_finish(&self, flow_id: &str, code: &str) -> Result<LoginFinished, ApiError> {
        let mut state = self.lock();
        let flow = state
            .flows
            .get(flow_id)
            .ok_or_else(|| ApiError::not_found("no open login flow with this id"))?;
        if flow.code != code {
            return Err(ApiError::new(ErrorCode::BadCode, "wrong login code"));
        }
        let username = flow.username.clone();
        state.flows.remove(flow_id);
        let user = state.account(&username)?.user.clone();
        let token = random_hex();
        state.tokens.insert(token.clone(), username);
        Ok(LoginFinished { token, user })
    }

    /// The code of the user's newest open login flow.
    pub fn login_code(&self, username: &str) -> Result<String, ApiError> {
        let state = self.lock();
        state
            .flows
            .values()
            .filter(|flow| flow.username == username)
            .max_by_key(|flow| flow.number)
            .map(|flow| flow.code.clone())
            .ok_or_else(|| ApiError::not_found(format!("no open login flow for `{username}`")))
    }

    /// The account a token belongs to.
    pub fn account_for_token(&self, token: &str) -> Result<String, ApiError> {
        self.lock().account_for_token(token)
    }

    /// Ends a token and closes the event sockets opened with it.
    pub fn logout(&self, token: &str) -> Result<(), ApiError> {
        let mut state = self.lock();
        if state.tokens.remove(token).is_none() {
            return Err(ApiError::unauthorized("unknown token"));
        }
        state.close_sockets(|entry| entry.token == token, super::CloseReason::LoggedOut);
        Ok(())
    }

    /// Makes the account's next `count` rate-limited client calls answer 429 (0 lifts it).
    pub fn set_rate_limit(&self, account: &str, count: u32) -> Result<(), ApiError> {
        self.lock().account_mut(account)?.rate_limited = count;
        Ok(())
    }

    /// Spends one rate-limited call of the account: 429 `rate_limited` while the simulated limit
    /// lasts.
    pub(crate) fn take_send_allowance(&self, account: &str) -> Result<(), ApiError> {
        let mut state = self.lock();
        let account = state.account_mut(account)?;
        if account.rate_limited > 0 {
            account.rate_limited -= 1;
            return Err(ApiError::rate_limited(limits::RETRY_AFTER_MS));
        }
        Ok(())
    }
}

impl super::State {
    pub(super) fn account_for_token(&self, token: &str) -> Result<String, ApiError> {
        self.tokens
            .get(token)
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("unknown token"))
    }
}
