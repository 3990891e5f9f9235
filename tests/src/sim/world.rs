//! The snapshot of one cluster's simulated world, for test assertions.

use std::collections::BTreeMap;

use esaas_core::plan::NodeGroupObs;
use uuid::Uuid;

use super::Sim;
use super::workloads::base_exists;

/// One StatefulSet as the simulator holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimWorkload {
    /// Desired replicas.
    pub replicas: i32,
    /// Ready replicas now.
    pub ready_replicas: i32,
    /// Elasticsearch version of its template.
    pub version: String,
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
                let ready = self.ready(&w);
                (
                    w.node_set,
                    SimWorkload {
                        replicas: w.replicas,
                        ready_replicas: ready,
                        version: w.version,
                    },
                )
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
