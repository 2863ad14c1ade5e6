//! The S3-compatible backend (rust-s3), for MinIO, Garage and AWS.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use agentpkg_model::{CallObserver, ObjectKey, StoredPart};
use async_trait::async_trait;
use futures_util::TryStreamExt;
use s3::bucket::Bucket;
use s3::command::Command;
use s3::error::S3Error;
use s3::request::Request;
use s3::request::tokio_backend::ReqwestRequest;

mod connect;
mod copy;
mod stream;

pub use connect::S3Config;

/// Objects in one S3 bucket.
pub struct S3Store {
    /// For puts, heads, deletes and lists: each request has a timeout.
    bucket: Box<Bucket>,
    /// For downloads: a slow client may take longer than any request timeout to read a
    /// large package, so the stream has none (the client's connection bounds it).
    stream_bucket: Box<Bucket>,
    max_concurrent_parts: usize,
    /// For single streamed PUTs of bodies whose length is known (no request timeout: a
    /// slow client bounds them, as it bounds downloads).
    http: reqwest::Client,
    /// Told how long each call took (the server's metrics), when set.
    observer: Option<Arc<dyn CallObserver>>,
}

use stream::TrackedBody;

use crate::{
    Body, ByteStream, IncompleteWrite, ObjectInfo, ObjectStat, ObjectStore, PresignedPut,
    StorageError,
};

fn unavailable(e: S3Error) -> StorageError {
    StorageError::Unavailable(e.to_string())
}

/// The largest object one `PUT` may store.
const MAX_SINGLE_PUT: u64 = 5 * 1024 * 1024 * 1024;

/// Bytes read from the body per chunk of a streamed `PUT`.
const PUT_CHUNK: usize = 256 * 1024;

/// The header that carries a SHA-256 (base64) to S3, and back from it in checksum mode.
const CHECKSUM_HEADER: &str = "x-amz-checksum-sha256";

fn unavailable_msg(e: impl std::fmt::Display) -> StorageError {
    StorageError::Unavailable(e.to_string())
}

fn is_not_found(e: &S3Error) -> bool {
    matches!(e, S3Error::HttpFailWithBody(404, _))
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &ObjectKey, mut body: Body<'_>) -> Result<u64, StorageError> {
        self.observe("put", async {
            // Keys are fresh random ids, so this only guards the trait's create-only promise.
            if self.exists(key).await? {
                return Err(StorageError::AlreadyExists);
            }
            let mut tracked = TrackedBody {
                inner: &mut body,
                error: None,
            };
            // On a failure rust-s3 aborts the multipart upload, so no object appears.
            let result = self
                .bucket
                .put_object_stream_builder(key.as_str())
                .with_max_concurrent_chunks(self.max_concurrent_parts)
                .execute_stream(&mut tracked)
                .await;
            match (result, tracked.error.take()) {
                (Ok(response), None) => Ok(response.uploaded_bytes() as u64),
                (_, Some(body_error)) => Err(StorageError::Body(body_error)),
                (Err(e), None) => Err(unavailable(e)),
            }
        })
        .await
    }

    /// One streamed `PUT` with the length up front, through a presigned URL: no 8 MiB part
    /// buffers and no MD5 per part. Up to S3's single-`PUT` limit; beyond it, multipart.
    async fn put_sized(
        &self,
        key: &ObjectKey,
        body: Body<'_>,
        size: u64,
    ) -> Result<u64, StorageError> {
        self.observe("put_sized", async {
            if size > MAX_SINGLE_PUT {
                return self.put(key, body).await;
            }
            if self.exists(key).await? {
                return Err(StorageError::AlreadyExists);
            }
            let url = self
                .bucket
                .presign_put(key.as_str(), 3600, None, None)
                .await
                .map_err(unavailable)?;
            let mut stored = self.stream_put(url, &mut *body, size).await.map(|_| size);
            if stored.is_ok() {
                // A body longer than announced is refused, and its object goes.
                use tokio::io::AsyncReadExt;
                let mut probe = [0u8; 1];
                stored = match body.read(&mut probe).await {
                    Ok(0) => Ok(size),
                    Ok(_) => Err(StorageError::Body(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("the body is longer than the {size} bytes announced"),
                    ))),
                    Err(e) => Err(StorageError::Body(e)),
                };
            }
            match stored {
                Err(StorageError::Body(e)) => {
                    // A body of another length than announced: nothing may stay.
                    if let Err(e) = self.delete(key).await {
                        tracing::error!(object_key = %key, error = %e, "could not delete a short object");
                    }
                    Err(StorageError::Body(e))
                }
                other => other,
            }
            })
        .await
    }

    async fn get(&self, key: &ObjectKey) -> Result<ByteStream, StorageError> {
        self.observe("get", async {
            let response = self
                .stream_bucket
                .get_object_stream(key.as_str())
                .await
                .map_err(|e| {
                    if is_not_found(&e) {
                        StorageError::NotFound
                    } else {
                        unavailable(e)
                    }
                })?;
            match response.status_code {
                200..=299 => {
                    Ok::<ByteStream, _>(Box::pin(response.bytes.map_err(io::Error::other)))
                }
                404 => Err(StorageError::NotFound),
                code => Err(StorageError::Unavailable(format!("GET answered {code}"))),
            }
        })
        .await
    }

    async fn get_range(
        &self,
        key: &ObjectKey,
        start: u64,
        end: u64,
    ) -> Result<ByteStream, StorageError> {
        self.observe("get_range", async {
            // NOTE: rust-s3 has no streaming ranged GET; its request type does, when driven
            // directly with the GetObjectRange command.
            let request = ReqwestRequest::new(
                &self.stream_bucket,
                key.as_str(),
                Command::GetObjectRange {
                    start,
                    end: Some(end),
                },
            )
            .await
            .map_err(unavailable)?;
            let response = request.response_data_to_stream().await.map_err(|e| {
                if is_not_found(&e) {
                    StorageError::NotFound
                } else {
                    unavailable(e)
                }
            })?;
            match response.status_code {
                200..=299 => {
                    Ok::<ByteStream, _>(Box::pin(response.bytes.map_err(io::Error::other)))
                }
                404 => Err(StorageError::NotFound),
                code => Err(StorageError::Unavailable(format!(
                    "ranged GET answered {code}"
                ))),
            }
        })
        .await
    }

    async fn presigned_get(
        &self,
        key: &ObjectKey,
        ttl: Duration,
        content_disposition: &str,
    ) -> Result<Option<String>, StorageError> {
        self.observe("presigned_get", async {
            let secs = u32::try_from(ttl.as_secs().clamp(1, 604_800)).unwrap_or(604_800);
            let mut queries = std::collections::HashMap::new();
            queries.insert(
                "response-content-disposition".to_owned(),
                content_disposition.to_owned(),
            );
            let url = self
                .bucket
                .presign_get(key.as_str(), secs, Some(queries))
                .await
                .map_err(unavailable)?;
            Ok(Some(url))
        })
        .await
    }

    async fn presigned_put(
        &self,
        key: &ObjectKey,
        ttl: Duration,
        size: u64,
        sha256: &[u8; 32],
    ) -> Result<Option<PresignedPut>, StorageError> {
        self.observe("presigned_put", async {
            use base64::Engine;
            let secs = u32::try_from(ttl.as_secs().clamp(1, 604_800)).unwrap_or(604_800);
            let checksum = base64::engine::general_purpose::STANDARD.encode(sha256);
            // Signed headers: the store refuses a PUT without them, or whose body has another
            // digest (the checksum) or length.
            let headers = vec![
                (CHECKSUM_HEADER.to_owned(), checksum),
                ("content-length".to_owned(), size.to_string()),
            ];
            let mut map = http::HeaderMap::new();
            for (name, value) in &headers {
                map.insert(
                    http::HeaderName::from_bytes(name.as_bytes()).map_err(unavailable_msg)?,
                    http::HeaderValue::from_str(value).map_err(unavailable_msg)?,
                );
            }
            let url = self
                .bucket
                .presign_put(key.as_str(), secs, Some(map), None)
                .await
                .map_err(unavailable)?;
            Ok(Some(PresignedPut { url, headers }))
        })
        .await
    }

    async fn stat(&self, key: &ObjectKey) -> Result<Option<ObjectStat>, StorageError> {
        self.observe("stat", async {
            use base64::Engine;
            let mut extra = http::HeaderMap::new();
            extra.insert(
                "x-amz-checksum-mode",
                http::HeaderValue::from_static("ENABLED"),
            );
            let bucket = self.bucket.with_extra_headers(extra).map_err(unavailable)?;
            let request = ReqwestRequest::new(&bucket, key.as_str(), Command::HeadObject)
                .await
                .map_err(unavailable)?;
            let (headers, status) = match request.response_header().await {
                Ok(answer) => answer,
                Err(e) if is_not_found(&e) => return Ok(None),
                Err(e) => return Err(unavailable(e)),
            };
            if status == 404 {
                return Ok(None);
            }
            if !(200..300).contains(&status) {
                return Err(StorageError::Unavailable(format!("HEAD answered {status}")));
            }
            let size = headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| StorageError::Unavailable("HEAD without Content-Length".into()))?;
            let sha256 = headers
                .get(CHECKSUM_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
                .and_then(|d| <[u8; 32]>::try_from(d).ok());
            Ok(Some(ObjectStat { size, sha256 }))
        })
        .await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        self.observe("delete", async {
            match self.bucket.delete_object(key.as_str()).await {
                Ok(_) => Ok(()),
                Err(e) if is_not_found(&e) => Ok(()),
                Err(e) => Err(unavailable(e)),
            }
        })
        .await
    }

    async fn exists(&self, key: &ObjectKey) -> Result<bool, StorageError> {
        self.observe("exists", async {
            match self.bucket.head_object(key.as_str()).await {
                Ok((_, code)) if (200..300).contains(&code) => Ok(true),
                Ok((_, 404)) => Ok(false),
                Ok((_, code)) => Err(StorageError::Unavailable(format!("HEAD answered {code}"))),
                Err(e) if is_not_found(&e) => Ok(false),
                Err(e) => Err(unavailable(e)),
            }
        })
        .await
    }

    async fn list_objects(&self) -> Result<Vec<ObjectInfo>, StorageError> {
        self.observe("list_objects", async {
            let pages = self
                .bucket
                .list(String::new(), None)
                .await
                .map_err(unavailable)?;
            pages
                .into_iter()
                .flat_map(|page| page.contents)
                .map(|o| {
                    let at =
                        chrono::DateTime::parse_from_rfc3339(&o.last_modified).map_err(|e| {
                            StorageError::Unavailable(format!(
                                "unreadable LastModified {:?}: {e}",
                                o.last_modified
                            ))
                        })?;
                    Ok(ObjectInfo {
                        key: o.key,
                        size: o.size,
                        last_modified: std::time::SystemTime::from(at.with_timezone(&chrono::Utc)),
                    })
                })
                .collect()
        })
        .await
    }

    /// Aborts the multipart uploads that were never completed nor aborted (a process
    /// killed mid-upload, or an abort that failed because S3 was away): their parts are
    /// invisible to listings but still take space.
    async fn list_incomplete(
        &self,
        older_than: std::time::SystemTime,
    ) -> Result<Vec<IncompleteWrite>, StorageError> {
        self.observe("list_incomplete", async {
            let pages = self
                .bucket
                .list_multiparts_uploads(Some(ObjectKey::PREFIX), None)
                .await
                .map_err(unavailable)?;
            let mut found = Vec::new();
            for upload in pages.into_iter().flat_map(|page| page.uploads) {
                let initiated = chrono::DateTime::parse_from_rfc3339(&upload.initiated)
                    .map(|at| std::time::SystemTime::from(at.with_timezone(&chrono::Utc)))
                    .map_err(|e| {
                        StorageError::Unavailable(format!(
                            "unreadable Initiated {:?}: {e}",
                            upload.initiated
                        ))
                    })?;
                if initiated >= older_than {
                    continue;
                }
                found.push(IncompleteWrite {
                    description: format!("{} (multipart upload {})", upload.key, upload.id),
                    key: Some(upload.key),
                    handle: upload.id,
                });
            }
            Ok(found)
        })
        .await
    }

    async fn remove_incomplete(&self, write: &IncompleteWrite) -> Result<(), StorageError> {
        self.observe("remove_incomplete", async {
            let key = write.key.as_deref().ok_or_else(|| {
                StorageError::Unavailable("a multipart upload without a key".into())
            })?;
            self.bucket
                .abort_upload(key, &write.handle)
                .await
                .map_err(unavailable)
        })
        .await
    }

    async fn begin_parts(&self, key: &ObjectKey) -> Result<String, StorageError> {
        self.observe("begin_parts", async {
            let started = self
                .bucket
                .initiate_multipart_upload(key.as_str(), "application/octet-stream")
                .await
                .map_err(unavailable)?;
            Ok(started.upload_id)
        })
        .await
    }

    /// A streamed `PUT` of the part through a presigned URL: no buffer, no MD5.
    async fn put_part(
        &self,
        key: &ObjectKey,
        upload: &str,
        number: u32,
        body: Body<'_>,
        size: u64,
    ) -> Result<String, StorageError> {
        self.observe("put_part", async {
            let mut queries = std::collections::HashMap::new();
            queries.insert("partNumber".to_owned(), number.to_string());
            queries.insert("uploadId".to_owned(), upload.to_owned());
            let url = self
                .bucket
                .presign_put(key.as_str(), 3600, None, Some(queries))
                .await
                .map_err(unavailable)?;
            let response = self.stream_put(url, body, size).await?;
            response
                .headers()
                .get(http::header::ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .ok_or_else(|| {
                    StorageError::Unavailable("a part PUT answered without an ETag".into())
                })
        })
        .await
    }

    fn copies_parts(&self) -> bool {
        true
    }

    async fn copy_part(
        &self,
        key: &ObjectKey,
        upload: &str,
        number: u32,
        source: &ObjectKey,
    ) -> Result<String, StorageError> {
        self.observe(
            "copy_part",
            self.upload_part_copy(key, upload, number, source),
        )
        .await
    }

    async fn complete_parts(
        &self,
        key: &ObjectKey,
        upload: &str,
        parts: &[StoredPart],
    ) -> Result<(), StorageError> {
        self.observe("complete_parts", async {
            let parts = parts
                .iter()
                .map(|p| s3::serde_types::Part {
                    part_number: p.number,
                    etag: p.etag.clone(),
                })
                .collect();
            let response = self
                .bucket
                .complete_multipart_upload(key.as_str(), upload, parts)
                .await
                .map_err(unavailable)?;
            // S3 may answer 200 with an error in the body.
            let body = String::from_utf8_lossy(response.as_slice());
            if body.contains("<Error>") {
                return Err(StorageError::Unavailable(format!(
                    "completing a multipart upload failed: {}",
                    body.chars().take(300).collect::<String>()
                )));
            }
            Ok(())
        })
        .await
    }

    async fn abort_parts(&self, key: &ObjectKey, upload: &str) -> Result<(), StorageError> {
        self.observe("abort_parts", async {
            match self.bucket.abort_upload(key.as_str(), upload).await {
                Ok(()) => Ok(()),
                Err(e) if is_not_found(&e) => Ok(()),
                Err(e) => Err(unavailable(e)),
            }
        })
        .await
    }

    async fn check(&self) -> Result<(), StorageError> {
        self.observe("check", async {
            match self
                .bucket
                .list_page(String::new(), None, None, None, Some(1))
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if is_not_found(&e) => Err(StorageError::NotFound),
                Err(e) => Err(unavailable(e)),
            }
        })
        .await
    }

    fn kind(&self) -> &'static str {
        "s3"
    }
}
