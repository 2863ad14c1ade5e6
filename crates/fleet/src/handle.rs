//! Answering one message from an agent, in four steps: identify the agent (and check that
//! the credential may speak for it), record what it said, decide its offer, guard the
//! rollouts its report is about.

use std::collections::BTreeMap;
use std::sync::PoisonError;

use agentpkg_model::{
    Agent, AgentHealth, AgentOwner, AgentPackageStatus, AgentUid, AuditAction, OfferedBuild,
};
use agentpkg_packagemgr::{Caller, Credential, Error};
use chrono::{DateTime, Utc};

use crate::agents::{Fleet, SERVER_CAPABILITIES};
use crate::attributes::{install_status, map};
use crate::offers::desired;
use crate::proto::{
    AgentCapabilities, AgentToServer, PackagesAvailable, ServerErrorResponse,
    ServerErrorResponseType, ServerToAgent, ServerToAgentFlags,
};
use crate::rollout::Members;

/// Why a message was refused: nothing it carried was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its instance uid is not 16 bytes (answered as any message, with the error).
    Malformed,
    /// Its instance uid belongs to another credential (HTTP 403).
    NotYours,
    /// It is past a bound on attributes or statuses (HTTP 413).
    TooLarge,
    /// Its credential has as many agents as it may (HTTP 429).
    TooManyAgents,
}

/// The answer to one message, and whether the message was refused.
#[derive(Debug, Clone)]
pub struct Reply {
    pub message: ServerToAgent,
    pub refusal: Option<Refusal>,
}

impl Reply {
    fn refused(mut message: ServerToAgent, refusal: Refusal, why: String) -> Self {
        message.error_response = Some(ServerErrorResponse {
            r#type: ServerErrorResponseType::BadRequest as i32,
            error_message: why,
            details: None,
        });
        Self {
            message,
            refusal: Some(refusal),
        }
    }
}

/// The credential an agent speaking under `credential` is bound to.
pub fn owner_of(credential: &Credential) -> AgentOwner {
    match &credential.token {
        Some((id, _)) => AgentOwner::Token(*id),
        None => AgentOwner::User(credential.user_id),
    }
}

/// What step 1 found: the agent as stored (with what this replica heard and has not
/// written yet), and how the message stands to it.
struct Identified {
    uid: AgentUid,
    known: Option<Agent>,
    stored_last_seen: Option<DateTime<Utc>>,
    in_sequence: bool,
}

impl Fleet {
    /// Answers one message from an agent speaking as `caller`, keeping what it
    /// reports and offering its desired set of packages (download URLs under `base_url`)
    /// when it accepts packages and does not have that set yet.
    ///
    /// Refused, with an `error_response` and nothing stored: a bad `instance_uid`; a uid
    /// bound to another credential (audited); a message past the fleet's bounds; a new
    /// agent past the credential's number of agents.
    pub async fn handle(
        &self,
        message: AgentToServer,
        caller: &Caller,
        base_url: &str,
    ) -> Result<Reply, Error> {
        let answer = ServerToAgent {
            instance_uid: message.instance_uid.clone(),
            capabilities: SERVER_CAPABILITIES,
            ..ServerToAgent::default()
        };
        let uid = match AgentUid::from_bytes(&message.instance_uid) {
            Ok(uid) => uid,
            Err(e) => {
                return Ok(Reply::refused(
                    answer,
                    Refusal::Malformed,
                    format!("{}: {}", e.field, e.message),
                ));
            }
        };
        if let Err(why) = self.limits.check(&message) {
            return Ok(Reply::refused(answer, Refusal::TooLarge, why));
        }
        let identified = match self.identify(uid, &message, caller).await? {
            Ok(identified) => identified,
            Err((refusal, why)) => return Ok(Reply::refused(answer, refusal, why)),
        };
        self.answer(message, &caller.credential, identified, answer, base_url)
            .await
            .map(|message| Reply {
                message,
                refusal: None,
            })
    }

    /// Step 1: the agent as stored, and whether `caller` may speak for it. A uid bound
    /// to another credential is refused and audited; a new one must fit in the
    /// credential's number of agents.
    async fn identify(
        &self,
        uid: AgentUid,
        message: &AgentToServer,
        caller: &Caller,
    ) -> Result<Result<Identified, (Refusal, String)>, Error> {
        let now = Utc::now();
        let owner = owner_of(&caller.credential);
        let mut known = self.store.agent(&uid).await?;
        if let Some(bound) = known.as_ref().and_then(|k| k.owner)
            && bound != owner
        {
            tracing::warn!(agent = %uid, credential = %owner, bound = %bound, "OpAMP message for an agent bound to another credential refused");
            let mut event = caller.event(AuditAction::AgentRefused);
            event.subject = Some(format!("agent {uid}"));
            event.detail = format!("instance uid bound to {bound}, message sent as {owner}");
            self.audit.record(event).await;
            return Ok(Err((
                Refusal::NotYours,
                format!(
                    "instance_uid {uid} belongs to another credential; an admin can release it (DELETE /api/v1/agents/{uid})"
                ),
            )));
        }
        if known.is_none() {
            let limit = self.limits.agents_per_credential;
            if self.store.count_agents_of(owner).await? >= limit {
                return Ok(Err((
                    Refusal::TooManyAgents,
                    format!(
                        "this credential already speaks for {limit} agents (fleet.max_agents_per_credential); an admin can forget silent ones"
                    ),
                )));
            }
        }
        let stored_last_seen = known.as_ref().map(|k| k.last_seen);
        // What this replica saw and has not written yet is newer than the row.
        let remembered = self.seen_of(&uid);
        if let (Some(k), Some((seq, at, _))) = (known.as_mut(), remembered)
            && seq >= k.sequence_num
        {
            k.sequence_num = seq;
            k.last_seen = at;
        }
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
        Ok(Ok(Identified {
            uid,
            known,
            stored_last_seen,
            in_sequence,
        }))
    }

    /// Steps 2 to 4 for a message `credential` may send.
    async fn answer(
        &self,
        message: AgentToServer,
        credential: &Credential,
        identified: Identified,
        mut answer: ServerToAgent,
        base_url: &str,
    ) -> Result<ServerToAgent, Error> {
        let Identified {
            uid,
            known,
            stored_last_seen,
            in_sequence,
        } = identified;
        let now = Utc::now();
        let full_state = message.agent_description.is_some();
        if !in_sequence && !full_state {
            answer.flags |= ServerToAgentFlags::ReportFullState as u64;
        }
        let mut agent = known.clone().unwrap_or_else(|| Agent::new(uid, now));
        agent.owner = Some(owner_of(credential));
        record(&mut agent, &message, now);
        let mut sources = None;
        if agent.capabilities & AgentCapabilities::AcceptsPackages as u64 != 0
            && message.agent_disconnect.is_none()
        {
            let (offered, members) = self
                .decide_offer(&mut agent, &message, credential, &mut answer, base_url)
                .await?;
            self.observe_members(&agent, &members).await;
            sources = Some(offered);
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
                    && k.owner == agent.owner
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
        if known.is_none() {
            tracing::info!(agent = %uid, credential = %owner_of(credential), "agent connected for the first time");
        }
        self.store.save_agent(agent, reported).await?;
        if reported && let Some(sources) = sources {
            self.guard(&sources).await?;
        }
        Ok(answer)
    }

    /// Step 3: the agent's desired set, within what `credential` may read; sets
    /// `answer.packages_available` when the agent should be sent it, and records what was
    /// offered. Returns, per name offered, the assignment and version, for the guard, and
    /// the agent's rollout memberships.
    async fn decide_offer(
        &self,
        agent: &mut Agent,
        message: &AgentToServer,
        credential: &Credential,
        answer: &mut ServerToAgent,
        base_url: &str,
    ) -> Result<(BTreeMap<String, (i64, String)>, Members), Error> {
        let assignments = self.store.assignments().await?;
        let members = self.members_of(&agent.uid, &assignments).await?;
        let offer = desired(
            &self.packages,
            self.credentials.as_ref(),
            agent,
            &assignments,
            &members,
            credential,
            base_url,
        )
        .await?;
        agent.offer_note = offer.note.clone();
        let sources = offer.sources.clone();
        // Only an agent that some assignment selects, or was offered packages before,
        // gets a set: an agent removes whatever is not in it.
        if offer.selected || agent.offered_hash.is_some() {
            let all = offer.all_packages_hash();
            let reported = message
                .package_statuses
                .as_ref()
                .map(|s| s.server_provided_all_packages_hash.as_slice());
            let changed = agent.offered_hash.as_deref() != Some(hex::encode(&all).as_str());
            let asked = message.agent_description.is_some()
                || answer.flags & ServerToAgentFlags::ReportFullState as u64 != 0;
            if reported != Some(all.as_slice()) && (changed || asked || reported.is_some()) {
                agent.offered_hash = Some(hex::encode(&all));
                remember_offer(agent, &offer.packages);
                answer.packages_available = Some(PackagesAvailable {
                    packages: offer.packages.into_iter().collect(),
                    all_packages_hash: all,
                });
            }
        }
        Ok((sources, members))
    }
}

/// Records, as the server's own word, what it is sending the agent: each name's version
/// and package hash. The agent's later reports are judged against this.
pub(crate) fn remember_offer(
    agent: &mut Agent,
    packages: &BTreeMap<String, crate::proto::PackageAvailable>,
) {
    let now = Utc::now();
    agent.offered = packages
        .iter()
        .map(|(name, p)| {
            let earlier = agent
                .offered
                .get(name)
                .filter(|o| o.version == p.version && o.hash == hex::encode(&p.hash))
                .map(|o| o.at);
            (
                name.clone(),
                OfferedBuild {
                    version: p.version.clone(),
                    hash: hex::encode(&p.hash),
                    at: earlier.unwrap_or(now),
                },
            )
        })
        .collect();
}

/// Step 2: what the message says, into the agent. Only the agent's own description
/// changes its attributes: a message without one leaves them as they are.
fn record(agent: &mut Agent, message: &AgentToServer, now: DateTime<Utc>) {
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
                status: install_status(s.status),
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
        tracing::info!(agent = %agent.uid, "agent disconnected");
    } else {
        agent.connected = true;
    }
}
