//! The TL methods the simulator answers, decoded with grammers' own layer-230 types.
//!
//! [`call`] peels the wrappers grammers puts around its first request (`invokeWithLayer`,
//! `initConnection`, ...), applies injected FLOOD_WAITs, checks the key is logged in where Telegram
//! would, and dispatches. Unknown methods get a 400 error naming them, never a crash.

mod admin;
mod auth;
mod chats;
pub(super) mod messages;
mod updates;

pub use auth::accept_login_token;

use std::sync::{Arc, Mutex};

use grammers_tl_types::{self as tl, Deserializable, Identifiable as _, Serializable as _};
use tl::{enums, functions as f, types};

use super::state::{PeerKey, RpcErr, World, access_hash, now};
use super::tl as build;
use super::tl_defaults as d;
use super::wire::constructor_of;

/// Who is calling.
pub struct Ctx {
    pub key_id: i64,
    pub conn_id: u64,
    pub user: Option<i64>,
}

impl Ctx {
    pub fn me(&self) -> Result<i64, RpcErr> {
        self.user
            .ok_or_else(|| RpcErr::new(401, "AUTH_KEY_UNREGISTERED"))
    }
}

/// The unparsed rest of a request (the `query:!X` of wrapper functions).
struct Rest(Vec<u8>);

impl Deserializable for Rest {
    fn deserialize(buf: &mut tl::Cursor<'_>) -> tl::deserialize::Result<Self> {
        let mut v = Vec::new();
        buf.read_to_end(&mut v)?;
        Ok(Rest(v))
    }
}

pub fn de<T: Deserializable>(body: &[u8]) -> Result<T, RpcErr> {
    T::from_bytes(body.get(4..).unwrap_or(&[])).map_err(|_| RpcErr::bad("INPUT_REQUEST_INVALID"))
}

fn unwrap_query(mut body: Vec<u8>) -> Result<Vec<u8>, RpcErr> {
    loop {
        body = match constructor_of(&body) {
            f::InvokeWithLayer::<()>::CONSTRUCTOR_ID => {
                de::<f::InvokeWithLayer<Rest>>(&body)?.query.0
            }
            f::InitConnection::<()>::CONSTRUCTOR_ID => {
                de::<f::InitConnection<Rest>>(&body)?.query.0
            }
            f::InvokeWithoutUpdates::<()>::CONSTRUCTOR_ID => {
                de::<f::InvokeWithoutUpdates<Rest>>(&body)?.query.0
            }
            f::InvokeAfterMsg::<()>::CONSTRUCTOR_ID => {
                de::<f::InvokeAfterMsg<Rest>>(&body)?.query.0
            }
            _ => return Ok(body),
        };
    }
}

/// Runs one RPC call and returns the serialized result.
pub async fn call(
    world: &Arc<Mutex<World>>,
    key_id: i64,
    conn_id: u64,
    body: &[u8],
) -> Result<Vec<u8>, RpcErr> {
    let body = unwrap_query(body.to_vec())?;
    let ctor = constructor_of(&body);
    let name = tl::name_for_id(ctor);
    let ctx = {
        let mut w = lock(world)?;
        if let Some(secs) = w.take_flood(name) {
            return Err(RpcErr::new(420, format!("FLOOD_WAIT_{secs}")));
        }
        Ctx {
            key_id,
            conn_id,
            user: w.key_user(key_id),
        }
    };
    // 2FA checks do bignum work; keep the world unlocked meanwhile.
    if ctor == f::auth::CheckPassword::CONSTRUCTOR_ID {
        return auth::check_password(world, &ctx, &body).await;
    }
    let mut w = lock(world)?;
    let result = dispatch(&mut w, &ctx, ctor, &body);
    if let Err(e) = &result {
        tracing::debug!(method = name, code = e.code, error = %e.message, "rpc error");
    }
    result
}

pub fn lock(world: &Arc<Mutex<World>>) -> Result<std::sync::MutexGuard<'_, World>, RpcErr> {
    world
        .lock()
        .map_err(|_| RpcErr::new(500, "INTERNAL_SERVER_ERROR"))
}

fn dispatch(w: &mut World, ctx: &Ctx, ctor: u32, body: &[u8]) -> Result<Vec<u8>, RpcErr> {
    use f::*;
    Ok(match ctor {
        help::GetConfig::CONSTRUCTOR_ID => config(w).to_bytes(),
        auth::SendCode::CONSTRUCTOR_ID => self::auth::send_code(w, ctx, de(body)?)?,
        auth::SignIn::CONSTRUCTOR_ID => self::auth::sign_in(w, ctx, de(body)?)?,
        auth::ImportBotAuthorization::CONSTRUCTOR_ID => self::auth::import_bot(w, ctx, de(body)?)?,
        auth::ExportLoginToken::CONSTRUCTOR_ID => self::auth::export_login_token(w, ctx)?,
        auth::AcceptLoginToken::CONSTRUCTOR_ID => {
            let req: auth::AcceptLoginToken = de(body)?;
            self::auth::accept_login_token(w, ctx.me()?, &req.token, Some(ctx.conn_id))?
        }
        auth::LogOut::CONSTRUCTOR_ID => self::auth::log_out(w, ctx)?,
        account::GetPassword::CONSTRUCTOR_ID => self::auth::get_password(w, ctx)?,
        _ => {
            let me = ctx.me()?;
            return dispatch_authorized(w, ctx, me, ctor, body);
        }
    })
}

fn dispatch_authorized(
    w: &mut World,
    ctx: &Ctx,
    me: i64,
    ctor: u32,
    body: &[u8],
) -> Result<Vec<u8>, RpcErr> {
    use f::*;
    Ok(match ctor {
        updates::GetState::CONSTRUCTOR_ID => self::updates::get_state(w, me)?,
        updates::GetDifference::CONSTRUCTOR_ID => {
            self::updates::get_difference(w, ctx.key_id, me, de(body)?)?
        }
        updates::GetChannelDifference::CONSTRUCTOR_ID => {
            self::updates::get_channel_difference(w, ctx.key_id, me, de(body)?)?
        }
        users::GetUsers::CONSTRUCTOR_ID => {
            let req: users::GetUsers = de(body)?;
            let mut out = Vec::new();
            for u in &req.id {
                let id = input_user(w, me, u)?;
                out.extend(build::user_tl(w, me, id));
            }
            out.to_bytes()
        }
        users::GetFullUser::CONSTRUCTOR_ID => chats::get_full_user(w, me, de(body)?)?,
        messages::GetChats::CONSTRUCTOR_ID => {
            let req: messages::GetChats = de(body)?;
            let mut list = Vec::new();
            for id in req.id {
                list.push(
                    build::chat_tl(w, me, PeerKey::Chat(id))
                        .ok_or_else(|| RpcErr::bad("CHAT_ID_INVALID"))?,
                );
            }
            enums::messages::Chats::Chats(types::messages::Chats { chats: list }).to_bytes()
        }
        channels::GetChannels::CONSTRUCTOR_ID => {
            let req: channels::GetChannels = de(body)?;
            let mut list = Vec::new();
            for c in &req.id {
                let id = input_channel(w, c)?;
                list.extend(build::chat_tl(w, me, PeerKey::Channel(id)));
            }
            enums::messages::Chats::Chats(types::messages::Chats { chats: list }).to_bytes()
        }
        contacts::ResolveUsername::CONSTRUCTOR_ID => chats::resolve_username(w, me, de(body)?)?,
        account::UpdateStatus::CONSTRUCTOR_ID => {
            let req: account::UpdateStatus = de(body)?;
            w.set_online(me, !req.offline)?;
            true.to_bytes()
        }
        messages::GetDialogs::CONSTRUCTOR_ID => {
            // Dialogs carry each channel's pts: the client knows them from now on.
            let member_of: Vec<(i64, i32)> = w
                .channels
                .values()
                .filter(|c| c.members.contains(&me))
                .map(|c| (c.id, c.mbox.pts))
                .collect();
            for (channel, pts) in member_of {
                w.saw_channel(ctx.key_id, channel, pts);
            }
            chats::get_dialogs(w, me)?
        }
        messages::GetHistory::CONSTRUCTOR_ID => self::messages::get_history(w, me, de(body)?)?,
        messages::GetMessages::CONSTRUCTOR_ID => self::messages::get_messages(w, me, de(body)?)?,
        channels::GetMessages::CONSTRUCTOR_ID => {
            self::messages::get_channel_messages(w, me, de(body)?)?
        }
        messages::SendMessage::CONSTRUCTOR_ID => {
            self::messages::send_message(w, ctx, me, de(body)?)?
        }
        messages::SendMedia::CONSTRUCTOR_ID => self::messages::send_media(w, ctx, me, de(body)?)?,
        messages::EditMessage::CONSTRUCTOR_ID => {
            self::messages::edit_message(w, ctx, me, de(body)?)?
        }
        messages::DeleteMessages::CONSTRUCTOR_ID => {
            let req: messages::DeleteMessages = de(body)?;
            self::messages::delete(w, ctx, me, PeerKey::User(me), &req.id)?
        }
        channels::DeleteMessages::CONSTRUCTOR_ID => {
            let req: channels::DeleteMessages = de(body)?;
            let c = input_channel(w, &req.channel)?;
            self::messages::delete(w, ctx, me, PeerKey::Channel(c), &req.id)?
        }
        messages::SendReaction::CONSTRUCTOR_ID => {
            self::messages::send_reaction(w, ctx, me, de(body)?)?
        }
        messages::ReadHistory::CONSTRUCTOR_ID => {
            let req: messages::ReadHistory = de(body)?;
            let peer = input_peer(w, me, &req.peer)?;
            self::messages::read_history(w, ctx, me, peer, req.max_id)?
        }
        channels::ReadHistory::CONSTRUCTOR_ID => {
            let req: channels::ReadHistory = de(body)?;
            let c = input_channel(w, &req.channel)?;
            self::messages::read_history(w, ctx, me, PeerKey::Channel(c), req.max_id)?;
            true.to_bytes()
        }
        messages::SetTyping::CONSTRUCTOR_ID => {
            let req: messages::SetTyping = de(body)?;
            let peer = input_peer(w, me, &req.peer)?;
            let kind = match req.action {
                enums::SendMessageAction::SendMessageCancelAction => "typing_cancel",
                _ => "typing",
            };
            w.typing(me, peer, req.top_msg_id, req.action, Some(ctx.conn_id))?;
            self::messages::record_event(w, me, peer, 0, kind);
            true.to_bytes()
        }
        messages::GetFullChat::CONSTRUCTOR_ID => chats::get_full_chat(w, me, de(body)?)?,
        channels::GetFullChannel::CONSTRUCTOR_ID => chats::get_full_channel(w, me, de(body)?)?,
        channels::GetParticipants::CONSTRUCTOR_ID => chats::get_participants(w, me, de(body)?)?,
        messages::GetForumTopics::CONSTRUCTOR_ID => {
            let req: messages::GetForumTopics = de(body)?;
            let PeerKey::Channel(c) = input_peer(w, me, &req.peer)? else {
                return Err(RpcErr::bad("CHANNEL_INVALID"));
            };
            chats::forum_topics(w, me, c)?
        }
        upload::SaveFilePart::CONSTRUCTOR_ID => {
            let req: upload::SaveFilePart = de(body)?;
            self::messages::save_part(w, ctx, req.file_id, req.file_part, req.bytes)?
        }
        upload::SaveBigFilePart::CONSTRUCTOR_ID => {
            let req: upload::SaveBigFilePart = de(body)?;
            self::messages::save_part(w, ctx, req.file_id, req.file_part, req.bytes)?
        }
        messages::EditChatTitle::CONSTRUCTOR_ID => admin::edit_chat_title(w, ctx, me, de(body)?)?,
        channels::EditTitle::CONSTRUCTOR_ID => admin::edit_channel_title(w, ctx, me, de(body)?)?,
        messages::EditChatAbout::CONSTRUCTOR_ID => admin::edit_about(w, ctx, me, de(body)?)?,
        messages::EditChatPhoto::CONSTRUCTOR_ID => admin::edit_chat_photo(w, ctx, me, de(body)?)?,
        channels::EditPhoto::CONSTRUCTOR_ID => admin::edit_channel_photo(w, ctx, me, de(body)?)?,
        messages::AddChatUser::CONSTRUCTOR_ID => admin::add_chat_user(w, ctx, me, de(body)?)?,
        channels::InviteToChannel::CONSTRUCTOR_ID => {
            admin::invite_to_channel(w, ctx, me, de(body)?)?
        }
        messages::DeleteChatUser::CONSTRUCTOR_ID => admin::delete_chat_user(w, ctx, me, de(body)?)?,
        channels::EditBanned::CONSTRUCTOR_ID => admin::edit_banned(w, ctx, me, de(body)?)?,
        upload::GetFile::CONSTRUCTOR_ID => self::messages::get_file(w, me, de(body)?)?,
        other => {
            tracing::info!(method = tl::name_for_id(other), "method not simulated");
            return Err(RpcErr::bad("INPUT_METHOD_INVALID"));
        }
    })
}

fn config(w: &World) -> enums::Config {
    let dc_options = (1..=5)
        .map(|id| {
            enums::DcOption::Option(types::DcOption {
                r#static: true,
                id,
                ip_address: "127.0.0.1".into(),
                port: i32::from(w.port),
                ..d::dc_option()
            })
        })
        .collect();
    enums::Config::Config(types::Config {
        date: now(),
        expires: now() + 3600,
        this_dc: 2,
        dc_options,
        dc_txt_domain_name: "simulator.invalid".into(),
        chat_size_max: 200,
        megagroup_size_max: 200_000,
        forwarded_count_max: 100,
        online_update_period_ms: 210_000,
        offline_blur_timeout_ms: 5_000,
        offline_idle_timeout_ms: 30_000,
        online_cloud_timeout_ms: 300_000,
        notify_cloud_delay_ms: 30_000,
        notify_default_delay_ms: 1_500,
        push_chat_period_ms: 60_000,
        push_chat_limit: 2,
        edit_time_limit: 172_800,
        revoke_time_limit: i32::MAX,
        revoke_pm_time_limit: i32::MAX,
        rating_e_decay: 2_419_200,
        stickers_recent_limit: 200,
        channels_read_media_period: 604_800,
        call_receive_timeout_ms: 20_000,
        call_ring_timeout_ms: 90_000,
        call_connect_timeout_ms: 30_000,
        call_packet_timeout_ms: 10_000,
        me_url_prefix: "https://t.me/".into(),
        caption_length_max: 1024,
        message_length_max: 4096,
        webfile_dc_id: 4,
        ..d::config()
    })
}

/// Resolves an InputPeer, checking access hashes like Telegram does.
pub fn input_peer(w: &World, me: i64, p: &enums::InputPeer) -> Result<PeerKey, RpcErr> {
    match p {
        enums::InputPeer::PeerSelf => Ok(PeerKey::User(me)),
        enums::InputPeer::User(u) => {
            if u.access_hash != access_hash(u.user_id) || !w.users.contains_key(&u.user_id) {
                return Err(RpcErr::bad("PEER_ID_INVALID"));
            }
            Ok(PeerKey::User(u.user_id))
        }
        enums::InputPeer::Chat(c) => {
            let chat = w
                .chats
                .get(&c.chat_id)
                .ok_or_else(|| RpcErr::bad("PEER_ID_INVALID"))?;
            if !chat.members.contains(&me) {
                return Err(RpcErr::bad("CHAT_ID_INVALID"));
            }
            Ok(PeerKey::Chat(c.chat_id))
        }
        enums::InputPeer::Channel(c) => {
            if c.access_hash != access_hash(c.channel_id) || !w.channels.contains_key(&c.channel_id)
            {
                return Err(RpcErr::bad("CHANNEL_INVALID"));
            }
            Ok(PeerKey::Channel(c.channel_id))
        }
        enums::InputPeer::UserFromMessage(u) => Ok(PeerKey::User(u.user_id)),
        enums::InputPeer::ChannelFromMessage(c) => Ok(PeerKey::Channel(c.channel_id)),
        enums::InputPeer::Empty => Err(RpcErr::bad("PEER_ID_INVALID")),
    }
}

pub fn input_user(w: &World, me: i64, u: &enums::InputUser) -> Result<i64, RpcErr> {
    match u {
        enums::InputUser::UserSelf => Ok(me),
        enums::InputUser::User(u) => {
            if u.access_hash != access_hash(u.user_id) || !w.users.contains_key(&u.user_id) {
                return Err(RpcErr::bad("USER_ID_INVALID"));
            }
            Ok(u.user_id)
        }
        enums::InputUser::FromMessage(u) => Ok(u.user_id),
        enums::InputUser::Empty => Err(RpcErr::bad("USER_ID_INVALID")),
    }
}

pub fn input_channel(w: &World, c: &enums::InputChannel) -> Result<i64, RpcErr> {
    match c {
        enums::InputChannel::Channel(c) => {
            if c.access_hash != access_hash(c.channel_id) || !w.channels.contains_key(&c.channel_id)
            {
                return Err(RpcErr::bad("CHANNEL_INVALID"));
            }
            Ok(c.channel_id)
        }
        enums::InputChannel::FromMessage(c) => Ok(c.channel_id),
        enums::InputChannel::Empty => Err(RpcErr::bad("CHANNEL_INVALID")),
    }
}
