//! Publishing a file, checked by its SHA-256 on the server before it is published: either
//! one streamed `PUT` (the file hashed first), or, for a large file on a server that speaks
//! tus, a resumable upload whose address is remembered so that running the push again
//! continues it. A resumable upload hashes the file while sending it, and names the
//! SHA-256 on the request that completes it (`X-Checksum-Sha256`): one pass over the file.

use agentpkg_model::{Arch, Platform, SignatureFormat};
use std::path::{Path, PathBuf};

use base64::Engine;
use reqwest::Method;

use crate::{Client, Error, Package};

mod read;
mod tus;

pub use read::sha256_file;
use read::{Hashing, Running, RunningHash, body};

/// Files from this size go through tus when the server offers it.
pub const RESUMABLE_FROM: u64 = 32 * 1024 * 1024;

/// What to publish.
#[derive(Debug, Clone)]
pub struct Upload {
    pub path: PathBuf,
    pub name: String,
    pub version: String,
    pub platform: Platform,
    pub arch: Arch,
    pub description: Option<String>,
    /// A detached signature of the file.
    pub signature: Option<Vec<u8>>,
    /// `openpgp` (default), `sigstore-bundle`, `minisign`, `cosign`.
    pub signature_format: Option<SignatureFormat>,
    /// Connections a resumable upload sends its bytes over at once (1: one).
    pub parallel: u64,
}

/// Told how an upload goes (a progress bar, or nothing).
pub trait UploadProgress: Send + Sync {
    /// Hashing the file before sending it.
    fn hashing(&self, _total: u64) {}
    /// Sending `total` bytes, the first `already` of which the server has.
    fn sending(&self, _total: u64, _already: u64) {}
    fn advance(&self, _bytes: u64) {}
}

impl UploadProgress for () {}

/// The published package, and how it got there.
#[derive(Debug, Clone)]
pub struct Published {
    pub package: Package,
    /// `put` or `tus`.
    pub via: &'static str,
    /// Bytes the server already had from an earlier, interrupted push.
    pub resumed_at: u64,
}

impl Client {
    /// Publishes `upload`. `state_dir` keeps the addresses of resumable uploads in
    /// progress (one small file each), so that pushing the same file again resumes it.
    pub async fn push(
        &self,
        upload: &Upload,
        state_dir: &Path,
        progress: std::sync::Arc<dyn UploadProgress>,
    ) -> Result<Published, Error> {
        let size = tokio::fs::metadata(&upload.path)
            .await
            .map_err(|e| Error::file(&upload.path, e))?
            .len();
        if size >= RESUMABLE_FROM && self.speaks_tus().await? {
            // Parts sent side by side cannot be hashed in order while they go: the file
            // is hashed first, and its SHA-256 goes with the final upload.
            let sha256 = if upload.parallel > 1 {
                progress.hashing(size);
                Some(sha256_file(&upload.path, progress.clone()).await?)
            } else {
                None
            };
            self.push_tus(upload, size, sha256.as_deref(), state_dir, progress)
                .await
        } else {
            progress.hashing(size);
            let sha256 = sha256_file(&upload.path, progress.clone()).await?;
            self.push_put(upload, size, &sha256, progress).await
        }
    }

    /// Whether the server offers tus 1.0.0 uploads.
    pub async fn speaks_tus(&self) -> Result<bool, Error> {
        let res = self
            .request(Method::OPTIONS, "/api/v1/uploads")
            .send()
            .await?;
        Ok(res.status().is_success()
            && res
                .headers()
                .get("tus-version")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.split(',').any(|v| v.trim() == "1.0.0")))
    }

    async fn push_put(
        &self,
        upload: &Upload,
        size: u64,
        sha256: &str,
        progress: std::sync::Arc<dyn UploadProgress>,
    ) -> Result<Published, Error> {
        progress.sending(size, 0);
        let mut query = vec![];
        if let Some(d) = &upload.description {
            query.push(("description", d.clone()));
        }
        if let Some(f) = upload.path.file_name().and_then(|f| f.to_str()) {
            query.push(("filename", f.to_owned()));
        }
        let mut req = self
            .request(
                Method::PUT,
                &format!(
                    "/api/v1/packages/{}/{}/{}/{}",
                    upload.name, upload.version, upload.platform, upload.arch
                ),
            )
            .query(&query)
            .header("X-Checksum-Sha256", sha256)
            .header(reqwest::header::CONTENT_LENGTH, size)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream");
        if let Some(sig) = &upload.signature {
            req = req.header(
                "X-Signature",
                base64::engine::general_purpose::STANDARD.encode(sig),
            );
            if let Some(format) = &upload.signature_format {
                req = req.header("X-Signature-Format", format.as_str());
            }
        }
        let res = Self::send(req.body(body(&upload.path, 0, size, None, progress).await?)).await?;
        let package = Self::read_json(res).await?;
        Ok(Published {
            package,
            via: "put",
            resumed_at: 0,
        })
    }
}
