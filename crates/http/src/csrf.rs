//! The web interface's session cookie and the CSRF token a cookie-signed request that
//! changes something must carry.

/// The cookie holding the web interface's session token.
pub const SESSION_COOKIE: &str = "agentpkg_session";
/// The header a cookie-authenticated request that changes something must carry.
pub const CSRF_HEADER: &str = "X-CSRF-Token";

/// The CSRF token of a session: derived from the session token, which only the session's
/// own pages (served with it) and the `HttpOnly` cookie know.
pub fn csrf_token(session: &str) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"agentpkg csrf v1\0");
    h.update(session.as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// Whether `given` is `expected`, compared in constant time.
pub fn csrf_matches(expected: &str, given: &str) -> bool {
    expected.len() == given.len()
        && expected
            .bytes()
            .zip(given.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}
