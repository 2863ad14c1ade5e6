//! The fleet's store: agents (`agents.rs`), assignments (`assignments.rs`), and the fleet
//! revision that tells replicas offers may have changed.

mod agents;
mod assignments;
pub(crate) mod leases;
mod rollout_store;
mod rollouts;

use agentpkg_model::{AgentFilter, AgentOwner, AgentUid, Page};
use async_trait::async_trait;
use diesel::prelude::*;

use self::agents::{
    count, count_owned, forget, forget_silent, get, list, outcomes, save, statuses, touch, versions,
};
use self::assignments::{
    assignment, assignments, create_assignment, delete_assignment, update_assignment,
};
use crate::{DbConnection, DieselStore, StoreError};

#[async_trait]
impl crate::FleetStore for DieselStore {
    async fn agent(
        &self,
        uid: &agentpkg_model::AgentUid,
    ) -> Result<Option<agentpkg_model::Agent>, StoreError> {
        let uid = *uid;
        self.with_conn_read("agent", move |c| get(c, &uid)).await
    }

    async fn save_agent(
        &self,
        agent: agentpkg_model::Agent,
        packages_changed: bool,
    ) -> Result<(), StoreError> {
        self.with_conn("save_agent", move |c| save(c, &agent, packages_changed))
            .await
    }

    async fn touch_agents(
        &self,
        seen: Vec<(agentpkg_model::AgentUid, u64, chrono::DateTime<chrono::Utc>)>,
    ) -> Result<(), StoreError> {
        self.with_conn("touch_agents", move |c| touch(c, &seen))
            .await
    }

    async fn offer_outcomes(&self, name: &str, version: &str) -> Result<(u64, u64), StoreError> {
        let (name, version) = (name.to_owned(), version.to_owned());
        self.with_conn_read("offer_outcomes", move |c| outcomes(c, &name, &version))
            .await
    }

    async fn package_statuses(
        &self,
        name: &str,
    ) -> Result<Vec<crate::PackageStatusRow>, StoreError> {
        let name = name.to_owned();
        self.with_conn_read("package_statuses", move |c| statuses(c, &name))
            .await
    }

    async fn list_agents(
        &self,
        page: agentpkg_model::PageRequest,
        filter: AgentFilter,
    ) -> Result<Page<agentpkg_model::Agent>, StoreError> {
        self.with_conn_read("list_agents", move |c| list(c, &page, &filter))
            .await
    }

    async fn count_agents_of(&self, owner: AgentOwner) -> Result<u64, StoreError> {
        self.with_conn_read("count_agents_of", move |c| count_owned(c, &owner))
            .await
    }

    async fn count_agents(&self, filter: AgentFilter) -> Result<u64, StoreError> {
        self.with_conn_read("count_agents", move |c| count(c, &filter))
            .await
    }

    async fn running_versions(&self) -> Result<Vec<(String, String, u64)>, StoreError> {
        self.with_conn_read("running_versions", versions).await
    }

    async fn forget_agent(&self, uid: &AgentUid) -> Result<bool, StoreError> {
        let uid = *uid;
        self.with_conn("forget_agent", move |c| forget(c, &uid))
            .await
    }

    async fn forget_silent_agents(
        &self,
        before: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, StoreError> {
        self.with_conn("forget_silent_agents", move |c| forget_silent(c, before))
            .await
    }

    async fn create_assignment(
        &self,
        new: agentpkg_model::NewAssignment,
    ) -> Result<agentpkg_model::Assignment, StoreError> {
        self.with_conn("create_assignment", move |c| create_assignment(c, &new))
            .await
    }

    async fn assignments(&self) -> Result<Vec<agentpkg_model::Assignment>, StoreError> {
        self.with_conn_read("assignments", assignments).await
    }

    async fn assignment(&self, id: i64) -> Result<Option<agentpkg_model::Assignment>, StoreError> {
        self.with_conn_read("assignment", move |c| assignment(c, id))
            .await
    }

    async fn update_assignment(
        &self,
        id: i64,
        patch: agentpkg_model::AssignmentPatch,
    ) -> Result<Option<agentpkg_model::Assignment>, StoreError> {
        self.with_conn("update_assignment", move |c| {
            update_assignment(c, id, &patch)
        })
        .await
    }

    async fn delete_assignment(&self, id: i64) -> Result<bool, StoreError> {
        self.with_conn("delete_assignment", move |c| delete_assignment(c, id))
            .await
    }

    async fn fleet_revision(&self) -> Result<i64, StoreError> {
        self.with_conn_read("fleet_revision", revision).await
    }
}

#[derive(QueryableByName)]
struct Revision {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// A revision counter by name: a sequence moved by triggers on PostgreSQL (no lock on the
/// paths that move it), a one-row table on SQLite (see the `fleet_revision` and
/// `package_revision` migrations).
pub(crate) fn counter(conn: &mut DbConnection, name: &'static str) -> Result<i64, StoreError> {
    let found: Revision = match conn {
        DbConnection::Pg(c) => diesel::sql_query(format!(
            "SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS n FROM {name}"
        ))
        .get_result(c)?,
        DbConnection::Sqlite(c) => {
            diesel::sql_query(format!("SELECT revision AS n FROM {name} WHERE id = 1"))
                .get_result(c)?
        }
    };
    Ok(found.n)
}

/// The fleet revision (assignments, which packages exist or are active, rollouts).
pub(crate) fn revision(conn: &mut DbConnection) -> Result<i64, StoreError> {
    counter(conn, "fleet_revision")
}
