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
//!
//! Streams outlive the call that opened them, so revocation reaches them
//! too: each process keeps the names of the keys revoked since it started
//! (read again on every revocation notice, and every cache time to live),
//! and every stream of a revoked key ends with UNAUTHENTICATED.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use esaas_core::auth::Principal;
use esaas_core::{Error, Result};
use esaas_store::{Change, Store};
use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, watch};
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
    /// The names of the keys revoked while this process runs.
    revoked: watch::Sender<Arc<HashSet<String>>>,
    /// When this process started following revocations.
    started: chrono::DateTime<chrono::Utc>,
}

/// Tells a stream when its key is revoked.
#[derive(Debug, Clone)]
pub struct Revocations {
    rx: watch::Receiver<Arc<HashSet<String>>>,
}

impl Revocations {
    /// Resolves once `key` (a principal's key name) is revoked; never, for
    /// the bootstrap and in-process keys, which cannot be.
    pub async fn revoked(&mut self, key: &str) {
        if self.rx.wait_for(|keys| keys.contains(key)).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
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
            revoked: watch::channel(Arc::default()).0,
            // A key revoked just before the start is caught too: a stream
            // opened with it on a stale cache elsewhere cannot be open here.
            started: esaas_core::now() - chrono::Duration::minutes(1),
        }
    }

    /// Ends streams when their key is revoked.
    pub fn revocations(&self) -> Revocations {
        Revocations {
            rx: self.revoked.subscribe(),
        }
    }

    /// Forgets every cached key (after a revocation).
    pub fn forget_all(&self) {
        self.cache.clear();
    }

    /// Forgets cached keys, and reads the revoked ones again, whenever a
    /// key is revoked in any process or notifications may have been missed;
    /// reads the revoked keys every cache time to live (at least 1 s) too,
    /// so a process whose change feed is down still ends revoked streams
    /// within that time.
    pub fn follow(&self, mut changes: broadcast::Receiver<Change>) {
        let cache = Arc::downgrade(&self.cache);
        let (store, revoked, started) = (self.store.clone(), self.revoked.clone(), self.started);
        let every = self
            .cache
            .ttl
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let forget = tokio::select! {
                    change = changes.recv() => match change {
                        Ok(Change::Keys | Change::Resync) => true,
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(_)) => true,
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    _ = tick.tick() => false,
                };
                if forget {
                    match cache.upgrade() {
                        Some(c) => c.clear(),
                        None => return,
                    }
                }
                match store.revoked_since(started).await {
                    Ok(keys) => {
                        let keys: HashSet<String> = keys.into_iter().collect();
                        revoked.send_if_modified(|now| {
                            let changed = **now != keys;
                            if changed {
                                *now = Arc::new(keys);
                            }
                            changed
                        });
                    }
                    // Kept as it is; the next notice or tick reads again.
                    Err(e) => tracing::warn!(error = %e, "reading revoked keys failed"),
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
