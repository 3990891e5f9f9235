//! Snapshot repositories, snapshots and restores: more calls on `EsClient`.
//!
//! - [`EsClient::repository_matches`]: `GET /_snapshot/{repo}`: whether it is
//!   registered with the bucket and base path wanted (`None`: Elasticsearch
//!   does not answer, as with health).
//! - [`EsClient::register_repository`]: `PUT /_snapshot/{repo}` (type `s3`,
//!   bucket and base path; Elasticsearch verifies a writable one). No keys:
//!   the `repository-s3` plugin takes the pod's web identity (IRSA)
//!   credentials.
//! - [`EsClient::create_snapshot`]: `PUT /_snapshot/{repo}/{snap}?wait_for_completion=true`;
//!   a name that exists is the snapshot a previous attempt of the same step
//!   took, so a retry finds it rather than failing.
//! - [`EsClient::list_snapshots`]: `GET /_snapshot/{repo}/_all`.
//! - [`EsClient::delete_snapshot`]: `DELETE /_snapshot/{repo}/{snap}` (gone already is done).
//! - [`EsClient::restore_snapshot`]: `POST /_snapshot/{repo}/{snap}/_restore?wait_for_completion=true`.
//!
//! Errors as in `es_shutdown.rs`: 5xx retryable (`ES_UNAVAILABLE`, with
//! Elasticsearch's reason, such as a repository S3 refuses), any other 4xx
//! permanent (`ES_REFUSED`).

use esaas_core::backend::{StepError, StepResult, Target};
use esaas_core::plan::RestoreObs;
use esaas_core::snapshots::{Repository, SnapshotObs, SnapshotState};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{EsAccess, EsClient, Fail, unreachable_is_error};

/// A snapshot as Elasticsearch reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SnapshotInfo {
    /// Its name.
    #[serde(rename = "snapshot")]
    pub name: String,
    /// `SUCCESS`, `PARTIAL`, `FAILED`, `IN_PROGRESS`.
    #[serde(default)]
    pub state: String,
    /// The indices in it.
    #[serde(default)]
    pub indices: Vec<String>,
    /// When it started, ms since the epoch.
    #[serde(default)]
    pub start_time_in_millis: i64,
    /// When it ended, ms since the epoch (0 while running).
    #[serde(default)]
    pub end_time_in_millis: i64,
    /// Why it failed (`FAILED`, `PARTIAL`).
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Deserialize)]
struct Created {
    snapshot: SnapshotInfo,
}

#[derive(Deserialize)]
struct Listed {
    #[serde(default)]
    snapshots: Vec<SnapshotInfo>,
}

fn bad_response(what: &str, e: serde_json::Error) -> StepError {
    StepError::retryable("ES_BAD_RESPONSE", format!("{what}: {e}"))
}

fn step(what: &str, f: Fail) -> StepError {
    unreachable_is_error(what, f)
}

impl<A: EsAccess> EsClient<A> {
    /// Whether `repo` is registered as wanted: `s3`, its bucket and base path.
    /// Missing (404 `repository_missing_exception`) or pointing elsewhere is
    /// `Some(false)`; `None` while Elasticsearch does not answer.
    pub async fn repository_matches(
        &self,
        t: &Target,
        repo: &Repository,
    ) -> StepResult<Option<bool>> {
        let what = "read the snapshot repository";
        let conn = match self.connect(t).await {
            Ok(c) => c,
            Err(Fail::Unreachable(_)) => return Ok(None),
            Err(Fail::Step(e)) => return Err(e),
        };
        let path = format!("/_snapshot/{}", repo.name);
        let (status, text) = match conn
            .expect(Method::GET, &path, None, &[StatusCode::NOT_FOUND])
            .await
        {
            Ok(answer) => answer,
            Err(Fail::Unreachable(_)) => return Ok(None),
            Err(f) => return Err(step(what, f)),
        };
        if status == StatusCode::NOT_FOUND {
            return Ok(Some(false));
        }
        let v: Value = serde_json::from_str(&text).map_err(|e| bad_response(what, e))?;
        let r = &v[repo.name.as_str()];
        Ok(Some(
            r["type"].as_str() == Some("s3")
                && r["settings"]["bucket"].as_str() == Some(repo.bucket.as_str())
                && r["settings"]["base_path"].as_str() == Some(repo.base_path.as_str()),
        ))
    }

    /// Registers (or updates) `repo` in the cluster.
    pub async fn register_repository(&self, t: &Target, repo: &Repository) -> StepResult<()> {
        let what = "register the snapshot repository";
        let conn = self.connect_for_write(t, what).await?;
        let mut settings = json!({ "bucket": repo.bucket, "base_path": repo.base_path });
        if repo.readonly {
            settings["readonly"] = json!(true);
        }
        let body = json!({ "type": "s3", "settings": settings });
        conn.expect(
            Method::PUT,
            &format!("/_snapshot/{}", repo.name),
            Some(&body),
            &[],
        )
        .await
        .map(|_| ())
        .map_err(|f| step(what, f))
    }

    /// Takes snapshot `name` of every index into `repo` and waits for it.
    /// If `name` exists (a retry of the step that took it), that snapshot is answered.
    pub async fn create_snapshot(
        &self,
        t: &Target,
        repo: &str,
        name: &str,
    ) -> StepResult<SnapshotInfo> {
        let what = "create a snapshot";
        let conn = self.connect_for_write(t, what).await?;
        let path = format!("/_snapshot/{repo}/{name}?wait_for_completion=true");
        let (status, text) = conn
            .expect(Method::PUT, &path, None, &[StatusCode::BAD_REQUEST])
            .await
            .map_err(|f| step(what, f))?;
        if status == StatusCode::BAD_REQUEST {
            if !name_exists(&text) {
                return Err(StepError::permanent(
                    "ES_REFUSED",
                    format!("PUT {path}: HTTP 400 {}", super::es_error_text(&text)),
                ));
            }
            return self
                .list_snapshots(t, repo)
                .await?
                .into_iter()
                .find(|s| s.name == name)
                .ok_or_else(|| {
                    StepError::retryable("ES_SNAPSHOT", format!("snapshot {name} not listed"))
                });
        }
        serde_json::from_str::<Created>(&text)
            .map(|c| c.snapshot)
            .map_err(|e| bad_response(what, e))
    }

    /// Every snapshot in `repo`, oldest first.
    pub async fn list_snapshots(&self, t: &Target, repo: &str) -> StepResult<Vec<SnapshotInfo>> {
        let what = "list snapshots";
        let conn = self.connect_for_write(t, what).await?;
        let (_, text) = conn
            .expect(Method::GET, &format!("/_snapshot/{repo}/_all"), None, &[])
            .await
            .map_err(|f| step(what, f))?;
        let mut list = serde_json::from_str::<Listed>(&text)
            .map_err(|e| bad_response(what, e))?
            .snapshots;
        list.sort_by_key(|s| s.start_time_in_millis);
        Ok(list)
    }

    /// Deletes snapshot `name` from `repo`; one that is gone already is done.
    pub async fn delete_snapshot(&self, t: &Target, repo: &str, name: &str) -> StepResult<()> {
        let what = "delete a snapshot";
        let conn = self.connect_for_write(t, what).await?;
        conn.expect(
            Method::DELETE,
            &format!("/_snapshot/{repo}/{name}"),
            None,
            &[StatusCode::NOT_FOUND],
        )
        .await
        .map(|_| ())
        .map_err(|f| step(what, f))
    }

    /// Restores `indices` (every index when empty) of snapshot `name` in
    /// `repo`, and waits for it; answers the indices restored.
    pub async fn restore_snapshot(
        &self,
        t: &Target,
        repo: &str,
        name: &str,
        indices: &[String],
    ) -> StepResult<Vec<String>> {
        let what = "restore a snapshot";
        let conn = self.connect_for_write(t, what).await?;
        let body = if indices.is_empty() {
            json!({})
        } else {
            json!({ "indices": indices.join(",") })
        };
        let (_, text) = conn
            .expect(
                Method::POST,
                &format!("/_snapshot/{repo}/{name}/_restore?wait_for_completion=true"),
                Some(&body),
                &[],
            )
            .await
            .map_err(|f| step(what, f))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| bad_response(what, e))?;
        Ok(v["snapshot"]["indices"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Starts restoring `indices` of snapshot `name` in `repo` without
    /// waiting (`wait_for_completion=false`): the restored indices exist at
    /// once and recover in the background, which the health gate waits for.
    pub async fn start_restore(
        &self,
        t: &Target,
        repo: &str,
        name: &str,
        indices: &[String],
    ) -> StepResult<()> {
        let what = "start a restore";
        let conn = self.connect_for_write(t, what).await?;
        let body = json!({ "indices": indices.join(",") });
        conn.expect(
            Method::POST,
            &format!("/_snapshot/{repo}/{name}/_restore?wait_for_completion=false"),
            Some(&body),
            &[],
        )
        .await
        .map(|_| ())
        .map_err(|f| step(what, f))
    }

    /// The snapshots in `repo`, as the planner sees them; `None` while
    /// Elasticsearch does not answer.
    pub async fn observe_snapshots(
        &self,
        t: &Target,
        repo: &str,
    ) -> StepResult<Option<Vec<SnapshotObs>>> {
        match self.connect(t).await {
            Ok(_) => {}
            Err(Fail::Unreachable(_)) => return Ok(None),
            Err(Fail::Step(e)) => return Err(e),
        }
        Ok(Some(
            self.list_snapshots(t, repo)
                .await?
                .into_iter()
                .map(SnapshotInfo::observed)
                .collect(),
        ))
    }

    /// Starts snapshot `name` of every index into `repo` without waiting
    /// (`wait_for_completion=false`: a large cluster's snapshot outlasts any
    /// one request; the planner waits by observing). A name that exists is
    /// a retry of this step: done.
    pub async fn start_snapshot(&self, t: &Target, repo: &str, name: &str) -> StepResult<()> {
        let what = "start a snapshot";
        let conn = self.connect_for_write(t, what).await?;
        let path = format!("/_snapshot/{repo}/{name}?wait_for_completion=false");
        let (status, text) = conn
            .expect(Method::PUT, &path, None, &[StatusCode::BAD_REQUEST])
            .await
            .map_err(|f| step(what, f))?;
        if status == StatusCode::BAD_REQUEST && !name_exists(&text) {
            return Err(StepError::permanent(
                "ES_REFUSED",
                format!("PUT {path}: HTTP 400 {}", super::es_error_text(&text)),
            ));
        }
        Ok(())
    }

    /// Snapshot `name` of `repo`: `None` when it is not there (404
    /// `snapshot_missing_exception`).
    pub async fn get_snapshot(
        &self,
        t: &Target,
        repo: &str,
        name: &str,
    ) -> StepResult<Option<SnapshotInfo>> {
        let what = "read a snapshot";
        let conn = self.connect_for_write(t, what).await?;
        let (status, text) = conn
            .expect(
                Method::GET,
                &format!("/_snapshot/{repo}/{name}"),
                None,
                &[StatusCode::NOT_FOUND],
            )
            .await
            .map_err(|f| step(what, f))?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(serde_json::from_str::<Listed>(&text)
            .map_err(|e| bad_response(what, e))?
            .snapshots
            .into_iter()
            .find(|s| s.name == name))
    }

    /// The indices the cluster has (from `_cat/shards`, which the health
    /// reading already uses).
    pub async fn index_names(&self, t: &Target) -> StepResult<Vec<String>> {
        #[derive(Deserialize)]
        struct Row {
            #[serde(default)]
            index: Option<String>,
        }
        let what = "list the indices";
        let conn = self.connect_for_write(t, what).await?;
        let (_, text) = conn
            .expect(Method::GET, super::CAT_SHARDS, None, &[])
            .await
            .map_err(|f| step(what, f))?;
        let rows: Vec<Row> = serde_json::from_str(&text).map_err(|e| bad_response(what, e))?;
        let mut names: Vec<String> = rows.into_iter().filter_map(|r| r.index).collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Where restoring `snapshot` of the read-only repository `source`
    /// stands: registered, the snapshot's state, the indices it brings
    /// (`wanted`, or all of its own) that the cluster does not have yet,
    /// and those it has that did not come from this snapshot (conflicts).
    /// An index present is restored when `_recovery` says its primaries
    /// recovered from this snapshot of this repository (type `SNAPSHOT`).
    pub async fn restore_observed(
        &self,
        t: &Target,
        source: &esaas_core::snapshots::Repository,
        snapshot: &str,
        wanted: &[String],
    ) -> StepResult<Option<RestoreObs>> {
        let Some(registered) = self.repository_matches(t, source).await? else {
            return Ok(None);
        };
        if !registered {
            return Ok(Some(RestoreObs::default()));
        }
        let Some(info) = self.get_snapshot(t, &source.name, snapshot).await? else {
            return Ok(Some(RestoreObs {
                source_registered: true,
                ..RestoreObs::default()
            }));
        };
        let state = SnapshotState::from_elasticsearch(&info.state);
        let wanted: Vec<String> = if wanted.is_empty() {
            info.indices.clone()
        } else {
            wanted.to_vec()
        };
        let have = self.index_names(t).await?;
        let (present, pending): (Vec<String>, Vec<String>) =
            wanted.into_iter().partition(|i| have.contains(i));
        let restored = self
            .restored_from(t, &present, &source.name, snapshot)
            .await?;
        Ok(Some(RestoreObs {
            source_registered: true,
            snapshot: Some(state),
            pending,
            conflicts: present
                .into_iter()
                .filter(|i| !restored.contains(i))
                .collect(),
        }))
    }

    /// Which of `indices` recovered their primaries from `snapshot` of
    /// `repo` (`GET /{indices}/_recovery`: type `SNAPSHOT` and its source).
    pub async fn restored_from(
        &self,
        t: &Target,
        indices: &[String],
        repo: &str,
        snapshot: &str,
    ) -> StepResult<Vec<String>> {
        if indices.is_empty() {
            return Ok(Vec::new());
        }
        let what = "read the indices' recoveries";
        let conn = self.connect_for_write(t, what).await?;
        let (_, text) = conn
            .expect(
                Method::GET,
                &format!("/{}/_recovery", indices.join(",")),
                None,
                &[],
            )
            .await
            .map_err(|f| step(what, f))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| bad_response(what, e))?;
        Ok(indices
            .iter()
            .filter(|i| {
                let shards = v[i.as_str()]["shards"].as_array();
                shards.is_some_and(|shards| {
                    let primaries: Vec<&Value> = shards
                        .iter()
                        .filter(|s| s["primary"].as_bool() == Some(true))
                        .collect();
                    !primaries.is_empty()
                        && primaries.iter().all(|s| {
                            s["type"].as_str() == Some("SNAPSHOT")
                                && s["source"]["repository"].as_str() == Some(repo)
                                && s["source"]["snapshot"].as_str() == Some(snapshot)
                        })
                })
            })
            .cloned()
            .collect())
    }
}

/// Whether a 400 says the snapshot name is taken (`invalid_snapshot_name_exception`).
fn name_exists(text: &str) -> bool {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| {
            Some(
                v["error"]["type"].as_str()? == "invalid_snapshot_name_exception"
                    && v["error"]["reason"].as_str()?.contains("already exists"),
            )
        })
        .unwrap_or(false)
}

impl SnapshotInfo {
    /// As the planner sees it.
    pub fn observed(self) -> SnapshotObs {
        let time = |ms: i64| {
            (ms > 0)
                .then(|| chrono::DateTime::from_timestamp_millis(ms))
                .flatten()
        };
        SnapshotObs {
            state: SnapshotState::from_elasticsearch(&self.state),
            reason: self.reason.unwrap_or_default(),
            start_time: time(self.start_time_in_millis),
            end_time: time(self.end_time_in_millis),
            name: self.name,
            indices: self.indices,
        }
    }
}
