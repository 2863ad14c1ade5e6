//! Reports: a package's daily series, the top lists and storage usage, and the gauges
//! that metrics show.
//!
//! Top lists and storage usage aggregate whole tables, so each answer is kept per replica
//! ([`Reports`]): fresh for `cache_ttl`; after that it is still served while one task
//! computes its successor (stale-while-revalidate), up to ten times `cache_ttl`, past which
//! the next asker waits for a new one. One computation per question at a time, however
//! many ask. Gauges are refreshed in the background, never by a scrape.

use std::collections::HashSet;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use agentpkg_model::{DailyDownloads, StorageUsage, TopDownloads, TopQuery, first_day, window};
use agentpkg_packagemgr::{Caller, Error};
use agentpkg_store::{DynStatsStore, StoreError};
use chrono::{NaiveDate, Utc};
use moka::future::Cache;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Most names and largest packages a storage report lists.
pub const MAX_REPORT_ROWS: u32 = 1000;

/// A package's downloads per UTC day over a window, days without downloads included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailySeries {
    pub first_day: NaiveDate,
    pub last_day: NaiveDate,
    pub downloads: u64,
    pub bytes: u64,
    pub days: Vec<DailyDownloads>,
}

/// Statistics of the registry. Cheap to clone.
#[derive(Clone)]
pub struct Statistics {
    store: DynStatsStore,
    cache_ttl: Duration,
    top: Reports<(TopQuery, NaiveDate), TopDownloads>,
    storage: Reports<(u32, u32), StorageUsage>,
    gauges: Gauges,
}

#[derive(Clone, Default)]
struct Gauges {
    stored_bytes: Gauge,
    stored_objects: Gauge,
    packages: Family<Vec<(String, String)>, Gauge>,
}

fn store_error(e: Arc<StoreError>) -> Error {
    Arc::try_unwrap(e)
        .unwrap_or_else(|e| StoreError::Unavailable(e.to_string()))
        .into()
}

impl Statistics {
    /// Reports over `store`, each kept for `cache_ttl` (zero: computed on every request).
    pub fn new(store: DynStatsStore, cache_ttl: Duration) -> Self {
        Self {
            store,
            cache_ttl,
            top: Reports::new(256, cache_ttl),
            storage: Reports::new(64, cache_ttl),
            gauges: Gauges::default(),
        }
    }

    /// Downloads of package `package_id` per day over the last `days` UTC days.
    pub async fn daily(&self, package_id: i64, days: u32) -> Result<DailySeries, Error> {
        let days = window(days)?;
        let last = Utc::now().date_naive();
        let first = first_day(last, days);
        let recorded = self.store.daily_downloads(package_id, first, last).await?;
        Ok(fill_days(first, last, &recorded))
    }

    /// The most downloaded names, and names with versions, over the query's window.
    pub async fn top(&self, query: TopQuery) -> Result<Arc<TopDownloads>, Error> {
        let last = Utc::now().date_naive();
        let store = self.store.clone();
        let compute = move |(query, last): (TopQuery, NaiveDate)| {
            let store = store.clone();
            async move {
                let first = query.first_day(last);
                store.top_downloads(&query, first, last).await
            }
        };
        if self.cache_ttl.is_zero() {
            return Ok(Arc::new(compute((query, last)).await?));
        }
        self.top.get((query, last), compute).await
    }

    /// [`Statistics::top`] as `caller` may see it: only the names its credential reaches.
    pub async fn top_for(&self, caller: &Caller, query: TopQuery) -> Result<TopDownloads, Error> {
        let top = self.top(query).await?;
        let names = &caller.credential.names;
        let visible = |e: &&agentpkg_model::TopEntry| names.allows(&e.name);
        Ok(TopDownloads {
            first_day: top.first_day,
            last_day: top.last_day,
            by_name: top.by_name.iter().filter(visible).cloned().collect(),
            by_version: top.by_version.iter().filter(visible).cloned().collect(),
        })
    }

    /// [`Statistics::storage`] as `caller` may see it: the totals, and of the names and
    /// packages listed only those its credential reaches.
    pub async fn storage_for(
        &self,
        caller: &Caller,
        names: u32,
        largest: u32,
    ) -> Result<StorageUsage, Error> {
        let usage = self.storage(names, largest).await?;
        let scope = &caller.credential.names;
        let mut visible = usage.as_ref().clone();
        visible.names.retain(|n| scope.allows(&n.name));
        visible.largest.retain(|p| scope.allows(&p.name));
        Ok(visible)
    }

    /// What is stored: totals, the `names` names holding most, the `largest` largest
    /// packages (each at most [`MAX_REPORT_ROWS`]).
    pub async fn storage(&self, names: u32, largest: u32) -> Result<Arc<StorageUsage>, Error> {
        let (names, largest) = (names.min(MAX_REPORT_ROWS), largest.min(MAX_REPORT_ROWS));
        let store = self.store.clone();
        let compute = move |(names, largest): (u32, u32)| {
            let store = store.clone();
            async move { store.storage_usage(names, largest).await }
        };
        if self.cache_ttl.is_zero() {
            return Ok(Arc::new(compute((names, largest)).await?));
        }
        self.storage.get((names, largest), compute).await
    }

    /// Registers `agentpkg_stored_bytes`, `agentpkg_stored_objects` and
    /// `agentpkg_packages{state}`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "agentpkg_stored_bytes",
            "Bytes in the objects that hold packages (each distinct content once)",
            self.gauges.stored_bytes.clone(),
        );
        registry.register(
            "agentpkg_stored_objects",
            "Objects holding packages",
            self.gauges.stored_objects.clone(),
        );
        registry.register(
            "agentpkg_packages",
            "Packages by state (active, yanked)",
            self.gauges.packages.clone(),
        );
    }

    /// Reads the totals once and sets the gauges.
    pub async fn refresh_gauges(&self) -> Result<(), Error> {
        let totals = self.store.usage_totals().await?;
        let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.gauges.stored_bytes.set(as_i64(totals.stored_bytes));
        self.gauges.stored_objects.set(as_i64(totals.objects));
        for (state, n) in [
            ("active", totals.active_packages),
            ("yanked", totals.yanked_packages),
        ] {
            self.gauges
                .packages
                .get_or_create(&vec![("state".to_owned(), state.to_owned())])
                .set(as_i64(n));
        }
        Ok(())
    }

    /// Refreshes the gauges now and every `every` until the task is aborted.
    pub fn spawn_gauge_refresher(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let stats = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every.max(Duration::from_secs(1)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if let Err(e) = stats.refresh_gauges().await {
                    tracing::warn!(error = %e, "storage gauges not refreshed; will retry");
                }
            }
        })
    }
}

/// Answers kept per question: see the module's documentation.
struct Reports<K, V> {
    cache: Cache<K, Arc<Answer<V>>>,
    fresh_for: Duration,
    /// Questions whose successor is being computed.
    refreshing: Arc<Mutex<HashSet<K>>>,
}

impl<K: Clone, V> Clone for Reports<K, V> {
    fn clone(&self) -> Self {
        Self {
            cache: self.cache.clone(),
            fresh_for: self.fresh_for,
            refreshing: self.refreshing.clone(),
        }
    }
}

struct Answer<V> {
    at: Instant,
    value: Arc<V>,
}

impl<K, V> Reports<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    fn new(capacity: u64, fresh_for: Duration) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(fresh_for.max(Duration::from_millis(1)) * 10)
                .build(),
            fresh_for,
            refreshing: Arc::default(),
        }
    }

    async fn get<F, Fut>(&self, key: K, compute: F) -> Result<Arc<V>, Error>
    where
        F: Fn(K) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<V, StoreError>> + Send + 'static,
    {
        if let Some(answer) = self.cache.get(&key).await {
            if answer.at.elapsed() > self.fresh_for && self.start_refresh(&key) {
                let (cache, refreshing) = (self.cache.clone(), self.refreshing.clone());
                tokio::spawn(async move {
                    match compute(key.clone()).await {
                        Ok(value) => {
                            let answer = Answer {
                                at: Instant::now(),
                                value: Arc::new(value),
                            };
                            cache.insert(key.clone(), Arc::new(answer)).await;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "a statistics report was not refreshed")
                        }
                    }
                    refreshing
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&key);
                });
            }
            return Ok(answer.value.clone());
        }
        let computed = self
            .cache
            .try_get_with(key.clone(), async move {
                let value = compute(key).await?;
                Ok::<_, StoreError>(Arc::new(Answer {
                    at: Instant::now(),
                    value: Arc::new(value),
                }))
            })
            .await
            .map_err(store_error)?;
        Ok(computed.value.clone())
    }

    /// Marks `key` as being refreshed; `false` when it already is.
    fn start_refresh(&self, key: &K) -> bool {
        self.refreshing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.clone())
    }
}

/// Every day from `first` to `last`, with what `recorded` holds for it or zero.
fn fill_days(first: NaiveDate, last: NaiveDate, recorded: &[DailyDownloads]) -> DailySeries {
    let mut days = Vec::new();
    let mut recorded = recorded.iter().peekable();
    for day in first.iter_days().take_while(|d| *d <= last) {
        while recorded.peek().is_some_and(|r| r.day < day) {
            recorded.next();
        }
        match recorded.peek() {
            Some(r) if r.day == day => days.push(**r),
            _ => days.push(DailyDownloads {
                day,
                downloads: 0,
                bytes: 0,
            }),
        }
    }
    DailySeries {
        first_day: first,
        last_day: last,
        downloads: days.iter().map(|d| d.downloads).sum(),
        bytes: days.iter().map(|d| d.bytes).sum(),
        days,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 2, d).unwrap()
    }

    #[tokio::test]
    async fn a_stale_answer_is_served_while_one_task_computes_the_next() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let reports: Reports<u8, u64> = Reports::new(8, Duration::from_millis(50));
        let calls = Arc::new(AtomicU64::new(0));
        let compute = {
            let calls = calls.clone();
            move |_: u8| {
                let calls = calls.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok::<_, StoreError>(calls.fetch_add(1, Ordering::SeqCst) + 1)
                }
            }
        };
        // Concurrent first askers share one computation.
        let (a, b) = tokio::join!(
            reports.get(1, compute.clone()),
            reports.get(1, compute.clone())
        );
        assert_eq!((*a.unwrap(), *b.unwrap()), (1, 1));
        assert_eq!(*reports.get(1, compute.clone()).await.unwrap(), 1);
        tokio::time::sleep(Duration::from_millis(60)).await;
        // Stale: served at once, one refresh started however many ask.
        for _ in 0..5 {
            assert_eq!(*reports.get(1, compute.clone()).await.unwrap(), 1);
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(*reports.get(1, compute.clone()).await.unwrap(), 2);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn missing_days_are_zero_and_outside_ones_ignored() {
        let recorded = [
            DailyDownloads {
                day: day(1),
                downloads: 9,
                bytes: 9,
            },
            DailyDownloads {
                day: day(3),
                downloads: 2,
                bytes: 20,
            },
            DailyDownloads {
                day: day(5),
                downloads: 1,
                bytes: 10,
            },
        ];
        let series = fill_days(day(2), day(6), &recorded);
        let counts: Vec<u64> = series.days.iter().map(|d| d.downloads).collect();
        assert_eq!(counts, vec![0, 2, 0, 1, 0]);
        assert_eq!(series.days[0].day, day(2));
        assert_eq!(series.days[4].day, day(6));
        assert_eq!((series.downloads, series.bytes), (3, 30));
    }
}
