//! Kubernetes: the namespace and shared objects, one StatefulSet per node
//! set, and the volumes its pods leave behind.

use esaas_core::backend::{StepResult, Target, Workloads, WorkloadsObs};
use esaas_core::plan::WorkloadObs;
use esaas_core::spec::VolumeRetention;
use sqlx::Row;
use sqlx::postgres::PgConnection;
use uuid::Uuid;

use super::calls::{Record, call_key, record};
use super::{Sim, db, secs};

/// What an apply of `node_set` stamps on the StatefulSet's template: the node
/// set's spec without its count (replicas are not part of a pod template)
/// and the Elasticsearch version. `None` when the node set is not in the spec.
fn fingerprint(target: &Target, node_set: &str) -> Option<String> {
    let ns = target.spec.node_sets.iter().find(|n| n.name == node_set)?;
    let mut v = serde_json::to_value(ns).ok()?;
    if let Some(m) = v.as_object_mut() {
        m.remove("count");
    }
    Some(serde_json::json!({ "node_set": v, "version": target.spec.version }).to_string())
}

fn endpoint(target: &Target) -> String {
    format!(
        "https://{}.{}.es.example:9200",
        target.cluster_id, target.tenant
    )
}

/// One row of `sim_workloads`, with its age on the database clock.
pub(super) struct WorkloadRow {
    pub(super) node_set: String,
    pub(super) replicas: i32,
    pub(super) fingerprint: String,
    pub(super) version: String,
    pub(super) age: f64,
}

impl Sim {
    /// Ready pods of a StatefulSet: all of them once `pods_ready_delay` has
    /// passed since the apply that changed it.
    pub(super) fn ready(&self, w: &WorkloadRow) -> i32 {
        if w.age >= secs(self.config.pods_ready_delay) {
            w.replicas
        } else {
            0
        }
    }

    pub(super) async fn read_workloads(
        &self,
        conn: &mut PgConnection,
        uid: Uuid,
    ) -> sqlx::Result<Vec<WorkloadRow>> {
        let rows = sqlx::query(
            "SELECT node_set, replicas, fingerprint, version,
                    EXTRACT(EPOCH FROM clock_timestamp() - applied_at)::float8 AS age
               FROM sim_workloads WHERE cluster_uid = $1 ORDER BY node_set",
        )
        .bind(uid)
        .fetch_all(&mut *conn)
        .await?;
        Ok(rows
            .iter()
            .map(|r| WorkloadRow {
                node_set: r.get("node_set"),
                replicas: r.get("replicas"),
                fingerprint: r.get("fingerprint"),
                version: r.get("version"),
                age: r.get("age"),
            })
            .collect())
    }

    async fn apply_node_set_tx(
        &self,
        conn: &mut PgConnection,
        t: &Target,
        node_set: &str,
        replicas: i32,
        key: String,
    ) -> sqlx::Result<()> {
        let row = sqlx::query(
            "SELECT replicas, fingerprint, version FROM sim_workloads
              WHERE cluster_uid = $1 AND node_set = $2 FOR UPDATE",
        )
        .bind(t.uid)
        .bind(node_set)
        .fetch_optional(&mut *conn)
        .await?;
        let old: Option<(i32, String, String)> =
            row.map(|r| (r.get("replicas"), r.get("fingerprint"), r.get("version")));
        // A node set no longer in the spec keeps its template; only its
        // replicas change (it is being emptied).
        let (fp, version) = match fingerprint(t, node_set) {
            Some(fp) => (fp, t.spec.version.clone()),
            None => match &old {
                Some((_, fp, v)) => (fp.clone(), v.clone()),
                None => (String::new(), t.spec.version.clone()),
            },
        };
        let changed = match &old {
            None => true,
            Some((r, f, _)) => *r != replicas || *f != fp,
        };
        if changed {
            sqlx::query(
                "INSERT INTO sim_workloads (cluster_uid, node_set, replicas, fingerprint, version, applied_at)
                 VALUES ($1, $2, $3, $4, $5, clock_timestamp())
                 ON CONFLICT (cluster_uid, node_set) DO UPDATE
                    SET replicas = EXCLUDED.replicas, fingerprint = EXCLUDED.fingerprint,
                        version = EXCLUDED.version, applied_at = EXCLUDED.applied_at",
            )
            .bind(t.uid)
            .bind(node_set)
            .bind(replicas)
            .bind(&fp)
            .bind(&version)
            .execute(&mut *conn)
            .await?;
            // Pods that are gone are no longer excluded; their volumes stay.
            sqlx::query(
                "DELETE FROM sim_exclusions WHERE cluster_uid = $1 AND node_set = $2 AND ordinal >= $3",
            )
            .bind(t.uid)
            .bind(node_set)
            .bind(replicas)
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "INSERT INTO sim_volumes (cluster_uid, node_set, ordinal)
                 SELECT $1, $2, g FROM generate_series(0, $3 - 1) AS g
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
                action: "",
                effective: changed,
                error: None,
            },
        )
        .await
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
            "DELETE FROM sim_exclusions WHERE cluster_uid = $1",
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
        let workloads = rows
            .iter()
            .map(|w| {
                (
                    w.node_set.clone(),
                    WorkloadObs {
                        replicas: w.replicas,
                        ready_replicas: self.ready(w),
                        version: w.version.clone(),
                        up_to_date: fingerprint(target, &w.node_set).as_ref()
                            == Some(&w.fingerprint),
                        // The simulator rolls a new template at once: nothing is held.
                        updated_replicas: w.replicas,
                        partition: 0,
                    },
                )
            })
            .collect();
        Ok(WorkloadsObs {
            base_objects,
            workloads,
            endpoint: base_objects.then(|| endpoint(target)),
        })
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

    async fn roll(&self, _target: &Target, _node_set: &str, _partition: i32) -> StepResult<()> {
        // Never asked: the simulator holds no rollout (partition is always 0).
        Ok(())
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
        sqlx::query("DELETE FROM sim_exclusions WHERE cluster_uid = $1 AND node_set = $2")
            .bind(target.uid)
            .bind(node_set)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
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
