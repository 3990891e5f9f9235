//! Watch streams a tenant may hold open at once in this process. A stream
//! takes a slot when it opens and gives it back when it ends (the client
//! goes, the server shuts down, or its key is revoked), so one tenant's
//! thousands of watchers cannot take what another's need.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use esaas_core::auth::Principal;
use esaas_core::error::QuotaViolation;
use esaas_core::{Error, Result};

/// The open streams per holder, against a cap.
#[derive(Debug, Clone)]
pub(crate) struct StreamCaps {
    cap: usize,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

/// One open stream's slot; dropped with the stream.
#[derive(Debug)]
pub(crate) struct Slot {
    holder: String,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.open.lock()
            && let Some(n) = open.get_mut(&self.holder)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.holder);
            }
        }
    }
}

impl StreamCaps {
    /// At most `cap` streams per tenant (or per key, for callers without one).
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap,
            open: Arc::default(),
        }
    }

    /// A slot for a new stream of `p`, or RESOURCE_EXHAUSTED with the limit.
    pub(crate) fn open(&self, p: &Principal) -> Result<Slot> {
        let holder = match &p.tenant {
            Some(t) => format!("tenants/{t}"),
            None => p.key.clone(),
        };
        let mut open = self
            .open
            .lock()
            .map_err(|_| Error::Internal("stream table poisoned".into()))?;
        let n = open.entry(holder.clone()).or_default();
        if *n >= self.cap {
            return Err(Error::QuotaExceeded(vec![QuotaViolation {
                subject: format!("{holder}:watch_streams"),
                description: format!(
                    "at most {} watch streams may be open at once on this server; {} are; close one, or watch from another server",
                    self.cap, n
                ),
            }]));
        }
        *n += 1;
        Ok(Slot {
            holder,
            open: self.open.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use esaas_core::auth::Role;
    use esaas_core::names::TenantId;

    use super::*;

    fn tenant(t: &str, key: &str) -> Principal {
        Principal {
            role: Role::TenantViewer,
            tenant: Some(TenantId::parse("t", t).expect("tenant")),
            key: key.into(),
        }
    }

    #[test]
    fn a_tenant_holds_at_most_its_cap_and_a_closed_stream_frees_its_slot() {
        let caps = StreamCaps::new(2);
        let a1 = caps.open(&tenant("a", "k1")).expect("first");
        let _a2 = caps
            .open(&tenant("a", "k2"))
            .expect("second, another key of a");
        let refused = caps.open(&tenant("a", "k1")).expect_err("third");
        assert!(
            matches!(&refused, Error::QuotaExceeded(v) if v[0].subject == "tenants/a:watch_streams"),
            "{refused:?}"
        );
        let _b = caps
            .open(&tenant("b", "k3"))
            .expect("another tenant is not affected");
        drop(a1);
        let _a3 = caps.open(&tenant("a", "k1")).expect("a slot came back");
        assert!(caps.open(&tenant("a", "k1")).is_err());
    }
}
