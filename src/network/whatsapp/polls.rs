//! Poll votes. A WhatsApp poll arrives as readable text (see `convert`); its votes come later,
//! each encrypted with the poll's 32-byte message secret (AES-GCM under a key derived from the
//! secret, the poll's id, its creator and the voter; `wacore::poll`). ferry keeps what it needs
//! to open and count them in the key-value table (`whatsapp/<login>/poll/<poll stanza id>`):
//! the secret (encrypted with the store key, like the message secrets whatsapp-rust keeps), the
//! options, where the poll was bridged, and each voter's current choice. A vote
//! replaces that voter's earlier one (an empty vote withdraws it), and the bridged poll is
//! edited to show the new counts, as the Telegram connector does. Because the record is in the
//! database, votes on a poll bridged before a restart are counted on top of the earlier ones.
//!
//! Votes are keyed by creator and voter JIDs as the voter's app addressed them (phone number
//! or LID); ferry tries the addresses it knows for both, as WhatsApp Web does.
//!
//! Matrix -> WhatsApp: ferry's core carries no poll events (MSC3381), so polls cannot be started
//! or answered from Matrix.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use whatsapp_rust::{
    Jid,
    wacore::{self, proto_helpers::MessageExt as _},
    waproto::whatsapp as wa,
};

use crate::{
    crypto::store::StoreKey,
    db::Db,
    network::{
        ChatId, MessageId, RemoteUserId,
        richtext::{Entity, EntityKind, FormattedText},
    },
};

/// The addresses a poll's creator or a voter may be named by in a vote's key derivation: the
/// JID the message came from and its phone-number/LID twin (without device), and ferry's user's
/// own JID form.
pub fn addresses(jid: &Jid, alt: Option<&Jid>, user: &RemoteUserId) -> Vec<String> {
    let mut all = vec![jid.to_non_ad().to_string()];
    all.extend(alt.map(|j| j.to_non_ad().to_string()));
    all.extend(super::ids::user_jid(user).ok().map(|j| j.to_string()));
    all
}

/// A bridged poll, as kept for counting its votes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Poll {
    /// The portal chat.
    pub chat: String,
    /// The bridged message (ferry's id).
    pub message: String,
    /// Who created it (ferry's user id).
    pub creator: String,
    /// The creator's JIDs without device (as sent, and its phone-number/LID twin).
    pub creator_jids: Vec<String>,
    /// The message secret, hex (in the database: sealed with the store key, base64).
    pub secret: String,
    pub question: String,
    pub options: Vec<String>,
    /// Each voter's current choice (option indexes), by ferry user id.
    #[serde(default)]
    pub votes: BTreeMap<String, Vec<usize>>,
}

impl Poll {
    pub fn chat(&self) -> ChatId {
        ChatId::new(self.chat.as_str())
    }

    pub fn message(&self) -> MessageId {
        MessageId::new(self.message.as_str())
    }

    pub fn creator(&self) -> RemoteUserId {
        RemoteUserId::new(self.creator.as_str())
    }

    /// Votes per option, in option order.
    pub fn counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.options.len()];
        for choice in self.votes.values() {
            for i in choice {
                if let Some(c) = counts.get_mut(*i) {
                    *c += 1;
                }
            }
        }
        counts
    }

    /// The poll as readable text with its counts: the same text as when it was first bridged
    /// (see `convert`) with "— n votes" after each option that has some.
    pub fn text(&self) -> FormattedText {
        let mut text = format!("Poll: {}", self.question);
        let bold = Entity::new(0, text.chars().count(), EntityKind::Bold);
        for (i, (option, votes)) in self.options.iter().zip(self.counts()).enumerate() {
            text.push_str(&format!("\n{}. {option}", i + 1));
            if votes > 0 {
                let unit = if votes == 1 { "vote" } else { "votes" };
                text.push_str(&format!(" — {votes} {unit}"));
            }
        }
        text.push_str("\n(vote on your phone)");
        FormattedText::new(text, vec![bold])
    }
}

/// A received vote: the poll it is for and the encrypted choice.
#[derive(Debug, Clone)]
pub struct Vote {
    /// The poll's stanza id.
    pub poll: String,
    pub payload: Vec<u8>,
    pub iv: Vec<u8>,
}

/// The question, options and message secret of a poll a message creates.
pub fn created(message: &wa::Message) -> Option<(String, Vec<String>, Vec<u8>)> {
    let m = message.get_base_message();
    let poll = m
        .poll_creation_message
        .as_option()
        .or_else(|| m.poll_creation_message_v2.as_option())
        .or_else(|| m.poll_creation_message_v3.as_option())
        .or_else(|| m.poll_creation_message_v5.as_option())?;
    let secret = message
        .message_context_info
        .as_option()
        .or_else(|| m.message_context_info.as_option())
        .and_then(|c| c.message_secret.clone())
        .filter(|s| !s.is_empty())?;
    let options = poll
        .options
        .iter()
        .map(|o| o.option_name.clone().unwrap_or_default())
        .collect();
    Some((poll.name.clone().unwrap_or_default(), options, secret))
}

/// A message from the history sync carries its secret beside it (`WebMessageInfo.messageSecret`)
/// rather than inside; moves it inside, where [`created`] looks, so votes on a poll from the
/// history are counted too.
pub fn adopt_history_secret(message: &mut wa::Message, secret: Option<&[u8]>) {
    let Some(secret) = secret.filter(|s| !s.is_empty()) else {
        return;
    };
    let context = message.message_context_info.get_or_insert_default();
    if context.message_secret.as_ref().is_none_or(Vec::is_empty) {
        context.message_secret = Some(secret.to_vec());
    }
}

/// The vote a message carries.
pub fn vote_of(message: &wa::Message) -> Option<Vote> {
    let update = message.get_base_message().poll_update_message.as_option()?;
    let poll = update
        .poll_creation_message_key
        .as_option()?
        .id
        .clone()
        .filter(|id| !id.is_empty())?;
    let vote = update.vote.as_option()?;
    Some(Vote {
        poll,
        payload: vote.enc_payload.clone()?,
        iv: vote.enc_iv.clone()?,
    })
}

/// Opens a vote: the indexes of the options chosen (empty: the vote was withdrawn). `None` when
/// no known pair of addresses opens it (a vote for another poll, or a corrupted one).
pub fn decrypt(poll: &Poll, vote: &Vote, voter_jids: &[String]) -> Option<Vec<usize>> {
    let secret = hex::decode(&poll.secret).ok()?;
    let ciphertext = wacore::poll::PollVoteCiphertext {
        enc_payload: &vote.payload,
        enc_iv: &vote.iv,
    };
    let hashes = poll.creator_jids.iter().find_map(|creator| {
        voter_jids.iter().find_map(|voter| {
            wacore::poll::decrypt_poll_vote_with_secret(
                ciphertext, &secret, &vote.poll, creator, voter,
            )
            .ok()
        })
    })?;
    let options: Vec<[u8; 32]> = poll
        .options
        .iter()
        .map(|o| wacore::poll::compute_option_hash(o))
        .collect();
    let mut chosen: Vec<usize> = hashes
        .iter()
        .filter_map(|h| options.iter().position(|o| o.as_slice() == h.as_slice()))
        .collect();
    chosen.sort_unstable();
    chosen.dedup();
    Some(chosen)
}

/// What the store key's cipher binds a sealed poll secret to.
const SEALED: &str = "whatsapp-poll-secret";

/// The polls of one login, in the key-value table.
#[derive(Clone)]
pub struct Polls {
    db: Db,
    key: StoreKey,
    login: String,
}

impl Polls {
    pub fn new(db: Db, key: StoreKey, login: &str) -> Self {
        Self {
            db,
            key,
            login: login.to_owned(),
        }
    }

    fn seal(&self, poll: &Poll) -> Option<Poll> {
        use base64::Engine as _;
        let plain = hex::decode(&poll.secret).ok()?;
        match self.key.encrypt_bytes(SEALED, plain) {
            Ok(sealed) => Some(Poll {
                secret: base64::engine::general_purpose::STANDARD.encode(sealed),
                ..poll.clone()
            }),
            Err(err) => {
                tracing::warn!(%err, "cannot seal a WhatsApp poll's secret");
                None
            }
        }
    }

    fn open(&self, mut poll: Poll) -> Option<Poll> {
        use base64::Engine as _;
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(&poll.secret)
            .ok()?;
        match self.key.decrypt_bytes(SEALED, &sealed) {
            Ok(plain) => {
                poll.secret = hex::encode(plain);
                Some(poll)
            }
            Err(err) => {
                tracing::warn!(%err, "a stored WhatsApp poll's secret does not decrypt");
                None
            }
        }
    }

    fn key(&self, stanza: &str) -> String {
        format!("whatsapp/{}/poll/{stanza}", self.login)
    }

    /// The poll created by stanza `stanza`, if it was bridged.
    pub async fn get(&self, stanza: &str) -> Option<Poll> {
        match self.db.kv_get(&self.key(stanza)).await {
            Ok(Some(json)) => match serde_json::from_str(&json) {
                Ok(poll) => self.open(poll),
                Err(err) => {
                    tracing::warn!(%err, "a stored WhatsApp poll does not parse");
                    None
                }
            },
            Ok(None) => None,
            Err(err) => {
                tracing::warn!(%err, "cannot read a stored WhatsApp poll");
                None
            }
        }
    }

    /// Keeps a poll (new, or with a changed tally).
    pub async fn put(&self, stanza: &str, poll: &Poll) {
        let Some(sealed) = self.seal(poll) else {
            return;
        };
        let json = match serde_json::to_string(&sealed) {
            Ok(json) => json,
            Err(err) => {
                tracing::warn!(%err, "cannot encode a WhatsApp poll");
                return;
            }
        };
        if let Err(err) = self.db.kv_set(&self.key(stanza), &json).await {
            tracing::warn!(%err, "cannot store a WhatsApp poll");
        }
    }
}

/// A poll as WhatsApp sends it (`pollCreationMessageV3`), for tests here and in `convert`.
#[cfg(test)]
pub(super) fn test_poll_message(question: &str, options: &[&str]) -> wa::Message {
    use whatsapp_rust::waproto::buffa::MessageField;
    wa::Message {
        poll_creation_message_v3: MessageField::some(wa::message::PollCreationMessage {
            name: Some(question.into()),
            options: options
                .iter()
                .map(|o| wa::message::poll_creation_message::Option {
                    option_name: Some((*o).into()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use whatsapp_rust::waproto::buffa::MessageField;

    use super::*;

    const CREATOR: &str = "5511900000002@s.whatsapp.net";
    const VOTER: &str = "5511900000003@s.whatsapp.net";

    fn poll(secret: &[u8]) -> Poll {
        Poll {
            chat: "g1".into(),
            message: "m1".into(),
            creator: "5511900000002".into(),
            creator_jids: vec!["123@lid".into(), CREATOR.into()],
            secret: hex::encode(secret),
            question: "Lunch?".into(),
            options: vec!["Pizza".into(), "Sushi".into()],
            votes: BTreeMap::new(),
        }
    }

    fn vote_for(secret: &[u8], names: &[&str], voter: &str) -> Vote {
        let hashes: Vec<Vec<u8>> = names
            .iter()
            .map(|n| wacore::poll::compute_option_hash(n).to_vec())
            .collect();
        let (payload, iv) =
            wacore::poll::encrypt_poll_vote_with_secret(&hashes, secret, "POLL1", CREATOR, voter)
                .expect("encrypt");
        Vote {
            poll: "POLL1".into(),
            payload,
            iv: iv.to_vec(),
        }
    }

    #[test]
    fn votes_open_under_any_known_address_and_count() {
        let secret = [7u8; 32];
        let mut p = poll(&secret);
        let vote = vote_for(&secret, &["Sushi"], VOTER);
        let voters = ["456@lid".to_owned(), VOTER.to_owned()];
        assert_eq!(decrypt(&p, &vote, &voters), Some(vec![1]));
        // The wrong secret opens nothing.
        let other = poll(&[8u8; 32]);
        assert_eq!(decrypt(&other, &vote, &voters), None);
        p.votes.insert("a".into(), vec![1]);
        p.votes.insert("b".into(), vec![0, 1]);
        assert_eq!(p.counts(), vec![1, 2]);
        assert_eq!(
            p.text().text,
            "Poll: Lunch?\n1. Pizza — 1 vote\n2. Sushi — 2 votes\n(vote on your phone)"
        );
        // A withdrawn vote is an empty choice.
        let empty = vote_for(&secret, &[], VOTER);
        assert_eq!(decrypt(&p, &empty, &voters), Some(vec![]));
    }

    #[test]
    fn a_history_poll_gets_the_secret_kept_beside_it() {
        let mut m = wa::Message {
            poll_creation_message: MessageField::some(wa::message::PollCreationMessage {
                name: Some("Q".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(created(&m).is_none(), "no secret, nothing to count with");
        adopt_history_secret(&mut m, Some(&[4; 32]));
        assert_eq!(created(&m).map(|(_, _, s)| s), Some(vec![4; 32]));
        // A secret already inside wins.
        adopt_history_secret(&mut m, Some(&[5; 32]));
        assert_eq!(created(&m).map(|(_, _, s)| s), Some(vec![4; 32]));
    }

    #[tokio::test]
    async fn the_secret_is_stored_sealed_and_the_tally_survives_a_reopen() {
        let db = Db::memory().await;
        let key = StoreKey::load_or_create(
            &db,
            crate::crypto::store::StoreSecret::Key(zeroize::Zeroizing::new([9; 32])),
        )
        .await
        .expect("key");
        let secret = [5u8; 32];
        let mut p = poll(&secret);
        p.votes.insert("5511900000003".into(), vec![0]);
        Polls::new(db.clone(), key.clone(), "me")
            .put("POLL1", &p)
            .await;
        let raw = db
            .kv_get("whatsapp/me/poll/POLL1")
            .await
            .expect("read")
            .expect("stored");
        assert!(
            !raw.contains(&hex::encode(secret)),
            "the secret in clear: {raw}"
        );
        let again = Polls::new(db.clone(), key, "me").get("POLL1").await;
        assert_eq!(again.as_ref(), Some(&p));
        // Another login does not see it.
        assert!(
            db.kv_get("whatsapp/other/poll/POLL1")
                .await
                .expect("read")
                .is_none()
        );
    }

    #[test]
    fn a_poll_message_gives_its_options_and_secret_and_a_vote_its_target() {
        let message = wa::Message {
            message_context_info: MessageField::some(wa::MessageContextInfo {
                message_secret: Some(vec![1; 32]),
                ..Default::default()
            }),
            ..test_poll_message("Lunch?", &["Pizza", "Sushi"])
        };
        let (question, options, secret) = created(&message).expect("a poll");
        assert_eq!(question, "Lunch?");
        assert_eq!(options, vec!["Pizza".to_owned(), "Sushi".to_owned()]);
        assert_eq!(secret, vec![1; 32]);
        // With no votes the text is what `convert` bridged first.
        let mut p = poll(&secret);
        p.question = question;
        p.options = options;
        let ctx_user = RemoteUserId::new("5511900000002");
        let resolve = |_: &str| None;
        let ctx = super::super::convert::Context {
            sender: &ctx_user,
            own: &ctx_user,
            dm_peer: None,
            resolve: &resolve,
        };
        let (super::super::convert::Inbound::Message { content, .. }, _) =
            super::super::convert::inbound(&message, &ctx)
        else {
            panic!("a message");
        };
        assert_eq!(
            content,
            crate::network::MessageContent::Text(p.text()),
            "first text"
        );

        let vote = wa::Message {
            poll_update_message: MessageField::some(wa::message::PollUpdateMessage {
                poll_creation_message_key: MessageField::some(wa::MessageKey {
                    id: Some("POLL1".into()),
                    ..Default::default()
                }),
                vote: MessageField::some(wa::message::PollEncValue {
                    enc_payload: Some(vec![1, 2]),
                    enc_iv: Some(vec![3]),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = vote_of(&vote).expect("a vote");
        assert_eq!(
            (v.poll.as_str(), v.payload, v.iv),
            ("POLL1", vec![1, 2], vec![3])
        );
    }
}
