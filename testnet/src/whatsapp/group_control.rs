//! Control API for groups and communities beyond creation (`control.rs`): a member sets the
//! description, the picture or the disappearing timer; an admin promotes or demotes, or keeps
//! the details or the sending to admins; a member leaves; a community is created, gets a new
//! or an existing group linked, or has one unlinked; and a group's full state as the server
//! holds it, for tests to check what ferry changed.

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::routing::{get, post};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;

use super::community;
use super::control::{App, Reply, bad, world};
use super::groups;
use super::world::normalize_phone;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/control/groups/description", post(description))
        .route("/control/groups/picture", post(picture))
        .route("/control/groups/admins", post(admins))
        .route("/control/groups/leave", post(leave))
        .route("/control/groups/ephemeral", post(ephemeral))
        .route("/control/groups/announce", post(announce))
        .route("/control/groups/locked", post(locked))
        .route("/control/groups/details", get(details))
        .route("/control/communities", post(create_community))
        .route("/control/communities/groups", post(link_group))
        .route("/control/communities/unlink", post(unlink_group))
}

fn group_id(s: &str) -> String {
    s.trim_end_matches("@g.us").to_owned()
}

fn phone(s: &str) -> Result<String, (axum::http::StatusCode, Json<serde_json::Value>)> {
    normalize_phone(s).ok_or_else(|| bad(format!("bad phone {s}")))
}

fn phones(v: &[String]) -> Result<Vec<String>, (axum::http::StatusCode, Json<serde_json::Value>)> {
    v.iter().map(|p| phone(p)).collect()
}

#[derive(Deserialize)]
struct DescriptionReq {
    group: String,
    author: String,
    /// `null` or empty: delete it.
    #[serde(default)]
    description: Option<String>,
}

async fn description(State(app): State<App>, Json(req): Json<DescriptionReq>) -> Reply {
    let author = phone(&req.author)?;
    let mut w = world(&app)?;
    groups::set_description(
        &mut w,
        &group_id(&req.group),
        &author,
        req.description.as_deref(),
    )
    .map_err(bad)?;
    Ok(Json(json!({ "description": req.description })))
}

#[derive(Deserialize)]
struct EphemeralReq {
    group: String,
    author: String,
    /// The timer in seconds; 0 turns it off.
    seconds: u32,
}

async fn ephemeral(State(app): State<App>, Json(req): Json<EphemeralReq>) -> Reply {
    let author = phone(&req.author)?;
    let mut w = world(&app)?;
    groups::set_ephemeral(&mut w, &group_id(&req.group), &author, req.seconds).map_err(bad)?;
    Ok(Json(json!({ "seconds": req.seconds })))
}

/// An admin switches one of a group's admin-only settings on or off.
#[derive(Deserialize)]
struct SettingReq {
    group: String,
    author: String,
    on: bool,
}

/// Only admins send (`on`) or everyone.
async fn announce(State(app): State<App>, Json(req): Json<SettingReq>) -> Reply {
    let author = phone(&req.author)?;
    let mut w = world(&app)?;
    groups::set_announce(&mut w, &group_id(&req.group), &author, req.on).map_err(bad)?;
    Ok(Json(json!({ "announce": req.on })))
}

/// Only admins edit the group's details (`on`) or every member.
async fn locked(State(app): State<App>, Json(req): Json<SettingReq>) -> Reply {
    let author = phone(&req.author)?;
    let mut w = world(&app)?;
    groups::set_locked(&mut w, &group_id(&req.group), &author, req.on).map_err(bad)?;
    Ok(Json(json!({ "locked": req.on })))
}

#[derive(Deserialize)]
struct PictureReq {
    group: String,
    author: String,
    /// The image, base64; `null`: remove the picture.
    #[serde(default)]
    image: Option<String>,
}

async fn picture(State(app): State<App>, Json(req): Json<PictureReq>) -> Reply {
    let author = phone(&req.author)?;
    let image = match &req.image {
        Some(b) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| bad(format!("image is not base64: {e}")))?,
        ),
        None => None,
    };
    let mut w = world(&app)?;
    let id = groups::set_picture(&mut w, &group_id(&req.group), &author, image).map_err(bad)?;
    Ok(Json(json!({ "picture": id })))
}

#[derive(Deserialize)]
struct AdminsReq {
    group: String,
    author: String,
    #[serde(default)]
    promote: Vec<String>,
    #[serde(default)]
    demote: Vec<String>,
}

async fn admins(State(app): State<App>, Json(req): Json<AdminsReq>) -> Reply {
    let author = phone(&req.author)?;
    let (promote, demote) = (phones(&req.promote)?, phones(&req.demote)?);
    let group = group_id(&req.group);
    let mut w = world(&app)?;
    if !promote.is_empty() {
        groups::set_admins(&mut w, &group, &author, &promote, true).map_err(bad)?;
    }
    if !demote.is_empty() {
        groups::set_admins(&mut w, &group, &author, &demote, false).map_err(bad)?;
    }
    Ok(Json(json!({ "ok": true })))
}

#[derive(Deserialize)]
struct LeaveReq {
    group: String,
    member: String,
}

/// A member leaves by themselves (the `<remove>` notification with them as its author).
async fn leave(State(app): State<App>, Json(req): Json<LeaveReq>) -> Reply {
    let member = phone(&req.member)?;
    let group = group_id(&req.group);
    let mut w = world(&app)?;
    if !w
        .groups
        .get(&group)
        .is_some_and(|g| g.participants.iter().any(|(p, _)| *p == member))
    {
        return Err(bad(format!("{member} is not in {group}")));
    }
    groups::change_members(
        &mut w,
        &group,
        &member,
        std::slice::from_ref(&member),
        false,
    )
    .map_err(bad)?;
    Ok(Json(json!({ "ok": true })))
}

#[derive(Deserialize)]
struct GroupQuery {
    id: String,
}

/// Everything the server holds about a group, the picture's bytes (base64) included.
async fn details(State(app): State<App>, Query(q): Query<GroupQuery>) -> Reply {
    let w = world(&app)?;
    let id = group_id(&q.id);
    let g = w
        .groups
        .get(&id)
        .ok_or_else(|| bad(format!("no group {id}")))?;
    let picture = g.meta.picture.as_ref().map(|p| {
        let bytes = w.media.get(&groups::picture_path(&id, p));
        json!({
            "id": p,
            "image": bytes.map(|b| base64::engine::general_purpose::STANDARD.encode(b)),
        })
    });
    Ok(Json(json!({
        "id": g.id,
        "subject": g.subject,
        "description": g.meta.description.as_ref().map(|(_, t)| t.clone()),
        "picture": picture,
        "members": g.participants.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
        "admins": g.participants.iter().filter(|(_, a)| *a).map(|(p, _)| p.clone()).collect::<Vec<_>>(),
        "community": g.meta.parent,
        "linked_parent": g.meta.linked_parent,
        "announcement_group": g.meta.default_sub_group,
        "announce": g.meta.announce,
        "locked": g.meta.locked,
        "ephemeral": g.meta.ephemeral,
    })))
}

#[derive(Deserialize)]
struct LinkedReq {
    subject: String,
    members: Vec<String>,
}

#[derive(Deserialize)]
struct CommunityReq {
    subject: String,
    creator: String,
    members: Vec<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    groups: Vec<LinkedReq>,
}

async fn create_community(State(app): State<App>, Json(req): Json<CommunityReq>) -> Reply {
    let creator = phone(&req.creator)?;
    let members = phones(&req.members)?;
    let mut linked = Vec::new();
    for g in &req.groups {
        linked.push((g.subject.clone(), phones(&g.members)?));
    }
    let mut w = world(&app)?;
    for p in members
        .iter()
        .chain(linked.iter().flat_map(|(_, m)| m))
        .chain([&creator])
    {
        if !w.accounts.contains_key(p) {
            return Err(bad(format!("no account {p}")));
        }
    }
    let c = community::create(
        &mut w,
        &creator,
        &req.subject,
        req.description.as_deref(),
        &members,
        &linked,
    );
    Ok(Json(json!({
        "id": c.community.id,
        "announcement": c.announcement.id,
        "groups": c.linked.iter().map(|g| g.id.clone()).collect::<Vec<_>>(),
    })))
}

/// Links a group to a community: an existing one (`group`) or a new one (`subject`,
/// `members`).
#[derive(Deserialize)]
struct LinkReq {
    community: String,
    author: String,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    members: Vec<String>,
}

async fn link_group(State(app): State<App>, Json(req): Json<LinkReq>) -> Reply {
    let author = phone(&req.author)?;
    let community = group_id(&req.community);
    if let Some(group) = &req.group {
        let group = group_id(group);
        let mut w = world(&app)?;
        community::set_linked(&mut w, &community, &author, &group, true).map_err(bad)?;
        return Ok(Json(json!({ "id": group })));
    }
    let subject = req
        .subject
        .as_deref()
        .ok_or_else(|| bad("a new group needs `subject` (or name an existing `group`)"))?;
    let members = phones(&req.members)?;
    let mut w = world(&app)?;
    let g = community::add_linked(&mut w, &community, &author, subject, &members).map_err(bad)?;
    Ok(Json(json!({ "id": g.id })))
}

#[derive(Deserialize)]
struct UnlinkReq {
    community: String,
    author: String,
    group: String,
}

async fn unlink_group(State(app): State<App>, Json(req): Json<UnlinkReq>) -> Reply {
    let author = phone(&req.author)?;
    let mut w = world(&app)?;
    community::set_linked(
        &mut w,
        &group_id(&req.community),
        &author,
        &group_id(&req.group),
        false,
    )
    .map_err(bad)?;
    Ok(Json(json!({ "unlinked": true })))
}
