//! The agentpkg server: configuration, wiring of the layers, and the HTTP server.
//!
//! [`Application::build`] binds (port 0 works) and reports the port, so integration tests
//! start the real server exactly as `main` does.

pub mod settings;
mod wiring;

pub use settings::Settings;
pub use wiring::{
    Application, BuildError, Components, accounts, connect, create_token, migrate_only,
    mirror_once, reconcile_once, retention_once,
};
