//! The mirror of upstream releases: for each configured source, the versions it follows
//! and the platforms it names, each asset is downloaded streaming and published through
//! the package manager with the release checksums file's SHA-256 as the expected checksum
//! and the release's Sigstore bundle as its signature — so the same checks as any upload
//! decide, and a failure stores nothing. Published as the `mirror` user, audited, and
//! recorded per asset (shared by replicas: one mirrors at a time, under a job lease).

mod config;
mod fetch;

use std::sync::Arc;
use std::time::Duration;

use agentpkg_model::{
    Actor, AuditAction, AuditOutcome, Coordinates, Entity, KeyPatterns, MirrorAsset, MirrorState,
    NameScope, NewAuditEvent, NewSigstoreIdentity, Role, Username, Version,
};
use agentpkg_packagemgr::{Accounts, AuditLog, Error as MgrError, PackageManager};
use agentpkg_store::MirrorStore;
use serde::Serialize;

pub use config::{MirrorSettings, Source, SourceSettings};

/// The job lease one replica holds while it mirrors.
const LEASE: &str = "mirror";

/// The user mirrored packages are published as (created on first use, role publisher,
/// with a random password nobody is told: it cannot sign in).
pub const MIRROR_USER: &str = "mirror";

/// Why the mirror could not run at all (a single asset's failure is in the report).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("mirror configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Manager(#[from] MgrError),
    #[error("database: {0}")]
    Store(#[from] agentpkg_store::StoreError),
}

/// What one run did.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Whether this replica ran (another holding the lease: `false`, nothing done).
    pub ran: bool,
    pub published: Vec<String>,
    /// Already published (by an earlier run, or by hand).
    pub present: usize,
    pub failed: Vec<String>,
}

/// The labels of the mirror's counter: the source and what became of the asset.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct AssetLabels {
    source: String,
    outcome: &'static str,
}

/// The mirror's metrics, registered with the server's others.
#[derive(Clone, Default)]
pub struct MirrorMetrics {
    assets: prometheus_client::metrics::family::Family<
        AssetLabels,
        prometheus_client::metrics::counter::Counter,
    >,
}

impl MirrorMetrics {
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "agentpkg_mirror_assets",
            "Assets the mirror tried, by source and outcome (published, failed; unlisted: a run that could not read the source's release list)",
            self.assets.clone(),
        );
    }
}

/// The mirror, wired.
#[derive(Clone)]
pub struct Mirror {
    metrics: MirrorMetrics,
    sources: Arc<Vec<Source>>,
    http: reqwest::Client,
    packages: PackageManager,
    accounts: Accounts,
    audit: AuditLog,
    store: Arc<dyn MirrorStore>,
    interval: Duration,
    holder: String,
}

impl Mirror {
    pub fn new(
        settings: &MirrorSettings,
        packages: PackageManager,
        accounts: Accounts,
        audit: AuditLog,
        store: Arc<dyn MirrorStore>,
    ) -> Result<Self, Error> {
        let sources = settings
            .sources
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.check()
                    .map_err(|e| Error::Config(format!("mirror.sources[{i}] ({}): {e}", s.name)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(settings.read_timeout_secs.max(1)))
            .user_agent(concat!("agentpkg-mirror/", env!("CARGO_PKG_VERSION")));
        if let Some(proxy) = &settings.proxy {
            let proxy = reqwest::Proxy::all(proxy)
                .map_err(|e| Error::Config(format!("mirror.proxy: {e}")))?;
            http = http.proxy(proxy);
        }
        Ok(Self {
            metrics: MirrorMetrics::default(),
            sources: Arc::new(sources),
            http: http
                .build()
                .map_err(|e| Error::Config(format!("mirror HTTP client: {e}")))?,
            packages,
            accounts,
            audit,
            store,
            interval: Duration::from_secs(settings.interval_secs),
            holder: uuid::Uuid::new_v4().to_string(),
        })
    }

    /// Its counters, for `/metrics`.
    pub fn metrics(&self) -> &MirrorMetrics {
        &self.metrics
    }

    pub fn has_sources(&self) -> bool {
        !self.sources.is_empty()
    }

    /// One run, when this replica gets the lease (else a report with `ran: false`).
    pub async fn run_once(&self) -> Result<Report, Error> {
        let until = chrono::Utc::now() + lease_length(self.interval);
        if !self
            .store
            .take_job_lease(LEASE, self.holder.clone(), until)
            .await?
        {
            tracing::info!("another replica is mirroring; this one waits");
            return Ok(Report::default());
        }
        let result = self.run_held().await;
        if let Err(e) = self.store.drop_job_lease(LEASE, self.holder.clone()).await {
            tracing::warn!(error = %e, "could not give the mirror's lease up; it lapses");
        }
        result
    }

    /// Runs every `interval` (the first run at once), on whichever replica gets the lease.
    pub fn spawn_periodic(self) -> Option<tokio::task::JoinHandle<()>> {
        if self.interval.is_zero() || self.sources.is_empty() {
            return None;
        }
        Some(tokio::spawn(async move {
            loop {
                match self.run_once().await {
                    Ok(report) if report.ran => tracing::info!(
                        published = report.published.len(),
                        present = report.present,
                        failed = report.failed.len(),
                        "mirror run done"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "mirror run failed"),
                }
                tokio::time::sleep(self.interval).await;
            }
        }))
    }

    async fn run_held(&self) -> Result<Report, Error> {
        let mut report = Report {
            ran: true,
            ..Report::default()
        };
        let actor = self.actor().await?;
        for source in self.sources.iter() {
            self.ensure_identity(source).await?;
            let versions = match self.versions(source).await {
                Ok(v) => v,
                Err(why) => {
                    tracing::error!(source = %source.name, error = %why, "cannot list releases");
                    self.metrics
                        .assets
                        .get_or_create(&AssetLabels {
                            source: source.name.to_string(),
                            outcome: "unlisted",
                        })
                        .inc();
                    let mut event = NewAuditEvent::new(AuditAction::MirrorFailure);
                    event.actor_id = Some(actor.user_id);
                    event.actor = Some(MIRROR_USER.into());
                    event.package = Some(source.name.to_string());
                    event.detail = format!("the release list: {why}");
                    event.outcome = AuditOutcome::Refused;
                    self.audit.record(event).await;
                    report.failed.push(format!("{}: {why}", source.name));
                    continue;
                }
            };
            for version in versions {
                let mut checksums = None;
                for &(platform, arch) in &source.platforms {
                    let coordinates = Coordinates {
                        name: source.name.clone(),
                        version: version.clone(),
                        platform,
                        arch,
                    };
                    let what = format!("{} {version} {platform}/{arch}", source.name);
                    match self.packages.find(&coordinates).await {
                        Ok(_) => {
                            report.present += 1;
                            continue;
                        }
                        Err(MgrError::NotFound(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                    let url = config::fill(&source.asset_url, &version.to_string(), platform, arch);
                    let outcome = self
                        .fetch(source, &coordinates, &url, &mut checksums, &actor)
                        .await;
                    let (state, detail, package_id) = match &outcome {
                        Ok(id) => (
                            MirrorState::Published,
                            "verified and published".into(),
                            Some(*id),
                        ),
                        Err(why) => (MirrorState::Failed, why.clone(), None),
                    };
                    self.record(
                        source,
                        &coordinates,
                        &url,
                        state,
                        &detail,
                        package_id,
                        &actor,
                    )
                    .await?;
                    match outcome {
                        Ok(_) => report.published.push(what),
                        Err(why) => report.failed.push(format!("{what}: {why}")),
                    }
                }
            }
        }
        Ok(report)
    }

    /// The `mirror` user, created on first use.
    async fn actor(&self) -> Result<Actor, Error> {
        let user = match self.accounts.find_user(MIRROR_USER).await {
            Ok(user) => user,
            Err(MgrError::NotFound(Entity::User)) => {
                let name = Username::parse(MIRROR_USER).map_err(MgrError::from)?;
                let password = agentpkg_packagemgr::generate_password()?;
                match self
                    .accounts
                    .create_user(&name, &password, Role::Publisher)
                    .await
                {
                    Ok(user) => user,
                    // Another replica made it first.
                    Err(MgrError::Conflict(_)) => self.accounts.find_user(MIRROR_USER).await?,
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Actor {
            user_id: user.id,
            admin: false,
            names: NameScope::All,
        })
    }

    /// The source's signer trusted for its name, as the configuration says (added once,
    /// audited as the mirror's doing).
    async fn ensure_identity(&self, source: &Source) -> Result<(), Error> {
        let keyring = self.packages.keyring().ok_or_else(|| {
            Error::Config("the mirror needs signatures (a signing store) to verify bundles".into())
        })?;
        let present = keyring.identities().await?.into_iter().any(|p| {
            p.patterns.allows(&source.name)
                && p.issuer == source.issuer
                && p.san.as_str() == source.san.as_str()
        });
        if present {
            return Ok(());
        }
        let pattern = agentpkg_model::NamePattern::parse(source.name.as_str())
            .map_err(|e| Error::Config(e.to_string()))?;
        let added = keyring
            .add_identity(NewSigstoreIdentity {
                patterns: KeyPatterns::new(vec![pattern])
                    .map_err(|e| Error::Config(e.to_string()))?,
                issuer: source.issuer.clone(),
                san: source.san.clone(),
                added_by: None,
            })
            .await?;
        let mut event = NewAuditEvent::new(AuditAction::SigstoreIdentityAdd);
        event.actor = Some(MIRROR_USER.into());
        event.detail = format!(
            "sigstore identity {}: issuer {} identity {} (mirror source {})",
            added.id,
            added.issuer,
            added.san.as_str(),
            source.name
        );
        self.audit.record(event).await;
        Ok(())
    }

    /// The versions to follow, newest first.
    async fn versions(&self, source: &Source) -> Result<Vec<Version>, String> {
        #[derive(serde::Deserialize)]
        struct Release {
            tag_name: String,
            #[serde(default)]
            draft: bool,
        }
        let res = self
            .http
            .get(&source.releases_url)
            .send()
            .await
            .map_err(|e| format!("{}: {e}", source.releases_url))?;
        if !res.status().is_success() {
            return Err(format!("{} answered {}", source.releases_url, res.status()));
        }
        let releases: Vec<Release> = res
            .json()
            .await
            .map_err(|e| format!("{}: not a release list: {e}", source.releases_url))?;
        let mut versions: Vec<Version> = releases
            .iter()
            .filter(|r| !r.draft)
            .filter_map(|r| Version::parse(r.tag_name.trim_start_matches('v')).ok())
            .filter(|v| {
                source
                    .versions
                    .as_ref()
                    .is_none_or(|req| req.matches(v, false))
            })
            .filter(|v| source.versions.is_some() || !v.is_prerelease())
            .collect();
        versions.sort_by_key(|v| std::cmp::Reverse(v.sort_key()));
        versions.dedup();
        if let Some(n) = source.newest {
            versions.truncate(n);
        }
        Ok(versions)
    }

    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        source: &Source,
        coordinates: &Coordinates,
        url: &str,
        state: MirrorState,
        detail: &str,
        package_id: Option<i64>,
        actor: &Actor,
    ) -> Result<(), Error> {
        self.store
            .record_mirror_asset(MirrorAsset {
                source: source.name.to_string(),
                version: coordinates.version.clone(),
                platform: coordinates.platform,
                arch: coordinates.arch,
                url: url.to_owned(),
                state,
                detail: detail.to_owned(),
                package_id,
                attempts: 0,
                updated_at: chrono::Utc::now(),
            })
            .await?;
        self.metrics
            .assets
            .get_or_create(&AssetLabels {
                source: source.name.to_string(),
                outcome: state.as_str(),
            })
            .inc();
        let (action, outcome) = match state {
            MirrorState::Published => (AuditAction::MirrorPublish, AuditOutcome::Done),
            MirrorState::Failed => (AuditAction::MirrorFailure, AuditOutcome::Refused),
        };
        match state {
            MirrorState::Published => tracing::info!(
                package = %source.name, version = %coordinates.version,
                platform = %coordinates.platform, arch = %coordinates.arch, url,
                "mirrored: verified and published"
            ),
            MirrorState::Failed => tracing::warn!(
                package = %source.name, version = %coordinates.version,
                platform = %coordinates.platform, arch = %coordinates.arch, url,
                reason = detail, "mirror: not published"
            ),
        }
        let mut event = NewAuditEvent::new(action);
        event.actor_id = Some(actor.user_id);
        event.actor = Some(MIRROR_USER.into());
        event.package = Some(source.name.to_string());
        event.package_id = package_id;
        event.subject = Some(format!(
            "{} {}/{}",
            coordinates.version, coordinates.platform, coordinates.arch
        ));
        event.detail = format!("{url}: {detail}");
        event.outcome = outcome;
        self.audit.record(event).await;
        Ok(())
    }

    /// Every asset tried, for `GET /api/v1/mirrors/status` and the console.
    pub async fn status(&self) -> Result<Vec<MirrorAsset>, MgrError> {
        Ok(self.store.mirror_assets().await?)
    }
}

/// How long a run may hold the lease: the interval, at least ten minutes.
fn lease_length(interval: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(interval.max(Duration::from_secs(600)))
        .unwrap_or(chrono::TimeDelta::hours(1))
}

#[cfg(test)]
mod tests {
    use agentpkg_model::{Arch, Platform};

    use super::*;

    #[test]
    fn templates_are_filled_and_sources_checked() {
        let url = config::fill(
            "https://x/v{version}/otelcol_{version}_{os}_{arch}.tar.gz",
            "0.158.0",
            Platform::Linux,
            Arch::Arm64,
        );
        assert_eq!(url, "https://x/v0.158.0/otelcol_0.158.0_linux_arm64.tar.gz");
        let mut s = SourceSettings {
            name: "otelcol-contrib".into(),
            releases_url: "https://x/releases".into(),
            asset_url: "https://x/{version}/{os}_{arch}".into(),
            bundle_url: None,
            checksums_url: "https://x/{version}/checksums.txt".into(),
            versions: Some(">=0.158.0".into()),
            newest: Some(2),
            platforms: vec!["linux/amd64".into()],
            issuer: "https://token.actions.githubusercontent.com".into(),
            san_regex: "^https://github\\.com/x/.*$".into(),
        };
        let source = s.check().unwrap();
        assert_eq!(
            source.bundle_url,
            "https://x/{version}/{os}_{arch}.sigstore.json"
        );
        s.platforms = vec!["linux".into()];
        assert_eq!(s.check().unwrap_err().field, "platforms");
        s.platforms = vec!["linux/amd64".into()];
        s.san_regex = "github.com".into();
        assert_eq!(s.check().unwrap_err().field, "san_regex");
        s.san_regex = "^x$".into();
        s.asset_url = "file:///etc/passwd".into();
        assert_eq!(s.check().unwrap_err().field, "asset_url");
    }
}
