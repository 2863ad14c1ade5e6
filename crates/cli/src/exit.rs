//! How a command ends: its exit status, and the message printed before it.

use agentpkg_client::Error;

/// The exit status of a failed command (0 is success). Scripts may rely on these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Anything else: the server refused, the network failed, a file could not be written.
    Error = 1,
    /// The command line is wrong (clap's own usage errors also exit 2).
    Usage = 2,
    /// The package, user or token does not exist (or the credential may not see it).
    NotFound = 3,
    /// It exists already, or conflicts with what exists.
    Conflict = 4,
    /// The bytes do not have the expected SHA-256, or the signature does not verify.
    Mismatch = 5,
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit as u8)
    }
}

/// A failed command: what to print, and how to exit.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub exit: Exit,
}

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            exit,
        }
    }

    /// A file that could not be read or written, named.
    pub fn file(path: &std::path::Path, e: std::io::Error) -> Self {
        Self::new(Exit::Error, format!("{}: {e}", path.display()))
    }
}

impl Exit {
    /// The exit status for a client error.
    pub fn of(e: &Error) -> Exit {
        match e {
            Error::Api { status: 404, .. } => Exit::NotFound,
            Error::Api { status: 409, .. } => Exit::Conflict,
            Error::Checksum { .. } | Error::Signature(_) => Exit::Mismatch,
            Error::NotRemoved { reason, .. } => Exit::of(reason),
            _ => Exit::Error,
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::new(Exit::of(&e), e.to_string())
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::new(Exit::Error, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_failure_has_its_documented_status() {
        let api = |status: u16| Error::Api {
            status,
            code: None,
            message: "refused".into(),
        };
        assert_eq!(Exit::of(&api(404)), Exit::NotFound);
        assert_eq!(Exit::of(&api(409)), Exit::Conflict);
        assert_eq!(Exit::of(&api(403)), Exit::Error);
        assert_eq!(
            Exit::of(&Error::Checksum {
                expected: "a".into(),
                got: "b".into()
            }),
            Exit::Mismatch
        );
        assert_eq!(std::process::ExitCode::from(Exit::Mismatch), 5.into());
    }
}
