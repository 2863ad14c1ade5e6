//! Download counting against no counting, and the statistics reports at scale.
//!
//! Two servers over one database and bucket: the one the README starts (counting on,
//! reports cached for `stats.cache_secs`) and one with `stats.count_downloads = false` and
//! `stats.cache_secs = 0`, which also shows what a report costs uncached.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl};
use serde_json::{Value, json};

use crate::measure::{drain, file_body, make_file, mb_per_s, percentile};
use agentpkg_store::testing::TestDatabase;

use crate::metadata::populate;
use agentpkg_bench::{MIB, Result, Server, start_server};

/// The settings of the second server.
pub(crate) const UNCOUNTED: &[(&str, &str)] = &[
    ("AGENTPKG__STATS__COUNT_DOWNLOADS", "false"),
    ("AGENTPKG__STATS__CACHE_SECS", "0"),
];

async fn upload(
    client: &reqwest::Client,
    server: &Server,
    token: &str,
    coords: &str,
    body: reqwest::Body,
) -> Result<i64> {
    let res = client
        .put(format!("{}/api/v1/packages/{coords}", server.base))
        .bearer_auth(token)
        .body(body)
        .send()
        .await?;
    if res.status() != 201 {
        return Err(format!("upload answered {}", res.status()).into());
    }
    res.json::<Value>().await?["id"]
        .as_i64()
        .ok_or_else(|| "no id".into())
}

/// Requests from `clients` workers for `secs`: latencies (sorted) and errors.
async fn load(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    paths: Arc<Vec<String>>,
    clients: usize,
    secs: u64,
) -> Result<(Vec<Duration>, u64, Duration)> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let workers = (0..clients).map(|c| {
        let (client, base, token, paths) = (
            client.clone(),
            base.to_owned(),
            token.to_owned(),
            paths.clone(),
        );
        tokio::spawn(async move {
            let (mut latencies, mut errors, mut i) = (Vec::new(), 0u64, c);
            while Instant::now() < deadline && latencies.len() < 100_000 {
                i += 1;
                let started = Instant::now();
                match client
                    .get(format!("{base}{}", paths[i % paths.len()]))
                    .bearer_auth(&token)
                    .send()
                    .await
                {
                    Ok(res) if res.status().is_success() => {
                        let _ = res.bytes().await;
                        latencies.push(started.elapsed());
                    }
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        })
    });
    let mut all = Vec::new();
    let mut errors = 0;
    for w in futures_util::future::join_all(workers).await {
        let (l, e) = w?;
        all.extend(l);
        errors += e;
    }
    all.sort();
    Ok((all, errors, started.elapsed()))
}

/// Download throughput of one large package, and the latency of small downloads, with
/// counting on and off, interleaved so that neither gets the warmer machine.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn counting_comparison(
    client: &reqwest::Client,
    counted: &Server,
    uncounted: &Server,
    token: &str,
    tmp: &Path,
    size: u64,
    quick: bool,
) -> Result<Value> {
    let path = make_file(tmp, size, 77)?;
    let big = upload(
        client,
        counted,
        token,
        "counting/1.0.0/linux/amd64",
        file_body(&path).await?,
    )
    .await?;
    std::fs::remove_file(&path)?;
    let small = upload(
        client,
        counted,
        token,
        "counting-small/1.0.0/linux/amd64",
        vec![9u8; 1024].into(),
    )
    .await?;
    let rounds = if quick { 4 } else { 8 };
    let (mut on, mut off) = (Duration::ZERO, Duration::ZERO);
    for r in 0..rounds {
        for counting in [r % 2 == 0, r % 2 != 0] {
            let server = if counting { counted } else { uncounted };
            let started = Instant::now();
            let n = drain(
                client
                    .get(format!("{}/api/v1/packages/{big}/download", server.base))
                    .bearer_auth(token)
                    .send()
                    .await?,
            )
            .await?;
            assert_eq!(n, size);
            if counting {
                on += started.elapsed();
            } else {
                off += started.elapsed();
            }
        }
    }
    let total = size * rounds;
    let (on_mb, off_mb) = (mb_per_s(total, on), mb_per_s(total, off));

    // Small downloads: 8 clients, alternating servers, four times each.
    let paths = Arc::new(vec![format!("/api/v1/packages/{small}/download")]);
    let secs = if quick { 1 } else { 3 };
    let (mut lat_on, mut lat_off) = (Vec::new(), Vec::new());
    let (mut time_on, mut time_off) = (Duration::ZERO, Duration::ZERO);
    let mut errors = 0;
    for r in 0..8 {
        let counting = r % 2 == 0;
        let server = if counting { counted } else { uncounted };
        let (l, e, t) = load(client, &server.base, token, paths.clone(), 8, secs).await?;
        errors += e;
        if counting {
            lat_on.extend(l);
            time_on += t;
        } else {
            lat_off.extend(l);
            time_off += t;
        }
    }
    lat_on.sort();
    lat_off.sort();
    let rps = |l: &[Duration], t: Duration| l.len() as f64 / t.as_secs_f64();
    let row = json!({
        "size_bytes": size,
        "rounds": rounds,
        "download_mb_s_counting": on_mb,
        "download_mb_s_not_counting": off_mb,
        "download_ratio": on_mb / off_mb,
        "small_download_p50_ms_counting": percentile(&lat_on, 0.5),
        "small_download_p99_ms_counting": percentile(&lat_on, 0.99),
        "small_download_p50_ms_not_counting": percentile(&lat_off, 0.5),
        "small_download_p99_ms_not_counting": percentile(&lat_off, 0.99),
        "small_download_rps_counting": rps(&lat_on, time_on),
        "small_download_rps_not_counting": rps(&lat_off, time_off),
        "small_download_rps_ratio": rps(&lat_on, time_on) / rps(&lat_off, time_off),
        "errors": errors,
    });
    println!(
        "\ndownload counting: {} MiB at {on_mb:.1} MB/s counted, {off_mb:.1} MB/s not (ratio {:.3}); \
         1 KiB downloads by 8 clients: p50 {:.2} / {:.2} ms, p99 {:.2} / {:.2} ms, {:.0} / {:.0} req/s (ratio {:.3}){}",
        size / MIB,
        on_mb / off_mb,
        percentile(&lat_on, 0.5),
        percentile(&lat_off, 0.5),
        percentile(&lat_on, 0.99),
        percentile(&lat_off, 0.99),
        rps(&lat_on, time_on),
        rps(&lat_off, time_off),
        rps(&lat_on, time_on) / rps(&lat_off, time_off),
        if errors > 0 {
            format!(" ({errors} errors)")
        } else {
            String::new()
        }
    );
    Ok(row)
}

#[derive(QueryableByName)]
struct Seeded {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    rows: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    downloads: i64,
}

/// A 90-day history of about `total` downloads over every package, straight into
/// PostgreSQL: package of rank r (by id) gets total / (r · H) downloads (a Zipf law, H the
/// harmonic number), spread over as many distinct days as it has downloads, at most 90.
/// Returns the rows and downloads written.
pub(crate) fn seed_downloads(url: &str, total: u64) -> Result<(i64, i64)> {
    let mut conn = PgConnection::establish(url)?;
    diesel::sql_query(format!(
        "WITH ranked AS (
             SELECT id, name, version, platform, arch, row_number() OVER (ORDER BY id) AS r
             FROM packages),
         h AS (SELECT sum(1.0 / r) AS h FROM ranked),
         tot AS (SELECT ranked.*, floor({total} / (r * h.h))::bigint AS t FROM ranked, h),
         sel AS (SELECT *, least(90, t) AS k FROM tot WHERE t > 0)
         INSERT INTO package_downloads
             (package_id, day, name, version, platform, arch, downloads, bytes)
         SELECT id, current_date - ((g * 7 + id) % 90)::int, name, version, platform, arch,
                t / k + CASE WHEN g < t % k THEN 1 ELSE 0 END,
                (t / k + CASE WHEN g < t % k THEN 1 ELSE 0 END) * 1024
         FROM sel, generate_series(0, 89) AS g WHERE g < k
         ON CONFLICT (package_id, day) DO UPDATE SET
             downloads = package_downloads.downloads + excluded.downloads,
             bytes = package_downloads.bytes + excluded.bytes"
    ))
    .execute(&mut conn)?;
    let seeded: Seeded = diesel::sql_query(
        "SELECT count(*)::bigint AS rows, coalesce(sum(downloads), 0)::bigint AS downloads
         FROM package_downloads",
    )
    .get_result(&mut conn)?;
    diesel::sql_query(
        "UPDATE packages p SET download_count = d.n, last_downloaded_at = d.last
         FROM (SELECT package_id, sum(downloads) AS n, max(day)::timestamp AS last
               FROM package_downloads GROUP BY package_id) d
         WHERE d.package_id = p.id",
    )
    .execute(&mut conn)?;
    diesel::sql_query("ANALYZE").execute(&mut conn)?;
    Ok((seeded.rows, seeded.downloads))
}

/// Latency of the reports on both servers (cached as started, and uncached).
pub(crate) async fn report_latency(
    client: &reqwest::Client,
    cached: &Server,
    uncached: &Server,
    token: &str,
    quick: bool,
) -> Result<Vec<Value>> {
    println!(
        "{:<28} {:>10} {:>8} {:>10} {:>10} {:>10}",
        "report", "server", "clients", "p50 ms", "p99 ms", "req/s"
    );
    let mut rows = Vec::new();
    let secs = if quick { 2 } else { 4 };
    for (label, path) in [
        ("top, 7 days", "/api/v1/stats/top?days=7&limit=10"),
        ("top, 30 days", "/api/v1/stats/top?days=30&limit=10"),
        (
            "top, 90 days, amd64",
            "/api/v1/stats/top?days=90&limit=10&arch=amd64",
        ),
        ("storage", "/api/v1/stats/storage"),
    ] {
        for (which, server, clients) in [
            ("cached", cached, 8usize),
            ("uncached", uncached, 1),
            ("uncached", uncached, 8),
        ] {
            let paths = Arc::new(vec![path.to_owned()]);
            let (l, errors, t) = load(client, &server.base, token, paths, clients, secs).await?;
            let row = json!({
                "report": label, "path": path, "server": which, "clients": clients,
                "p50_ms": percentile(&l, 0.5), "p99_ms": percentile(&l, 0.99),
                "requests_per_s": l.len() as f64 / t.as_secs_f64(), "errors": errors,
            });
            println!(
                "{label:<28} {which:>10} {clients:>8} {:>10.2} {:>10.2} {:>10.0}{}",
                percentile(&l, 0.5),
                percentile(&l, 0.99),
                l.len() as f64 / t.as_secs_f64(),
                if errors > 0 {
                    format!("  ({errors} errors)")
                } else {
                    String::new()
                }
            );
            rows.push(row);
        }
    }
    Ok(rows)
}

/// Counting on against off, then (after `populate` when `populate_first`) a generated
/// history of 100 downloads per package and the reports' latency.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn statistics_section(
    client: &reqwest::Client,
    server: &Server,
    bin: &Path,
    db: &TestDatabase,
    s3env: &[(String, String)],
    bucket_name: &str,
    token: &str,
    tmp: &Path,
    packages: u64,
    size: u64,
    quick: bool,
    populate_first: bool,
) -> Result<Value> {
    let uncounted = start_server(bin, db.url(), s3env, bucket_name, UNCOUNTED)?;
    let counting = counting_comparison(client, server, &uncounted, token, tmp, size, quick).await?;
    if populate_first {
        populate(db.url(), packages)?;
    }
    let started = Instant::now();
    let (rows, downloads) = seed_downloads(db.url(), packages * 100)?;
    println!(
        "\n{downloads} downloads in {rows} daily rows over {packages} packages, seeded in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let reports = report_latency(client, server, &uncounted, token, quick).await?;
    Ok(json!({
        "counting": counting,
        "packages": packages,
        "seeded_downloads": downloads,
        "seeded_rows": rows,
        "reports": reports,
    }))
}
