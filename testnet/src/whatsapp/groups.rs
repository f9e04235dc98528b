//! Groups (`w:g2`): metadata queries, the list of groups a user is in, creation, and member
//! changes, which every member's devices learn through `<notification type="w:gp2">`.
//! Groups use phone-number addressing (`addressing_mode="pn"`).

use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;

use super::world::{Group, World, attr, jid_attr, now};

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
    NodeBuilder::new("group")
        .attr("id", g.id.clone())
        .attr("subject", g.subject.clone())
        .attr("s_t", g.created.to_string())
        .attr("s_o", format!("{}@s.whatsapp.net", g.creator))
        .attr("creation", g.created.to_string())
        .attr("creator", format!("{}@s.whatsapp.net", g.creator))
        .attr("addressing_mode", "pn")
        .attr("size", g.participants.len().to_string())
        .children(participants)
        .build()
}

pub fn create(w: &mut World, creator: &str, subject: &str, members: &[String]) -> Group {
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
    };
    w.groups.insert(id, g.clone());
    // Every member learns about the new group.
    let note = notification(
        w,
        &g,
        creator,
        NodeBuilder::new("create")
            .children([group_node(&g)])
            .build(),
    );
    for (p, _) in &g.participants {
        w.deliver_all(p, None, &note);
    }
    g
}

fn notification(w: &mut World, g: &Group, author: &str, body: Node) -> Node {
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
    let g = w
        .groups
        .get_mut(group)
        .ok_or_else(|| format!("no group {group}"))?;
    if !g.participants.iter().any(|(p, _)| p == author) {
        return Err(format!("{author} is not a member of {group}"));
    }
    g.subject = subject.to_owned();
    let g = g.clone();
    let body = NodeBuilder::new("subject")
        .attr("subject", subject)
        .attr("s_o", format!("{author}@s.whatsapp.net"))
        .attr("s_t", now().to_string())
        .build();
    let note = notification(w, &g, author, body);
    for (p, _) in &g.participants {
        w.deliver_all(p, None, &note);
    }
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
    let tag = if add { "add" } else { "remove" };
    let body = NodeBuilder::new(tag)
        .children(members.iter().map(|m| {
            NodeBuilder::new("participant")
                .attr("jid", format!("{m}@s.whatsapp.net"))
                .build()
        }))
        .build();
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
            let members: Vec<String> = first
                .get_children_by_tag("participant")
                .filter_map(|p| jid_attr(p, "jid"))
                .filter_map(|j| w.phone_of(&j))
                .collect();
            match change_members(w, &group, phone, &members, tag == "add") {
                Ok(()) => World::iq_result(
                    node,
                    vec![
                        NodeBuilder::new_dynamic(tag.to_owned())
                            .children(members.iter().map(|m| {
                                NodeBuilder::new("participant")
                                    .attr("jid", format!("{m}@s.whatsapp.net"))
                                    .build()
                            }))
                            .build(),
                    ],
                ),
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
        "subject" => {
            if let Some(g) = to.and_then(|j| w.groups.get_mut(j.user.as_str())) {
                g.subject = first
                    .content_as_string()
                    .map(|s| s.to_string())
                    .unwrap_or_default();
            }
            World::iq_result(node, vec![])
        }
        _ => World::iq_result(node, vec![]),
    }
}
