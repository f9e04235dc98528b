//! The bot's commands, typed in the management room (no prefix) or anywhere with the prefix.
//!
//! Every command declares the permission level it needs and is checked before it runs; unknown
//! input gets help, never silence.

use std::sync::Arc;

use ruma::UserId;

use crate::{config::PermissionLevel, matrix::event::MatrixEvent};

use super::Bridge;

/// A command the bot knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Help,
    Version,
    Login,
    Logout,
    ListLogins,
    Ping,
    Sync,
    Cancel,
}

impl Command {
    const ALL: [Self; 8] = [
        Self::Help,
        Self::Version,
        Self::Login,
        Self::Logout,
        Self::ListLogins,
        Self::Ping,
        Self::Sync,
        Self::Cancel,
    ];

    fn parse(word: &str) -> Option<Self> {
        Some(match word {
            "help" => Self::Help,
            "version" => Self::Version,
            "login" => Self::Login,
            "logout" => Self::Logout,
            "list-logins" => Self::ListLogins,
            "ping" => Self::Ping,
            "sync" => Self::Sync,
            "cancel" => Self::Cancel,
            _ => return None,
        })
    }

    fn usage(self) -> (&'static str, &'static str) {
        match self {
            Self::Help => ("help", "show this help"),
            Self::Version => ("version", "show ferry's version"),
            Self::Login => ("login <network>", "log in to a network"),
            Self::Logout => ("logout <network> [login]", "log out of a network"),
            Self::ListLogins => ("list-logins", "list your logins"),
            Self::Ping => ("ping", "show the connection state of each of your logins"),
            Self::Sync => ("sync", "create or update rooms for all your remote chats"),
            Self::Cancel => ("cancel", "cancel a login in progress"),
        }
    }

    fn required_level(self) -> PermissionLevel {
        match self {
            Self::Help | Self::Version | Self::Cancel | Self::ListLogins | Self::Ping => {
                PermissionLevel::Commands
            }
            Self::Login | Self::Logout | Self::Sync => PermissionLevel::User,
        }
    }
}

impl Bridge {
    pub(crate) fn help_text(&self, level: PermissionLevel) -> String {
        let mut text = String::from("Commands:\n");
        for command in Command::ALL.iter().filter(|c| c.required_level() <= level) {
            let (usage, what) = command.usage();
            text.push_str(&format!("• `{usage}`: {what}\n"));
        }
        let networks: Vec<_> = self
            .networks
            .values()
            .map(|n| format!("{} (`{}`)", n.display_name(), n.id()))
            .collect();
        text.push_str(&format!(
            "Networks: {}. Outside this room, start commands with `{}`.",
            networks.join(", "),
            self.config.bridge.command_prefix
        ));
        text
    }

    /// Handles a message that is a command (or input to a login in progress).
    pub(crate) async fn handle_command_event(self: &Arc<Self>, event: &MatrixEvent) {
        let Some(body) = event.body() else { return };
        let prefix = self.config.bridge.command_prefix.as_str();
        let trimmed = body.trim();
        let (text, prefixed) = match trimmed.strip_prefix(prefix) {
            Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => {
                (rest.trim(), true)
            }
            _ => (trimmed, false),
        };
        let level = self.permission(&event.sender);
        if level < PermissionLevel::Commands {
            self.notice(
                &event.room_id,
                "You do not have permission to use this bridge.",
            )
            .await;
            return;
        }
        let mut words = text.split_whitespace();
        let first = words.next().unwrap_or("").to_lowercase();
        let args: Vec<&str> = words.collect();
        let command = Command::parse(&first);
        // A login waiting for input takes anything that is not a command.
        if command.is_none()
            && !prefixed
            && let Some(reply) = self.login_input(&event.sender, &event.room_id, text).await
        {
            self.notice(&event.room_id, &reply).await;
            return;
        }
        let reply = match command {
            None if first.is_empty() => self.help_text(level),
            None => format!("Unknown command `{first}`.\n\n{}", self.help_text(level)),
            Some(command) if command.required_level() > level => {
                format!("You do not have permission to use `{}`.", command.usage().0)
            }
            Some(command) => {
                self.run_command(command, &event.sender, &event.room_id, &args)
                    .await
            }
        };
        self.notice(&event.room_id, &reply).await;
    }

    async fn run_command(
        self: &Arc<Self>,
        command: Command,
        user: &UserId,
        room: &ruma::RoomId,
        args: &[&str],
    ) -> String {
        match command {
            Command::Help => self.help_text(self.permission(user)),
            Command::Version => format!("ferry {}", env!("CARGO_PKG_VERSION")),
            Command::Cancel => {
                if self.cancel_login(user).await {
                    "Login cancelled.".to_owned()
                } else {
                    "Nothing to cancel.".to_owned()
                }
            }
            Command::Login => match args.first() {
                Some(network) => self.begin_login(user, room, &network.to_lowercase()).await,
                None => {
                    let names: Vec<_> = self.networks.keys().copied().collect();
                    format!(
                        "Usage: `login <network>`. Enabled networks: {}.",
                        names.join(", ")
                    )
                }
            },
            Command::Logout => self.logout_command(user, args).await,
            Command::ListLogins => {
                let logins = self.logins_of(user);
                if logins.is_empty() {
                    return "You have no logins.".to_owned();
                }
                let lines: Vec<_> = logins
                    .iter()
                    .map(|h| format!("• {}: {} (`{}`)", h.network, h.remote_name, h.id))
                    .collect();
                format!("Your logins:\n{}", lines.join("\n"))
            }
            Command::Ping => {
                let logins = self.logins_of(user);
                if logins.is_empty() {
                    return "You have no logins.".to_owned();
                }
                let lines: Vec<_> = logins
                    .iter()
                    .map(|h| format!("• {} {}: {}", h.network, h.remote_name, h.state()))
                    .collect();
                lines.join("\n")
            }
            Command::Sync => {
                let logins = self.logins_of(user);
                if logins.is_empty() {
                    return "You have no logins to sync.".to_owned();
                }
                let mut lines = Vec::new();
                for handle in logins {
                    match self.sync_login(&handle).await {
                        Ok(n) => lines.push(format!(
                            "• {} {}: syncing {n} chats",
                            handle.network, handle.remote_name
                        )),
                        Err(err) => lines.push(format!(
                            "• {} {}: sync failed: {err}",
                            handle.network, handle.remote_name
                        )),
                    }
                }
                lines.join("\n")
            }
        }
    }

    async fn logout_command(&self, user: &UserId, args: &[&str]) -> String {
        let logins = self.logins_of(user);
        let chosen: Vec<_> = logins
            .into_iter()
            .filter(|h| {
                args.first()
                    .is_none_or(|n| h.network.as_str() == n.to_lowercase())
            })
            .filter(|h| args.get(1).is_none_or(|id| h.id.as_str() == *id))
            .collect();
        match chosen.as_slice() {
            [] => "No matching login. See `list-logins`.".to_owned(),
            [handle] => match self.logout(handle).await {
                Ok(()) => format!("Logged out of {} {}.", handle.network, handle.remote_name),
                Err(err) => format!("Logout failed: {err}"),
            },
            _ => "You have several logins; say which: `logout <network> <login>` (see `list-logins`).".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_parses_from_its_usage_and_has_a_level() {
        for command in Command::ALL {
            let word = command.usage().0.split_whitespace().next().unwrap();
            assert_eq!(Command::parse(word), Some(command));
            assert!(command.required_level() >= PermissionLevel::Commands);
        }
        assert_eq!(Command::parse("rm -rf"), None);
    }
}
