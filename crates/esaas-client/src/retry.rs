//! Retries (AIP-194) and stream reconnects.
//!
//! A unary call is retried on `UNAVAILABLE` (the server is down, restarting or
//! shedding load) and on `RESOURCE_EXHAUSTED` only when the server sent `RetryInfo`
//! (a rate limit: it says when to come back; a quota that is full stays full, so it
//! is not retried). Nothing else is retried. Every mutation carries a `request_id`
//! chosen before the first attempt, so a retry whose first attempt did reach the
//! server gets the first answer back instead of changing anything twice.
//!
//! The backoff is exponential with full jitter ([`backon`]); a server's `RetryInfo`
//! delay is the least the client waits.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tonic::Code;
use tonic_types::StatusExt;

use crate::error::{Error, Result};

/// How calls are retried and streams reconnected.
///
/// ```
/// use std::time::Duration;
/// let policy = esaas_client::RetryPolicy::default()
///     .max_attempts(8)
///     .backoff(Duration::from_millis(50), Duration::from_secs(2));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    max_reconnects: u32,
}

impl Default for RetryPolicy {
    /// 5 attempts per call, backoff from 100 ms doubling up to 5 s; a stream
    /// reconnects up to 30 times in a row (about two minutes without a server).
    ///
    /// ```
    /// assert_ne!(esaas_client::RetryPolicy::default(), esaas_client::RetryPolicy::none());
    /// ```
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            max_reconnects: 30,
        }
    }
}

impl RetryPolicy {
    /// One attempt per call and no reconnects.
    ///
    /// ```
    /// let p = esaas_client::RetryPolicy::none();
    /// ```
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            max_reconnects: 0,
            ..Self::default()
        }
    }

    /// Attempts per unary call, the first included (at least 1).
    ///
    /// ```
    /// let p = esaas_client::RetryPolicy::default().max_attempts(3);
    /// ```
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// The first delay and the longest one.
    ///
    /// ```
    /// use std::time::Duration;
    /// let p = esaas_client::RetryPolicy::default().backoff(Duration::from_millis(10), Duration::from_secs(1));
    /// ```
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// Reconnects in a row a stream (watch, wait) makes before it gives up; a message
    /// received resets the count.
    ///
    /// ```
    /// let p = esaas_client::RetryPolicy::default().max_reconnects(100);
    /// ```
    pub fn max_reconnects(mut self, n: u32) -> Self {
        self.max_reconnects = n;
        self
    }

    fn builder(&self, times: u32) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.initial_backoff)
            .with_max_delay(self.max_backoff)
            .with_factor(2.0)
            .with_jitter()
            .with_max_times(times as usize)
    }

    /// Runs `call` until it succeeds, fails for good, or the attempts run out.
    pub(crate) async fn run<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        call.retry(self.builder(self.max_attempts.saturating_sub(1)))
            .sleep(tokio::time::sleep)
            .when(is_retryable)
            .adjust(|status, next| next.map(|d| d.max(server_delay(status).unwrap_or_default())))
            .await
            .map_err(Error::from)
    }

    /// The delays between a stream's reconnects, in order.
    pub(crate) fn reconnects(&self) -> Reconnects {
        use backon::BackoffBuilder;
        Reconnects(Box::new(self.builder(self.max_reconnects).build()))
    }
}

/// The remaining reconnect delays of a stream.
pub(crate) struct Reconnects(Box<dyn Iterator<Item = Duration> + Send>);

impl Reconnects {
    /// Waits before the next reconnect after `status`; `false` when none is left.
    pub(crate) async fn wait(&mut self, status: &tonic::Status) -> bool {
        let Some(d) = self.0.next() else {
            return false;
        };
        tokio::time::sleep(d.max(server_delay(status).unwrap_or_default())).await;
        true
    }
}

fn server_delay(status: &tonic::Status) -> Option<Duration> {
    crate::error::retry_delay(&status.get_error_details())
}

/// Whether a unary call may be tried again (AIP-194).
pub(crate) fn is_retryable(status: &tonic::Status) -> bool {
    match status.code() {
        Code::Unavailable => true,
        Code::ResourceExhausted => server_delay(status).is_some(),
        _ => false,
    }
}

/// Whether a read stream that ended with `status` should be opened again: what
/// [`is_retryable`] retries, and a connection that broke mid-stream (a control
/// plane killed or restarted shows up as `UNKNOWN`, `INTERNAL` or `CANCELLED` from
/// the transport rather than an answer of the server). Resuming a read is always safe.
pub(crate) fn is_resumable(status: &tonic::Status) -> bool {
    is_retryable(status)
        || (matches!(
            status.code(),
            Code::Unknown | Code::Internal | Code::Cancelled
        ) && std::error::Error::source(status).is_some())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use tonic_types::ErrorDetails;

    use super::*;

    fn fast() -> RetryPolicy {
        RetryPolicy::default().backoff(Duration::from_millis(1), Duration::from_millis(2))
    }

    async fn attempts_until(
        policy: &RetryPolicy,
        status: tonic::Status,
        ok_after: u32,
    ) -> (u32, bool) {
        let n = Arc::new(AtomicU32::new(0));
        let r = policy
            .run(|| {
                let n = n.clone();
                let status = status.clone();
                async move {
                    let i = n.fetch_add(1, Ordering::SeqCst) + 1;
                    if i > ok_after { Ok(()) } else { Err(status) }
                }
            })
            .await;
        (n.load(Ordering::SeqCst), r.is_ok())
    }

    #[tokio::test]
    async fn unavailable_is_retried_until_the_attempts_run_out() {
        let p = fast().max_attempts(4);
        assert_eq!(
            attempts_until(&p, tonic::Status::unavailable("down"), 2).await,
            (3, true)
        );
        assert_eq!(
            attempts_until(&p, tonic::Status::unavailable("down"), 10).await,
            (4, false)
        );
    }

    #[tokio::test]
    async fn only_transient_codes_are_retried() {
        let p = fast();
        for status in [
            tonic::Status::invalid_argument("bad"),
            tonic::Status::not_found("x"),
            tonic::Status::aborted("etag"),
            tonic::Status::deadline_exceeded("late"),
            // A full quota stays full: no RetryInfo, no retry.
            tonic::Status::resource_exhausted("quota"),
        ] {
            let code = status.code();
            assert_eq!(attempts_until(&p, status, 10).await, (1, false), "{code:?}");
        }
    }

    #[tokio::test]
    async fn retry_info_is_the_least_delay() {
        let limited = tonic::Status::with_error_details(
            Code::ResourceExhausted,
            "rate limited",
            ErrorDetails::with_retry_info(Some(Duration::from_millis(150))),
        );
        let start = std::time::Instant::now();
        assert_eq!(attempts_until(&fast(), limited, 1).await, (2, true));
        assert!(
            start.elapsed() >= Duration::from_millis(150),
            "{:?}",
            start.elapsed()
        );
    }
}
