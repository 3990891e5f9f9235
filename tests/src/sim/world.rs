//! The snapshot of one cluster's simulated world, for test assertions.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use esaas_core::plan::NodeGroupObs;
use uuid::Uuid;

use super::Sim;
use super::workloads::base_exists;

/// One StatefulSet as the simulator holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimWorkload {
    /// Desired replicas.
    pub replicas: i32,
    /// Pods ready now, whatever their template.
    pub ready_replicas: i32,
    /// Pods on its template now.
    pub updated_replicas: i32,
    /// Its RollingUpdate partition: pods below it keep their template.
    pub partition: i32,
    /// Elasticsearch version of its template.
    pub version: String,
    /// Its pods, by ordinal.
    pub pods: BTreeMap<i32, SimPod>,
}

/// One pod of a StatefulSet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimPod {
    /// Elasticsearch version of the template it runs.
    pub version: String,
    /// Whether that is the StatefulSet's template.
    pub updated: bool,
    /// When it was created, or last recreated on a new template.
    pub started_at: DateTime<Utc>,
    /// When it is (or was) ready after that: `pods_ready_delay` later.
    pub ready_at: DateTime<Utc>,
}

/// Everything the simulator holds for one cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimWorld {
    /// Namespace and shared objects exist.
    pub base_objects: bool,
    /// Node groups (gone ones left out), by node set.
    pub node_groups: BTreeMap<String, NodeGroupObs>,
    /// StatefulSets by node set.
    pub workloads: BTreeMap<String, SimWorkload>,
    /// Persistent volumes (they outlive scale-downs, as PVCs of a StatefulSet do).
    pub volumes: i64,
}

impl Sim {
    /// Everything the simulator holds for cluster `uid`, now.
    ///
    /// Panics when the database fails: this is for test assertions.
    pub async fn world(&self, uid: Uuid) -> SimWorld {
        let mut conn = self.pool.acquire().await.expect("connect");
        let base_objects = base_exists(&mut conn, uid).await.expect("read sim_base");
        let node_groups = self
            .read_node_groups(&mut conn, uid)
            .await
            .expect("read sim_node_groups");
        let workloads = self
            .read_workloads(&mut conn, uid)
            .await
            .expect("read sim_workloads")
            .into_iter()
            .map(|w| {
                let pods = w
                    .pods
                    .iter()
                    .map(|p| {
                        let pod = SimPod {
                            version: p.version.clone(),
                            updated: p.fingerprint == w.sts.fingerprint,
                            started_at: p.started_at,
                            ready_at: p.ready_at(self.config.pods_ready_delay),
                        };
                        (p.ordinal, pod)
                    })
                    .collect();
                let workload = SimWorkload {
                    replicas: w.sts.replicas,
                    ready_replicas: w.status.ready,
                    updated_replicas: w.status.updated,
                    partition: w.sts.partition,
                    version: w.sts.version,
                    pods,
                };
                (w.node_set, workload)
            })
            .collect();
        let volumes = sqlx::query_scalar("SELECT count(*) FROM sim_volumes WHERE cluster_uid = $1")
            .bind(uid)
            .fetch_one(&mut *conn)
            .await
            .expect("count sim_volumes");
        SimWorld {
            base_objects,
            node_groups,
            workloads,
            volumes,
        }
    }
}
