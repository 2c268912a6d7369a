//! API-key extraction (`tollgate_protocol::api_key_extraction`), shared by the filter and the
//! control-plane's key-authenticated endpoints.
//!
//! Input: one flag byte (bit 0: the key header is present, bit 1: `Authorization` is), then
//! the key header's value up to the first `\n`, then `Authorization`'s value (raw bytes).

use tollgate_protocol::MAX_API_KEY_LEN;
use tollgate_protocol::api_key_extraction::{KeyError, extract};

pub fn run(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (key, authorization) = match rest.iter().position(|b| *b == b'\n') {
        Some(newline) => (&rest[..newline], &rest[newline + 1..]),
        None => (rest, &rest[rest.len()..]),
    };
    let key = (flags & 1 == 1).then_some(key);
    let authorization = (flags & 2 == 2).then_some(authorization);

    let extracted = extract(key, authorization);
    assert_eq!(
        extracted == Err(KeyError::Missing),
        key.is_none() && authorization.is_none(),
        "Missing exactly when neither header is there"
    );
    if let Some(key) = key {
        assert_eq!(
            extracted,
            extract(Some(key), None),
            "the key header wins: Authorization is not even read"
        );
    }
    match extracted {
        Ok(found) => {
            assert!(
                (1..=MAX_API_KEY_LEN).contains(&found.len()),
                "{} bytes",
                found.len()
            );
            assert!(found.bytes().all(|b| b.is_ascii_graphic()), "{found:?}");
            let source = key.or(authorization).unwrap_or_default();
            assert!(
                source
                    .windows(found.len())
                    .any(|window| window == found.as_bytes()),
                "the key comes from the header it was read from"
            );
            // A usable key reads back as itself, from either header.
            assert_eq!(extract(Some(found.as_bytes()), None), Ok(found));
            let bearer = format!("Bearer {found}");
            assert_eq!(extract(None, Some(bearer.as_bytes())), Ok(found));
        }
        Err(error) => assert_eq!(
            error.code() == "missing_api_key",
            error == KeyError::Missing
        ),
    }
}
