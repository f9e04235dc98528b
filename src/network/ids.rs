//! Typed remote identifiers.
//!
//! Each kind of remote id gets its own newtype so a chat id can never be passed where a user id
//! is expected. They are opaque: the network that issued them decides their shape; the core only
//! stores, compares and escapes them.

use std::fmt;

macro_rules! remote_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

remote_id!(
    /// A chat (DM or group) on a remote network.
    ChatId
);
remote_id!(
    /// A user on a remote network.
    RemoteUserId
);
remote_id!(
    /// A message on a remote network, unique within its chat.
    MessageId
);
remote_id!(
    /// One remote login (account) of a Matrix user; for most networks the account's own user id.
    LoginId
);

/// Which network something belongs to: the lowercase name used in config, commands and tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NetworkId(&'static str);

impl NetworkId {
    pub const fn new(name: &'static str) -> Self {
        Self(name)
    }

    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

impl fmt::Display for NetworkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Identifies one portal: a remote chat as seen by one login (DMs) or by everyone (groups,
/// `receiver` is `None`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortalKey {
    pub network: NetworkId,
    pub chat: ChatId,
    pub receiver: Option<LoginId>,
}

impl PortalKey {
    /// The receiver as stored in the database (empty for shared portals).
    pub fn receiver_str(&self) -> &str {
        self.receiver.as_ref().map_or("", LoginId::as_str)
    }
}

impl fmt::Display for PortalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.network, self.chat)?;
        if let Some(receiver) = &self.receiver {
            write!(f, "@{receiver}")?;
        }
        Ok(())
    }
}
