//! EKS managed node groups: CREATING, UPDATING and DELETING for
//! `node_group_delay` after a change, then ACTIVE (or gone).

use std::collections::BTreeMap;

use esaas_core::backend::{NodeGroups, StepError, StepResult, Target};
use esaas_core::plan::{NodeGroupObs, NodeGroupStatus};
use sqlx::Row;
use sqlx::postgres::PgConnection;
use uuid::Uuid;

use super::calls::{Record, call_key, record};
use super::{Sim, db, secs};

const PHASE_CREATING: &str = "CREATING";
const PHASE_UPDATING: &str = "UPDATING";
const PHASE_DELETING: &str = "DELETING";

impl Sim {
    /// Marks the node group of `node_set` FAILED with `message` (as EKS
    /// reports CREATE_FAILED or a degraded group) until it is deleted.
    pub async fn fail_node_group(&self, uid: Uuid, node_set: &str, message: &str) {
        sqlx::query(
            "UPDATE sim_node_groups SET failed_message = $3 WHERE cluster_uid = $1 AND node_set = $2",
        )
        .bind(uid)
        .bind(node_set)
        .bind(message)
        .execute(&self.pool)
        .await
        .expect("fail node group");
    }

    pub(super) async fn read_node_groups(
        &self,
        conn: &mut PgConnection,
        uid: Uuid,
    ) -> sqlx::Result<BTreeMap<String, NodeGroupObs>> {
        let rows = sqlx::query(
            "SELECT node_set, desired_size, phase, failed_message,
                    EXTRACT(EPOCH FROM clock_timestamp() - changed_at)::float8 AS age
               FROM sim_node_groups WHERE cluster_uid = $1",
        )
        .bind(uid)
        .fetch_all(&mut *conn)
        .await?;
        let delay = secs(self.config.node_group_delay);
        let mut out = BTreeMap::new();
        for r in rows {
            let phase: String = r.get("phase");
            let age: f64 = r.get("age");
            let failed: String = r.get("failed_message");
            let settled = age >= delay;
            let status = match phase.as_str() {
                PHASE_DELETING if settled => continue,
                PHASE_DELETING => NodeGroupStatus::Deleting,
                _ if !failed.is_empty() => NodeGroupStatus::Failed,
                _ if settled => NodeGroupStatus::Active,
                PHASE_CREATING => NodeGroupStatus::Creating,
                _ => NodeGroupStatus::Updating,
            };
            out.insert(
                r.get("node_set"),
                NodeGroupObs {
                    instance_type: "sim".into(),
                    desired_size: r.get("desired_size"),
                    status,
                    message: failed,
                    zones: Default::default(),
                },
            );
        }
        Ok(out)
    }

    async fn ensure_tx(
        &self,
        conn: &mut PgConnection,
        t: &Target,
        node_set: &str,
        size: i32,
    ) -> sqlx::Result<StepResult<()>> {
        let token = t.idempotency_key(&format!("nodegroup-{node_set}"));
        let update_key = format!(
            "nodegroup.ensure:{}:{node_set}:{size}:{}",
            t.uid,
            t.operation.simple()
        );
        let row = sqlx::query(
            "SELECT desired_size, phase, create_token,
                    EXTRACT(EPOCH FROM clock_timestamp() - changed_at)::float8 AS age
               FROM sim_node_groups WHERE cluster_uid = $1 AND node_set = $2 FOR UPDATE",
        )
        .bind(t.uid)
        .bind(node_set)
        .fetch_optional(&mut *conn)
        .await?;
        let delay = secs(self.config.node_group_delay);
        let existing = row.filter(|r| {
            let phase: String = r.get("phase");
            let age: f64 = r.get("age");
            !(phase == PHASE_DELETING && age >= delay)
        });
        let Some(r) = existing else {
            // CreateNodegroup with clientRequestToken.
            sqlx::query(
                "INSERT INTO sim_node_groups
                        (cluster_uid, node_set, desired_size, phase, changed_at, create_token, failed_message)
                 VALUES ($1, $2, $3, 'CREATING', clock_timestamp(), $4, '')
                 ON CONFLICT (cluster_uid, node_set) DO UPDATE
                    SET desired_size = EXCLUDED.desired_size, phase = 'CREATING',
                        changed_at = EXCLUDED.changed_at, create_token = EXCLUDED.create_token,
                        failed_message = ''",
            )
            .bind(t.uid)
            .bind(node_set)
            .bind(size)
            .bind(&token)
            .execute(&mut *conn)
            .await?;
            record(
                conn,
                t,
                Record {
                    call: "nodegroup.ensure",
                    key: token,
                    action: "create",
                    effective: true,
                    error: None,
                },
            )
            .await?;
            return Ok(Ok(()));
        };
        let phase: String = r.get("phase");
        let desired: i32 = r.get("desired_size");
        let create_token: String = r.get("create_token");
        if phase == PHASE_DELETING {
            let e = StepError::retryable(
                "EKS_RESOURCE_IN_USE",
                format!("node group of {node_set} is being deleted"),
            );
            record(
                conn,
                t,
                Record {
                    call: "nodegroup.ensure",
                    key: update_key,
                    action: "update",
                    effective: false,
                    error: Some(e.to_string()),
                },
            )
            .await?;
            return Ok(Err(e));
        }
        if desired == size {
            // Nothing to change. A repeat of our own create: EKS answers
            // with the existing node group for the same token.
            let (key, action) = if create_token == token {
                (token, "create")
            } else {
                (update_key, "update")
            };
            record(
                conn,
                t,
                Record {
                    call: "nodegroup.ensure",
                    key,
                    action,
                    effective: false,
                    error: None,
                },
            )
            .await?;
            return Ok(Ok(()));
        }
        // UpdateNodegroupConfig. A group still being created stays CREATING.
        let age: f64 = r.get("age");
        let new_phase = if phase == PHASE_CREATING && age < delay {
            PHASE_CREATING
        } else {
            PHASE_UPDATING
        };
        sqlx::query(
            "UPDATE sim_node_groups
                SET desired_size = $3, phase = $4, changed_at = clock_timestamp()
              WHERE cluster_uid = $1 AND node_set = $2",
        )
        .bind(t.uid)
        .bind(node_set)
        .bind(size)
        .bind(new_phase)
        .execute(&mut *conn)
        .await?;
        record(
            conn,
            t,
            Record {
                call: "nodegroup.ensure",
                key: update_key,
                action: "update",
                effective: true,
                error: None,
            },
        )
        .await?;
        Ok(Ok(()))
    }

    async fn delete_group_tx(
        &self,
        conn: &mut PgConnection,
        t: &Target,
        node_set: &str,
        key: String,
    ) -> sqlx::Result<()> {
        let n = sqlx::query(
            "UPDATE sim_node_groups SET phase = 'DELETING', changed_at = clock_timestamp()
              WHERE cluster_uid = $1 AND node_set = $2 AND phase <> 'DELETING'",
        )
        .bind(t.uid)
        .bind(node_set)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        record(
            conn,
            t,
            Record {
                call: "nodegroup.delete",
                key,
                action: "",
                effective: n > 0,
                error: None,
            },
        )
        .await
    }
}

impl NodeGroups for Sim {
    async fn observe(&self, target: &Target) -> StepResult<BTreeMap<String, NodeGroupObs>> {
        self.check("nodegroup.observe").await?;
        let mut conn = self.pool.acquire().await.map_err(db)?;
        self.read_node_groups(&mut conn, target.uid)
            .await
            .map_err(db)
    }

    async fn ensure(&self, target: &Target, node_set: &str, size: i32) -> StepResult<()> {
        let token = target.idempotency_key(&format!("nodegroup-{node_set}"));
        let mut tx = self.begin("nodegroup.ensure", target, &token).await?;
        let outcome = self
            .ensure_tx(&mut tx, target, node_set, size)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        outcome
    }

    /// The simulated world has one group per node set and no zones, so no
    /// node images to move: the node rotation runs against EKS (moto).
    async fn update_version(&self, _: &Target, node_set: &str, _: &str, _: &str) -> StepResult<()> {
        Err(StepError::permanent(
            "SIM_NO_NODE_IMAGES",
            format!("the simulated node group of {node_set} has no node image to move"),
        ))
    }

    async fn delete(&self, target: &Target, node_set: &str) -> StepResult<()> {
        let key = call_key("nodegroup.delete", target, node_set, "");
        let mut tx = self.begin("nodegroup.delete", target, &key).await?;
        self.delete_group_tx(&mut tx, target, node_set, key)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)
    }
}
