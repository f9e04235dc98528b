//! Integration tests: the real ferry binary against the real Synapse (and Postgres) started by
//! `scripts/test.sh`, with the sim network's server in-process. Each scenario runs on SQLite and
//! on Postgres.

// matrix-sdk's client futures (tests/it/e2ee.rs) nest deeper than the default limit.
#![recursion_limit = "256"]

mod appservice;
mod bridge;
mod cli;
mod common;
mod crash;
mod drills;
mod e2ee;
mod events;
mod signal;
mod signal_contract;
mod telegram;
mod whatsapp;
mod whatsapp_groups;
mod whatsapp_health;
mod whatsapp_kinds;

/// Instantiates an async scenario `fn(Backend)` once per database backend.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, ignore = $why:literal) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = $why]
            async fn sqlite() {
                super::$name($crate::common::Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = $why]
            async fn postgres() {
                super::$name($crate::common::Backend::Postgres).await;
            }
        }
    };
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::common::Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::common::Backend::Postgres).await;
            }
        }
    };
}
