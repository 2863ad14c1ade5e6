//! Resumable upload sessions: one writer at a time under a lease, taken in one statement
//! that may safely run twice, and commits that release it and move the expiry by the
//! database's clock.

use std::time::Duration;

use agentpkg_model::{
    ObjectKey, SessionKind, SessionProgress, StoredPart, UploadSession, UploadSessionId,
};
use agentpkg_store::testing::Backend;
use agentpkg_store::{Durability, SessionLease, UploadQuota, UploadSessionStore};

use super::{open, rand_id};

agentpkg_store::on_both_backends!(a_session_has_one_writer_at_a_time_and_commits_release_it,);

const HOUR: Duration = Duration::from_secs(3600);

fn progress(offset: u64, parts: u32) -> SessionProgress {
    SessionProgress {
        offset,
        multipart: (parts > 0).then(|| "upload-1".to_owned()),
        parts: (1..=parts)
            .map(|number| StoredPart {
                number,
                etag: format!("\"etag-{number}\""),
                size: 5,
            })
            .collect(),
        tail: None,
        hash_state: vec![7; 8],
        package_id: None,
    }
}

async fn a_session_has_one_writer_at_a_time_and_commits_release_it(backend: Backend) {
    let (store, _backing) = open(backend).await;
    let session = UploadSession {
        id: UploadSessionId::new(rand_id()),
        user_id: None,
        kind: SessionKind::Partial,
        target: None,
        metadata: String::new(),
        parts_of: Vec::new(),
        length: 20,
        storage_key: ObjectKey::for_new_package(rand_id()),
        progress: progress(0, 0),
        expires_at: chrono::Utc::now(),
    };
    let id = session.id.clone();
    let created = store
        .create_session(session, HOUR, UploadQuota::UNLIMITED)
        .await
        .unwrap()
        .unwrap();
    let leased = |offset, token: &'static str, lease| {
        let (store, id) = (&store, &id);
        async move {
            store
                .lease_session(id, offset, token, lease, None)
                .await
                .unwrap()
        }
    };

    // Taken once; the same writer again (its statement run twice) still holds it; any
    // other writer is told it is busy, or where the upload stands.
    let SessionLease::Leased(taken) = leased(0, "a", HOUR).await else {
        panic!("the first writer takes the session");
    };
    assert_eq!(taken.progress, created.progress);
    assert!(matches!(
        leased(0, "a", HOUR).await,
        SessionLease::Leased(_)
    ));
    assert_eq!(leased(0, "b", HOUR).await, SessionLease::Busy);
    assert_eq!(leased(5, "b", HOUR).await, SessionLease::Offset(0));

    // A commit, not waiting for the flush, releases the lease and moves the expiry on by
    // the database's clock; the next write starts where it left.
    let before = chrono::Utc::now();
    let expires = store
        .commit_session(&id, "a", progress(10, 2), HOUR, Durability::Applied)
        .await
        .unwrap()
        .expect("committed under its lease");
    let drift = (expires - before - chrono::Duration::from_std(HOUR).unwrap())
        .num_seconds()
        .abs();
    assert!(drift < 60, "expires {expires}, an hour after {before}");
    let stored = store.upload_session(&id).await.unwrap().unwrap();
    assert_eq!(stored.progress, progress(10, 2));
    assert_eq!(stored.expires_at, expires);
    assert_eq!(leased(0, "b", HOUR).await, SessionLease::Offset(10));
    // The lease it held is gone: committing under it again changes nothing.
    assert_eq!(
        store
            .commit_session(&id, "a", progress(15, 3), HOUR, Durability::Durable)
            .await
            .unwrap(),
        None
    );

    // A lease that runs out frees the session for another writer.
    assert!(matches!(
        leased(10, "b", Duration::from_millis(300)).await,
        SessionLease::Leased(_)
    ));
    assert_eq!(leased(10, "c", HOUR).await, SessionLease::Busy);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(matches!(
        leased(10, "c", HOUR).await,
        SessionLease::Leased(_)
    ));
    let expires = store
        .commit_session(&id, "c", progress(20, 4), HOUR, Durability::Durable)
        .await
        .unwrap();
    assert!(expires.is_some());
    assert_eq!(
        store.upload_session(&id).await.unwrap().unwrap().progress,
        progress(20, 4)
    );
}
