//! The certificate `esaas serve` presents, swapped without a restart: the
//! rustls resolver hands every new handshake the current pair, and a task
//! re-reads the two files on an interval. A new pair that does not load
//! (half written, mismatched, expired) is refused and the current one stays.
//!
//! Polling the contents rather than watching inotify events: a mounted
//! Kubernetes Secret changes by an atomic swap of a symlink to a new
//! directory, which file watchers see inconsistently, and a read of two
//! small files every few seconds costs nothing.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

use super::files::{self, LeafInfo};

/// Hands each handshake the current certificate.
#[derive(Debug)]
pub struct Resolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl Resolver {
    /// Serves `key` until [`Resolver::set`].
    pub fn new(key: Arc<CertifiedKey>) -> Self {
        Self {
            current: RwLock::new(key),
        }
    }

    /// The pair new handshakes get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn set(&self, key: Arc<CertifiedKey>) {
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = key;
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// What one look at the files found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// The files hold the pair being served (or the last refused one).
    Unchanged,
    /// A new pair, now served to new connections.
    Swapped(LeafInfo),
    /// New contents that do not load: the current pair stays.
    Refused(String),
}

/// Re-reads `cert_file` and `key_file` and swaps the resolver's pair.
#[derive(Debug)]
pub struct Reloader {
    cert_file: String,
    key_file: String,
    resolver: Arc<Resolver>,
    /// The contents last looked at (served or refused), so a refused pair
    /// is reported once, not on every tick.
    seen: Option<(Vec<u8>, Vec<u8>)>,
    last_error: Option<String>,
}

impl Reloader {
    /// Watches the files of the pair `resolver` serves now.
    pub fn new(cert_file: &str, key_file: &str, resolver: Arc<Resolver>) -> Self {
        let seen = std::fs::read(cert_file)
            .ok()
            .zip(std::fs::read(key_file).ok());
        Self {
            cert_file: cert_file.into(),
            key_file: key_file.into(),
            resolver,
            seen,
            last_error: None,
        }
    }

    /// Looks once.
    pub fn poll(&mut self) -> Reloaded {
        let read = |key: &str, path: &str| {
            std::fs::read(path).map_err(|e| format!("{key}: reading {path}: {e}"))
        };
        let contents = read("tls.cert_file", &self.cert_file)
            .and_then(|c| Ok((c, read("tls.key_file", &self.key_file)?)));
        let (cert, key) = match contents {
            Ok(pair) => pair,
            Err(e) => return self.refuse(e),
        };
        if self.seen.as_ref() == Some(&(cert.clone(), key.clone())) {
            return Reloaded::Unchanged;
        }
        let loaded = files::identity_from_pem((&cert, &self.cert_file), (&key, &self.key_file));
        self.seen = Some((cert, key));
        match loaded {
            Ok(id) => {
                self.resolver.set(id.key);
                self.last_error = None;
                Reloaded::Swapped(id.leaf)
            }
            Err(e) => self.refuse(e),
        }
    }

    fn refuse(&mut self, error: String) -> Reloaded {
        if self.last_error.as_ref() == Some(&error) {
            return Reloaded::Unchanged;
        }
        self.last_error = Some(error.clone());
        Reloaded::Refused(error)
    }
}

/// Polls every `every` until `stop`, logging each swap and each refusal
/// (never key material: the errors name files and what is wrong).
pub async fn watch(mut reloader: Reloader, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        match reloader.poll() {
            Reloaded::Unchanged => {}
            Reloaded::Swapped(leaf) => tracing::info!(
                subject = %leaf.subject,
                sha256 = %leaf.sha256,
                not_after = %leaf.not_after,
                "new TLS certificate loaded; new connections get it"
            ),
            Reloaded::Refused(error) => tracing::warn!(
                %error,
                "new TLS certificate refused; still serving the previous one"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn leaf(key: &CertifiedKey) -> Vec<u8> {
        key.end_entity_cert().unwrap().to_vec()
    }

    #[test]
    fn a_new_pair_is_swapped_in_and_a_bad_one_keeps_the_current() {
        let dir = std::env::temp_dir().join(format!("esaas-reload-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_file, key_file) = (dir.join("tls.crt"), dir.join("tls.key"));
        let (cf, kf) = (cert_file.to_str().unwrap(), key_file.to_str().unwrap());
        let write = |(c, k): &(String, String)| {
            std::fs::write(&cert_file, c).unwrap();
            std::fs::write(&key_file, k).unwrap();
        };
        let first = pair("one");
        write(&first);
        let id = files::identity(cf, kf).unwrap();
        let resolver = Arc::new(Resolver::new(id.key.clone()));
        let mut reloader = Reloader::new(cf, kf, resolver.clone());
        assert_eq!(reloader.poll(), Reloaded::Unchanged);

        let second = pair("two");
        write(&second);
        let Reloaded::Swapped(info) = reloader.poll() else {
            panic!("not swapped")
        };
        assert!(info.subject.contains("rcgen"), "{info:?}");
        let served = leaf(&resolver.current());
        assert_ne!(served, leaf(&id.key));
        assert_eq!(reloader.poll(), Reloaded::Unchanged);

        // Half a rotation: the new certificate with the old key.
        std::fs::write(&cert_file, pair("three").0).unwrap();
        match reloader.poll() {
            Reloaded::Refused(e) => {
                assert!(e.starts_with("tls.key_file:"), "{e}");
                assert!(!e.contains("PRIVATE KEY"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(leaf(&resolver.current()), served, "the current pair stays");
        assert_eq!(
            reloader.poll(),
            Reloaded::Unchanged,
            "refused once, said once"
        );

        std::fs::remove_file(&key_file).unwrap();
        assert!(
            matches!(reloader.poll(), Reloaded::Refused(e) if e.starts_with("tls.key_file: reading"))
        );
        assert_eq!(leaf(&resolver.current()), served);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
