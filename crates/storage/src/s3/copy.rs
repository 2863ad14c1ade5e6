//! A part of a multipart write copied from an object inside the store (`UploadPartCopy`),
//! which rust-s3 does not offer: a presigned `PUT` that signs the copy's source.

use std::collections::HashMap;
use std::time::Duration;

use agentpkg_model::ObjectKey;
use serde::Deserialize;

use super::{S3Store, unavailable, unavailable_msg};
use crate::StorageError;

const COPY_SOURCE: &str = "x-amz-copy-source";

/// How long one part's copy may take: the store copies up to 5 GiB (Garage only references
/// the source's blocks; AWS copies at hundreds of MB/s).
const COPY_TIMEOUT: Duration = Duration::from_secs(600);

/// S3's answer to a part copy (its `LastModified` is not needed).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CopyPartResult {
    #[serde(rename = "ETag")]
    etag: String,
}

impl S3Store {
    pub(super) async fn upload_part_copy(
        &self,
        key: &ObjectKey,
        upload: &str,
        number: u32,
        source: &ObjectKey,
    ) -> Result<String, StorageError> {
        // Keys are `packages/<hex>`: nothing in them needs escaping.
        let from = format!("{}/{}", self.bucket.name(), source.as_str());
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::HeaderName::from_static(COPY_SOURCE),
            http::HeaderValue::from_str(&from).map_err(unavailable_msg)?,
        );
        let mut queries = HashMap::new();
        queries.insert("partNumber".to_owned(), number.to_string());
        queries.insert("uploadId".to_owned(), upload.to_owned());
        let url = self
            .bucket
            .presign_put(key.as_str(), 3600, Some(headers), Some(queries))
            .await
            .map_err(unavailable)?;
        let response = self
            .http
            .put(url)
            .timeout(COPY_TIMEOUT)
            .header(COPY_SOURCE, from)
            .header(http::header::CONTENT_LENGTH, 0)
            .send()
            .await
            .map_err(unavailable_msg)?;
        let status = response.status();
        let text = response.text().await.map_err(unavailable_msg)?;
        if status == http::StatusCode::NOT_FOUND && text.contains("NoSuchKey") {
            return Err(StorageError::NotFound);
        }
        // S3 may answer 200 with an error in the body.
        if !status.is_success() || text.contains("<Error>") {
            return Err(StorageError::Unavailable(format!(
                "copying part {number} answered {status}: {}",
                text.chars().take(300).collect::<String>()
            )));
        }
        let result: CopyPartResult = quick_xml::de::from_str(&text).map_err(|e| {
            StorageError::Unavailable(format!("copying part {number} answered {text:.300}: {e}"))
        })?;
        Ok(result.etag)
    }
}
