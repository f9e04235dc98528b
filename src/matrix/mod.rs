//! Everything that speaks Matrix, and nothing network-specific.

pub mod appservice;
pub mod client;
pub mod event;
pub mod format;
pub mod intent;
pub mod media;
pub mod registration;
