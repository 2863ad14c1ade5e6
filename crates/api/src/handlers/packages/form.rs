//! The upload form, read field by field as it streams: text fields are checked as they
//! arrive, and the file goes to storage as it arrives.

use actix_multipart::{Field, Multipart};
use agentpkg_model::{
    Actor, Arch, Checksum, Coordinates, Description, DetachedSignature, ErrorCode, FileName,
    MAX_SIGNATURE_BYTES, PackageName, Platform, SignatureBytes, SignatureFormat, ValidationError,
    Version,
};
use agentpkg_packagemgr::{PackageManager, StagedUpload, UploadMeta};
use futures_util::{StreamExt, TryStreamExt};

use super::body::stage_stream;
use super::missing;
use crate::ApiError;
use crate::handlers::download::CHECKSUM_HEADER;

/// Largest text field: a 4096-character description in UTF-8, with margin.
const MAX_TEXT_FIELD: usize = 20 * 1024;

/// The fields of an upload form, each checked as it arrives.
#[derive(Default)]
pub(super) struct Form {
    name: Option<PackageName>,
    version: Option<Version>,
    platform: Option<Platform>,
    arch: Option<Arch>,
    description: Option<Description>,
    sha256: Option<Checksum>,
    filename: Option<FileName>,
    signature: Option<SignatureBytes>,
    signature_format: Option<SignatureFormat>,
    republish: Option<bool>,
    pub(super) staged: Option<StagedUpload>,
}

impl Form {
    /// Reads the form for `publisher`; a name `publisher` may not publish to (out of its
    /// token's names, or not its own) is refused as soon as it arrives.
    pub(super) async fn read(
        &mut self,
        mgr: &PackageManager,
        publisher: &Actor,
        multipart: &mut Multipart,
    ) -> Result<(), ApiError> {
        while let Some(field) = multipart.try_next().await.map_err(malformed)? {
            let name = field.name().unwrap_or_default().to_owned();
            match name.as_str() {
                "file" => {
                    if self.staged.is_some() {
                        return Err(duplicate("file"));
                    }
                    self.filename = field
                        .content_disposition()
                        .and_then(|cd| cd.get_filename())
                        .filter(|f| !f.is_empty())
                        .map(FileName::parse)
                        .transpose()?;
                    // A name that came first was checked (scope, ownership) on arrival.
                    if let Some(coordinates) = self.coordinates() {
                        mgr.ensure_absent(&coordinates).await?;
                    }
                    let signature = self.signature();
                    if let (Some(name), Some(signature)) = (&self.name, &signature) {
                        // A signature that cannot verify is refused before the file.
                        mgr.judge_signature(name, Some(signature)).await?;
                    }
                    self.staged = Some(stage_stream(mgr, field, signature.as_ref()).await?);
                }
                "name" => {
                    let name = PackageName::parse(&text(field, "name").await?)?;
                    mgr.ensure_may_act(&name, publisher).await?;
                    set(&mut self.name, "name", name)?;
                }
                "version" => set(
                    &mut self.version,
                    "version",
                    Version::parse(&text(field, "version").await?)?,
                )?,
                "platform" => set(
                    &mut self.platform,
                    "platform",
                    text(field, "platform").await?.parse()?,
                )?,
                "arch" => set(&mut self.arch, "arch", text(field, "arch").await?.parse()?)?,
                "description" => set(
                    &mut self.description,
                    "description",
                    Description::parse(&text(field, "description").await?)?,
                )?,
                "signature" => {
                    let bytes = signature_field(field).await?;
                    set(&mut self.signature, "signature", bytes)?;
                }
                "signature_format" => set(
                    &mut self.signature_format,
                    "signature_format",
                    text(field, "signature_format").await?.trim().parse()?,
                )?,
                "sha256" => set(
                    &mut self.sha256,
                    "sha256",
                    Checksum::parse(text(field, "sha256").await?.trim())?,
                )?,
                "republish" => {
                    let value = match text(field, "republish").await?.trim() {
                        "true" => true,
                        "false" => false,
                        _ => {
                            return Err(
                                ValidationError::new("republish", "must be true or false").into()
                            );
                        }
                    };
                    set(&mut self.republish, "republish", value)?;
                }
                _ => {
                    return Err(ApiError::new(
                        ErrorCode::UnknownField,
                        format!(
                            "unknown form field {:?}; expected file, name, version, platform, arch, description, sha256, signature, signature_format, republish",
                            truncate(&name, 64)
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The signature so far, with its format (OpenPGP unless said otherwise).
    fn signature(&self) -> Option<DetachedSignature> {
        Some(DetachedSignature {
            format: self.signature_format.unwrap_or(SignatureFormat::Openpgp),
            bytes: self.signature.clone()?,
        })
    }

    fn coordinates(&self) -> Option<Coordinates> {
        Some(Coordinates {
            name: self.name.clone()?,
            version: self.version.clone()?,
            platform: self.platform?,
            arch: self.arch?,
        })
    }

    pub(super) fn meta(
        &mut self,
        header_sha256: Option<Checksum>,
        publisher: Actor,
    ) -> Result<UploadMeta, ApiError> {
        let expected_sha256 = match (self.sha256.take(), header_sha256) {
            (Some(a), Some(b)) if a != b => {
                return Err(ValidationError::new(
                    "sha256",
                    format!("the sha256 field and the {CHECKSUM_HEADER} header disagree"),
                )
                .into());
            }
            (a, b) => a.or(b),
        };
        if self.signature_format.is_some() && self.signature.is_none() {
            return Err(missing("signature"));
        }
        let signature = self.signature();
        Ok(UploadMeta {
            signature,
            size: None,
            coordinates: Coordinates {
                name: self.name.take().ok_or_else(|| missing("name"))?,
                version: self.version.take().ok_or_else(|| missing("version"))?,
                platform: self.platform.take().ok_or_else(|| missing("platform"))?,
                arch: self.arch.take().ok_or_else(|| missing("arch"))?,
            },
            filename: self.filename.take(),
            description: self.description.take().unwrap_or_default(),
            expected_sha256,
            publisher: Some(publisher),
            republish: self.republish.unwrap_or(false),
        })
    }
}

fn set<T>(slot: &mut Option<T>, field: &'static str, value: T) -> Result<(), ApiError> {
    if slot.is_some() {
        return Err(duplicate(field));
    }
    *slot = Some(value);
    Ok(())
}

fn duplicate(field: &'static str) -> ApiError {
    ApiError {
        field: Some(field),
        ..ApiError::new(
            ErrorCode::DuplicateField,
            format!("{field} was sent more than once"),
        )
    }
}

fn malformed(e: actix_multipart::MultipartError) -> ApiError {
    if let actix_multipart::MultipartError::Payload(p) = &e
        && let Some(why) = crate::deadlines::timed_out(p)
    {
        return ApiError::body_timeout(why);
    }
    ApiError::new(
        ErrorCode::InvalidMultipart,
        format!("malformed multipart body: {e}"),
    )
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Reads the signature field, refusing more than [`MAX_SIGNATURE_BYTES`] bytes.
async fn signature_field(mut field: Field) -> Result<SignatureBytes, ApiError> {
    let mut buf = Vec::new();
    while let Some(chunk) = field.next().await {
        let chunk = chunk.map_err(malformed)?;
        if buf.len() + chunk.len() > MAX_SIGNATURE_BYTES {
            return Err(super::signature::too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    super::signature::signature_bytes(buf)
}

/// Reads a small text field, refusing more than [`MAX_TEXT_FIELD`] bytes.
async fn text(mut field: Field, name: &'static str) -> Result<String, ApiError> {
    let mut buf = Vec::new();
    while let Some(chunk) = field.next().await {
        let chunk = chunk.map_err(malformed)?;
        if buf.len() + chunk.len() > MAX_TEXT_FIELD {
            return Err(ValidationError::new(
                name,
                format!("is longer than {MAX_TEXT_FIELD} bytes"),
            )
            .into());
        }
        buf.extend_from_slice(&chunk);
    }
    String::from_utf8(buf).map_err(|_| ValidationError::new(name, "is not valid UTF-8").into())
}
