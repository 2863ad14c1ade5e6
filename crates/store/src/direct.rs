//! Direct uploads granted and not yet completed (see the `direct_uploads` migration).
//! Expiry is judged by the database's clock, like the markers of uploads in flight.

use agentpkg_model::{
    Checksum, Coordinates, Description, DetachedSignature, DirectUpload, DirectUploadId, FileName,
    ObjectKey, PackageName, SignatureBytes, Version,
};
use chrono::{NaiveDateTime, Utc};
use diesel::prelude::*;

use crate::schema::direct_uploads;
use crate::uploads::db_now;
use crate::{DbConnection, StoreError, UploadQuota};

#[derive(Queryable, Selectable)]
#[diesel(table_name = direct_uploads)]
struct Row {
    id: String,
    user_id: Option<i64>,
    name: String,
    version: String,
    platform: String,
    arch: String,
    file_size: i64,
    checksum: String,
    filename: Option<String>,
    description: String,
    storage_path: String,
    signature_format: Option<String>,
    signature: Option<Vec<u8>>,
    expires_at: NaiveDateTime,
}

impl TryFrom<Row> for DirectUpload {
    type Error = StoreError;

    fn try_from(row: Row) -> Result<Self, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("direct upload {}: {what}", row.id));
        let signature = match (row.signature_format, row.signature) {
            (Some(format), Some(bytes)) => Some(DetachedSignature {
                format: format.parse().map_err(|_| corrupt("signature format"))?,
                bytes: SignatureBytes::new(bytes).map_err(|_| corrupt("signature"))?,
            }),
            _ => None,
        };
        Ok(DirectUpload {
            id: DirectUploadId::parse(&row.id).map_err(|_| corrupt("id"))?,
            user_id: row.user_id,
            coordinates: Coordinates {
                name: PackageName::parse(&row.name).map_err(|_| corrupt("name"))?,
                version: Version::parse(&row.version).map_err(|_| corrupt("version"))?,
                platform: row.platform.parse().map_err(|_| corrupt("platform"))?,
                arch: row.arch.parse().map_err(|_| corrupt("arch"))?,
            },
            size: u64::try_from(row.file_size).map_err(|_| corrupt("size"))?,
            checksum: Checksum::parse(&row.checksum).map_err(|_| corrupt("checksum"))?,
            filename: row
                .filename
                .as_deref()
                .map(FileName::parse)
                .transpose()
                .map_err(|_| corrupt("filename"))?,
            description: Description::parse(&row.description)
                .map_err(|_| corrupt("description"))?,
            storage_key: ObjectKey::parse(&row.storage_path)
                .map_err(|_| corrupt("storage_path"))?,
            signature,
            expires_at: row.expires_at.and_utc(),
        })
    }
}

/// Records a grant unless its user would pass `quota` (`Ok(false)` for one grant too
/// many, [`StoreError::OverQuota`] for bytes).
pub(crate) fn create(
    conn: &mut DbConnection,
    upload: &DirectUpload,
    quota: &UploadQuota,
) -> Result<bool, StoreError> {
    crate::connection::write_transaction(conn, |conn| {
        if let Some(user) = upload.user_id
            && !crate::quota::admit(conn, user, upload.size, quota, |c| {
                crate::quota::live_grants(c, user)
            })?
        {
            return Ok(false);
        }
        insert(conn, upload)?;
        Ok(true)
    })
}

fn insert(conn: &mut DbConnection, upload: &DirectUpload) -> Result<(), StoreError> {
    let c = &upload.coordinates;
    let size = i64::try_from(upload.size)
        .map_err(|_| StoreError::Corrupt("file size exceeds i64".into()))?;
    diesel::insert_into(direct_uploads::table)
        .values((
            direct_uploads::id.eq(upload.id.as_str()),
            direct_uploads::user_id.eq(upload.user_id),
            direct_uploads::name.eq(c.name.as_str()),
            direct_uploads::version.eq(c.version.to_string()),
            direct_uploads::platform.eq(c.platform.as_str()),
            direct_uploads::arch.eq(c.arch.as_str()),
            direct_uploads::file_size.eq(size),
            direct_uploads::checksum.eq(upload.checksum.as_str()),
            direct_uploads::filename.eq(upload.filename.as_ref().map(FileName::as_str)),
            direct_uploads::description.eq(upload.description.as_str()),
            direct_uploads::storage_path.eq(upload.storage_key.as_str()),
            direct_uploads::signature_format
                .eq(upload.signature.as_ref().map(|s| s.format.as_str())),
            direct_uploads::signature.eq(upload.signature.as_ref().map(|s| s.bytes.as_bytes())),
            direct_uploads::expires_at.eq(upload.expires_at.naive_utc()),
            direct_uploads::created_at.eq(Utc::now().naive_utc()),
        ))
        .execute(conn)?;
    Ok(())
}

/// The upload, while it has not expired.
pub(crate) fn get(
    conn: &mut DbConnection,
    id: &DirectUploadId,
) -> Result<Option<DirectUpload>, StoreError> {
    let now = db_now(conn)?;
    direct_uploads::table
        .find(id.as_str())
        .filter(direct_uploads::expires_at.gt(now))
        .select(Row::as_select())
        .first(conn)
        .optional()?
        .map(DirectUpload::try_from)
        .transpose()
}

/// Takes the upload for completion: its row goes and its object is marked in flight, in
/// one transaction, so exactly one caller gets it and the object is never unguarded.
pub(crate) fn claim(
    conn: &mut DbConnection,
    id: &DirectUploadId,
) -> Result<Option<DirectUpload>, StoreError> {
    conn.transaction(|conn| {
        let Some(upload) = get(conn, id)? else {
            return Ok(None);
        };
        let deleted = diesel::delete(direct_uploads::table.find(id.as_str())).execute(conn)?;
        if deleted != 1 {
            return Ok(None);
        }
        crate::uploads::begin(conn, upload.storage_key.as_str())?;
        Ok(Some(upload))
    })
}

/// Removes expired uploads; their objects (if any) become ordinary orphans.
pub(crate) fn remove_expired(conn: &mut DbConnection) -> Result<Vec<String>, StoreError> {
    conn.transaction(|conn| {
        let now = db_now(conn)?;
        let keys: Vec<String> = direct_uploads::table
            .filter(direct_uploads::expires_at.le(now))
            .select(direct_uploads::storage_path)
            .load(conn)?;
        diesel::delete(direct_uploads::table.filter(direct_uploads::expires_at.le(now)))
            .execute(conn)?;
        Ok(keys)
    })
}

/// Objects of uploads that have not expired: in flight.
pub(crate) fn pending_keys(conn: &mut DbConnection) -> Result<Vec<String>, StoreError> {
    let now = db_now(conn)?;
    Ok(direct_uploads::table
        .filter(direct_uploads::expires_at.gt(now))
        .select(direct_uploads::storage_path)
        .load(conn)?)
}

pub(crate) fn names_key(conn: &mut DbConnection, key: &str) -> Result<bool, StoreError> {
    let now = db_now(conn)?;
    let found: Option<String> = direct_uploads::table
        .filter(direct_uploads::storage_path.eq(key))
        .filter(direct_uploads::expires_at.gt(now))
        .select(direct_uploads::id)
        .first(conn)
        .optional()?;
    Ok(found.is_some())
}
