//! Offers pushed to agents connected over WebSocket: when an assignment, or which packages
//! exist or are active, changes on any replica, each replica recomputes the offers of the
//! agents connected to it and sends those that changed, without waiting for the agent's
//! next message.
//!
//! Replicas learn of changes from the database's fleet revision (moved by triggers, one
//! cheap read per poll); changes made through this replica are signalled at once.

use std::sync::Arc;
use std::time::Duration;

use agentpkg_model::{AgentUid, Assignment};
use agentpkg_packagemgr::{Credential, Error};
use tokio::sync::watch;

use crate::agents::{Fleet, SERVER_CAPABILITIES};
use crate::handle::{owner_of, remember_offer};
use crate::offers::desired;
use crate::proto::{AgentCapabilities, PackagesAvailable, ServerToAgent};

/// What may change offers, as a connection sees it: the assignments as of the latest
/// change (loaded once per change for every connection of this replica), `None` until the
/// first change.
pub type OfferChanges = watch::Receiver<Option<Arc<Vec<Assignment>>>>;

/// How often replicas read the fleet revision, unless told otherwise.
pub const DEFAULT_OFFER_WATCH: Duration = Duration::from_secs(2);

impl Fleet {
    /// A receiver that changes each time offers may have changed.
    pub fn offer_changes(&self) -> OfferChanges {
        self.changes.subscribe()
    }

    /// Tells this replica's connections that offers may have changed (after a change made
    /// here, committed); loads the assignments they all need once.
    pub(crate) async fn offers_may_have_changed(&self) {
        match self.store.assignments().await {
            Ok(assignments) => {
                self.changes.send_replace(Some(Arc::new(assignments)));
            }
            Err(e) => tracing::warn!(error = %e, "assignments not read: offers not pushed now"),
        }
    }

    /// Reads the fleet revision every `every` and signals the connections when it moved,
    /// until the task is aborted. The revision may move just before its change commits, so
    /// a move is signalled twice: at once, and at the next read.
    pub fn spawn_offer_watcher(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let fleet = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every.max(Duration::from_millis(50)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last = None;
            let mut again = false;
            loop {
                ticks.tick().await;
                let revision = match fleet.store.fleet_revision().await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(error = %e, "fleet revision not read");
                        continue;
                    }
                };
                let moved = last.is_some_and(|l| l != revision);
                if moved || again {
                    fleet.offers_may_have_changed().await;
                }
                again = moved;
                last = Some(revision);
            }
        })
    }

    /// The offer to push to a connected agent after a change, when its desired set is not
    /// the one last offered to it (then that is recorded). `None` for an agent that does
    /// not accept packages, said it disconnects, or has nothing new.
    pub async fn refresh_offer(
        &self,
        instance_uid: &[u8],
        credential: &Credential,
        assignments: &[Assignment],
        base_url: &str,
    ) -> Result<Option<ServerToAgent>, Error> {
        let Ok(uid) = AgentUid::from_bytes(instance_uid) else {
            return Ok(None);
        };
        let Some(mut agent) = self.store.agent(&uid).await? else {
            return Ok(None);
        };
        // Forgotten and bound anew by someone else meanwhile: not this connection's agent.
        if agent.owner.is_some_and(|o| o != owner_of(credential)) {
            return Ok(None);
        }
        if agent.capabilities & AgentCapabilities::AcceptsPackages as u64 == 0 || !agent.connected {
            return Ok(None);
        }
        let members = self.members_of(&uid, assignments).await?;
        let offer = desired(
            &self.packages,
            self.credentials.as_ref(),
            &agent,
            assignments,
            &members,
            credential,
            base_url,
        )
        .await?;
        let all = offer.all_packages_hash();
        let all_hex = hex::encode(&all);
        let send = (offer.selected || agent.offered_hash.is_some())
            && agent.offered_hash.as_deref() != Some(all_hex.as_str());
        if !send && agent.offer_note == offer.note {
            return Ok(None);
        }
        agent.offer_note = offer.note.clone();
        if send {
            agent.offered_hash = Some(all_hex);
            remember_offer(&mut agent, &offer.packages);
        }
        self.take_seen_into(&mut agent);
        self.store.save_agent(agent, false).await?;
        if !send {
            return Ok(None);
        }
        tracing::debug!(agent = %uid, "new offer pushed");
        Ok(Some(ServerToAgent {
            instance_uid: instance_uid.to_vec(),
            capabilities: SERVER_CAPABILITIES,
            packages_available: Some(PackagesAvailable {
                packages: offer.packages.into_iter().collect(),
                all_packages_hash: all,
            }),
            ..ServerToAgent::default()
        }))
    }
}
