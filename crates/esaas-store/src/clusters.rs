//! Clusters: create, read, list, update and delete, each change recorded
//! with its operation and its event in one transaction.

use esaas_core::catalog::Catalog;
use esaas_core::cluster::{
    Cluster, ClusterState, Condition, ConditionStatus, Disruption, Health, SpecField,
    classify_change, set_condition,
};
use esaas_core::event::EventKind;
use esaas_core::names::{ClusterId, ClusterName, TenantId};
use esaas_core::operation::{Initiator, Operation, OperationKind, OperationState};
use esaas_core::spec::ClusterSpec;
use esaas_core::tenant::check_quota;
use esaas_core::{Error, Result};
use sqlx::AssertSqlSafe;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::Store;
use crate::error::{db_error, is_unique_violation};
use crate::events::{commit_change, lock_cluster};
use crate::operations::{insert_operation, lock_operation_in_state, new_operation, save_operation};
use crate::rows::{self, CLUSTER_COLUMNS, to_json};
use crate::tenants::lock_tenant;

/// A cluster to create.
#[derive(Debug, Clone)]
pub struct NewCluster {
    /// Owner.
    pub tenant: TenantId,
    /// Id within the tenant.
    pub cluster_id: ClusterId,
    /// Validated spec, with defaults.
    pub spec: ClusterSpec,
    /// Who asks.
    pub initiator: Initiator,
    /// Attempt budget of the create operation.
    pub max_attempts: i32,
}

/// A created cluster and its create operation.
#[derive(Debug, Clone)]
pub struct CreatedCluster {
    /// The cluster.
    pub cluster: Cluster,
    /// Its queued create operation.
    pub operation: Operation,
}

/// A spec change: the fields of `spec` named by `fields`.
#[derive(Debug, Clone)]
pub struct SpecPatch {
    /// New values.
    pub spec: ClusterSpec,
    /// Which fields to take.
    pub fields: Vec<SpecField>,
}

/// The result of an update or delete.
#[derive(Debug, Clone)]
pub struct UpdatedCluster {
    /// The cluster after the change.
    pub cluster: Cluster,
    /// The operation that carries it (none for a change that changes nothing).
    pub operation: Option<Operation>,
    /// How disruptive it is.
    pub disruption: Disruption,
}

/// Which clusters to list.
#[derive(Debug, Clone, Default)]
pub struct ClusterFilter {
    /// One tenant, or all.
    pub tenant: Option<TenantId>,
    /// One state, or all.
    pub state: Option<ClusterState>,
    /// Include DELETED tombstones.
    pub show_deleted: bool,
    /// Keyset cursor: only clusters after (tenant, cluster id, uid).
    pub after: Option<(String, String, Uuid)>,
    /// Page size.
    pub limit: i64,
}

/// One page of clusters.
pub type ClusterPage = Vec<Cluster>;

fn not_found(name: &ClusterName) -> Error {
    Error::NotFound {
        kind: "Cluster",
        name: name.to_string(),
    }
}

fn queued_condition(op: &Operation) -> Condition {
    Condition {
        kind: "OperationQueued".into(),
        status: ConditionStatus::True,
        reason: "WaitingForWorker".into(),
        message: format!(
            "{} is queued: waiting for a worker to pick it up",
            op.name()
        ),
        last_transition_time: esaas_core::now(),
    }
}

/// Locks the live (not DELETED) cluster called `name`.
async fn lock_live(conn: &mut PgConnection, name: &ClusterName) -> Result<Cluster> {
    let uid: Option<Uuid> = sqlx::query_scalar(
        "SELECT uid FROM clusters WHERE tenant_id = $1 AND cluster_id = $2 AND state <> 'DELETED'",
    )
    .bind(name.tenant.as_str())
    .bind(name.cluster.as_str())
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_error)?;
    let uid = uid.ok_or_else(|| not_found(name))?;
    lock_cluster(conn, uid)
        .await?
        .ok_or_else(|| not_found(name))
}

impl Store {
    /// Records a new cluster (PROVISIONING), its queued create operation and
    /// its first event, after checking the tenant's quota under the tenant lock.
    pub async fn create_cluster(
        conn: &mut PgConnection,
        new: &NewCluster,
    ) -> Result<CreatedCluster> {
        let tenant = lock_tenant(conn, &new.tenant).await?;
        check_quota(
            &tenant.id,
            &tenant.quota,
            tenant.usage,
            tenant.usage.plus(&new.spec),
        )?;
        let now = esaas_core::now();
        let mut cluster = Cluster {
            uid: Uuid::now_v7(),
            tenant: new.tenant.clone(),
            cluster_id: new.cluster_id.clone(),
            spec: new.spec.clone(),
            generation: 1,
            observed_generation: 0,
            state: ClusterState::Provisioning,
            health: Health::Unknown,
            endpoint: None,
            conditions: Vec::new(),
            message: String::new(),
            current_operation: None,
            version: 0,
            revision: 0,
            create_time: now,
            update_time: now,
            delete_time: None,
        };
        sqlx::query(
            "INSERT INTO clusters (uid, tenant_id, cluster_id, spec, node_count, storage_gib, generation, state, health, \
             version, revision, create_time, update_time) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, 0, $10, $10)",
        )
        .bind(cluster.uid)
        .bind(cluster.tenant.as_str())
        .bind(cluster.cluster_id.as_str())
        .bind(to_json(&cluster.spec)?)
        .bind(cluster.spec.node_count())
        .bind(cluster.spec.storage_gib())
        .bind(cluster.generation)
        .bind(cluster.state.as_str())
        .bind(cluster.health.as_str())
        .bind(now)
        .execute(&mut *conn)
        .await
        .map_err(|e| {
            if is_unique_violation(&e, "clusters_live_name") {
                Error::AlreadyExists {
                    kind: "Cluster",
                    name: cluster.name().to_string(),
                }
            } else {
                db_error(e)
            }
        })?;
        let operation = new_operation(
            &new.tenant,
            &cluster,
            OperationKind::Create,
            new.initiator.clone(),
            new.max_attempts,
        );
        insert_operation(conn, &operation).await?;
        cluster.current_operation = Some(operation.id);
        cluster.message = operation.summary();
        set_condition(&mut cluster.conditions, queued_condition(&operation));
        commit_change(
            conn,
            &mut cluster,
            EventKind::Created,
            format!(
                "cluster created by {}; {} queued",
                new.initiator.principal,
                operation.name()
            ),
            Some(operation.id),
        )
        .await?;
        Ok(CreatedCluster { cluster, operation })
    }

    /// Changes the spec: validates the merged spec, refuses unsafe changes,
    /// checks quota, bumps the generation, and queues an update or folds the
    /// change into the operation already queued for the cluster.
    pub async fn update_cluster(
        conn: &mut PgConnection,
        catalog: &Catalog,
        name: &ClusterName,
        etag: &str,
        patch: &SpecPatch,
        initiator: &Initiator,
        max_attempts: i32,
    ) -> Result<UpdatedCluster> {
        let mut cluster = lock_live(conn, name).await?;
        cluster.check_etag(etag)?;
        if cluster.state == ClusterState::Deleting {
            return Err(Error::precondition(
                name.to_string(),
                "the cluster is being deleted and can no longer change",
            ));
        }
        let spec = cluster
            .spec
            .merged(&patch.spec, &patch.fields)
            .with_defaults();
        spec.validate(catalog, "cluster.spec")?;
        let disruption = classify_change(&cluster.spec, &spec, "cluster.spec")?;
        if spec == cluster.spec {
            let operation = match cluster.current_operation {
                Some(id) => Some(load_operation(conn, id).await?),
                None => None,
            };
            return Ok(UpdatedCluster {
                cluster,
                operation,
                disruption: Disruption::None,
            });
        }
        let tenant = lock_tenant(conn, &cluster.tenant).await?;
        let mut without = tenant.usage;
        without.clusters -= 1;
        without.nodes -= cluster.spec.node_count();
        without.storage_gib -= cluster.spec.storage_gib();
        check_quota(&tenant.id, &tenant.quota, tenant.usage, without.plus(&spec))?;

        cluster.spec = spec;
        cluster.generation += 1;
        let queued = lock_operation_in_state(conn, cluster.uid, &[OperationState::Queued]).await?;
        let operation = match queued {
            Some(mut op) => {
                op.target_generation = cluster.generation;
                save_operation(conn, &mut op).await?;
                op
            }
            None => {
                let op = new_operation(
                    &cluster.tenant,
                    &cluster,
                    OperationKind::Update,
                    initiator.clone(),
                    max_attempts,
                );
                insert_operation(conn, &op).await?;
                op
            }
        };
        let running = lock_operation_in_state(
            conn,
            cluster.uid,
            &[OperationState::Running, OperationState::Stalled],
        )
        .await?;
        if running.is_none() {
            cluster.current_operation = Some(operation.id);
            cluster.message = operation.summary();
            set_condition(&mut cluster.conditions, queued_condition(&operation));
        }
        if matches!(
            cluster.state,
            ClusterState::Ready | ClusterState::Degraded | ClusterState::Failed
        ) {
            cluster.state = ClusterState::Updating;
        }
        let message = format!(
            "spec generation {} by {} ({:?} change); carried by {}",
            cluster.generation,
            initiator.principal,
            disruption,
            operation.name()
        );
        commit_change(
            conn,
            &mut cluster,
            EventKind::SpecUpdated,
            message,
            Some(operation.id),
        )
        .await?;
        Ok(UpdatedCluster {
            cluster,
            operation: Some(operation),
            disruption,
        })
    }

    /// Requests deletion: cancels a queued change, asks a running one to stop,
    /// and queues the delete operation. Deleting a cluster that is already
    /// DELETING returns its delete operation.
    pub async fn delete_cluster(
        conn: &mut PgConnection,
        name: &ClusterName,
        etag: &str,
        initiator: &Initiator,
        max_attempts: i32,
    ) -> Result<UpdatedCluster> {
        let mut cluster = lock_live(conn, name).await?;
        cluster.check_etag(etag)?;
        let active = [
            OperationState::Queued,
            OperationState::Running,
            OperationState::Stalled,
        ];
        if cluster.state == ClusterState::Deleting {
            let op = lock_operation_in_state(conn, cluster.uid, &active).await?;
            return Ok(UpdatedCluster {
                cluster,
                operation: op,
                disruption: Disruption::Destructive,
            });
        }
        let now = esaas_core::now();
        if let Some(mut queued) =
            lock_operation_in_state(conn, cluster.uid, &[OperationState::Queued]).await?
        {
            queued.state = OperationState::Cancelled;
            queued.end_time = Some(now);
            save_operation(conn, &mut queued).await?;
        }
        let running = lock_operation_in_state(
            conn,
            cluster.uid,
            &[OperationState::Running, OperationState::Stalled],
        )
        .await?;
        let running = match running {
            // A stalled operation has no worker to tell: it ends here.
            Some(mut stalled) if stalled.state == OperationState::Stalled => {
                stalled.state = OperationState::Cancelled;
                stalled.end_time = Some(now);
                save_operation(conn, &mut stalled).await?;
                None
            }
            // A running one is told to stop by the control plane at its worker's next heartbeat.
            Some(mut running) => {
                running.cancel_requested = true;
                save_operation(conn, &mut running).await?;
                Some(running)
            }
            None => None,
        };
        let operation = new_operation(
            &cluster.tenant,
            &cluster,
            OperationKind::Delete,
            initiator.clone(),
            max_attempts,
        );
        insert_operation(conn, &operation).await?;
        cluster.state = ClusterState::Deleting;
        cluster.delete_time = Some(now);
        if running.is_none() {
            cluster.current_operation = Some(operation.id);
        }
        cluster.message = operation.summary();
        set_condition(&mut cluster.conditions, queued_condition(&operation));
        let message = format!(
            "deletion requested by {}; {} queued",
            initiator.principal,
            operation.name()
        );
        commit_change(
            conn,
            &mut cluster,
            EventKind::DeleteRequested,
            message,
            Some(operation.id),
        )
        .await?;
        Ok(UpdatedCluster {
            cluster,
            operation: Some(operation),
            disruption: Disruption::Destructive,
        })
    }

    /// The live cluster called `name`, or else its newest tombstone.
    pub async fn get_cluster(&self, name: &ClusterName) -> Result<Cluster> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {CLUSTER_COLUMNS} FROM clusters WHERE tenant_id = $1 AND cluster_id = $2 \
             ORDER BY (state = 'DELETED'), create_time DESC LIMIT 1"
        )))
        .bind(name.tenant.as_str())
        .bind(name.cluster.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?
        .ok_or_else(|| not_found(name))?;
        rows::cluster(&row)
    }

    /// The cluster with this uid.
    pub async fn get_cluster_by_uid(&self, uid: Uuid) -> Result<Option<Cluster>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {CLUSTER_COLUMNS} FROM clusters WHERE uid = $1"
        )))
        .bind(uid)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.as_ref().map(rows::cluster).transpose()
    }

    /// Clusters matching `filter`, in (tenant, name, uid) order.
    pub async fn list_clusters(&self, filter: &ClusterFilter) -> Result<ClusterPage> {
        let (a_tenant, a_cluster, a_uid) = match &filter.after {
            Some((t, c, u)) => (Some(t.as_str()), Some(c.as_str()), Some(*u)),
            None => (None, None, None),
        };
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {CLUSTER_COLUMNS} FROM clusters \
             WHERE ($1::text IS NULL OR tenant_id = $1) AND ($2::text IS NULL OR state = $2) \
             AND ($3 OR state <> 'DELETED') \
             AND ($4::text IS NULL OR (tenant_id, cluster_id, uid) > ($4, $5, $6)) \
             ORDER BY tenant_id, cluster_id, uid LIMIT $7"
        )))
        .bind(filter.tenant.as_ref().map(|t| t.as_str()))
        .bind(filter.state.map(|s| s.as_str()))
        .bind(filter.show_deleted)
        .bind(a_tenant)
        .bind(a_cluster)
        .bind(a_uid)
        .bind(filter.limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter().map(rows::cluster).collect()
    }
}

async fn load_operation(conn: &mut PgConnection, id: Uuid) -> Result<Operation> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {} FROM operations o JOIN clusters c ON c.uid = o.cluster_uid WHERE o.id = $1",
        rows::OPERATION_COLUMNS
    )))
    .bind(id)
    .fetch_one(&mut *conn)
    .await
    .map_err(db_error)?;
    rows::operation(&row)
}
