//! Wire types and validation shared by the Vitals hub, agent and embedding library.
//!
//! This crate knows nothing of tokio, axum or SQL: it defines what travels between an agent
//! and the hub (seed 000's `MetricSample` and its batch messages, seed 002's state shapes),
//! the limits every message must respect, and the error codes the hub answers with. Message
//! enums only grow: a retired field keeps its place with the last protocol version that sent it.

pub mod limits;
pub mod messages;
pub mod pairing;
pub mod sample;
pub mod series;
pub mod state;
pub mod validate;

pub use messages::{AgentMessage, ErrorCode, HubMessage};
pub use sample::MetricSample;
pub use validate::{ValidationError, validate_sample};

/// The agent protocol version this build speaks. Samples carry it as `v`.
pub const PROTOCOL_VERSION: u32 = 1;
/// The oldest agent protocol version the hub still accepts.
pub const MIN_PROTOCOL_VERSION: u32 = 1;
