//! Kubernetes: the namespace and shared objects, one StatefulSet per node
//! set with its pods (see [`super::rollout`] for how they move to a new
//! template), and the volumes its pods leave behind.

use chrono::{DateTime, Utc};
use esaas_core::backend::{StepError, StepResult, Target, Workloads, WorkloadsObs};
use esaas_core::plan::{VolumeObs, WorkloadObs};
use esaas_core::spec::VolumeRetention;
use sqlx::Row;
use sqlx::postgres::{PgConnection, PgRow};
use uuid::Uuid;

use super::calls::{HELD, Record, call_key, record};
use super::rollout::{self, Pod, StatefulSet, Status};
use super::{Sim, db};

/// What an apply of `node_set` stamps on the StatefulSet's pod template: the
/// node set's spec without its count and volumes (replicas and claim
/// templates are not part of a pod template) and the Elasticsearch version.
/// `None` when the node set is not in the spec.
fn fingerprint(target: &Target, node_set: &str) -> Option<String> {
    let ns = target.spec.node_sets.iter().find(|n| n.name == node_set)?;
    let mut v = serde_json::to_value(ns).ok()?;
    if let Some(m) = v.as_object_mut() {
        for key in [
            "count",
            "storage_gib",
            "storage_iops",
            "storage_throughput_mibps",
        ] {
            m.remove(key);
        }
    }
    Some(serde_json::json!({ "node_set": v, "version": target.spec.version }).to_string())
}

/// The claim template an apply of `node_set` renders, as `{gib}/{class}`;
/// `None` when the node set is not in the spec.
fn claim(target: &Target, node_set: &str) -> Option<String> {
    let ns = target.spec.node_sets.iter().find(|n| n.name == node_set)?;
    Some(format!("{}/{}", ns.storage_gib, ns.attributes_class()))
}

fn endpoint(target: &Target) -> String {
    format!(
        "https://{}.{}.es.example:9200",
        target.cluster_id, target.tenant
    )
}

/// A StatefulSet and its pods as the controller has them at `now`.
pub(super) struct WorkloadRow {
    /// Its node set.
    pub(super) node_set: String,
    /// Its spec.
    pub(super) sts: StatefulSet,
    /// Its pods, by ordinal.
    pub(super) pods: Vec<Pod>,
    /// Its status at `now`.
    pub(super) status: Status,
}

/// The database's clock: every process of a test agrees on it.
async fn now(conn: &mut PgConnection) -> sqlx::Result<DateTime<Utc>> {
    sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&mut *conn)
        .await
}

fn stateful_set(r: &PgRow) -> StatefulSet {
    StatefulSet {
        replicas: r.get("replicas"),
        fingerprint: r.get("fingerprint"),
        version: r.get("version"),
        partition: r.get("partition"),
        changed_at: r.get("changed_at"),
    }
}

fn pod(r: &PgRow) -> Pod {
    Pod {
        ordinal: r.get("ordinal"),
        fingerprint: r.get("fingerprint"),
        version: r.get("version"),
        started_at: r.get("started_at"),
    }
}

impl Sim {
    /// The StatefulSets of cluster `uid` with their pods, as the controller
    /// has them now. Writes nothing.
    pub(super) async fn read_workloads(
        &self,
        conn: &mut PgConnection,
        uid: Uuid,
    ) -> sqlx::Result<Vec<WorkloadRow>> {
        // One statement, so the StatefulSets and their pods are of one moment.
        let rows = sqlx::query(
            "SELECT w.node_set, w.replicas, w.fingerprint, w.version, w.partition, w.changed_at,
                    p.ordinal, p.fingerprint AS pod_fingerprint, p.version AS pod_version,
                    p.started_at, statement_timestamp() AS now
               FROM sim_workloads w
               LEFT JOIN sim_pods p USING (cluster_uid, node_set)
              WHERE w.cluster_uid = $1 ORDER BY w.node_set, p.ordinal",
        )
        .bind(uid)
        .fetch_all(&mut *conn)
        .await?;
        let mut out: Vec<WorkloadRow> = Vec::new();
        for r in &rows {
            let node_set: String = r.get("node_set");
            if out.last().is_none_or(|w| w.node_set != node_set) {
                out.push(WorkloadRow {
                    node_set,
                    sts: stateful_set(r),
                    pods: Vec::new(),
                    status: Status::default(),
                });
            }
            if let (Some(w), Some(ordinal)) = (out.last_mut(), r.get::<Option<i32>, _>("ordinal")) {
                w.pods.push(Pod {
                    ordinal,
                    fingerprint: r.get("pod_fingerprint"),
                    version: r.get("pod_version"),
                    started_at: r.get("started_at"),
                });
            }
        }
        let now: DateTime<Utc> = match rows.first() {
            Some(r) => r.get("now"),
            None => return Ok(out),
        };
        let delay = self.config.pods_ready_delay;
        for w in &mut out {
            rollout::advance(&w.sts, &mut w.pods, now, delay);
            w.status = rollout::status(&w.sts, &w.pods, now, delay);
        }
        Ok(out)
    }

    /// The StatefulSet of `node_set`, locked, and its pods, with what the
    /// controller did up to `now` written down, so that a change starts
    /// from the world as it is at `now`.
    async fn settle(
        &self,
        conn: &mut PgConnection,
        uid: Uuid,
        node_set: &str,
        now: DateTime<Utc>,
    ) -> sqlx::Result<Option<(StatefulSet, Vec<Pod>)>> {
        let Some(row) = sqlx::query(
            "SELECT replicas, fingerprint, version, partition, changed_at FROM sim_workloads
              WHERE cluster_uid = $1 AND node_set = $2 FOR UPDATE",
        )
        .bind(uid)
        .bind(node_set)
        .fetch_optional(&mut *conn)
        .await?
        else {
            return Ok(None);
        };
        let sts = stateful_set(&row);
        let mut pods: Vec<Pod> = sqlx::query(
            "SELECT ordinal, fingerprint, version, started_at FROM sim_pods
              WHERE cluster_uid = $1 AND node_set = $2 ORDER BY ordinal",
        )
        .bind(uid)
        .bind(node_set)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(pod)
        .collect();
        for ordinal in rollout::advance(&sts, &mut pods, now, self.config.pods_ready_delay) {
            let Some(p) = pods.iter().find(|p| p.ordinal == ordinal) else {
                continue;
            };
            sqlx::query(
                "UPDATE sim_pods SET fingerprint = $4, version = $5, started_at = $6
                  WHERE cluster_uid = $1 AND node_set = $2 AND ordinal = $3",
            )
            .bind(uid)
            .bind(node_set)
            .bind(ordinal)
            .bind(&p.fingerprint)
            .bind(&p.version)
            .bind(p.started_at)
            .execute(&mut *conn)
            .await?;
        }
        Ok(Some((sts, pods)))
    }

    async fn apply_node_set_tx(
        &self,
        conn: &mut PgConnection,
        t: &Target,
        node_set: &str,
        replicas: i32,
        key: String,
    ) -> sqlx::Result<()> {
        let now = now(conn).await?;
        let old = self.settle(conn, t.uid, node_set, now).await?;
        // A node set no longer in the spec keeps its template; only its
        // replicas change (it is being emptied).
        let (fp, version) = match fingerprint(t, node_set) {
            Some(fp) => (fp, t.spec.version.clone()),
            None => match &old {
                Some((s, _)) => (s.fingerprint.clone(), s.version.clone()),
                None => (String::new(), t.spec.version.clone()),
            },
        };
        // As the Kubernetes adapter applies it (`esaas-k8s`, `apply_node_set`):
        // a new template on running pods is held (partition = replicas, so no
        // pod moves) until `roll` lowers the partition; a new StatefulSet, or
        // one without pods, is not held.
        // Pods a StatefulSet orphaned (deleted to change its claim template)
        // are adopted as they are; on another template they are held too.
        let orphans_stale: bool = match &old {
            None => {
                sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM sim_pods
                  WHERE cluster_uid = $1 AND node_set = $2 AND fingerprint <> $3)",
                )
                .bind(t.uid)
                .bind(node_set)
                .bind(&fp)
                .fetch_one(&mut *conn)
                .await?
            }
            Some(_) => false,
        };
        let partition = match &old {
            None if orphans_stale => replicas,
            None => 0,
            Some((s, _)) if s.fingerprint != fp => s.replicas.min(replicas),
            Some((s, _)) => s.partition.min(replicas),
        };
        let held = partition > 0
            && (orphans_stale || old.as_ref().is_some_and(|(s, _)| s.fingerprint != fp));
        let changed = match &old {
            None => true,
            Some((s, _)) => {
                s.replicas != replicas || s.fingerprint != fp || s.partition != partition
            }
        };
        if changed {
            // The claim template is set when the StatefulSet is created and
            // never changes (the API server refuses it; see the stand-in).
            sqlx::query(
                "INSERT INTO sim_workloads
                        (cluster_uid, node_set, replicas, fingerprint, version, partition, changed_at,
                         claim)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (cluster_uid, node_set) DO UPDATE
                    SET replicas = EXCLUDED.replicas, fingerprint = EXCLUDED.fingerprint,
                        version = EXCLUDED.version, partition = EXCLUDED.partition,
                        changed_at = EXCLUDED.changed_at",
            )
            .bind(t.uid)
            .bind(node_set)
            .bind(replicas)
            .bind(&fp)
            .bind(&version)
            .bind(partition)
            .bind(now)
            .bind(claim(t, node_set).unwrap_or_default())
            .execute(&mut *conn)
            .await?;
            // Scaling: pods above the replicas go, missing ones start on the
            // template (their ordinals are at or above the partition).
            sqlx::query(
                "DELETE FROM sim_pods WHERE cluster_uid = $1 AND node_set = $2 AND ordinal >= $3",
            )
            .bind(t.uid)
            .bind(node_set)
            .bind(replicas)
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "INSERT INTO sim_pods (cluster_uid, node_set, ordinal, fingerprint, version, started_at)
                 SELECT $1, $2, g, $4, $5, $6 FROM generate_series(0, $3 - 1) AS g
                 ON CONFLICT DO NOTHING",
            )
            .bind(t.uid)
            .bind(node_set)
            .bind(replicas)
            .bind(&fp)
            .bind(&version)
            .bind(now)
            .execute(&mut *conn)
            .await?;
            // Pods that are gone are no longer excluded, and their volumes go
            // (`persistentVolumeClaimRetentionPolicy.whenScaled: Delete`); a new
            // pod gets a volume from the StatefulSet's claim template.
            for sql in [
                "DELETE FROM sim_exclusions WHERE cluster_uid = $1 AND node_set = $2 AND ordinal >= $3",
                "DELETE FROM sim_volumes WHERE cluster_uid = $1 AND node_set = $2 AND ordinal >= $3",
            ] {
                sqlx::query(sql)
                    .bind(t.uid)
                    .bind(node_set)
                    .bind(replicas)
                    .execute(&mut *conn)
                    .await?;
            }
            sqlx::query(
                "INSERT INTO sim_volumes (cluster_uid, node_set, ordinal, gib, class)
                 SELECT $1, $2, g, split_part(w.claim, '/', 1)::int, split_part(w.claim, '/', 2)
                   FROM generate_series(0, $3 - 1) AS g, sim_workloads w
                  WHERE w.cluster_uid = $1 AND w.node_set = $2 AND w.claim <> ''
                 ON CONFLICT DO NOTHING",
            )
            .bind(t.uid)
            .bind(node_set)
            .bind(replicas)
            .execute(&mut *conn)
            .await?;
        }
        record(
            conn,
            t,
            Record {
                call: "workloads.apply_node_set",
                key,
                action: if held { HELD } else { "" },
                effective: changed,
                error: None,
            },
        )
        .await
    }

    async fn roll_tx(
        &self,
        conn: &mut PgConnection,
        t: &Target,
        node_set: &str,
        partition: i32,
        key: String,
    ) -> sqlx::Result<StepResult<()>> {
        let now = now(conn).await?;
        let outcome = if partition < 0 {
            // The API server's validation (kubernetes/kubernetes
            // pkg/apis/apps/validation/validation.go, ValidateStatefulSetSpec:
            // ValidateNonnegativeField on the partition) answers 422.
            Err(StepError::permanent(
                "KUBE_INVALID",
                format!(
                    "spec.updateStrategy.rollingUpdate.partition: Invalid value: {partition}: \
                     must be greater than or equal to 0"
                ),
            ))
        } else {
            match self.settle(conn, t.uid, node_set, now).await? {
                Some((sts, _)) => Ok(sts.partition != partition),
                // As the Kubernetes adapter reports a StatefulSet that is gone.
                None => Err(StepError::retryable(
                    "KUBE_NOT_FOUND",
                    format!("StatefulSet of {node_set} is gone"),
                )),
            }
        };
        let effective = matches!(outcome, Ok(true));
        if effective {
            sqlx::query(
                "UPDATE sim_workloads SET partition = $3, changed_at = $4
                  WHERE cluster_uid = $1 AND node_set = $2",
            )
            .bind(t.uid)
            .bind(node_set)
            .bind(partition)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        }
        record(
            conn,
            t,
            Record {
                call: "workloads.roll",
                key,
                action: "",
                effective,
                error: outcome.as_ref().err().map(ToString::to_string),
            },
        )
        .await?;
        Ok(outcome.map(|_| ()))
    }

    async fn delete_base_tx(
        &self,
        conn: &mut PgConnection,
        t: &Target,
        retention: VolumeRetention,
        key: String,
    ) -> sqlx::Result<()> {
        let mut changed = 0;
        // The namespace goes, and everything in it.
        for sql in [
            "DELETE FROM sim_base WHERE cluster_uid = $1",
            "DELETE FROM sim_workloads WHERE cluster_uid = $1",
            "DELETE FROM sim_pods WHERE cluster_uid = $1",
            "DELETE FROM sim_exclusions WHERE cluster_uid = $1",
            "DELETE FROM sim_shutdowns WHERE cluster_uid = $1",
            "DELETE FROM sim_voting_exclusions WHERE cluster_uid = $1",
        ] {
            changed += sqlx::query(sql)
                .bind(t.uid)
                .execute(&mut *conn)
                .await?
                .rows_affected();
        }
        if retention == VolumeRetention::Delete {
            changed += sqlx::query("DELETE FROM sim_volumes WHERE cluster_uid = $1")
                .bind(t.uid)
                .execute(&mut *conn)
                .await?
                .rows_affected();
        }
        record(
            conn,
            t,
            Record {
                call: "workloads.delete_base",
                key,
                action: "",
                effective: changed > 0,
                error: None,
            },
        )
        .await
    }
}

pub(super) async fn base_exists(conn: &mut PgConnection, uid: Uuid) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM sim_base WHERE cluster_uid = $1)")
        .bind(uid)
        .fetch_one(&mut *conn)
        .await
}

impl Workloads for Sim {
    async fn observe(&self, target: &Target) -> StepResult<WorkloadsObs> {
        self.check("workloads.observe").await?;
        let mut conn = self.pool.acquire().await.map_err(db)?;
        let base_objects = base_exists(&mut conn, target.uid).await.map_err(db)?;
        let rows = self
            .read_workloads(&mut conn, target.uid)
            .await
            .map_err(db)?;
        let claims: Vec<(String, String)> =
            sqlx::query_as("SELECT node_set, claim FROM sim_workloads WHERE cluster_uid = $1")
                .bind(target.uid)
                .fetch_all(&mut *conn)
                .await
                .map_err(db)?;
        let volumes: Vec<(String, i32, i32, String)> = sqlx::query_as(
            "SELECT node_set, ordinal, gib, class FROM sim_volumes
              WHERE cluster_uid = $1 ORDER BY node_set, ordinal",
        )
        .bind(target.uid)
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
        let workloads = rows
            .iter()
            .map(|w| {
                (
                    w.node_set.clone(),
                    WorkloadObs {
                        replicas: w.sts.replicas,
                        // As the Kubernetes adapter reports it: while a rollout
                        // is held any ready pod counts, otherwise only those
                        // at the update revision.
                        ready_replicas: if w.sts.partition > 0 {
                            w.status.ready
                        } else {
                            w.status.ready_updated
                        },
                        version: w.sts.version.clone(),
                        up_to_date: fingerprint(target, &w.node_set).as_ref()
                            == Some(&w.sts.fingerprint),
                        updated_replicas: w.status.updated,
                        partition: w.sts.partition,
                        claims_up_to_date: claim(target, &w.node_set).is_none_or(|c| {
                            claims
                                .iter()
                                .any(|(n, have)| *n == w.node_set && *have == c)
                        }),
                        // Grown and re-classed at once: EBS's delays are the
                        // Kubernetes stand-in's to model.
                        // The roles the StatefulSet was applied with.
                        master_eligible: serde_json::from_str::<serde_json::Value>(
                            &w.sts.fingerprint,
                        )
                        .ok()
                        .and_then(|f| f["node_set"]["roles"].as_array().cloned())
                        .is_some_and(|roles| roles.iter().any(|r| r == "master")),
                        volumes: volumes
                            .iter()
                            .filter(|v| v.0 == w.node_set)
                            .map(|(_, ordinal, gib, class)| VolumeObs {
                                ordinal: *ordinal,
                                requested_gib: *gib,
                                capacity_gib: *gib,
                                attributes_class: Some(class.clone()),
                                current_attributes_class: Some(class.clone()),
                            })
                            .collect(),
                    },
                )
            })
            .collect();
        Ok(WorkloadsObs {
            base_objects,
            claims: volumes
                .iter()
                .map(|(n, ordinal, _, _)| format!("{n}-{ordinal}"))
                .collect(),
            workloads,
            endpoint: base_objects.then(|| endpoint(target)),
            // The simulator has no certificates; the Kubernetes stand-in does.
            certificate_not_after: None,
            certificates_rotated_by: None,
        })
    }

    async fn rotate_certificates(&self, _target: &Target) -> StepResult<()> {
        Err(StepError::permanent(
            "SIM_UNSUPPORTED",
            "the simulated backends have no certificates to rotate",
        ))
    }

    async fn apply_base(&self, target: &Target) -> StepResult<()> {
        let key = call_key("workloads.apply_base", target, "", "");
        let mut tx = self.begin("workloads.apply_base", target, &key).await?;
        let n = sqlx::query(
            "INSERT INTO sim_base (cluster_uid, tenant, cluster_id, created_at)
             VALUES ($1, $2, $3, clock_timestamp()) ON CONFLICT (cluster_uid) DO NOTHING",
        )
        .bind(target.uid)
        .bind(target.tenant.as_str())
        .bind(target.cluster_id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        record(
            &mut tx,
            target,
            Record {
                call: "workloads.apply_base",
                key,
                action: "",
                effective: n > 0,
                error: None,
            },
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn apply_node_set(
        &self,
        target: &Target,
        node_set: &str,
        replicas: i32,
    ) -> StepResult<()> {
        let arg = format!("{replicas}@{}", target.generation);
        let key = call_key("workloads.apply_node_set", target, node_set, &arg);
        let mut tx = self.begin("workloads.apply_node_set", target, &key).await?;
        self.apply_node_set_tx(&mut tx, target, node_set, replicas, key)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn roll(&self, target: &Target, node_set: &str, partition: i32) -> StepResult<()> {
        let key = call_key("workloads.roll", target, node_set, &partition.to_string());
        let mut tx = self.begin("workloads.roll", target, &key).await?;
        let outcome = self
            .roll_tx(&mut tx, target, node_set, partition, key)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        outcome
    }

    async fn resize_volumes(
        &self,
        target: &Target,
        node_set: &str,
        storage_gib: i32,
        attributes_class: &str,
    ) -> StepResult<()> {
        let arg = format!("{storage_gib}/{attributes_class}");
        let key = call_key("workloads.resize_volumes", target, node_set, &arg);
        let mut tx = self.begin("workloads.resize_volumes", target, &key).await?;
        // The volumes of the pods the StatefulSet has; never smaller.
        let n = sqlx::query(
            "UPDATE sim_volumes v SET gib = greatest(v.gib, $3), class = $4
               FROM sim_workloads w
              WHERE v.cluster_uid = $1 AND v.node_set = $2 AND w.cluster_uid = $1
                AND w.node_set = $2 AND v.ordinal < w.replicas
                AND (v.gib < $3 OR v.class <> $4)",
        )
        .bind(target.uid)
        .bind(node_set)
        .bind(storage_gib)
        .bind(attributes_class)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        record(
            &mut tx,
            target,
            Record {
                call: "workloads.resize_volumes",
                key,
                action: "",
                effective: n > 0,
                error: None,
            },
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn orphan_node_set(&self, target: &Target, node_set: &str) -> StepResult<()> {
        let key = call_key("workloads.orphan_node_set", target, node_set, "");
        let mut tx = self
            .begin("workloads.orphan_node_set", target, &key)
            .await?;
        // The StatefulSet goes; its pods and volumes stay, to be adopted.
        let n = sqlx::query("DELETE FROM sim_workloads WHERE cluster_uid = $1 AND node_set = $2")
            .bind(target.uid)
            .bind(node_set)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
        record(
            &mut tx,
            target,
            Record {
                call: "workloads.orphan_node_set",
                key,
                action: "",
                effective: n > 0,
                error: None,
            },
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn delete_node_set(&self, target: &Target, node_set: &str) -> StepResult<()> {
        let key = call_key("workloads.delete_node_set", target, node_set, "");
        let mut tx = self
            .begin("workloads.delete_node_set", target, &key)
            .await?;
        let n = sqlx::query("DELETE FROM sim_workloads WHERE cluster_uid = $1 AND node_set = $2")
            .bind(target.uid)
            .bind(node_set)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
        for sql in [
            "DELETE FROM sim_pods WHERE cluster_uid = $1 AND node_set = $2",
            "DELETE FROM sim_exclusions WHERE cluster_uid = $1 AND node_set = $2",
        ] {
            sqlx::query(sql)
                .bind(target.uid)
                .bind(node_set)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        record(
            &mut tx,
            target,
            Record {
                call: "workloads.delete_node_set",
                key,
                action: "",
                effective: n > 0,
                error: None,
            },
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn delete_base(&self, target: &Target, retention: VolumeRetention) -> StepResult<()> {
        let arg = match retention {
            VolumeRetention::Delete => "delete",
            VolumeRetention::Retain => "retain",
        };
        let key = call_key("workloads.delete_base", target, "", arg);
        let mut tx = self.begin("workloads.delete_base", target, &key).await?;
        self.delete_base_tx(&mut tx, target, retention, key)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)
    }
}
