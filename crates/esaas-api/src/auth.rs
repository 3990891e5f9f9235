//! Authentication: `authorization: Bearer <key>` on every call. The
//! bootstrap admin key (from configuration) is compared by digest; every
//! other key is looked up by the SHA-256 of its secret.

use esaas_core::auth::Principal;
use esaas_core::{Error, Result};
use esaas_store::Store;
use sha2::{Digest, Sha256};
use tonic::metadata::MetadataMap;

/// Turns request metadata into a principal.
#[derive(Clone)]
pub struct Authenticator {
    store: Store,
    bootstrap_digest: Option<[u8; 32]>,
    internal_worker_digest: Option<[u8; 32]>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field(
                "bootstrap_key",
                &self.bootstrap_digest.map(|_| "<redacted>"),
            )
            .finish()
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

impl Authenticator {
    /// Accepts keys in `store` and, if set, the bootstrap admin key.
    pub fn new(store: Store, bootstrap_key: Option<&str>) -> Self {
        Self {
            store,
            bootstrap_digest: bootstrap_key.filter(|k| !k.is_empty()).map(digest),
            internal_worker_digest: None,
        }
    }

    /// Also accepts `key` as a WORKER key: the in-process worker pool's
    /// credential, random per process and never stored.
    pub fn with_internal_worker_key(mut self, key: &str) -> Self {
        self.internal_worker_digest = Some(digest(key));
        self
    }

    /// The caller of a request.
    pub async fn authenticate(&self, metadata: &MetadataMap) -> Result<Principal> {
        let value = metadata.get("authorization").ok_or_else(|| {
            Error::Unauthenticated("missing `authorization: Bearer <api key>` metadata".into())
        })?;
        let value = value
            .to_str()
            .map_err(|_| Error::Unauthenticated("the authorization metadata is not text".into()))?;
        let secret = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                Error::Unauthenticated(
                    "the authorization metadata must be `Bearer <api key>`".into(),
                )
            })?;
        // Digests have a fixed length, so comparing them reveals nothing about the key.
        let d = digest(secret);
        if self.bootstrap_digest == Some(d) {
            return Ok(Principal::bootstrap());
        }
        if self.internal_worker_digest == Some(d) {
            return Ok(Principal {
                role: esaas_core::auth::Role::Worker,
                tenant: None,
                key: "internal-worker".into(),
            });
        }
        self.store
            .authenticate(secret)
            .await?
            .ok_or_else(|| Error::Unauthenticated("the API key is unknown or revoked".into()))
    }
}
