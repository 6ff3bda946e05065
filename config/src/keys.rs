//! API key generation and digests. Keys are shown once and only their
//! SHA-256 digest is stored in the config.

use sha2::{Digest, Sha256};

/// Every generated key starts with this, so leaked keys are easy to find.
pub const KEY_PREFIX: &str = "igw_";

/// A freshly generated key and the config lines that register it.
#[derive(Debug, Clone)]
pub struct GeneratedKey {
    /// The secret; print it once, never store it.
    pub key: String,
    /// Lowercase hex SHA-256 of `key`.
    pub sha256_hex: String,
}

/// SHA-256 of a key's text.
pub fn key_digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Generates a key with 192 bits of entropy from the OS.
pub fn generate_key() -> Result<GeneratedKey, getrandom::Error> {
    let mut secret = [0u8; 24];
    getrandom::fill(&mut secret)?;
    let key = format!("{KEY_PREFIX}{}", hex::encode(secret));
    let sha256_hex = hex::encode(key_digest(&key));
    Ok(GeneratedKey { key, sha256_hex })
}

impl GeneratedKey {
    /// The `[[api_keys]]` entry to paste into the config.
    pub fn config_snippet(&self, name: &str, scope: &str) -> String {
        format!(
            "[[api_keys]]\nname = {name:?}\nsha256 = \"{}\"\nscope = {scope}\n",
            self.sha256_hex
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_unique_prefixed_and_match_their_digest() {
        let a = generate_key().unwrap();
        let b = generate_key().unwrap();
        assert_ne!(a.key, b.key);
        assert!(a.key.starts_with(KEY_PREFIX));
        assert_eq!(a.key.len(), KEY_PREFIX.len() + 48);
        assert_eq!(hex::decode(&a.sha256_hex).unwrap(), key_digest(&a.key));
    }
}
