//! Where each asset the mirror follows stands, and the mirror's job lease.

use agentpkg_model::{MirrorAsset, Version};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::StoreError;

/// The mirror's rows and its lease.
#[async_trait]
pub trait MirrorStore: Send + Sync {
    /// Records an attempt at an asset (its attempts counted on from the row before).
    async fn record_mirror_asset(&self, asset: MirrorAsset) -> Result<MirrorAsset, StoreError>;
    /// The asset at these coordinates of `source`, when tried before.
    async fn mirror_asset(
        &self,
        source: String,
        version: Version,
        platform: agentpkg_model::Platform,
        arch: agentpkg_model::Arch,
    ) -> Result<Option<MirrorAsset>, StoreError>;
    /// Every asset of every source, by source, newest version first.
    async fn mirror_assets(&self) -> Result<Vec<MirrorAsset>, StoreError>;
    /// Takes or renews the job lease `name` for `holder` until `until`.
    async fn take_job_lease(
        &self,
        name: &'static str,
        holder: String,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    async fn drop_job_lease(&self, name: &'static str, holder: String) -> Result<(), StoreError>;
}

#[cfg(feature = "diesel")]
mod diesel_impl {
    use agentpkg_model::{MirrorAsset, MirrorState, Version};
    use async_trait::async_trait;
    use chrono::{DateTime, NaiveDateTime, Utc};
    use diesel::prelude::*;

    use super::MirrorStore;
    use crate::schema::mirror_assets as ma;
    use crate::{DbConnection, DieselStore, StoreError};

    #[derive(Queryable, Selectable)]
    #[diesel(table_name = ma)]
    struct AssetRow {
        source: String,
        version: String,
        platform: String,
        arch: String,
        url: String,
        state: String,
        detail: String,
        package_id: Option<i64>,
        attempts: i32,
        updated_at: NaiveDateTime,
    }

    impl TryFrom<AssetRow> for MirrorAsset {
        type Error = StoreError;

        fn try_from(r: AssetRow) -> Result<Self, StoreError> {
            let corrupt = |what: &str| {
                StoreError::Corrupt(format!("mirror asset {} {}: {what}", r.source, r.version))
            };
            Ok(MirrorAsset {
                version: Version::parse(&r.version).map_err(|_| corrupt("version"))?,
                platform: r.platform.parse().map_err(|_| corrupt("platform"))?,
                arch: r.arch.parse().map_err(|_| corrupt("arch"))?,
                state: r
                    .state
                    .parse::<MirrorState>()
                    .map_err(|_| corrupt("state"))?,
                attempts: u32::try_from(r.attempts).map_err(|_| corrupt("attempts"))?,
                updated_at: r.updated_at.and_utc(),
                source: r.source,
                url: r.url,
                detail: r.detail,
                package_id: r.package_id,
            })
        }
    }

    fn find(
        conn: &mut DbConnection,
        source: &str,
        version: &str,
        platform: &str,
        arch: &str,
    ) -> Result<Option<MirrorAsset>, StoreError> {
        ma::table
            .find((source, version, platform, arch))
            .select(AssetRow::as_select())
            .first(conn)
            .optional()?
            .map(MirrorAsset::try_from)
            .transpose()
    }

    fn record(conn: &mut DbConnection, asset: &MirrorAsset) -> Result<MirrorAsset, StoreError> {
        let version = asset.version.to_string();
        let key = (
            asset.source.as_str(),
            version.as_str(),
            asset.platform.as_str(),
            asset.arch.as_str(),
        );
        crate::connection::write_transaction(conn, |conn| {
            let before = find(conn, key.0, key.1, key.2, key.3)?;
            let attempts = i32::try_from(before.map_or(0, |b| b.attempts) + 1).unwrap_or(i32::MAX);
            let at = crate::packages::now();
            let values = (
                ma::url.eq(&asset.url),
                ma::state.eq(asset.state.as_str()),
                ma::detail.eq(&asset.detail),
                ma::package_id.eq(asset.package_id),
                ma::attempts.eq(attempts),
                ma::updated_at.eq(at),
            );
            let updated = diesel::update(ma::table.find(key))
                .set(values)
                .execute(conn)?;
            if updated == 0 {
                diesel::insert_into(ma::table)
                    .values((
                        ma::source.eq(key.0),
                        ma::version.eq(key.1),
                        ma::platform.eq(key.2),
                        ma::arch.eq(key.3),
                        values,
                    ))
                    .execute(conn)?;
            }
            find(conn, key.0, key.1, key.2, key.3)?
                .ok_or_else(|| StoreError::Corrupt("mirror asset vanished".into()))
        })
    }

    #[async_trait]
    impl MirrorStore for DieselStore {
        async fn record_mirror_asset(&self, asset: MirrorAsset) -> Result<MirrorAsset, StoreError> {
            self.with_conn("record_mirror_asset", move |c| record(c, &asset))
                .await
        }

        async fn mirror_asset(
            &self,
            source: String,
            version: Version,
            platform: agentpkg_model::Platform,
            arch: agentpkg_model::Arch,
        ) -> Result<Option<MirrorAsset>, StoreError> {
            self.with_conn_read("mirror_asset", move |c| {
                find(
                    c,
                    &source,
                    &version.to_string(),
                    platform.as_str(),
                    arch.as_str(),
                )
            })
            .await
        }

        async fn mirror_assets(&self) -> Result<Vec<MirrorAsset>, StoreError> {
            self.with_conn_read("mirror_assets", |c| {
                let mut all = ma::table
                    .select(AssetRow::as_select())
                    .load(c)?
                    .into_iter()
                    .map(MirrorAsset::try_from)
                    .collect::<Result<Vec<_>, _>>()?;
                all.sort_by(|a, b| {
                    (
                        &a.source,
                        b.version.sort_key(),
                        a.platform.as_str(),
                        a.arch.as_str(),
                    )
                        .cmp(&(
                            &b.source,
                            a.version.sort_key(),
                            b.platform.as_str(),
                            b.arch.as_str(),
                        ))
                });
                Ok(all)
            })
            .await
        }

        async fn take_job_lease(
            &self,
            name: &'static str,
            holder: String,
            until: DateTime<Utc>,
        ) -> Result<bool, StoreError> {
            self.with_conn("take_job_lease", move |c| {
                crate::fleet::leases::take_lease(c, name, &holder, until)
            })
            .await
        }

        async fn drop_job_lease(
            &self,
            name: &'static str,
            holder: String,
        ) -> Result<(), StoreError> {
            self.with_conn("drop_job_lease", move |c| {
                crate::fleet::leases::drop_lease(c, name, &holder)
            })
            .await
        }
    }
}
