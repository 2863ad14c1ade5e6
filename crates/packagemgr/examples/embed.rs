//! Embedding the package manager in another service, with a metadata store of its own.
//!
//! Built without the default features, so neither libpq, SQLite nor rust-s3 is compiled:
//!
//! ```text
//! cargo run -p agentpkg-packagemgr --no-default-features --example embed
//! ```
//!
//! The store here keeps packages in memory (a real service would use its own database);
//! the bytes go to a local directory through `FsStore`. The example checks what it does,
//! so CI runs it.

#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentpkg_packagemgr::model::{
    Activity, Arch, Checksum, Coordinates, Description, LatestQuery, ListQuery, NameScope,
    NewPackage, ObjectKey, Package, PackageName, PackagePatch, Page, Platform, Role, Version,
};
use agentpkg_packagemgr::{Caller, Credential, Error, ManagerConfig, PackageManager, UploadMeta};
use agentpkg_storage::FsStore;
use agentpkg_store::{Deleted, Health, Inserted, PackageStore, StoreError, UploadInFlight};
use async_trait::async_trait;
use futures_util::TryStreamExt;

/// Packages in memory, with the same rules as the database: coordinates are unique by
/// SemVer precedence, and identical bytes share one object.
#[derive(Default)]
struct MemoryPackages {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next_id: i64,
    packages: Vec<Package>,
    /// Checksum → the object holding those bytes.
    blobs: HashMap<Checksum, ObjectKey>,
    /// Uploads in flight: key → when last touched.
    markers: HashMap<String, Instant>,
}

fn same(p: &Package, c: &Coordinates) -> bool {
    p.name == c.name
        && p.platform == c.platform
        && p.arch == c.arch
        && p.version.precedence(&c.version).is_eq()
}

impl MemoryPackages {
    fn state(&self) -> Result<std::sync::MutexGuard<'_, State>, StoreError> {
        self.state
            .lock()
            .map_err(|_| StoreError::Unavailable("poisoned".into()))
    }
}

#[async_trait]
impl Health for MemoryPackages {
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait]
impl PackageStore for MemoryPackages {
    async fn insert_package(&self, new: NewPackage) -> Result<Inserted, StoreError> {
        let mut s = self.state()?;
        if s.packages.iter().any(|p| same(p, &new.coordinates)) {
            return Err(StoreError::Conflict);
        }
        let c = &new.coordinates;
        let elsewhere = s
            .packages
            .iter()
            .find(|p| p.name == c.name && p.checksum == new.checksum && p.version != c.version);
        if let (Some(other), false) = (elsewhere, new.republish) {
            return Err(StoreError::SameBytes(other.version.to_string()));
        }
        s.markers.remove(new.storage_key.as_str());
        let reused_object = s.blobs.contains_key(&new.checksum);
        let storage_key = s
            .blobs
            .entry(new.checksum.clone())
            .or_insert(new.storage_key)
            .clone();
        s.next_id += 1;
        let now = chrono::Utc::now();
        let package = Package {
            id: s.next_id,
            name: new.coordinates.name,
            version: new.coordinates.version,
            platform: new.coordinates.platform,
            arch: new.coordinates.arch,
            file_size: new.file_size,
            checksum: new.checksum,
            storage_key,
            filename: new.filename,
            description: new.description,
            is_active: true,
            signature: new.signature.as_ref().map(|s| s.info()),
            created_at: now,
            updated_at: now,
            download_count: 0,
            last_downloaded_at: None,
            yanked_at: None,
        };
        s.packages.push(package.clone());
        Ok(Inserted {
            package,
            reused_object,
        })
    }

    async fn package_exists(&self, c: &Coordinates) -> Result<bool, StoreError> {
        Ok(self.state()?.packages.iter().any(|p| same(p, c)))
    }

    async fn get_package(&self, id: i64) -> Result<Option<Package>, StoreError> {
        Ok(self.state()?.packages.iter().find(|p| p.id == id).cloned())
    }

    async fn find_package(&self, c: &Coordinates) -> Result<Option<Package>, StoreError> {
        Ok(self.state()?.packages.iter().find(|p| same(p, c)).cloned())
    }

    async fn package_versions(&self, name: &PackageName) -> Result<Vec<Package>, StoreError> {
        let mut found: Vec<Package> = self
            .state()?
            .packages
            .iter()
            .filter(|p| &p.name == name)
            .cloned()
            .collect();
        found.sort_by(|a, b| b.version.precedence(&a.version));
        Ok(found)
    }

    async fn update_package(
        &self,
        id: i64,
        patch: PackagePatch,
    ) -> Result<Option<Package>, StoreError> {
        let mut s = self.state()?;
        let Some(p) = s.packages.iter_mut().find(|p| p.id == id) else {
            return Ok(None);
        };
        if let Some(active) = patch.is_active {
            p.is_active = active;
            p.yanked_at = (!active).then(chrono::Utc::now);
        }
        if let Some(description) = patch.description {
            p.description = description;
        }
        p.updated_at = chrono::Utc::now();
        Ok(Some(p.clone()))
    }

    async fn list_packages(&self, q: &ListQuery) -> Result<Page<Package>, StoreError> {
        let s = self.state()?;
        let mut items: Vec<Package> = s
            .packages
            .iter()
            .filter(|p| match q.activity {
                Activity::ActiveOnly => p.is_active,
                Activity::InactiveOnly => !p.is_active,
                Activity::All => true,
            })
            .filter(|p| {
                q.name.as_ref().is_none_or(|f| {
                    f.name == p.name
                        && f.version
                            .as_ref()
                            .is_none_or(|r| r.matches(&p.version, true))
                })
            })
            .filter(|p| q.platform.is_none_or(|x| x == p.platform))
            .filter(|p| q.arch.is_none_or(|x| x == p.arch))
            .cloned()
            .collect();
        items.sort_by(|a, b| {
            a.name
                .as_str()
                .cmp(b.name.as_str())
                .then(b.version.precedence(&a.version))
        });
        let total = items.len() as u64;
        let items = items
            .into_iter()
            .skip(usize::try_from(q.page.offset()).unwrap_or(usize::MAX))
            .take(q.page.per_page as usize)
            .collect();
        Ok(Page {
            items,
            total,
            page: q.page.page,
            per_page: q.page.per_page,
        })
    }

    async fn latest_package(&self, q: &LatestQuery) -> Result<Option<Package>, StoreError> {
        Ok(self
            .state()?
            .packages
            .iter()
            .filter(|p| p.is_active && p.name == q.name)
            .filter(|p| p.platform == q.platform && p.arch == q.arch)
            .filter(|p| q.include_prerelease || !p.version.is_prerelease())
            .filter(|p| {
                q.requirement
                    .as_ref()
                    .is_none_or(|r| r.matches(&p.version, q.include_prerelease))
            })
            .max_by(|a, b| a.version.precedence(&b.version))
            .cloned())
    }

    async fn delete_package(&self, id: i64) -> Result<Option<Deleted>, StoreError> {
        let mut s = self.state()?;
        let Some(at) = s.packages.iter().position(|p| p.id == id) else {
            return Ok(None);
        };
        let package = s.packages.remove(at);
        let object_released = !s.packages.iter().any(|p| p.checksum == package.checksum);
        if object_released {
            s.blobs.remove(&package.checksum);
        }
        Ok(Some(Deleted {
            package,
            object_released,
        }))
    }

    async fn blob_keys(&self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .state()?
            .blobs
            .values()
            .map(|k| k.as_str().to_owned())
            .collect())
    }

    async fn packages_with_object(&self, key: &str) -> Result<Vec<i64>, StoreError> {
        Ok(self
            .state()?
            .packages
            .iter()
            .filter(|p| p.storage_key.as_str() == key)
            .map(|p| p.id)
            .collect())
    }

    async fn begin_upload(&self, key: &ObjectKey) -> Result<(), StoreError> {
        let mut s = self.state()?;
        s.markers.insert(key.to_string(), Instant::now());
        Ok(())
    }

    async fn touch_upload(&self, key: &ObjectKey) -> Result<(), StoreError> {
        if let Some(at) = self.state()?.markers.get_mut(key.as_str()) {
            *at = Instant::now();
        }
        Ok(())
    }

    async fn end_upload(&self, key: &ObjectKey) -> Result<(), StoreError> {
        self.state()?.markers.remove(key.as_str());
        Ok(())
    }

    async fn uploads_in_flight(&self) -> Result<Vec<UploadInFlight>, StoreError> {
        Ok(self
            .state()?
            .markers
            .iter()
            .map(|(key, at)| UploadInFlight {
                key: key.clone(),
                idle: at.elapsed(),
            })
            .collect())
    }

    async fn object_in_use(&self, key: &str, stale_after: Duration) -> Result<bool, StoreError> {
        let s = self.state()?;
        Ok(s.blobs.values().any(|k| k.as_str() == key)
            || s.markers
                .get(key)
                .is_some_and(|at| at.elapsed() < stale_after))
    }
}

fn meta(version: &str) -> Result<UploadMeta, Error> {
    Ok(UploadMeta {
        coordinates: Coordinates {
            name: PackageName::parse("edge-agent")?,
            version: Version::parse(version)?,
            platform: Platform::Linux,
            arch: Arch::Arm64,
        },
        filename: None,
        description: Description::parse("built by the embedding service")?,
        expected_sha256: None,
        publisher: None,
        signature: None,
        size: None,
        republish: false,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let manager = PackageManager::new(
        Arc::new(MemoryPackages::default()),
        Arc::new(FsStore::open(dir.path()).await?),
        ManagerConfig::default(),
    );

    for (version, bytes) in [("1.0.0", &b"first build"[..]), ("1.1.0", b"second build")] {
        let package = manager.upload(meta(version)?, bytes).await?;
        println!(
            "published {} {} ({} bytes)",
            package.name, package.version, package.file_size
        );
    }
    // The manager's rules hold for an embedder too: a duplicate is refused before its body
    // is read, and nothing of it is stored.
    let duplicate = manager.upload(meta("1.0.0")?, &b"again"[..]).await;
    assert!(
        matches!(duplicate, Err(Error::Conflict(_))),
        "{duplicate:?}"
    );

    let latest = manager
        .latest(&LatestQuery {
            name: PackageName::parse("edge-agent")?,
            platform: Platform::Linux,
            arch: Arch::Arm64,
            requirement: None,
            include_prerelease: false,
        })
        .await?;
    assert_eq!(latest.version.to_string(), "1.1.0");
    let download = manager.download(latest.id).await?;
    let bytes: Vec<u8> = download
        .body
        .map_ok(|chunk| chunk.to_vec())
        .try_concat()
        .await?;
    assert_eq!(bytes, b"second build");

    let history = manager.history(&PackageName::parse("edge-agent")?).await?;
    let versions: Vec<String> = history.iter().map(|v| v.version.to_string()).collect();
    assert_eq!(versions, ["1.1.0", "1.0.0"]);

    // The service's own users act through the gate, which decides as it does for the
    // REST API: a credential limited to other names does not see the package, a viewer
    // may not delete it, an admin may. (`with_audit` would record each decision.)
    let caller = |role: Role, names: NameScope| {
        Caller::new(Credential {
            user_id: 7,
            username: "service-user".into(),
            role,
            names,
            token: None,
            version: 0,
        })
    };
    let elsewhere = caller(Role::Admin, NameScope::matching(&["other-*".to_owned()])?);
    let unseen = manager.gate(&elsewhere).get(latest.id).await;
    assert!(matches!(unseen, Err(Error::NotFound(_))), "{unseen:?}");
    let viewer = caller(Role::Viewer, NameScope::All);
    assert_eq!(manager.gate(&viewer).get(latest.id).await?.id, latest.id);
    let refused = manager.gate(&viewer).delete(latest.id).await;
    assert!(matches!(refused, Err(Error::Forbidden(_))), "{refused:?}");
    let admin = caller(Role::Admin, NameScope::All);
    manager.gate(&admin).delete(latest.id).await?;
    let report = manager
        .reconcile(std::time::Duration::from_secs(3600), true)
        .await?;
    assert!(report.missing_objects.is_empty(), "{report:?}");
    println!(
        "embedded: latest was {}, history {versions:?}",
        latest.version
    );
    Ok(())
}
