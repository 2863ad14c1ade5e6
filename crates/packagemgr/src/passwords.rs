//! Password hashing (Argon2id) on a few threads of its own, behind a bounded queue.
//!
//! One hash costs about 19 MiB and tens of milliseconds of a core. Run on Tokio's blocking
//! pool, a flood of wrong passwords over many connections ran as many hashes at once as the
//! pool has threads (hundreds), each allocating its own 19 MiB, and every other request
//! waited behind them. Here at most [`HashingLimits::workers`] hashes run at once, each
//! worker reuses one buffer while jobs keep coming (so memory is `workers × 19 MiB`, flat,
//! and given back when the queue runs dry), and
//! at most [`HashingLimits::queue`] requests wait: past that a caller is refused at once
//! with [`Error::Busy`], which costs nothing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use argon2::password_hash::{Output, ParamsString, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::oneshot;

use crate::Error;

/// How many password hashes run at once, and how many may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashingLimits {
    /// Threads that hash; each holds one Argon2 buffer (19 MiB) for its life.
    pub workers: usize,
    /// Hashes that may wait for a thread; one more is refused with [`Error::Busy`].
    pub queue: usize,
}

impl Default for HashingLimits {
    /// One worker per two cores (at least one, at most
    /// [`HashingLimits::MAX_DEFAULT_WORKERS`]), and 16 waiting per worker (well under a
    /// second of work).
    fn default() -> Self {
        Self::for_cores(std::thread::available_parallelism().map_or(2, |n| n.get()))
    }
}

impl HashingLimits {
    /// Most workers chosen without being told: each holds about 19 MiB while it hashes, so
    /// one per core of a 32-core host (608 MiB) would not fit the shipped container's
    /// 512 MiB; four (76 MiB) do, and a login takes well under a second on each.
    pub const MAX_DEFAULT_WORKERS: usize = 4;

    /// The default on a host of `cores` cores: hashing never takes every core, so a flood
    /// of wrong passwords leaves at least half of them to everyone else's requests.
    pub fn for_cores(cores: usize) -> Self {
        let workers = (cores / 2).clamp(1, Self::MAX_DEFAULT_WORKERS);
        Self {
            workers,
            queue: workers * 16,
        }
    }
}

/// Stored hashes asking for more memory than this are refused rather than computed.
const MAX_M_COST_KIB: u32 = 256 * 1024;
/// The salt of the decoy computation done for an unknown username.
const DECOY_SALT: &[u8; 16] = b"agentpkg-decoy!!";

enum Work {
    /// Hash a new password: the PHC string.
    Hash(SecretString),
    /// Check a password against a stored PHC string; `None` (unknown user) costs the same
    /// and never matches.
    Verify {
        password: SecretString,
        stored: Option<String>,
    },
}

struct Job {
    work: Work,
    reply: oneshot::Sender<Result<Outcome, String>>,
}

enum Outcome {
    Hashed(String),
    Verified(bool),
}

/// The handle callers share; the workers end when the last handle is dropped.
#[derive(Clone)]
pub(crate) struct PasswordHasher {
    jobs: SyncSender<Job>,
    /// Jobs sent and not yet finished: a worker that finishes the last one gives its
    /// working memory back.
    pending: Arc<AtomicUsize>,
}

impl PasswordHasher {
    pub(crate) fn start(limits: HashingLimits) -> Self {
        let workers = limits.workers.max(1);
        let (jobs, receiver) = sync_channel(limits.queue);
        let receiver = Arc::new(Mutex::new(receiver));
        let pending = Arc::new(AtomicUsize::new(0));
        for n in 0..workers {
            let receiver = receiver.clone();
            let pending = pending.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("password-hash-{n}"))
                .spawn(move || work(&receiver, &pending));
            if let Err(e) = spawned {
                // Fewer workers only means fewer hashes at once; with none, the queue
                // fills and logins are refused as busy, which the log explains.
                tracing::error!(error = %e, "could not start a password hashing thread");
            }
        }
        Self { jobs, pending }
    }

    /// The PHC string of a new Argon2id hash of `password`, with a random salt.
    pub(crate) async fn hash(&self, password: SecretString) -> Result<String, Error> {
        match self.run(Work::Hash(password)).await? {
            Outcome::Hashed(hash) => Ok(hash),
            Outcome::Verified(_) => Err(Error::Internal("hasher answered a verify".into())),
        }
    }

    /// Whether `password` matches `stored`; with no stored hash, the same work is done and
    /// the answer is no, so that an unknown username takes as long as a wrong password.
    pub(crate) async fn verify(
        &self,
        password: SecretString,
        stored: Option<String>,
    ) -> Result<bool, Error> {
        match self.run(Work::Verify { password, stored }).await? {
            Outcome::Verified(ok) => Ok(ok),
            Outcome::Hashed(_) => Err(Error::Internal("hasher answered a hash".into())),
        }
    }

    async fn run(&self, work: Work) -> Result<Outcome, Error> {
        let (reply, answer) = oneshot::channel();
        self.pending.fetch_add(1, Ordering::SeqCst);
        let sent = self.jobs.try_send(Job { work, reply });
        if sent.is_err() {
            self.pending.fetch_sub(1, Ordering::SeqCst);
        }
        match sent {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(Error::Busy),
            Err(TrySendError::Disconnected(_)) => {
                return Err(Error::Internal(
                    "no password hashing thread is running".into(),
                ));
            }
        }
        answer
            .await
            .map_err(|_| Error::Internal("a password hashing thread stopped".into()))?
            .map_err(|e| Error::Internal(format!("password hashing failed: {e}")))
    }
}

fn work(receiver: &Mutex<Receiver<Job>>, pending: &AtomicUsize) {
    let mut blocks: Vec<Block> = Vec::new();
    loop {
        let job = {
            let Ok(receiver) = receiver.lock() else {
                return;
            };
            match receiver.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        // A caller that went away (a closed connection) costs no hash.
        if !job.reply.is_closed() {
            let outcome = match job.work {
                Work::Hash(password) => {
                    hash_new(password.expose_secret().as_bytes(), &mut blocks).map(Outcome::Hashed)
                }
                Work::Verify { password, stored } => verify(
                    password.expose_secret().as_bytes(),
                    stored.as_deref(),
                    &mut blocks,
                )
                .map(Outcome::Verified),
            };
            // NOTE: the caller may have gone since; nobody is left to tell.
            let _ = job.reply.send(outcome);
        }
        // The last job done: the working memory goes back to the system, so a server that
        // saw a login does not keep `workers × 19 MiB` resident for ever. Under a burst
        // more jobs wait and the buffer is reused.
        if pending.fetch_sub(1, Ordering::SeqCst) == 1 {
            blocks = Vec::new();
        }
    }
}

/// Runs Argon2 in `blocks`, sized to the parameters (resized only when they change).
fn compute(
    argon: &Argon2<'_>,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
    blocks: &mut Vec<Block>,
) -> Result<(), String> {
    let needed = argon.params().block_count();
    if blocks.len() != needed {
        *blocks = vec![Block::default(); needed];
    }
    argon
        .hash_password_into_with_memory(password, salt, out, &mut blocks[..])
        .map_err(|e| e.to_string())
}

fn hash_new(password: &[u8], blocks: &mut Vec<Block>) -> Result<String, String> {
    let params = Params::default();
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let salt: [u8; 16] = rand::random();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    compute(&argon, password, &salt, &mut out, blocks)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| e.to_string())?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| e.to_string())?),
    };
    Ok(phc.to_string())
}

fn verify(password: &[u8], stored: Option<&str>, blocks: &mut Vec<Block>) -> Result<bool, String> {
    let Some(stored) = stored else {
        let argon = Argon2::default();
        let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
        compute(&argon, password, DECOY_SALT, &mut out, blocks)?;
        return Ok(false);
    };
    let parsed = PasswordHash::new(stored).map_err(|e| format!("stored hash: {e}"))?;
    let algorithm = Algorithm::try_from(parsed.algorithm).map_err(|e| e.to_string())?;
    let version = parsed
        .version
        .map(Version::try_from)
        .transpose()
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let params = Params::try_from(&parsed).map_err(|e| e.to_string())?;
    if params.m_cost() > MAX_M_COST_KIB {
        return Err(format!("stored hash asks for {} KiB", params.m_cost()));
    }
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Err("stored hash has no salt or no output".into());
    };
    let mut salt_buf = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_buf).map_err(|e| e.to_string())?;
    let mut out = vec![0u8; expected.len()];
    compute(
        &Argon2::new(algorithm, version, params),
        password,
        salt,
        &mut out,
        blocks,
    )?;
    let computed = Output::new(&out).map_err(|e| e.to_string())?;
    // `Output`'s equality is constant-time.
    Ok(computed == expected)
}

#[cfg(test)]
mod default_tests {
    use super::HashingLimits;

    #[test]
    fn the_default_hashing_memory_fits_the_shipped_container_on_any_host() {
        for cores in [1, 2, 4, 32, 128] {
            let limits = HashingLimits::for_cores(cores);
            // About 19 MiB per worker, well under deploy/docker-compose.yml's 512 MiB.
            assert!(limits.workers * 19 <= 128, "{cores} cores: {limits:?}");
            assert!(limits.workers >= 1 && limits.queue == limits.workers * 16);
        }
        // Half the cores at most, so that hashing never takes all of them.
        assert_eq!(HashingLimits::for_cores(1).workers, 1);
        assert_eq!(HashingLimits::for_cores(2).workers, 1);
        assert_eq!(HashingLimits::for_cores(4).workers, 2);
        assert_eq!(HashingLimits::for_cores(32).workers, 4);
    }
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};

    use super::*;

    fn hasher(workers: usize, queue: usize) -> PasswordHasher {
        PasswordHasher::start(HashingLimits { workers, queue })
    }

    #[tokio::test]
    async fn a_hash_verifies_with_its_password_only() {
        let h = hasher(1, 4);
        let hash = h.hash("correct horse battery".into()).await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(
            h.verify("correct horse battery".into(), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(
            !h.verify("correct horse batterz".into(), Some(hash))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn hashes_are_interchangeable_with_the_argon2_crate() {
        let h = hasher(1, 4);
        // Made by the crate (as every stored hash before this module was).
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let theirs = Argon2::default()
            .hash_password(b"a password of theirs", &salt)
            .unwrap()
            .to_string();
        assert!(
            h.verify("a password of theirs".into(), Some(theirs.clone()))
                .await
                .unwrap()
        );
        assert!(
            !h.verify("a password of ours".into(), Some(theirs))
                .await
                .unwrap()
        );
        // Made here, checked by the crate.
        let ours = h.hash("a password of ours".into()).await.unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"a password of ours", &parsed)
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"another", &parsed)
                .is_err()
        );
    }

    #[tokio::test]
    async fn an_unknown_user_never_matches() {
        let h = hasher(1, 4);
        assert!(!h.verify("anything at all".into(), None).await.unwrap());
    }

    #[tokio::test]
    async fn a_corrupt_stored_hash_is_an_error_not_a_match() {
        let h = hasher(1, 4);
        let err = h.verify("x".into(), Some("not a phc string".into())).await;
        assert!(matches!(err, Err(Error::Internal(_))), "{err:?}");
    }

    #[tokio::test]
    async fn past_the_queue_callers_are_refused_at_once() {
        // One worker, one waiting place: of many hashes asked at once, the ones that find
        // both taken are refused as busy instead of queueing without end.
        let h = hasher(1, 1);
        let calls: Vec<_> = (0..12)
            .map(|_| {
                let h = h.clone();
                tokio::spawn(async move { h.verify("wrong password".into(), None).await })
            })
            .collect();
        let mut busy = 0;
        let mut done = 0;
        for call in calls {
            match call.await.unwrap() {
                Ok(false) => done += 1,
                Err(Error::Busy) => busy += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(done >= 1, "at least the first is computed");
        assert!(busy >= 1, "some must be refused: {done} computed");
        assert_eq!(done + busy, 12);
    }
}
