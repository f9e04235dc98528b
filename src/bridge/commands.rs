//! The bot's commands, typed in the management room (no prefix) or anywhere with the prefix.
//!
//! Every command declares the permission level it needs and is checked before it runs; unknown
//! input gets help, never silence.

use std::sync::Arc;

use ruma::UserId;

use crate::{
    config::PermissionLevel,
    matrix::event::MatrixEvent,
    network::{ChatId, LoginId, PortalKey},
};

use super::{
    Bridge,
    login::LoginHandle,
    router::{PortalAction, PortalCommand},
};

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
    StartChat,
    ResolveIdentifier,
    CreateGroup,
    SetRelay,
    UnsetRelay,
    DeletePortal,
    DeleteAllPortals,
    SetManagementRoom,
    Trust,
    Disappearing,
}

impl Command {
    const ALL: [Self; 18] = [
        Self::Help,
        Self::Version,
        Self::Login,
        Self::Logout,
        Self::ListLogins,
        Self::Ping,
        Self::Sync,
        Self::Cancel,
        Self::StartChat,
        Self::ResolveIdentifier,
        Self::CreateGroup,
        Self::SetRelay,
        Self::UnsetRelay,
        Self::DeletePortal,
        Self::DeleteAllPortals,
        Self::SetManagementRoom,
        Self::Trust,
        Self::Disappearing,
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
            "start-chat" | "pm" => Self::StartChat,
            "resolve-identifier" => Self::ResolveIdentifier,
            "create-group" => Self::CreateGroup,
            "set-relay" => Self::SetRelay,
            "unset-relay" => Self::UnsetRelay,
            "delete-portal" => Self::DeletePortal,
            "delete-all-portals" => Self::DeleteAllPortals,
            "set-management-room" => Self::SetManagementRoom,
            "trust" => Self::Trust,
            "disappearing" | "disappearing-timer" => Self::Disappearing,
            _ => return None,
        })
    }

    fn usage(self) -> (&'static str, &'static str) {
        match self {
            Self::Help => ("help", "show this help"),
            Self::Version => ("version", "show ferry's version"),
            Self::Login => (
                "login <network> [flow]",
                "log in to a network (Signal: `qr` or `existing`)",
            ),
            Self::Logout => ("logout <network> [login]", "log out of a network"),
            Self::ListLogins => ("list-logins", "list your logins"),
            Self::Ping => ("ping", "show the connection state of each of your logins"),
            Self::Sync => ("sync", "create or update rooms for all your remote chats"),
            Self::Cancel => ("cancel", "cancel a login in progress"),
            Self::StartChat => (
                "start-chat [network] <identifier>",
                "open a chat with a remote user (alias `pm`)",
            ),
            Self::ResolveIdentifier => (
                "resolve-identifier [network] <identifier>",
                "check who a remote identifier is",
            ),
            Self::CreateGroup => (
                "create-group <name> with <identifier>...",
                "create a remote group and its room",
            ),
            Self::SetRelay => (
                "set-relay [login]",
                "in a portal: relay messages of users without a login through yours",
            ),
            Self::UnsetRelay => ("unset-relay", "in a portal: stop relaying"),
            Self::DeletePortal => (
                "delete-portal",
                "in a portal: remove the bridge from this room and forget it",
            ),
            Self::DeleteAllPortals => ("delete-all-portals", "remove the bridge from every portal"),
            Self::SetManagementRoom => {
                ("set-management-room", "make this room your management room")
            }
            Self::Trust => (
                "trust [network] <identifier>",
                "accept a contact's new safety number after comparing it",
            ),
            Self::Disappearing => (
                "disappearing <off|30s|1h|1d|7d|90d>",
                "in a portal: set the chat's disappearing-message timer for everyone in it",
            ),
        }
    }

    fn required_level(self) -> PermissionLevel {
        match self {
            Self::Help
            | Self::Version
            | Self::Cancel
            | Self::ListLogins
            | Self::Ping
            | Self::SetManagementRoom => PermissionLevel::Commands,
            Self::Login
            | Self::Logout
            | Self::Sync
            | Self::StartChat
            | Self::ResolveIdentifier
            | Self::CreateGroup
            | Self::SetRelay
            | Self::UnsetRelay
            | Self::Trust
            | Self::Disappearing => PermissionLevel::User,
            Self::DeletePortal | Self::DeleteAllPortals => PermissionLevel::Admin,
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
                Some(network) => {
                    let flow = args.get(1).map(|f| f.to_lowercase());
                    self.begin_login(user, room, &network.to_lowercase(), flow.as_deref())
                        .await
                }
                None => {
                    let names: Vec<_> = self.networks.keys().copied().collect();
                    format!(
                        "Usage: `login <network>`. Enabled networks: {}.",
                        names.join(", ")
                    )
                }
            },
            Command::Logout => self.logout_command(user, args).await,
            Command::StartChat => self.start_chat_command(user, args).await,
            Command::ResolveIdentifier => match self.pick_login(user, args) {
                Ok((login, identifier)) => match login.session.resolve_identifier(identifier).await
                {
                    Ok(info) => format!(
                        "`{identifier}` is {} (`{}`) on {}.",
                        info.name, info.id, login.network
                    ),
                    Err(err) => format!("Cannot resolve `{identifier}`: {err}"),
                },
                Err(reply) => reply,
            },
            Command::CreateGroup => self.create_group_command(user, args).await,
            Command::Trust => match self.pick_login(user, args) {
                Ok((login, identifier)) => {
                    match login
                        .session
                        .trust_identity(&crate::network::RemoteUserId::new(identifier))
                        .await
                    {
                        Ok(()) => format!(
                            "The new safety number of `{identifier}` is trusted on {}; send your message again.",
                            login.network
                        ),
                        Err(err) => format!("Cannot trust `{identifier}`: {err}"),
                    }
                }
                Err(reply) => reply,
            },
            Command::SetRelay => {
                self.relay_command(user, room, args.first().copied(), true)
                    .await
            }
            Command::UnsetRelay => self.relay_command(user, room, None, false).await,
            Command::Disappearing => self.disappearing_command(user, room, args).await,
            Command::DeletePortal => match self.portal_of_room(room).await {
                Ok(Some(key)) => {
                    let command = PortalCommand {
                        action: PortalAction::Delete,
                        reply_room: room.to_string(),
                    };
                    self.queue_portal_command(key, command).await;
                    String::new()
                }
                _ => "This room is not a portal.".to_owned(),
            },
            Command::DeleteAllPortals => match self.db.all_portals().await {
                Ok(portals) => {
                    let count = portals.len();
                    for row in portals {
                        let Some(network) = self.network(&row.network) else {
                            continue;
                        };
                        let key = PortalKey {
                            network: network.id(),
                            chat: ChatId::new(row.chat_id),
                            receiver: (!row.receiver.is_empty())
                                .then(|| LoginId::new(row.receiver)),
                        };
                        let command = PortalCommand {
                            action: PortalAction::Delete,
                            reply_room: room.to_string(),
                        };
                        self.queue_portal_command(key, command).await;
                    }
                    format!("Deleting {count} portals.")
                }
                Err(err) => format!("Cannot list portals: {err}"),
            },
            Command::SetManagementRoom => match self
                .db
                .set_management_room(user.as_str(), room.as_str())
                .await
            {
                Ok(()) => "This is now your management room: send commands here without a prefix."
                    .to_owned(),
                Err(err) => format!("Cannot store the management room: {err}"),
            },
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

    /// The login a command acts through: `[network] <rest>`, defaulting to the user's first.
    fn pick_login<'a>(
        &self,
        user: &UserId,
        args: &'a [&'a str],
    ) -> Result<(LoginHandle, &'a str), String> {
        let logins = self.logins_of(user);
        let (network, rest) = match args {
            [first, rest @ ..]
                if !rest.is_empty() && self.network(&first.to_lowercase()).is_some() =>
            {
                (Some(first.to_lowercase()), rest)
            }
            _ => (None, args),
        };
        let Some(identifier) = rest.first().copied() else {
            return Err("Say who: give an identifier (see `help`).".to_owned());
        };
        let login = logins
            .into_iter()
            .find(|h| network.as_deref().is_none_or(|n| h.network.as_str() == n));
        match login {
            Some(login) => Ok((login, identifier)),
            None => Err("You have no login for that; use `login <network>` first.".to_owned()),
        }
    }

    async fn start_chat_command(self: &Arc<Self>, user: &UserId, args: &[&str]) -> String {
        let (login, identifier) = match self.pick_login(user, args) {
            Ok(picked) => picked,
            Err(reply) => return reply,
        };
        let info = match login.session.resolve_identifier(identifier).await {
            Ok(info) => info,
            Err(err) => return format!("Cannot find `{identifier}`: {err}"),
        };
        match login.session.start_dm(&info.id).await {
            Ok(chat) => {
                let key = PortalKey {
                    network: login.network,
                    chat: chat.id.clone(),
                    receiver: Some(login.id.clone()),
                };
                self.queue_sync(key, login.id.clone(), chat).await;
                format!(
                    "Opening your chat with {} ({}): you will be invited to its room.",
                    info.name, info.id
                )
            }
            Err(err) => format!("Cannot start a chat with {}: {err}", info.name),
        }
    }

    async fn create_group_command(self: &Arc<Self>, user: &UserId, args: &[&str]) -> String {
        let Some(split) = args.iter().position(|w| w.eq_ignore_ascii_case("with")) else {
            return "Usage: `create-group <name> with <identifier> [identifier...]`".to_owned();
        };
        let name = args[..split].join(" ");
        let identifiers = &args[split + 1..];
        if name.is_empty() || identifiers.is_empty() {
            return "Usage: `create-group <name> with <identifier> [identifier...]`".to_owned();
        }
        let Some(login) = self.logins_of(user).into_iter().next() else {
            return "You have no login; use `login <network>` first.".to_owned();
        };
        let mut members = Vec::new();
        for identifier in identifiers {
            match login.session.resolve_identifier(identifier).await {
                Ok(info) => members.push(info.id),
                Err(err) => return format!("Cannot find `{identifier}`: {err}"),
            }
        }
        match login.session.create_group(&name, &members).await {
            Ok(chat) => {
                let key = PortalKey {
                    network: login.network,
                    chat: chat.id.clone(),
                    receiver: None,
                };
                self.queue_sync(key, login.id.clone(), chat).await;
                format!("Created the group {name}: you will be invited to its room.")
            }
            Err(err) => format!("Cannot create the group: {err}"),
        }
    }

    async fn relay_command(
        self: &Arc<Self>,
        user: &UserId,
        room: &ruma::RoomId,
        login: Option<&str>,
        set: bool,
    ) -> String {
        let Ok(Some(key)) = self.portal_of_room(room).await else {
            return "Run this in a portal room.".to_owned();
        };
        let admin = self.permission(user) >= PermissionLevel::Admin;
        let relay = if set {
            let chosen = match login {
                Some(id) => self.login_handle(key.network, &LoginId::new(id)),
                None => self
                    .logins_of(user)
                    .into_iter()
                    .find(|h| h.network == key.network),
            };
            let Some(chosen) = chosen else {
                return "No such login on this portal's network.".to_owned();
            };
            if chosen.user != user && !admin {
                return "Only bridge admins may relay through someone else's login.".to_owned();
            }
            Some(chosen.id.to_string())
        } else {
            None
        };
        let command = PortalCommand {
            action: PortalAction::SetRelay(relay),
            reply_room: room.to_string(),
        };
        self.queue_portal_command(key, command).await;
        String::new()
    }

    /// `disappearing <timer>` in a portal: checked here, run in the portal's lane through the
    /// user's own login (never a relay: the timer changes the chat for everyone).
    async fn disappearing_command(
        self: &Arc<Self>,
        user: &UserId,
        room: &ruma::RoomId,
        args: &[&str],
    ) -> String {
        let usage = "Usage: `disappearing <off|30s|1h|1d|7d|90d>` in a portal room.";
        let Ok(Some(key)) = self.portal_of_room(room).await else {
            return format!("Run this in a portal room. {usage}");
        };
        let Some(seconds) = args.first().and_then(|a| crate::network::timer::parse(a)) else {
            return usage.to_owned();
        };
        let command = PortalCommand {
            action: PortalAction::SetDisappearing {
                user: user.to_owned(),
                seconds,
            },
            reply_room: room.to_string(),
        };
        self.queue_portal_command(key, command).await;
        String::new()
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
