//! The upload form, read field by field as it streams: each text field is parsed and handed
//! to the package manager's [`FormUpload`] as it arrives, and the file goes to it as it
//! arrives. The rules (what is checked when, who owns the staged bytes) are the package
//! manager's.

use actix_multipart::{Field, Multipart};
use agentpkg_model::{
    Checksum, Description, ErrorCode, FileName, MAX_SIGNATURE_BYTES, PackageName, SignatureBytes,
    ValidationError, Version,
};
use agentpkg_packagemgr::{FormField, FormUpload, body_channel};
use futures_util::{StreamExt, TryStreamExt};

use super::body::{BODY_CHANNEL_CHUNKS, pump};
use crate::ApiError;

/// Largest text field: a 4096-character description in UTF-8, with margin.
const MAX_TEXT_FIELD: usize = 20 * 1024;

/// Reads the whole form into `upload`.
pub(super) async fn read(
    upload: &mut FormUpload<'_>,
    multipart: &mut Multipart,
) -> Result<(), ApiError> {
    while let Some(field) = multipart.try_next().await.map_err(malformed)? {
        let name = field.name().unwrap_or_default().to_owned();
        let parsed = match name.as_str() {
            "file" => {
                let filename = field
                    .content_disposition()
                    .and_then(|cd| cd.get_filename())
                    .filter(|f| !f.is_empty())
                    .map(FileName::parse)
                    .transpose()?;
                let (tx, rx) = body_channel(BODY_CHANNEL_CHUNKS);
                let ((), stored) =
                    futures_util::future::join(pump(field, tx), upload.file(filename, rx)).await;
                stored?;
                continue;
            }
            "name" => FormField::Name(PackageName::parse(&text(field, "name").await?)?),
            "version" => FormField::Version(Version::parse(&text(field, "version").await?)?),
            "platform" => FormField::Platform(text(field, "platform").await?.parse()?),
            "arch" => FormField::Arch(text(field, "arch").await?.parse()?),
            "description" => {
                FormField::Description(Description::parse(&text(field, "description").await?)?)
            }
            "signature" => FormField::Signature(signature_field(field).await?),
            "signature_format" => {
                FormField::SignatureFormat(text(field, "signature_format").await?.trim().parse()?)
            }
            "sha256" => FormField::Sha256(Checksum::parse(text(field, "sha256").await?.trim())?),
            "republish" => FormField::Republish(match text(field, "republish").await?.trim() {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(ValidationError::new("republish", "must be true or false").into());
                }
            }),
            _ => {
                return Err(ApiError::new(
                    ErrorCode::UnknownField,
                    format!(
                        "unknown form field {:?}; expected file, name, version, platform, arch, description, sha256, signature, signature_format, republish",
                        truncate(&name, 64)
                    ),
                ));
            }
        };
        upload.field(parsed).await?;
    }
    Ok(())
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
