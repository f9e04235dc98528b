//! Small encoders and generators the simulator needs (the crate has no base64/uuid dependency).

use rand::Rng as _;

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub(crate) fn b64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard or URL-safe base64, padded or not; `None` when it is not base64.
pub(crate) fn b64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
    }
    if bits >= 6 {
        // A single leftover character cannot encode a byte.
        return None;
    }
    Some(out)
}

/// Lower-case hex, bytes separated by spaces (signal-cli's fingerprint format).
pub(crate) fn hex_spaced(data: &[u8]) -> String {
    data.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Lower-case hex without separators.
pub(crate) fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses hex (either case, no separators).
pub(crate) fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|s| u8::from_str_radix(s, 16).ok())
        })
        .collect()
}

/// A random version-4 UUID in its canonical text form.
pub(crate) fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand::rng().random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Whether `text` is a canonical UUID (any version, either case).
pub(crate) fn is_uuid(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// `n` random bytes.
pub(crate) fn random_bytes(n: usize) -> Vec<u8> {
    let mut rng = rand::rng();
    (0..n).map(|_| rng.random()).collect()
}

/// A random identity key: 0x05 (Curve25519 type byte) and 32 random bytes.
pub(crate) fn identity_key() -> Vec<u8> {
    let mut key = vec![0x05];
    key.extend(random_bytes(32));
    key
}

/// A deterministic 64-bit mix of `data` (FNV-1a followed by a splitmix finaliser).
fn mix(data: &[u8], seed: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The 60-digit safety number of the pair of identities (order independent, like Signal's).
pub(crate) fn safety_number(a_id: &str, a_key: &[u8], b_id: &str, b_key: &[u8]) -> String {
    let mut parts = [
        [a_id.as_bytes(), a_key].concat(),
        [b_id.as_bytes(), b_key].concat(),
    ];
    parts.sort();
    let joined = parts.concat();
    (0..12)
        .map(|i| format!("{:05}", mix(&joined, i) % 100_000))
        .collect()
}

/// Groups a 60-digit safety number in 12 blocks of 5, as `listIdentities` shows it.
pub(crate) fn format_safety_number(digits: &str) -> String {
    digits
        .as_bytes()
        .chunks(5)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Bytes standing in for the scannable safety number (a protobuf in real Signal).
pub(crate) fn scannable_safety_number(digits: &str) -> Vec<u8> {
    let mut out = vec![0x08, 0x00, 0x12, 0x3c];
    out.extend_from_slice(digits.as_bytes());
    out
}

/// Percent-encodes everything outside the URL-unreserved set.
pub(crate) fn url_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-decodes (`+` stays `+`); `None` on a broken escape or non-UTF-8 result.
pub(crate) fn url_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hexpart = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hexpart, 16).ok()?);
            i += 3;
        } else if bytes[i] == b'+' {
            // java.net.URLDecoder, which signal-cli uses, reads '+' as a space.
            out.push(b' ');
            i += 1;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A file extension for a MIME type, as signal-cli names stored attachments.
pub(crate) fn extension_for(content_type: &str) -> Option<&'static str> {
    Some(match content_type {
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "image/gif" => "gif",
        "image/webp" => "webp",
        "video/mp4" => "mp4",
        "audio/aac" => "aac",
        "audio/mpeg" => "mp3",
        "audio/ogg" => "ogg",
        "text/plain" => "txt",
        "application/pdf" => "pdf",
        _ => return None,
    })
}

/// A MIME type guessed from a file name, as signal-cli does for file attachments.
pub(crate) fn content_type_for(filename: &str) -> &'static str {
    let ext = filename
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "mp4" => "video/mp4",
        "aac" => "audio/aac",
        "mp3" => "audio/mpeg",
        "ogg" | "oga" => "audio/ogg",
        "txt" => "text/plain",
        "pdf" => "application/pdf",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for data in [&b""[..], b"f", b"fo", b"foo", b"foob", b"fooba", b"foobar"] {
            let text = b64_encode(data);
            assert_eq!(b64_decode(&text).as_deref(), Some(data));
        }
        assert_eq!(b64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(b64_encode(b"fo"), "Zm8=");
        assert_eq!(b64_decode("Zm8"), Some(b"fo".to_vec()));
        assert_eq!(b64_decode("*"), None);
    }

    #[test]
    fn uuids_are_canonical() {
        let id = uuid_v4();
        assert!(is_uuid(&id), "{id}");
        assert_eq!(&id[14..15], "4");
        assert!(!is_uuid("+33123456789"));
    }

    #[test]
    fn safety_numbers_are_symmetric() {
        let a = safety_number("a", b"ka", "b", b"kb");
        assert_eq!(a.len(), 60);
        assert_eq!(a, safety_number("b", b"kb", "a", b"ka"));
        assert_eq!(format_safety_number(&a).len(), 71);
    }

    #[test]
    fn url_coding_round_trips() {
        assert_eq!(url_encode("a+b/c="), "a%2Bb%2Fc%3D");
        assert_eq!(url_decode("a%2Bb%2Fc%3D").as_deref(), Some("a+b/c="));
        assert_eq!(url_decode("%zz"), None);
    }
}
