//! `sim`: the built-in simulated network (server in `testnet/`, protocol in
//! `testnet/SIM_PROTOCOL.md`). It exercises the whole bridge core without a third-party service:
//! tests and the demo run against it.

mod api;
mod login;
pub mod markup;
mod session;
mod wire;

use std::sync::Arc;

use crate::{
    config::SimConfig,
    network::{
        Capabilities, EventSink, LoginFlowInfo, LoginProcess, Network, NetworkError, NetworkId,
        Session, StoredLogin, UserInfo,
    },
};

pub use api::SIM;

pub struct SimNetwork {
    config: SimConfig,
    http: reqwest::Client,
}

impl SimNetwork {
    pub fn new(config: SimConfig) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .expect("static client configuration");
        Self { config, http }
    }

    fn api(&self, token: Option<String>) -> api::SimApi {
        api::SimApi::new(self.http.clone(), self.config.server.as_str(), token)
    }
}

impl Network for SimNetwork {
    fn id(&self) -> NetworkId {
        SIM
    }

    fn display_name(&self) -> &'static str {
        "Sim"
    }

    fn ghost_prefix(&self) -> &str {
        &self.config.ghost_prefix
    }

    fn ghost_displayname(&self, user: &UserInfo) -> String {
        crate::network::render_displayname(&self.config.displayname_template, user)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            formatting: true,
            group_membership: true,
            edits: true,
            reactions: true,
            multiple_reactions: true,
            replies: true,
            deletes: true,
            receipts: true,
            typing: true,
            presence: true,
            media: true,
            locations: true,
            contacts: true,
            chat_details: true,
            create_groups: true,
            max_file_size: 25 * 1024 * 1024,
        }
    }

    fn login_flows(&self) -> Vec<LoginFlowInfo> {
        vec![LoginFlowInfo {
            id: "code",
            name: "Code",
            description: "Log in with your username and a one-time code",
        }]
    }

    fn start_login(&self, flow: &str) -> Result<Box<dyn LoginProcess>, NetworkError> {
        match flow {
            "code" => Ok(Box::new(login::SimLogin::new(self.api(None)))),
            _ => Err(NetworkError::Unsupported("that login flow")),
        }
    }

    fn load_session(
        &self,
        login: &StoredLogin,
        sink: EventSink,
    ) -> Result<Arc<dyn Session>, NetworkError> {
        let token = login
            .secret
            .get("token")
            .and_then(|t| t.as_str())
            .ok_or_else(|| NetworkError::LoggedOut("the stored login has no token".to_owned()))?;
        Ok(Arc::new(session::SimSession::new(
            self.api(Some(token.to_owned())),
            login.id.clone(),
            sink,
        )))
    }
}
