//! agentpkg as an OpAMP server (the Open Agent Management Protocol of OpenTelemetry):
//! agents report their description, health and package statuses; the fleet keeps that
//! state in the database, so any replica answers any agent, and answers each message.
//!
//! No HTTP here: the API decodes the transport and hands [`Fleet::handle`] the message.

mod agents;
mod attributes;
mod handle;
mod limits;
mod offers;
mod overview;
mod push;
mod rollout;

/// The OpAMP messages, generated at build time from `proto/opamp/v1/*.proto` (our own
/// files, written from the specification's message definitions).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/opamp.proto.v1.rs"));
}

pub use agentpkg_model::AgentFilter;
pub use agents::{
    DEFAULT_LAST_SEEN_PRECISION, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MIN_SAMPLE, Fleet,
    RolloutStatus, SERVER_CAPABILITIES,
};
pub use handle::{Refusal, Reply, owner_of};
pub use limits::FleetLimits;
pub use offers::DownloadCredentials;
pub use overview::FleetOverview;
pub use push::{DEFAULT_OFFER_WATCH, OfferChanges};
pub use rollout::{DEFAULT_ROLLOUT_TICK, DEFAULT_WAVE_STEP_AGENTS, RolloutDetail, TickObserver};
