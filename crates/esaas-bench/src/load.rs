//! The load generator: a closed loop (a fixed number of requests in flight,
//! each task sending its next request when the last one is answered) and an
//! open loop (requests at a fixed rate, latency measured from when each was
//! due, so a slow answer cannot hide the requests it delayed).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

/// What one run measured.
#[derive(Debug, Default)]
pub struct RunResult {
    /// Requests answered without error inside the measured window.
    pub completed: u64,
    /// Requests that failed inside the measured window (or, in the open
    /// loop, were never sent because too many were outstanding).
    pub errors: u64,
    /// The first error, to say what went wrong.
    pub first_error: Option<String>,
    /// Length of the measured window.
    pub elapsed: Duration,
    /// Latency of each request that started and ended inside the window.
    pub latencies: Vec<Duration>,
}

impl RunResult {
    /// Answered requests per second.
    pub fn throughput(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.completed as f64 / s
        } else {
            0.0
        }
    }

    fn absorb(&mut self, other: RunResult) {
        self.completed += other.completed;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latencies.extend(other.latencies);
    }
}

/// Runs `call(task, seq)` from `concurrency` tasks, each sending its next
/// request as soon as the previous one is answered, for `warmup` (not
/// counted) and then `measure`. Returns when the last request sent inside
/// the window is answered.
pub async fn closed_loop<F, Fut>(
    concurrency: usize,
    warmup: Duration,
    measure: Duration,
    call: F,
) -> RunResult
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let call = Arc::new(call);
    // Every task starts at the same moment.
    let begin = Instant::now() + Duration::from_millis(20);
    let from = begin + warmup;
    let until = from + measure;
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..concurrency {
        let call = call.clone();
        tasks.spawn(async move {
            tokio::time::sleep_until(begin).await;
            let mut r = RunResult::default();
            let mut seq = 0u64;
            while Instant::now() < until {
                let started = Instant::now();
                let outcome = call(task, seq).await;
                seq += 1;
                let done = Instant::now();
                // Throughput counts answers inside the window; latency every
                // request sent inside it, however long it took (no request is
                // left out for being slow).
                let counted = done >= from && done <= until;
                match outcome {
                    Ok(()) => {
                        if counted {
                            r.completed += 1;
                        }
                        if started >= from {
                            r.latencies.push(done - started);
                        }
                    }
                    Err(e) if counted || started >= from => {
                        r.errors += 1;
                        r.first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                    Err(_) => {}
                }
            }
            r
        });
    }
    let mut total = RunResult {
        elapsed: measure,
        ..Default::default()
    };
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(r) => total.absorb(r),
            Err(e) => {
                total.errors += 1;
                total
                    .first_error
                    .get_or_insert_with(|| format!("load task failed: {e}"));
            }
        }
    }
    total
}

/// Sends `call(seq)` at `rate` per second for `warmup` (not counted) and
/// then `measure`, never more than `max_outstanding` at once (a request
/// that would exceed it counts as an error). Latency runs from the moment a
/// request was due, not from when it could be sent.
pub async fn open_loop<F, Fut>(
    rate: f64,
    warmup: Duration,
    measure: Duration,
    max_outstanding: usize,
    call: F,
) -> RunResult
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let call = Arc::new(call);
    let begin = Instant::now() + Duration::from_millis(20);
    let from = begin + warmup;
    let until = from + measure;
    let outstanding = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Instant, Result<(), String>)>();
    let mut result = RunResult {
        elapsed: measure,
        ..Default::default()
    };
    let interval = Duration::from_secs_f64(1.0 / rate.max(1e-3));
    let mut seq = 0u64;
    loop {
        let due = begin + interval.mul_f64(seq as f64);
        if due >= until {
            break;
        }
        tokio::time::sleep_until(due).await;
        if outstanding.load(Ordering::Relaxed) >= max_outstanding {
            if due >= from {
                result.errors += 1;
                result.first_error.get_or_insert_with(|| {
                    format!("more than {max_outstanding} requests outstanding")
                });
            }
            seq += 1;
            continue;
        }
        outstanding.fetch_add(1, Ordering::Relaxed);
        let (call, tx, outstanding) = (call.clone(), tx.clone(), outstanding.clone());
        tokio::spawn(async move {
            let outcome = call(seq).await.map_err(|e| format!("{e:#}"));
            outstanding.fetch_sub(1, Ordering::Relaxed);
            let _ = tx.send((due, Instant::now(), outcome));
        });
        seq += 1;
    }
    drop(tx);
    let drain = tokio::time::sleep(Duration::from_secs(30));
    tokio::pin!(drain);
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some((due, done, outcome)) => {
                    if due < from {
                        continue;
                    }
                    match outcome {
                        Ok(()) => {
                            result.completed += 1;
                            result.latencies.push(done - due);
                        }
                        Err(e) => {
                            result.errors += 1;
                            result.first_error.get_or_insert(e);
                        }
                    }
                }
                None => break,
            },
            _ = &mut drain => {
                result.errors += outstanding.load(Ordering::Relaxed) as u64;
                result.first_error.get_or_insert_with(|| "requests still outstanding 30 s after the run".into());
                break;
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn closed_loop_counts_only_the_window() {
        let r = closed_loop(
            4,
            Duration::from_millis(20),
            Duration::from_millis(100),
            |_, _| async {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Ok(())
            },
        )
        .await;
        assert_eq!(r.errors, 0);
        // 4 tasks, 5 ms each, 100 ms: about 80.
        assert!((40..=90).contains(&r.completed), "{}", r.completed);
        assert!(r.latencies.iter().all(|l| *l >= Duration::from_millis(5)));
    }

    #[tokio::test]
    async fn open_loop_keeps_its_rate_and_counts_errors() {
        let r = open_loop(
            200.0,
            Duration::ZERO,
            Duration::from_millis(200),
            100,
            |seq| async move {
                if seq % 10 == 0 {
                    anyhow::bail!("every tenth fails");
                }
                Ok(())
            },
        )
        .await;
        assert!((30..=42).contains(&r.completed), "{}", r.completed);
        assert!((3..=5).contains(&r.errors), "{}", r.errors);
        assert_eq!(r.first_error.as_deref(), Some("every tenth fails"));
    }
}
