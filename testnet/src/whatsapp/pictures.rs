//! Profile pictures: `POST /control/picture` sets (or removes) a contact's picture, served from
//! the media host as WhatsApp's picture CDN would (plain bytes at a URL, no encryption); the
//! `w:profile:picture` `<iq type="get">` answers with the picture's id and URL (or a 404 error
//! when there is none); and every device of every other account gets a
//! `<notification type="picture">` with `<set jid id>` (or `<delete jid>`), as WhatsApp tells
//! the contacts of someone who changes their picture.

use axum::Json;
use axum::extract::State;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;
use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Jid, Node};

use super::control::{App, Reply, bad, world};
use super::world::{World, attr, normalize_phone, now};

#[derive(Deserialize)]
pub struct PictureReq {
    phone: String,
    /// The image bytes; absent or null removes the picture.
    #[serde(default)]
    data_base64: Option<String>,
}

pub async fn set(State(app): State<App>, Json(req): Json<PictureReq>) -> Reply {
    let phone = normalize_phone(&req.phone).ok_or_else(|| bad("bad phone"))?;
    let data = req
        .data_base64
        .as_deref()
        .map(|d| base64::engine::general_purpose::STANDARD.decode(d))
        .transpose()
        .map_err(|_| bad("data_base64 is not base64"))?;
    let mut w = world(&app)?;
    if !w.accounts.contains_key(&phone) {
        return Err(bad("no such account"));
    }
    let jid = format!("{phone}@s.whatsapp.net");
    let (change, picture_id) = match data {
        Some(data) => {
            let id = (1_700_000_000 + w.next_id()).to_string();
            let path = format!("/v/t61.sim-pp/{phone}-{id}.jpg");
            w.media.insert(path.clone(), data);
            w.pictures.insert(phone.clone(), (id.clone(), path));
            (
                NodeBuilder::new("set")
                    .attr("jid", jid.clone())
                    .attr("id", id.clone())
                    .build(),
                Some(id),
            )
        }
        None => {
            w.pictures.remove(&phone);
            (
                NodeBuilder::new("delete").attr("jid", jid.clone()).build(),
                None,
            )
        }
    };
    let others: Vec<String> = w
        .accounts
        .keys()
        .filter(|p| **p != phone)
        .cloned()
        .collect();
    for other in others {
        let id = w.stanza_id();
        let node = NodeBuilder::new("notification")
            .attr("from", jid.clone())
            .attr("type", "picture")
            .attr("id", id)
            .attr("t", now().to_string())
            .children([change.clone()])
            .build();
        w.deliver_all(&other, None, &node);
    }
    Ok(Json(json!({ "id": picture_id })))
}

/// `<iq xmlns="w:profile:picture" type="get" target=JID><picture type query="url"/></iq>`.
pub fn get(w: &World, node: &Node) -> Node {
    let picture = attr(node, "target")
        .and_then(|t| t.parse::<Jid>().ok())
        .and_then(|j| w.phone_of(&j))
        .and_then(|phone| w.pictures.get(&phone));
    match picture {
        Some((id, path)) => World::iq_result(
            node,
            vec![
                NodeBuilder::new("picture")
                    .attr("id", id.clone())
                    .attr("type", "image")
                    .attr("url", format!("{}{path}", w.media_url))
                    .attr("direct_path", path.clone())
                    .build(),
            ],
        ),
        None => World::iq_result(
            node,
            vec![
                NodeBuilder::new("picture")
                    .children([NodeBuilder::new("error")
                        .attr("code", "404")
                        .attr("text", "item-not-found")
                        .build()])
                    .build(),
            ],
        ),
    }
}
