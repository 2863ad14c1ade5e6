//! The store against real PostgreSQL and a real SQLite file: the same scenarios on both.

use agentpkg_model::{
    Arch, Checksum, Coordinates, Description, FileName, IdentityPattern, KeyFingerprint,
    KeyPatterns, LatestQuery, ListFrom, ListQuery, NameFilter, NamePattern, NewPackage,
    NewSignature, NewSigstoreIdentity, ObjectKey, OidcIssuer, PackageName, PageRequest, Platform,
    Role, SignatureBytes, SignatureFormat, Username, Verification, VerifiedBy, Version,
    VersionRequirement,
};
use agentpkg_store::testing::{Backend, TestDatabase};
use agentpkg_store::{
    AccountStore, Attached, DatabaseUrl, DieselStore, FleetStore, NewSigningKey, PackageStore,
    PoolOptions, SigningStore, StatsStore, StoreError,
};

// Held only for its Drop: the database or directory goes away with the test.
#[allow(dead_code)]
enum Backing {
    Pg(TestDatabase),
    Sqlite(tempfile::TempDir),
}

async fn open(backend: Backend) -> (DieselStore, Backing) {
    let (url, backing) = if backend == Backend::Production {
        let db = TestDatabase::create();
        (DatabaseUrl::parse(db.url()).unwrap(), Backing::Pg(db))
    } else {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/agentpkg.db");
        (DatabaseUrl::Sqlite(path), Backing::Sqlite(dir))
    };
    let store = DieselStore::connect(&url, &PoolOptions::default()).unwrap();
    store.run_migrations().await.unwrap();
    (store, backing)
}

fn new_package(name: &str, version: &str, platform: Platform, arch: Arch) -> NewPackage {
    NewPackage {
        coordinates: Coordinates {
            name: PackageName::parse(name).unwrap(),
            version: Version::parse(version).unwrap(),
            platform,
            arch,
        },
        filename: FileName::parse("agent").unwrap(),
        description: Description::parse("test").unwrap(),
        file_size: 3,
        checksum: distinct_checksum(),
        storage_key: ObjectKey::for_new_package(rand_id()),
        publisher: None,
        signature: None,
        republish: false,
    }
}

/// A checksum no other package in the test has (as if each had other bytes).
fn distinct_checksum() -> Checksum {
    let mut digest = [0u8; 32];
    digest[..16].copy_from_slice(&rand_id());
    digest[16..].copy_from_slice(&rand_id());
    Checksum::from_digest(&digest)
}

fn rand_id() -> [u8; 16] {
    *uuid::Uuid::new_v4().as_bytes()
}

agentpkg_store::on_both_backends!(
    the_fleet_revision_moves_with_what_offers_depend_on_and_only_then,
    a_signature_is_stored_with_its_package_and_goes_with_it,
    a_sigstore_verification_and_its_policies_round_trip,
    signing_keys_are_registered_updated_and_removed,
    migrations_revert_and_reapply,
    an_inserted_package_reads_back,
    the_same_coordinates_are_a_conflict_even_with_other_build_metadata,
    latest_follows_semver_and_skips_prereleases_unless_asked,
    lists_filter_paginate_and_count,
    pages_by_place_cover_the_list_once_both_ways,
    delete_returns_the_row_once,
    users_are_unique_and_listed_without_hashes,
    identical_bytes_share_one_object_until_the_last_package_goes,
    concurrent_uploads_of_the_same_bytes_agree_on_one_object,
    bytes_of_one_version_are_not_published_as_another_unless_asked,
    concurrent_versions_of_the_same_bytes_publish_one,
    a_delete_racing_an_upload_of_the_same_bytes_never_strands_it,
);

async fn migrations_revert_and_reapply(backend: Backend) {
    let (store, _b) = open(backend).await;
    assert_eq!(
        store.run_migrations().await.unwrap(),
        0,
        "nothing left to apply"
    );
    // Both dialects have the same migrations, one directory each.
    let migrations = std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../migrations/postgres"
    ))
    .unwrap()
    .count();
    assert_eq!(store.revert_all_migrations().await.unwrap(), migrations);
    assert!(
        store.count_users().await.is_err(),
        "tables are gone after revert"
    );
    assert_eq!(store.run_migrations().await.unwrap(), migrations);
    assert_eq!(store.count_users().await.unwrap(), 0);
}

async fn an_inserted_package_reads_back(backend: Backend) {
    let (store, _b) = open(backend).await;
    let new = new_package("opamp-agent", "1.0.0+build.7", Platform::Linux, Arch::Amd64);
    let inserted = store.insert_package(new.clone()).await.unwrap();
    assert!(!inserted.reused_object);
    let stored = inserted.package;
    assert_eq!(stored.name.as_str(), "opamp-agent");
    assert_eq!(stored.version.to_string(), "1.0.0+build.7");
    assert_eq!(stored.storage_key.as_str(), new.storage_key.as_str());
    assert_eq!(stored.checksum.as_str(), new.checksum.as_str());
    assert!(stored.is_active);
    assert_eq!(
        store.get_package(stored.id).await.unwrap(),
        Some(stored.clone())
    );
    assert!(store.package_exists(&new.coordinates).await.unwrap());
    assert_eq!(store.get_package(stored.id + 1000).await.unwrap(), None);
}

async fn the_same_coordinates_are_a_conflict_even_with_other_build_metadata(backend: Backend) {
    let (store, _b) = open(backend).await;
    store
        .insert_package(new_package("a", "1.0.0+one", Platform::Linux, Arch::Amd64))
        .await
        .unwrap();
    let err = store
        .insert_package(new_package("a", "1.0.0+two", Platform::Linux, Arch::Amd64))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict), "{err:?}");
    // Other platform or arch is another package.
    store
        .insert_package(new_package("a", "1.0.0", Platform::Darwin, Arch::Amd64))
        .await
        .unwrap();
    store
        .insert_package(new_package("a", "1.0.0", Platform::Linux, Arch::Arm64))
        .await
        .unwrap();
}

async fn latest_follows_semver_and_skips_prereleases_unless_asked(backend: Backend) {
    let (store, _b) = open(backend).await;
    for v in [
        "1.9.0",
        "1.10.0",
        "1.2.0",
        "1.11.0-rc.1",
        "1.11.0-rc.10",
        "1.11.0-rc.9",
    ] {
        store
            .insert_package(new_package("agent", v, Platform::Linux, Arch::Amd64))
            .await
            .unwrap();
    }
    store
        .insert_package(new_package(
            "agent",
            "9.0.0",
            Platform::Windows,
            Arch::Amd64,
        ))
        .await
        .unwrap();
    let name = PackageName::parse("agent").unwrap();
    let query = |platform, requirement: Option<&str>, include_prerelease| LatestQuery {
        name: name.clone(),
        platform,
        arch: Arch::Amd64,
        requirement: requirement.map(|r| VersionRequirement::parse(r).unwrap()),
        include_prerelease,
    };
    let latest = async |pre| {
        let q = query(Platform::Linux, None, pre);
        let found = store.latest_package(&q).await.unwrap();
        found.unwrap().version.to_string()
    };
    assert_eq!(latest(false).await, "1.10.0");
    assert_eq!(latest(true).await, "1.11.0-rc.10");
    let none = store
        .latest_package(&query(Platform::Darwin, None, true))
        .await
        .unwrap();
    assert!(none.is_none());
    let pinned = store
        .latest_package(&query(Platform::Linux, Some(">=1.2, <1.10"), false))
        .await
        .unwrap();
    assert_eq!(pinned.unwrap().version.to_string(), "1.9.0");
}

/// Paging by place (after or before a package, or the last page) walks the whole list once,
/// forwards and backwards, in the same order as paging by number; the total follows a
/// publish and a yank at once.
async fn pages_by_place_cover_the_list_once_both_ways(backend: Backend) {
    let (store, _b) = open(backend).await;
    for name in ["a-agent", "b-agent", "c-agent"] {
        for version in ["1.0.0", "1.10.0", "1.9.0-rc.1"] {
            for (platform, arch) in [
                (Platform::Linux, Arch::Amd64),
                (Platform::Linux, Arch::Arm64),
                (Platform::Darwin, Arch::Arm64),
            ] {
                store
                    .insert_package(new_package(name, version, platform, arch))
                    .await
                    .unwrap();
            }
        }
    }
    let list = |from: ListFrom, per_page: u32| ListQuery {
        page: PageRequest::new(Some(1), Some(per_page)),
        from,
        ..ListQuery::default()
    };
    let whole = store
        .list_packages(&list(ListFrom::Number, 100))
        .await
        .unwrap();
    assert_eq!(whole.total, 27);
    let whole: Vec<_> = whole.items.iter().map(|p| p.coordinates()).collect();
    assert_eq!(whole[0].to_path(), "a-agent/1.10.0/darwin/arm64");
    assert_eq!(whole[26].to_path(), "c-agent/1.0.0/linux/arm64");

    let mut forwards = Vec::new();
    let mut from = ListFrom::Number;
    loop {
        let page = store.list_packages(&list(from, 4)).await.unwrap();
        assert_eq!(page.total, 27);
        let Some(last) = page.items.last() else { break };
        from = ListFrom::After(last.coordinates());
        forwards.extend(page.items.iter().map(|p| p.coordinates()));
    }
    assert_eq!(forwards, whole);

    let mut backwards = Vec::new();
    let mut from = ListFrom::End;
    loop {
        let page = store.list_packages(&list(from, 4)).await.unwrap();
        let Some(first) = page.items.first() else {
            break;
        };
        from = ListFrom::Before(first.coordinates());
        let mut items: Vec<_> = page.items.iter().map(|p| p.coordinates()).collect();
        items.extend(backwards);
        backwards = items;
    }
    assert_eq!(backwards, whole);
    let end = store.list_packages(&list(ListFrom::End, 4)).await.unwrap();
    assert_eq!(end.items.len(), 4);
    assert_eq!(end.items[3].coordinates(), whole[26]);

    // With a version requirement (matched outside SQL), the same places.
    let mut one = list(ListFrom::After(whole[0].clone()), 2);
    one.name = Some(NameFilter {
        name: PackageName::parse("a-agent").unwrap(),
        version: Some(VersionRequirement::parse(">=1.0.0").unwrap()),
    });
    let page = store.list_packages(&one).await.unwrap();
    assert_eq!(page.total, 9);
    assert_eq!(
        page.items
            .iter()
            .map(|p| p.coordinates())
            .collect::<Vec<_>>(),
        whole[1..3]
    );

    // The total is counted again after a publish and after a yank.
    let published = store
        .insert_package(new_package(
            "d-agent",
            "1.0.0",
            Platform::Linux,
            Arch::Amd64,
        ))
        .await
        .unwrap();
    let page = store.list_packages(&list(ListFrom::End, 4)).await.unwrap();
    assert_eq!(page.total, 28);
    assert_eq!(page.items[3].name.as_str(), "d-agent");
    store
        .update_package(
            published.package.id,
            agentpkg_model::PackagePatch {
                is_active: Some(false),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let page = store
        .list_packages(&list(ListFrom::Number, 4))
        .await
        .unwrap();
    assert_eq!(page.total, 27);
}

async fn lists_filter_paginate_and_count(backend: Backend) {
    let (store, _b) = open(backend).await;
    for v in ["1.0.0", "1.10.0", "1.9.0"] {
        store
            .insert_package(new_package("b-agent", v, Platform::Linux, Arch::Amd64))
            .await
            .unwrap();
    }
    store
        .insert_package(new_package(
            "a-agent",
            "0.1.0",
            Platform::Darwin,
            Arch::Arm64,
        ))
        .await
        .unwrap();

    let all = store.list_packages(&ListQuery::default()).await.unwrap();
    assert_eq!(all.total, 4);
    let order: Vec<_> = all
        .items
        .iter()
        .map(|p| format!("{} {}", p.name, p.version))
        .collect();
    assert_eq!(
        order,
        [
            "a-agent 0.1.0",
            "b-agent 1.10.0",
            "b-agent 1.9.0",
            "b-agent 1.0.0"
        ]
    );

    let q = ListQuery {
        name: Some(NameFilter::new(PackageName::parse("b-agent").unwrap())),
        page: PageRequest::new(Some(2), Some(2)),
        ..ListQuery::default()
    };
    let page = store.list_packages(&q).await.unwrap();
    assert_eq!(page.total, 3);
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].version.to_string(), "1.0.0");

    let q = ListQuery {
        platform: Some(Platform::Darwin),
        arch: Some(Arch::Arm64),
        ..ListQuery::default()
    };
    let page = store.list_packages(&q).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].name.as_str(), "a-agent");
}

async fn the_fleet_revision_moves_with_what_offers_depend_on_and_only_then(backend: Backend) {
    let (store, _b) = open(backend).await;
    let mut last = store.fleet_revision().await.unwrap();
    assert_eq!(last, 0);
    fn moved(last: &mut i64, now: i64, what: &str) {
        assert!(now > *last, "{what}: the revision stayed at {last}");
        *last = now;
    }
    let p = store
        .insert_package(new_package("rev", "1.0.0", Platform::Linux, Arch::Amd64))
        .await
        .unwrap()
        .package;
    moved(
        &mut last,
        store.fleet_revision().await.unwrap(),
        "an upload",
    );
    let signed = signature(SignatureFormat::Openpgp, b"sig", false);
    store.attach_signature(p.id, signed, false).await.unwrap();
    moved(
        &mut last,
        store.fleet_revision().await.unwrap(),
        "a signature attached",
    );
    let yank = agentpkg_model::PackagePatch {
        is_active: Some(false),
        description: None,
    };
    store.update_package(p.id, yank).await.unwrap().unwrap();
    moved(&mut last, store.fleet_revision().await.unwrap(), "a yank");
    let new = agentpkg_model::NewAssignment {
        package: PackageName::parse("rev").unwrap(),
        version: agentpkg_model::VersionChoice::Latest,
        offer_as: String::new(),
        selector: [("service.name".to_owned(), "otelcol".to_owned())].into(),
        rollout_percent: 100,
        max_failure_ratio: 0.2,
        v_prefix: false,
        signature: agentpkg_model::OfferedSignature::Stored,
    };
    let a = store.create_assignment(new).await.unwrap();
    assert_eq!(a.signature, agentpkg_model::OfferedSignature::Stored);
    moved(
        &mut last,
        store.fleet_revision().await.unwrap(),
        "an assignment",
    );
    let widen = agentpkg_model::AssignmentPatch {
        rollout_percent: Some(50),
        ..Default::default()
    };
    store.update_assignment(a.id, widen).await.unwrap().unwrap();
    moved(
        &mut last,
        store.fleet_revision().await.unwrap(),
        "an assignment changed",
    );
    // Another signature format: other bytes in every offer.
    let cosign = agentpkg_model::AssignmentPatch {
        signature: Some(agentpkg_model::OfferedSignature::CosignCertSig),
        ..Default::default()
    };
    let changed = store
        .update_assignment(a.id, cosign)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        changed.signature,
        agentpkg_model::OfferedSignature::CosignCertSig
    );
    moved(
        &mut last,
        store.fleet_revision().await.unwrap(),
        "a signature format changed",
    );
    assert!(store.delete_assignment(a.id).await.unwrap());
    moved(
        &mut last,
        store.fleet_revision().await.unwrap(),
        "an assignment removed",
    );
    // A description and download counts change no offer.
    let describe = agentpkg_model::PackagePatch {
        is_active: None,
        description: Some(Description::parse("other").unwrap()),
    };
    store.update_package(p.id, describe).await.unwrap().unwrap();
    store
        .add_downloads(vec![agentpkg_model::DownloadIncrement {
            package_id: p.id,
            day: chrono::Utc::now().date_naive(),
            downloads: 1,
            bytes: 3,
            last_at: chrono::Utc::now(),
        }])
        .await
        .unwrap();
    assert_eq!(store.fleet_revision().await.unwrap(), last);
    store.delete_package(p.id).await.unwrap().unwrap();
    moved(&mut last, store.fleet_revision().await.unwrap(), "a delete");
}

async fn delete_returns_the_row_once(backend: Backend) {
    let (store, _b) = open(backend).await;
    let p = store
        .insert_package(new_package("x", "1.0.0", Platform::Linux, Arch::I386))
        .await
        .unwrap()
        .package;
    let deleted = store.delete_package(p.id).await.unwrap().unwrap();
    assert_eq!(deleted.package, p);
    assert!(deleted.object_released);
    assert_eq!(store.delete_package(p.id).await.unwrap(), None);
    assert_eq!(store.get_package(p.id).await.unwrap(), None);
}

async fn users_are_unique_and_listed_without_hashes(backend: Backend) {
    let (store, _b) = open(backend).await;
    let name = Username::parse("ci-bot").unwrap();
    let user = store
        .create_user(&name, "$argon2id$fake".into(), Role::Publisher)
        .await
        .unwrap();
    assert_eq!(user.role, Role::Publisher);
    let err = store
        .create_user(&name, "$argon2id$other".into(), Role::Viewer)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict), "{err:?}");
    let (found, hash) = store.user_credentials("ci-bot").await.unwrap().unwrap();
    assert_eq!(found, user);
    assert_eq!(hash, "$argon2id$fake");
    assert_eq!(store.list_users().await.unwrap(), vec![user.clone()]);
    assert_eq!(store.count_users().await.unwrap(), 1);
    assert!(store.delete_user(user.id).await.unwrap());
    assert!(!store.delete_user(user.id).await.unwrap());
}

fn with_checksum(mut p: NewPackage, checksum: &Checksum) -> NewPackage {
    p.checksum = checksum.clone();
    p
}

async fn identical_bytes_share_one_object_until_the_last_package_goes(backend: Backend) {
    let (store, _b) = open(backend).await;
    let sum = distinct_checksum();
    let first = store
        .insert_package(with_checksum(
            new_package("a", "1.0.0", Platform::Linux, Arch::Amd64),
            &sum,
        ))
        .await
        .unwrap();
    let second = store
        .insert_package(with_checksum(
            new_package("b", "2.0.0", Platform::Darwin, Arch::Arm64),
            &sum,
        ))
        .await
        .unwrap();
    assert!(!first.reused_object);
    assert!(second.reused_object);
    assert_eq!(second.package.storage_key, first.package.storage_key);
    let gone = store
        .delete_package(first.package.id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        !gone.object_released,
        "the second package still uses the bytes"
    );
    let gone = store
        .delete_package(second.package.id)
        .await
        .unwrap()
        .unwrap();
    assert!(gone.object_released);
    // The bytes can come back under a new object afterwards.
    let again = store
        .insert_package(with_checksum(
            new_package("c", "1.0.0", Platform::Linux, Arch::Amd64),
            &sum,
        ))
        .await
        .unwrap();
    assert!(!again.reused_object);
}

async fn bytes_of_one_version_are_not_published_as_another_unless_asked(backend: Backend) {
    let (store, _b) = open(backend).await;
    let sum = distinct_checksum();
    let insert = |version: &str, platform, republish| {
        let mut new = with_checksum(new_package("signed", version, platform, Arch::Amd64), &sum);
        new.republish = republish;
        let store = store.clone();
        async move { store.insert_package(new).await }
    };
    insert("1.0.0", Platform::Linux, false).await.unwrap();
    // The same version on another platform may have the same bytes (a script).
    insert("1.0.0", Platform::Darwin, false).await.unwrap();
    match insert("2.0.0", Platform::Linux, false).await {
        Err(StoreError::SameBytes(version)) => assert_eq!(version, "1.0.0"),
        other => panic!("expected SameBytes, got {other:?}"),
    }
    assert!(
        store
            .find_package(&new_package("signed", "2.0.0", Platform::Linux, Arch::Amd64).coordinates)
            .await
            .unwrap()
            .is_none(),
        "nothing of the refused version is stored"
    );
    // Another name may have the same bytes, and an admin's explicit choice republishes.
    store
        .insert_package(with_checksum(
            new_package("other", "2.0.0", Platform::Linux, Arch::Amd64),
            &sum,
        ))
        .await
        .unwrap();
    let again = insert("2.0.0", Platform::Linux, true).await.unwrap();
    assert!(again.reused_object);
}

async fn concurrent_versions_of_the_same_bytes_publish_one(backend: Backend) {
    let (store, _b) = open(backend).await;
    let sum = distinct_checksum();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            let new = with_checksum(
                new_package("raced", &format!("1.0.{i}"), Platform::Linux, Arch::Amd64),
                &sum,
            );
            tokio::spawn(async move { store.insert_package(new).await })
        })
        .collect();
    let mut published = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => published += 1,
            Err(StoreError::SameBytes(_)) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(published, 1, "exactly one version gets the bytes");
}

async fn concurrent_uploads_of_the_same_bytes_agree_on_one_object(backend: Backend) {
    let (store, _b) = open(backend).await;
    let sum = distinct_checksum();
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let store = store.clone();
            let new = with_checksum(
                new_package(&format!("pkg-{i}"), "1.0.0", Platform::Linux, Arch::Amd64),
                &sum,
            );
            tokio::spawn(async move { store.insert_package(new).await })
        })
        .collect();
    let mut owners = 0;
    let mut paths = std::collections::BTreeSet::new();
    for t in tasks {
        let inserted = t.await.unwrap().expect("every upload succeeds");
        owners += usize::from(!inserted.reused_object);
        paths.insert(inserted.package.storage_key.to_string());
    }
    assert_eq!(owners, 1, "exactly one upload's object is kept");
    assert_eq!(
        paths.len(),
        1,
        "every package points at that object: {paths:?}"
    );
}

async fn a_delete_racing_an_upload_of_the_same_bytes_never_strands_it(backend: Backend) {
    let (store, _b) = open(backend).await;
    for round in 0..15 {
        let sum = distinct_checksum();
        let old = store
            .insert_package(with_checksum(
                new_package("old", &format!("1.0.{round}"), Platform::Linux, Arch::Amd64),
                &sum,
            ))
            .await
            .unwrap()
            .package;
        let new = with_checksum(
            new_package("new", &format!("1.0.{round}"), Platform::Linux, Arch::Amd64),
            &sum,
        );
        let (deleted, inserted) = tokio::join!(
            {
                let store = store.clone();
                async move { store.delete_package(old.id).await }
            },
            {
                let store = store.clone();
                async move { store.insert_package(new).await }
            }
        );
        let deleted = deleted.unwrap().unwrap();
        let inserted = inserted.unwrap();
        // The invariant: the object the new package points at is never the one the delete
        // released.
        if deleted.object_released {
            assert_ne!(
                inserted.package.storage_key, deleted.package.storage_key,
                "round {round}: the new package points at a released object"
            );
            assert!(!inserted.reused_object);
        } else {
            assert_eq!(inserted.package.storage_key, deleted.package.storage_key);
            assert!(inserted.reused_object);
        }
    }
}

fn signature(format: SignatureFormat, bytes: &[u8], verified: bool) -> NewSignature {
    NewSignature {
        format,
        bytes: SignatureBytes::new(bytes.to_vec()).unwrap(),
        verified_by: verified.then(|| Verification {
            by: VerifiedBy::Key(KeyFingerprint::parse(&"AB".repeat(20)).unwrap()),
            signer: "Builds <builds@example.com>".into(),
            verified_at: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
        }),
    }
}

async fn a_signature_is_stored_with_its_package_and_goes_with_it(backend: Backend) {
    let (store, _backing) = open(backend).await;
    let mut new = new_package("signed", "1.0.0", Platform::Linux, Arch::Amd64);
    new.signature = Some(signature(SignatureFormat::Openpgp, b"sig one", true));
    let package = store.insert_package(new).await.unwrap().package;
    let info = package.signature.clone().unwrap();
    assert_eq!(info.format, SignatureFormat::Openpgp);
    let verified = info.verified_by.unwrap();
    assert_eq!(verified.key().unwrap().as_str(), "AB".repeat(20));
    assert_eq!(verified.verified_at.timestamp(), 1_800_000_000);
    // Every read of the package shows it.
    let again = store.get_package(package.id).await.unwrap().unwrap();
    assert_eq!(again.signature, package.signature);
    assert_eq!(
        store.signature_bytes(package.id).await.unwrap(),
        Some((SignatureFormat::Openpgp, b"sig one".to_vec()))
    );

    // A verified signature is replaced only when allowed, in the same transaction.
    let replacement = signature(SignatureFormat::Cosign, b"sig two", false);
    match store
        .attach_signature(package.id, replacement.clone(), false)
        .await
        .unwrap()
    {
        Attached::VerifiedExists(p) => assert_eq!(p.signature, package.signature),
        other => panic!("replaced without permission: {other:?}"),
    }
    assert_eq!(
        store.signature_bytes(package.id).await.unwrap().unwrap().1,
        b"sig one"
    );
    match store
        .attach_signature(package.id, replacement, true)
        .await
        .unwrap()
    {
        Attached::Done {
            package: p,
            replaced,
        } => {
            assert_eq!(replaced, package.signature);
            let info = p.signature.unwrap();
            assert_eq!(info.format, SignatureFormat::Cosign);
            assert!(info.verified_by.is_none());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store.signature_bytes(package.id).await.unwrap(),
        Some((SignatureFormat::Cosign, b"sig two".to_vec()))
    );
    assert!(matches!(
        store
            .attach_signature(
                424_242,
                signature(SignatureFormat::Cosign, b"x", false),
                true
            )
            .await
            .unwrap(),
        Attached::NoPackage
    ));
    // Unsigned packages have none; a deleted package takes its bytes along.
    let plain = store
        .insert_package(new_package("plain", "1.0.0", Platform::Linux, Arch::Amd64))
        .await
        .unwrap()
        .package;
    assert!(plain.signature.is_none());
    assert_eq!(store.signature_bytes(plain.id).await.unwrap(), None);
    store.delete_package(package.id).await.unwrap().unwrap();
    assert_eq!(store.signature_bytes(package.id).await.unwrap(), None);
}

async fn signing_keys_are_registered_updated_and_removed(backend: Backend) {
    let (store, _backing) = open(backend).await;
    let fingerprint = KeyFingerprint::parse(&"CD".repeat(20)).unwrap();
    let key = |revoked: bool, patterns: &[&str]| NewSigningKey {
        fingerprint: fingerprint.clone(),
        armored: "-----BEGIN PGP PUBLIC KEY BLOCK-----".into(),
        user_ids: vec!["A <a@example.com>".into(), "B <b@example.com>".into()],
        algorithm: "Ed25519".into(),
        key_created_at: chrono::DateTime::from_timestamp(1_700_000_000, 0),
        expires_at: None,
        revoked,
        patterns: KeyPatterns::new(
            patterns
                .iter()
                .map(|p| NamePattern::parse(p).unwrap())
                .collect(),
        )
        .unwrap(),
        added_by: None,
    };
    let (first, created) = store.upsert_key(key(false, &["otelcol*"])).await.unwrap();
    assert!(created);
    assert_eq!(first.user_ids.len(), 2);
    assert_eq!(first.patterns.patterns()[0].as_str(), "otelcol*");
    let (second, created) = store
        .upsert_key(key(true, &["otelcol*", "fluent-bit"]))
        .await
        .unwrap();
    assert!(!created, "the same fingerprint updates the key");
    assert!(second.revoked);
    assert_eq!(second.patterns.patterns().len(), 2);
    assert_eq!(second.created_at, first.created_at);
    assert_eq!(store.signing_keys().await.unwrap().len(), 1);
    assert_eq!(
        store.signing_key(&fingerprint).await.unwrap().unwrap(),
        second
    );
    assert!(store.delete_signing_key(&fingerprint).await.unwrap());
    assert!(!store.delete_signing_key(&fingerprint).await.unwrap());
    assert!(store.signing_key(&fingerprint).await.unwrap().is_none());
}

/// Kills every connection to the test's database from outside (a failover, an admin).
fn terminate_connections(db: &TestDatabase) -> usize {
    use diesel::{Connection, RunQueryDsl};
    let name = db.url().rsplit('/').next().unwrap().to_owned();
    let mut admin = diesel::PgConnection::establish(&agentpkg_store::testing::admin_url()).unwrap();
    diesel::sql_query(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    ))
    .execute(&mut admin)
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_writes_survive_connections_killed_while_idle() {
    let db = TestDatabase::create();
    let options = PoolOptions {
        max_connections: 4,
        ..PoolOptions::default()
    };
    let store = DieselStore::connect(&DatabaseUrl::parse(db.url()).unwrap(), &options).unwrap();
    store.run_migrations().await.unwrap();
    // Every pooled connection in use once, so all of them are idle in the pool.
    let query = ListQuery::default();
    let reads = (0..4).map(|_| store.list_packages(&query));
    for read in futures_util::future::join_all(reads).await {
        read.unwrap();
    }
    for round in 0..3 {
        assert!(
            terminate_connections(&db) > 0,
            "round {round}: nothing to kill"
        );
        // Reads are not checked before use: each finds its dead connection by failing,
        // drops it, and runs again on another.
        for _ in 0..6 {
            store.list_packages(&ListQuery::default()).await.unwrap();
        }
        assert!(terminate_connections(&db) > 0);
        // A write is checked first and goes out on a live connection, once.
        let name = format!("after-kill-{round}");
        let inserted = store
            .insert_package(new_package(&name, "1.0.0", Platform::Linux, Arch::Amd64))
            .await
            .unwrap();
        assert_eq!(inserted.package.name.as_str(), name);
    }
}

async fn a_sigstore_verification_and_its_policies_round_trip(backend: Backend) {
    let (store, _backing) = open(backend).await;
    let issuer = "https://token.actions.githubusercontent.com";
    let added = store
        .add_sigstore_identity(NewSigstoreIdentity {
            patterns: KeyPatterns::new(vec![NamePattern::parse("otelcol*").unwrap()]).unwrap(),
            issuer: OidcIssuer::parse(issuer).unwrap(),
            san: IdentityPattern::parse("^https://github\\.com/acme/.*$").unwrap(),
            added_by: None,
        })
        .await
        .unwrap();
    let other = store
        .add_sigstore_identity(NewSigstoreIdentity {
            patterns: KeyPatterns::new(vec![NamePattern::parse("*").unwrap()]).unwrap(),
            issuer: OidcIssuer::parse("https://accounts.google.com").unwrap(),
            san: IdentityPattern::parse("^ops@example\\.com$").unwrap(),
            added_by: None,
        })
        .await
        .unwrap();
    assert_ne!(added.id, other.id);
    assert_eq!(
        store.sigstore_identity(added.id).await.unwrap(),
        Some(added.clone())
    );
    assert_eq!(
        store.sigstore_identities().await.unwrap(),
        vec![added.clone(), other.clone()]
    );

    // A package verified through it keeps the record, by value, after the policy goes.
    let signed_at = chrono::DateTime::from_timestamp(1_700_000_000, 123_000).unwrap();
    let mut new = new_package("otelcol-contrib", "0.158.0", Platform::Linux, Arch::Amd64);
    new.signature = Some(NewSignature {
        format: SignatureFormat::SigstoreBundle,
        bytes: SignatureBytes::new(b"{}".to_vec()).unwrap(),
        verified_by: Some(Verification {
            by: VerifiedBy::Sigstore {
                identity: added.id,
                issuer: issuer.into(),
                signed_at,
            },
            signer: "https://github.com/acme/release.yml@refs/tags/v0.158.0".into(),
            verified_at: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
        }),
    });
    let package = store.insert_package(new.clone()).await.unwrap().package;
    assert_eq!(
        package.signature,
        new.signature.as_ref().map(NewSignature::info)
    );
    assert!(store.delete_sigstore_identity(added.id).await.unwrap());
    assert!(!store.delete_sigstore_identity(added.id).await.unwrap());
    assert_eq!(store.sigstore_identity(added.id).await.unwrap(), None);
    let again = store.get_package(package.id).await.unwrap().unwrap();
    assert_eq!(again.signature, package.signature);
    assert_eq!(store.sigstore_identities().await.unwrap(), vec![other]);
}

mod sessions;
