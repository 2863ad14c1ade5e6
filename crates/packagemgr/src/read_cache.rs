//! Package reads served from memory: one package by id or by coordinates, the latest of a
//! name, platform and architecture, and a name's versions. What readers ask for again and
//! again (agents resolving `latest`, pipelines fetching a build's metadata) costs no query.
//!
//! Everything kept is forgotten at once when this process changes a package (after the
//! change commits), and on every replica when the store's package revision moves (read
//! every `watch_every`). The revision may move just before its change commits, so a move
//! is acted on twice: when seen, and at the next read. No entry is trusted for longer than
//! `max_age` in any case: that bounds what a reader can see of a change made elsewhere
//! when everything else fails (and how far download counts shown may trail).
//!
//! Entries are keyed by a generation that every forgetting moves on, so a load that
//! started before a change and finished after it is never read again.

use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use agentpkg_model::{Coordinates, LatestQuery, Package, PackageName};
use agentpkg_store::{DynPackageStore, StoreError};
use moka::future::Cache;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::Error;
use crate::metrics::CachedReadLabels;

/// How long reads may be kept, and how often the store's revision is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadCacheConfig {
    /// The longest an entry is trusted, whatever the revision says.
    pub max_age: Duration,
    /// How often the package revision is read: a change made by another replica is seen
    /// within this (twice this when its commit came late).
    pub watch_every: Duration,
    /// Memory the kept reads may take, roughly (each package weighed by its strings and
    /// a fixed part), shared evenly by the four kinds (by id, by coordinates, latest,
    /// versions): a name with thousands of builds weighs what it holds.
    pub max_bytes: u64,
}

impl Default for ReadCacheConfig {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(5),
            watch_every: Duration::from_millis(500),
            max_bytes: 32 << 20,
        }
    }
}

/// Package reads kept in memory, or none (every read goes to the store).
#[derive(Clone, Default)]
pub(crate) struct ReadCache {
    kept: Option<Arc<Kept>>,
}

struct Kept {
    config: ReadCacheConfig,
    counted: Counted,
    generation: AtomicU64,
    by_id: Cache<(u64, i64), Option<Package>>,
    by_coordinates: Cache<(u64, Coordinates), Option<Package>>,
    latest: Cache<(u64, LatestQuery), Option<Package>>,
    versions: Cache<(u64, PackageName), Arc<Vec<Package>>>,
}

/// What a kept read weighs, roughly, in bytes.
trait Weight {
    fn weight(&self) -> u32;
}

impl Weight for Package {
    fn weight(&self) -> u32 {
        // The strings a package owns beside these two (file name, object key, checksum,
        // version, signer) stay within a few hundred bytes.
        let size = std::mem::size_of::<Package>()
            + 512
            + self.name.as_str().len()
            + self.description.as_str().len();
        u32::try_from(size).unwrap_or(u32::MAX)
    }
}

impl Weight for Option<Package> {
    fn weight(&self) -> u32 {
        self.as_ref().map_or(64, Weight::weight)
    }
}

impl Weight for Arc<Vec<Package>> {
    fn weight(&self) -> u32 {
        self.iter()
            .fold(64u32, |sum, p| sum.saturating_add(p.weight()))
    }
}

fn cache<K, V>(config: &ReadCacheConfig) -> Cache<K, V>
where
    K: Eq + Hash + Send + Sync + 'static,
    V: Weight + Clone + Send + Sync + 'static,
{
    Cache::builder()
        .max_capacity((config.max_bytes / 4).max(1))
        .weigher(|_, v: &V| v.weight())
        .time_to_live(config.max_age)
        .build()
}

/// Hits and misses of one kind of read, taken from the metrics' family once (a read then
/// only increments an atomic).
struct Hits {
    hit: Counter,
    miss: Counter,
}

impl Hits {
    fn of(family: &Family<CachedReadLabels, Counter>, read: &'static str) -> Self {
        let counter = |outcome| {
            family
                .get_or_create(&CachedReadLabels { read, outcome })
                .clone()
        };
        Self {
            hit: counter("hit"),
            miss: counter("miss"),
        }
    }
}

/// Each kind of read's hits and misses.
struct Counted {
    id: Hits,
    coordinates: Hits,
    latest: Hits,
    versions: Hits,
}

/// A read through `cache`, counted in `hits` (a miss when it ran `load`): concurrent misses
/// of one key wait for one load.
async fn read<K, V>(
    cache: &Cache<(u64, K), V>,
    hits: &Hits,
    generation: u64,
    key: K,
    load: impl Future<Output = Result<V, StoreError>>,
) -> Result<V, Error>
where
    K: Eq + Hash + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    let loaded = AtomicBool::new(false);
    let load = async {
        loaded.store(true, Ordering::Relaxed);
        load.await
    };
    let result = cache
        .try_get_with((generation, key), load)
        .await
        .map_err(crate::credentials::shared);
    if loaded.load(Ordering::Relaxed) {
        hits.miss.inc();
    } else {
        hits.hit.inc();
    }
    result
}

impl ReadCache {
    pub(crate) fn new(config: ReadCacheConfig, counted: Family<CachedReadLabels, Counter>) -> Self {
        Self {
            kept: Some(Arc::new(Kept {
                config,
                counted: Counted {
                    id: Hits::of(&counted, "id"),
                    coordinates: Hits::of(&counted, "coordinates"),
                    latest: Hits::of(&counted, "latest"),
                    versions: Hits::of(&counted, "versions"),
                },
                generation: AtomicU64::new(0),
                by_id: cache(&config),
                by_coordinates: cache(&config),
                latest: cache(&config),
                versions: cache(&config),
            })),
        }
    }

    /// Forgets everything kept (after a change committed, or the revision moved).
    pub(crate) fn forget(&self) {
        if let Some(kept) = &self.kept {
            kept.generation.fetch_add(1, Ordering::SeqCst);
            // Entries of older generations are never read again; free their memory too.
            kept.by_id.invalidate_all();
            kept.by_coordinates.invalidate_all();
            kept.latest.invalidate_all();
            kept.versions.invalidate_all();
        }
    }

    pub(crate) async fn get(
        &self,
        store: &DynPackageStore,
        id: i64,
    ) -> Result<Option<Package>, Error> {
        match &self.kept {
            None => Ok(store.get_package(id).await?),
            Some(kept) => {
                let load = store.get_package(id);
                read(&kept.by_id, &kept.counted.id, kept.now(), id, load).await
            }
        }
    }

    pub(crate) async fn find(
        &self,
        store: &DynPackageStore,
        coordinates: &Coordinates,
    ) -> Result<Option<Package>, Error> {
        match &self.kept {
            None => Ok(store.find_package(coordinates).await?),
            Some(kept) => {
                let load = store.find_package(coordinates);
                let key = coordinates.clone();
                read(
                    &kept.by_coordinates,
                    &kept.counted.coordinates,
                    kept.now(),
                    key,
                    load,
                )
                .await
            }
        }
    }

    pub(crate) async fn latest(
        &self,
        store: &DynPackageStore,
        query: &LatestQuery,
    ) -> Result<Option<Package>, Error> {
        match &self.kept {
            None => Ok(store.latest_package(query).await?),
            Some(kept) => {
                let load = store.latest_package(query);
                read(
                    &kept.latest,
                    &kept.counted.latest,
                    kept.now(),
                    query.clone(),
                    load,
                )
                .await
            }
        }
    }

    pub(crate) async fn versions(
        &self,
        store: &DynPackageStore,
        name: &PackageName,
    ) -> Result<Arc<Vec<Package>>, Error> {
        match &self.kept {
            None => Ok(Arc::new(store.package_versions(name).await?)),
            Some(kept) => {
                let load = async { store.package_versions(name).await.map(Arc::new) };
                read(
                    &kept.versions,
                    &kept.counted.versions,
                    kept.now(),
                    name.clone(),
                    load,
                )
                .await
            }
        }
    }

    /// Reads the store's package revision every `watch_every` and forgets everything when
    /// it moved (at once, and again at the next read), until the task is aborted. `None`
    /// when nothing is kept, or the store keeps no revision (then only this process's own
    /// changes are seen, and entries live `max_age`).
    pub(crate) fn spawn_watcher(
        &self,
        store: DynPackageStore,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let cache = self.clone();
        let every = self.kept.as_ref()?.config.watch_every;
        Some(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every.max(Duration::from_millis(10)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last = None;
            let mut again = false;
            loop {
                ticks.tick().await;
                let revision = match store.package_revision().await {
                    Ok(Some(r)) => r,
                    Ok(None) => {
                        tracing::info!(
                            "the package store keeps no revision: package reads kept in memory learn only of this process's changes"
                        );
                        return;
                    }
                    Err(e) => {
                        // Unknown: nothing kept can be vouched for.
                        tracing::warn!(error = %e, "package revision not read; package reads kept in memory are forgotten");
                        cache.forget();
                        continue;
                    }
                };
                let moved = last.is_some_and(|l| l != revision);
                if moved || again {
                    cache.forget();
                }
                again = moved;
                last = Some(revision);
            }
        }))
    }
}

impl Kept {
    fn now(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }
}
