#[cfg(feature = "diesel")]
use diesel::result::{DatabaseErrorKind, Error as DieselError};

/// Errors of the metadata store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint refused the row: the thing already exists.
    #[error("a record with the same key already exists")]
    Conflict,
    /// The database cannot be reached (pool timeout, refused or broken connection).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Any other database error. Its text is for the log, never for a client.
    #[error("database error: {0}")]
    Query(String),
    /// The package name is someone else's: only its owners (and admins) may publish to it.
    #[error("not an owner of the package")]
    NotOwner,
    /// These bytes are already published under another version of the name (that
    /// version): republishing them needs an admin's explicit choice.
    #[error("the same bytes are published as version {0}")]
    SameBytes(String),
    /// The user's uploads in flight already hold `held` bytes: one more would pass
    /// `limit`.
    #[error("uploads in flight hold {held} of {limit} bytes")]
    OverQuota { held: u64, limit: u64 },
    /// A row that the code cannot read back (edited by hand, or a bug).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("migration failed: {0}")]
    Migration(String),
    /// The blocking task was cancelled (the runtime is shutting down).
    #[error("database task failed: {0}")]
    Task(String),
    /// The blocking task panicked: a bug, never the database's state.
    #[error("database task panicked: {0}")]
    Panicked(String),
    /// The commit was sent but its answer was lost (the connection broke): the transaction
    /// may or may not have committed. Ask again before undoing anything it did.
    #[error("commit outcome unknown: {0}")]
    CommitUncertain(String),
    /// Concurrent writers kept invalidating the operation; it was retried and gave up.
    #[error("too much contention: {0}")]
    Contention(&'static str),
    /// A statement waited longer than allowed (a lock held by another transaction, or its
    /// own time limit) and was cancelled, its transaction rolled back: worth a retry.
    #[error("database busy: {0}")]
    Busy(String),
}

#[cfg(feature = "diesel")]
impl From<DieselError> for StoreError {
    fn from(e: DieselError) -> Self {
        match e {
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => Self::Conflict,
            DieselError::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                info,
            ) => Self::Unavailable(info.message().to_owned()),
            DieselError::BrokenTransactionManager => {
                Self::Unavailable("broken transaction manager".into())
            }
            DieselError::DatabaseError(_, info) if is_timeout(info.message()) => {
                Self::Busy(info.message().to_owned())
            }
            other => Self::Query(other.to_string()),
        }
    }
}

/// Whether a database error says a statement was cancelled for waiting too long:
/// PostgreSQL's `lock_timeout` and `statement_timeout` (SQLSTATE 55P03 and 57014, which
/// Diesel does not expose, so by their message), SQLite's `busy_timeout` run out.
#[cfg(feature = "diesel")]
fn is_timeout(message: &str) -> bool {
    message.starts_with("canceling statement due to lock timeout")
        || message.starts_with("canceling statement due to statement timeout")
        || message.starts_with("database is locked")
        || message.starts_with("database table is locked")
}

#[cfg(feature = "diesel")]
impl From<diesel::r2d2::PoolError> for StoreError {
    fn from(e: diesel::r2d2::PoolError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

#[cfg(all(test, feature = "diesel"))]
mod tests {
    use super::*;

    #[test]
    fn statements_cancelled_for_waiting_are_busy_not_query_errors() {
        for message in [
            "canceling statement due to lock timeout",
            "canceling statement due to statement timeout",
            "database is locked",
        ] {
            let e = StoreError::from(DieselError::DatabaseError(
                DatabaseErrorKind::Unknown,
                Box::new(message.to_owned()),
            ));
            assert!(matches!(e, StoreError::Busy(_)), "{message}: {e:?}");
        }
        let other = StoreError::from(DieselError::DatabaseError(
            DatabaseErrorKind::Unknown,
            Box::new("syntax error at or near".to_owned()),
        ));
        assert!(matches!(other, StoreError::Query(_)), "{other:?}");
    }
}
