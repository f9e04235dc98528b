//! Communities: a parent group (`<parent/>`) that holds linked groups (`<linked_parent>`), one of
//! them its announcement group (`<default_sub_group/>`, only admins send). As on WhatsApp, a
//! community's members are the parent group's participants; each linked group has its own.
//! Every group of it is made with `groups::create_with`, so members' devices get the `<create>`
//! notification of each, and a group linked later also sends `<link>` to the community.

use wacore_binary::builder::NodeBuilder;

use super::groups::{self, GroupMeta};
use super::world::{Group, World};

/// What a new community consists of.
pub struct Created {
    pub community: Group,
    pub announcement: Group,
    pub linked: Vec<Group>,
}

/// Creates a community with its announcement group (every member in it, only admins send) and
/// the given linked groups (subject, members).
pub fn create(
    w: &mut World,
    creator: &str,
    subject: &str,
    description: Option<&str>,
    members: &[String],
    linked: &[(String, Vec<String>)],
) -> Created {
    let community = groups::create_with(
        w,
        creator,
        subject,
        members,
        GroupMeta {
            parent: true,
            description: description.map(|d| (format!("{:016X}", 1), d.to_owned())),
            ..GroupMeta::default()
        },
    );
    let announcement = groups::create_with(
        w,
        creator,
        subject,
        members,
        GroupMeta {
            linked_parent: Some(community.id.clone()),
            default_sub_group: true,
            announce: true,
            ..GroupMeta::default()
        },
    );
    let linked = linked
        .iter()
        .map(|(s, m)| {
            groups::create_with(
                w,
                creator,
                s,
                m,
                GroupMeta {
                    linked_parent: Some(community.id.clone()),
                    ..GroupMeta::default()
                },
            )
        })
        .collect();
    Created {
        community,
        announcement,
        linked,
    }
}

/// A new group linked to `community` by `author` (an admin of it): its members get its
/// `<create>`, the community's members the `<link>` notification.
pub fn add_linked(
    w: &mut World,
    community: &str,
    author: &str,
    subject: &str,
    members: &[String],
) -> Result<Group, String> {
    let parent = w
        .groups
        .get(community)
        .cloned()
        .filter(|g| g.meta.parent)
        .ok_or_else(|| format!("no community {community}"))?;
    if !groups::is_admin(&parent, author) {
        return Err(format!("{author} is not an admin of {community}"));
    }
    let g = groups::create_with(
        w,
        author,
        subject,
        members,
        GroupMeta {
            linked_parent: Some(community.to_owned()),
            ..GroupMeta::default()
        },
    );
    let body = NodeBuilder::new("link")
        .attr("link_type", "sub_group")
        .children([NodeBuilder::new("group")
            .attr("jid", format!("{}@g.us", g.id))
            .attr("subject", g.subject.clone())
            .build()])
        .build();
    groups::notify_members(w, &parent, author, body);
    Ok(g)
}
