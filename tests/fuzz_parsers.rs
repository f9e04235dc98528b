//! The fuzz targets of `fuzz/` as a bounded property test on stable Rust: thousands of mutated
//! and generated transactions and events go through the same entry points and checks
//! (`fuzz/harness.rs`). cargo-fuzz itself needs nightly (or `RUSTC_BOOTSTRAP=1`) and runs for as
//! long as it is given; this runs in every `cargo test`, within a fixed time budget, from a seed
//! that is printed (replay one with `FERRY_FUZZ_SEED`).

#[path = "../fuzz/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

/// xorshift64*: deterministic from its seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn seed() -> u64 {
    let seed = std::env::var("FERRY_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("fuzz seed {seed} (replay with FERRY_FUZZ_SEED={seed})");
    seed
}

/// Fragments that make mutations land on interesting JSON.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    ":",
    ",",
    "null",
    "true",
    "-0",
    "1e999",
    "\\u0000",
    "\\ud800",
    "\\\"",
    "\"type\"",
    "\"events\"",
    "\"content\"",
    "\"room_id\"",
    "\"sender\"",
    "\"event_id\"",
    "\"m.room.message\"",
    "\"m.room.member\"",
    "\"state_key\"",
    "\"membership\"",
    "\"invite\"",
    "\"msgtype\"",
    "\"body\"",
    "\"m.relates_to\"",
    "\"rel_type\"",
    "\"m.replace\"",
    "\u{202e}",
    "\u{0}",
    "\u{feff}",
    "!r:localhost",
    "@u:localhost",
    "$e",
    "99999999999999999999",
];

fn event_seed(i: usize) -> String {
    format!(
        r#"{{"type": "m.room.message", "room_id": "!r{i}:localhost", "sender": "@u:localhost", "event_id": "$e{i}", "origin_server_ts": 1, "content": {{"msgtype": "m.text", "body": "hi {i}", "m.relates_to": {{"rel_type": "m.replace", "event_id": "$e0"}}}}}}"#
    )
}

fn seeds() -> Vec<Vec<u8>> {
    let member = r#"{"type": "m.room.member", "room_id": "!r:localhost", "sender": "@u:localhost", "event_id": "$m", "state_key": "@b:localhost", "content": {"membership": "invite", "is_direct": true}}"#;
    vec![
        format!(r#"{{"events": [{}, {member}]}}"#, event_seed(1)).into_bytes(),
        br#"{"events": [], "ephemeral": [{"type": "m.typing", "content": {}}]}"#.to_vec(),
        format!(r#"{{"events": [{}]}}"#, event_seed(2)).into_bytes(),
        br#"[[{"type": "x"}]]"#.to_vec(),
        br#"{"events": [5, "x", null, {"type": 5}]}"#.to_vec(),
        member.as_bytes().to_vec(),
    ]
}

fn mutate(rng: &mut Rng, input: &[u8], seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(7) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 => out.insert(at, rng.next() as u8),
            2 => {
                let token = rng.pick(TOKENS).as_bytes();
                out.splice(at..at, token.iter().copied());
            }
            3 if !out.is_empty() => {
                let end = (at + rng.below(16)).min(out.len());
                out.drain(at.min(end)..end);
            }
            4 if !out.is_empty() => {
                let start = rng.below(out.len());
                let end = (start + rng.below(64)).min(out.len());
                let copy = out[start..end].to_vec();
                out.splice(at..at, copy);
            }
            5 => {
                let other = rng.pick(seeds);
                let from = rng.below(other.len());
                out.truncate(at);
                out.extend_from_slice(&other[from..]);
            }
            _ => {
                let token = rng.pick(TOKENS).as_bytes();
                let end = (at + token.len()).min(out.len());
                out.splice(at..end, token.iter().copied());
            }
        }
    }
    out
}

/// A random JSON value shaped like (parts of) an event.
fn generate(rng: &mut Rng, depth: usize) -> String {
    match rng.below(if depth > 3 { 4 } else { 7 }) {
        0 => "null".to_owned(),
        1 => (rng.next() as i64).to_string(),
        2 => format!("{:?}", rng.pick(TOKENS).trim_matches('"')),
        3 => ["true", "false", "\"\"", "1.5e308"][rng.below(4)].to_owned(),
        4 => {
            let n = rng.below(4);
            let items: Vec<String> = (0..n).map(|_| generate(rng, depth + 1)).collect();
            format!("[{}]", items.join(","))
        }
        _ => {
            let keys = [
                "type",
                "room_id",
                "sender",
                "event_id",
                "state_key",
                "content",
                "membership",
                "msgtype",
                "body",
                "m.relates_to",
                "rel_type",
                "is_direct",
                "events",
            ];
            let n = rng.below(6);
            let fields: Vec<String> = (0..n)
                .map(|_| format!("{:?}: {}", rng.pick(&keys), generate(rng, depth + 1)))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
    }
}

#[test]
fn transactions_from_mutated_and_generated_input() {
    let mut rng = Rng(seed());
    let h = harness::TxnHarness::new();
    let seeds = seeds();
    let budget = Duration::from_secs(20);
    let started = Instant::now();
    let (mut runs, mut accepted, mut refused, mut repeats) = (0u32, 0u32, 0u32, 0u32);
    let mut used_ids: Vec<String> = Vec::new();
    while runs < 3000 && started.elapsed() < budget {
        let body = match rng.below(4) {
            0 => format!(
                "{{\"events\": [{}]}}",
                (0..rng.below(5))
                    .map(|_| generate(&mut rng, 1))
                    .collect::<Vec<_>>()
                    .join(",")
            )
            .into_bytes(),
            _ => {
                let base = rng.pick(&seeds).clone();
                mutate(&mut rng, &base, &seeds)
            }
        };
        let token = match rng.below(10) {
            0 => None,
            1 => Some("wrong"),
            _ => Some(harness::HS_TOKEN),
        };
        let id = if !used_ids.is_empty() && rng.below(10) == 0 {
            repeats += 1;
            rng.pick(&used_ids).clone()
        } else {
            format!("fz{}", rng.next())
        };
        let outcome = h.transaction(&id, token, &body);
        if outcome.status == 200 {
            accepted += 1;
            used_ids.push(id);
        } else {
            refused += 1;
        }
        runs += 1;
    }
    // Oversized bodies are refused with nothing stored.
    let big = format!(
        "{{\"events\": [], \"pad\": \"{}\"}}",
        "x".repeat(harness::MAX_BODY)
    );
    assert_eq!(
        h.transaction("big", Some(harness::HS_TOKEN), big.as_bytes())
            .status,
        413
    );
    eprintln!(
        "{runs} transactions in {:.1} s: {accepted} accepted, {refused} refused, {repeats} repeated ids",
        started.elapsed().as_secs_f64()
    );
    assert!(runs >= 200, "too few runs in the time budget: {runs}");
    assert!(
        accepted > 0 && refused > 0,
        "the input mix reaches both outcomes"
    );
}

#[test]
fn events_from_mutated_and_generated_input() {
    let mut rng = Rng(seed());
    let mut seeds = seeds();
    seeds.extend((0..4).map(|i| event_seed(i).into_bytes()));
    let started = Instant::now();
    let mut runs = 0u32;
    while runs < 50_000 && started.elapsed() < Duration::from_secs(5) {
        let input = if rng.below(3) == 0 {
            generate(&mut rng, 0).into_bytes()
        } else {
            let base = rng.pick(&seeds).clone();
            mutate(&mut rng, &base, &seeds)
        };
        harness::event(&input);
        runs += 1;
    }
    eprintln!("{runs} events parsed");
}
