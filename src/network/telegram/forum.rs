//! Channels, supergroups and forums: what kind a channel is (broadcast channels become read-only
//! rooms, forums a space with one room per topic) and which topic a forum message is in.
//!
//! Telegram marks a message in a forum topic with a reply header flagged `forum_topic`: its
//! `reply_to_top_id` is the topic when the message also replies to another message, else
//! `reply_to_msg_id` is the topic itself (not a reply). Messages of the General topic carry no
//! such header. The message that opened a topic (`messageActionTopicCreate`) is the topic's id.

use grammers_client::peer::Peer;
use grammers_client::tl;

use super::ids::GENERAL_TOPIC;

/// What ferry needs to know about a channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelFlags {
    /// Only admins post (a broadcast channel, not a supergroup).
    pub broadcast: bool,
    /// A supergroup with topics.
    pub forum: bool,
    /// The account may post (creator or admin).
    pub admin: bool,
    pub title: String,
}

impl ChannelFlags {
    pub fn of_raw(channel: &tl::types::Channel) -> Self {
        Self {
            broadcast: channel.broadcast,
            forum: channel.forum,
            admin: channel.creator || channel.admin_rights.is_some(),
            title: channel.title.clone(),
        }
    }

    /// The flags of a resolved peer, when it is a channel or supergroup.
    pub fn of_peer(peer: &Peer) -> Option<Self> {
        match peer {
            Peer::Channel(c) => Some(Self::of_raw(&c.raw)),
            Peer::Group(g) => match &g.raw {
                tl::enums::Chat::Channel(c) => Some(Self::of_raw(c)),
                _ => None,
            },
            _ => None,
        }
    }
}

/// Where a message of a forum sits: its topic, and the message it really replies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub topic: i32,
    pub reply_to: Option<i32>,
}

/// The topic and reply of a message in a forum.
pub fn placement(message: &tl::enums::Message) -> Placement {
    let (id, header, action) = match message {
        tl::enums::Message::Message(m) => (m.id, m.reply_to.as_ref(), None),
        tl::enums::Message::Service(m) => (m.id, m.reply_to.as_ref(), Some(&m.action)),
        tl::enums::Message::Empty(m) => (m.id, None, None),
    };
    let header = match header {
        Some(tl::enums::MessageReplyHeader::Header(h)) => Some(h),
        _ => None,
    };
    placement_of(
        id,
        header,
        matches!(action, Some(tl::enums::MessageAction::TopicCreate(_))),
    )
}

fn placement_of(
    id: i32,
    header: Option<&tl::types::MessageReplyHeader>,
    opens_topic: bool,
) -> Placement {
    if opens_topic {
        return Placement {
            topic: id,
            reply_to: None,
        };
    }
    match header {
        Some(h) if h.forum_topic => match (h.reply_to_top_id, h.reply_to_msg_id) {
            (Some(top), reply) => Placement {
                topic: top,
                reply_to: reply,
            },
            (None, Some(top)) => Placement {
                topic: top,
                reply_to: None,
            },
            (None, None) => Placement {
                topic: GENERAL_TOPIC,
                reply_to: None,
            },
        },
        Some(h) => Placement {
            topic: GENERAL_TOPIC,
            reply_to: h.reply_to_msg_id,
        },
        _ => Placement {
            topic: GENERAL_TOPIC,
            reply_to: None,
        },
    }
}

/// The title of a topic in a `messages.forumTopics` answer.
pub fn topic_title(topics: &tl::enums::messages::ForumTopics, topic: i32) -> Option<String> {
    let tl::enums::messages::ForumTopics::Topics(list) = topics;
    list.topics.iter().find_map(|t| match t {
        tl::enums::ForumTopic::Topic(t) if t.id == topic => Some(t.title.clone()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(forum: bool, msg: Option<i32>, top: Option<i32>) -> tl::types::MessageReplyHeader {
        tl::types::MessageReplyHeader {
            reply_to_scheduled: false,
            forum_topic: forum,
            quote: false,
            reply_to_ephemeral: false,
            reply_to_msg_id: msg,
            reply_to_peer_id: None,
            reply_from: None,
            reply_media: None,
            reply_to_top_id: top,
            quote_text: None,
            quote_entities: None,
            quote_offset: None,
            todo_item_id: None,
            poll_option: None,
        }
    }

    #[test]
    fn topics_and_replies_are_told_apart() {
        let p = |id, h: Option<tl::types::MessageReplyHeader>, opens| {
            let p = placement_of(id, h.as_ref(), opens);
            (p.topic, p.reply_to)
        };
        assert_eq!(p(5, None, false), (GENERAL_TOPIC, None));
        assert_eq!(p(4, None, true), (4, None), "the topic's first message");
        assert_eq!(p(6, Some(header(true, Some(3), None)), false), (3, None));
        assert_eq!(
            p(7, Some(header(true, Some(6), Some(3))), false),
            (3, Some(6))
        );
        assert_eq!(
            p(8, Some(header(false, Some(5), None)), false),
            (GENERAL_TOPIC, Some(5))
        );
    }
}
