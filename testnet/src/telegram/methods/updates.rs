//! updates.getState / getDifference / getChannelDifference: replaying the pts logs.

use grammers_tl_types::{self as tl, Serializable as _};
use tl::{enums, functions as f, types};

use super::input_channel;
use crate::telegram::state::{BoxRef, RpcErr, World, now};
use crate::telegram::tl as build;

/// How many pts entries one difference carries before it becomes a slice.
const DIFF_LIMIT: usize = 100;

fn state(w: &World, me: i64) -> Result<types::updates::State, RpcErr> {
    let u = w.user(me)?;
    Ok(types::updates::State {
        pts: u.mbox.pts,
        qts: u.qts,
        date: now(),
        seq: u.seq,
        unread_count: 0,
    })
}

pub fn get_state(w: &World, me: i64) -> Result<Vec<u8>, RpcErr> {
    Ok(enums::updates::State::State(state(w, me)?).to_bytes())
}

pub fn get_difference(
    w: &mut World,
    key: i64,
    me: i64,
    req: f::updates::GetDifference,
) -> Result<Vec<u8>, RpcErr> {
    let current = state(w, me)?;
    // Channels the client is behind on are not replayed here: it is told to fetch each one's
    // own difference, from the pts it had (as Telegram does for channels with much news).
    let too_long: Vec<enums::Update> = w
        .channels_behind(key, me)
        .into_iter()
        .map(|(channel_id, pts)| {
            enums::Update::ChannelTooLong(types::UpdateChannelTooLong {
                channel_id,
                pts: Some(pts),
            })
        })
        .collect();
    // qts updates (here: bots' updateBotStopped) after the client's qts.
    let qts_updates: Vec<enums::Update> = w
        .user(me)?
        .qts_log
        .iter()
        .filter(|(qts, _)| *qts > req.qts)
        .map(|(_, u)| u.clone())
        .collect();
    if req.pts >= current.pts && too_long.is_empty() && qts_updates.is_empty() {
        return Ok(
            enums::updates::Difference::Empty(types::updates::DifferenceEmpty {
                date: current.date,
                seq: current.seq,
            })
            .to_bytes(),
        );
    }
    let (new_messages, mut other_updates, last_pts) =
        build::replay(w, me, BoxRef::User(me), req.pts, DIFF_LIMIT);
    let (users, chats) = build::everything_for(w, me);
    if last_pts < current.pts {
        // The rest (qts, channels) comes with the last slice.
        let intermediate_state = enums::updates::State::State(types::updates::State {
            pts: last_pts,
            ..current
        });
        return Ok(
            enums::updates::Difference::Slice(types::updates::DifferenceSlice {
                new_messages,
                new_encrypted_messages: Vec::new(),
                other_updates,
                chats,
                users,
                intermediate_state,
            })
            .to_bytes(),
        );
    }
    other_updates.extend(qts_updates);
    other_updates.extend(too_long);
    Ok(
        enums::updates::Difference::Difference(types::updates::Difference {
            new_messages,
            new_encrypted_messages: Vec::new(),
            other_updates,
            chats,
            users,
            state: enums::updates::State::State(current),
        })
        .to_bytes(),
    )
}

pub fn get_channel_difference(
    w: &mut World,
    key: i64,
    me: i64,
    req: f::updates::GetChannelDifference,
) -> Result<Vec<u8>, RpcErr> {
    let c = input_channel(w, &req.channel)?;
    let ch = w.channel(c)?;
    if !ch.members.contains(&me) && ch.username.is_none() {
        return Err(RpcErr::bad("CHANNEL_PRIVATE"));
    }
    let pts = ch.mbox.pts;
    if req.pts >= pts {
        w.saw_channel(key, c, pts);
        return Ok(enums::updates::ChannelDifference::Empty(
            types::updates::ChannelDifferenceEmpty {
                r#final: true,
                pts,
                timeout: None,
            },
        )
        .to_bytes());
    }
    let limit = usize::try_from(req.limit)
        .unwrap_or(DIFF_LIMIT)
        .clamp(1, 100_000);
    let (new_messages, other_updates, last_pts) =
        build::replay(w, me, BoxRef::Channel(c), req.pts, limit);
    let (users, chats) = build::everything_for(w, me);
    w.saw_channel(key, c, last_pts);
    Ok(
        enums::updates::ChannelDifference::Difference(types::updates::ChannelDifference {
            r#final: last_pts >= pts,
            pts: last_pts,
            timeout: None,
            new_messages,
            other_updates,
            chats,
            users,
        })
        .to_bytes(),
    )
}
