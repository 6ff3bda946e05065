//! API key checks against the config's SHA-256 digests.
//!
//! The presented key is hashed, its digest's first 8 bytes select a bucket,
//! and every digest in the bucket is compared in constant time. No timing
//! depends on how much of a stored digest the presented one matches.

use std::collections::HashMap;
use std::sync::Arc;

use config::{ApiKey, KeyScope, key_digest};
use subtle::ConstantTimeEq;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No usable `Authorization` header.
    #[error("missing API key: send `Authorization: Api-Key <key>`")]
    Missing,
    /// A key that is not in the config.
    #[error("invalid API key")]
    Invalid,
    /// A valid key whose scope excludes the model.
    #[error("this API key may not call this model")]
    Forbidden,
}

/// Who a valid key belongs to.
#[derive(Debug)]
pub struct Principal {
    name: Arc<str>,
    scope: KeyScope,
    digest: [u8; 32],
}

impl Principal {
    /// The key's name from the config (never the key itself).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the key may use the management API.
    pub fn is_admin(&self) -> bool {
        self.scope == KeyScope::Admin
    }

    /// Whether the key may call predict on `model_id`.
    pub fn may_call(&self, model_id: &str) -> bool {
        self.scope.allows_model(model_id)
    }
}

/// All keys of one snapshot.
#[derive(Debug, Default)]
pub struct KeyTable {
    buckets: HashMap<u64, Box<[Principal]>>,
}

impl KeyTable {
    /// Indexes the config's keys.
    pub fn new(keys: &[ApiKey]) -> Self {
        let mut buckets: HashMap<u64, Vec<Principal>> = HashMap::new();
        for key in keys {
            buckets
                .entry(bucket_of(&key.digest))
                .or_default()
                .push(Principal {
                    name: key.name.as_str().into(),
                    scope: key.scope.clone(),
                    digest: key.digest,
                });
        }
        Self {
            buckets: buckets
                .into_iter()
                .map(|(k, v)| (k, v.into_boxed_slice()))
                .collect(),
        }
    }

    /// Checks the value of an `Authorization` header.
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<&Principal, AuthError> {
        self.authenticate_digest(&header_digest(authorization)?)
    }

    /// Checks a presented key by its digest ([`header_digest`]): a caller
    /// that saw the same header before may keep its digest instead of
    /// hashing again. The table is consulted every time, so a key removed
    /// by a reload stops working at once.
    pub fn authenticate_digest(&self, digest: &[u8; 32]) -> Result<&Principal, AuthError> {
        let bucket = self
            .buckets
            .get(&bucket_of(digest))
            .ok_or(AuthError::Invalid)?;
        let mut found = None;
        for principal in bucket.iter() {
            if bool::from(principal.digest.ct_eq(digest)) {
                found = Some(principal);
            }
        }
        found.ok_or(AuthError::Invalid)
    }
}

/// The SHA-256 digest of the key in an `Authorization` header's value.
pub fn header_digest(authorization: Option<&[u8]>) -> Result<[u8; 32], AuthError> {
    let key = authorization
        .and_then(key_from_header)
        .ok_or(AuthError::Missing)?;
    Ok(key_digest(key))
}

fn bucket_of(digest: &[u8; 32]) -> u64 {
    u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// `Api-Key <key>` or `Bearer <key>` (scheme case-insensitive).
fn key_from_header(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, key) = value.split_once(' ')?;
    let key = key.trim();
    let known = scheme.eq_ignore_ascii_case("api-key") || scheme.eq_ignore_ascii_case("bearer");
    (known && !key.is_empty()).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> KeyTable {
        let key = |name: &str, text: &str, scope| ApiKey {
            name: name.into(),
            digest: key_digest(text),
            scope,
        };
        KeyTable::new(&[
            key("all", "k-all", KeyScope::AllModels),
            key("one", "k-one", KeyScope::Models(vec!["m1".into()])),
            key("ops", "k-ops", KeyScope::Admin),
        ])
    }

    #[test]
    fn both_schemes_authenticate() {
        let t = table();
        assert_eq!(
            t.authenticate(Some(b"Api-Key k-all")).unwrap().name(),
            "all"
        );
        assert_eq!(t.authenticate(Some(b"Bearer k-one")).unwrap().name(), "one");
        assert_eq!(
            t.authenticate(Some(b"api-key  k-ops ")).unwrap().name(),
            "ops"
        );
    }

    #[test]
    fn missing_malformed_and_wrong_keys_are_refused() {
        let t = table();
        assert_eq!(t.authenticate(None).unwrap_err(), AuthError::Missing);
        assert_eq!(
            t.authenticate(Some(b"k-all")).unwrap_err(),
            AuthError::Missing
        );
        assert_eq!(
            t.authenticate(Some(b"Basic k-all")).unwrap_err(),
            AuthError::Missing
        );
        assert_eq!(
            t.authenticate(Some(b"Api-Key ")).unwrap_err(),
            AuthError::Missing
        );
        assert_eq!(
            t.authenticate(Some(b"Api-Key k-al")).unwrap_err(),
            AuthError::Invalid
        );
    }

    #[test]
    fn scopes() {
        let t = table();
        let one = t.authenticate(Some(b"Api-Key k-one")).unwrap();
        assert!(one.may_call("m1") && !one.may_call("m2") && !one.is_admin());
        let ops = t.authenticate(Some(b"Api-Key k-ops")).unwrap();
        assert!(ops.may_call("m2") && ops.is_admin());
    }
}
