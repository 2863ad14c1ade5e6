//! Checking a fetched package's OpenPGP signature with a key the user trusts (`pgp`, the
//! same implementation the registry uses), streaming over the file.

use std::path::Path;

use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey};

use crate::Error;

fn refused(why: impl Into<String>) -> Error {
    Error::Signature(why.into())
}

/// Whether `signature` (armoured or binary) is a signature of the file at `path` by `key`
/// (an armoured or binary public key: its primary key or one of its subkeys).
pub fn verify_file(path: &Path, signature: &[u8], key: &[u8]) -> Result<(), Error> {
    let (detached, _) = DetachedSignature::from_reader_single(signature)
        .map_err(|e| refused(format!("not an OpenPGP signature: {e}")))?;
    let (key, _) = SignedPublicKey::from_reader_single(std::io::BufReader::new(key))
        .map_err(|e| refused(format!("not an OpenPGP public key: {e}")))?;
    let open = || -> Result<std::io::BufReader<std::fs::File>, Error> {
        Ok(std::io::BufReader::with_capacity(
            1024 * 1024,
            std::fs::File::open(path)?,
        ))
    };
    if detached.signature.verify(&key.primary_key, open()?).is_ok() {
        return Ok(());
    }
    for subkey in &key.public_subkeys {
        if detached.signature.verify(&subkey.key, open()?).is_ok() {
            return Ok(());
        }
    }
    Err(refused(
        "the signature does not verify with the given key: the file is not kept",
    ))
}
