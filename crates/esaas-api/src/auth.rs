//! Authentication: `authorization: Bearer <key>` on every call. The
//! bootstrap admin key (from configuration) is compared by digest; every
//! other key is looked up by the SHA-256 of its secret.
//!
//! A valid key's principal is cached (by that digest, never the secret) for
//! a short time, so a busy client does not cost a key lookup per call. A
//! revocation clears the cache of the process that made it at once, and of
//! every other process when its `NOTIFY` arrives (milliseconds); the time to
//! live bounds the worst case, a process whose change feed is down. Unknown
//! keys are never cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use esaas_core::auth::Principal;
use esaas_core::{Error, Result};
use esaas_store::{Change, Store};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;
use tonic::metadata::MetadataMap;

/// Keys cached at most; past that the cache starts over.
const MAX_CACHED: usize = 10_000;

#[derive(Default)]
struct KeyCache {
    ttl: Duration,
    entries: Mutex<HashMap<[u8; 32], (Principal, Instant)>>,
}

impl KeyCache {
    fn get(&self, digest: &[u8; 32]) -> Option<Principal> {
        let entries = self.entries.lock().ok()?;
        let (p, at) = entries.get(digest)?;
        (at.elapsed() < self.ttl).then(|| p.clone())
    }

    fn put(&self, digest: [u8; 32], p: Principal) {
        if self.ttl.is_zero() {
            return;
        }
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= MAX_CACHED {
                entries.clear();
            }
            entries.insert(digest, (p, Instant::now()));
        }
    }

    fn clear(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
        }
    }
}

/// Turns request metadata into a principal.
#[derive(Clone)]
pub struct Authenticator {
    store: Store,
    bootstrap_digest: Option<[u8; 32]>,
    internal_worker_digest: Option<[u8; 32]>,
    cache: Arc<KeyCache>,
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
    /// Accepts keys in `store` and, if set, the bootstrap admin key; valid
    /// keys are remembered for `cache_ttl` (zero: looked up on every call).
    pub fn new(store: Store, bootstrap_key: Option<&str>, cache_ttl: Duration) -> Self {
        Self {
            store,
            bootstrap_digest: bootstrap_key.filter(|k| !k.is_empty()).map(digest),
            internal_worker_digest: None,
            cache: Arc::new(KeyCache {
                ttl: cache_ttl,
                entries: Mutex::default(),
            }),
        }
    }

    /// Forgets every cached key (after a revocation).
    pub fn forget_all(&self) {
        self.cache.clear();
    }

    /// Forgets cached keys whenever a key is revoked in any process, or
    /// notifications may have been missed.
    pub fn follow(&self, mut changes: broadcast::Receiver<Change>) {
        let cache = Arc::downgrade(&self.cache);
        tokio::spawn(async move {
            loop {
                let forget = match changes.recv().await {
                    Ok(Change::Keys | Change::Resync) => true,
                    Ok(_) => false,
                    Err(broadcast::error::RecvError::Lagged(_)) => true,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if forget {
                    match cache.upgrade() {
                        Some(c) => c.clear(),
                        None => return,
                    }
                }
            }
        });
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
        if let Some(p) = self.cache.get(&d) {
            return Ok(p);
        }
        let p =
            self.store.authenticate(secret).await?.ok_or_else(|| {
                Error::Unauthenticated("the API key is unknown or revoked".into())
            })?;
        self.cache.put(d, p.clone());
        Ok(p)
    }
}
