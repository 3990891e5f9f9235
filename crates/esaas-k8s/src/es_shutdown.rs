//! Node shutdowns and voting configuration exclusions, for rolling
//! restarts and for master-eligible nodes that leave.
//!
//! - [`EsClient::register_restart`] / [`EsClient::clear_shutdown`]:
//!   `PUT` / `DELETE /_nodes/{node_id}/shutdown` (type `restart`), the node
//!   id found by name in `_cat/nodes`. Elasticsearch then delays moving the
//!   node's replicas while it is away (5 minutes by default).
//! - [`EsClient::shutdowns`]: `GET /_nodes/shutdown`, each record's overall
//!   status by node name.
//! - [`EsClient::exclude_from_voting`] / [`EsClient::clear_voting_exclusions`]:
//!   `POST` / `DELETE /_cluster/voting_config_exclusions` (by node name; the
//!   clear waits for the excluded nodes to have left).
//! - [`EsClient::voting_exclusions`]: `GET /_cluster/state/metadata`,
//!   `metadata.cluster_coordination.voting_config_exclusions`.
//!
//! Errors: not reachable, 5xx, 408 and 429 (Elasticsearch's timeouts) are
//! retryable; 401/403 is `ES_AUTH`; any other 4xx is permanent
//! (`ES_REFUSED`, with Elasticsearch's own error text): the same request
//! would be refused again.

use std::collections::BTreeMap;
use std::time::Duration;

use esaas_core::backend::{StepError, StepResult, Target};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Call, Conn, EsAccess, EsClient, Fail, classify, es_error_text, unreachable_is_error};

/// A row of `_cat/nodes?h=id,name&full_id=true`.
#[derive(Debug, Deserialize)]
struct NodeIdRow {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

/// One record of `GET /_nodes/shutdown`.
#[derive(Debug, Deserialize)]
struct ShutdownRecord {
    node_id: String,
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    status: String,
}

#[derive(Debug, Deserialize)]
struct ShutdownList {
    #[serde(default)]
    nodes: Vec<ShutdownRecord>,
}

/// `VotingConfigExclusion.MISSING_VALUE_MARKER`: what Elasticsearch
/// records for the id or name it does not know.
const ABSENT: &str = "_absent_";

/// A node name as it goes into a query string: pod names only.
fn check_name(name: &str) -> StepResult<()> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(StepError::permanent(
            "ES_NODE_NAME",
            format!("{name:?} is not a node name"),
        ))
    }
}

/// Elasticsearch's time value for `d` (whole milliseconds, at least 1).
fn time_param(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

impl Conn {
    /// `method path` (with a JSON body): the status and text of any answer
    /// Elasticsearch gave; only a failure to get one is an error here.
    #[tracing::instrument(name = "elasticsearch", skip_all, fields(otel.name = %format_args!("ES {method} {path}"), otel.kind = "client", http.request.method = %method, url.path = path))]
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Call<(StatusCode, String)> {
        let what = format!("{method} {path}");
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .basic_auth(super::ELASTIC_USER, Some(&self.password))
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| classify(&what, e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| classify(&what, e))?;
        Ok((status, text))
    }

    /// [`Conn::send`], with every answer but a 2xx (and the statuses in
    /// `also_ok`) an error in the module's terms.
    pub(super) async fn expect(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        also_ok: &[StatusCode],
    ) -> Call<(StatusCode, String)> {
        let what = format!("{method} {path}");
        let (status, text) = self.send(method, path, body).await?;
        if status.is_success() || also_ok.contains(&status) {
            return Ok((status, text));
        }
        let detail = format!("{what}: HTTP {} {}", status.as_u16(), es_error_text(&text));
        Err(Fail::Step(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                StepError::permanent("ES_AUTH", detail)
            }
            StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT => {
                StepError::retryable("ES_TIMEOUT", detail)
            }
            s if s.is_server_error() => StepError::retryable("ES_UNAVAILABLE", detail),
            _ => StepError::permanent("ES_REFUSED", detail),
        }))
    }

    /// The JSON of a successful answer.
    async fn json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Call<T> {
        let (_, text) = self.expect(Method::GET, path, None, &[]).await?;
        serde_json::from_str(&text).map_err(|e| {
            Fail::Step(StepError::retryable(
                "ES_BAD_RESPONSE",
                format!("GET {path}: {e}"),
            ))
        })
    }

    /// Node name → node id, for the nodes in the cluster now.
    async fn node_ids(&self) -> Call<BTreeMap<String, String>> {
        let rows: Vec<NodeIdRow> = self
            .json("/_cat/nodes?format=json&h=id,name&full_id=true")
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| Some((r.name?, r.id?)))
            .collect())
    }

    async fn shutdown_records(&self, path: &str) -> Call<Vec<ShutdownRecord>> {
        Ok(self.json::<ShutdownList>(path).await?.nodes)
    }

    /// The voting configuration exclusions: (node id, node name).
    async fn voting_exclusion_pairs(&self) -> Call<Vec<(String, String)>> {
        let state: Value = self
            .json("/_cluster/state/metadata?filter_path=metadata.cluster_coordination.voting_config_exclusions")
            .await?;
        // An empty list may be filtered out altogether.
        let list = state
            .pointer("/metadata/cluster_coordination/voting_config_exclusions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Ok(list
            .iter()
            .map(|e| {
                let field = |k: &str| {
                    e.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or(ABSENT)
                        .to_string()
                };
                (field("node_id"), field("node_name"))
            })
            .collect())
    }
}

impl<A: EsAccess> EsClient<A> {
    /// Remembers the names of `ids` (node ids outlive a restart, the node is
    /// not in `_cat/nodes` while it is away).
    fn remember(&self, t: &Target, ids: &BTreeMap<String, String>) {
        let mut known = self
            .inner
            .node_names
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if known.len() > 4096 {
            known.clear();
        }
        for (name, id) in ids {
            known.insert((t.uid, id.clone()), name.clone());
        }
    }

    /// The name of node `id` of `t`, as last seen.
    fn name_of(&self, t: &Target, id: &str) -> Option<String> {
        self.inner
            .node_names
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&(t.uid, id.to_string()))
            .cloned()
    }

    /// The id of node `node_name`, which must be in the cluster now.
    async fn resolve_id(&self, t: &Target, conn: &Conn, node_name: &str) -> Call<String> {
        let ids = conn.node_ids().await?;
        self.remember(t, &ids);
        ids.get(node_name).cloned().ok_or_else(|| {
            Fail::Step(StepError::retryable(
                "ES_NODE_UNKNOWN",
                format!("node {node_name} is not in the cluster"),
            ))
        })
    }

    /// Registers a `restart` shutdown for `node_name` (before its pod
    /// restarts); a no-op when one is registered already. Another type of
    /// shutdown registered for the node is replaced, as Elasticsearch does.
    pub async fn register_restart(
        &self,
        t: &Target,
        node_name: &str,
        reason: &str,
    ) -> StepResult<()> {
        let what = format!("register a restart of {node_name}");
        let run = async {
            let conn = self.connect(t).await?;
            let id = self.resolve_id(t, &conn, node_name).await?;
            let path = format!("/_nodes/{id}/shutdown");
            let existing = conn.shutdown_records(&path).await?;
            if let Some(r) = existing.iter().find(|r| r.node_id == id) {
                if r.kind.eq_ignore_ascii_case("restart") {
                    return Ok(());
                }
                tracing::warn!(cluster = %t.name(), node = node_name, kind = %r.kind, "replacing a node shutdown with a restart");
            }
            let body = json!({ "type": "restart", "reason": reason });
            conn.expect(Method::PUT, &path, Some(&body), &[]).await?;
            Ok(())
        };
        run.await.map_err(|f| unreachable_is_error(&what, f))
    }

    /// Removes the shutdown registered for `node_name` (once it is back);
    /// none registered is success. The node must be in the cluster (its id
    /// is looked up by name).
    pub async fn clear_shutdown(&self, t: &Target, node_name: &str) -> StepResult<()> {
        let what = format!("clear the shutdown of {node_name}");
        let run = async {
            let conn = self.connect(t).await?;
            let id = self.resolve_id(t, &conn, node_name).await?;
            // 404 resource_not_found_exception: nothing registered.
            conn.expect(
                Method::DELETE,
                &format!("/_nodes/{id}/shutdown"),
                None,
                &[StatusCode::NOT_FOUND],
            )
            .await?;
            Ok(())
        };
        run.await.map_err(|f| unreachable_is_error(&what, f))
    }

    /// Every registered shutdown: node name → overall status (`COMPLETE`,
    /// `IN_PROGRESS`, `STALLED`, `NOT_STARTED`). A node never seen by this
    /// client and not in the cluster now is listed by its node id.
    pub async fn shutdowns(&self, t: &Target) -> StepResult<BTreeMap<String, String>> {
        let what = "read node shutdowns";
        let run = async {
            let conn = self.connect(t).await?;
            let (records, ids) =
                tokio::try_join!(conn.shutdown_records("/_nodes/shutdown"), conn.node_ids())?;
            self.remember(t, &ids);
            Ok(records
                .into_iter()
                .map(|r| {
                    let name = self.name_of(t, &r.node_id).unwrap_or(r.node_id);
                    (name, r.status)
                })
                .collect())
        };
        run.await.map_err(|f| unreachable_is_error(what, f))
    }

    /// Excludes `node_names` from the voting configuration (before they
    /// leave); names excluded already are skipped, nothing left is a no-op.
    /// Elasticsearch answers once the exclusions have taken effect (or 429
    /// after half this client's timeout: retryable).
    pub async fn exclude_from_voting(&self, t: &Target, node_names: &[String]) -> StepResult<()> {
        let what = "exclude nodes from voting";
        for n in node_names {
            check_name(n)?;
        }
        let run = async {
            let conn = self.connect(t).await?;
            let current = conn.voting_exclusion_pairs().await?;
            let mut todo: Vec<&str> = Vec::new();
            for n in node_names {
                if !current.iter().any(|(_, name)| name == n) && !todo.contains(&n.as_str()) {
                    todo.push(n);
                }
            }
            if todo.is_empty() {
                return Ok(());
            }
            let path = format!(
                "/_cluster/voting_config_exclusions?node_names={}&timeout={}",
                todo.join(","),
                time_param(self.inner.timeout / 2)
            );
            conn.expect(Method::POST, &path, None, &[]).await?;
            Ok(())
        };
        run.await.map_err(|f| unreachable_is_error(what, f))
    }

    /// Clears the voting configuration exclusions once every excluded node
    /// has left the cluster (`wait_for_removal=true`, waiting at most half
    /// this client's timeout: one still there is a retryable `ES_TIMEOUT`).
    pub async fn clear_voting_exclusions(&self, t: &Target) -> StepResult<()> {
        let what = "clear voting exclusions";
        let run = async {
            let conn = self.connect(t).await?;
            let path = format!(
                "/_cluster/voting_config_exclusions?wait_for_removal=true&master_timeout={}",
                time_param(self.inner.timeout / 2)
            );
            conn.expect(Method::DELETE, &path, None, &[]).await?;
            Ok(())
        };
        run.await.map_err(|f| unreachable_is_error(what, f))
    }

    /// The node names excluded from the voting configuration now (one
    /// excluded by id only is named as this client last saw it, else by id).
    pub async fn voting_exclusions(&self, t: &Target) -> StepResult<Vec<String>> {
        let what = "read voting exclusions";
        let run = async {
            let conn = self.connect(t).await?;
            let pairs = conn.voting_exclusion_pairs().await?;
            Ok(pairs
                .into_iter()
                .map(|(id, name)| {
                    if name != ABSENT {
                        name
                    } else {
                        self.name_of(t, &id).unwrap_or(id)
                    }
                })
                .collect())
        };
        run.await.map_err(|f| unreachable_is_error(what, f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pod_names_go_into_a_query() {
        assert!(check_name("logs-data-hot-0").is_ok());
        for bad in ["", "a,b", "a&b=c", "A", "a b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(time_param(Duration::from_secs(5)), "5000ms");
        assert_eq!(time_param(Duration::ZERO), "1ms");
    }
}
