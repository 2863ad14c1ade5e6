//! Test support: a PostgreSQL database of its own for each test, dropped afterwards, and
//! the one macro that runs a scenario on both backends.

use diesel::{Connection, PgConnection, RunQueryDsl};

/// The server that test databases are created on. `AGENTPKG_TEST_PG_URL` overrides the
/// local default (trust auth on 127.0.0.1:5432).
pub fn admin_url() -> String {
    std::env::var("AGENTPKG_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A fresh, empty database; dropped (with any open connections) when this is dropped.
pub struct TestDatabase {
    name: String,
    url: String,
}

impl TestDatabase {
    pub fn create() -> Self {
        let admin = admin_url();
        let name = format!("agentpkg_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::establish(&admin).unwrap_or_else(|e| {
            panic!("PostgreSQL must be reachable at {admin} for the tests (set AGENTPKG_TEST_PG_URL): {e}")
        });
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .expect("create test database");
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        let url = format!("{base}/{name}");
        Self { name, url }
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        match PgConnection::establish(&admin_url()) {
            Ok(mut conn) => {
                if let Err(e) = diesel::sql_query(format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ))
                .execute(&mut conn)
                {
                    eprintln!("could not drop test database {}: {e}", self.name);
                }
            }
            Err(e) => eprintln!("could not drop test database {}: {e}", self.name),
        }
    }
}

/// The two ways agentpkg runs, which every scenario is tested on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL (and, where bytes are involved, a real S3 server): production's parts.
    Production,
    /// SQLite (and a local directory): the embedded default.
    Embedded,
}

/// Runs each named scenario — an `async fn(Backend)` in scope — once per [`Backend`], as
/// `production::name` and `embedded::name`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        mod production {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
              async fn $name() { super::$name($crate::testing::Backend::Production).await })+
        }
        mod embedded {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
              async fn $name() { super::$name($crate::testing::Backend::Embedded).await })+
        }
    };
}
