//! The gRPC baseline: `esaas.v1.ClusterService` with handlers that do no
//! work, served by `esaas-bench serve-empty` in a process of its own with
//! the transport settings of `esaas serve` (HTTP/2 keepalive, the message
//! size layer and limit, health). Its answers are real answers of the real
//! server, captured by the benchmark and replayed, so both servers send the
//! same bytes. What it costs is what tonic, HTTP/2 and the loopback cost.
//!
//! `UpdateCluster` sends one event to every open `WatchCluster` stream,
//! through one broadcast channel: the fan-out floor.

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use anyhow::Context;
use esaas_api::size_limit::MessageSizeLayer;
use esaas_proto::v1 as pb;
use esaas_proto::v1::cluster_service_server::{ClusterService, ClusterServiceServer};
use futures::{Stream, StreamExt};
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tonic::{Request, Response, Status};

/// Captured answers, by file name in the responses directory.
pub const GET: &str = "get.bin";
/// A ListClusters page.
pub const LIST: &str = "list.bin";
/// A CreateCluster answer.
pub const CREATE: &str = "create.bin";
/// An UpdateCluster answer.
pub const UPDATE: &str = "update.bin";
/// The first message of a watch: a cluster.
pub const CLUSTER: &str = "cluster.bin";
/// An event of a watch.
pub const EVENT: &str = "event.bin";

/// The largest request, as `esaas serve` has it by default.
const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

#[derive(Debug, Default)]
struct Canned {
    get: pb::GetClusterResponse,
    list: pb::ListClustersResponse,
    create: pb::CreateClusterResponse,
    update: pb::UpdateClusterResponse,
    cluster: pb::Cluster,
    event: pb::ClusterEvent,
}

fn load<M: prost::Message + Default>(dir: &Path, name: &str) -> anyhow::Result<M> {
    let path = dir.join(name);
    match std::fs::read(&path) {
        Ok(bytes) => {
            M::decode(bytes.as_slice()).with_context(|| format!("decoding {}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(M::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The empty service.
#[derive(Debug, Clone)]
struct Empty {
    canned: Arc<Canned>,
    events: broadcast::Sender<pb::ClusterEvent>,
    revision: Arc<AtomicI64>,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchClusterResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ClusterService for Empty {
    async fn create_cluster(
        &self,
        _: Request<pb::CreateClusterRequest>,
    ) -> Result<Response<pb::CreateClusterResponse>, Status> {
        Ok(Response::new(self.canned.create.clone()))
    }

    async fn get_cluster(
        &self,
        _: Request<pb::GetClusterRequest>,
    ) -> Result<Response<pb::GetClusterResponse>, Status> {
        Ok(Response::new(self.canned.get.clone()))
    }

    async fn list_clusters(
        &self,
        _: Request<pb::ListClustersRequest>,
    ) -> Result<Response<pb::ListClustersResponse>, Status> {
        Ok(Response::new(self.canned.list.clone()))
    }

    async fn update_cluster(
        &self,
        _: Request<pb::UpdateClusterRequest>,
    ) -> Result<Response<pb::UpdateClusterResponse>, Status> {
        let mut event = self.canned.event.clone();
        event.revision = self.revision.fetch_add(1, Ordering::Relaxed) + 1;
        // No receivers is fine: nobody watches.
        let _ = self.events.send(event);
        Ok(Response::new(self.canned.update.clone()))
    }

    async fn delete_cluster(
        &self,
        _: Request<pb::DeleteClusterRequest>,
    ) -> Result<Response<pb::DeleteClusterResponse>, Status> {
        Err(Status::unimplemented("not part of the baseline"))
    }

    async fn get_catalog(
        &self,
        _: Request<pb::GetCatalogRequest>,
    ) -> Result<Response<pb::GetCatalogResponse>, Status> {
        Err(Status::unimplemented("not part of the baseline"))
    }

    async fn create_snapshot(
        &self,
        _: Request<pb::CreateSnapshotRequest>,
    ) -> Result<Response<pb::CreateSnapshotResponse>, Status> {
        Err(Status::unimplemented("not part of the baseline"))
    }

    async fn list_snapshots(
        &self,
        _: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        Err(Status::unimplemented("not part of the baseline"))
    }

    async fn restore_snapshot(
        &self,
        _: Request<pb::RestoreSnapshotRequest>,
    ) -> Result<Response<pb::RestoreSnapshotResponse>, Status> {
        Err(Status::unimplemented("not part of the baseline"))
    }

    type WatchClusterStream = WatchStream;

    async fn watch_cluster(
        &self,
        _: Request<pb::WatchClusterRequest>,
    ) -> Result<Response<Self::WatchClusterStream>, Status> {
        let first = pb::WatchClusterResponse {
            payload: Some(pb::watch_cluster_response::Payload::Cluster(
                self.canned.cluster.clone(),
            )),
        };
        let events = BroadcastStream::new(self.events.subscribe()).filter_map(|e| async move {
            // A lagging watcher misses events here; the benchmark counts it as never arriving.
            e.ok().map(|event| {
                Ok(pb::WatchClusterResponse {
                    payload: Some(pb::watch_cluster_response::Payload::Event(event)),
                })
            })
        });
        let stream = futures::stream::once(async move { Ok(first) }).chain(events);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_cluster_credentials(
        &self,
        _: Request<pb::GetClusterCredentialsRequest>,
    ) -> Result<Response<pb::GetClusterCredentialsResponse>, Status> {
        Err(Status::unimplemented("not part of the baseline"))
    }
}

/// Serves the empty service on `listen` with the answers in `responses`
/// until SIGTERM or Ctrl-C.
pub async fn serve(listen: SocketAddr, responses: &Path) -> anyhow::Result<()> {
    let canned = Canned {
        get: load(responses, GET)?,
        list: load(responses, LIST)?,
        create: load(responses, CREATE)?,
        update: load(responses, UPDATE)?,
        cluster: load(responses, CLUSTER)?,
        event: load(responses, EVENT)?,
    };
    let (events, _) = broadcast::channel(1024);
    let service = Empty {
        canned: Arc::new(canned),
        events,
        revision: Arc::new(AtomicI64::new(1_000_000)),
    };
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<ClusterServiceServer<Empty>>().await;
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    // The transport settings of esaas-runtime's server.
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .layer(MessageSizeLayer)
        .add_service(health)
        .add_service(
            ClusterServiceServer::new(service).max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .serve_with_shutdown(listen, shutdown)
        .await
        .context("serving the empty ClusterService")
}

/// A running `esaas-bench serve-empty`.
pub struct EmptyServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The process.
    pub child: crate::proc::Child,
    /// How long it took from spawn to SERVING.
    pub started_in: Duration,
}

impl EmptyServer {
    /// Starts `esaas-bench serve-empty` with the answers in `responses`.
    pub async fn start(
        env: &crate::platform::Env,
        responses: &Path,
        label: &str,
    ) -> anyhow::Result<Self> {
        let port = crate::proc::free_port()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let mut cmd = tokio::process::Command::new(&env.bench);
        cmd.arg("serve-empty")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--responses")
            .arg(responses);
        let spawned = tokio::time::Instant::now();
        let mut child = crate::proc::Child::spawn(
            format!("esaas-bench serve-empty ({label})"),
            cmd,
            &env.file(&format!("{label}.log")),
        )?;
        let started_in = child
            .wait_serving(addr, spawned, Duration::from_secs(30))
            .await?;
        Ok(Self {
            addr,
            child,
            started_in,
        })
    }

    /// Stops it.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.child.stop(Duration::from_secs(10)).await
    }
}
