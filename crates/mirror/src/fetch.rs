//! One asset fetched: the release's checksums file and the asset's bundle read (small and
//! bounded), then the asset streamed into the package manager's upload.

use agentpkg_model::{
    Actor, Checksum, Coordinates, Description, DetachedSignature, FileName, SignatureBytes,
    SignatureFormat,
};
use agentpkg_packagemgr::{Error as MgrError, UploadMeta};
use futures_util::TryStreamExt;

use crate::{Mirror, Source, config};

impl Mirror {
    /// Downloads one asset with its bundle, and publishes it through the package manager.
    pub(crate) async fn fetch(
        &self,
        source: &Source,
        coordinates: &Coordinates,
        url: &str,
        checksums: &mut Option<Vec<(String, String)>>,
        actor: &Actor,
    ) -> Result<i64, String> {
        let version = coordinates.version.to_string();
        if checksums.is_none() {
            let url = config::fill(
                &source.checksums_url,
                &version,
                coordinates.platform,
                coordinates.arch,
            );
            let text = self.small(&url).await?;
            *checksums = Some(parse_checksums(&String::from_utf8_lossy(&text)));
        }
        let file = url.rsplit('/').next().unwrap_or_default().to_owned();
        let expected = checksums
            .iter()
            .flatten()
            .find(|(_, name)| *name == file)
            .map(|(sum, _)| sum.clone())
            .ok_or_else(|| format!("{file} is not in the release's checksums file"))?;
        let expected = Checksum::parse(&expected)
            .map_err(|_| format!("the checksums file lists {file} with a malformed SHA-256"))?;
        let bundle_url = config::fill(
            &source.bundle_url,
            &version,
            coordinates.platform,
            coordinates.arch,
        );
        let bundle = self.small(&bundle_url).await?;
        let signature = DetachedSignature {
            format: SignatureFormat::SigstoreBundle,
            bytes: SignatureBytes::new(bundle).map_err(|e| format!("{bundle_url}: {e}"))?,
        };
        let res = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("the download of {url} broke off: {e}"))?;
        if !res.status().is_success() {
            return Err(format!("{url} answered {}", res.status()));
        }
        let size = res.content_length();
        let body =
            tokio_util::io::StreamReader::new(res.bytes_stream().map_err(std::io::Error::other));
        let meta = UploadMeta {
            coordinates: coordinates.clone(),
            filename: FileName::parse(&file).ok(),
            description: Description::parse(&format!("mirrored from {url}")).unwrap_or_default(),
            expected_sha256: Some(expected),
            publisher: Some(actor.clone()),
            signature: Some(signature),
            size,
            republish: false,
        };
        match self.packages.upload(meta, body).await {
            Ok(package) => Ok(package.id),
            Err(MgrError::Body(e)) => Err(format!("the download of {url} broke off: {e}")),
            Err(MgrError::ChecksumMismatch { expected, actual }) => Err(format!(
                "the bytes do not match the release's checksums file (it lists {expected}, \
                 the download hashes to {actual})"
            )),
            Err(e) => Err(e.to_string()),
        }
    }

    /// A small file (a bundle, a checksums file): at most 1 MiB.
    async fn small(&self, url: &str) -> Result<Vec<u8>, String> {
        const LIMIT: usize = 1024 * 1024;
        let res = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("the download of {url} broke off: {e}"))?;
        if !res.status().is_success() {
            return Err(format!("{url} answered {}", res.status()));
        }
        let mut out = Vec::new();
        let mut stream = res.bytes_stream();
        while let Some(chunk) = stream.try_next().await.map_err(|e| format!("{url}: {e}"))? {
            if out.len() + chunk.len() > LIMIT {
                return Err(format!("{url} is larger than {LIMIT} bytes"));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}

/// `<sha256>  <file name>` lines (`sha256sum`'s format; a `*` before the name allowed).
fn parse_checksums(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let (sum, name) = line.trim().split_once(char::is_whitespace)?;
            Some((
                sum.to_ascii_lowercase(),
                name.trim().trim_start_matches('*').to_owned(),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_files_are_read_as_sha256sum_writes_them() {
        let text = "ABCD  otelcol_0.1.0_linux_amd64.tar.gz\nef01 *otelcol_0.1.0_windows_amd64.zip\n\nbad\n";
        assert_eq!(
            parse_checksums(text),
            vec![
                ("abcd".into(), "otelcol_0.1.0_linux_amd64.tar.gz".into()),
                ("ef01".into(), "otelcol_0.1.0_windows_amd64.zip".into()),
            ]
        );
    }
}
