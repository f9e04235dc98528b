//! The appservice registration file: generated from the config with fresh tokens, read back at
//! start-up for the tokens (so they live in exactly one file the admin already protects).

use std::path::Path;

use rand::{Rng, distr::Alphanumeric};
use serde::{Deserialize, Serialize};

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("cannot read registration file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("registration file {path} is invalid: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Clone, Serialize, Deserialize)]
pub struct Registration {
    pub id: String,
    pub url: String,
    pub as_token: String,
    pub hs_token: String,
    pub sender_localpart: String,
    #[serde(default)]
    pub rate_limited: bool,
    pub namespaces: Namespaces,
    #[serde(default)]
    pub receive_ephemeral: bool,
    #[serde(rename = "de.sorunome.msc2409.push_ephemeral", default)]
    pub push_ephemeral: bool,
    #[serde(
        rename = "org.matrix.msc3202",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub msc3202: bool,
    #[serde(
        rename = "io.element.msc4190",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub msc4190: bool,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("id", &self.id)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Namespaces {
    #[serde(default)]
    pub users: Vec<Namespace>,
    #[serde(default)]
    pub aliases: Vec<Namespace>,
    #[serde(default)]
    pub rooms: Vec<Namespace>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Namespace {
    pub regex: String,
    pub exclusive: bool,
}

fn random_token() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(64)
        .map(char::from)
        .collect()
}

/// Escapes regex metacharacters (server names contain dots, sometimes ports).
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Registration {
    /// A new registration for `config` with fresh random tokens: the bot plus one exclusive user
    /// namespace per enabled network.
    pub fn generate(config: &Config) -> Self {
        let domain = regex_escape(config.homeserver.domain.as_str());
        let bot = &config.appservice.bot.username;
        let mut users = vec![Namespace {
            regex: format!("@{}:{domain}", regex_escape(bot)),
            exclusive: true,
        }];
        for prefix in enabled_ghost_prefixes(config) {
            users.push(Namespace {
                regex: format!("@{}.*:{domain}", regex_escape(prefix)),
                exclusive: true,
            });
        }
        Self {
            id: config.appservice.id.clone(),
            url: config
                .appservice
                .address
                .to_string()
                .trim_end_matches('/')
                .to_owned(),
            as_token: random_token(),
            hs_token: random_token(),
            sender_localpart: bot.clone(),
            rate_limited: false,
            namespaces: Namespaces {
                users,
                ..Namespaces::default()
            },
            receive_ephemeral: true,
            push_ephemeral: true,
            // Encryption needs device lists and key counts in transactions (MSC3202) and
            // devices made by the appservice (MSC4190), unless devices come from appservice
            // login (homeservers where MSC4190 misbehaves).
            msc3202: config.encryption.allow,
            msc4190: config.encryption.allow
                && config.encryption.devices != crate::config::DeviceCreation::Login,
        }
    }

    pub fn to_yaml(&self) -> String {
        serde_norway::to_string(self).expect("registration serializes")
    }

    pub fn load(path: &Path) -> Result<Self, RegistrationError> {
        let text = std::fs::read_to_string(path).map_err(|source| RegistrationError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let reg: Self = serde_norway::from_str(&text).map_err(|e| RegistrationError::Invalid {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        if reg.as_token.is_empty() || reg.hs_token.is_empty() {
            return Err(RegistrationError::Invalid {
                path: path.display().to_string(),
                message: "as_token and hs_token must not be empty".to_owned(),
            });
        }
        Ok(reg)
    }
}

fn enabled_ghost_prefixes(config: &Config) -> Vec<&str> {
    let mut prefixes = Vec::new();
    if config.networks.sim.enabled {
        prefixes.push(config.networks.sim.ghost_prefix.as_str());
    }
    if config.networks.signal.enabled {
        prefixes.push(config.networks.signal.ghost_prefix.as_str());
    }
    if config.networks.telegram.enabled {
        prefixes.push(config.networks.telegram.ghost_prefix.as_str());
    }
    if config.networks.whatsapp.enabled {
        prefixes.push(config.networks.whatsapp.ghost_prefix.as_str());
    }
    prefixes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, EXAMPLE};

    #[test]
    fn generated_registration_covers_bot_and_ghosts_with_fresh_tokens() {
        let config = Config::parse(EXAMPLE).expect("example config");
        let a = Registration::generate(&config);
        let b = Registration::generate(&config);
        assert_ne!(a.as_token, b.as_token);
        assert_ne!(a.as_token, a.hs_token);
        assert_eq!(a.as_token.len(), 64);
        let regexes: Vec<_> = a
            .namespaces
            .users
            .iter()
            .map(|n| n.regex.as_str())
            .collect();
        assert_eq!(regexes, ["@ferrybot:localhost", "@sim_.*:localhost"]);
        assert!(a.namespaces.users.iter().all(|n| n.exclusive));
        let yaml = a.to_yaml();
        assert!(
            yaml.contains("de.sorunome.msc2409.push_ephemeral: true"),
            "{yaml}"
        );
        assert!(yaml.contains("receive_ephemeral: true"), "{yaml}");
        let back: Registration = serde_norway::from_str(&yaml).expect("round trip");
        assert_eq!(back.hs_token, a.hs_token);
        assert!(
            !format!("{a:?}").contains(&a.as_token),
            "tokens never reach Debug output"
        );
    }

    #[test]
    fn domain_dots_are_escaped() {
        let text = EXAMPLE.replace("domain: localhost", "domain: example.org");
        let config = Config::parse(&text).expect("config");
        let reg = Registration::generate(&config);
        assert_eq!(reg.namespaces.users[1].regex, r"@sim_.*:example\.org");
    }
}
