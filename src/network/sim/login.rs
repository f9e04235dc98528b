//! The sim login flow: username, then the code the server "sends" to that user.

use async_trait::async_trait;
use serde_json::json;

use super::api::SimApi;
use crate::network::{CompletedLogin, LoginId, LoginProcess, LoginStep, NetworkError};

enum Stage {
    Username,
    Code { flow_id: String },
}

pub struct SimLogin {
    api: SimApi,
    stage: Stage,
}

impl SimLogin {
    pub fn new(api: SimApi) -> Self {
        Self {
            api,
            stage: Stage::Username,
        }
    }
}

#[async_trait]
impl LoginProcess for SimLogin {
    async fn start(&mut self) -> Result<LoginStep, NetworkError> {
        self.stage = Stage::Username;
        Ok(LoginStep::Input {
            prompt: "Send your Sim username.".to_owned(),
            secret: false,
        })
    }

    async fn submit(&mut self, input: &str) -> Result<LoginStep, NetworkError> {
        match &self.stage {
            Stage::Username => {
                if input.is_empty() || input.len() > 256 {
                    return Err(NetworkError::Rejected(
                        "That is not a Sim username".to_owned(),
                    ));
                }
                let started = self.api.login_start(input).await.map_err(|err| match err {
                    NetworkError::Rejected(_) => {
                        NetworkError::Rejected(format!("There is no Sim user `{input}`"))
                    }
                    other => other,
                })?;
                self.stage = Stage::Code {
                    flow_id: started.flow_id,
                };
                Ok(LoginStep::Input {
                    prompt: "Sim sent you a login code. Send it here.".to_owned(),
                    secret: true,
                })
            }
            Stage::Code { flow_id } => {
                let done =
                    self.api
                        .login_finish(flow_id, input)
                        .await
                        .map_err(|err| match err {
                            NetworkError::Rejected(_) => {
                                NetworkError::Rejected("That code is wrong".to_owned())
                            }
                            other => other,
                        })?;
                Ok(LoginStep::Complete(CompletedLogin {
                    id: LoginId::new(done.user.id.clone()),
                    remote_name: done.user.name.clone(),
                    secret: json!({"token": done.token}),
                }))
            }
        }
    }

    async fn wait(&mut self) -> Result<LoginStep, NetworkError> {
        Err(NetworkError::Unsupported("waiting in the sim login"))
    }
}
