//! The Kubernetes client's deadlines. kube-rs leaves the answer of a call
//! unbounded by default (`read_timeout: None`, so that exec, attach and
//! watches may stay open); esaas makes only short calls (get, list, apply,
//! patch, delete), so every read and write gets a limit and an API server
//! that accepts a call and never answers fails it instead of holding a step.

use std::time::Duration;

/// Deadlines of every Kubernetes API call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// Connecting (TCP and TLS).
    pub connect: Duration,
    /// Sending the request, and each wait for (more of) the answer.
    pub call: Duration,
}

/// `config` with `deadlines` on every call. The read timeout counts from
/// when the request was written (`reset_reader_on_write`), not from when a
/// pooled connection went idle.
pub fn with_deadlines(mut config: kube::Config, deadlines: Deadlines) -> kube::Config {
    config.connect_timeout = Some(deadlines.connect);
    config.read_timeout = Some(deadlines.call);
    config.write_timeout = Some(deadlines.call);
    config.reset_reader_on_write = true;
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Namespace;

    /// An API server that accepts connections and never answers: the call
    /// fails at the read deadline, retryably, saying it timed out.
    #[tokio::test]
    async fn a_call_to_an_api_server_that_never_answers_fails_at_the_deadline() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                open.push(stream);
            }
        });
        let config = with_deadlines(
            kube::Config::new(url.parse().unwrap()),
            Deadlines {
                connect: Duration::from_secs(1),
                call: Duration::from_millis(700),
            },
        );
        let client = kube::Client::try_from(config).unwrap();
        let start = std::time::Instant::now();
        let api = kube::Api::<Namespace>::all(client);
        let get = api.get("tenant-a");
        // Without the deadlines the call never ends: give up after 5 s.
        let err = tokio::time::timeout(Duration::from_secs(5), get)
            .await
            .expect("the call ended by itself")
            .unwrap_err();
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(700) && took < Duration::from_secs(5),
            "{took:?}"
        );
        let e = crate::workloads::kube_error("get namespace tenant-a", err);
        assert!(e.retryable, "{e}");
        assert!(e.message.contains("timed out"), "{e}");
        held.abort();
    }
}
