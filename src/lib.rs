//! ferry: a Matrix appservice bridging remote chat networks (one process for all of them).
//!
//! Layout (see ../DESIGN.md): `matrix` speaks Matrix, `network` holds the connector contract and
//! one module per network, `bridge` joins them; `db` is the one database; `app` wires it all up.

pub mod app;
pub mod bridge;
pub mod config;
pub mod crypto;
pub mod db;
pub mod logging;
pub mod matrix;
pub mod metrics;
pub mod network;
