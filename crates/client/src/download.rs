//! Fetching a package to a file: into `<file>.part` beside it, resumed with `Range` and
//! `If-Range` when a partial file is there, its SHA-256 checked against the package's, and
//! only then renamed to its name. A file whose bytes are wrong never takes the name.

use agentpkg_model::{Arch, Platform, SignatureFormat};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::{Client, Error, Package, UploadProgress};

/// Which build to fetch.
#[derive(Debug, Clone)]
pub enum Target {
    Exact {
        name: String,
        version: String,
        platform: Platform,
        arch: Arch,
    },
    /// The newest active build, optionally within a SemVer requirement.
    Latest {
        name: String,
        platform: Platform,
        arch: Arch,
        requirement: Option<String>,
    },
}

/// How to fetch.
#[derive(Debug, Clone, Copy, Default)]
pub struct PullOptions<'a> {
    /// An OpenPGP public key: the package must carry an OpenPGP signature that verifies
    /// with it, checked before the file takes its name.
    pub key: Option<&'a [u8]>,
    /// Flush the file to the disk before it takes its name, so that it survives a power
    /// cut as well as a killed process (like `rsync --fsync`). Without it the rename is
    /// still atomic for every reader and for a crash of the process.
    pub fsync: bool,
}

/// What was fetched.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub package: Package,
    pub path: PathBuf,
    /// Bytes a partial file already had.
    pub resumed_at: u64,
    /// Whether a partial file was found wrong and fetched again from the start.
    pub restarted: bool,
}

/// `<file>.part`, beside the file.
pub fn partial_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    dest.with_file_name(name)
}

/// Removes the partial file whose bytes a check refused (`reason`); `reason` comes back, with
/// the removal's failure when there is one.
async fn discard(part: &Path, reason: Error) -> Error {
    match tokio::fs::remove_file(part).await {
        Ok(()) => reason,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => reason,
        Err(source) => Error::NotRemoved {
            reason: Box::new(reason),
            path: part.to_owned(),
            source,
        },
    }
}

async fn hash_prefix(path: &Path) -> Result<(Sha256, u64), Error> {
    let mut hasher = Sha256::new();
    let mut total = 0;
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((hasher, 0)),
        Err(e) => return Err(e.into()),
    };
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hasher, total))
}

impl Client {
    /// The package a target names.
    pub async fn resolve(&self, target: &Target) -> Result<Package, Error> {
        match target {
            Target::Exact {
                name,
                version,
                platform,
                arch,
            } => self.find(name, version, *platform, *arch).await,
            Target::Latest {
                name,
                platform,
                arch,
                requirement,
            } => {
                self.latest(name, *platform, *arch, requirement.as_deref())
                    .await
            }
        }
    }

    /// Fetches `target` to `dest` (see the module's notes). With `key` (an OpenPGP public
    /// key), the package must carry an OpenPGP signature that verifies with it, checked
    /// before the file takes its name.
    pub async fn pull(
        &self,
        target: &Target,
        dest: &Path,
        options: PullOptions<'_>,
        progress: Arc<dyn UploadProgress>,
    ) -> Result<Pulled, Error> {
        let package = self.resolve(target).await?;
        self.pull_package(package, dest, options, progress).await
    }

    /// [`Client::pull`] of a package already resolved (so that "latest" is asked once).
    pub async fn pull_package(
        &self,
        package: Package,
        dest: &Path,
        options: PullOptions<'_>,
        progress: Arc<dyn UploadProgress>,
    ) -> Result<Pulled, Error> {
        let part = partial_path(dest);
        let mut restarted = false;
        let (mut hasher, mut have) = hash_prefix(&part).await?;
        if have > package.file_size {
            // Longer than the package: not a prefix of it.
            (hasher, have) = (Sha256::new(), 0);
            restarted = true;
        }
        let resumed_at = have;
        loop {
            match self
                .fetch_into(&package, &part, hasher, have, progress.clone())
                .await
            {
                Ok(()) => break,
                Err(Error::Checksum { .. }) if have > 0 => {
                    // The partial file was not the package's first bytes: again, whole.
                    (hasher, have) = (Sha256::new(), 0);
                    restarted = true;
                }
                Err(e @ Error::Checksum { .. }) => return Err(discard(&part, e).await),
                Err(e) => return Err(e),
            }
        }
        if let Some(key) = options.key {
            let checked = self.check_signature(&package, &part, key).await;
            if let Err(e) = checked {
                return Err(discard(&part, e).await);
            }
        }
        if options.fsync {
            tokio::fs::File::open(&part).await?.sync_all().await?;
        }
        tokio::fs::rename(&part, dest).await?;
        if options.fsync {
            // The rename itself, recorded in the directory.
            let dir = match dest.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir,
                _ => Path::new("."),
            };
            tokio::fs::File::open(dir).await?.sync_all().await?;
        }
        Ok(Pulled {
            package,
            path: dest.to_owned(),
            resumed_at: if restarted { 0 } else { resumed_at },
            restarted,
        })
    }

    /// The package's signature, fetched, checked over the file at `path` with `key`.
    async fn check_signature(
        &self,
        package: &Package,
        path: &Path,
        key: &[u8],
    ) -> Result<(), Error> {
        match &package.signature {
            Some(s) if s.format == SignatureFormat::Openpgp => {}
            Some(s) => {
                return Err(Error::Signature(format!(
                    "the package's signature is {}, not OpenPGP: verify it with its own tool",
                    s.format
                )));
            }
            None => {
                return Err(Error::Signature(
                    "the package has no signature to verify".into(),
                ));
            }
        }
        let signature = Self::send(self.request(
            Method::GET,
            &format!("/api/v1/packages/{}/signature", package.id),
        ))
        .await?
        .bytes()
        .await?;
        let (path, key) = (path.to_owned(), key.to_vec());
        tokio::task::spawn_blocking(move || crate::verify_file(&path, &signature, &key))
            .await
            .map_err(|e| Error::Io(std::io::Error::other(e)))?
    }

    /// Appends the package's bytes from `have` to `part` (from 0 when the server will not
    /// resume), then checks the whole file's SHA-256.
    async fn fetch_into(
        &self,
        package: &Package,
        part: &Path,
        mut hasher: Sha256,
        mut have: u64,
        progress: Arc<dyn UploadProgress>,
    ) -> Result<(), Error> {
        let size = package.file_size;
        if have < size || size == 0 {
            let mut req = self.request(
                Method::GET,
                &format!("/api/v1/packages/{}/download", package.id),
            );
            if have > 0 {
                req = req
                    .header(reqwest::header::RANGE, format!("bytes={have}-"))
                    .header(
                        reqwest::header::IF_RANGE,
                        format!("\"{}\"", package.checksum),
                    );
            }
            let res = Self::send(req).await?;
            let file = match res.status() {
                StatusCode::PARTIAL_CONTENT => {
                    std::fs::OpenOptions::new().append(true).open(part)?
                }
                _ => {
                    (hasher, have) = (Sha256::new(), 0);
                    std::fs::File::create(part)?
                }
            };
            progress.sending(size, have);
            hasher = receive(res, file, hasher, &*progress).await?;
        }
        let got = hex::encode(hasher.finalize());
        if got == package.checksum.as_str() {
            Ok(())
        } else {
            Err(Error::Checksum {
                expected: package.checksum.to_string(),
                got,
            })
        }
    }
}

/// Pieces the network has handed over and the writing thread has not yet taken: with
/// hyper's pieces of up to a few hundred KiB, a few MiB at most.
const PIECES_IN_HAND: usize = 16;

/// Receives the answer's body into `file`. A thread of its own hashes each piece and writes
/// it as it came (hyper's pieces average about 190 KiB: no buffer, so no copy into one), so
/// that the socket is read while the last piece is hashed: receiving, writing and hashing go
/// at once, on two cores. Returns the hash over the file's bytes.
async fn receive(
    res: reqwest::Response,
    mut file: std::fs::File,
    mut hasher: Sha256,
    progress: &dyn UploadProgress,
) -> Result<Sha256, Error> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(PIECES_IN_HAND);
    let writer = tokio::task::spawn_blocking(move || {
        while let Some(piece) = rx.blocking_recv() {
            // Hashed first, so that the write copies a piece the cache holds.
            hasher.update(&piece);
            std::io::Write::write_all(&mut file, &piece)?;
        }
        Ok::<_, std::io::Error>(hasher)
    });
    let mut body = res.bytes_stream();
    let mut received = Ok(());
    while let Some(piece) = body.next().await {
        match piece {
            Ok(piece) => {
                let len = piece.len() as u64;
                if tx.send(piece).await.is_err() {
                    // The writer stopped: its error says why.
                    break;
                }
                progress.advance(len);
            }
            Err(e) => {
                received = Err(e);
                break;
            }
        }
    }
    drop(tx);
    let written = writer
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e)))?;
    // What was written is on its way to the file either way; the network's error first.
    received?;
    Ok(written?)
}
