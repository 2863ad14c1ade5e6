//! Reports: a package's daily series, the top lists and storage usage, and the gauges
//! that metrics show.
//!
//! Top lists and storage usage aggregate whole tables, so each answer is kept for
//! `cache_ttl` (per replica; one computation per question at a time, however many ask).
//! Gauges are refreshed in the background, never by a scrape.

use std::sync::Arc;
use std::time::Duration;

use agentpkg_model::{DailyDownloads, StorageUsage, TopDownloads, TopQuery, first_day, window};
use agentpkg_packagemgr::Error;
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
    top: Cache<(TopQuery, NaiveDate), Arc<TopDownloads>>,
    storage: Cache<(u32, u32), Arc<StorageUsage>>,
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
        let ttl = cache_ttl.max(Duration::from_millis(1));
        Self {
            store,
            cache_ttl,
            top: Cache::builder().max_capacity(256).time_to_live(ttl).build(),
            storage: Cache::builder().max_capacity(64).time_to_live(ttl).build(),
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
        let first = query.first_day(last);
        let compute = async {
            Ok::<_, StoreError>(Arc::new(
                self.store.top_downloads(&query, first, last).await?,
            ))
        };
        if self.cache_ttl.is_zero() {
            return Ok(compute.await?);
        }
        self.top
            .try_get_with((query.clone(), last), compute)
            .await
            .map_err(store_error)
    }

    /// What is stored: totals, the `names` names holding most, the `largest` largest
    /// packages (each at most [`MAX_REPORT_ROWS`]).
    pub async fn storage(&self, names: u32, largest: u32) -> Result<Arc<StorageUsage>, Error> {
        let (names, largest) = (names.min(MAX_REPORT_ROWS), largest.min(MAX_REPORT_ROWS));
        let compute = async {
            Ok::<_, StoreError>(Arc::new(self.store.storage_usage(names, largest).await?))
        };
        if self.cache_ttl.is_zero() {
            return Ok(compute.await?);
        }
        self.storage
            .try_get_with((names, largest), compute)
            .await
            .map_err(store_error)
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
