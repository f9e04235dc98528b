//! Communities: a parent group (`<parent/>`) that holds linked groups (`<linked_parent>`), one of
//! them its announcement group (`<default_sub_group/>`, only admins send). As on WhatsApp, a
//! community's members are the parent group's participants; each linked group has its own.
//! Every group of it is made with `groups::create_with`, so members' devices get the `<create>`
//! notification of each, and a group linked later also sends `<link>` to the community. An
//! existing group can be linked to a community and unlinked again (`<link>` / `<unlink>` to the
//! community's members, naming the group).

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
    let parent = admin_community(w, community, author)?;
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
    announce_link(w, &parent, author, &g, true);
    Ok(g)
}

/// Links the existing group `group` to `community` (`linked: true`) or unlinks it, as `author`,
/// who must be an admin of the community. The community's announcement group stays.
pub fn set_linked(
    w: &mut World,
    community: &str,
    author: &str,
    group: &str,
    linked: bool,
) -> Result<(), String> {
    let parent = admin_community(w, community, author)?;
    let g = w
        .groups
        .get_mut(group)
        .ok_or_else(|| format!("no group {group}"))?;
    if g.meta.parent || g.meta.default_sub_group {
        return Err(format!("{group} cannot be linked or unlinked"));
    }
    let current = g.meta.linked_parent.as_deref();
    if linked && current.is_some_and(|c| c != community) {
        return Err(format!("{group} is in another community"));
    }
    if !linked && current != Some(community) {
        return Err(format!("{group} is not in {community}"));
    }
    g.meta.linked_parent = linked.then(|| community.to_owned());
    let g = g.clone();
    announce_link(w, &parent, author, &g, linked);
    Ok(())
}

/// The community `community`, if `author` is an admin of it.
fn admin_community(w: &World, community: &str, author: &str) -> Result<Group, String> {
    let parent = w
        .groups
        .get(community)
        .cloned()
        .filter(|g| g.meta.parent)
        .ok_or_else(|| format!("no community {community}"))?;
    if !groups::is_admin(&parent, author) {
        return Err(format!("{author} is not an admin of {community}"));
    }
    Ok(parent)
}

/// Tells the community's members that `g` was linked to it (or unlinked from it).
fn announce_link(w: &mut World, community: &Group, author: &str, g: &Group, linked: bool) {
    let group = NodeBuilder::new("group")
        .attr("jid", format!("{}@g.us", g.id))
        .attr("subject", g.subject.clone())
        .build();
    let body = if linked {
        NodeBuilder::new("link").attr("link_type", "sub_group")
    } else {
        NodeBuilder::new("unlink")
            .attr("unlink_type", "sub_group")
            .attr("unlink_reason", "unlink_group")
    }
    .children([group])
    .build();
    groups::notify_members(w, community, author, body);
}
