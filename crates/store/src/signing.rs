//! Signature bytes and trusted signing keys.

use agentpkg_model::{
    IdentityPattern, KeyFingerprint, KeyPatterns, NamePattern, NewSignature, NewSigstoreIdentity,
    OidcIssuer, Package, SignatureBytes, SignatureFormat, SigstoreIdentity, TrustedKey,
};
use chrono::{NaiveDateTime, Utc};
use diesel::prelude::*;

use crate::connection::write_transaction;
use crate::schema::{package_signatures, packages, signing_keys, sigstore_identities};
use crate::{Attached, DbConnection, DieselStore, NewSigningKey, SigningStore, StoreError};
use async_trait::async_trait;

pub(crate) fn insert_bytes(
    conn: &mut DbConnection,
    package_id: i64,
    bytes: &SignatureBytes,
) -> Result<(), StoreError> {
    diesel::insert_into(package_signatures::table)
        .values((
            package_signatures::package_id.eq(package_id),
            package_signatures::data.eq(bytes.as_bytes()),
        ))
        .execute(conn)?;
    Ok(())
}

pub(crate) fn bytes(
    conn: &mut DbConnection,
    package_id: i64,
) -> Result<Option<(SignatureFormat, Vec<u8>)>, StoreError> {
    let found: Option<(Option<String>, Vec<u8>)> = package_signatures::table
        .inner_join(packages::table)
        .filter(package_signatures::package_id.eq(package_id))
        .select((packages::signature_format, package_signatures::data))
        .first(conn)
        .optional()?;
    let corrupt = || StoreError::Corrupt(format!("package {package_id}: signature"));
    found
        .map(|(format, data)| {
            let format = format.ok_or_else(corrupt)?.parse().map_err(|_| corrupt())?;
            Ok((format, data))
        })
        .transpose()
}

/// Attaches (or replaces) a package's signature, in one transaction with the check that
/// decides whether a verified one may be replaced.
pub(crate) fn attach(
    conn: &mut DbConnection,
    package_id: i64,
    signature: &NewSignature,
    may_replace_verified: bool,
) -> Result<Attached, StoreError> {
    write_transaction(conn, |conn| {
        let Some(before) = crate::packages::get(conn, package_id)? else {
            return Ok(Attached::NoPackage);
        };
        let verified_before = before
            .signature
            .as_ref()
            .is_some_and(|s| s.verified_by.is_some());
        if verified_before && !may_replace_verified {
            return Ok(Attached::VerifiedExists(before));
        }
        let columns = crate::signature_columns::SignatureColumns::of(Some(signature));
        diesel::update(packages::table.find(package_id))
            .set((
                packages::signature_format.eq(columns.format),
                packages::signature_key.eq(columns.key),
                packages::signature_signer.eq(columns.signer),
                packages::signature_verified_at.eq(columns.verified_at),
                packages::signature_identity.eq(columns.identity),
                packages::signature_issuer.eq(columns.issuer),
                packages::signature_signed_at.eq(columns.signed_at),
                packages::updated_at.eq(Utc::now().naive_utc()),
            ))
            .execute(conn)?;
        diesel::delete(package_signatures::table.find(package_id)).execute(conn)?;
        insert_bytes(conn, package_id, &signature.bytes)?;
        let after: Package = crate::packages::get(conn, package_id)?
            .ok_or_else(|| StoreError::Corrupt("signed package vanished".into()))?;
        Ok(Attached::Done {
            package: after,
            replaced: before.signature,
        })
    })
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = signing_keys)]
struct KeyRow {
    fingerprint: String,
    armored: String,
    user_ids: String,
    algorithm: String,
    key_created_at: Option<NaiveDateTime>,
    expires_at: Option<NaiveDateTime>,
    revoked: bool,
    patterns: String,
    added_by: Option<i64>,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

impl TryFrom<KeyRow> for TrustedKey {
    type Error = StoreError;

    fn try_from(row: KeyRow) -> Result<Self, StoreError> {
        let corrupt =
            |what: &str| StoreError::Corrupt(format!("signing key {}: {what}", row.fingerprint));
        let patterns = stored_patterns(&row.patterns).map_err(|_| corrupt("patterns"))?;
        Ok(TrustedKey {
            fingerprint: KeyFingerprint::parse(&row.fingerprint)
                .map_err(|_| corrupt("fingerprint"))?,
            user_ids: row.user_ids.lines().map(str::to_owned).collect(),
            armored: row.armored,
            algorithm: row.algorithm,
            key_created_at: row.key_created_at.map(|t| t.and_utc()),
            expires_at: row.expires_at.map(|t| t.and_utc()),
            revoked: row.revoked,
            patterns,
            added_by: row.added_by,
            created_at: row.created_at.and_utc(),
            updated_at: row.updated_at.and_utc(),
        })
    }
}

/// Patterns as stored: one per line.
fn stored_patterns(text: &str) -> Result<KeyPatterns, agentpkg_model::ValidationError> {
    text.lines()
        .map(NamePattern::parse_stored)
        .collect::<Result<Vec<_>, _>>()
        .and_then(KeyPatterns::new)
}

fn patterns_text(patterns: &KeyPatterns) -> String {
    patterns
        .patterns()
        .iter()
        .map(NamePattern::as_str)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Registers a key, or replaces the material and patterns of the key with its
/// fingerprint (a renewed expiry, a revocation, new subkeys). `true` when it is new.
pub(crate) fn upsert_key(
    conn: &mut DbConnection,
    new: &NewSigningKey,
) -> Result<(TrustedKey, bool), StoreError> {
    conn.transaction(|conn| {
        let at = Utc::now().naive_utc();
        let fingerprint = new.fingerprint.as_str();
        let exists = signing_keys::table
            .find(fingerprint)
            .select(signing_keys::fingerprint)
            .first::<String>(conn)
            .optional()?
            .is_some();
        let values = (
            signing_keys::armored.eq(&new.armored),
            signing_keys::user_ids.eq(new.user_ids.join("\n")),
            signing_keys::algorithm.eq(&new.algorithm),
            signing_keys::key_created_at.eq(new.key_created_at.map(|t| t.naive_utc())),
            signing_keys::expires_at.eq(new.expires_at.map(|t| t.naive_utc())),
            signing_keys::revoked.eq(new.revoked),
            signing_keys::patterns.eq(patterns_text(&new.patterns)),
            signing_keys::updated_at.eq(at),
        );
        if exists {
            diesel::update(signing_keys::table.find(fingerprint))
                .set(values)
                .execute(conn)?;
        } else {
            diesel::insert_into(signing_keys::table)
                .values((
                    signing_keys::fingerprint.eq(fingerprint),
                    signing_keys::added_by.eq(new.added_by),
                    signing_keys::created_at.eq(at),
                    values,
                ))
                .execute(conn)?;
        }
        let key = get_key(conn, &new.fingerprint)?
            .ok_or_else(|| StoreError::Corrupt("signing key vanished".into()))?;
        Ok((key, !exists))
    })
}

pub(crate) fn get_key(
    conn: &mut DbConnection,
    fingerprint: &KeyFingerprint,
) -> Result<Option<TrustedKey>, StoreError> {
    signing_keys::table
        .find(fingerprint.as_str())
        .select(KeyRow::as_select())
        .first(conn)
        .optional()?
        .map(TrustedKey::try_from)
        .transpose()
}

pub(crate) fn list_keys(conn: &mut DbConnection) -> Result<Vec<TrustedKey>, StoreError> {
    signing_keys::table
        .order(signing_keys::created_at.asc())
        .select(KeyRow::as_select())
        .load(conn)?
        .into_iter()
        .map(TrustedKey::try_from)
        .collect()
}

pub(crate) fn delete_key(
    conn: &mut DbConnection,
    fingerprint: &KeyFingerprint,
) -> Result<bool, StoreError> {
    let n = diesel::delete(signing_keys::table.find(fingerprint.as_str())).execute(conn)?;
    Ok(n > 0)
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = sigstore_identities)]
struct IdentityRow {
    id: i64,
    patterns: String,
    issuer: String,
    san_regex: String,
    added_by: Option<i64>,
    created_at: NaiveDateTime,
}

impl TryFrom<IdentityRow> for SigstoreIdentity {
    type Error = StoreError;

    fn try_from(row: IdentityRow) -> Result<Self, StoreError> {
        let corrupt =
            |what: &str| StoreError::Corrupt(format!("sigstore identity {}: {what}", row.id));
        let patterns = stored_patterns(&row.patterns).map_err(|_| corrupt("patterns"))?;
        Ok(SigstoreIdentity {
            id: row.id,
            patterns,
            issuer: OidcIssuer::parse(&row.issuer).map_err(|_| corrupt("issuer"))?,
            san: IdentityPattern::parse(&row.san_regex).map_err(|_| corrupt("san_regex"))?,
            added_by: row.added_by,
            created_at: row.created_at.and_utc(),
        })
    }
}

pub(crate) fn add_identity(
    conn: &mut DbConnection,
    new: &NewSigstoreIdentity,
) -> Result<SigstoreIdentity, StoreError> {
    let at = crate::packages::now();
    let patterns = patterns_text(&new.patterns);
    write_transaction(conn, |conn| {
        diesel::insert_into(sigstore_identities::table)
            .values((
                sigstore_identities::patterns.eq(&patterns),
                sigstore_identities::issuer.eq(new.issuer.as_str()),
                sigstore_identities::san_regex.eq(new.san.as_str()),
                sigstore_identities::added_by.eq(new.added_by),
                sigstore_identities::created_at.eq(at),
            ))
            .execute(conn)?;
        // NOTE: MultiConnection cannot map RETURNING: the newest row with these values is
        // this one.
        sigstore_identities::table
            .filter(sigstore_identities::created_at.eq(at))
            .filter(sigstore_identities::issuer.eq(new.issuer.as_str()))
            .filter(sigstore_identities::san_regex.eq(new.san.as_str()))
            .filter(sigstore_identities::patterns.eq(&patterns))
            .order(sigstore_identities::id.desc())
            .select(IdentityRow::as_select())
            .first(conn)?
            .try_into()
    })
}

pub(crate) fn identities(conn: &mut DbConnection) -> Result<Vec<SigstoreIdentity>, StoreError> {
    sigstore_identities::table
        .order(sigstore_identities::id.asc())
        .select(IdentityRow::as_select())
        .load(conn)?
        .into_iter()
        .map(SigstoreIdentity::try_from)
        .collect()
}

pub(crate) fn identity(
    conn: &mut DbConnection,
    id: i64,
) -> Result<Option<SigstoreIdentity>, StoreError> {
    sigstore_identities::table
        .find(id)
        .select(IdentityRow::as_select())
        .first(conn)
        .optional()?
        .map(SigstoreIdentity::try_from)
        .transpose()
}

pub(crate) fn delete_identity(conn: &mut DbConnection, id: i64) -> Result<bool, StoreError> {
    Ok(diesel::delete(sigstore_identities::table.find(id)).execute(conn)? > 0)
}

#[async_trait]
impl SigningStore for DieselStore {
    async fn signature_bytes(
        &self,
        package_id: i64,
    ) -> Result<Option<(SignatureFormat, Vec<u8>)>, StoreError> {
        self.with_conn_read("signature_bytes", move |c| bytes(c, package_id))
            .await
    }

    async fn attach_signature(
        &self,
        package_id: i64,
        signature: NewSignature,
        may_replace_verified: bool,
    ) -> Result<Attached, StoreError> {
        self.with_conn("attach_signature", move |c| {
            attach(c, package_id, &signature, may_replace_verified)
        })
        .await
    }

    async fn upsert_key(&self, key: NewSigningKey) -> Result<(TrustedKey, bool), StoreError> {
        self.with_conn("upsert_key", move |c| upsert_key(c, &key))
            .await
    }

    async fn signing_key(
        &self,
        fingerprint: &KeyFingerprint,
    ) -> Result<Option<TrustedKey>, StoreError> {
        let fingerprint = fingerprint.clone();
        self.with_conn_read("signing_key", move |c| get_key(c, &fingerprint))
            .await
    }

    async fn signing_keys(&self) -> Result<Vec<TrustedKey>, StoreError> {
        self.with_conn_read("signing_keys", list_keys).await
    }

    async fn delete_signing_key(&self, fingerprint: &KeyFingerprint) -> Result<bool, StoreError> {
        let fingerprint = fingerprint.clone();
        self.with_conn("delete_signing_key", move |c| delete_key(c, &fingerprint))
            .await
    }

    async fn add_sigstore_identity(
        &self,
        new: NewSigstoreIdentity,
    ) -> Result<SigstoreIdentity, StoreError> {
        self.with_conn("add_sigstore_identity", move |c| add_identity(c, &new))
            .await
    }

    async fn sigstore_identity(&self, id: i64) -> Result<Option<SigstoreIdentity>, StoreError> {
        self.with_conn_read("sigstore_identity", move |c| identity(c, id))
            .await
    }

    async fn sigstore_identities(&self) -> Result<Vec<SigstoreIdentity>, StoreError> {
        self.with_conn_read("sigstore_identities", identities).await
    }

    async fn delete_sigstore_identity(&self, id: i64) -> Result<bool, StoreError> {
        self.with_conn("delete_sigstore_identity", move |c| delete_identity(c, id))
            .await
    }
}
