//! Linking a companion device: the `pair-device` refs the client turns into QR codes, and the
//! phone's side of a scan: a `pair-success` carrying an `ADVSignedDeviceIdentityHMAC` whose inner
//! identity the account's ADV key signed and whose HMAC uses the secret from the QR code, exactly
//! what the client verifies before it counter-signs (`pair-device-sign`).

use base64::Engine as _;
use hmac::{KeyInit as _, Mac as _};
use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;
use waproto::whatsapp as wa;

use super::world::{Device, PendingPair, World, now};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The first `pair-device` stanza: six refs (the client shows one QR code per ref).
pub fn pair_device_iq(world: &mut World, conn: u64) -> Option<Node> {
    let refs: Vec<String> = (0..6)
        .map(|_| {
            let n = world.next_id();
            format!("2@sim{n}{:016x}", rand::random::<u64>())
        })
        .collect();
    let pending = world.pending.get_mut(&conn)?;
    pending.refs = refs.clone();
    let id = world.stanza_id();
    Some(
        NodeBuilder::new("iq")
            .attr("from", "s.whatsapp.net")
            .attr("type", "set")
            .attr("id", id)
            .attr("xmlns", "md")
            .children([NodeBuilder::new("pair-device")
                .children(
                    refs.into_iter()
                        .map(|r| NodeBuilder::new("ref").bytes(r.into_bytes()).build()),
                )
                .build()])
            .build(),
    )
}

/// The fields of a QR code the client rendered: `ref,noise_pub,identity_pub,adv_secret[,type]`.
pub struct Qr {
    pub r#ref: String,
    pub noise: [u8; 32],
    pub identity: [u8; 32],
    pub adv_secret: [u8; 32],
}

pub fn parse_qr(code: &str) -> Result<Qr, String> {
    let body = code.rsplit_once("://").map_or(code, |(_, b)| b);
    let body = body.rsplit_once('?').map_or(body, |(_, b)| b);
    let parts: Vec<&str> = body.split(',').collect();
    if parts.len() < 4 {
        return Err("QR code has fewer than four comma-separated fields".into());
    }
    let key = |s: &str, what: &str| -> Result<[u8; 32], String> {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| format!("QR code's {what} is not 32 bytes of base64"))
    };
    Ok(Qr {
        r#ref: parts[0].to_owned(),
        noise: key(parts[1], "noise key")?,
        identity: key(parts[2], "identity key")?,
        adv_secret: key(parts[3], "ADV secret")?,
    })
}

/// Plays the account's phone approving a new companion: registers the device and sends the
/// waiting connection its `pair-success`. Returns the new device's JID.
pub fn approve(
    world: &mut World,
    conn: u64,
    phone: &str,
    identity: [u8; 32],
    adv_secret: [u8; 32],
    device_id: Option<u16>,
) -> Result<String, String> {
    let pending: PendingPair = world
        .pending
        .get(&conn)
        .cloned()
        .ok_or("that device is no longer waiting to be linked")?;
    let account = world
        .accounts
        .get_mut(phone)
        .ok_or_else(|| format!("no account {phone}"))?;
    let device = device_id.unwrap_or_else(|| {
        (1..u16::MAX)
            .find(|d| !account.devices.contains_key(d))
            .unwrap_or(u16::MAX)
    });
    let key_index = account.next_key_index;
    account.next_key_index += 1;

    // ADVDeviceIdentity, signed by the account: [6, 0] ‖ details ‖ device identity key.
    let details = wa::ADVDeviceIdentity {
        raw_id: Some(rand::random::<u32>()),
        timestamp: Some(now()),
        key_index: Some(key_index),
        account_type: Some(wa::ADVEncryptionType::E2EE),
        device_type: Some(wa::ADVEncryptionType::E2EE),
    };
    let details = buffa::Message::encode_to_vec(&details);
    let mut to_sign = vec![6u8, 0];
    to_sign.extend_from_slice(&details);
    to_sign.extend_from_slice(&identity);
    let signature = account
        .adv_key
        .private_key
        .calculate_signature(&to_sign, &mut rand10::rng())
        .map_err(|e| format!("cannot sign device identity: {e}"))?;
    let signed = wa::ADVSignedDeviceIdentity {
        details: Some(details),
        account_signature_key: Some(account.adv_key.public_key.public_key_bytes().to_vec()),
        account_signature: Some(signature.to_vec()),
        ..Default::default()
    };
    let signed = buffa::Message::encode_to_vec(&signed);
    let mut mac =
        HmacSha256::new_from_slice(&adv_secret).map_err(|_| "bad ADV secret".to_owned())?;
    mac.update(&signed);
    let container = wa::ADVSignedDeviceIdentityHMAC {
        details: Some(signed),
        hmac: Some(mac.finalize().into_bytes().to_vec()),
        account_type: Some(wa::ADVEncryptionType::E2EE),
    };
    let container = buffa::Message::encode_to_vec(&container);

    let mut keys = pending.keys.clone();
    keys.identity = identity;
    account.devices.insert(
        device,
        Device {
            id: device,
            noise_static: pending.noise_static,
            keys,
            key_index,
            device_identity: None,
            unacked: Default::default(),
        },
    );
    let jid = if device == 0 {
        format!("{phone}@s.whatsapp.net")
    } else {
        format!("{phone}:{device}@s.whatsapp.net")
    };
    let lid = if device == 0 {
        format!("{}@lid", account.lid)
    } else {
        format!("{}:{device}@lid", account.lid)
    };
    let name = account.name.clone();
    world.pending.remove(&conn);
    let id = world.stanza_id();
    let node = NodeBuilder::new("iq")
        .attr("from", "s.whatsapp.net")
        .attr("type", "set")
        .attr("id", id)
        .attr("xmlns", "md")
        .attr("t", now().to_string())
        .children([NodeBuilder::new("pair-success")
            .children([
                NodeBuilder::new("device-identity").bytes(container).build(),
                NodeBuilder::new("platform").attr("name", "smba").build(),
                NodeBuilder::new("biz").attr("name", name).build(),
                NodeBuilder::new("device")
                    .attr("jid", jid.clone())
                    .attr("lid", lid)
                    .build(),
            ])
            .build()])
        .build();
    world.send(conn, node);
    if let Some(c) = world.conns.get_mut(&conn) {
        c.paired = Some((phone.to_owned(), device));
    }
    tracing::info!(device = %jid, "companion linked");
    Ok(jid)
}

/// Handles a scanned QR code: finds the waiting connection by ref and noise key.
pub fn scan(world: &mut World, phone: &str, code: &str) -> Result<String, String> {
    scan_as(world, phone, code, None)
}

/// [`scan`], choosing the device id (`Some(0)` makes it the account's primary device).
pub fn scan_as(
    world: &mut World,
    phone: &str,
    code: &str,
    device: Option<u16>,
) -> Result<String, String> {
    let qr = parse_qr(code)?;
    let conn = world
        .pending
        .iter()
        .find(|(_, p)| p.refs.contains(&qr.r#ref) && p.noise_static == qr.noise)
        .map(|(c, _)| *c)
        .ok_or("no connected device shows that QR code")?;
    approve(world, conn, phone, qr.identity, qr.adv_secret, device)
}

/// Stores what the client's `pair-device-sign` answer carries (its counter-signed identity) and
/// announces the new device.
pub fn store_device_sign(world: &mut World, phone: &str, device: u16, node: &Node) {
    let Some(identity) = node
        .get_optional_child_by_tag(&["pair-device-sign", "device-identity"])
        .and_then(|n| match &n.content {
            Some(wacore_binary::NodeContent::Bytes(b)) => Some(b.clone()),
            _ => None,
        })
    else {
        return;
    };
    let Some(d) = world
        .accounts
        .get_mut(phone)
        .and_then(|a| a.devices.get_mut(&device))
    else {
        return;
    };
    d.device_identity = Some(identity);
    let key_index = d.key_index;
    // Only now is the device complete (its bundle carries the counter-signed identity): the
    // account's other devices and contacts learn about it, as from WhatsApp after linking.
    notify_devices(world, phone, device, key_index, true);
}

/// Tells every device that a device of `phone` was added or removed
/// (`<notification type="devices">`), so cached device lists (the account's own other devices
/// and its contacts') include it in the next fan-out.
pub fn notify_devices(world: &mut World, phone: &str, device: u16, key_index: u32, added: bool) {
    let Some(lid) = world.accounts.get(phone).map(|a| a.lid.clone()) else {
        return;
    };
    let mut op = NodeBuilder::new(if added { "add" } else { "remove" });
    let mut dev = NodeBuilder::new("device")
        .attr("jid", super::relay::device_jid(world, phone, device, false));
    if added {
        dev = dev.attr("key-index", key_index.to_string());
    }
    let mut children = vec![dev.build()];
    if let Some(k) = super::iq::key_index_list(world, phone) {
        children.push(k);
    }
    op = op.children(children);
    let id = world.stanza_id();
    let node = NodeBuilder::new("notification")
        .attr("from", format!("{phone}@s.whatsapp.net"))
        .attr("lid", format!("{lid}@lid"))
        .attr("type", "devices")
        .attr("id", id)
        .attr("t", now().to_string())
        .children([op.build()])
        .build();
    let everyone: Vec<String> = world.accounts.keys().cloned().collect();
    for p in everyone {
        let skip = (p == phone).then_some(device);
        world.deliver_all(&p, skip, &node);
    }
}
