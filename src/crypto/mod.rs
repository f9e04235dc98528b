//! Matrix end-to-end encryption: one matrix-sdk-crypto `OlmMachine` per bridge device (the bot's
//! and each ghost's), with all their state kept in ferry's own database by [`store`], so SQLite
//! and Postgres deployments hold everything in one place and machines survive restarts.

pub mod store;
