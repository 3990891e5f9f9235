//! Per-tenant rate limits: a token bucket per tenant, checked right after
//! authentication. A tenant over its rate gets RESOURCE_EXHAUSTED with
//! RetryInfo; other tenants are not affected. Platform admins and workers
//! are not tenants and are not limited here.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use esaas_core::auth::Principal;
use esaas_core::{Error, Result};

/// A rate: `per_second` on average, up to `burst` at once. A zero rate turns limiting off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Requests per second.
    pub per_second: f64,
    /// Requests allowed at once.
    pub burst: f64,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets by scope.
#[derive(Debug)]
pub struct Limiter {
    rate: Rate,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// Whose rate a request counts against: the tenant of a tenant key.
fn scope(p: &Principal) -> Option<String> {
    p.tenant.as_ref().map(|t| format!("tenants/{t}"))
}

impl Limiter {
    /// Limits every scope to `rate`.
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Admits one request of `p`, or says when one will be admitted.
    pub fn admit(&self, p: &Principal) -> Result<()> {
        match scope(p) {
            Some(scope) => self.admit_at(&scope, Instant::now()),
            None => Ok(()),
        }
    }

    fn admit_at(&self, scope: &str, now: Instant) -> Result<()> {
        if self.rate.per_second <= 0.0 {
            return Ok(());
        }
        let mut buckets = self
            .buckets
            .lock()
            .map_err(|_| Error::Internal("rate limiter lock poisoned".into()))?;
        let b = buckets.entry(scope.to_string()).or_insert(Bucket {
            tokens: self.rate.burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate.per_second).min(self.rate.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - b.tokens) / self.rate.per_second;
        Err(Error::RateLimited {
            scope: scope.to_string(),
            retry_after: Duration::from_secs_f64(wait).max(Duration::from_millis(1)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_and_scopes_are_separate() {
        let l = Limiter::new(Rate {
            per_second: 10.0,
            burst: 3.0,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            l.admit_at("tenants/a", t0).expect("within the burst");
        }
        match l.admit_at("tenants/a", t0) {
            Err(Error::RateLimited { retry_after, .. }) => {
                assert!(retry_after <= Duration::from_millis(100), "{retry_after:?}")
            }
            other => panic!("{other:?}"),
        }
        l.admit_at("tenants/b", t0)
            .expect("another tenant is not affected");
        l.admit_at("tenants/a", t0 + Duration::from_millis(100))
            .expect("refilled");
    }

    #[test]
    fn zero_turns_limiting_off() {
        let l = Limiter::new(Rate {
            per_second: 0.0,
            burst: 0.0,
        });
        let t0 = Instant::now();
        for _ in 0..1000 {
            l.admit_at("x", t0).expect("unlimited");
        }
    }
}
