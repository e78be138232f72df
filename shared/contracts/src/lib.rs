//! Contracts shared by every sluice service: the JSON messages that cross RabbitMQ
//! ([`messages`]), the layered configuration ([`config`]) and small vocabulary helpers
//! ([`ids`], [`redact`]) and the catalog of exported metrics ([`telemetry`]).
//!
//! Nothing here does I/O. Messages are the wire format documented in `docs/architecture.md`
//! ("Messages"); every message carries `"v": 1` and a reader rejects any other version.

pub mod config;
pub mod ids;
pub mod messages;
pub mod plugin_env;
pub mod raw_rows;
pub mod redact;
pub mod telemetry;

pub use config::Settings;
pub use messages::*;
pub use raw_rows::{RawRow, RawRows};
