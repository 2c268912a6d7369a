//! Finding the tenant's API key in the request headers: the same rules in the filter (which
//! refuses unusable keys without a callout) and in the control-plane's own key-authenticated
//! endpoints (usage, billing).
//!
//! The key comes from the configured header (`x-api-key` by default) or, when enabled, from
//! `Authorization: Bearer <key>`. Anything the control-plane could never accept is refused here,
//! with no callout: a missing or empty key, one over 256 bytes, or one with bytes outside
//! visible ASCII. The key itself never appears in an error or a log line.

use crate::MAX_API_KEY_LEN;

/// Why no usable key was found. The filter answers 401 for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the request carries no API key")]
    Missing,
    #[error("the API key is empty")]
    Empty,
    #[error("the API key is longer than 256 bytes")]
    TooLong,
    #[error("the API key contains characters other than visible ASCII")]
    InvalidCharacters,
    #[error("the Authorization header is not of the form \"Bearer <key>\"")]
    MalformedAuthorization,
}

impl KeyError {
    /// A stable machine-readable code for the JSON error body.
    pub fn code(self) -> &'static str {
        match self {
            KeyError::Missing => "missing_api_key",
            KeyError::Empty
            | KeyError::TooLong
            | KeyError::InvalidCharacters
            | KeyError::MalformedAuthorization => "malformed_api_key",
        }
    }
}

/// Picks the key from the configured header, else from a bearer `Authorization` header.
/// `authorization` is `None` when bearer keys are disabled or the header is absent. Header
/// values arrive as raw bytes: Envoy passes on bytes that are not UTF-8, and those are simply
/// an invalid key.
pub fn extract<'a>(
    key_header: Option<&'a [u8]>,
    authorization: Option<&'a [u8]>,
) -> Result<&'a str, KeyError> {
    let key = match (key_header, authorization) {
        (Some(key), _) => key,
        (None, Some(authorization)) => bearer_token(authorization)?,
        (None, None) => return Err(KeyError::Missing),
    };
    validate(key.trim_ascii())
}

fn bearer_token(authorization: &[u8]) -> Result<&[u8], KeyError> {
    let authorization = authorization.trim_ascii_start();
    let space = authorization
        .iter()
        .position(|b| *b == b' ')
        .ok_or(KeyError::MalformedAuthorization)?;
    let (scheme, token) = authorization.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(KeyError::MalformedAuthorization);
    }
    Ok(token)
}

fn validate(key: &[u8]) -> Result<&str, KeyError> {
    if key.is_empty() {
        Err(KeyError::Empty)
    } else if key.len() > MAX_API_KEY_LEN {
        Err(KeyError::TooLong)
    } else if !key.iter().all(u8::is_ascii_graphic) {
        Err(KeyError::InvalidCharacters)
    } else {
        // Visible ASCII is UTF-8.
        std::str::from_utf8(key).map_err(|_| KeyError::InvalidCharacters)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn extract<'a>(
        key: Option<&'a str>,
        authorization: Option<&'a str>,
    ) -> Result<&'a str, KeyError> {
        super::extract(key.map(str::as_bytes), authorization.map(str::as_bytes))
    }

    #[test]
    fn the_key_header_is_read_and_wins_over_authorization() {
        assert_eq!(extract(Some("tg_abc"), None), Ok("tg_abc"));
        assert_eq!(
            extract(Some("tg_abc"), Some("Bearer tg_other")),
            Ok("tg_abc")
        );
    }

    #[test]
    fn a_bearer_token_is_read_with_any_scheme_case() {
        assert_eq!(extract(None, Some("Bearer tg_abc")), Ok("tg_abc"));
        assert_eq!(extract(None, Some("bearer  tg_abc ")), Ok("tg_abc"));
    }

    #[test]
    fn unusable_keys_are_refused() {
        assert_eq!(extract(None, None), Err(KeyError::Missing));
        assert_eq!(extract(Some(""), None), Err(KeyError::Empty));
        assert_eq!(extract(Some("   "), None), Err(KeyError::Empty));
        assert_eq!(
            extract(Some(&"k".repeat(257)), None),
            Err(KeyError::TooLong)
        );
        assert_eq!(extract(Some(&"k".repeat(256)), None).map(str::len), Ok(256));
        assert_eq!(
            extract(Some("tg_ab c"), None),
            Err(KeyError::InvalidCharacters)
        );
        assert_eq!(
            extract(Some("tg_\u{e9}"), None),
            Err(KeyError::InvalidCharacters)
        );
        assert_eq!(
            extract(None, Some("Basic dXNlcjpwYXNz")),
            Err(KeyError::MalformedAuthorization)
        );
        assert_eq!(
            extract(None, Some("Bearer")),
            Err(KeyError::MalformedAuthorization)
        );
        assert_eq!(extract(None, Some("Bearer ")), Err(KeyError::Empty));
        assert_eq!(
            super::extract(Some(b"tg_caf\xe9"), None),
            Err(KeyError::InvalidCharacters)
        );
    }
}
