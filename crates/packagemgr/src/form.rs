//! An upload whose fields arrive one at a time, in any order, the file among them (a
//! multipart form): each field is checked as it arrives, whatever is known when the file
//! begins is checked before a byte of it is stored, and the staged bytes belong to the
//! upload until [`FormUpload::finish`] publishes them.

use agentpkg_model::{
    Actor, Arch, Checksum, Coordinates, Description, DetachedSignature, FileName, Package,
    PackageName, Platform, SignatureBytes, SignatureFormat, ValidationError, Version,
};

use tokio::io::AsyncRead;

use crate::{Error, PackageManager, StagedUpload, UploadMeta};

/// One text field of a form upload, parsed by the caller.
#[derive(Debug, Clone)]
pub enum FormField {
    Name(PackageName),
    Version(Version),
    Platform(Platform),
    Arch(Arch),
    Description(Description),
    /// The SHA-256 the file must have.
    Sha256(Checksum),
    /// A detached signature of the file.
    Signature(SignatureBytes),
    /// The signature's format (OpenPGP when not given).
    SignatureFormat(SignatureFormat),
    /// Publish although another version of the name has these bytes (admins).
    Republish(bool),
}

impl FormField {
    /// The field's name, as a form sends it.
    pub fn name(&self) -> &'static str {
        match self {
            FormField::Name(_) => "name",
            FormField::Version(_) => "version",
            FormField::Platform(_) => "platform",
            FormField::Arch(_) => "arch",
            FormField::Description(_) => "description",
            FormField::Sha256(_) => "sha256",
            FormField::Signature(_) => "signature",
            FormField::SignatureFormat(_) => "signature_format",
            FormField::Republish(_) => "republish",
        }
    }
}

/// A form upload in progress ([`PackageManager::form_upload`]).
pub struct FormUpload<'m> {
    mgr: &'m PackageManager,
    publisher: Actor,
    name: Option<PackageName>,
    version: Option<Version>,
    platform: Option<Platform>,
    arch: Option<Arch>,
    description: Option<Description>,
    sha256: Option<Checksum>,
    signature: Option<SignatureBytes>,
    signature_format: Option<SignatureFormat>,
    republish: Option<bool>,
    filename: Option<FileName>,
    staged: Option<StagedUpload>,
}

impl PackageManager {
    /// Starts an upload by `publisher` whose fields arrive one at a time.
    pub fn form_upload(&self, publisher: Actor) -> FormUpload<'_> {
        FormUpload {
            mgr: self,
            publisher,
            name: None,
            version: None,
            platform: None,
            arch: None,
            description: None,
            sha256: None,
            signature: None,
            signature_format: None,
            republish: None,
            filename: None,
            staged: None,
        }
    }
}

impl FormUpload<'_> {
    /// Takes one text field. A field sent twice is refused; a name the publisher may not
    /// publish to (out of its token's names, or not its own) is refused on arrival.
    pub async fn field(&mut self, field: FormField) -> Result<(), Error> {
        let name = field.name();
        match field {
            FormField::Name(v) => {
                self.mgr.ensure_may_act(&v, &self.publisher).await?;
                set(&mut self.name, name, v)
            }
            FormField::Version(v) => set(&mut self.version, name, v),
            FormField::Platform(v) => set(&mut self.platform, name, v),
            FormField::Arch(v) => set(&mut self.arch, name, v),
            FormField::Description(v) => set(&mut self.description, name, v),
            FormField::Sha256(v) => set(&mut self.sha256, name, v),
            FormField::Signature(v) => set(&mut self.signature, name, v),
            FormField::SignatureFormat(v) => set(&mut self.signature_format, name, v),
            FormField::Republish(v) => set(&mut self.republish, name, v),
        }
    }

    /// Stores the file's bytes as `body` delivers them. Before the first byte, what the
    /// fields so far allow is checked: coordinates already taken, a signature that cannot
    /// verify.
    pub async fn file<R>(&mut self, filename: Option<FileName>, body: R) -> Result<(), Error>
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        if self.staged.is_some() {
            return Err(Error::DuplicateField("file"));
        }
        self.filename = filename;
        if let Some(coordinates) = self.coordinates() {
            self.mgr.ensure_absent(&coordinates).await?;
        }
        let signature = self.detached_signature();
        if let (Some(name), Some(signature)) = (&self.name, &signature) {
            self.mgr.judge_signature(name, Some(signature)).await?;
        }
        self.staged = Some(self.mgr.stage_for(body, signature.as_ref()).await?);
        Ok(())
    }

    /// Publishes the file with the fields (every required one must have come). The
    /// checksum a header announced must agree with the form's. On any failure the
    /// staged bytes are deleted.
    pub async fn finish(mut self, header_sha256: Option<Checksum>) -> Result<Package, Error> {
        let meta = self.meta(header_sha256);
        let staged = self.staged.take();
        match (meta, staged) {
            (Ok(meta), Some(staged)) => self.mgr.publish(staged, meta).await,
            (Ok(_), None) => Err(Error::MissingField("file")),
            (Err(e), staged) => {
                if let Some(staged) = staged {
                    staged.discard().await;
                }
                Err(e)
            }
        }
    }

    /// Gives the upload up, deleting whatever bytes were staged (and waiting for it).
    pub async fn abandon(mut self) {
        if let Some(staged) = self.staged.take() {
            staged.discard().await;
        }
    }

    fn detached_signature(&self) -> Option<DetachedSignature> {
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

    fn meta(&mut self, header_sha256: Option<Checksum>) -> Result<UploadMeta, Error> {
        let expected_sha256 = match (self.sha256.take(), header_sha256) {
            (Some(a), Some(b)) if a != b => {
                return Err(ValidationError::new(
                    "sha256",
                    "the sha256 field and the X-Checksum-Sha256 header disagree",
                )
                .into());
            }
            (a, b) => a.or(b),
        };
        if self.signature_format.is_some() && self.signature.is_none() {
            return Err(Error::MissingField("signature"));
        }
        let signature = self.detached_signature();
        Ok(UploadMeta {
            signature,
            size: None,
            coordinates: Coordinates {
                name: self.name.take().ok_or(Error::MissingField("name"))?,
                version: self.version.take().ok_or(Error::MissingField("version"))?,
                platform: self
                    .platform
                    .take()
                    .ok_or(Error::MissingField("platform"))?,
                arch: self.arch.take().ok_or(Error::MissingField("arch"))?,
            },
            filename: self.filename.take(),
            description: self.description.take().unwrap_or_default(),
            expected_sha256,
            publisher: Some(self.publisher.clone()),
            republish: self.republish.unwrap_or(false),
        })
    }
}

fn set<T>(slot: &mut Option<T>, field: &'static str, value: T) -> Result<(), Error> {
    if slot.is_some() {
        return Err(Error::DuplicateField(field));
    }
    *slot = Some(value);
    Ok(())
}
