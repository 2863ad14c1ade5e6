//! Answering an agent's message, and keeping what it says.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use agentpkg_model::{
    Agent, AgentHealth, AgentPackageStatus, AgentUid, Assignment, AssignmentPatch, NewAssignment,
    Page, PageRequest,
};
use agentpkg_packagemgr::{Error, PackageManager};
use agentpkg_store::DynFleetStore;
use chrono::{DateTime, Utc};

use crate::attributes::{map, status_name};
use crate::offers::{DownloadCredentials, desired};
use crate::proto::{
    AgentCapabilities, AgentToServer, PackagesAvailable, ServerCapabilities, ServerErrorResponse,
    ServerErrorResponseType, ServerToAgent, ServerToAgentFlags,
};

/// Largest `AgentToServer` message accepted, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// What this server does for agents: it accepts their status and package statuses, and
/// offers packages.
pub const SERVER_CAPABILITIES: u64 = ServerCapabilities::AcceptsStatus as u64
    | ServerCapabilities::OffersPackages as u64
    | ServerCapabilities::AcceptsPackagesStatus as u64;

/// The agents of the fleet and what they are offered. Cheap to clone.
#[derive(Clone)]
pub struct Fleet {
    pub(crate) store: DynFleetStore,
    pub(crate) packages: PackageManager,
    pub(crate) credentials: Arc<dyn DownloadCredentials>,
    min_sample: u64,
    /// Signals this replica's WebSocket connections that offers may have changed
    /// ([`crate::push`]).
    pub(crate) changes: Arc<tokio::sync::watch::Sender<Option<Arc<Vec<Assignment>>>>>,
    /// Heartbeats that changed nothing but the sequence number and the time: kept here
    /// and written in batches ([`Fleet::spawn_flusher`]), so that a quiet agent costs no
    /// database write per message.
    seen: Arc<Mutex<Seen>>,
    last_seen_precision: chrono::Duration,
}

/// Per agent: the last quiet heartbeat's sequence number and time, and the last-seen time
/// its row holds.
type Seen = HashMap<AgentUid, (u64, DateTime<Utc>, DateTime<Utc>)>;

/// How stale a row's last-seen time may get before a quiet heartbeat is written, unless
/// told otherwise.
pub const DEFAULT_LAST_SEEN_PRECISION: std::time::Duration = std::time::Duration::from_secs(300);

/// Which agents a listing shows: all conditions hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentFilter {
    /// Attributes (identifying or not) the agent has, with these values.
    pub attributes: Vec<(String, String)>,
    pub healthy: Option<bool>,
    pub connected: Option<bool>,
    /// A package status the agent reported for some package (`install_failed`, …).
    pub package_status: Option<String>,
}

impl AgentFilter {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    pub fn passes(&self, agent: &Agent) -> bool {
        self.attributes.iter().all(|(k, v)| {
            agent.identifying.get(k) == Some(v) || agent.non_identifying.get(k) == Some(v)
        }) && self
            .healthy
            .is_none_or(|h| agent.health.as_ref().is_some_and(|x| x.healthy == h))
            && self.connected.is_none_or(|c| agent.connected == c)
            && self
                .package_status
                .as_ref()
                .is_none_or(|status| agent.package_statuses.iter().any(|s| &s.status == status))
    }
}

/// Agents a failure ratio is judged on, at the least, unless told otherwise.
pub const DEFAULT_MIN_SAMPLE: u64 = 5;

/// Where a rollout stands: agents by offered version and status, and the failures.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutStatus {
    pub assignment: Assignment,
    /// (offered version, status) → agents.
    pub counts: std::collections::BTreeMap<(String, String), u64>,
    /// (agent uid, offered version, error message) of each failed install.
    pub failures: Vec<(String, String, String)>,
}

impl Fleet {
    /// A fleet kept in `store`, offering `packages`' builds, with download headers from
    /// `credentials`.
    pub fn new(
        store: DynFleetStore,
        packages: PackageManager,
        credentials: Arc<dyn DownloadCredentials>,
    ) -> Self {
        Self {
            store,
            packages,
            credentials,
            min_sample: DEFAULT_MIN_SAMPLE,
            changes: Arc::new(tokio::sync::watch::Sender::new(None)),
            seen: Arc::default(),
            last_seen_precision: chrono::Duration::seconds(300),
        }
    }

    /// The same fleet writing a quiet agent's last-seen time only once the stored one is
    /// `precision` old (quiet heartbeats write nothing in between).
    pub fn with_last_seen_precision(mut self, precision: std::time::Duration) -> Self {
        self.last_seen_precision =
            chrono::Duration::from_std(precision).unwrap_or(chrono::Duration::seconds(300));
        self
    }

    /// The same fleet judging failure ratios on at least `agents` agents.
    pub fn with_rollout_min_sample(mut self, agents: u64) -> Self {
        self.min_sample = agents.max(1);
        self
    }

    /// Answers one message from an agent, keeping what it reports, and offering its
    /// desired set of packages (download URLs under `base_url`) when it accepts packages
    /// and does not have that set yet. A message the server cannot accept (a bad
    /// `instance_uid`) is answered with an `error_response` and changes nothing.
    pub async fn handle(
        &self,
        message: AgentToServer,
        base_url: &str,
    ) -> Result<ServerToAgent, Error> {
        let mut answer = ServerToAgent {
            instance_uid: message.instance_uid.clone(),
            capabilities: SERVER_CAPABILITIES,
            ..ServerToAgent::default()
        };
        let uid = match AgentUid::from_bytes(&message.instance_uid) {
            Ok(uid) => uid,
            Err(e) => {
                answer.error_response = Some(ServerErrorResponse {
                    r#type: ServerErrorResponseType::BadRequest as i32,
                    error_message: format!("{}: {}", e.field, e.message),
                    details: None,
                });
                return Ok(answer);
            }
        };
        let now = Utc::now();
        let mut known = self.store.agent(&uid).await?;
        let stored_last_seen = known.as_ref().map(|k| k.last_seen);
        // What this replica saw and has not written yet is newer than the row.
        let remembered = self.seen_of(&uid);
        if let (Some(k), Some((seq, at, _))) = (known.as_mut(), remembered)
            && seq >= k.sequence_num
        {
            k.sequence_num = seq;
            k.last_seen = at;
        }
        let mut agent = known.clone().unwrap_or_else(|| Agent::new(uid, now));
        // Sequence numbers go up by one per message; the same one again is a retry. A gap,
        // or an agent this server does not know without its description, means the
        // server's picture may be incomplete: ask for all of it.
        // NOTE: quiet heartbeats are written only every so often, so the row's sequence
        // number may lag. This replica knows the exact one for the agents it heard; for
        // others, a forward gap is not taken for a lost message while the row is younger
        // than that interval.
        let in_sequence = known.as_ref().is_some_and(|k| {
            let seq = message.sequence_num;
            seq == k.sequence_num
                || seq == k.sequence_num + 1
                || (remembered.is_none()
                    && seq > k.sequence_num
                    && now - k.last_seen < self.last_seen_precision)
        });
        let full_state = message.agent_description.is_some();
        if !in_sequence && !full_state {
            answer.flags |= ServerToAgentFlags::ReportFullState as u64;
        }
        agent.sequence_num = message.sequence_num;
        agent.capabilities = message.capabilities;
        if let Some(description) = &message.agent_description {
            agent.identifying = map(&description.identifying_attributes);
            agent.non_identifying = map(&description.non_identifying_attributes);
        }
        if let Some(health) = &message.health {
            agent.health = Some(AgentHealth {
                healthy: health.healthy,
                status: health.status.clone(),
                last_error: health.last_error.clone(),
            });
        }
        if let Some(statuses) = &message.package_statuses {
            agent.package_statuses = statuses
                .packages
                .iter()
                .map(|(name, s)| AgentPackageStatus {
                    name: if s.name.is_empty() {
                        name.clone()
                    } else {
                        s.name.clone()
                    },
                    agent_has_version: s.agent_has_version.clone(),
                    agent_has_hash: hex::encode(&s.agent_has_hash),
                    server_offered_version: s.server_offered_version.clone(),
                    server_offered_hash: hex::encode(&s.server_offered_hash),
                    status: status_name(s.status).to_owned(),
                    error_message: s.error_message.clone(),
                    download_percent: s.download_details.as_ref().map(|d| d.download_percent),
                })
                .collect();
        }
        agent.last_seen = now;
        if message.agent_disconnect.is_some() {
            agent.connected = false;
            agent.disconnects += 1;
            agent.disconnected_at = Some(now);
            tracing::info!(agent = %uid, "agent disconnected");
        } else {
            if known.is_none() {
                tracing::info!(agent = %uid, "agent connected for the first time");
            }
            agent.connected = true;
        }
        let mut sources = None;
        if agent.capabilities & AgentCapabilities::AcceptsPackages as u64 != 0
            && message.agent_disconnect.is_none()
        {
            let assignments = self.store.assignments().await?;
            let offer = desired(
                &self.packages,
                self.credentials.as_ref(),
                &agent,
                &assignments,
                base_url,
            )
            .await?;
            agent.offer_note = offer.note.clone();
            sources = Some(offer.sources.clone());
            // Only an agent that some assignment selects, or was offered packages before,
            // gets a set: an agent removes whatever is not in it.
            if offer.selected || agent.offered_hash.is_some() {
                let all = offer.all_packages_hash();
                let reported = message
                    .package_statuses
                    .as_ref()
                    .map(|s| s.server_provided_all_packages_hash.as_slice());
                let changed = agent.offered_hash.as_deref() != Some(hex::encode(&all).as_str());
                let asked =
                    full_state || answer.flags & ServerToAgentFlags::ReportFullState as u64 != 0;
                if reported != Some(all.as_slice()) && (changed || asked || reported.is_some()) {
                    agent.offered_hash = Some(hex::encode(&all));
                    answer.packages_available = Some(PackagesAvailable {
                        packages: offer.packages.into_iter().collect(),
                        all_packages_hash: all,
                    });
                }
            }
        }
        let reported = message.package_statuses.is_some();
        // A heartbeat: in sequence, nothing reported, nothing new offered.
        let quiet = in_sequence
            && !full_state
            && message.health.is_none()
            && !reported
            && message.agent_disconnect.is_none()
            && answer.packages_available.is_none()
            && known.as_ref().is_some_and(|k| {
                k.capabilities == agent.capabilities
                    && k.offer_note == agent.offer_note
                    && k.offered_hash == agent.offered_hash
            });
        if quiet {
            self.seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(
                    uid,
                    (agent.sequence_num, now, stored_last_seen.unwrap_or(now)),
                );
            return Ok(answer);
        }
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&uid);
        self.store.save_agent(agent, reported).await?;
        if reported && let Some(sources) = sources {
            self.guard(&sources).await?;
        }
        Ok(answer)
    }

    /// Records that an agent's connection ended without its disconnect message (the
    /// WebSocket transport sees that); an unknown or malformed uid is ignored.
    pub async fn connection_lost(&self, uid: &[u8]) {
        let Ok(uid) = AgentUid::from_bytes(uid) else {
            return;
        };
        let recorded = async {
            let Some(mut agent) = self.store.agent(&uid).await? else {
                return Ok::<_, Error>(());
            };
            let now = Utc::now();
            agent.connected = false;
            agent.disconnects += 1;
            agent.disconnected_at = Some(now);
            self.take_seen_into(&mut agent);
            self.store.save_agent(agent, false).await?;
            tracing::info!(agent = %uid, "agent connection lost");
            Ok(())
        };
        if let Err(e) = recorded.await {
            tracing::warn!(agent = %uid, error = %e, "a lost connection was not recorded");
        }
    }

    /// Moves what this replica heard of the agent and did not write yet into `agent`,
    /// which the caller is about to save.
    pub(crate) fn take_seen_into(&self, agent: &mut Agent) {
        let heard = self
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&agent.uid);
        if let Some((seq, at, _)) = heard
            && seq >= agent.sequence_num
        {
            agent.sequence_num = seq;
            agent.last_seen = at;
        }
    }

    fn seen_of(&self, uid: &AgentUid) -> Option<(u64, DateTime<Utc>, DateTime<Utc>)> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(uid)
            .copied()
    }

    /// Writes the quiet heartbeats whose agent's stored last-seen time is older than the
    /// precision; the others stay in memory (this replica keeps using them).
    pub async fn flush_seen(&self) -> Result<usize, Error> {
        let due: Vec<_> = {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            let mut due = Vec::new();
            for (uid, (seq, at, stored)) in seen.iter_mut() {
                if *at - *stored >= self.last_seen_precision {
                    due.push((*uid, *seq, *at));
                    *stored = *at;
                }
            }
            due
        };
        let n = due.len();
        if n > 0 {
            // A failed write loses only last-seen times, which later heartbeats renew.
            self.store.touch_agents(due).await?;
        }
        Ok(n)
    }

    /// Writes every quiet heartbeat not written yet (at shutdown).
    pub async fn flush_all_seen(&self) -> Result<usize, Error> {
        let all: Vec<_> =
            std::mem::take(&mut *self.seen.lock().unwrap_or_else(PoisonError::into_inner))
                .into_iter()
                .map(|(uid, (seq, at, _))| (uid, seq, at))
                .collect();
        let n = all.len();
        if n > 0 {
            self.store.touch_agents(all).await?;
        }
        Ok(n)
    }

    /// Flushes the heartbeats every `every` until the task is aborted.
    pub fn spawn_flusher(&self, every: std::time::Duration) -> tokio::task::JoinHandle<()> {
        let fleet = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every.max(std::time::Duration::from_millis(100)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if let Err(e) = fleet.flush_seen().await {
                    tracing::warn!(error = %e, "agents' last-seen times not written; the next heartbeats renew them");
                }
            }
        })
    }

    /// Pauses each rolling-out assignment whose share of failed installs, among the agents
    /// offered its version, is past its ratio (once enough agents were offered it).
    async fn guard(
        &self,
        sources: &std::collections::BTreeMap<String, (i64, String)>,
    ) -> Result<(), Error> {
        for (name, (id, version)) in sources {
            let Some(assignment) = self.store.assignment(*id).await? else {
                continue;
            };
            if assignment.paused.is_some() {
                continue;
            }
            let (offered, failed) = self.store.offer_outcomes(name, version).await?;
            if offered < self.min_sample {
                continue;
            }
            let ratio = failed as f64 / offered as f64;
            if ratio > assignment.max_failure_ratio {
                let why = format!(
                    "paused automatically: {failed} of {offered} agents offered {version} failed to install it ({:.0} % > {:.0} %)",
                    ratio * 100.0,
                    assignment.max_failure_ratio * 100.0
                );
                tracing::warn!(assignment = id, %why, "rollout paused");
                self.store
                    .update_assignment(
                        *id,
                        AssignmentPatch {
                            paused: Some(Some(why)),
                            ..AssignmentPatch::default()
                        },
                    )
                    .await?;
                self.offers_may_have_changed().await;
            }
        }
        Ok(())
    }

    /// Where an assignment's rollout stands.
    pub async fn rollout_status(&self, id: i64) -> Result<RolloutStatus, Error> {
        let assignment = self.assignment(id).await?;
        // Only statuses of this package's versions (other assignments may offer other
        // packages under the same name).
        let versions: std::collections::HashSet<String> = self
            .packages
            .history(&assignment.package)
            .await?
            .into_iter()
            .map(|v| v.version.to_string())
            .collect();
        let mut counts = std::collections::BTreeMap::new();
        let mut failures = Vec::new();
        for (uid, offered, _has, status, error) in
            self.store.package_statuses(&assignment.offer_as).await?
        {
            if !versions.contains(offered.trim_start_matches('v')) {
                continue;
            }
            if status == "install_failed" {
                failures.push((uid, offered.clone(), error));
            }
            *counts.entry((offered, status)).or_insert(0) += 1;
        }
        Ok(RolloutStatus {
            assignment,
            counts,
            failures,
        })
    }

    /// Creates an assignment.
    pub async fn assign(&self, new: NewAssignment) -> Result<Assignment, Error> {
        new.check()?;
        // The package must exist, under any platform, for the assignment to make sense.
        if self.packages.history(&new.package).await?.is_empty() {
            return Err(Error::NotFound);
        }
        let created = self.store.create_assignment(new).await?;
        tracing::info!(assignment = created.id, package = %created.package, version = %created.version, "assignment created");
        self.offers_may_have_changed().await;
        Ok(created)
    }

    pub async fn assignments(&self) -> Result<Vec<Assignment>, Error> {
        Ok(self.store.assignments().await?)
    }

    pub async fn assignment(&self, id: i64) -> Result<Assignment, Error> {
        self.store.assignment(id).await?.ok_or(Error::NotFound)
    }

    /// Changes an assignment: its version (a rollback is a change to an older one), its
    /// rollout, its failure ratio, or pauses or resumes it.
    pub async fn change_assignment(
        &self,
        id: i64,
        patch: AssignmentPatch,
    ) -> Result<Assignment, Error> {
        if let Some(p) = patch.rollout_percent {
            agentpkg_model::check_rollout(p)?;
        }
        if let Some(r) = patch.max_failure_ratio {
            agentpkg_model::check_ratio(r)?;
        }
        let changed = self
            .store
            .update_assignment(id, patch)
            .await?
            .ok_or(Error::NotFound)?;
        tracing::info!(assignment = id, version = %changed.version, rollout = changed.rollout_percent, paused = changed.paused.as_deref(), "assignment changed");
        self.offers_may_have_changed().await;
        Ok(changed)
    }

    pub async fn unassign(&self, id: i64) -> Result<(), Error> {
        if self.store.delete_assignment(id).await? {
            self.offers_may_have_changed().await;
            Ok(())
        } else {
            Err(Error::NotFound)
        }
    }

    /// Agents that pass `filter`, most recently seen first.
    pub async fn agents(
        &self,
        page: PageRequest,
        filter: &AgentFilter,
    ) -> Result<Page<Agent>, Error> {
        if filter.is_empty() {
            return Ok(self.store.list_agents(page).await?);
        }
        // NOTE: attributes and statuses are JSON in their rows: the filter reads every agent
        // a hundred at a time and keeps those that pass.
        let mut passing = Vec::new();
        let mut at = PageRequest::new(Some(1), Some(PageRequest::MAX_PER_PAGE));
        loop {
            let batch = self.store.list_agents(at).await?;
            let fetched = batch.items.len();
            passing.extend(batch.items.into_iter().filter(|a| filter.passes(a)));
            if fetched < at.per_page as usize {
                break;
            }
            at.page += 1;
        }
        let total = passing.len() as u64;
        let items = passing
            .into_iter()
            .skip(usize::try_from(page.offset()).unwrap_or(usize::MAX))
            .take(page.per_page as usize)
            .collect();
        Ok(Page {
            items,
            total,
            page: page.page,
            per_page: page.per_page,
        })
    }

    pub async fn agent(&self, uid: &AgentUid) -> Result<Agent, Error> {
        self.store.agent(uid).await?.ok_or(Error::NotFound)
    }
}
