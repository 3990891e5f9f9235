//! `esaas.v1.WorkerService`. The contract is fixed here; assigning work and
//! taking reports arrive with the worker pool. Until then a worker that
//! connects is authenticated and told plainly that no assignments are served.

use esaas_proto::v1 as pb;
use tonic::{Request, Status, Streaming};

use crate::Api;
use crate::error::{ApiResult, to_status};
use crate::watch::BoxStream;

#[tonic::async_trait]
impl pb::worker_service_server::WorkerService for Api {
    type ConnectStream = BoxStream<pb::ConnectResponse>;

    async fn connect(
        &self,
        req: Request<Streaming<pb::ConnectRequest>>,
    ) -> ApiResult<Self::ConnectStream> {
        let principal = self.principal(&req).await.map_err(to_status)?;
        principal.require_worker().map_err(to_status)?;
        Err(Status::unimplemented(
            "this control plane does not hand out work yet: operations stay QUEUED until the worker pool is deployed",
        ))
    }
}
