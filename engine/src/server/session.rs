//! Console sessions on the wire: the session cookie, and the CSRF token
//! a cookie-authenticated change must carry (a leaf: the principal
//! extractor and the console both use it).

use axum::http::{HeaderMap, StatusCode, header};
use sha2::{Digest, Sha256};

use super::error::ApiError;

/// The cookie that carries the signed-in token.
pub const SESSION_COOKIE: &str = "firedrill_session";
/// The header a cookie-authenticated state-changing request must carry.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The CSRF token for a session: derived from the session id, so it needs
/// no state and cannot be computed without the session.
pub fn csrf_for(session: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"firedrill-console-csrf\0");
    h.update(session.as_bytes());
    hex::encode(h.finalize())
}

/// The session id in the session cookie, if any.
pub fn session_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

/// A request authenticated by the session cookie that changes state must
/// carry the session's CSRF token in `X-CSRF-Token`.
pub fn check_csrf(headers: &HeaderMap, token: &str) -> Result<(), ApiError> {
    let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    if sent.is_some_and(|s| constant_time_eq(s.as_bytes(), csrf_for(token).as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf",
            "this request changes state and came with the console's session cookie but without its X-CSRF-Token; reload the console page and try again",
        ))
    }
}

pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; firedrill_session=fdt_abc ; b=2"),
        );
        assert_eq!(session_token(&h), Some("fdt_abc"));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("firedrill_session="),
        );
        assert_eq!(session_token(&h), None, "an emptied cookie is no session");
    }

    #[test]
    fn csrf_must_match_the_session() {
        let mut h = HeaderMap::new();
        assert!(check_csrf(&h, "fdt_one").is_err(), "missing");
        h.insert(
            CSRF_HEADER,
            HeaderValue::from_str(&csrf_for("fdt_two")).expect("hex"),
        );
        assert!(check_csrf(&h, "fdt_one").is_err(), "another session's");
        assert!(check_csrf(&h, "fdt_two").is_ok());
        assert_ne!(csrf_for("fdt_one"), csrf_for("fdt_two"));
    }
}
