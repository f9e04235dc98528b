//! Telegram service messages (members added or removed, title and photo changes, pins) as
//! something a Matrix user can read: Matrix has no such events, so each arrives as an italic line
//! from the acting user, with pills for the users it names; removals also remove the member and
//! a new group or topic title renames the room. [A photo change is shown but does not yet change
//! the room's picture.]

use grammers_client::tl;

use super::entities::user_id;
use crate::network::richtext::{Entity, EntityKind, FormattedText, MentionTarget};

/// What a service message means for the bridge.
#[derive(Debug, PartialEq)]
pub struct Service {
    /// The line shown in the room.
    pub text: FormattedText,
    /// Users who left or were removed.
    pub left: Vec<i64>,
    /// Users who were added or joined.
    pub joined: Vec<i64>,
    /// The chat's (or the forum topic's) new title.
    pub renamed: Option<String>,
    /// The title or photo changed: the bridge reads the chat's details again.
    pub details_changed: bool,
}

/// Builds an italic line of plain parts and user pills.
struct Line {
    text: String,
    entities: Vec<Entity>,
}

impl Line {
    fn new() -> Self {
        Self {
            text: String::new(),
            entities: Vec::new(),
        }
    }

    fn push(mut self, s: &str) -> Self {
        self.text.push_str(s);
        self
    }

    fn user(mut self, id: i64) -> Self {
        let start = self.text.chars().count();
        let label = format!("user {id}");
        self.text.push_str(&label);
        self.entities.push(Entity::new(
            start,
            label.chars().count(),
            EntityKind::Mention(MentionTarget::Remote(user_id(id))),
        ));
        self
    }

    fn users(mut self, ids: &[i64]) -> Self {
        for (i, id) in ids.iter().enumerate() {
            if i > 0 {
                self = self.push(", ");
            }
            self = self.user(*id);
        }
        self
    }

    fn done(self) -> FormattedText {
        let len = self.text.chars().count();
        let mut entities = vec![Entity::new(0, len, EntityKind::Italic)];
        entities.extend(self.entities);
        let mut text = FormattedText::new(self.text, entities);
        text.normalize();
        text
    }
}

/// The meaning of `action`, done by `actor`.
pub fn describe(action: &tl::enums::MessageAction, actor: i64) -> Service {
    use tl::enums::MessageAction as A;
    let mut left = Vec::new();
    let mut joined = Vec::new();
    let mut renamed = None;
    let line = match action {
        A::ChatCreate(c) => Line::new().push(&format!("created the group “{}”", c.title)),
        A::ChannelCreate(c) => Line::new().push(&format!("created “{}”", c.title)),
        A::ChatEditTitle(t) => {
            renamed = Some(t.title.clone());
            Line::new().push(&format!("changed the group name to “{}”", t.title))
        }
        A::TopicEdit(t) if t.title.is_some() => {
            let title = t.title.clone().unwrap_or_default();
            let line = Line::new().push(&format!("renamed the topic to “{title}”"));
            renamed = Some(title);
            line
        }
        A::ChatEditPhoto(_) => Line::new().push("changed the group photo"),
        A::ChatDeletePhoto => Line::new().push("removed the group photo"),
        A::ChatAddUser(a) if a.users == [actor] => {
            joined.push(actor);
            Line::new().push("joined the group")
        }
        A::ChatAddUser(a) => {
            joined.extend(&a.users);
            Line::new().push("added ").users(&a.users)
        }
        A::ChatJoinedByLink(_) | A::ChatJoinedByRequest => {
            joined.push(actor);
            Line::new().push("joined the group by invite link")
        }
        A::ChatDeleteUser(d) => {
            left.push(d.user_id);
            if d.user_id == actor {
                Line::new().push("left the group")
            } else {
                Line::new().push("removed ").user(d.user_id)
            }
        }
        A::PinMessage => Line::new().push("pinned a message"),
        A::ChatMigrateTo(_) | A::ChannelMigrateFrom(_) => {
            Line::new().push("upgraded the group to a supergroup")
        }
        A::TopicCreate(t) => Line::new().push(&format!("created the topic “{}”", t.title)),
        other => {
            let name = format!("{other:?}");
            let name = name.split('(').next().unwrap_or("an action").to_owned();
            Line::new().push(&format!("did something Telegram calls {name}"))
        }
    };
    let details_changed =
        renamed.is_some() || matches!(action, A::ChatEditPhoto(_) | A::ChatDeletePhoto);
    Service {
        text: line.done(),
        left,
        joined,
        renamed,
        details_changed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_read_as_sentences_with_pills() {
        use tl::enums::MessageAction as A;
        let s = describe(
            &A::ChatEditTitle(tl::types::MessageActionChatEditTitle {
                title: "New name".into(),
            }),
            1,
        );
        assert_eq!(s.text.text, "changed the group name to “New name”");
        assert!(s.left.is_empty());
        assert_eq!(s.renamed.as_deref(), Some("New name"));
        assert!(s.details_changed);
        let s = describe(&A::ChatDeletePhoto, 1);
        assert_eq!(s.text.text, "removed the group photo");
        assert!(s.details_changed, "a photo change re-reads the chat");
        assert!(!describe(&A::PinMessage, 1).details_changed);
        let s = describe(
            &A::ChatAddUser(tl::types::MessageActionChatAddUser { users: vec![7, 8] }),
            1,
        );
        assert_eq!(s.text.text, "added user 7, user 8");
        assert_eq!(s.joined, [7, 8]);
        let pills: Vec<_> = s
            .text
            .entities
            .iter()
            .filter(|e| matches!(e.kind, EntityKind::Mention(_)))
            .map(|e| (e.start, e.len))
            .collect();
        assert_eq!(pills, [(6, 6), (14, 6)]);
        let s = describe(
            &A::ChatDeleteUser(tl::types::MessageActionChatDeleteUser { user_id: 1 }),
            1,
        );
        assert_eq!((s.text.text.as_str(), s.left), ("left the group", vec![1]));
        let s = describe(&A::PinMessage, 1);
        assert_eq!(s.text.text, "pinned a message");
    }
}
