//! The control API (HTTP JSON under `/control`): tests create accounts and chats, act as the
//! other Telegram users, inject flood waits, play the phone scanning a QR login token, read what
//! the bridged account sent, and drop connections. Documented in `testnet/TELEGRAM_PROTOCOL.md`.

use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use grammers_tl_types::{enums, types};
use serde::Deserialize;
use serde_json::{Value, json};

use super::crypto::SrpVerifier;
use super::state::{Content, FloodRule, PeerKey, RpcErr, World, access_hash, normalize_phone};

type Shared = Arc<Mutex<World>>;
type Reply = Result<Json<Value>, (StatusCode, Json<Value>)>;

fn fail(status: StatusCode, message: impl Into<String>) -> (StatusCode, Json<Value>) {
    (status, Json(json!({ "error": message.into() })))
}

fn rpc(e: RpcErr) -> (StatusCode, Json<Value>) {
    fail(StatusCode::BAD_REQUEST, e.message)
}

fn world(shared: &Shared) -> Result<std::sync::MutexGuard<'_, World>, (StatusCode, Json<Value>)> {
    shared
        .lock()
        .map_err(|_| fail(StatusCode::INTERNAL_SERVER_ERROR, "world lock poisoned"))
}

pub fn routes(world: Shared) -> Router {
    Router::new()
        .route("/control/auth_keys", post(add_key))
        .route("/control/users", post(create_user))
        .route("/control/chats", post(create_chat))
        .route("/control/channels", post(create_channel))
        .route("/control/topics", post(create_topic))
        .route("/control/send", post(send))
        .route("/control/edit", post(edit))
        .route("/control/delete", post(delete))
        .route("/control/react", post(react))
        .route("/control/read", post(read))
        .route("/control/typing", post(typing))
        .route("/control/status", post(status))
        .route("/control/bot_stopped", post(bot_stopped))
        .route("/control/vote", post(vote))
        .route("/control/service", post(service))
        .route("/control/about", post(about))
        .route("/control/chat", get(chat_details))
        .route("/control/flood", post(flood))
        .route("/control/login_tokens/scan", post(scan))
        .route("/control/sent", get(sent))
        .route("/control/messages", get(messages))
        .route("/control/drop", post(drop_connections))
        .route(
            "/control/expire_file_references",
            post(expire_file_references),
        )
        .with_state(world)
}

#[derive(Deserialize)]
struct KeyReq {
    /// The 256-byte auth key, hex.
    key: String,
}

async fn add_key(State(s): State<Shared>, Json(req): Json<KeyReq>) -> Reply {
    let bytes: Vec<u8> = (0..req.key.len())
        .step_by(2)
        .filter_map(|i| {
            req.key
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    let key: [u8; 256] = bytes
        .try_into()
        .map_err(|_| fail(StatusCode::BAD_REQUEST, "key must be 256 bytes of hex"))?;
    let id = world(&s)?.add_key(key);
    Ok(Json(json!({ "key_id": id })))
}

#[derive(Deserialize)]
struct UserReq {
    first_name: String,
    last_name: Option<String>,
    username: Option<String>,
    phone: Option<String>,
    /// The login code auth.sendCode "delivers" for this phone (default 12345).
    code: Option<String>,
    /// A 2FA password (makes auth.signIn answer SESSION_PASSWORD_NEEDED).
    password: Option<String>,
    hint: Option<String>,
    /// Makes the account a bot that logs in with this token.
    bot_token: Option<String>,
}

async fn create_user(State(s): State<Shared>, Json(req): Json<UserReq>) -> Reply {
    // PBKDF2 with 100000 rounds: not on the async workers.
    let password = match req.password.clone() {
        Some(p) => Some(
            tokio::task::spawn_blocking(move || SrpVerifier::new(&p))
                .await
                .map_err(|_| fail(StatusCode::INTERNAL_SERVER_ERROR, "password setup failed"))?,
        ),
        None => None,
    };
    let mut w = world(&s)?;
    let id = w
        .create_user(
            &req.first_name,
            req.last_name.as_deref(),
            req.username.as_deref(),
            req.phone.as_deref(),
            req.bot_token.is_some(),
            password,
            req.hint.clone(),
        )
        .map_err(rpc)?;
    if let Some(phone) = &req.phone {
        w.login_codes.insert(
            normalize_phone(phone),
            req.code.clone().unwrap_or_else(|| "12345".into()),
        );
    }
    if let Some(token) = req.bot_token {
        w.bot_tokens.insert(token, id);
    }
    Ok(Json(json!({ "id": id, "access_hash": access_hash(id) })))
}

#[derive(Deserialize)]
struct ChatReq {
    creator: i64,
    title: String,
    #[serde(default)]
    members: Vec<i64>,
    #[serde(default)]
    admins: Vec<i64>,
    /// The group's description.
    #[serde(default)]
    about: String,
    /// The group's photo: base64 image bytes.
    photo: Option<String>,
}

async fn create_chat(State(s): State<Shared>, Json(req): Json<ChatReq>) -> Reply {
    let photo = req.photo.as_deref().map(|p| b64(p, "photo")).transpose()?;
    let mut w = world(&s)?;
    let id = w
        .create_chat(req.creator, &req.title, &req.members, &req.admins)
        .map_err(rpc)?;
    let photo = photo.map(|bytes| photo_id(w.add_chat_photo(bytes)));
    if let Some(chat) = w.chats.get_mut(&id) {
        chat.about = req.about;
        chat.photo = photo;
    }
    Ok(Json(json!({ "id": id })))
}

fn photo_id(photo: enums::Photo) -> i64 {
    match photo {
        enums::Photo::Photo(p) => p.id,
        enums::Photo::Empty(p) => p.id,
    }
}

#[derive(Deserialize)]
struct ChannelReq {
    creator: i64,
    title: String,
    username: Option<String>,
    /// A broadcast channel (true) or a supergroup (false).
    #[serde(default)]
    broadcast: bool,
    #[serde(default)]
    forum: bool,
    #[serde(default)]
    members: Vec<i64>,
    #[serde(default)]
    admins: Vec<i64>,
    /// The channel's description.
    #[serde(default)]
    about: String,
    /// The channel's photo: base64 image bytes.
    photo: Option<String>,
}

async fn create_channel(State(s): State<Shared>, Json(req): Json<ChannelReq>) -> Reply {
    let photo = req.photo.as_deref().map(|p| b64(p, "photo")).transpose()?;
    let mut w = world(&s)?;
    let id = w
        .create_channel(
            req.creator,
            &req.title,
            req.username.as_deref(),
            req.broadcast,
            req.forum,
            &req.members,
            &req.admins,
        )
        .map_err(rpc)?;
    let photo = photo.map(|bytes| photo_id(w.add_chat_photo(bytes)));
    if let Some(channel) = w.channels.get_mut(&id) {
        channel.about = req.about;
        channel.photo = photo;
    }
    Ok(Json(json!({ "id": id, "access_hash": access_hash(id) })))
}

#[derive(Deserialize)]
struct TopicReq {
    channel: i64,
    from: i64,
    title: String,
}

async fn create_topic(State(s): State<Shared>, Json(req): Json<TopicReq>) -> Reply {
    let id = world(&s)?
        .create_topic(req.channel, req.from, &req.title)
        .map_err(rpc)?;
    Ok(Json(json!({ "id": id })))
}

/// A chat as the acting user names it: `{"type":"user","id":N}` (the other user), `chat`, `channel`.
type PeerSpec = PeerKey;

#[derive(Deserialize)]
struct EntitySpec {
    r#type: String,
    offset: i32,
    length: i32,
    url: Option<String>,
    language: Option<String>,
    user_id: Option<i64>,
    document_id: Option<i64>,
}

fn entity(e: EntitySpec) -> Result<enums::MessageEntity, (StatusCode, Json<Value>)> {
    use enums::MessageEntity as E;
    let (offset, length) = (e.offset, e.length);
    Ok(match e.r#type.as_str() {
        "bold" => E::Bold(types::MessageEntityBold { offset, length }),
        "italic" => E::Italic(types::MessageEntityItalic { offset, length }),
        "underline" => E::Underline(types::MessageEntityUnderline { offset, length }),
        "strike" => E::Strike(types::MessageEntityStrike { offset, length }),
        "spoiler" => E::Spoiler(types::MessageEntitySpoiler { offset, length }),
        "code" => E::Code(types::MessageEntityCode { offset, length }),
        "pre" => E::Pre(types::MessageEntityPre {
            offset,
            length,
            language: e.language.unwrap_or_default(),
        }),
        "text_url" => E::TextUrl(types::MessageEntityTextUrl {
            offset,
            length,
            url: e.url.unwrap_or_default(),
        }),
        "url" => E::Url(types::MessageEntityUrl { offset, length }),
        "mention" => E::Mention(types::MessageEntityMention { offset, length }),
        "mention_name" => E::MentionName(types::MessageEntityMentionName {
            offset,
            length,
            user_id: e.user_id.unwrap_or_default(),
        }),
        "custom_emoji" => E::CustomEmoji(types::MessageEntityCustomEmoji {
            offset,
            length,
            document_id: e.document_id.unwrap_or_default(),
        }),
        "blockquote" => E::Blockquote(types::MessageEntityBlockquote {
            collapsed: false,
            offset,
            length,
        }),
        other => {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                format!("unknown entity {other}"),
            ));
        }
    })
}

#[derive(Deserialize)]
struct MediaSpec {
    /// `document`, `photo`, `sticker`, `animated_sticker` (Lottie, with `thumb`),
    /// `video_sticker`, `gif`, `voice`, `audio`, `video`, `geo`, `contact` or `poll`.
    kind: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    mime_type: String,
    /// The file's bytes, base64 (file kinds only).
    #[serde(default)]
    data: String,
    /// A still thumbnail, base64 (`animated_sticker`).
    thumb: Option<String>,
    /// A sticker's emoji.
    #[serde(default)]
    emoji: String,
    /// Seconds (voice, audio, video, gif).
    #[serde(default)]
    duration: f64,
    #[serde(default)]
    w: i32,
    #[serde(default)]
    h: i32,
    /// Voice waveform as packed 5-bit samples, base64.
    waveform: Option<String>,
    #[serde(default)]
    lat: f64,
    #[serde(default)]
    long: f64,
    #[serde(default)]
    phone: String,
    #[serde(default)]
    first_name: String,
    #[serde(default)]
    last_name: String,
    #[serde(default)]
    question: String,
    #[serde(default)]
    answers: Vec<String>,
    /// Votes per answer (same order), shown as the poll's results.
    #[serde(default)]
    votes: Vec<i32>,
}

fn b64(data: &str, what: &str) -> Result<Vec<u8>, (StatusCode, Json<Value>)> {
    base64::engine::general_purpose::STANDARD
        .decode(data.as_bytes())
        .map_err(|_| fail(StatusCode::BAD_REQUEST, format!("{what} is not base64")))
}

fn text_tl(text: &str) -> enums::TextWithEntities {
    enums::TextWithEntities::Entities(types::TextWithEntities {
        text: text.to_owned(),
        entities: Vec::new(),
    })
}

/// The MessageMedia a control `send` carries.
fn media_tl(w: &mut World, m: MediaSpec) -> Result<enums::MessageMedia, (StatusCode, Json<Value>)> {
    let video_attr = |nosound| {
        enums::DocumentAttribute::Video(types::DocumentAttributeVideo {
            round_message: false,
            supports_streaming: true,
            nosound,
            duration: m.duration,
            w: m.w,
            h: m.h,
            preload_prefix_size: None,
            video_start_ts: None,
            video_codec: None,
        })
    };
    let sticker_attr = enums::DocumentAttribute::Sticker(types::DocumentAttributeSticker {
        mask: false,
        alt: m.emoji.clone(),
        stickerset: enums::InputStickerSet::Empty,
        mask_coords: None,
    });
    let (mime, attributes, voice): (&str, Vec<enums::DocumentAttribute>, bool) =
        match m.kind.as_str() {
            "photo" => ("image/jpeg", Vec::new(), false),
            "document" => ("application/octet-stream", Vec::new(), false),
            "sticker" => (
                "image/webp",
                vec![
                    sticker_attr,
                    enums::DocumentAttribute::ImageSize(types::DocumentAttributeImageSize {
                        w: m.w.max(1),
                        h: m.h.max(1),
                    }),
                ],
                false,
            ),
            "animated_sticker" => ("application/x-tgsticker", vec![sticker_attr], false),
            "video_sticker" => ("video/webm", vec![sticker_attr, video_attr(true)], false),
            "gif" => (
                "video/mp4",
                vec![enums::DocumentAttribute::Animated, video_attr(true)],
                false,
            ),
            "video" => ("video/mp4", vec![video_attr(false)], false),
            "voice" | "audio" => {
                let waveform = m
                    .waveform
                    .as_deref()
                    .map(|x| b64(x, "waveform"))
                    .transpose()?;
                (
                    if m.kind == "voice" {
                        "audio/ogg"
                    } else {
                        "audio/mpeg"
                    },
                    vec![enums::DocumentAttribute::Audio(
                        types::DocumentAttributeAudio {
                            voice: m.kind == "voice",
                            duration: m.duration as i32,
                            title: None,
                            performer: None,
                            waveform,
                        },
                    )],
                    m.kind == "voice",
                )
            }
            "geo" => {
                return Ok(enums::MessageMedia::Geo(types::MessageMediaGeo {
                    geo: enums::GeoPoint::Point(types::GeoPoint {
                        long: m.long,
                        lat: m.lat,
                        access_hash: 0,
                        accuracy_radius: None,
                    }),
                }));
            }
            "contact" => {
                return Ok(enums::MessageMedia::Contact(types::MessageMediaContact {
                    phone_number: m.phone,
                    first_name: m.first_name,
                    last_name: m.last_name,
                    vcard: String::new(),
                    user_id: 0,
                }));
            }
            "poll" => {
                let answers: Vec<enums::PollAnswer> = m
                    .answers
                    .iter()
                    .enumerate()
                    .map(|(i, a)| {
                        enums::PollAnswer::Answer(types::PollAnswer {
                            text: text_tl(a),
                            option: vec![i as u8],
                            media: None,
                            added_by: None,
                            date: None,
                        })
                    })
                    .collect();
                let results = (!m.votes.is_empty()).then(|| {
                    m.votes
                        .iter()
                        .enumerate()
                        .map(|(i, v)| {
                            enums::PollAnswerVoters::Voters(types::PollAnswerVoters {
                                chosen: false,
                                correct: false,
                                option: vec![i as u8],
                                voters: Some(*v),
                                // Layer 230 puts voters and recent_voters under one flag bit.
                                recent_voters: Some(Vec::new()),
                            })
                        })
                        .collect()
                });
                w.next_file += 1;
                return Ok(enums::MessageMedia::Poll(Box::new(
                    types::MessageMediaPoll {
                        poll: enums::Poll::Poll(types::Poll {
                            id: w.next_file,
                            closed: false,
                            public_voters: false,
                            multiple_choice: false,
                            quiz: false,
                            open_answers: false,
                            revoting_disabled: false,
                            shuffle_answers: false,
                            hide_results_until_close: false,
                            creator: false,
                            subscribers_only: false,
                            question: text_tl(&m.question),
                            answers,
                            close_period: None,
                            close_date: None,
                            countries_iso2: None,
                            hash: 0,
                        }),
                        results: enums::PollResults::Results(Box::new(types::PollResults {
                            min: false,
                            has_unread_votes: false,
                            can_view_stats: false,
                            total_voters: Some(m.votes.iter().sum()),
                            results,
                            recent_voters: None,
                            solution: None,
                            solution_entities: None,
                            solution_media: None,
                        })),
                        attached_media: None,
                    },
                )));
            }
            other => {
                return Err(fail(
                    StatusCode::BAD_REQUEST,
                    format!("unknown media kind {other}"),
                ));
            }
        };
    let data = b64(&m.data, "media.data")?;
    let mime = if m.mime_type.is_empty() {
        mime.to_owned()
    } else {
        m.mime_type.clone()
    };
    let thumb = m
        .thumb
        .as_deref()
        .map(|t| b64(t, "media.thumb"))
        .transpose()?;
    let id = w.add_file(data, mime, m.name.clone());
    let file = w
        .files
        .get_mut(&id)
        .ok_or_else(|| fail(StatusCode::INTERNAL_SERVER_ERROR, "file vanished"))?;
    file.attributes = attributes;
    file.thumb = thumb;
    let file = file.clone();
    Ok(if m.kind == "photo" {
        enums::MessageMedia::Photo(types::MessageMediaPhoto {
            spoiler: false,
            live_photo: false,
            photo: Some(super::methods::messages::photo_tl(id, &file)),
            ttl_seconds: None,
            video: None,
        })
    } else {
        enums::MessageMedia::Document(types::MessageMediaDocument {
            nopremium: false,
            spoiler: false,
            video: m.kind == "video",
            round: false,
            voice,
            document: Some(super::methods::messages::document_tl(id, &file)),
            alt_documents: None,
            video_cover: None,
            video_timestamp: None,
            ttl_seconds: None,
        })
    })
}

#[derive(Deserialize)]
struct SendReq {
    from: i64,
    peer: PeerSpec,
    #[serde(default)]
    text: String,
    #[serde(default)]
    entities: Vec<EntitySpec>,
    reply_to: Option<i32>,
    top_id: Option<i32>,
    media: Option<MediaSpec>,
}

async fn send(State(s): State<Shared>, Json(req): Json<SendReq>) -> Reply {
    let entities = req
        .entities
        .into_iter()
        .map(entity)
        .collect::<Result<Vec<_>, _>>()?;
    let mut w = world(&s)?;
    let media = req.media.map(|m| media_tl(&mut w, m)).transpose()?;
    if req.text.is_empty() && media.is_none() {
        return Err(fail(StatusCode::BAD_REQUEST, "text or media is required"));
    }
    let sent = w
        .send(
            req.from,
            req.peer,
            Content {
                text: req.text,
                entities,
                reply_to: req.reply_to,
                top_id: req.top_id,
                media,
                action: None,
            },
            None,
        )
        .map_err(rpc)?;
    let copies: Vec<Value> = sent
        .copies
        .iter()
        .map(|(owner, id)| json!({ "owner": owner, "id": id }))
        .collect();
    Ok(Json(
        json!({ "id": sent.sender_id, "pts": sent.pts, "copies": copies }),
    ))
}

#[derive(Deserialize)]
struct EditReq {
    from: i64,
    peer: PeerSpec,
    id: i32,
    text: String,
}

async fn edit(State(s): State<Shared>, Json(req): Json<EditReq>) -> Reply {
    world(&s)?
        .edit(req.from, req.peer, req.id, Some(req.text), None, None)
        .map_err(rpc)?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct DeleteReq {
    from: i64,
    peer: PeerSpec,
    ids: Vec<i32>,
}

async fn delete(State(s): State<Shared>, Json(req): Json<DeleteReq>) -> Reply {
    world(&s)?
        .delete(req.from, req.peer, &req.ids, None)
        .map_err(rpc)?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct ReactReq {
    from: i64,
    peer: PeerSpec,
    id: i32,
    /// The emoji, or null to remove the reaction.
    emoji: Option<String>,
}

async fn react(State(s): State<Shared>, Json(req): Json<ReactReq>) -> Reply {
    world(&s)?
        .react(req.from, req.peer, req.id, req.emoji, None)
        .map_err(rpc)?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct ReadReq {
    from: i64,
    peer: PeerSpec,
    max_id: i32,
}

async fn read(State(s): State<Shared>, Json(req): Json<ReadReq>) -> Reply {
    world(&s)?
        .read(req.from, req.peer, req.max_id, None)
        .map_err(rpc)?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct TypingReq {
    from: i64,
    peer: PeerSpec,
    top_id: Option<i32>,
    #[serde(default)]
    cancel: bool,
}

async fn typing(State(s): State<Shared>, Json(req): Json<TypingReq>) -> Reply {
    let action = if req.cancel {
        enums::SendMessageAction::SendMessageCancelAction
    } else {
        enums::SendMessageAction::SendMessageTypingAction
    };
    world(&s)?
        .typing(req.from, req.peer, req.top_id, action, None)
        .map_err(rpc)?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct StatusReq {
    user: i64,
    online: bool,
}

async fn status(State(s): State<Shared>, Json(req): Json<StatusReq>) -> Reply {
    world(&s)?.set_online(req.user, req.online).map_err(rpc)?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct VoteReq {
    from: i64,
    peer: PeerSpec,
    id: i32,
    /// The answer's position, from 0.
    option: u8,
}

async fn vote(State(s): State<Shared>, Json(req): Json<VoteReq>) -> Reply {
    world(&s)?
        .vote(req.from, req.peer, req.id, req.option)
        .map_err(rpc)?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct BotStoppedReq {
    user: i64,
    bot: i64,
    #[serde(default = "yes")]
    stopped: bool,
}

fn yes() -> bool {
    true
}

async fn bot_stopped(State(s): State<Shared>, Json(req): Json<BotStoppedReq>) -> Reply {
    let qts = world(&s)?
        .bot_stopped(req.user, req.bot, req.stopped)
        .map_err(rpc)?;
    Ok(Json(json!({ "qts": qts })))
}

#[derive(Deserialize)]
struct ServiceReq {
    from: i64,
    peer: PeerSpec,
    /// `edit_title` (title), `edit_photo` (photo) / `delete_photo`, `add_user` /
    /// `delete_user` (users), `pin` (reply_to = pinned id).
    action: String,
    title: Option<String>,
    /// base64 image bytes for `edit_photo`.
    photo: Option<String>,
    #[serde(default)]
    users: Vec<i64>,
    reply_to: Option<i32>,
}

async fn service(State(s): State<Shared>, Json(req): Json<ServiceReq>) -> Reply {
    let photo = req.photo.as_deref().map(|p| b64(p, "photo")).transpose()?;
    let mut w = world(&s)?;
    let action = match req.action.as_str() {
        "edit_title" => {
            let title = req.title.clone().unwrap_or_default();
            enums::MessageAction::ChatEditTitle(types::MessageActionChatEditTitle { title })
        }
        "edit_photo" => {
            let Some(bytes) = photo else {
                return Err(fail(StatusCode::BAD_REQUEST, "edit_photo needs a photo"));
            };
            let photo = w.add_chat_photo(bytes);
            enums::MessageAction::ChatEditPhoto(types::MessageActionChatEditPhoto { photo })
        }
        "delete_photo" => enums::MessageAction::ChatDeletePhoto,
        "add_user" => enums::MessageAction::ChatAddUser(types::MessageActionChatAddUser {
            users: req.users.clone(),
        }),
        "delete_user" => {
            let user_id = req.users.first().copied().unwrap_or(req.from);
            enums::MessageAction::ChatDeleteUser(types::MessageActionChatDeleteUser { user_id })
        }
        "pin" => enums::MessageAction::PinMessage,
        other => {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                format!("unknown action {other}"),
            ));
        }
    };
    let sent = w
        .chat_action(req.from, req.peer, action, req.reply_to, None)
        .map_err(rpc)?;
    Ok(Json(json!({ "id": sent.sender_id })))
}

#[derive(Deserialize)]
struct AboutReq {
    peer: PeerSpec,
    about: String,
}

/// A new description: members' clients get `updateChat` / `updateChannel`.
async fn about(State(s): State<Shared>, Json(req): Json<AboutReq>) -> Reply {
    world(&s)?
        .set_about(req.peer, &req.about, None)
        .map_err(rpc)?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct ChatQuery {
    /// `chat` or `channel`.
    r#type: String,
    id: i64,
}

/// A group's details as its members see them: title, about, photo (base64), members, admins.
async fn chat_details(State(s): State<Shared>, Query(q): Query<ChatQuery>) -> Reply {
    let w = world(&s)?;
    let (title, about, photo, members, admins): (_, _, _, Vec<i64>, Vec<i64>) =
        match q.r#type.as_str() {
            "chat" => {
                let c = w
                    .chats
                    .get(&q.id)
                    .ok_or_else(|| rpc(RpcErr::bad("CHAT_ID_INVALID")))?;
                let mut admins: Vec<i64> = c.admins.iter().copied().collect();
                admins.push(c.creator);
                (
                    c.title.clone(),
                    c.about.clone(),
                    c.photo,
                    c.members.clone(),
                    admins,
                )
            }
            "channel" => {
                let c = w.channel(q.id).map_err(rpc)?;
                let members = c.members.iter().copied().collect();
                let admins = c.admins.iter().copied().collect();
                (c.title.clone(), c.about.clone(), c.photo, members, admins)
            }
            other => {
                return Err(fail(
                    StatusCode::BAD_REQUEST,
                    format!("unknown type {other}"),
                ));
            }
        };
    let photo = photo
        .and_then(|id| w.files.get(&id))
        .map(|f| base64::engine::general_purpose::STANDARD.encode(&f.bytes));
    Ok(Json(json!({
        "title": title, "about": about, "photo": photo, "members": members, "admins": admins,
    })))
}

#[derive(Deserialize)]
struct FloodReq {
    /// TL method name, e.g. `messages.sendMessage`.
    method: String,
    #[serde(default = "one")]
    count: u32,
    seconds: i32,
}

fn one() -> u32 {
    1
}

async fn flood(State(s): State<Shared>, Json(req): Json<FloodReq>) -> Reply {
    world(&s)?.floods.push(FloodRule {
        method: req.method,
        remaining: req.count,
        seconds: req.seconds,
    });
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct ScanReq {
    /// The token as in `tg://login?token=` (base64url, no padding).
    token: String,
    user: i64,
}

async fn scan(State(s): State<Shared>, Json(req): Json<ScanReq>) -> Reply {
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(req.token.trim_end_matches('=').as_bytes())
        .map_err(|_| fail(StatusCode::BAD_REQUEST, "token is not base64url"))?;
    let mut w = world(&s)?;
    super::methods::accept_login_token(&mut w, req.user, &token, None).map_err(rpc)?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct SentQuery {
    from: Option<i64>,
}

async fn sent(State(s): State<Shared>, Query(q): Query<SentQuery>) -> Reply {
    let w = world(&s)?;
    let list: Vec<&super::state::SentRecord> = w
        .sent
        .iter()
        .filter(|r| q.from.is_none_or(|f| r.from == f))
        .collect();
    Ok(Json(json!(list)))
}

#[derive(Deserialize)]
struct MessagesQuery {
    /// Whose view (for private chats and basic groups: the box owner).
    owner: i64,
    peer_type: String,
    peer_id: i64,
}

async fn messages(State(s): State<Shared>, Query(q): Query<MessagesQuery>) -> Reply {
    let peer = match q.peer_type.as_str() {
        "user" => PeerKey::User(q.peer_id),
        "chat" => PeerKey::Chat(q.peer_id),
        "channel" => PeerKey::Channel(q.peer_id),
        other => {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                format!("unknown peer_type {other}"),
            ));
        }
    };
    let w = world(&s)?;
    let store = match peer {
        PeerKey::Channel(c) => &w.channel(c).map_err(rpc)?.mbox.messages,
        _ => &w.user(q.owner).map_err(rpc)?.mbox.messages,
    };
    let list: Vec<Value> = store
        .values()
        .filter(|m| m.peer == peer)
        .map(|m| {
            json!({
                "id": m.id,
                "from": m.from,
                "text": m.text,
                "out": m.out,
                "reply_to": m.reply_to,
                "top_id": m.top_id,
                "edited": m.edit_date.is_some(),
                "service": m.action.is_some(),
                "media": m.media.is_some(),
                "reactions": m.reactions.iter().map(|(u, e)| json!({"user": u, "emoji": e})).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!(list)))
}

#[derive(Deserialize)]
struct DropReq {
    user: Option<i64>,
}

async fn drop_connections(State(s): State<Shared>, Json(req): Json<DropReq>) -> Reply {
    let n = world(&s)?.drop_connections(req.user);
    Ok(Json(json!({ "dropped": n })))
}

#[derive(Deserialize, Default)]
struct ExpireReq {
    /// Expire at the next download instead of now (the reference ages after the message
    /// arrived, before it is downloaded).
    #[serde(default)]
    on_next_download: bool,
}

async fn expire_file_references(State(s): State<Shared>, body: Option<Json<ExpireReq>>) -> Reply {
    let req = body.map(|Json(b)| b).unwrap_or_default();
    let mut w = world(&s)?;
    if req.on_next_download {
        w.expire_on_download = true;
        return Ok(Json(json!({ "files": 0 })));
    }
    let n = w.expire_file_references();
    Ok(Json(json!({ "files": n })))
}
