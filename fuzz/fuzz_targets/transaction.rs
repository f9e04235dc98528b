//! Fuzzes the appservice transaction endpoint: token check, body parsing, storing.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

#[path = "../harness.rs"]
mod harness;

static HARNESS: OnceLock<harness::TxnHarness> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let h = HARNESS.get_or_init(harness::TxnHarness::new);
    let (id, token, body) = harness::split_input(data);
    h.transaction(&id, token, body);
});
