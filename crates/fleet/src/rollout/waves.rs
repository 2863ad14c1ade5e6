//! Choosing and offering a wave's agents a little per tick: candidates read a page per
//! tick, ordered once all are read, then offered a step per tick. What a replica knows in
//! between lives in its memory and is forgotten with the engine's lease.

use std::collections::{BTreeMap, HashMap, HashSet};

use agentpkg_model::{AgentUid, Rollout, RolloutState};
use agentpkg_packagemgr::Error;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::agents::Fleet;
use crate::offers::{platform_of, selects};

/// Agents a wave newly offers per step, unless told otherwise: a wave of 5 000 starts over
/// forty ticks, each a short transaction, rather than in one long one (at 10 000 agents on
/// two cores a step of 250 still made ticks of 85 ms; 125 keeps them under 50 ms).
pub const DEFAULT_WAVE_STEP_AGENTS: usize = 125;

/// What this replica knows of started waves between ticks: the agents each has yet to
/// offer, in its order, and which waves it has checked for such agents since it took the
/// engine's lease. Forgotten with the lease: another replica, or this one after a
/// restart, works the rest out again from the database.
#[derive(Default)]
pub(crate) struct Backlogs {
    /// Rollout → (wave, agents still to offer with the version each reported).
    rest: HashMap<i64, (usize, Vec<(AgentUid, String)>)>,
    checked: HashSet<(i64, usize)>,
    /// Rollout → the agents read so far for a wave about to start.
    gathering: HashMap<i64, Gathering>,
}

impl Backlogs {
    /// Forgets what was kept of rollout `id` (another replica took its step).
    pub(super) fn forget_rollout(&mut self, id: i64) {
        self.rest.remove(&id);
        self.gathering.remove(&id);
        self.checked.retain(|(rollout, _)| *rollout != id);
    }
}

/// Agents read per tick while a wave's members are chosen, per agent offered per step: at
/// the default step a fleet of 10 000 is read over eight ticks rather than in one long one.
const READ_PER_STEP: usize = 10;

/// A wave's candidates read so far: the assignment, the platforms the version has builds
/// for, the last uid read, and the selected agents with their order keys.
pub(crate) struct Gathering {
    wave: usize,
    assignment: agentpkg_model::Assignment,
    builds: HashSet<(agentpkg_model::Platform, agentpkg_model::Arch)>,
    after: Option<String>,
    pool: Vec<Picked>,
}

/// A selected agent: its order key, uid, the version it reported, and whether it is
/// already one of the rollout's (as its page read it).
struct Picked {
    key: [u8; 32],
    uid: AgentUid,
    previous: String,
    member: bool,
}

/// Where choosing a wave's agents stands after a tick.
pub(crate) enum Gathered {
    /// More agents to read next tick; the rows read this one.
    Pending(u64),
    /// The wave's new agents in order, the number selected, and the rows read.
    Ready {
        members: Vec<(AgentUid, String)>,
        population: u64,
        rows: u64,
    },
}

impl Fleet {
    /// Forgets what this replica knew of started waves (at a change of the lease).
    pub(super) fn forget_backlogs(&self) {
        *self
            .wave_backlogs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Backlogs::default();
    }

    /// Keeps the first step's worth of `members` and the rest for the next ticks; how
    /// many are left for them.
    pub(super) fn keep_backlog(
        &self,
        id: i64,
        wave: usize,
        members: &mut Vec<(AgentUid, String)>,
    ) -> usize {
        let step = match self.wave_step {
            0 => usize::MAX,
            n => n,
        };
        let rest = if members.len() > step {
            members.split_off(step)
        } else {
            Vec::new()
        };
        let left = rest.len();
        let mut backlogs = self
            .wave_backlogs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        backlogs.checked.insert((id, wave));
        if rest.is_empty() {
            backlogs.rest.remove(&id);
        } else {
            backlogs.rest.insert(id, (wave, rest));
        }
        left
    }

    /// Offers the next step's worth of a started wave's agents, if it has any left; the
    /// rows read, or `None` when the wave is whole (then it may be promoted). The first
    /// time this replica sees a wave it did not start, the wave is chosen again from the
    /// database, which finds the agents a step of another replica left.
    pub(super) async fn continue_wave(
        &self,
        r: &Rollout,
        now: DateTime<Utc>,
    ) -> Result<Option<u64>, Error> {
        let (known, checked) = {
            let mut backlogs = self
                .wave_backlogs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let known = match backlogs.rest.remove(&r.id) {
                Some((wave, rest)) if wave == r.wave => Some(rest),
                _ => None,
            };
            (known, backlogs.checked.contains(&(r.id, r.wave)))
        };
        let (mut members, rows) = match known {
            Some(rest) => (rest, 0),
            None if checked => return Ok(None),
            None => match self.choose_wave(r, r.wave).await? {
                Gathered::Ready { members, rows, .. } => (members, rows),
                // Not promoted while the wave's agents are still being read.
                Gathered::Pending(rows) => return Ok(Some(rows)),
            },
        };
        if members.is_empty() {
            self.keep_backlog(r.id, r.wave, &mut members);
            return Ok(None);
        }
        let rest = self.keep_backlog(r.id, r.wave, &mut members);
        let cause = format!(
            "wave {} of {}: {} more newly offered {}{}",
            r.wave + 1,
            r.plan.waves.len(),
            members.len(),
            r.version,
            if rest > 0 {
                format!("; {rest} more over the next ticks")
            } else {
                "; every agent of the wave is offered it now".to_owned()
            }
        );
        self.step(r, RolloutState::Rolling, cause, now, |s| {
            s.new_members = members;
        })
        .await?;
        Ok(Some(rows))
    }

    /// The agents wave `n` adds: the assignment's agents that have a build of the version
    /// for their platform, in an order fixed by a hash of their uid and the rollout, up to
    /// the wave's size — so each wave holds every earlier one. The agents are read ten
    /// times the wave step per tick (kept in this replica's memory in between), so that no
    /// tick reads the whole fleet; until the last page, [`Gathered::Pending`].
    pub(super) async fn choose_wave(&self, r: &Rollout, n: usize) -> Result<Gathered, Error> {
        let store = self.rollout_store()?;
        let known = self
            .wave_backlogs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .gathering
            .remove(&r.id)
            .filter(|g| g.wave == n);
        let mut g = match known {
            Some(g) => g,
            None => {
                let assignment = self.assignment(r.assignment_id).await?;
                let builds: HashSet<_> = self
                    .packages
                    .history(&assignment.package)
                    .await?
                    .into_iter()
                    .filter(|b| b.version == r.version)
                    .flat_map(|b| b.packages)
                    .filter(|p| p.is_active)
                    .map(|p| (p.platform, p.arch))
                    .collect();
                Gathering {
                    wave: n,
                    assignment,
                    builds,
                    after: None,
                    pool: Vec::new(),
                }
            }
        };
        let per_page = match self.wave_step {
            0 => usize::MAX,
            n => n.saturating_mul(READ_PER_STEP),
        };
        let page = store
            .candidates(
                r.id,
                g.assignment.offer_as.clone(),
                g.after.clone(),
                per_page,
            )
            .await?;
        let rows = page.len() as u64;
        let whole = page.len() < per_page;
        g.after = page.last().map(|c| c.uid.clone());
        for candidate in page {
            let mut attributes: BTreeMap<String, String> =
                serde_json::from_str(&candidate.non_identifying).unwrap_or_default();
            attributes.extend(
                serde_json::from_str::<BTreeMap<String, String>>(&candidate.identifying)
                    .unwrap_or_default(),
            );
            if !selects(&g.assignment, &attributes)
                || !platform_of(&attributes).is_ok_and(|p| g.builds.contains(&p))
            {
                continue;
            }
            let Ok(uid) = AgentUid::parse(&candidate.uid) else {
                continue;
            };
            let mut h = Sha256::new();
            h.update(b"agentpkg rollout wave v1\0");
            h.update(uid.as_bytes());
            h.update(r.id.to_be_bytes());
            let previous = candidate.has_version.unwrap_or_default();
            g.pool.push(Picked {
                key: h.finalize().into(),
                uid,
                previous: previous.trim_start_matches('v').to_owned(),
                member: candidate.member,
            });
        }
        if !whole {
            self.wave_backlogs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .gathering
                .insert(r.id, g);
            return Ok(Gathered::Pending(rows));
        }
        let mut pool = g.pool;
        pool.sort_unstable_by_key(|p| p.key);
        let population = pool.len() as u64;
        let size = r.plan.waves[n].of(population);
        // Only this engine adds members, under its lease, and it forgets the pages read
        // when another replica took a step: what the pages said of membership holds.
        let mut covered = pool.iter().filter(|p| p.member).count() as u64;
        let mut members = Vec::new();
        for p in pool {
            if covered >= size {
                break;
            }
            if !p.member {
                members.push((p.uid, p.previous));
                covered += 1;
            }
        }
        Ok(Gathered::Ready {
            members,
            population,
            rows,
        })
    }
}
