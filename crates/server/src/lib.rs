//! The agentpkg server: configuration, wiring of the layers, and the HTTP server.
//!
//! [`Application::build`] binds (port 0 works) and reports the port, so integration tests
//! start the real server exactly as `main` does.

mod commands;
mod request_span;
pub mod settings;
mod wiring;

pub use commands::{accounts, create_token, mirror_once, reconcile_once, retention_once};
pub use settings::Settings;
pub use wiring::{Application, BuildError, Components, connect, migrate_only};
