//! What each agent is offered: the assignments that select it, resolved to the builds for
//! its platform, with stable hashes.

use std::collections::BTreeMap;

use agentpkg_model::{
    Agent, Arch, Assignment, Coordinates, LatestQuery, OfferedSignature, Package, Platform,
    SignatureFormat, VersionChoice,
};
use agentpkg_packagemgr::{Credential, Error, Holder, PackageManager};
use sha2::{Digest, Sha256};

use crate::proto::{DownloadableFile, Header, Headers, PackageAvailable, PackageType};
use crate::rollout::Members;

/// Gives the headers that let an agent download one package, and nothing else, for a
/// while and only while the agent's own credential (`holder`) holds — never that
/// credential itself.
pub trait DownloadCredentials: Send + Sync + 'static {
    fn headers(&self, package_id: i64, holder: Holder) -> Vec<(String, String)>;
}

/// The desired set of one agent.
#[derive(Debug, Default)]
pub(crate) struct Offer {
    pub(crate) packages: BTreeMap<String, PackageAvailable>,
    /// Whether any assignment selects the agent (then the set is sent even when empty).
    pub(crate) selected: bool,
    /// Why something selected is not offered.
    pub(crate) note: Option<String>,
    /// For each name offered: the assignment it comes from and the version offered, for
    /// the rollout guard.
    pub(crate) sources: BTreeMap<String, (i64, String)>,
}

impl Offer {
    /// Hash of the whole set: of each name and its package's hash, in name order.
    pub(crate) fn all_packages_hash(&self) -> Vec<u8> {
        let mut h = Sha256::new();
        h.update(b"agentpkg all packages v1\0");
        for (name, p) in &self.packages {
            h.update(name.as_bytes());
            h.update([0]);
            h.update(&p.hash);
        }
        h.finalize().to_vec()
    }
}

/// The platform and architecture an agent runs on, from OpenTelemetry's `os.type` and
/// `host.arch` (or Go's `GOOS`/`GOARCH` names).
pub(crate) fn platform_of(
    attributes: &BTreeMap<String, String>,
) -> Result<(Platform, Arch), String> {
    let os = attributes
        .get("os.type")
        .ok_or("the agent reports no os.type attribute")?;
    let platform = match os.as_str() {
        "linux" => Platform::Linux,
        "windows" => Platform::Windows,
        "darwin" | "macos" => Platform::Darwin,
        other => return Err(format!("os.type {other:?} has no builds here")),
    };
    let arch = attributes
        .get("host.arch")
        .ok_or("the agent reports no host.arch attribute")?;
    let arch = match arch.as_str() {
        "amd64" | "x86_64" => Arch::Amd64,
        "arm64" | "aarch64" => Arch::Arm64,
        "x86" | "386" | "i386" | "i686" => Arch::I386,
        other => return Err(format!("host.arch {other:?} has no builds here")),
    };
    Ok((platform, arch))
}

/// Whether the agent is among the first `percent` of 100 for this assignment: a hash of
/// its uid and the assignment's id, so raising the percentage only adds agents.
pub(crate) fn in_rollout(agent: &Agent, assignment: &Assignment) -> bool {
    let mut h = Sha256::new();
    h.update(agent.uid.as_bytes());
    h.update(assignment.id.to_be_bytes());
    let digest = h.finalize();
    let bucket = u64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8])) % 10_000;
    bucket < u64::from(assignment.rollout_percent) * 100
}

/// Whether every attribute of the selector is the agent's, with that value.
pub(crate) fn selects(assignment: &Assignment, attributes: &BTreeMap<String, String>) -> bool {
    assignment
        .selector
        .iter()
        .all(|(k, v)| attributes.get(k) == Some(v))
}

/// The build an assignment gives a platform, if there is one.
async fn resolve(
    packages: &PackageManager,
    assignment: &Assignment,
    platform: Platform,
    arch: Arch,
) -> Result<Option<Package>, Error> {
    let latest = |requirement| LatestQuery {
        name: assignment.package.clone(),
        platform,
        arch,
        requirement,
        include_prerelease: false,
    };
    let found = match &assignment.version {
        VersionChoice::Latest => packages.latest(&latest(None)).await,
        VersionChoice::Matching(r) => packages.latest(&latest(Some(r.clone()))).await,
        VersionChoice::Exact(v) => {
            packages
                .find(&Coordinates {
                    name: assignment.package.clone(),
                    version: v.clone(),
                    platform,
                    arch,
                })
                .await
        }
    };
    match found {
        Ok(p) => Ok(Some(p)),
        Err(Error::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The agent's desired set: for each name offered, the oldest assignment that selects it
/// and has it in its rollout, resolved for its platform — among the assignments whose
/// package the agent's credential may read (`names`): an agent never learns of, nor is
/// handed a download for, a package its credential could not fetch itself.
///
/// An agent a progressive rollout moved (`members`) is offered the rollout's version, or
/// while it is reverted, the version it reported before; other agents the assignment's
/// own version.
pub(crate) async fn desired(
    packages: &PackageManager,
    credentials: &dyn DownloadCredentials,
    agent: &Agent,
    assignments: &[Assignment],
    members: &Members,
    credential: &Credential,
    base_url: &str,
) -> Result<Offer, Error> {
    let names = &credential.names;
    let mut attributes = agent.non_identifying.clone();
    attributes.extend(agent.identifying.clone());
    let mut offer = Offer::default();
    let (selecting, out_of_reach): (Vec<&Assignment>, Vec<&Assignment>) = assignments
        .iter()
        .filter(|a| selects(a, &attributes))
        .partition(|a| names.allows(&a.package));
    let mut notes: Vec<String> = out_of_reach
        .iter()
        .map(|a| {
            format!(
                "assignment {}: the agent's credential may not read {}",
                a.id, a.package
            )
        })
        .collect();
    if selecting.is_empty() {
        // Selected only by assignments out of reach: nothing is offered, and no empty set
        // tells the agent to remove what it has.
        offer.note = (!notes.is_empty()).then(|| notes.join("; "));
        return Ok(offer);
    }
    offer.selected = true;
    let (platform, arch) = match platform_of(&attributes) {
        Ok(p) => p,
        Err(why) => {
            notes.insert(0, why);
            offer.note = Some(notes.join("; "));
            return Ok(offer);
        }
    };
    for assignment in selecting {
        if offer.packages.contains_key(&assignment.offer_as) {
            continue;
        }

        let has = agent
            .package_statuses
            .iter()
            .find(|s| s.name == assignment.offer_as && !s.agent_has_version.is_empty())
            .map(|s| s.agent_has_version.as_str());
        let member = assignment.rollout_id.and_then(|r| members.get(&r));
        let mut attempt = 1;
        let resolved = if let Some(m) = member {
            let version = if m.member.phase.reverts() {
                // Nothing before: the assignment's own (stable) version.
                agentpkg_model::Version::parse(&m.member.previous_version).ok()
            } else {
                attempt = m.member.attempts;
                Some(m.rollout.version.clone())
            };
            let pinned = match version {
                Some(version) => {
                    let pinned = Assignment {
                        version: VersionChoice::Exact(version),
                        ..assignment.clone()
                    };
                    resolve(packages, &pinned, platform, arch).await?
                }
                None => None,
            };
            // A version before that is no longer stored: the stable one.
            match pinned {
                Some(p) => Some(p),
                None => resolve(packages, assignment, platform, arch).await?,
            }
        } else if assignment.paused.is_some() || !in_rollout(agent, assignment) {
            // Not (or no longer) rolled out to this agent: it keeps the version it has, when
            // that is a build of this package, rather than be told to remove it.
            match has.map(|v| v.trim_start_matches('v')) {
                Some(version) => {
                    let Ok(version) = agentpkg_model::Version::parse(version) else {
                        continue;
                    };
                    let pinned = Assignment {
                        version: VersionChoice::Exact(version),
                        ..assignment.clone()
                    };
                    resolve(packages, &pinned, platform, arch).await?
                }
                None => continue,
            }
        } else {
            resolve(packages, assignment, platform, arch).await?
        };
        let Some(package) = resolved else {
            notes.push(format!(
                "assignment {}: no {} {} build for {}/{}",
                assignment.id,
                assignment.package,
                assignment.version,
                platform.as_str(),
                arch.as_str()
            ));
            continue;
        };
        let signature = match offered_signature(packages, &package, assignment.signature).await? {
            Ok(bytes) => bytes,
            Err(why) => {
                notes.push(format!("assignment {}: {why}", assignment.id));
                continue;
            }
        };
        let headers = credentials.headers(package.id, credential.holder());
        let available = available(&package, assignment, signature, headers, base_url, attempt);
        offer.sources.insert(
            assignment.offer_as.clone(),
            (assignment.id, available.version.clone()),
        );
        offer
            .packages
            .insert(assignment.offer_as.clone(), available);
    }
    if !notes.is_empty() {
        offer.note = Some(notes.join("; "));
    }
    Ok(offer)
}

/// The signature bytes an assignment's agents verify, or why the package has none to give.
async fn offered_signature(
    packages: &PackageManager,
    package: &Package,
    wanted: OfferedSignature,
) -> Result<Result<Vec<u8>, String>, Error> {
    if wanted == OfferedSignature::None {
        return Ok(Ok(Vec::new()));
    }
    let stored = match &package.signature {
        Some(_) => Some(packages.signature(package).await?),
        None => None,
    };
    let which = || format!("{} {}", package.name, package.version);
    Ok(match (wanted, stored) {
        (OfferedSignature::Stored, stored) => Ok(stored.map(|(_, b)| b).unwrap_or_default()),
        (OfferedSignature::Openpgp, Some((SignatureFormat::Openpgp, b)))
        | (OfferedSignature::SigstoreBundle, Some((SignatureFormat::SigstoreBundle, b)))
        | (OfferedSignature::CosignCertSig, Some((SignatureFormat::Cosign, b))) => Ok(b),
        (OfferedSignature::CosignCertSig, Some((SignatureFormat::SigstoreBundle, b))) => {
            agentpkg_packagemgr::cosign_cert_sig(&b).map_err(|e| format!("{}: {e}", which()))
        }
        (wanted, Some((have, _))) => Err(format!(
            "{} has a {have} signature, not the {wanted} signature its agents verify",
            which()
        )),
        (wanted, None) => Err(format!(
            "{} is not signed; its agents verify a {wanted} signature",
            which()
        )),
    })
}

fn available(
    package: &Package,
    assignment: &Assignment,
    signature: Vec<u8>,
    headers: Vec<(String, String)>,
    base_url: &str,
    attempt: u32,
) -> PackageAvailable {
    let version = if assignment.v_prefix {
        format!("v{}", package.version)
    } else {
        package.version.to_string()
    };
    let kind = if assignment.offer_as.is_empty() {
        PackageType::TopLevel
    } else {
        PackageType::Addon
    };
    let content_hash = package.checksum.digest().to_vec();
    // The offered fields and content, never the short-lived headers: the same package
    // gives the same hash on every replica and after restarts.
    let mut h = Sha256::new();
    h.update(b"agentpkg package v1\0");
    h.update(assignment.offer_as.as_bytes());
    h.update([0, kind as u8, 0]);
    h.update(version.as_bytes());
    h.update([0]);
    h.update(&content_hash);
    h.update([0]);
    h.update(&signature);
    // A failed install offered again by a rollout: another hash, so the agent tries again.
    if attempt > 1 {
        h.update(b"\0attempt\0");
        h.update(attempt.to_be_bytes());
    }
    let hash = h.finalize().to_vec();
    PackageAvailable {
        r#type: kind as i32,
        version,
        file: Some(DownloadableFile {
            download_url: format!(
                "{}/api/v1/packages/{}/{}/{}/{}/download",
                base_url.trim_end_matches('/'),
                package.name,
                package.version,
                package.platform.as_str(),
                package.arch.as_str()
            ),
            content_hash,
            signature,
            headers: Some(Headers {
                headers: headers
                    .into_iter()
                    .map(|(key, value)| Header { key, value })
                    .collect(),
            }),
        }),
        hash,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn platforms_follow_opentelemetry_and_go_names() {
        for (os, arch, expected) in [
            ("linux", "amd64", (Platform::Linux, Arch::Amd64)),
            ("linux", "x86_64", (Platform::Linux, Arch::Amd64)),
            ("windows", "x86", (Platform::Windows, Arch::I386)),
            ("linux", "386", (Platform::Linux, Arch::I386)),
            ("darwin", "arm64", (Platform::Darwin, Arch::Arm64)),
        ] {
            assert_eq!(
                platform_of(&attrs(&[("os.type", os), ("host.arch", arch)])).unwrap(),
                expected
            );
        }
        assert!(
            platform_of(&attrs(&[("os.type", "linux")]))
                .unwrap_err()
                .contains("host.arch")
        );
        assert!(platform_of(&attrs(&[("os.type", "linux"), ("host.arch", "s390x")])).is_err());
        assert!(platform_of(&attrs(&[("os.type", "plan9"), ("host.arch", "amd64")])).is_err());
    }

    fn assignment(id: i64, percent: u8) -> Assignment {
        Assignment {
            id,
            package: agentpkg_model::PackageName::parse("otelcol").unwrap(),
            version: VersionChoice::Latest,
            offer_as: String::new(),
            selector: attrs(&[("service.name", "otelcol")]),
            rollout_percent: percent,
            max_failure_ratio: 0.2,
            v_prefix: false,
            signature: OfferedSignature::Stored,
            paused: None,
            rollout_id: None,
            created_at: chrono::DateTime::UNIX_EPOCH,
            updated_at: chrono::DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn raising_a_rollout_only_adds_agents_and_shares_are_near_the_percentage() {
        let agents: Vec<Agent> = (0..1000u32)
            .map(|i| {
                let mut uid = [0u8; 16];
                uid[..4].copy_from_slice(&i.to_be_bytes());
                Agent::new(
                    agentpkg_model::AgentUid::from_bytes(&uid).unwrap(),
                    chrono::DateTime::UNIX_EPOCH,
                )
            })
            .collect();
        let at = |p| {
            agents
                .iter()
                .filter(|a| in_rollout(a, &assignment(7, p)))
                .map(|a| a.uid)
                .collect::<Vec<_>>()
        };
        let (twenty, fifty) = (at(20), at(50));
        assert!((150..250).contains(&twenty.len()), "{}", twenty.len());
        assert!((420..580).contains(&fifty.len()), "{}", fifty.len());
        assert!(twenty.iter().all(|u| fifty.contains(u)));
        assert_eq!(at(0).len(), 0);
        assert_eq!(at(100).len(), 1000);
    }

    #[test]
    fn selectors_need_every_attribute() {
        let a = assignment(1, 100);
        assert!(selects(
            &a,
            &attrs(&[("service.name", "otelcol"), ("x", "y")])
        ));
        assert!(!selects(&a, &attrs(&[("service.name", "other")])));
        assert!(!selects(&a, &attrs(&[])));
    }
}
