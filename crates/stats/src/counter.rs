//! Counting downloads in memory and adding them to the database in batches.
//!
//! A download is answered without touching the database: [`DownloadCounter::answered`]
//! adds to a map under a mutex held for a hash-map update. [`DownloadCounter::flush`] takes
//! the map and adds it to the database as increments in one transaction, so any number of
//! replicas count into one database. A flush that fails puts its counts back for the next
//! one, except when the commit's outcome is unknown: then they are dropped, because adding
//! them again could count them twice (a crash loses at most one interval, never corrupts).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use agentpkg_model::DownloadIncrement;
use agentpkg_store::{DynStatsStore, StoreError};
use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use futures_util::Stream;

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    downloads: u64,
    bytes: u64,
    last_at: Option<DateTime<Utc>>,
}

impl Tally {
    fn absorb(&mut self, other: Tally) {
        self.downloads += other.downloads;
        self.bytes += other.bytes;
        self.last_at = self.last_at.max(other.last_at);
    }
}

type Pending = HashMap<(i64, NaiveDate), Tally>;

/// Counts downloads; cheap to clone, share one per process.
#[derive(Clone)]
pub struct DownloadCounter {
    inner: Arc<Inner>,
}

struct Inner {
    store: DynStatsStore,
    pending: Mutex<Pending>,
    /// Held by a flush, so two never write the same counts.
    flushing: tokio::sync::Mutex<()>,
}

/// What a flush did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flushed {
    /// (package, day) pairs written.
    pub increments: u64,
    pub downloads: u64,
    /// Increments of packages deleted since they were counted.
    pub dropped: u64,
}

/// How a download was answered, as the counting definition sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// A body that starts at the first byte (`200`, or a `206` from offset 0): one
    /// download; its bytes are counted as they are sent.
    FromStart,
    /// A `206` that starts later: not a download; its bytes are counted.
    Resumed,
    /// A `307` to object storage: one download of `size` bytes, which storage sends.
    Redirect { size: u64 },
}

impl DownloadCounter {
    pub fn new(store: DynStatsStore) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                pending: Mutex::default(),
                flushing: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Counts an answer to a download of package `package_id`. A redirect is counted at
    /// once; a body when it ends or is dropped, with the bytes it sent: wrap it in
    /// [`SentBytes::count`] (one update of the map per download).
    pub fn answered(&self, package_id: i64, answer: Answer) -> SentBytes {
        let now = Utc::now();
        let downloads = match answer {
            Answer::FromStart => 1,
            Answer::Resumed => 0,
            Answer::Redirect { size } => {
                self.add(package_id, now.date_naive(), 1, size, Some(now));
                0
            }
        };
        SentBytes {
            counter: self.clone(),
            package_id,
            at: now,
            downloads,
        }
    }

    fn add(
        &self,
        package_id: i64,
        day: NaiveDate,
        downloads: u64,
        bytes: u64,
        at: Option<DateTime<Utc>>,
    ) {
        let mut pending = self
            .inner
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        pending.entry((package_id, day)).or_default().absorb(Tally {
            downloads,
            bytes,
            last_at: at,
        });
    }

    /// Counts not yet written, as (package, day) pairs.
    pub fn pending(&self) -> usize {
        self.inner
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Adds everything counted so far to the database.
    pub async fn flush(&self) -> Result<Flushed, StoreError> {
        let _one = self.inner.flushing.lock().await;
        let taken = std::mem::take(
            &mut *self
                .inner
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        if taken.is_empty() {
            return Ok(Flushed::default());
        }
        let increments: Vec<DownloadIncrement> = taken
            .iter()
            .map(|(&(package_id, day), t)| DownloadIncrement {
                package_id,
                day,
                downloads: t.downloads,
                bytes: t.bytes,
                // Bytes alone (a resumed range) do not make a download: the latest
                // download time only moves with a download.
                last_at: t.last_at.unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
            })
            .collect();
        let downloads = increments.iter().map(|i| i.downloads).sum();
        let count = increments.len() as u64;
        match self.inner.store.add_downloads(increments).await {
            Ok(applied) => Ok(Flushed {
                increments: applied,
                downloads,
                dropped: count - applied.min(count),
            }),
            Err(e @ StoreError::CommitUncertain(_)) => {
                tracing::error!(
                    error = %e,
                    downloads,
                    "download counts may or may not have been written; dropped rather than risk counting them twice"
                );
                Err(e)
            }
            Err(e) => {
                // Back into the map, added to what was counted meanwhile.
                let mut pending = self
                    .inner
                    .pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                for (key, t) in taken {
                    pending.entry(key).or_default().absorb(t);
                }
                Err(e)
            }
        }
    }

    /// Flushes every `every` until [`Flusher::stop`], which flushes once more.
    pub fn spawn_flusher(&self, every: Duration) -> Flusher {
        let counter = self.clone();
        let stop = Arc::new(tokio::sync::Notify::new());
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every.max(Duration::from_millis(10)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    () = stopped.notified() => break,
                }
                match counter.flush().await {
                    Ok(f) if f.increments > 0 || f.dropped > 0 => tracing::debug!(
                        increments = f.increments,
                        downloads = f.downloads,
                        dropped = f.dropped,
                        "download counts written"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "download counts not written; will retry"),
                }
            }
            counter.flush().await
        });
        Flusher { stop, task }
    }
}

/// The periodic flush of a [`DownloadCounter`].
pub struct Flusher {
    stop: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<Result<Flushed, StoreError>>,
}

impl Flusher {
    /// Stops the periodic flush after the one under way, and flushes what is left.
    pub async fn stop(self) -> Result<Flushed, StoreError> {
        self.stop.notify_one();
        self.task
            .await
            .map_err(|e| StoreError::Task(format!("download count flusher: {e}")))?
    }
}

/// Counts the bytes of one answer as they are sent, and adds them when the body ends or
/// is dropped (a client that goes away early is charged what it received).
pub struct SentBytes {
    counter: DownloadCounter,
    package_id: i64,
    /// When the answer was given: its day is the download's.
    at: DateTime<Utc>,
    /// 1 for an answer from the first byte.
    downloads: u64,
}

impl SentBytes {
    /// `body`, counting what passes through it.
    pub fn count<S, E>(self, body: S) -> CountedBody<S>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
    {
        CountedBody {
            inner: body,
            sent: 0,
            to: self,
        }
    }
}

/// A body whose bytes are counted when it ends or is dropped.
pub struct CountedBody<S> {
    inner: S,
    sent: u64,
    to: SentBytes,
}

impl<S, E> Stream for CountedBody<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<Bytes, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &polled {
            self.sent += chunk.len() as u64;
        }
        polled
    }
}

impl<S> Drop for CountedBody<S> {
    fn drop(&mut self) {
        let to = &self.to;
        if to.downloads > 0 || self.sent > 0 {
            // Bytes alone (a resumed range) do not move the latest download time.
            let at = (to.downloads > 0).then_some(to.at);
            to.counter.add(
                to.package_id,
                to.at.date_naive(),
                to.downloads,
                self.sent,
                at,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use agentpkg_model::{
        DailyDownloads, RetentionCandidate, StorageUsage, TopDownloads, TopQuery, UsageTotals,
    };
    use agentpkg_store::{Health, StatsStore};
    use async_trait::async_trait;
    use futures_util::StreamExt;

    use super::*;

    /// Records what it is given, or fails as told.
    #[derive(Default)]
    struct Recorder {
        written: Mutex<Vec<DownloadIncrement>>,
        fail: AtomicBool,
        uncertain: AtomicBool,
    }

    #[async_trait]
    impl Health for Recorder {
        async fn ping(&self) -> Result<(), StoreError> {
            Ok(())
        }
    }

    #[async_trait]
    impl StatsStore for Recorder {
        async fn add_downloads(
            &self,
            increments: Vec<DownloadIncrement>,
        ) -> Result<u64, StoreError> {
            if self.uncertain.load(Ordering::SeqCst) {
                return Err(StoreError::CommitUncertain("connection lost".into()));
            }
            if self.fail.load(Ordering::SeqCst) {
                return Err(StoreError::Unavailable("down".into()));
            }
            let n = increments.len() as u64;
            self.written.lock().unwrap().extend(increments);
            Ok(n)
        }
        async fn daily_downloads(
            &self,
            _: i64,
            _: NaiveDate,
            _: NaiveDate,
        ) -> Result<Vec<DailyDownloads>, StoreError> {
            Ok(vec![])
        }
        async fn top_downloads(
            &self,
            _: &TopQuery,
            _: NaiveDate,
            _: NaiveDate,
        ) -> Result<TopDownloads, StoreError> {
            Err(StoreError::Unavailable("not here".into()))
        }
        async fn storage_usage(&self, _: u32, _: u32) -> Result<StorageUsage, StoreError> {
            Err(StoreError::Unavailable("not here".into()))
        }
        async fn usage_totals(&self) -> Result<UsageTotals, StoreError> {
            Ok(UsageTotals::default())
        }
        async fn retention_candidates(&self) -> Result<Vec<RetentionCandidate>, StoreError> {
            Ok(vec![])
        }
    }

    fn totals(written: &[DownloadIncrement], id: i64) -> (u64, u64) {
        written
            .iter()
            .filter(|i| i.package_id == id)
            .fold((0, 0), |(d, b), i| (d + i.downloads, b + i.bytes))
    }

    #[tokio::test]
    async fn answers_count_by_the_definition_and_bytes_as_sent() {
        let store = Arc::new(Recorder::default());
        let counter = DownloadCounter::new(store.clone());
        for _ in 0..3 {
            let body = futures_util::stream::iter(vec![
                Ok::<_, std::io::Error>(Bytes::from_static(b"abcd")),
                Ok(Bytes::from_static(b"ef")),
            ]);
            let mut counted = counter.answered(1, Answer::FromStart).count(body);
            while counted.next().await.is_some() {}
        }
        // A resumed range: bytes, no download.
        let body =
            futures_util::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from_static(b"xyz"))]);
        let mut counted = counter.answered(1, Answer::Resumed).count(body);
        while counted.next().await.is_some() {}
        drop(counted);
        // A body dropped after its first chunk: the download counts, and what was sent.
        let body = futures_util::stream::iter(vec![
            Ok::<_, std::io::Error>(Bytes::from_static(b"12")),
            Ok(Bytes::from_static(b"345")),
        ]);
        let mut counted = counter.answered(2, Answer::FromStart).count(body);
        counted.next().await;
        drop(counted);
        counter.answered(3, Answer::Redirect { size: 1000 });

        let flushed = counter.flush().await.unwrap();
        assert_eq!(flushed.downloads, 5);
        let written = store.written.lock().unwrap().clone();
        assert_eq!(totals(&written, 1), (3, 3 * 6 + 3));
        assert_eq!(totals(&written, 2), (1, 2));
        assert_eq!(totals(&written, 3), (1, 1000));
        assert_eq!(counter.pending(), 0);
    }

    #[tokio::test]
    async fn a_failed_flush_keeps_its_counts_and_an_uncertain_one_drops_them() {
        let store = Arc::new(Recorder::default());
        let counter = DownloadCounter::new(store.clone());
        counter.answered(1, Answer::Redirect { size: 10 });
        store.fail.store(true, Ordering::SeqCst);
        assert!(counter.flush().await.is_err());
        counter.answered(1, Answer::Redirect { size: 10 });
        store.fail.store(false, Ordering::SeqCst);
        counter.flush().await.unwrap();
        assert_eq!(totals(&store.written.lock().unwrap(), 1), (2, 20));

        counter.answered(1, Answer::Redirect { size: 10 });
        store.uncertain.store(true, Ordering::SeqCst);
        assert!(counter.flush().await.is_err());
        store.uncertain.store(false, Ordering::SeqCst);
        counter.flush().await.unwrap();
        // Not written twice, not put back.
        assert_eq!(totals(&store.written.lock().unwrap(), 1), (2, 20));
        assert_eq!(counter.pending(), 0);
    }
}
