//! Resumable pushes over tus: one upload whose address is remembered, hashed while it is
//! sent, or partial uploads side by side joined by a final one.

use std::path::Path;

use base64::Engine;
use reqwest::{Method, StatusCode};
use sha2::{Digest, Sha256};

use super::{Hashing, Published, Running, RunningHash, Upload, UploadProgress, body, sha256_file};
use crate::{Client, Error, Package, api_error};

/// Bytes per tus `PATCH`.
const CHUNK: u64 = 32 * 1024 * 1024;

/// A tus answer's `Upload-Offset`.
fn upload_offset(res: &reqwest::Response) -> Option<u64> {
    res.headers()
        .get("upload-offset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

impl Client {
    pub(super) async fn push_tus(
        &self,
        upload: &Upload,
        size: u64,
        sha256: Option<&str>,
        state_dir: &Path,
        progress: std::sync::Arc<dyn UploadProgress>,
    ) -> Result<Published, Error> {
        // One upload per file (its path, size and modification time), coordinates and
        // server. Should the file change without changing those, the SHA-256 the server
        // checks refuses the mix, and the next run starts afresh.
        let key = {
            let meta = tokio::fs::metadata(&upload.path).await?;
            let modified = meta
                .modified()
                .ok()
                .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            let path = tokio::fs::canonicalize(&upload.path)
                .await
                .unwrap_or_else(|_| upload.path.clone());
            let mut h = Sha256::new();
            for part in [
                self.base(),
                &path.to_string_lossy(),
                &size.to_string(),
                &modified.to_string(),
                &upload.name,
                &upload.version,
                upload.platform.as_str(),
                upload.arch.as_str(),
            ] {
                h.update(part.as_bytes());
                h.update([0]);
            }
            hex::encode(&h.finalize()[..16])
        };
        tokio::fs::create_dir_all(state_dir).await?;
        let mut metadata = vec![
            format!("name {}", b64(&upload.name)),
            format!("version {}", b64(&upload.version)),
            format!("platform {}", b64(upload.platform.as_str())),
            format!("arch {}", b64(upload.arch.as_str())),
        ];
        if let Some(sha256) = sha256 {
            metadata.push(format!("sha256 {}", b64(sha256)));
        }
        if let Some(f) = upload.path.file_name().and_then(|f| f.to_str()) {
            metadata.push(format!("filename {}", b64(f)));
        }
        if let Some(d) = &upload.description {
            metadata.push(format!("description {}", b64(d)));
        }
        if let Some(sig) = &upload.signature {
            let encoded = base64::engine::general_purpose::STANDARD.encode(sig);
            metadata.push(format!("signature {}", b64(&encoded)));
            if let Some(format) = &upload.signature_format {
                metadata.push(format!("signature_format {}", b64(format.as_str())));
            }
        }
        let metadata = metadata.join(",");
        if upload.parallel > 1 {
            let remembered = state_dir.join(format!("{key}.parts"));
            return self
                .push_tus_parallel(
                    upload,
                    size,
                    metadata,
                    &remembered,
                    upload.parallel,
                    progress,
                )
                .await;
        }
        let remembered = state_dir.join(format!("{key}.upload"));
        let mut offset = 0;
        let mut url = None;
        if let Ok(known) = tokio::fs::read_to_string(&remembered).await
            && let Some(at) = self.tus_offset(known.trim()).await?
        {
            offset = at;
            url = Some(known.trim().to_owned());
        }
        if url.is_none() {
            let location = self
                .tus_create(&[
                    ("Upload-Length", size.to_string()),
                    ("Upload-Metadata", metadata),
                ])
                .await?;
            tokio::fs::write(&remembered, &location).await?;
            url = Some(location);
        }
        let url = url.unwrap_or_default();
        if offset >= size {
            // An earlier run was stopped after its last byte left: the server published
            // the package (a refusal would have ended the upload). It is ours if its
            // SHA-256 is the file's.
            forget(&remembered).await?;
            let sha256 = sha256_file(&upload.path, progress.clone()).await?;
            let package = self
                .find(&upload.name, &upload.version, upload.platform, upload.arch)
                .await?;
            if package.checksum.as_str() != sha256 {
                return Err(Error::Checksum {
                    expected: sha256,
                    got: package.checksum.to_string(),
                });
            }
            return Ok(Published {
                package,
                via: "tus",
                resumed_at: size,
            });
        }
        let resumed_at = offset;
        progress.sending(size, offset);
        let running: Running = std::sync::Arc::new(std::sync::Mutex::new(RunningHash::new()));
        match self
            .send_from(
                &upload.path,
                &url,
                0,
                offset,
                size,
                Some(&running),
                progress,
            )
            .await
        {
            Ok(Some(res)) => {
                // The last byte published the package.
                forget(&remembered).await?;
                let package: Package = Self::read_json(res).await?;
                let sent = running
                    .lock()
                    .map_err(|_| Error::Io(std::io::Error::other("a hashing thread failed")))?
                    .hex();
                // The server checked it; one that ignores X-Checksum-Sha256 is caught here.
                if package.checksum.as_str() != sent {
                    return Err(Error::Checksum {
                        expected: sent,
                        got: package.checksum.to_string(),
                    });
                }
                Ok(Published {
                    package,
                    via: "tus",
                    resumed_at,
                })
            }
            Ok(None) => Err(Error::Protocol(
                "the upload ended without publishing the package".into(),
            )),
            Err(e) => {
                if e.status().is_some_and(|s| {
                    s == StatusCode::NOT_FOUND
                        || s == StatusCode::GONE
                        || s.is_client_error() && s != StatusCode::LOCKED
                }) {
                    // The upload is gone or refused: the next run starts afresh.
                    return Err(forget_after(&remembered, e).await);
                }
                Err(e)
            }
        }
    }
}

/// One partial upload of a parallel push: where it is, and which bytes of the file.
#[derive(serde::Serialize, serde::Deserialize)]
struct Part {
    url: String,
    offset: u64,
    len: u64,
}

impl Client {
    /// Creates a tus upload with these headers; its address.
    async fn tus_create(&self, headers: &[(&str, String)]) -> Result<String, Error> {
        let mut req = self
            .request(Method::POST, "/api/v1/uploads")
            .header("Tus-Resumable", "1.0.0");
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        let res = Self::send(req).await?;
        res.headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| Error::Protocol("a tus upload without a Location".into()))
    }

    /// The offset the server has of a tus upload, or `None` when it is gone.
    async fn tus_offset(&self, url: &str) -> Result<Option<u64>, Error> {
        let head = self
            .request(Method::HEAD, url)
            .header("Tus-Resumable", "1.0.0")
            .send()
            .await?;
        if !head.status().is_success() {
            return Ok(None);
        }
        Ok(upload_offset(&head))
    }

    /// Sends the file's bytes `[base + from, base + len)` to the tus upload at `url`, in
    /// chunks. Waits while another request still holds the upload (423: an interrupted
    /// earlier run the server has not finished with), and carries on from the server's
    /// offset when it is elsewhere (409). Returns the answer that published the package,
    /// if one did.
    ///
    /// With `running` (a whole file in one upload), the bytes are hashed as they go, and
    /// the last chunk, hashed before it is sent, names the file's SHA-256.
    #[allow(clippy::too_many_arguments)]
    async fn send_from(
        &self,
        path: &Path,
        url: &str,
        base: u64,
        mut from: u64,
        len: u64,
        running: Option<&Running>,
        progress: std::sync::Arc<dyn UploadProgress>,
    ) -> Result<Option<reqwest::Response>, Error> {
        let mut waits = 0;
        loop {
            if from >= len {
                return Ok(None);
            }
            let left = len - from;
            // A whole file hashed on the way goes in one request for everything but its
            // last chunk, which names the SHA-256: the server keeps every part that a
            // dropped connection delivered, so smaller requests would only add round
            // trips. Parts sent side by side go in chunks.
            let last = (len - 1) % CHUNK + 1;
            let chunk = match running {
                Some(_) if left > last => left - last,
                Some(_) => left,
                None => CHUNK.min(left),
            };
            let mut req = self
                .request(Method::PATCH, url)
                .header("Tus-Resumable", "1.0.0")
                .header("Upload-Offset", from)
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/offset+octet-stream",
                )
                .header(reqwest::header::CONTENT_LENGTH, chunk);
            let hashing = running.map(|running| Hashing {
                running: running.clone(),
                then_to: base + len,
            });
            if let Some(running) = running
                && from + chunk == len
            {
                let (running, path) = (running.clone(), path.to_owned());
                let sha256 = tokio::task::spawn_blocking(move || {
                    let mut running = running
                        .lock()
                        .map_err(|_| std::io::Error::other("a hashing thread failed"))?;
                    running.catch_up(&path, base + len)?;
                    Ok::<_, std::io::Error>(running.hex())
                })
                .await
                .map_err(|e| Error::Io(std::io::Error::other(e)))??;
                req = req.header("X-Checksum-Sha256", sha256);
            }
            let res = req
                .body(body(path, base + from, chunk, hashing, progress.clone()).await?)
                .send()
                .await?;
            match res.status() {
                StatusCode::OK | StatusCode::CREATED => return Ok(Some(res)),
                StatusCode::NO_CONTENT => {
                    from = upload_offset(&res)
                        .ok_or_else(|| Error::Protocol("a PATCH without Upload-Offset".into()))?;
                    if from >= len {
                        return Ok(None);
                    }
                }
                StatusCode::LOCKED | StatusCode::CONFLICT if waits < 60 => {
                    waits += 1;
                    let pause = res
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(1u64);
                    if res.status() == StatusCode::LOCKED {
                        tokio::time::sleep(std::time::Duration::from_secs(pause.min(5))).await;
                    }
                    from = match self.tus_offset(url).await? {
                        Some(at) => at,
                        None => return Err(api_error(res).await),
                    };
                    if from >= len {
                        return Ok(None);
                    }
                }
                _ => return Err(api_error(res).await),
            }
        }
    }

    /// A push in `parallel` partial uploads sent at once over as many connections, then
    /// joined by a final upload that publishes the package (tus concatenation). The
    /// partial uploads' addresses are kept in `remembered`, so a second run resumes each.
    async fn push_tus_parallel(
        &self,
        upload: &Upload,
        size: u64,
        metadata: String,
        remembered: &Path,
        parallel: u64,
        progress: std::sync::Arc<dyn UploadProgress>,
    ) -> Result<Published, Error> {
        let mut parts: Vec<Part> = match tokio::fs::read_to_string(remembered).await {
            Ok(text) => serde_json::from_str(&text).unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let mut done = Vec::with_capacity(parts.len());
        let mut usable = !parts.is_empty();
        for part in &parts {
            match self.tus_offset(&part.url).await? {
                Some(at) if usable => done.push(at),
                _ => usable = false,
            }
        }
        if !usable {
            let each = size.div_ceil(parallel).max(1);
            parts = Vec::new();
            let mut offset = 0;
            while offset < size {
                let len = each.min(size - offset);
                let url = self
                    .tus_create(&[
                        ("Upload-Concat", "partial".to_owned()),
                        ("Upload-Length", len.to_string()),
                    ])
                    .await?;
                parts.push(Part { url, offset, len });
                offset += len;
            }
            done = vec![0; parts.len()];
            let text = serde_json::to_string(&parts).map_err(|e| Error::Protocol(e.to_string()))?;
            tokio::fs::write(remembered, text).await?;
        }
        let resumed_at: u64 = done.iter().sum();
        progress.sending(size, resumed_at);
        let sends = parts.iter().zip(&done).map(|(part, &from)| {
            self.send_from(
                &upload.path,
                &part.url,
                part.offset,
                from,
                part.len,
                None,
                progress.clone(),
            )
        });
        for sent in futures_util::future::join_all(sends).await {
            sent?;
        }
        let urls: Vec<&str> = parts.iter().map(|p| p.url.as_str()).collect();
        let res = self
            .request(Method::POST, "/api/v1/uploads")
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Concat", format!("final;{}", urls.join(" ")))
            .header("Upload-Metadata", metadata)
            .send()
            .await?;
        if !res.status().is_success() {
            let refused = res.status().is_client_error();
            let e = api_error(res).await;
            if refused {
                return Err(forget_after(remembered, e).await);
            }
            return Err(e);
        }
        forget(remembered).await?;
        let package = Self::read_json(res).await?;
        Ok(Published {
            package,
            via: "tus-parallel",
            resumed_at,
        })
    }
}

/// Forgets a remembered upload once it is over. A file already gone is fine; any other
/// failure is reported, named: left behind, it would make the next push of the file try to
/// resume an upload that no longer exists.
async fn forget(remembered: &Path) -> Result<(), Error> {
    match tokio::fs::remove_file(remembered).await {
        Err(source) if source.kind() != std::io::ErrorKind::NotFound => Err(Error::File {
            path: remembered.to_owned(),
            source,
        }),
        _ => Ok(()),
    }
}

/// `reason`, and the remembered upload forgotten; or, when it cannot be, both said.
async fn forget_after(remembered: &Path, reason: Error) -> Error {
    match forget(remembered).await {
        Err(Error::File { path, source }) => Error::NotRemoved {
            reason: Box::new(reason),
            path,
            source,
        },
        _ => reason,
    }
}
