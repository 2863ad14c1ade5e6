//! `[stats]` and `[retention]`.

use agentpkg_model::{RetentionPolicy, RetentionPolicySpec};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatsSettings {
    /// Count downloads (see the counting definition in the README). Off, downloads touch
    /// nothing but the object store, and the counts stay where they are.
    pub count_downloads: bool,
    /// Seconds between writes of the counts to the database (and one at shutdown): a crash
    /// loses at most this much counting. 1 to 3600.
    pub flush_secs: u64,
    /// Seconds an answer of `/stats/top` or `/stats/storage` is kept (per replica); 0
    /// computes each request afresh.
    pub cache_secs: u64,
    /// Seconds between refreshes of the storage gauges of `/metrics`
    /// (`agentpkg_stored_bytes`, `agentpkg_stored_objects`, `agentpkg_packages`). 1 to 86400.
    pub gauge_refresh_secs: u64,
}

impl Default for StatsSettings {
    fn default() -> Self {
        Self {
            count_downloads: true,
            flush_secs: 10,
            cache_secs: 30,
            gauge_refresh_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSettings {
    /// Seconds between retention runs of `policies`; 0 (the default) runs them only when
    /// asked (`POST /api/v1/retention/run`, `agentpkg-server retention`).
    pub interval_secs: u64,
    /// The policies, in order: `[[retention.policies]]` tables with `rule`
    /// (`keep_newest`, `yanked_older_than`, `not_downloaded_for`), `versions` or `days`,
    /// and optional `names` patterns.
    pub policies: Vec<RetentionPolicySpec>,
}

impl RetentionSettings {
    /// The policies, checked.
    pub fn policies(&self) -> Result<Vec<RetentionPolicy>, String> {
        self.policies
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                RetentionPolicy::try_from(spec)
                    .map_err(|e| format!("retention.policies[{i}].{}: {}", e.field, e.message))
            })
            .collect()
    }
}

impl StatsSettings {
    pub(crate) fn check(&self) -> Result<(), String> {
        if !(1..=3600).contains(&self.flush_secs) {
            return Err(format!(
                "stats.flush_secs must be 1 to 3600, is {}",
                self.flush_secs
            ));
        }
        if !(1..=86_400).contains(&self.gauge_refresh_secs) {
            return Err(format!(
                "stats.gauge_refresh_secs must be 1 to 86400, is {}",
                self.gauge_refresh_secs
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetSettings {
    /// Seconds the download credential in an OpAMP offer's headers works (for that one
    /// package only).
    pub download_ttl_secs: u64,
    /// Agents offered a version, at the least, before its share of failed installs can
    /// pause a rollout.
    pub rollout_min_sample: u64,
    /// Seconds between writes of the heartbeats that changed nothing else (sequence
    /// numbers and last-seen times, kept in memory meanwhile, and written at shutdown):
    /// `last_seen` trails by up to this much.
    pub seen_flush_secs: u64,
    /// A quiet agent's stored `last_seen` is moved on only once it is this many seconds
    /// old: between those writes its heartbeats write nothing (the replica that hears them
    /// knows the exact time).
    pub last_seen_precision_secs: u64,
    /// Milliseconds between reads of the fleet revision: how soon an assignment, upload or
    /// yank made through another replica reaches the agents connected here over WebSocket
    /// (changes made through this replica are pushed at once).
    pub offer_watch_ms: u64,
    /// Milliseconds between the rollout engine's evaluations (on the one replica that
    /// holds its lease; another takes it over within three of these, at least 2 s).
    pub rollout_tick_ms: u64,
    /// Whether this replica takes part in evaluating rollouts (one replica at a time
    /// does; `false` keeps a replica to answering requests).
    pub rollout_engine: bool,
    /// How many times faster than the wall clock rollouts run: bake times, silences,
    /// retry pauses and maintenance windows all pass this much faster. 1 in production;
    /// tests and demonstrations set 60 or 600.
    pub rollout_time_scale: u32,
    /// Agents a rollout's wave newly offers per engine tick, and a tenth of the agents read
    /// per tick while a wave's members are chosen: a large wave starts over several short
    /// ticks (0: a whole wave in one step).
    pub rollout_wave_step_agents: usize,
    /// Seconds between the pings the server sends an agent connected over WebSocket; one
    /// silent (no message, no pong) for three times this is disconnected.
    pub websocket_ping_secs: u64,
    /// Largest OpAMP message (`AgentToServer`), in bytes, on either transport.
    pub max_message_bytes: usize,
    /// Attributes (identifying and not) one agent description may carry.
    pub max_attributes: usize,
    /// Bytes of one description's attribute keys and values together.
    pub max_attribute_bytes: usize,
    /// Package statuses one message may report.
    pub max_statuses: usize,
    /// Agents bound to one credential (an API token, or a user's sessions): a new agent
    /// past it is refused (429).
    pub max_agents_per_credential: u64,
    /// OpAMP WebSocket connections one replica holds, in all and per credential.
    pub max_websockets: usize,
    pub max_websockets_per_credential: usize,
    /// Agents silent this many days are forgotten (their binding too); 0 keeps them.
    pub forget_after_days: u64,
}

impl FleetSettings {
    /// The bounds the fleet applies to agents' messages.
    pub fn limits(&self) -> agentpkg_fleet::FleetLimits {
        agentpkg_fleet::FleetLimits {
            max_attributes: self.max_attributes,
            max_attribute_bytes: self.max_attribute_bytes,
            max_statuses: self.max_statuses,
            agents_per_credential: self.max_agents_per_credential,
        }
    }

    /// The OpAMP WebSocket transport's pings and connection limits.
    pub fn transport(&self) -> agentpkg_api::OpampTransport {
        agentpkg_api::OpampTransport {
            max_message_bytes: self.max_message_bytes,
            ..agentpkg_api::OpampTransport::new(
                std::time::Duration::from_secs(self.websocket_ping_secs),
                agentpkg_api::ConnectionLimits {
                    per_replica: self.max_websockets,
                    per_credential: self.max_websockets_per_credential,
                },
            )
        }
    }
}

impl Default for FleetSettings {
    fn default() -> Self {
        let limits = agentpkg_fleet::FleetLimits::default();
        let connections = agentpkg_api::ConnectionLimits::default();
        Self {
            download_ttl_secs: 3600,
            rollout_min_sample: agentpkg_fleet::DEFAULT_MIN_SAMPLE,
            seen_flush_secs: 10,
            last_seen_precision_secs: agentpkg_fleet::DEFAULT_LAST_SEEN_PRECISION.as_secs(),
            offer_watch_ms: agentpkg_fleet::DEFAULT_OFFER_WATCH.as_millis() as u64,
            rollout_tick_ms: agentpkg_fleet::DEFAULT_ROLLOUT_TICK.as_millis() as u64,
            rollout_time_scale: 1,
            rollout_wave_step_agents: agentpkg_fleet::DEFAULT_WAVE_STEP_AGENTS,
            rollout_engine: true,
            websocket_ping_secs: 30,
            max_message_bytes: agentpkg_fleet::DEFAULT_MAX_MESSAGE_BYTES,
            max_attributes: limits.max_attributes,
            max_attribute_bytes: limits.max_attribute_bytes,
            max_statuses: limits.max_statuses,
            max_agents_per_credential: limits.agents_per_credential,
            max_websockets: connections.per_replica,
            max_websockets_per_credential: connections.per_credential,
            forget_after_days: 30,
        }
    }
}
