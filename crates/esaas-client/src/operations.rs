//! `OperationService`: reading, following and waiting for operations, and the two
//! commands on them (retry, cancel).

use futures::StreamExt;
use futures::stream::BoxStream;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::paging::{ensure_request_id, paged};
use crate::retry::is_resumable;
use crate::v1;

impl Client {
    /// One operation: its stages, attempts, blocking check and error.
    ///
    /// ```no_run
    /// # async fn run(client: esaas_client::Client) -> esaas_client::Result<()> {
    /// let op = client.get_operation("operations/0193...").await?;
    /// println!("{:?}: {}", op.state(), op.blocking_check);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_operation(&self, name: &str) -> Result<v1::Operation> {
        let req = v1::GetOperationRequest { name: name.into() };
        let resp = self
            .retry
            .run(|| {
                let mut c = self.operation_service();
                let r = self.request(req.clone());
                async move { c.get_operation(r).await.map(|r| r.into_inner()) }
            })
            .await?;
        Ok(resp.operation.unwrap_or_default())
    }

    /// Every operation `req` selects, newest first, page after page.
    ///
    /// ```no_run
    /// # async fn run(client: esaas_client::Client) -> esaas_client::Result<()> {
    /// use futures::TryStreamExt;
    /// let req = esaas_client::v1::ListOperationsRequest {
    ///     parent: "tenants/search".into(), filter: "state = RUNNING".into(), ..Default::default()
    /// };
    /// let mut ops = client.list_operations(req);
    /// while let Some(op) = ops.try_next().await? {
    ///     println!("{} {:?}", op.name, op.kind());
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn list_operations(
        &self,
        req: v1::ListOperationsRequest,
    ) -> BoxStream<'static, Result<v1::Operation>> {
        let client = self.clone();
        paged(
            self.retry.clone(),
            req,
            move |req| {
                let mut c = client.operation_service();
                let r = client.request(req);
                async move { c.list_operations(r).await.map(|r| r.into_inner()) }
            },
            |p| (p.operations, p.next_page_token),
            |r, t| r.page_token = t,
        )
    }

    /// The operation now, then again after every change (a stage starting or ending,
    /// an attempt, a blocking check), ending with the message whose `done` is true.
    /// A dropped connection is reopened (watching is a read: always safe); the first
    /// message after that is the operation as it is then.
    ///
    /// ```no_run
    /// # async fn run(client: esaas_client::Client) -> esaas_client::Result<()> {
    /// use futures::TryStreamExt;
    /// let mut progress = client.watch_operation("operations/0193...");
    /// while let Some(op) = progress.try_next().await? {
    ///     let stage = op.stages.iter().rev().find(|s| s.start_time.is_some());
    ///     println!("{:?} {}", op.state(), stage.map(|s| s.name.as_str()).unwrap_or("queued"));
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn watch_operation(&self, name: &str) -> BoxStream<'static, Result<v1::Operation>> {
        let client = self.clone();
        let req = v1::WatchOperationRequest { name: name.into() };
        Box::pin(async_stream::try_stream! {
            let mut reconnects = client.retry.reconnects();
            loop {
                let opened = client.operation_service().watch_operation(req.clone()).await;
                let failure = match opened {
                    Err(status) => status,
                    Ok(stream) => {
                        let mut stream = stream.into_inner();
                        loop {
                            match stream.message().await {
                                Ok(Some(v1::WatchOperationResponse { operation: Some(op) })) => {
                                    reconnects = client.retry.reconnects();
                                    let done = op.done;
                                    yield op;
                                    if done {
                                        return;
                                    }
                                }
                                Ok(Some(_)) => {}
                                // The server ended the stream before the operation did
                                // (it is shutting down): open it again.
                                Ok(None) => break tonic::Status::unavailable("the watch ended early"),
                                Err(status) => break status,
                            }
                        }
                    }
                };
                if !is_resumable(&failure) || !reconnects.wait(&failure).await {
                    Err(Error::from(failure))?;
                }
            }
        })
    }

    /// Waits until the operation is done: the operation if it SUCCEEDED,
    /// [`Error::OperationFailed`] with the whole operation if it FAILED or was
    /// CANCELLED. A STALLED operation is still waited for (a retry or an override may
    /// unblock it); bound the wait with `tokio::time::timeout` if that is not wanted.
    ///
    /// ```no_run
    /// # async fn run(client: esaas_client::Client) -> esaas_client::Result<()> {
    /// match client.wait_operation("operations/0193...").await {
    ///     Ok(op) => println!("done in {} attempt(s)", op.attempts.len()),
    ///     Err(esaas_client::Error::OperationFailed(op)) => eprintln!("failed: {:?}", op.error),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn wait_operation(&self, name: &str) -> Result<v1::Operation> {
        let mut progress = self.watch_operation(name);
        let mut last = None;
        while let Some(op) = progress.next().await {
            last = Some(op?);
        }
        let op = last.ok_or_else(|| {
            Error::from(tonic::Status::unavailable(
                "the watch ended without an answer",
            ))
        })?;
        match op.state() {
            v1::OperationState::Succeeded => Ok(op),
            _ => Err(Error::OperationFailed(Box::new(op))),
        }
    }

    /// Re-queues a FAILED or STALLED operation with a fresh attempt budget; safe to retry.
    ///
    /// ```no_run
    /// # async fn run(client: esaas_client::Client) -> esaas_client::Result<()> {
    /// let op = client.retry_operation("operations/0193...").await?;
    /// client.wait_operation(&op.name).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn retry_operation(&self, name: &str) -> Result<v1::Operation> {
        let mut req = v1::RetryOperationRequest {
            name: name.into(),
            request_id: String::new(),
        };
        ensure_request_id(&mut req.request_id);
        let resp = self
            .retry
            .run(|| {
                let mut c = self.admin_service();
                let r = self.request(req.clone());
                async move { c.retry_operation(r).await.map(|r| r.into_inner()) }
            })
            .await?;
        Ok(resp.operation.unwrap_or_default())
    }

    /// Asks a QUEUED, RUNNING or STALLED operation to stop at its next safe point;
    /// safe to retry. Watch it to see it end CANCELLED.
    ///
    /// ```no_run
    /// # async fn run(client: esaas_client::Client) -> esaas_client::Result<()> {
    /// let op = client.cancel_operation("operations/0193...").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn cancel_operation(&self, name: &str) -> Result<v1::Operation> {
        let mut req = v1::CancelOperationRequest {
            name: name.into(),
            request_id: String::new(),
        };
        ensure_request_id(&mut req.request_id);
        let resp = self
            .retry
            .run(|| {
                let mut c = self.operation_service();
                let r = self.request(req.clone());
                async move { c.cancel_operation(r).await.map(|r| r.into_inner()) }
            })
            .await?;
        Ok(resp.operation.unwrap_or_default())
    }

    /// Lets the gate a STALLED operation waits at pass once, with a
    /// justification for the cluster's event log; safe to retry. The
    /// operation is queued again; watch it to see it pass the gate.
    ///
    /// ```no_run
    /// # async fn run(client: esaas_client::Client) -> esaas_client::Result<()> {
    /// let op = client
    ///     .override_gate("operations/0193...", "yellow while logs-7 restores")
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn override_gate(&self, name: &str, justification: &str) -> Result<v1::Operation> {
        let mut req = v1::OverrideGateRequest {
            name: name.into(),
            justification: justification.into(),
            request_id: String::new(),
        };
        ensure_request_id(&mut req.request_id);
        let resp = self
            .retry
            .run(|| {
                let mut c = self.operation_service();
                let r = self.request(req.clone());
                async move { c.override_gate(r).await.map(|r| r.into_inner()) }
            })
            .await?;
        Ok(resp.operation.unwrap_or_default())
    }
}
