//! Logging in: phone + code (+ 2FA SRP), bot tokens, QR login tokens, logging out.

use std::sync::{Arc, Mutex};

use grammers_tl_types::{self as tl, Serializable as _};
use rand::RngCore as _;
use tl::{enums, functions as f, types};

use super::{Ctx, de, lock};
use crate::telegram::crypto::{SRP_G, srp_prime};
use crate::telegram::state::{LoginTokenRec, RpcErr, SentCodeRec, World, normalize_phone, now};
use crate::telegram::tl as build;
use crate::telegram::tl_defaults as d;

fn authorization(w: &World, user: i64) -> Result<Vec<u8>, RpcErr> {
    let user = build::user_tl(w, user, user).ok_or_else(|| RpcErr::bad("USER_ID_INVALID"))?;
    Ok(
        enums::auth::Authorization::Authorization(types::auth::Authorization {
            user,
            ..d::authorization()
        })
        .to_bytes(),
    )
}

fn bind(w: &mut World, key_id: i64, user: i64) {
    if let Some(k) = w.keys.get_mut(&key_id) {
        k.user = Some(user);
        k.pending_user = None;
        k.srp = None;
    }
}

pub fn send_code(w: &mut World, ctx: &Ctx, req: f::auth::SendCode) -> Result<Vec<u8>, RpcErr> {
    let _ = ctx;
    if w.user_by_phone(&req.phone_number).is_none() {
        // Sign-up is not simulated: only accounts created through the control API exist.
        return Err(RpcErr::bad("PHONE_NUMBER_INVALID"));
    }
    let mut hash = [0u8; 8];
    rand::rng().fill_bytes(&mut hash);
    let hash: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    let code = w
        .login_codes
        .get(&normalize_phone(&req.phone_number))
        .cloned()
        .unwrap_or_else(|| "12345".into());
    let length = code.len() as i32;
    w.codes.insert(
        hash.clone(),
        SentCodeRec {
            phone: normalize_phone(&req.phone_number),
            code,
        },
    );
    Ok(enums::auth::SentCode::Code(types::auth::SentCode {
        r#type: enums::auth::SentCodeType::App(types::auth::SentCodeTypeApp { length }),
        phone_code_hash: hash,
        ..d::sent_code()
    })
    .to_bytes())
}

pub fn sign_in(w: &mut World, ctx: &Ctx, req: f::auth::SignIn) -> Result<Vec<u8>, RpcErr> {
    let sent = w
        .codes
        .get(&req.phone_code_hash)
        .ok_or_else(|| RpcErr::bad("PHONE_CODE_EXPIRED"))?;
    if sent.phone != normalize_phone(&req.phone_number) {
        return Err(RpcErr::bad("PHONE_NUMBER_INVALID"));
    }
    let Some(code) = req.phone_code else {
        return Err(RpcErr::bad("PHONE_CODE_EMPTY"));
    };
    if code != sent.code {
        return Err(RpcErr::bad("PHONE_CODE_INVALID"));
    }
    let user = w
        .user_by_phone(&req.phone_number)
        .ok_or_else(|| RpcErr::bad("PHONE_NUMBER_UNOCCUPIED"))?;
    w.codes.remove(&req.phone_code_hash);
    if w.user(user)?.password.is_some() {
        if let Some(k) = w.keys.get_mut(&ctx.key_id) {
            k.pending_user = Some(user);
        }
        return Err(RpcErr::new(401, "SESSION_PASSWORD_NEEDED"));
    }
    bind(w, ctx.key_id, user);
    authorization(w, user)
}

pub fn get_password(w: &mut World, ctx: &Ctx) -> Result<Vec<u8>, RpcErr> {
    let user = ctx
        .user
        .or_else(|| w.keys.get(&ctx.key_id).and_then(|k| k.pending_user))
        .ok_or_else(|| RpcErr::new(401, "AUTH_KEY_UNREGISTERED"))?;
    let verifier = w.user(user)?.password.clone();
    let hint = w.user(user)?.hint.clone();
    let mut secure_random = vec![0u8; 256];
    rand::rng().fill_bytes(&mut secure_random);
    let mut new_salt1 = vec![0u8; 8];
    rand::rng().fill_bytes(&mut new_salt1);
    let mut secure_salt = vec![0u8; 8];
    rand::rng().fill_bytes(&mut secure_salt);
    let algo = |salt1: Vec<u8>, salt2: Vec<u8>| {
        enums::PasswordKdfAlgo::Sha256Sha256Pbkdf2Hmacsha512iter100000Sha256ModPow(
            types::PasswordKdfAlgoSha256Sha256Pbkdf2Hmacsha512iter100000Sha256ModPow {
                salt1,
                salt2,
                g: SRP_G as i32,
                p: srp_prime(),
            },
        )
    };
    let mut password = types::account::Password {
        new_algo: algo(new_salt1, Vec::new()),
        new_secure_algo: enums::SecurePasswordKdfAlgo::Pbkdf2Hmacsha512iter100000(
            types::SecurePasswordKdfAlgoPbkdf2Hmacsha512iter100000 { salt: secure_salt },
        ),
        secure_random,
        ..d::password()
    };
    if let Some(v) = verifier {
        let challenge = v.challenge();
        password.has_password = true;
        password.current_algo = Some(algo(v.salt1.clone(), v.salt2.clone()));
        password.srp_b = Some(challenge.g_b.to_vec());
        password.srp_id = Some(challenge.srp_id);
        password.hint = hint;
        if let Some(k) = w.keys.get_mut(&ctx.key_id) {
            k.srp = Some((user, challenge));
        }
    }
    Ok(enums::account::Password::Password(password).to_bytes())
}

pub async fn check_password(
    world: &Arc<Mutex<World>>,
    ctx: &Ctx,
    body: &[u8],
) -> Result<Vec<u8>, RpcErr> {
    let req: f::auth::CheckPassword = de(body)?;
    let enums::InputCheckPasswordSrp::Srp(srp) = req.password else {
        return Err(RpcErr::bad("PASSWORD_HASH_INVALID"));
    };
    let (user, challenge, verifier) = {
        let w = lock(world)?;
        let (user, challenge) = w
            .keys
            .get(&ctx.key_id)
            .and_then(|k| k.srp.clone())
            .ok_or_else(|| RpcErr::bad("SRP_ID_INVALID"))?;
        let verifier = w
            .user(user)?
            .password
            .clone()
            .ok_or_else(|| RpcErr::bad("PASSWORD_HASH_INVALID"))?;
        (user, challenge, verifier)
    };
    if challenge.srp_id != srp.srp_id {
        return Err(RpcErr::bad("SRP_ID_INVALID"));
    }
    let ok = tokio::task::spawn_blocking(move || verifier.check(&challenge, &srp.a, &srp.m1))
        .await
        .unwrap_or(false);
    let mut w = lock(world)?;
    if !ok {
        // The challenge stays valid: clients (grammers included) retry with the same srp_id.
        return Err(RpcErr::bad("PASSWORD_HASH_INVALID"));
    }
    bind(&mut w, ctx.key_id, user);
    authorization(&w, user)
}

pub fn import_bot(
    w: &mut World,
    ctx: &Ctx,
    req: f::auth::ImportBotAuthorization,
) -> Result<Vec<u8>, RpcErr> {
    let user = *w
        .bot_tokens
        .get(&req.bot_auth_token)
        .ok_or_else(|| RpcErr::bad("ACCESS_TOKEN_INVALID"))?;
    bind(w, ctx.key_id, user);
    authorization(w, user)
}

pub fn export_login_token(w: &mut World, ctx: &Ctx) -> Result<Vec<u8>, RpcErr> {
    let current = w.keys.get(&ctx.key_id).and_then(|k| k.login_token.clone());
    if let Some(token) = current.clone()
        && let Some(rec) = w.login_tokens.get(&token)
        && let Some(user) = rec.accepted_by
    {
        w.login_tokens.remove(&token);
        if let Some(k) = w.keys.get_mut(&ctx.key_id) {
            k.login_token = None;
        }
        bind(w, ctx.key_id, user);
        let auth = match enums::auth::Authorization::from_bytes_ok(&authorization(w, user)?) {
            Some(a) => a,
            None => return Err(RpcErr::new(500, "INTERNAL_SERVER_ERROR")),
        };
        return Ok(
            enums::auth::LoginToken::Success(types::auth::LoginTokenSuccess {
                authorization: auth,
            })
            .to_bytes(),
        );
    }
    let mut token = vec![0u8; 32];
    rand::rng().fill_bytes(&mut token);
    let expires = now() + 30;
    if let Some(old) = current {
        w.login_tokens.remove(&old);
    }
    w.login_tokens.insert(
        token.clone(),
        LoginTokenRec {
            key_id: ctx.key_id,
            expires,
            accepted_by: None,
        },
    );
    if let Some(k) = w.keys.get_mut(&ctx.key_id) {
        k.login_token = Some(token.clone());
    }
    Ok(enums::auth::LoginToken::Token(types::auth::LoginToken { expires, token }).to_bytes())
}

/// The phone (already logged in as `user`) scans a QR login token.
pub fn accept_login_token(
    w: &mut World,
    user: i64,
    token: &[u8],
    origin: Option<u64>,
) -> Result<Vec<u8>, RpcErr> {
    let _ = origin;
    let rec = w
        .login_tokens
        .get_mut(token)
        .ok_or_else(|| RpcErr::bad("AUTH_TOKEN_INVALID"))?;
    if rec.expires < now() {
        return Err(RpcErr::bad("AUTH_TOKEN_EXPIRED"));
    }
    if rec.accepted_by.is_some() {
        return Err(RpcErr::bad("AUTH_TOKEN_ALREADY_ACCEPTED"));
    }
    rec.accepted_by = Some(user);
    let key_id = rec.key_id;
    // The exporting client learns through updateLoginToken that it should export again.
    let up = enums::Updates::UpdateShort(types::UpdateShort {
        update: enums::Update::LoginToken,
        date: now(),
    })
    .to_bytes();
    for c in w.conns.values().filter(|c| c.key_id == key_id) {
        let _ = c.tx.send(crate::telegram::state::ConnCmd::Push(up.clone()));
    }
    Ok(enums::Authorization::Authorization(types::Authorization {
        hash: rand::random(),
        device_model: "ferry".into(),
        platform: "simulator".into(),
        system_version: "1".into(),
        api_id: 0,
        app_name: "ferry".into(),
        app_version: "1".into(),
        date_created: now(),
        date_active: now(),
        ip: "127.0.0.1".into(),
        country: "Simulated".into(),
        region: String::new(),
        ..d::account_authorization()
    })
    .to_bytes())
}

pub fn log_out(w: &mut World, ctx: &Ctx) -> Result<Vec<u8>, RpcErr> {
    ctx.me()?;
    if let Some(k) = w.keys.get_mut(&ctx.key_id) {
        k.user = None;
    }
    Ok(enums::auth::LoggedOut::Out(types::auth::LoggedOut {
        future_auth_token: None,
    })
    .to_bytes())
}

trait FromBytesOk: Sized {
    fn from_bytes_ok(b: &[u8]) -> Option<Self>;
}

impl FromBytesOk for enums::auth::Authorization {
    fn from_bytes_ok(b: &[u8]) -> Option<Self> {
        <Self as tl::Deserializable>::from_bytes(b).ok()
    }
}
