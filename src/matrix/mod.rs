//! Everything that speaks Matrix, and nothing network-specific.

pub mod appservice;
pub mod client;
pub mod event;
pub mod intent;
pub mod registration;
