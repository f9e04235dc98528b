//! Who may do what: levels from the config, keyed by user id, then server name, then `*`.

use std::collections::BTreeMap;

use ruma::UserId;

use crate::config::PermissionLevel;

/// The level of `user`: the most specific matching key wins; nobody matched means `block`.
pub fn level_of(permissions: &BTreeMap<String, PermissionLevel>, user: &UserId) -> PermissionLevel {
    permissions
        .get(user.as_str())
        .or_else(|| permissions.get(user.server_name().as_str()))
        .or_else(|| permissions.get("*"))
        .copied()
        .unwrap_or(PermissionLevel::Block)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruma::user_id;

    #[test]
    fn most_specific_key_wins() {
        let perms = BTreeMap::from([
            ("*".to_owned(), PermissionLevel::Relay),
            ("example.org".to_owned(), PermissionLevel::User),
            ("@boss:example.org".to_owned(), PermissionLevel::Admin),
            ("@troll:example.org".to_owned(), PermissionLevel::Block),
        ]);
        assert_eq!(
            level_of(&perms, user_id!("@boss:example.org")),
            PermissionLevel::Admin
        );
        assert_eq!(
            level_of(&perms, user_id!("@troll:example.org")),
            PermissionLevel::Block
        );
        assert_eq!(
            level_of(&perms, user_id!("@anyone:example.org")),
            PermissionLevel::User
        );
        assert_eq!(
            level_of(&perms, user_id!("@x:elsewhere.net")),
            PermissionLevel::Relay
        );
        assert_eq!(
            level_of(&BTreeMap::new(), user_id!("@x:elsewhere.net")),
            PermissionLevel::Block
        );
        assert!(
            PermissionLevel::Admin > PermissionLevel::User
                && PermissionLevel::Relay > PermissionLevel::Block
        );
    }
}
