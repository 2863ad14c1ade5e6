//! The fleet at a glance: how many agents, healthy, connected, and which versions run.

use agentpkg_model::AgentFilter;
use agentpkg_packagemgr::Error;

use crate::agents::Fleet;

/// Counts over the agents that pass a filter (each one `COUNT` in the database) and the
/// versions every agent reports, by package name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetOverview {
    pub total: u64,
    pub healthy: u64,
    pub unhealthy: u64,
    pub connected: u64,
    /// (name offered as, version it has, agents), most agents first.
    pub versions: Vec<(String, String, u64)>,
}

impl Fleet {
    /// How many agents pass `filter`, and of those how many are healthy, unhealthy and
    /// connected; and which versions the whole fleet runs.
    pub async fn overview(&self, filter: &AgentFilter) -> Result<FleetOverview, Error> {
        let count = |f: AgentFilter| async move { self.store.count_agents(f).await };
        let total = count(filter.clone()).await?;
        let healthy = count(AgentFilter {
            healthy: Some(true),
            ..filter.clone()
        })
        .await?;
        let unhealthy = count(AgentFilter {
            healthy: Some(false),
            ..filter.clone()
        })
        .await?;
        let connected = count(AgentFilter {
            connected: Some(true),
            ..filter.clone()
        })
        .await?;
        Ok(FleetOverview {
            total,
            healthy,
            unhealthy,
            connected,
            versions: self.store.running_versions().await?,
        })
    }
}
