//! Opaque page tokens (AIP-158): the keyset cursor of the last item, bound
//! to the query it came from so that a token cannot be replayed against
//! another query.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use esaas_core::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Parses a list filter: empty, or `state = NAME` where `parse` knows the
/// names; `example` is a valid filter for the error message.
pub fn parse_state_filter<T>(
    filter: &str,
    parse: fn(&str) -> Option<T>,
    example: &str,
) -> Result<Option<T>> {
    let f = filter.trim();
    if f.is_empty() {
        return Ok(None);
    }
    let bad = || {
        Error::invalid(
            "filter",
            format!(
                "{} is not supported; use `{example}` (or another state name)",
                esaas_core::error::shown(filter)
            ),
        )
    };
    let (field, value) = f.split_once('=').ok_or_else(bad)?;
    if field.trim() != "state" {
        return Err(bad());
    }
    parse(value.trim().trim_matches('"'))
        .map(Some)
        .ok_or_else(bad)
}

/// Default page size.
pub const DEFAULT_PAGE_SIZE: i64 = 50;
/// Largest page size; larger requests are clamped.
pub const MAX_PAGE_SIZE: i64 = 500;

#[derive(Serialize, Deserialize)]
struct Token {
    /// Fingerprint of the query.
    q: String,
    /// Cursor: the key of the last item returned.
    k: Vec<String>,
}

/// Fingerprint of the parts of a request that must not change between pages.
pub fn fingerprint(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..8])
}

/// The page size to use for `requested`.
pub fn page_size(requested: i32) -> Result<i64> {
    match requested {
        n if n < 0 => Err(Error::invalid(
            "page_size",
            format!("must not be negative, got {n}"),
        )),
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => Ok(i64::from(n).min(MAX_PAGE_SIZE)),
    }
}

/// Ends a page read with `limit + 1` rows: keeps `limit` of them and returns
/// the token of the next page (empty when there is none), keyed by `key` of
/// the last row kept.
pub fn finish<T>(
    rows: &mut Vec<T>,
    limit: i64,
    fingerprint: &str,
    key: impl Fn(&T) -> Vec<String>,
) -> String {
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    match rows.last() {
        Some(last) if more => encode(fingerprint, key(last)),
        _ => String::new(),
    }
}

/// Encodes the cursor `key` for the query `fingerprint`.
pub fn encode(fingerprint: &str, key: Vec<String>) -> String {
    let token = Token {
        q: fingerprint.to_string(),
        k: key,
    };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).unwrap_or_default())
}

/// Decodes a token; empty means the first page.
pub fn decode(fingerprint: &str, token: &str) -> Result<Option<Vec<String>>> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = |why: &str| Error::invalid("page_token", why.to_string());
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad("is not a token this service issued"))?;
    let token: Token =
        serde_json::from_slice(&bytes).map_err(|_| bad("is not a token this service issued"))?;
    // Tokens are not signed, so an edited one must not reach a query: keys we
    // issue are short names and UUIDs, never control characters.
    if token
        .k
        .iter()
        .any(|k| k.len() > 256 || k.chars().any(char::is_control))
    {
        return Err(bad("is not a token this service issued"));
    }
    if token.q != fingerprint {
        return Err(bad(
            "belongs to a different query: parent, filter and other fields must not change between pages",
        ));
    }
    Ok(Some(token.k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_are_bound_to_their_query() {
        let q = fingerprint(&["tenants/a", "state = READY"]);
        let t = encode(&q, vec!["a".into(), "b".into()]);
        assert_eq!(
            decode(&q, &t).unwrap(),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert!(decode(&fingerprint(&["tenants/b", ""]), &t).is_err());
        assert!(decode(&q, "garbage!").is_err());
        assert!(decode(&q, &encode(&q, vec!["a\u{0}b".into()])).is_err());
        assert_eq!(decode(&q, "").unwrap(), None);
        assert_eq!(page_size(0).unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(10_000).unwrap(), MAX_PAGE_SIZE);
        assert!(page_size(-1).is_err());
    }
}
