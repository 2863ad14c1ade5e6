//! The local-directory backend.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use agentpkg_model::{CallObserver, ObjectKey, StoredPart};
use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::io::ReaderStream;

use crate::{Body, ByteStream, IncompleteWrite, ObjectInfo, ObjectStat, ObjectStore, StorageError};

const BUF_SIZE: usize = 256 * 1024;
const TMP_DIR: &str = ".tmp";
const PARTS_SUFFIX: &str = ".parts";

/// Objects as files under one root directory. Keys map onto relative paths; a key can only
/// be built by [`ObjectKey`], so no path escapes the root.
#[derive(Clone)]
pub struct FsStore {
    root: PathBuf,
    /// Told how long each call took (the server's metrics), when set.
    observer: Option<Arc<dyn CallObserver>>,
}

impl std::fmt::Debug for FsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsStore").field("root", &self.root).finish()
    }
}

impl FsStore {
    /// The same store, telling `observer` how long each call took, by operation and
    /// outcome. A `put` is timed to its end (streaming the body included); a `get` until
    /// the stream opens.
    pub fn observed_by(mut self, observer: Arc<dyn CallObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    async fn observe<T>(
        &self,
        operation: &'static str,
        call: impl std::future::Future<Output = Result<T, StorageError>>,
    ) -> Result<T, StorageError> {
        agentpkg_model::observe(self.observer.as_ref(), operation, call).await
    }

    /// Opens (and creates when missing) the root directory.
    pub async fn open(root: impl Into<PathBuf>) -> Result<Self, StorageError> {
        let root = root.into();
        tokio::fs::create_dir_all(root.join(TMP_DIR)).await?;
        Ok(Self {
            root,
            observer: None,
        })
    }

    /// The directory of a write in parts: in the temporary directory, named after the key
    /// (so that a sweep can tell whose it is) and ending in `.parts`.
    fn parts_dir(&self, key: &ObjectKey, upload: &str) -> Result<PathBuf, StorageError> {
        let id = key.as_str().trim_start_matches(ObjectKey::PREFIX);
        if upload != format!("{id}{PARTS_SUFFIX}") {
            return Err(StorageError::Unavailable(format!(
                "{upload} is not a write in parts of {key}"
            )));
        }
        Ok(self.root.join(TMP_DIR).join(upload))
    }

    fn path_of(&self, key: &ObjectKey) -> PathBuf {
        let mut path = self.root.clone();
        path.extend(key.segments());
        path
    }
}

/// Removes a temporary file unless the write went through.
struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed
            && let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::error!(path = %self.path.display(), error = %e, "could not remove temporary upload file");
        }
    }
}

#[async_trait]
impl ObjectStore for FsStore {
    async fn put(&self, key: &ObjectKey, body: Body<'_>) -> Result<u64, StorageError> {
        self.observe("put", async {
            let final_path = self.path_of(key);
            if tokio::fs::try_exists(&final_path).await? {
                return Err(StorageError::AlreadyExists);
            }
            let tmp = TempFile {
                path: self.root.join(TMP_DIR).join(temp_name(key)),
                armed: true,
            };
            let mut file = tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp.path)
                .await?;
            let mut buf = vec![0u8; BUF_SIZE];
            let mut written = 0u64;
            loop {
                let n = body.read(&mut buf).await.map_err(StorageError::Body)?;
                if n == 0 {
                    break;
                }
                file.write_all(&buf[..n]).await?;
                written += n as u64;
            }
            file.sync_all().await?;
            drop(file);
            if let Some(dir) = final_path.parent() {
                tokio::fs::create_dir_all(dir).await?;
            }
            // A hard link is create-only: it fails if the key exists, where rename would replace.
            match tokio::fs::hard_link(&tmp.path, &final_path).await {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(StorageError::AlreadyExists);
                }
                Err(e) => return Err(e.into()),
            }
            sync_dir(final_path.parent()).await;
            Ok(written)
        })
        .await
    }

    async fn get(&self, key: &ObjectKey) -> Result<ByteStream, StorageError> {
        self.observe("get", async {
            match tokio::fs::File::open(self.path_of(key)).await {
                Ok(file) => {
                    Ok::<ByteStream, _>(Box::pin(ReaderStream::with_capacity(file, BUF_SIZE)))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StorageError::NotFound),
                Err(e) => Err(e.into()),
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
            use tokio::io::AsyncSeekExt;
            let mut file = match tokio::fs::File::open(self.path_of(key)).await {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(StorageError::NotFound);
                }
                Err(e) => return Err(e.into()),
            };
            file.seek(io::SeekFrom::Start(start)).await?;
            let len = end.saturating_sub(start) + 1;
            Ok::<ByteStream, _>(Box::pin(ReaderStream::with_capacity(
                file.take(len),
                BUF_SIZE,
            )))
        })
        .await
    }

    async fn presigned_get(
        &self,
        _key: &ObjectKey,
        _ttl: std::time::Duration,
        _content_disposition: &str,
    ) -> Result<Option<String>, StorageError> {
        self.observe("presigned_get", async { Ok(None) }).await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        self.observe("delete", async {
            match tokio::fs::remove_file(self.path_of(key)).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    async fn stat(&self, key: &ObjectKey) -> Result<Option<ObjectStat>, StorageError> {
        self.observe("stat", async {
            Ok(
                gone_is_none(tokio::fs::metadata(self.path_of(key)).await)?.map(|m| ObjectStat {
                    size: m.len(),
                    sha256: None,
                }),
            )
        })
        .await
    }

    async fn exists(&self, key: &ObjectKey) -> Result<bool, StorageError> {
        self.observe("exists", async {
            Ok(tokio::fs::try_exists(self.path_of(key)).await?)
        })
        .await
    }

    async fn list_objects(&self) -> Result<Vec<ObjectInfo>, StorageError> {
        self.observe("list_objects", async {
            // NOTE: uploads and deletes go on while this lists: an entry may vanish between
            // being listed and being looked at. That is not an error; it is no object.
            let mut objects = Vec::new();
            let mut dirs = tokio::fs::read_dir(&self.root).await?;
            while let Some(dir) = dirs.next_entry().await? {
                let name = dir.file_name().to_string_lossy().into_owned();
                if name == TMP_DIR
                    || !gone_is_none(dir.file_type().await)?.is_some_and(|t| t.is_dir())
                {
                    continue;
                }
                let Some(mut files) = gone_is_none(tokio::fs::read_dir(dir.path()).await)? else {
                    continue;
                };
                while let Some(f) = files.next_entry().await? {
                    let Some(meta) = gone_is_none(f.metadata().await)? else {
                        continue;
                    };
                    objects.push(ObjectInfo {
                        key: format!("{name}/{}", f.file_name().to_string_lossy()),
                        size: meta.len(),
                        last_modified: meta.modified()?,
                    });
                }
            }
            Ok(objects)
        })
        .await
    }

    async fn list_incomplete(
        &self,
        older_than: std::time::SystemTime,
    ) -> Result<Vec<IncompleteWrite>, StorageError> {
        self.observe("list_incomplete", async {
            let mut found = Vec::new();
            let mut entries = tokio::fs::read_dir(self.root.join(TMP_DIR)).await?;
            while let Some(entry) = entries.next_entry().await? {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(meta) = gone_is_none(entry.metadata().await)? else {
                    continue;
                };
                if meta.modified()? >= older_than {
                    continue;
                }
                found.push(IncompleteWrite {
                    key: key_of_temp(&name),
                    description: format!("{TMP_DIR}/{name}"),
                    handle: name,
                });
            }
            found.sort_by(|a, b| a.description.cmp(&b.description));
            Ok(found)
        })
        .await
    }

    async fn remove_incomplete(&self, write: &IncompleteWrite) -> Result<(), StorageError> {
        self.observe("remove_incomplete", async {
            // A name from list_incomplete only: a plain file name inside the temporary directory.
            if write.handle.contains(['/', '\\']) || write.handle.starts_with('.') {
                return Err(StorageError::Unavailable(format!(
                    "not a temporary file: {}",
                    write.handle
                )));
            }
            let path = self.root.join(TMP_DIR).join(&write.handle);
            // A write in parts is a directory of part files.
            let removed = if write.handle.ends_with(PARTS_SUFFIX) {
                tokio::fs::remove_dir_all(&path).await
            } else {
                tokio::fs::remove_file(&path).await
            };
            match removed {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    async fn begin_parts(&self, key: &ObjectKey) -> Result<String, StorageError> {
        self.observe("begin_parts", async {
            let id = key.as_str().trim_start_matches(ObjectKey::PREFIX);
            let upload = format!("{id}{PARTS_SUFFIX}");
            tokio::fs::create_dir_all(self.parts_dir(key, &upload)?).await?;
            Ok(upload)
        })
        .await
    }

    /// A part file, written under a temporary name and renamed over any earlier part of
    /// the same number.
    async fn put_part(
        &self,
        key: &ObjectKey,
        upload: &str,
        number: u32,
        body: Body<'_>,
        size: u64,
    ) -> Result<String, StorageError> {
        self.observe("put_part", async {
            let dir = self.parts_dir(key, upload)?;
            if !tokio::fs::try_exists(&dir).await? {
                return Err(StorageError::NotFound);
            }
            let tmp = TempFile {
                path: dir.join(format!("{number}.{}", uuid::Uuid::new_v4().simple())),
                armed: true,
            };
            let mut file = tokio::fs::File::create_new(&tmp.path).await?;
            let mut limited = body.take(size);
            let written = tokio::io::copy(&mut limited, &mut file)
                .await
                .map_err(StorageError::Body)?;
            if written != size {
                return Err(StorageError::Body(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the part had {written} bytes, not the {size} announced"),
                )));
            }
            file.sync_all().await?;
            drop(file);
            tokio::fs::rename(&tmp.path, dir.join(number.to_string())).await?;
            let mut tmp = tmp;
            tmp.armed = false;
            Ok(format!("{number}-{size}"))
        })
        .await
    }

    async fn complete_parts(
        &self,
        key: &ObjectKey,
        upload: &str,
        parts: &[StoredPart],
    ) -> Result<(), StorageError> {
        self.observe("complete_parts", async {
            let dir = self.parts_dir(key, upload)?;
            let mut files = Vec::with_capacity(parts.len());
            for part in parts {
                let file = tokio::fs::File::open(dir.join(part.number.to_string())).await?;
                let len = file.metadata().await?.len();
                if part.etag != format!("{}-{len}", part.number) || len != part.size {
                    return Err(StorageError::Unavailable(format!(
                        "part {} holds {len} bytes, not the {} recorded",
                        part.number, part.size
                    )));
                }
                files.push(file);
            }
            use futures_util::StreamExt;
            let joined = futures_util::stream::iter(files)
                .map(|file| ReaderStream::with_capacity(file, BUF_SIZE))
                .flatten();
            let mut joined = tokio_util::io::StreamReader::new(joined);
            self.put(key, &mut joined).await?;
            tokio::fs::remove_dir_all(&dir).await?;
            Ok(())
        })
        .await
    }

    async fn abort_parts(&self, key: &ObjectKey, upload: &str) -> Result<(), StorageError> {
        self.observe("abort_parts", async {
            match tokio::fs::remove_dir_all(self.parts_dir(key, upload)?).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    async fn check(&self) -> Result<(), StorageError> {
        self.observe("check", async {
            let meta = tokio::fs::metadata(&self.root).await?;
            if meta.is_dir() {
                Ok(())
            } else {
                Err(StorageError::Unavailable(format!(
                    "{} is not a directory",
                    self.root.display()
                )))
            }
        })
        .await
    }

    fn kind(&self) -> &'static str {
        "fs"
    }
}

/// A temporary file's name: the key's id, then a random part (a retried write of the same
/// key never collides), so that a sweep can tell which upload it belongs to.
fn temp_name(key: &ObjectKey) -> String {
    let id = key.as_str().trim_start_matches(ObjectKey::PREFIX);
    format!("{id}.{}", uuid::Uuid::new_v4().simple())
}

/// The key a temporary file was written for, from its name.
fn key_of_temp(name: &str) -> Option<String> {
    let (id, _) = name.split_once('.')?;
    Some(format!("{}{id}", ObjectKey::PREFIX))
}

/// `Ok(None)` for a file that vanished under the caller's feet.
fn gone_is_none<T>(result: io::Result<T>) -> io::Result<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

async fn sync_dir(dir: Option<&Path>) {
    let Some(dir) = dir else { return };
    // Makes the new directory entry durable; a failure here costs durability, not
    // correctness, so it is logged rather than failing the upload.
    let dir = dir.to_owned();
    let res = tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all()).await;
    if let Ok(Err(e)) = res {
        tracing::warn!(error = %e, "could not sync storage directory");
    }
}

#[cfg(test)]
mod tests;
