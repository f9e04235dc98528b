//! The server's half of MTProto 2.0 encryption and of Telegram's 2FA SRP check.
//!
//! Messages from the client are decrypted with `x = 0` and answers encrypted with `x = 8`
//! (<https://core.telegram.org/mtproto/description>); AES-256-IGE itself is grammers-crypto's, so
//! only the key schedule lives here. The SRP half is the server side of
//! <https://core.telegram.org/api/srp>: grammers computes `M1` from `srp_B` and the simulator checks
//! it against the password verifier `v`, never seeing the password on the wire.

use grammers_crypto::aes;
use hmac::Hmac;
use num_bigint::BigUint;
use rand::RngCore as _;
use sha1::Sha1;
use sha2::{Digest as _, Sha256, Sha512};

/// Telegram's 2048-bit safe prime (the one its clients recognise for DH and SRP), generator 3.
pub const SRP_PRIME_HEX: &str = concat!(
    "C71CAEB9C6B1C9048E6C522F70F13F73980D40238E3E21C14934D037563D930F",
    "48198A0AA7C14058229493D22530F4DBFA336F6E0AC925139543AED44CCE7C37",
    "20FD51F69458705AC68CD4FE6B6B13ABDC9746512969328454F18FAF8C595F64",
    "2477FE96BB2A941D5BCD1D4AC8CC49880708FA9B378E3C4F3A9060BEE67CF9A4",
    "A4A695811051907E162753B56B0F6B410DBA74D8A84B2A14B3144E0EF1284754",
    "FD17ED950D5965B4B9DD46582DB1178D169C6BC465B0D6FF9CA3928FEF5B9AE4",
    "E418FC15E83EBEA0F87FA9FF5EED70050DED2849F47BF959D956850CE929851F",
    "0D8115F635B105EE2E4E15D04B2454BF6F4FADF034B10403119CD8E3B92FCC5B",
);
/// The SRP generator Telegram uses with [`SRP_PRIME_HEX`].
pub const SRP_G: u32 = 3;

/// A permanent authorization key shared with the client, and its id.
#[derive(Clone)]
pub struct AuthKey {
    pub data: [u8; 256],
    pub id: i64,
}

impl AuthKey {
    pub fn new(data: [u8; 256]) -> Self {
        let sha = sha1(&[&data]);
        let mut id = [0u8; 8];
        id.copy_from_slice(&sha[12..20]);
        Self {
            data,
            id: i64::from_le_bytes(id),
        }
    }
}

impl std::fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key itself is a secret; its id is what Telegram logs too.
        write!(f, "AuthKey({:016x})", self.id)
    }
}

/// Why an encrypted packet was refused.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("packet of {0} bytes is not an encrypted MTProto message")]
    Length(usize),
    #[error("msg_key does not match the decrypted payload")]
    MsgKey,
}

pub fn sha1(parts: &[&[u8]]) -> [u8; 20] {
    use sha1::Digest as _;
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn calc_key(key: &AuthKey, msg_key: &[u8; 16], x: usize) -> ([u8; 32], [u8; 32]) {
    let a = sha256(&[msg_key, &key.data[x..x + 36]]);
    let b = sha256(&[&key.data[40 + x..40 + x + 36], msg_key]);
    let mut aes_key = [0u8; 32];
    aes_key[..8].copy_from_slice(&a[..8]);
    aes_key[8..24].copy_from_slice(&b[8..24]);
    aes_key[24..].copy_from_slice(&a[24..]);
    let mut aes_iv = [0u8; 32];
    aes_iv[..8].copy_from_slice(&b[..8]);
    aes_iv[8..24].copy_from_slice(&a[8..24]);
    aes_iv[24..].copy_from_slice(&b[24..]);
    (aes_key, aes_iv)
}

/// Reads the auth_key_id of an encrypted packet (`None` for a too-short packet).
pub fn packet_key_id(packet: &[u8]) -> Option<i64> {
    let id: [u8; 8] = packet.get(..8)?.try_into().ok()?;
    Some(i64::from_le_bytes(id))
}

/// Decrypts a client->server packet (`auth_key_id | msg_key | encrypted_data`, x = 0) whose key
/// id the caller has already matched; returns the plaintext (salt, session_id, message, padding).
pub fn decrypt_from_client(key: &AuthKey, packet: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if packet.len() < 24 + 16 || !(packet.len() - 24).is_multiple_of(16) {
        return Err(CryptoError::Length(packet.len()));
    }
    let mut msg_key = [0u8; 16];
    msg_key.copy_from_slice(&packet[8..24]);
    let (k, iv) = calc_key(key, &msg_key, 0);
    let mut plain = packet[24..].to_vec();
    aes::ige_decrypt(&mut plain, &k, &iv);
    let large = sha256(&[&key.data[88..88 + 32], &plain]);
    if large[8..24] != msg_key {
        return Err(CryptoError::MsgKey);
    }
    Ok(plain)
}

/// Encrypts a server->client plaintext (x = 8), adding 12..1024 bytes of random padding.
pub fn encrypt_to_client(key: &AuthKey, mut plain: Vec<u8>) -> Vec<u8> {
    let mut pad = 16 + (16 - plain.len() % 16);
    if pad < 12 {
        pad += 16;
    }
    let mut padding = vec![0u8; pad];
    rand::rng().fill_bytes(&mut padding);
    plain.extend_from_slice(&padding);
    let large = sha256(&[&key.data[88 + 8..88 + 8 + 32], &plain]);
    let mut msg_key = [0u8; 16];
    msg_key.copy_from_slice(&large[8..24]);
    let (k, iv) = calc_key(key, &msg_key, 8);
    aes::ige_encrypt(&mut plain, &k, &iv);
    let mut out = Vec::with_capacity(24 + plain.len());
    out.extend_from_slice(&key.id.to_le_bytes());
    out.extend_from_slice(&msg_key);
    out.extend_from_slice(&plain);
    out
}

/// The server's record of a 2FA password: the salts and the verifier `v = g^x mod p`.
#[derive(Clone)]
pub struct SrpVerifier {
    pub salt1: Vec<u8>,
    pub salt2: Vec<u8>,
    v: BigUint,
}

impl std::fmt::Debug for SrpVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SrpVerifier(..)")
    }
}

/// One `account.getPassword` challenge: the server's secret `b` and public `B`.
#[derive(Clone)]
pub struct SrpChallenge {
    pub srp_id: i64,
    b: BigUint,
    pub g_b: [u8; 256],
}

pub fn srp_prime() -> Vec<u8> {
    (0..SRP_PRIME_HEX.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(&SRP_PRIME_HEX[i..i + 2], 16).ok())
        .collect()
}

fn pad256(n: &BigUint) -> [u8; 256] {
    let bytes = n.to_bytes_be();
    let mut out = [0u8; 256];
    let len = bytes.len().min(256);
    out[256 - len..].copy_from_slice(&bytes[bytes.len() - len..]);
    out
}

fn g_padded() -> [u8; 256] {
    pad256(&BigUint::from(SRP_G))
}

fn sh(data: &[u8], salt: &[u8]) -> [u8; 32] {
    sha256(&[salt, data, salt])
}

/// PH2 of <https://core.telegram.org/api/srp> (PBKDF2-HMAC-SHA512, 100000 rounds: slow on purpose).
fn ph2(password: &[u8], salt1: &[u8], salt2: &[u8]) -> [u8; 32] {
    let ph1 = sh(&sh(password, salt1), salt2);
    let mut dk = [0u8; 64];
    // pbkdf2 only fails for an output length HMAC cannot produce; 64 bytes is SHA-512's own size.
    let _ = pbkdf2::pbkdf2::<Hmac<Sha512>>(&ph1, salt1, 100_000, &mut dk);
    sh(&dk, salt2)
}

impl std::fmt::Debug for SrpChallenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SrpChallenge({})", self.srp_id)
    }
}

impl SrpVerifier {
    /// Derives the verifier of `password` with fresh salts (as when the user sets it).
    pub fn new(password: &str) -> Self {
        let mut salt1 = vec![0u8; 40];
        let mut salt2 = vec![0u8; 16];
        rand::rng().fill_bytes(&mut salt1);
        rand::rng().fill_bytes(&mut salt2);
        let p = BigUint::from_bytes_be(&srp_prime());
        let x = BigUint::from_bytes_be(&ph2(password.as_bytes(), &salt1, &salt2));
        let v = BigUint::from(SRP_G).modpow(&x, &p);
        Self { salt1, salt2, v }
    }

    /// A new challenge: `B = (k*v + g^b) mod p`.
    pub fn challenge(&self) -> SrpChallenge {
        let p_bytes = srp_prime();
        let p = BigUint::from_bytes_be(&p_bytes);
        let mut b_bytes = [0u8; 256];
        rand::rng().fill_bytes(&mut b_bytes);
        let b = BigUint::from_bytes_be(&b_bytes);
        let k = BigUint::from_bytes_be(&sha256(&[&p_bytes, &g_padded()]));
        let g_b = (k * &self.v + BigUint::from(SRP_G).modpow(&b, &p)) % &p;
        SrpChallenge {
            srp_id: rand::random(),
            b,
            g_b: pad256(&g_b),
        }
    }

    /// Checks the client's `A` and `M1` against a challenge it answered.
    pub fn check(&self, challenge: &SrpChallenge, g_a: &[u8], m1: &[u8]) -> bool {
        let p_bytes = srp_prime();
        let p = BigUint::from_bytes_be(&p_bytes);
        let a = BigUint::from_bytes_be(g_a);
        if a == BigUint::ZERO || a >= p {
            return false;
        }
        let a_pad = pad256(&a);
        let u = BigUint::from_bytes_be(&sha256(&[&a_pad, &challenge.g_b]));
        let s = (a * self.v.modpow(&u, &p)).modpow(&challenge.b, &p);
        let k_a = sha256(&[&pad256(&s)]);
        let h_p = sha256(&[&p_bytes]);
        let h_g = sha256(&[&g_padded()]);
        let xor: Vec<u8> = h_p.iter().zip(h_g.iter()).map(|(x, y)| x ^ y).collect();
        let expected = sha256(&[
            &xor,
            &sha256(&[&self.salt1]),
            &sha256(&[&self.salt2]),
            &a_pad,
            &challenge.g_b,
            &k_a,
        ]);
        expected.as_slice() == m1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encryption_round_trips_through_grammers_client_side() {
        // grammers' decrypt_data_v2 is the client reading a server packet (x = 8).
        let mut data = [0u8; 256];
        rand::rng().fill_bytes(&mut data);
        let key = AuthKey::new(data);
        let plain = vec![7u8; 40];
        let mut packet = encrypt_to_client(&key, plain.clone());
        let client_key = grammers_crypto::AuthKey::from_bytes(data);
        let out = grammers_crypto::decrypt_data_v2(&mut packet, &client_key).expect("decrypts");
        assert_eq!(&out[..40], &plain[..]);
    }

    #[test]
    fn client_packets_decrypt() {
        let mut data = [0u8; 256];
        rand::rng().fill_bytes(&mut data);
        let key = AuthKey::new(data);
        let client_key = grammers_crypto::AuthKey::from_bytes(data);
        let mut buf = grammers_crypto::DequeBuffer::with_capacity(64, 64);
        buf.extend([9u8; 48]);
        grammers_crypto::encrypt_data_v2(&mut buf, &client_key);
        let packet = buf[..].to_vec();
        assert_eq!(packet_key_id(&packet), Some(key.id));
        let plain = decrypt_from_client(&key, &packet).expect("decrypts");
        assert_eq!(&plain[..48], &[9u8; 48]);
    }

    #[test]
    fn srp_accepts_the_right_password_only() {
        let verifier = SrpVerifier::new("hunter2");
        let challenge = verifier.challenge();
        let mut a = vec![0u8; 256];
        rand::rng().fill_bytes(&mut a);
        let p = srp_prime();
        assert!(grammers_crypto::two_factor_auth::check_p_and_g(&p, &3));
        let (m1, g_a) = grammers_crypto::two_factor_auth::calculate_2fa(
            &verifier.salt1,
            &verifier.salt2,
            &p,
            &3,
            challenge.g_b.to_vec(),
            a.clone(),
            "hunter2",
        );
        assert!(verifier.check(&challenge, &g_a, &m1));
        let (m1, g_a) = grammers_crypto::two_factor_auth::calculate_2fa(
            &verifier.salt1,
            &verifier.salt2,
            &p,
            &3,
            challenge.g_b.to_vec(),
            a,
            "wrong",
        );
        assert!(!verifier.check(&challenge, &g_a, &m1));
    }
}
