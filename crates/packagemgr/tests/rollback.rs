//! Every failure of an upload leaves no object and no row. The metadata store is real
//! (SQLite in a temporary directory); object storage is the in-memory fake, so that its
//! failures can be injected. The same guarantees are proven against PostgreSQL and S3 in
//! the server's integration tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use agentpkg_model::{
    Actor, Arch, Checksum, Coordinates, Coordinates as C, Description, FileName, LatestQuery,
    ListQuery, NameScope, NewPackage, ObjectKey, Package, PackageName, PackagePatch, Page,
    Platform, Role, Version, VersionRequirement,
};
use agentpkg_packagemgr::{
    Accounts, Error, FormField, HashingLimits, ManagerConfig, PackageManager, UploadMeta,
    body_channel,
};
use agentpkg_storage::{Fault, MemoryStore, ObjectStore};
use agentpkg_store::{
    DatabaseUrl, Deleted, DieselStore, Health, Inserted, PackageStore, PoolOptions, StoreError,
    UploadInFlight,
};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

/// The real store, with an insert that can be made to fail like a lost database.
struct FlakyStore {
    inner: DieselStore,
    fail_insert: AtomicBool,
}

#[async_trait]
impl Health for FlakyStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

#[async_trait]
impl PackageStore for FlakyStore {
    async fn insert_package(&self, new: NewPackage) -> Result<Inserted, StoreError> {
        if self.fail_insert.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("injected fault".into()));
        }
        self.inner.insert_package(new).await
    }
    async fn package_exists(&self, c: &C) -> Result<bool, StoreError> {
        self.inner.package_exists(c).await
    }
    async fn get_package(&self, id: i64) -> Result<Option<Package>, StoreError> {
        self.inner.get_package(id).await
    }
    async fn find_package(&self, c: &C) -> Result<Option<Package>, StoreError> {
        self.inner.find_package(c).await
    }
    async fn package_versions(&self, n: &PackageName) -> Result<Vec<Package>, StoreError> {
        self.inner.package_versions(n).await
    }
    async fn update_package(
        &self,
        id: i64,
        p: PackagePatch,
    ) -> Result<Option<Package>, StoreError> {
        self.inner.update_package(id, p).await
    }
    async fn list_packages(&self, q: &ListQuery) -> Result<Page<Package>, StoreError> {
        self.inner.list_packages(q).await
    }
    async fn latest_package(&self, q: &LatestQuery) -> Result<Option<Package>, StoreError> {
        self.inner.latest_package(q).await
    }
    async fn delete_package(&self, id: i64) -> Result<Option<Deleted>, StoreError> {
        self.inner.delete_package(id).await
    }
    async fn blob_keys(&self) -> Result<Vec<String>, StoreError> {
        self.inner.blob_keys().await
    }
    async fn packages_with_object(&self, key: &str) -> Result<Vec<i64>, StoreError> {
        self.inner.packages_with_object(key).await
    }
    async fn begin_upload(&self, key: &ObjectKey) -> Result<(), StoreError> {
        self.inner.begin_upload(key).await
    }
    async fn touch_upload(&self, key: &ObjectKey) -> Result<(), StoreError> {
        self.inner.touch_upload(key).await
    }
    async fn end_upload(&self, key: &ObjectKey) -> Result<(), StoreError> {
        self.inner.end_upload(key).await
    }
    async fn uploads_in_flight(&self) -> Result<Vec<UploadInFlight>, StoreError> {
        self.inner.uploads_in_flight().await
    }
    async fn object_in_use(&self, key: &str, stale: Duration) -> Result<bool, StoreError> {
        self.inner.object_in_use(key, stale).await
    }
}

struct Fixture {
    mgr: PackageManager,
    store: Arc<FlakyStore>,
    storage: Arc<MemoryStore>,
    _dir: tempfile::TempDir,
}

async fn fixture(max_upload_bytes: u64) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = DieselStore::connect(
        &DatabaseUrl::Sqlite(dir.path().join("t.db")),
        &PoolOptions::default(),
    )
    .unwrap();
    db.run_migrations().await.unwrap();
    let store = Arc::new(FlakyStore {
        inner: db,
        fail_insert: AtomicBool::new(false),
    });
    let storage = Arc::new(MemoryStore::new());
    let mgr = PackageManager::new(
        store.clone(),
        storage.clone(),
        ManagerConfig {
            max_upload_bytes,
            ..ManagerConfig::default()
        },
    );
    Fixture {
        mgr,
        store,
        storage,
        _dir: dir,
    }
}

impl Fixture {
    async fn assert_nothing_stored(&self) {
        // Give a drop guard's background delete, if one ran, no excuse.
        tokio::task::yield_now().await;
        assert_eq!(
            self.storage.list_keys().await.unwrap(),
            Vec::<String>::new(),
            "objects left"
        );
        let rows = self
            .store
            .list_packages(&ListQuery::default())
            .await
            .unwrap();
        assert_eq!(rows.total, 0, "rows left: {:?}", rows.items);
    }
}

fn meta(version: &str) -> UploadMeta {
    UploadMeta {
        coordinates: Coordinates {
            name: PackageName::parse("opamp-agent").unwrap(),
            version: Version::parse(version).unwrap(),
            platform: Platform::Linux,
            arch: Arch::Amd64,
        },
        filename: None,
        description: Description::parse("test agent").unwrap(),
        expected_sha256: None,
        publisher: None,
        signature: None,
        size: None,
        republish: false,
    }
}

fn sha256(data: &[u8]) -> Checksum {
    Checksum::from_digest(&Sha256::digest(data).into())
}

#[tokio::test]
async fn a_good_upload_stores_bytes_and_row_with_their_checksum() {
    let f = fixture(1 << 20).await;
    let data = b"#!/bin/sh\necho agent\n".to_vec();
    let mut m = meta("1.0.0");
    m.expected_sha256 = Some(sha256(&data));
    let p = f
        .mgr
        .upload(m, std::io::Cursor::new(data.clone()))
        .await
        .unwrap();
    assert_eq!(p.checksum.as_str(), sha256(&data).as_str());
    assert_eq!(p.file_size, data.len() as u64);
    assert_eq!(p.filename.as_str(), "opamp-agent");
    assert_eq!(
        f.storage.list_keys().await.unwrap(),
        vec![p.storage_key.to_string()]
    );
}

#[tokio::test]
async fn a_storage_failure_leaves_nothing() {
    let f = fixture(1 << 20).await;
    f.storage.set_fault(Fault {
        put: true,
        ..Fault::default()
    });
    let err = f
        .mgr
        .upload(meta("1.0.0"), &b"bytes"[..])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::StorageUnavailable(_)), "{err:?}");
    f.storage.set_fault(Fault::default());
    f.assert_nothing_stored().await;
}

#[tokio::test]
async fn a_database_failure_deletes_the_stored_object() {
    let f = fixture(1 << 20).await;
    f.store.fail_insert.store(true, Ordering::SeqCst);
    let err = f
        .mgr
        .upload(meta("1.0.0"), &b"bytes"[..])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DatabaseUnavailable(_)), "{err:?}");
    f.store.fail_insert.store(false, Ordering::SeqCst);
    f.assert_nothing_stored().await;
}

#[tokio::test]
async fn a_failed_cleanup_is_reported_not_swallowed() {
    let f = fixture(1 << 20).await;
    f.store.fail_insert.store(true, Ordering::SeqCst);
    f.storage.set_fault(Fault {
        delete: true,
        ..Fault::default()
    });
    let err = f
        .mgr
        .upload(meta("1.0.0"), &b"bytes"[..])
        .await
        .unwrap_err();
    // The caller still learns the original failure; the failed cleanup is counted (and
    // logged with its key) and the orphan stays for reconciliation.
    assert!(matches!(err, Error::DatabaseUnavailable(_)), "{err:?}");
    assert_eq!(f.storage.list_keys().await.unwrap().len(), 1);
    let metrics = f.mgr.metrics();
    assert_eq!(metrics.rollback_cleanup_failures.get(), 1);
    assert_eq!(metrics.rollback_cleanups.get(), 0);
}

#[tokio::test]
async fn a_checksum_mismatch_is_refused_and_leaves_nothing() {
    let f = fixture(1 << 20).await;
    let mut m = meta("1.0.0");
    m.expected_sha256 = Some(sha256(b"other bytes"));
    let err = f.mgr.upload(m, &b"bytes"[..]).await.unwrap_err();
    match err {
        Error::ChecksumMismatch { expected, actual } => {
            assert_eq!(expected, sha256(b"other bytes").as_str());
            assert_eq!(actual, sha256(b"bytes").as_str());
        }
        other => panic!("{other:?}"),
    }
    f.assert_nothing_stored().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_and_leaves_nothing() {
    let f = fixture(1000).await;
    let err = f
        .mgr
        .upload(meta("1.0.0"), &[0u8; 1001][..])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge { limit: 1000 }), "{err:?}");
    f.assert_nothing_stored().await;
    // Exactly the limit is fine.
    f.mgr.upload(meta("1.0.0"), &[0u8; 1000][..]).await.unwrap();
}

#[tokio::test]
async fn a_body_cut_short_is_refused_and_leaves_nothing() {
    let f = fixture(1 << 20).await;
    let (tx, rx) = body_channel(4);
    tokio::spawn(async move {
        tx.send(Bytes::from_static(b"first half")).await.unwrap();
        drop(tx); // the client hung up
    });
    let err = f.mgr.upload(meta("1.0.0"), rx).await.unwrap_err();
    assert!(matches!(err, Error::Body(_)), "{err:?}");
    f.assert_nothing_stored().await;
}

#[tokio::test]
async fn an_empty_file_is_refused() {
    let f = fixture(1 << 20).await;
    let err = f.mgr.upload(meta("1.0.0"), &b""[..]).await.unwrap_err();
    assert!(
        matches!(err, Error::Invalid(ref v) if v.field == "file"),
        "{err:?}"
    );
    f.assert_nothing_stored().await;
}

#[tokio::test]
async fn a_duplicate_is_a_conflict_never_an_overwrite() {
    let f = fixture(1 << 20).await;
    let first = f.mgr.upload(meta("1.0.0+a"), &b"one"[..]).await.unwrap();
    let err = f
        .mgr
        .upload(meta("1.0.0+b"), &b"two"[..])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err:?}");
    assert_eq!(
        f.storage.list_keys().await.unwrap(),
        vec![first.storage_key.to_string()]
    );
    assert_eq!(
        f.mgr.get(first.id).await.unwrap().checksum.as_str(),
        sha256(b"one").as_str()
    );
}

#[tokio::test]
async fn racing_duplicates_publish_one_and_roll_back_the_other() {
    let f = fixture(1 << 20).await;
    // Both pass the early check, then race for the unique index.
    let a = f.mgr.stage(&b"one"[..]).await.unwrap();
    let b = f.mgr.stage(&b"two"[..]).await.unwrap();
    assert_eq!(f.storage.list_keys().await.unwrap().len(), 2);
    let (ra, rb) = tokio::join!(
        f.mgr.publish(a, meta("2.0.0")),
        f.mgr.publish(b, meta("2.0.0"))
    );
    let (winner, loser) = match (ra, rb) {
        (Ok(p), Err(e)) | (Err(e), Ok(p)) => (p, e),
        other => panic!("expected one winner: {other:?}"),
    };
    assert!(matches!(loser, Error::Conflict(_)), "{loser:?}");
    assert_eq!(
        f.storage.list_keys().await.unwrap(),
        vec![winner.storage_key.to_string()]
    );
}

#[tokio::test]
async fn a_dropped_staged_upload_is_deleted() {
    let f = fixture(1 << 20).await;
    let staged = f.mgr.stage(&b"never published"[..]).await.unwrap();
    drop(staged);
    // The guard deletes in the background; wait for it, bounded.
    for _ in 0..100 {
        if f.storage.list_keys().await.unwrap().is_empty() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the dropped upload's object was not deleted");
}

#[tokio::test]
async fn delete_removes_row_then_object_and_survives_a_storage_failure() {
    let f = fixture(1 << 20).await;
    let p = f.mgr.upload(meta("1.0.0"), &b"x"[..]).await.unwrap();
    f.storage.set_fault(Fault {
        delete: true,
        ..Fault::default()
    });
    f.mgr.delete(p.id).await.unwrap();
    // The row is gone, so nobody is handed a package without bytes; the object is an
    // orphan for reconciliation.
    assert!(matches!(f.mgr.get(p.id).await, Err(Error::NotFound(_))));
    assert_eq!(
        f.storage.list_keys().await.unwrap(),
        vec![p.storage_key.to_string()]
    );
    f.storage.set_fault(Fault::default());
    let q = f.mgr.upload(meta("1.0.1"), &b"y"[..]).await.unwrap();
    f.mgr.delete(q.id).await.unwrap();
    assert!(
        !f.storage
            .list_keys()
            .await
            .unwrap()
            .contains(&q.storage_key.to_string())
    );
    assert!(matches!(f.mgr.delete(q.id).await, Err(Error::NotFound(_))));
}

#[tokio::test]
async fn latest_ignores_prereleases_unless_asked() {
    let f = fixture(1 << 20).await;
    for v in ["1.9.0", "1.10.0", "2.0.0-rc.1"] {
        f.mgr.upload(meta(v), v.as_bytes()).await.unwrap();
    }
    let query = |platform, requirement: Option<&str>, include_prerelease| LatestQuery {
        name: PackageName::parse("opamp-agent").unwrap(),
        platform,
        arch: Arch::Amd64,
        requirement: requirement.map(|r| VersionRequirement::parse(r).unwrap()),
        include_prerelease,
    };
    let stable = f
        .mgr
        .latest(&query(Platform::Linux, None, false))
        .await
        .unwrap();
    assert_eq!(stable.version.to_string(), "1.10.0");
    let pre = f
        .mgr
        .latest(&query(Platform::Linux, None, true))
        .await
        .unwrap();
    assert_eq!(pre.version.to_string(), "2.0.0-rc.1");
    let pinned = f
        .mgr
        .latest(&query(Platform::Linux, Some("~1.9"), true))
        .await
        .unwrap();
    assert_eq!(pinned.version.to_string(), "1.9.0");
    let none = f.mgr.latest(&query(Platform::Darwin, None, true)).await;
    assert!(matches!(none, Err(Error::NotFound(_))));
}

#[tokio::test]
async fn a_stalled_store_fails_the_download_instead_of_holding_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = DieselStore::connect(
        &DatabaseUrl::Sqlite(dir.path().join("t.db")),
        &PoolOptions::default(),
    )
    .unwrap();
    db.run_migrations().await.unwrap();
    let storage = Arc::new(MemoryStore::new());
    let mgr = PackageManager::new(
        Arc::new(db),
        storage.clone(),
        ManagerConfig {
            storage_read_timeout: Duration::from_millis(200),
            ..ManagerConfig::default()
        },
    );
    let p = mgr.upload(meta("1.0.0"), &b"bytes"[..]).await.unwrap();
    storage.set_fault(Fault {
        stall: true,
        ..Fault::default()
    });
    let mut download = mgr.download(p.id).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), download.body.next())
        .await
        .expect("the download was held past the storage read timeout");
    let err = first.expect("an error, not the end").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
}

#[tokio::test]
async fn history_groups_builds_by_version_newest_first_and_an_unknown_name_is_not_found() {
    let f = fixture(1 << 20).await;
    for (version, arch) in [
        ("1.0.0", Arch::Amd64),
        ("1.1.0", Arch::Amd64),
        ("1.0.0", Arch::Arm64),
    ] {
        let mut m = meta(version);
        m.coordinates.arch = arch;
        // Each version its own build (the same bytes as another version are refused).
        f.mgr.upload(m, version.as_bytes()).await.unwrap();
    }
    let history = f
        .mgr
        .history(&PackageName::parse("opamp-agent").unwrap())
        .await
        .unwrap();
    let shape: Vec<(String, usize)> = history
        .iter()
        .map(|v| (v.version.to_string(), v.packages.len()))
        .collect();
    assert_eq!(shape, [("1.1.0".to_owned(), 1), ("1.0.0".to_owned(), 2)]);
    let unknown = f.mgr.history(&PackageName::parse("nobody").unwrap()).await;
    assert!(matches!(unknown, Err(Error::NotFound(_))), "{unknown:?}");
}

#[tokio::test]
async fn nobody_deletes_their_own_account_through_the_manager_either() {
    let f = fixture(1 << 20).await;
    let accounts = Accounts::new(Arc::new(f.store.inner.clone()), HashingLimits::default());
    let admin = accounts.ensure_admin(None).await.unwrap().unwrap().user;
    let err = accounts.delete_user(admin.id, admin.id).await.unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err:?}");
    assert_eq!(accounts.list_users().await.unwrap().len(), 1);
}

#[tokio::test]
async fn first_start_creates_an_admin_with_a_generated_password_once() {
    let f = fixture(1 << 20).await;
    let accounts = Accounts::new(Arc::new(f.store.inner.clone()), HashingLimits::default());
    let first = accounts
        .ensure_admin(None)
        .await
        .unwrap()
        .expect("admin created");
    let password = first.generated_password.expect("a password was generated");
    let user = accounts
        .login("admin", password.clone())
        .await
        .unwrap()
        .user;
    assert_eq!(user.role, Role::Admin);
    assert!(accounts.ensure_admin(None).await.unwrap().is_none());
    let wrong = accounts.login("admin", "not the password".into()).await;
    assert!(matches!(wrong, Err(Error::BadCredentials)));
    let nobody = accounts.login("nobody", password).await;
    assert!(matches!(nobody, Err(Error::BadCredentials)));
}

#[tokio::test]
async fn a_configured_admin_password_must_be_strong() {
    let f = fixture(1 << 20).await;
    let accounts = Accounts::new(Arc::new(f.store.inner.clone()), HashingLimits::default());
    let weak = accounts.ensure_admin(Some(&"admin123".into())).await;
    assert!(
        matches!(weak, Err(Error::Invalid(_))),
        "weak password accepted"
    );
    let ok = accounts
        .ensure_admin(Some(&"a long configured secret".into()))
        .await
        .unwrap()
        .unwrap();
    assert!(ok.generated_password.is_none());
    accounts
        .login("admin", "a long configured secret".into())
        .await
        .unwrap();
}

#[tokio::test]
async fn reconciliation_removes_old_orphans_and_reports_missing_objects() {
    let f = fixture(1 << 20).await;
    let kept = f
        .mgr
        .upload(meta("1.0.0"), &b"referenced"[..])
        .await
        .unwrap();
    let lost = f
        .mgr
        .upload(meta("1.0.1"), &b"will vanish"[..])
        .await
        .unwrap();
    // As if the server died after storing two uploads and before recording them: one an
    // hour ago, one just now.
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let old = agentpkg_model::ObjectKey::for_new_package([1; 16]);
    let young = agentpkg_model::ObjectKey::for_new_package([2; 16]);
    f.storage.insert_at(&old, b"orphan", hour_ago);
    f.storage
        .insert_at(&young, b"in flight", std::time::SystemTime::now());
    // And one package's object vanished.
    f.storage.delete(&lost.storage_key).await.unwrap();
    let grace = std::time::Duration::from_secs(600);

    let dry = f.mgr.reconcile(grace, true).await.unwrap();
    assert!(dry.dry_run);
    assert_eq!(dry.orphans_removed, vec![old.to_string()]);
    assert_eq!(dry.orphans_in_grace, vec![young.to_string()]);
    assert_eq!(dry.missing_objects.len(), 1);
    assert_eq!(dry.missing_objects[0].key, lost.storage_key.to_string());
    assert_eq!(dry.missing_objects[0].package_ids, vec![lost.id]);
    assert!(
        f.storage.exists(&old).await.unwrap(),
        "a dry run deletes nothing"
    );

    let real = f.mgr.reconcile(grace, false).await.unwrap();
    assert_eq!(real.orphans_removed, vec![old.to_string()]);
    assert!(!f.storage.exists(&old).await.unwrap());
    assert!(f.storage.exists(&young).await.unwrap());
    let kept_key = kept.storage_key.clone();
    assert!(
        f.storage.exists(&kept_key).await.unwrap(),
        "referenced objects stay"
    );
    // The row without its object is reported, not deleted.
    assert!(f.mgr.get(lost.id).await.is_ok());
}

/// A form's fields come in any order; the staged file belongs to the upload, so every way
/// it can end without publishing leaves nothing, and a duplicate field is refused.
#[tokio::test]
async fn a_form_upload_publishes_once_complete_and_leaves_nothing_otherwise() {
    let f = fixture(1 << 20).await;
    let fields = |version: &str| {
        let m = meta(version);
        vec![
            FormField::Version(m.coordinates.version),
            FormField::Platform(m.coordinates.platform),
            FormField::Name(m.coordinates.name),
            FormField::Arch(m.coordinates.arch),
        ]
    };
    let accounts = Accounts::new(Arc::new(f.store.inner.clone()), HashingLimits::default());
    let admin = accounts.ensure_admin(None).await.unwrap().unwrap();
    let actor = Actor {
        user_id: admin.user.id,
        admin: false,
        names: NameScope::All,
    };

    // The file before the name: then a missing field fails the upload at its end.
    let mut upload = f.mgr.form_upload(actor.clone());
    upload.file(None, &b"no name"[..]).await.unwrap();
    upload
        .field(FormField::Version(Version::parse("1.0.0").unwrap()))
        .await
        .unwrap();
    let missing = upload.finish(None).await;
    assert!(
        matches!(missing, Err(Error::MissingField("name"))),
        "{missing:?}"
    );
    f.assert_nothing_stored().await;

    // A field sent twice is refused; the caller gives up, and the bytes go.
    let mut upload = f.mgr.form_upload(actor.clone());
    upload.file(None, &b"twice"[..]).await.unwrap();
    let again = upload.file(None, &b"twice"[..]).await;
    assert!(
        matches!(again, Err(Error::DuplicateField("file"))),
        "{again:?}"
    );
    upload.abandon().await;
    f.assert_nothing_stored().await;

    // A header checksum that disagrees with the form's.
    let mut upload = f.mgr.form_upload(actor.clone());
    for field in fields("1.0.0") {
        upload.field(field).await.unwrap();
    }
    upload
        .field(FormField::Sha256(sha256(b"one thing")))
        .await
        .unwrap();
    upload.file(None, &b"one thing"[..]).await.unwrap();
    let disagree = upload.finish(Some(sha256(b"another"))).await;
    assert!(matches!(disagree, Err(Error::Invalid(_))), "{disagree:?}");
    f.assert_nothing_stored().await;

    // Complete: published, with the file name the form gave.
    let mut upload = f.mgr.form_upload(actor.clone());
    for field in fields("1.0.0") {
        upload.field(field).await.unwrap();
    }
    let filename = FileName::parse("agent.tar.gz").unwrap();
    upload
        .file(Some(filename), &b"the agent"[..])
        .await
        .unwrap();
    let published = upload.finish(Some(sha256(b"the agent"))).await.unwrap();
    assert_eq!(published.filename.as_str(), "agent.tar.gz");

    // Coordinates that are taken are refused before the file is stored.
    let mut upload = f.mgr.form_upload(actor);
    for field in fields("1.0.0") {
        upload.field(field).await.unwrap();
    }
    let taken = upload.file(None, &b"other bytes"[..]).await;
    assert!(matches!(taken, Err(Error::Conflict(_))), "{taken:?}");
    upload.abandon().await;
    assert_eq!(
        f.storage.list_keys().await.unwrap(),
        vec![published.storage_key.to_string()]
    );
}
