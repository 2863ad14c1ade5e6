use super::*;
use futures_util::TryStreamExt;

fn key(n: u8) -> ObjectKey {
    ObjectKey::for_new_package([n; 16])
}

/// Every call is reported once, by its operation and outcome.
#[tokio::test]
async fn each_call_is_reported_to_the_observer() {
    #[derive(Default)]
    struct Seen(std::sync::Mutex<Vec<(&'static str, bool)>>);
    impl CallObserver for Seen {
        fn observe(&self, operation: &'static str, ok: bool, _: std::time::Duration) {
            self.0.lock().unwrap().push((operation, ok));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let seen = Arc::new(Seen::default());
    let store = FsStore::open(dir.path())
        .await
        .unwrap()
        .observed_by(seen.clone());
    store.put(&key(1), &mut &b"abc"[..]).await.unwrap();
    assert!(store.stat(&key(1)).await.unwrap().is_some());
    store.delete(&key(1)).await.unwrap();
    assert!(matches!(
        store.get(&key(1)).await,
        Err(StorageError::NotFound)
    ));
    assert_eq!(
        *seen.0.lock().unwrap(),
        [
            ("put", true),
            ("stat", true),
            ("delete", true),
            ("get", false)
        ]
    );
}

#[tokio::test]
async fn put_get_delete_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).await.unwrap();
    let data = vec![42u8; 1_000_000];
    let n = store.put(&key(1), &mut data.as_slice()).await.unwrap();
    assert_eq!(n, 1_000_000);
    assert!(store.exists(&key(1)).await.unwrap());
    let got: Vec<u8> = store
        .get(&key(1))
        .await
        .unwrap()
        .map_ok(|b| b.to_vec())
        .try_concat()
        .await
        .unwrap();
    assert_eq!(got, data);
    assert_eq!(store.list_keys().await.unwrap(), vec![key(1).to_string()]);
    store.delete(&key(1)).await.unwrap();
    store.delete(&key(1)).await.unwrap();
    assert!(!store.exists(&key(1)).await.unwrap());
    assert!(matches!(
        store.get(&key(1)).await,
        Err(StorageError::NotFound)
    ));
}

#[tokio::test]
async fn put_is_create_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).await.unwrap();
    store.put(&key(2), &mut &b"first"[..]).await.unwrap();
    let err = store.put(&key(2), &mut &b"second"[..]).await.unwrap_err();
    assert!(matches!(err, StorageError::AlreadyExists), "{err:?}");
}

#[tokio::test]
async fn a_failing_body_leaves_no_object_and_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).await.unwrap();
    let mut body = tokio::io::AsyncReadExt::chain(&b"some bytes"[..], crate::memory::FailingReader);
    let err = store.put(&key(3), &mut body).await.unwrap_err();
    assert!(matches!(err, StorageError::Body(_)), "{err:?}");
    assert!(store.list_keys().await.unwrap().is_empty());
    let tmp_entries = std::fs::read_dir(dir.path().join(TMP_DIR)).unwrap().count();
    assert_eq!(tmp_entries, 0);
}

#[tokio::test]
async fn ranges_read_exactly_the_asked_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).await.unwrap();
    let data: Vec<u8> = (0..=255u8).cycle().take(1_000_000).collect();
    store.put(&key(4), &mut data.as_slice()).await.unwrap();
    for (start, end) in [
        (0u64, 0u64),
        (10, 19),
        (999_990, 999_999),
        (300_000, 700_000),
    ] {
        let got: Vec<u8> = store
            .get_range(&key(4), start, end)
            .await
            .unwrap()
            .map_ok(|b| b.to_vec())
            .try_concat()
            .await
            .unwrap();
        assert_eq!(got, data[start as usize..=end as usize], "{start}-{end}");
    }
    assert!(matches!(
        store.get_range(&key(5), 0, 1).await,
        Err(StorageError::NotFound)
    ));
}

#[tokio::test]
async fn listing_reports_sizes_and_ages() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).await.unwrap();
    let before = std::time::SystemTime::now() - std::time::Duration::from_secs(1);
    store.put(&key(6), &mut &b"six bytes"[..]).await.unwrap();
    let objects = store.list_objects().await.unwrap();
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0].key, key(6).to_string());
    assert_eq!(objects[0].size, 9);
    assert!(objects[0].last_modified >= before);
}

#[tokio::test]
async fn unfinished_writes_are_listed_when_old_and_removed_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).await.unwrap();
    store.put(&key(7), &mut &b"finished"[..]).await.unwrap();
    // What a process killed mid-upload leaves, and an upload's file named after its key.
    std::fs::write(dir.path().join(TMP_DIR).join("crashed"), b"partial").unwrap();
    let slow = temp_name(&key(8));
    std::fs::write(dir.path().join(TMP_DIR).join(&slow), b"half").unwrap();
    let now = std::time::SystemTime::now() + std::time::Duration::from_secs(1);
    let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    assert!(
        store.list_incomplete(long_ago).await.unwrap().is_empty(),
        "too young"
    );
    let found = store.list_incomplete(now).await.unwrap();
    let described: Vec<&str> = found.iter().map(|w| w.description.as_str()).collect();
    // Sorted by description: hex ids before letters.
    assert_eq!(
        described,
        [format!(".tmp/{slow}"), ".tmp/crashed".to_owned()]
    );
    assert_eq!(found[0].key, Some(key(8).to_string()));
    assert_eq!(found[1].key, None);
    store.remove_incomplete(&found[1]).await.unwrap();
    assert!(!dir.path().join(TMP_DIR).join("crashed").exists());
    assert!(dir.path().join(TMP_DIR).join(&slow).exists());
    let escape = IncompleteWrite {
        key: None,
        handle: "../packages/x".into(),
        description: String::new(),
    };
    assert!(store.remove_incomplete(&escape).await.is_err());
    assert!(
        store.exists(&key(7)).await.unwrap(),
        "finished objects stay"
    );
}
