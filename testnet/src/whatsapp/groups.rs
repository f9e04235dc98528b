//! Groups (`w:g2`): metadata queries, the list of groups a user is in, creation, member
//! changes (only admins may add or remove others), admins promoted and demoted, descriptions,
//! and group pictures (`w:profile:picture`, served from the media host), which every member's
//! devices learn through `<notification type="w:gp2">` (or `type="picture"`). Communities are
//! groups too (`<parent/>`, `<linked_parent>`, `<default_sub_group/>`), made in `community.rs`.
//! Groups use phone-number addressing (`addressing_mode="pn"`).

use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;

use super::world::{Group, World, attr, child_bytes, jid_attr, now};

/// What a group has beyond its subject and members.
#[derive(Debug, Clone, Default)]
pub struct GroupMeta {
    /// The description's id (WhatsApp's conflict token) and text.
    pub description: Option<(String, String)>,
    /// The picture's id; its JPEG bytes are on the media host at [`picture_path`].
    pub picture: Option<String>,
    /// A community (parent group): `<parent/>`.
    pub parent: bool,
    /// The community this group is linked to: `<linked_parent jid=…/>`.
    pub linked_parent: Option<String>,
    /// A community's announcement group: `<default_sub_group/>`.
    pub default_sub_group: bool,
    /// Only admins may send: `<announcement/>`.
    pub announce: bool,
    /// Only admins may edit the group's details (subject, description, picture, timer):
    /// `<locked/>`.
    pub locked: bool,
    /// The disappearing-messages timer in seconds (0: off): `<ephemeral expiration=…/>`.
    pub ephemeral: u32,
}

/// Where the media host serves a group picture.
pub fn picture_path(group: &str, picture: &str) -> String {
    format!("/v/t62.sim-pp/{group}/{picture}.jpg")
}

pub fn group_node(g: &Group) -> Node {
    let participants: Vec<Node> = g
        .participants
        .iter()
        .map(|(p, admin)| {
            let mut b = NodeBuilder::new("participant").attr("jid", format!("{p}@s.whatsapp.net"));
            if *admin {
                b = b.attr(
                    "type",
                    if *p == g.creator {
                        "superadmin"
                    } else {
                        "admin"
                    },
                );
            }
            b.build()
        })
        .collect();
    let mut children = participants;
    if let Some((id, text)) = &g.meta.description {
        children.push(
            NodeBuilder::new("description")
                .attr("id", id.clone())
                .children([NodeBuilder::new("body")
                    .string_content(text.clone())
                    .build()])
                .build(),
        );
    }
    if g.meta.parent {
        children.push(NodeBuilder::new("parent").build());
    }
    if g.meta.ephemeral > 0 {
        children.push(
            NodeBuilder::new("ephemeral")
                .attr("expiration", g.meta.ephemeral.to_string())
                .build(),
        );
    }
    if let Some(parent) = &g.meta.linked_parent {
        children.push(
            NodeBuilder::new("linked_parent")
                .attr("jid", format!("{parent}@g.us"))
                .build(),
        );
    }
    if g.meta.default_sub_group {
        children.push(NodeBuilder::new("default_sub_group").build());
    }
    if g.meta.announce {
        children.push(NodeBuilder::new("announcement").build());
    }
    if g.meta.locked {
        children.push(NodeBuilder::new("locked").build());
    }
    NodeBuilder::new("group")
        .attr("id", g.id.clone())
        .attr("subject", g.subject.clone())
        .attr("s_t", g.created.to_string())
        .attr("s_o", format!("{}@s.whatsapp.net", g.creator))
        .attr("creation", g.created.to_string())
        .attr("creator", format!("{}@s.whatsapp.net", g.creator))
        .attr("addressing_mode", "pn")
        .attr("size", g.participants.len().to_string())
        .children(children)
        .build()
}

pub fn create(w: &mut World, creator: &str, subject: &str, members: &[String]) -> Group {
    create_with(w, creator, subject, members, GroupMeta::default())
}

/// Creates a group with its metadata; every member's devices get the `<create>` notification.
pub fn create_with(
    w: &mut World,
    creator: &str,
    subject: &str,
    members: &[String],
    meta: GroupMeta,
) -> Group {
    let id = format!("1203630{:011}", w.next_id());
    let mut participants = vec![(creator.to_owned(), true)];
    for m in members {
        if m != creator && !participants.iter().any(|(p, _)| p == m) {
            participants.push((m.clone(), false));
        }
    }
    let g = Group {
        id: id.clone(),
        subject: subject.to_owned(),
        creator: creator.to_owned(),
        created: now(),
        participants,
        meta,
    };
    w.groups.insert(id, g.clone());
    // Every member learns about the new group.
    let body = NodeBuilder::new("create")
        .children([group_node(&g)])
        .build();
    notify_members(w, &g, creator, body);
    g
}

pub(super) fn notification(w: &mut World, g: &Group, author: &str, body: Node) -> Node {
    let id = w.stanza_id();
    NodeBuilder::new("notification")
        .attr("from", format!("{}@g.us", g.id))
        .attr("type", "w:gp2")
        .attr("id", id)
        .attr("participant", format!("{author}@s.whatsapp.net"))
        .attr("t", now().to_string())
        .children([body])
        .build()
}

/// Renames a group as `author`; every member's devices get the `w:gp2` `<subject>`
/// notification, as from WhatsApp.
pub fn set_subject(w: &mut World, group: &str, author: &str, subject: &str) -> Result<(), String> {
    let g = editable_group(w, group, author)?;
    g.subject = subject.to_owned();
    let g = g.clone();
    let body = NodeBuilder::new("subject")
        .attr("subject", subject)
        .attr("s_o", format!("{author}@s.whatsapp.net"))
        .attr("s_t", now().to_string())
        .build();
    notify_members(w, &g, author, body);
    Ok(())
}

/// Adds (`add = true`) or removes members; every device of every member (old and new) is told.
pub fn change_members(
    w: &mut World,
    group: &str,
    author: &str,
    members: &[String],
    add: bool,
) -> Result<(), String> {
    let g = w
        .groups
        .get_mut(group)
        .ok_or_else(|| format!("no group {group}"))?;
    let before: Vec<String> = g.participants.iter().map(|(p, _)| p.clone()).collect();
    if add {
        for m in members {
            if !g.participants.iter().any(|(p, _)| p == m) {
                g.participants.push((m.clone(), false));
            }
        }
    } else {
        g.participants.retain(|(p, _)| !members.contains(p));
    }
    let g = g.clone();
    let body = participants_node(if add { "add" } else { "remove" }, members);
    let note = notification(w, &g, author, body);
    let mut everyone = before;
    everyone.extend(members.iter().cloned());
    everyone.sort();
    everyone.dedup();
    for p in everyone {
        w.deliver_all(&p, None, &note);
    }
    Ok(())
}

/// `<tag><participant jid=…/>…</tag>`: the people a member change names.
fn participants_node(tag: &str, members: &[String]) -> Node {
    NodeBuilder::new_dynamic(tag.to_owned())
        .children(members.iter().map(|m| {
            NodeBuilder::new("participant")
                .attr("jid", format!("{m}@s.whatsapp.net"))
                .build()
        }))
        .build()
}

pub fn is_admin(g: &Group, phone: &str) -> bool {
    g.participants.iter().any(|(p, admin)| p == phone && *admin)
}

fn member_group<'a>(w: &'a mut World, group: &str, author: &str) -> Result<&'a mut Group, String> {
    let g = w
        .groups
        .get_mut(group)
        .ok_or_else(|| format!("no group {group}"))?;
    if !g.participants.iter().any(|(p, _)| p == author) {
        return Err(format!("{author} is not a member of {group}"));
    }
    Ok(g)
}

/// The group `author` may edit the details of: a member, and an admin where the group keeps
/// its details to admins (`locked`).
fn editable_group<'a>(
    w: &'a mut World,
    group: &str,
    author: &str,
) -> Result<&'a mut Group, String> {
    let g = member_group(w, group, author)?;
    if g.meta.locked && !is_admin(g, author) {
        return Err(format!("only admins may edit the details of {group}"));
    }
    Ok(g)
}

/// Delivers `note` to every device of every member of `g`.
pub(super) fn tell_members(w: &mut World, g: &Group, note: &Node) {
    for (p, _) in &g.participants {
        w.deliver_all(p, None, note);
    }
}

/// A `w:gp2` notification of `body` by `author`, delivered to every member of `g`.
pub(super) fn notify_members(w: &mut World, g: &Group, author: &str, body: Node) {
    let note = notification(w, g, author, body);
    tell_members(w, g, &note);
}

/// Sets a group's disappearing-messages timer as `author` (seconds, 0: off); every member's
/// devices get the `w:gp2` `<ephemeral expiration>` (or `<not_ephemeral/>`) notification. As
/// with the description, any member may unless the group keeps its details to admins.
pub fn set_ephemeral(w: &mut World, group: &str, author: &str, seconds: u32) -> Result<(), String> {
    let g = editable_group(w, group, author)?;
    g.meta.ephemeral = seconds;
    let g = g.clone();
    let body = if seconds == 0 {
        NodeBuilder::new("not_ephemeral").build()
    } else {
        NodeBuilder::new("ephemeral")
            .attr("expiration", seconds.to_string())
            .build()
    };
    notify_members(w, &g, author, body);
    Ok(())
}

/// Turns "only admins send" on or off as `author`, who must be an admin; every member's devices
/// get the `w:gp2` `<announcement/>` (or `<not_announcement/>`) notification.
pub fn set_announce(w: &mut World, group: &str, author: &str, on: bool) -> Result<(), String> {
    admin_setting(
        w,
        group,
        author,
        on,
        ("announcement", "not_announcement"),
        |m| &mut m.announce,
    )
}

/// Keeps the group's details (subject, description, picture, timer) to admins, or opens them
/// to every member, as `author`, who must be an admin; every member's devices get the `w:gp2`
/// `<locked/>` (or `<unlocked/>`) notification.
pub fn set_locked(w: &mut World, group: &str, author: &str, on: bool) -> Result<(), String> {
    admin_setting(w, group, author, on, ("locked", "unlocked"), |m| {
        &mut m.locked
    })
}

/// Switches one of the group's admin-only settings (`tags`: the notification's tag for on and
/// for off).
fn admin_setting(
    w: &mut World,
    group: &str,
    author: &str,
    on: bool,
    tags: (&'static str, &'static str),
    field: fn(&mut GroupMeta) -> &mut bool,
) -> Result<(), String> {
    let g = member_group(w, group, author)?;
    if !is_admin(g, author) {
        return Err(format!("{author} is not an admin of {group}"));
    }
    *field(&mut g.meta) = on;
    let g = g.clone();
    let body = NodeBuilder::new(if on { tags.0 } else { tags.1 }).build();
    notify_members(w, &g, author, body);
    Ok(())
}

/// Sets (`Some`) or deletes (`None`) a group's description as `author`; every member's devices
/// get the `w:gp2` `<description>` notification.
pub fn set_description(
    w: &mut World,
    group: &str,
    author: &str,
    text: Option<&str>,
) -> Result<(), String> {
    let id = format!("{:016X}", w.next_id());
    let g = editable_group(w, group, author)?;
    g.meta.description = text
        .filter(|t| !t.is_empty())
        .map(|t| (id.clone(), t.to_owned()));
    let g = g.clone();
    let body = match text.filter(|t| !t.is_empty()) {
        Some(text) => NodeBuilder::new("description")
            .attr("id", id)
            .children([NodeBuilder::new("body").string_content(text).build()])
            .build(),
        None => NodeBuilder::new("description")
            .attr("id", id)
            .children([NodeBuilder::new("delete").build()])
            .build(),
    };
    notify_members(w, &g, author, body);
    Ok(())
}

/// Promotes (`admin = true`) or demotes members as `author` (an admin); every member's devices
/// get the `<promote>`/`<demote>` notification.
pub fn set_admins(
    w: &mut World,
    group: &str,
    author: &str,
    members: &[String],
    admin: bool,
) -> Result<(), String> {
    let g = member_group(w, group, author)?;
    if !is_admin(g, author) {
        return Err(format!("{author} is not an admin of {group}"));
    }
    for (p, a) in &mut g.participants {
        if members.contains(p) {
            *a = admin;
        }
    }
    let g = g.clone();
    let body = participants_node(if admin { "promote" } else { "demote" }, members);
    notify_members(w, &g, author, body);
    Ok(())
}

/// Sets (`Some(jpeg)`) or removes a group's picture as `author`: the bytes go to the media
/// host, every member's devices get `<notification type="picture">`. Returns the new id.
pub fn set_picture(
    w: &mut World,
    group: &str,
    author: &str,
    jpeg: Option<Vec<u8>>,
) -> Result<Option<String>, String> {
    let picture = jpeg.as_ref().map(|_| w.next_id().to_string());
    let g = editable_group(w, group, author)?;
    let old = std::mem::replace(&mut g.meta.picture, picture.clone());
    let g = g.clone();
    if let Some(old) = old {
        w.media.remove(&picture_path(group, &old));
    }
    if let (Some(id), Some(jpeg)) = (&picture, jpeg) {
        w.media.insert(picture_path(group, id), jpeg);
    }
    let jid = format!("{group}@g.us");
    let author_jid = format!("{author}@s.whatsapp.net");
    let body = match &picture {
        Some(id) => NodeBuilder::new("set")
            .attr("jid", jid.clone())
            .attr("id", id.clone())
            .attr("author", author_jid)
            .build(),
        None => NodeBuilder::new("delete")
            .attr("jid", jid.clone())
            .attr("author", author_jid)
            .build(),
    };
    let note = NodeBuilder::new("notification")
        .attr("from", jid)
        .attr("type", "picture")
        .attr("id", w.stanza_id())
        .attr("t", now().to_string())
        .children([body])
        .build();
    tell_members(w, &g, &note);
    Ok(picture)
}

/// `w:profile:picture` IQs about a group (`target="…@g.us"`): the picture's URL (`get`), or a
/// new picture (`set`, JPEG bytes in `<picture>`; none = remove). Users have no pictures here:
/// an empty result, which the client reads as "no picture".
pub fn picture_iq(w: &mut World, phone: &str, node: &Node) -> Node {
    let target = jid_attr(node, "target").or_else(|| jid_attr(node, "to"));
    let Some(group) = target.filter(|j| j.server == wacore_binary::Server::Group) else {
        return World::iq_result(node, vec![]);
    };
    let group = group.user.to_string();
    let Some(g) = w.groups.get(&group).cloned() else {
        return World::iq_error(node, 404, "item-not-found");
    };
    if !g.participants.iter().any(|(p, _)| p == phone) {
        return World::iq_error(node, 401, "not-authorized");
    }
    if attr(node, "type").as_deref() == Some("set") {
        let jpeg = child_bytes(node, "picture")
            .filter(|b| !b.is_empty())
            .map(<[u8]>::to_vec);
        return match set_picture(w, &group, phone, jpeg) {
            Ok(id) => World::iq_result(
                node,
                vec![
                    NodeBuilder::new("picture")
                        .attr("id", id.unwrap_or_default())
                        .build(),
                ],
            ),
            Err(_) => World::iq_error(node, 403, "forbidden"),
        };
    }
    let Some(id) = g.meta.picture else {
        return World::iq_error(node, 404, "item-not-found");
    };
    let path = picture_path(&group, &id);
    let url = format!("{}{path}", w.media_url.replacen("http://", "https://", 1));
    World::iq_result(
        node,
        vec![
            NodeBuilder::new("picture")
                .attr("id", id)
                .attr("type", "image")
                .attr("url", url)
                .attr("direct_path", path)
                .build(),
        ],
    )
}

pub fn handle_iq(w: &mut World, phone: &str, node: &Node) -> Node {
    let first = node
        .children()
        .and_then(|c| c.first())
        .cloned()
        .unwrap_or_default();
    let to = jid_attr(node, "to");
    match first.tag.as_ref() {
        "query" => {
            let Some(g) = to.and_then(|j| w.groups.get(j.user.as_str()).cloned()) else {
                return World::iq_error(node, 404, "item-not-found");
            };
            if !g.participants.iter().any(|(p, _)| p == phone) {
                return World::iq_error(node, 403, "forbidden");
            }
            World::iq_result(node, vec![group_node(&g)])
        }
        "participating" => {
            let groups: Vec<Node> = w
                .groups
                .values()
                .filter(|g| g.participants.iter().any(|(p, _)| p == phone))
                .map(group_node)
                .collect();
            World::iq_result(
                node,
                vec![NodeBuilder::new("groups").children(groups).build()],
            )
        }
        "create" => {
            let subject = attr(&first, "subject").unwrap_or_default();
            let members: Vec<String> = first
                .get_children_by_tag("participant")
                .filter_map(|p| jid_attr(p, "jid"))
                .filter_map(|j| w.phone_of(&j))
                .collect();
            let g = create(w, phone, &subject, &members);
            World::iq_result(node, vec![group_node(&g)])
        }
        tag @ ("add" | "remove") => {
            let Some(group) = to.map(|j| j.user.to_string()) else {
                return World::iq_error(node, 400, "bad-request");
            };
            // As WhatsApp: only admins add or remove others.
            match w.groups.get(&group) {
                None => return World::iq_error(node, 404, "item-not-found"),
                Some(g) if !is_admin(g, phone) => return World::iq_error(node, 403, "forbidden"),
                Some(_) => {}
            }
            let members: Vec<String> = first
                .get_children_by_tag("participant")
                .filter_map(|p| jid_attr(p, "jid"))
                .filter_map(|j| w.phone_of(&j))
                .collect();
            match change_members(w, &group, phone, &members, tag == "add") {
                Ok(()) => World::iq_result(node, vec![participants_node(tag, &members)]),
                Err(_) => World::iq_error(node, 404, "item-not-found"),
            }
        }
        "leave" => {
            let groups: Vec<String> = first
                .get_children_by_tag("group")
                .filter_map(|g| attr(g, "id"))
                .map(|id| id.trim_end_matches("@g.us").to_owned())
                .collect();
            for g in groups {
                let _ = change_members(w, &g, phone, &[phone.to_owned()], false);
            }
            World::iq_result(node, vec![])
        }
        "description" => {
            let Some(group) = to.map(|j| j.user.to_string()) else {
                return World::iq_error(node, 400, "bad-request");
            };
            let text = first
                .get_optional_child("body")
                .and_then(|b| b.content_as_string())
                .map(|s| s.to_string());
            let text = if attr(&first, "delete").as_deref() == Some("true") {
                None
            } else {
                text
            };
            match set_description(w, &group, phone, text.as_deref()) {
                Ok(()) => World::iq_result(node, vec![]),
                Err(_) => World::iq_error(node, 403, "forbidden"),
            }
        }
        tag @ ("ephemeral" | "not_ephemeral") => {
            let Some(group) = to.map(|j| j.user.to_string()) else {
                return World::iq_error(node, 400, "bad-request");
            };
            let seconds = if tag == "ephemeral" {
                match attr(&first, "expiration").and_then(|e| e.parse::<u32>().ok()) {
                    Some(s) => s,
                    None => return World::iq_error(node, 400, "bad-request"),
                }
            } else {
                0
            };
            match set_ephemeral(w, &group, phone, seconds) {
                Ok(()) => World::iq_result(node, vec![]),
                Err(_) => World::iq_error(node, 403, "forbidden"),
            }
        }
        "subject" => {
            let Some(group) = to.map(|j| j.user.to_string()) else {
                return World::iq_error(node, 400, "bad-request");
            };
            match editable_group(w, &group, phone) {
                Ok(g) => {
                    g.subject = first
                        .content_as_string()
                        .map(|s| s.to_string())
                        .unwrap_or_default();
                    World::iq_result(node, vec![])
                }
                Err(_) => World::iq_error(node, 403, "forbidden"),
            }
        }
        _ => World::iq_result(node, vec![]),
    }
}
