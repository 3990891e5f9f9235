"""Client: connect, authenticate, retry safely, wait, watch and page.

Retries follow AIP-194: UNAVAILABLE is retried, RESOURCE_EXHAUSTED only when the server
sent google.rpc.RetryInfo (a rate limit says when to come back; a full quota stays
full), with exponential backoff and full jitter, never sooner than the server asked.
Every mutation gets its request_id once, before the first attempt, so a retry whose
first attempt reached the server gets the first answer back instead of a second cluster.
"""

import ipaddress
import os
import random
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional

import grpc
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from esaas.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    cluster_pb2,
    cluster_pb2_grpc,
    operation_pb2,
    operation_pb2_grpc,
)


class EsaasError(Exception):
    """An error status from esaas, with its google.rpc details decoded (AIP-193)."""

    def __init__(self, err: grpc.RpcError):
        self.rpc_error = err
        self.code: grpc.StatusCode = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
        self.message: str = err.details() if hasattr(err, "details") else str(err)
        self.reason: Optional[str] = None
        self.field_violations: List[error_details_pb2.BadRequest.FieldViolation] = []
        self.quota_violations: List[error_details_pb2.QuotaFailure.Violation] = []
        self.precondition_violations: List[error_details_pb2.PreconditionFailure.Violation] = []
        self.resource: Optional[error_details_pb2.ResourceInfo] = None
        self.retry_delay: Optional[float] = None
        try:
            status = rpc_status.from_call(err) if hasattr(err, "trailing_metadata") else None
        except ValueError:  # details that contradict the status: keep the code and message
            status = None
        for any_ in status.details if status else ():
            for cls, keep in (
                (error_details_pb2.ErrorInfo, lambda m: setattr(self, "reason", m.reason)),
                (error_details_pb2.BadRequest, lambda m: self.field_violations.extend(m.field_violations)),
                (error_details_pb2.QuotaFailure, lambda m: self.quota_violations.extend(m.violations)),
                (error_details_pb2.PreconditionFailure, lambda m: self.precondition_violations.extend(m.violations)),
                (error_details_pb2.ResourceInfo, lambda m: setattr(self, "resource", m)),
                (error_details_pb2.RetryInfo, lambda m: setattr(self, "retry_delay", m.retry_delay.ToTimedelta().total_seconds())),
            ):
                if any_.Is(cls.DESCRIPTOR):
                    msg = cls()
                    any_.Unpack(msg)
                    keep(msg)
        super().__init__(f"{self.code.name}: {self.message}")


class OperationFailed(Exception):
    """An operation that was waited for ended FAILED or CANCELLED; ``operation`` has it whole."""

    def __init__(self, op: operation_pb2.Operation):
        self.operation = op
        state = operation_pb2.OperationState.Name(op.state)
        super().__init__(f"{op.name} ended {state}: {op.error.message or op.message}")


@dataclass
class RetryPolicy:
    """How calls are retried and streams reconnected."""

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    max_reconnects: int = 30

    def delays(self, count: int) -> Iterator[float]:
        """Full-jitter exponential delays, ``count`` of them."""
        for i in range(count):
            yield random.uniform(0, min(self.max_backoff, self.initial_backoff * 2**i))


def retryable(err: EsaasError) -> bool:
    """Whether a unary call may be tried again (AIP-194)."""
    if err.code == grpc.StatusCode.UNAVAILABLE:
        return True
    return err.code == grpc.StatusCode.RESOURCE_EXHAUSTED and err.retry_delay is not None


def resumable(err: EsaasError) -> bool:
    """Whether a read stream should be opened again: a transient error, or a broken connection."""
    return retryable(err) or err.code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)


@dataclass
class WatchItem:
    """One item of ``Client.watch_cluster``: the first ``cluster``, then each ``event``;
    ``resumed_after`` is set (and nothing else) when the watch reconnected after that revision;
    ``resynced_after`` is set, with the ``cluster`` as it is now, when the events after that
    revision had expired (OUT_OF_RANGE): the watch started again from the cluster's current
    revision, and the events in between are not delivered."""

    cluster: Optional[cluster_pb2.Cluster] = None
    event: Optional[cluster_pb2.ClusterEvent] = None
    resumed_after: Optional[int] = None
    resynced_after: Optional[int] = None


def _target(addr: str):
    """(host:port, tls): http:// is plaintext, https:// TLS; a bare host:port is
    plaintext only on loopback, so a typo never sends a key in clear over the network."""
    if addr.startswith("http://"):
        return addr[len("http://") :], False
    if addr.startswith("https://"):
        rest = addr[len("https://") :]
        return (rest if ":" in rest else rest + ":443"), True
    host = addr.rsplit(":", 1)[0].strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    return addr, not loopback


class Client:
    """A connection to esaas.

    ``addr`` and ``key`` default to ``$ESAAS_ADDR`` and ``$ESAAS_KEY``. The raw stubs are
    ``clusters``, ``operations`` and ``admin``; send ``self.metadata`` with their calls.
    """

    def __init__(
        self,
        addr: Optional[str] = None,
        key: Optional[str] = None,
        *,
        root_certificates: Optional[bytes] = None,
        retry: Optional[RetryPolicy] = None,
        timeout: float = 30.0,
    ):
        addr = addr or os.environ.get("ESAAS_ADDR")
        if not addr:
            raise ValueError("no address: pass addr or set ESAAS_ADDR (for example http://127.0.0.1:50051)")
        key = key if key is not None else os.environ.get("ESAAS_KEY", "")
        self.addr = addr
        # A private CA, as esaasctl takes it: ESAAS_CA_CERT names a PEM file. Given, it
        # replaces the system's roots for https://.
        ca_file = os.environ.get("ESAAS_CA_CERT")
        if root_certificates is None and ca_file:
            with open(ca_file, "rb") as f:
                root_certificates = f.read()
        self.root_certificates = root_certificates
        target, tls = _target(addr)
        if tls:
            self.channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates))
        else:
            self.channel = grpc.insecure_channel(target)
        self.metadata = [("authorization", f"Bearer {key}")] if key else []
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.clusters = cluster_pb2_grpc.ClusterServiceStub(self.channel)
        self.operations = operation_pb2_grpc.OperationServiceStub(self.channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def with_key(self, key: str) -> "Client":
        """Another client on a new channel with ``key`` (for example a tenant's)."""
        return Client(self.addr, key, root_certificates=self.root_certificates, retry=self.retry, timeout=self.timeout)

    # --- plumbing -------------------------------------------------------------------

    def _unary(self, method: Callable, request):
        """Calls ``method`` with retries per the policy; raises EsaasError."""
        delays = self.retry.delays(self.retry.max_attempts - 1)
        while True:
            try:
                return method(request, metadata=self.metadata, timeout=self.timeout)
            except grpc.RpcError as e:
                err = EsaasError(e)
                delay = next(delays, None) if retryable(err) else None
                if delay is None:
                    raise err from None
                time.sleep(max(delay, err.retry_delay or 0.0))

    @staticmethod
    def _with_request_id(request):
        if not request.request_id:
            request.request_id = str(uuid.uuid4())
        return request

    def _pages(self, method: Callable, request, items: str) -> Iterator:
        while True:
            page = self._unary(method, request)
            yield from getattr(page, items)
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    # --- clusters -------------------------------------------------------------------

    def create_cluster(
        self,
        parent: str,
        cluster_id: str,
        spec,
        *,
        validate_only: bool = False,
        request_id: str = "",
        restore_from: Optional[cluster_pb2.RestoreSource] = None,
    ):
        """Creates a cluster and queues its create operation (safe to retry). With
        ``restore_from`` (a ``RestoreSource``), the snapshot's indices are restored into it
        once it runs."""
        req = cluster_pb2.CreateClusterRequest(
            parent=parent,
            cluster_id=cluster_id,
            cluster=cluster_pb2.Cluster(spec=spec),
            validate_only=validate_only,
            request_id=request_id,
            restore_from=restore_from,
        )
        return self._unary(self.clusters.CreateCluster, self._with_request_id(req))

    def get_cluster(self, name: str) -> cluster_pb2.Cluster:
        return self._unary(self.clusters.GetCluster, cluster_pb2.GetClusterRequest(name=name)).cluster

    def list_clusters(self, parent: str, *, filter: str = "", show_deleted: bool = False, page_size: int = 0) -> Iterator[cluster_pb2.Cluster]:
        """Every cluster of ``parent``, page after page."""
        req = cluster_pb2.ListClustersRequest(parent=parent, filter=filter, show_deleted=show_deleted, page_size=page_size)
        return self._pages(self.clusters.ListClusters, req, "clusters")

    def update_cluster(self, cluster: cluster_pb2.Cluster, paths: List[str], *, validate_only: bool = False, request_id: str = ""):
        """Changes the fields ``paths`` names (``spec.node_sets``, ``spec.version`` ...); safe to retry."""
        req = cluster_pb2.UpdateClusterRequest(
            cluster=cluster,
            update_mask=field_mask_pb2.FieldMask(paths=paths),
            validate_only=validate_only,
            request_id=request_id,
        )
        return self._unary(self.clusters.UpdateCluster, self._with_request_id(req))

    def delete_cluster(
        self, name: str, *, etag: str = "", validate_only: bool = False, request_id: str = "", skip_final_snapshot: bool = False
    ):
        """Deletes a cluster (safe to retry); unless ``skip_final_snapshot``, a final snapshot is
        taken first when the platform has a snapshot bucket (the answer's ``final_snapshot``)."""
        req = cluster_pb2.DeleteClusterRequest(
            name=name, etag=etag, validate_only=validate_only, request_id=request_id, skip_final_snapshot=skip_final_snapshot
        )
        return self._unary(self.clusters.DeleteCluster, self._with_request_id(req))

    # --- snapshots ------------------------------------------------------------------

    def create_snapshot(self, name: str, *, request_id: str = ""):
        """Queues a snapshot of a running cluster (safe to retry); the answer's
        ``operation.snapshot`` names it. FAILED_PRECONDITION (SNAPSHOTS_NOT_CONFIGURED)
        when the platform has no snapshot bucket."""
        req = cluster_pb2.CreateSnapshotRequest(name=name, request_id=request_id)
        return self._unary(self.clusters.CreateSnapshot, self._with_request_id(req))

    def list_snapshots(self, parent: str, *, page_size: int = 0) -> Iterator[cluster_pb2.Snapshot]:
        """Every snapshot of the clusters that had the name ``parent`` (deleted ones too),
        newest first, page after page."""
        req = cluster_pb2.ListSnapshotsRequest(parent=parent, page_size=page_size)
        return self._pages(self.clusters.ListSnapshots, req, "snapshots")

    def restore_snapshot(self, name: str, source: cluster_pb2.RestoreSource, *, request_id: str = ""):
        """Restores ``source.indices`` (at least one) of a snapshot into the running cluster
        ``name`` (a RESTORE operation; safe to retry)."""
        req = cluster_pb2.RestoreSnapshotRequest(name=name, source=source, request_id=request_id)
        return self._unary(self.clusters.RestoreSnapshot, self._with_request_id(req))

    def cluster_credentials(self, name: str):
        return self._unary(self.clusters.GetClusterCredentials, cluster_pb2.GetClusterCredentialsRequest(name=name))

    def get_catalog(self):
        return self._unary(self.clusters.GetCatalog, cluster_pb2.GetCatalogRequest()).catalog

    def watch_cluster(self, name: str, since_revision: int = 0) -> Iterator[WatchItem]:
        """The cluster now, then every event after ``since_revision``; after a dropped
        connection it reopens from the last revision delivered (a ``resumed_after`` item
        says so), so no event is missed or repeated. When the events after that revision
        have expired (retention), it starts again from the cluster as it is now and says
        so with a ``resynced_after`` item."""
        last = since_revision if since_revision > 0 else None
        resumed = False
        resynced: Optional[int] = None
        delays = self.retry.delays(self.retry.max_reconnects)
        while True:
            req = cluster_pb2.WatchClusterRequest(name=name, since_revision=last or 0)
            try:
                for msg in self.clusters.WatchCluster(req, metadata=self.metadata):
                    delays = self.retry.delays(self.retry.max_reconnects)
                    if msg.WhichOneof("payload") == "cluster":
                        if resynced is not None:
                            last = msg.cluster.revision
                            yield WatchItem(cluster=msg.cluster, resynced_after=resynced)
                            resynced = None
                        elif resumed:
                            yield WatchItem(resumed_after=last or 0)
                        else:
                            if last is None:
                                last = msg.cluster.revision
                            yield WatchItem(cluster=msg.cluster)
                    elif last is None or msg.event.revision > last:
                        last = msg.event.revision
                        yield WatchItem(event=msg.event)
                err = EsaasError(_Ended())
            except grpc.RpcError as e:
                err = EsaasError(e)
            if err.code == grpc.StatusCode.OUT_OF_RANGE and err.reason == "REVISION_EXPIRED":
                # Get, then watch from its revision: one call with since_revision 0.
                resynced, last, resumed = last or 0, None, False
                continue
            delay = next(delays, None) if resumable(err) else None
            if delay is None:
                raise err
            time.sleep(max(delay, err.retry_delay or 0.0))
            resumed = True

    # --- operations -----------------------------------------------------------------

    def get_operation(self, name: str) -> operation_pb2.Operation:
        return self._unary(self.operations.GetOperation, operation_pb2.GetOperationRequest(name=name)).operation

    def list_operations(self, parent: str, *, cluster: str = "", filter: str = "", page_size: int = 0) -> Iterator[operation_pb2.Operation]:
        req = operation_pb2.ListOperationsRequest(parent=parent, cluster=cluster, filter=filter, page_size=page_size)
        return self._pages(self.operations.ListOperations, req, "operations")

    def watch_operation(self, name: str) -> Iterator[operation_pb2.Operation]:
        """The operation now and after every change, ending with the one that is done;
        a dropped connection is reopened (watching is a read)."""
        delays = self.retry.delays(self.retry.max_reconnects)
        while True:
            try:
                for msg in self.operations.WatchOperation(operation_pb2.WatchOperationRequest(name=name), metadata=self.metadata):
                    delays = self.retry.delays(self.retry.max_reconnects)
                    yield msg.operation
                    if msg.operation.done:
                        return
                err = EsaasError(_Ended())
            except grpc.RpcError as e:
                err = EsaasError(e)
            delay = next(delays, None) if resumable(err) else None
            if delay is None:
                raise err
            time.sleep(max(delay, err.retry_delay or 0.0))

    def wait_operation(self, name: str, *, timeout: Optional[float] = None) -> operation_pb2.Operation:
        """The operation once done if it SUCCEEDED; raises OperationFailed otherwise, and
        TimeoutError if it is still going after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last = None
        for op in self.watch_operation(name):
            last = op
            if deadline is not None and time.monotonic() > deadline and not op.done:
                raise TimeoutError(f"{name} is still {operation_pb2.OperationState.Name(op.state)} after {timeout} s")
        if last is None or last.state != operation_pb2.OPERATION_STATE_SUCCEEDED:
            raise OperationFailed(last or operation_pb2.Operation(name=name))
        return last

    def retry_operation(self, name: str, *, request_id: str = "") -> operation_pb2.Operation:
        req = admin_pb2.RetryOperationRequest(name=name, request_id=request_id)
        return self._unary(self.admin.RetryOperation, self._with_request_id(req)).operation

    def cancel_operation(self, name: str, *, request_id: str = "") -> operation_pb2.Operation:
        req = operation_pb2.CancelOperationRequest(name=name, request_id=request_id)
        return self._unary(self.operations.CancelOperation, self._with_request_id(req)).operation

    # --- tenants, keys, workers -----------------------------------------------------

    def create_tenant(self, tenant_id: str, *, display_name: str = "", quota=None, request_id: str = ""):
        req = admin_pb2.CreateTenantRequest(
            tenant_id=tenant_id,
            tenant=admin_pb2.Tenant(display_name=display_name, quota=quota),
            request_id=request_id,
        )
        return self._unary(self.admin.CreateTenant, self._with_request_id(req)).tenant

    def get_tenant(self, name: str):
        return self._unary(self.admin.GetTenant, admin_pb2.GetTenantRequest(name=name)).tenant

    def list_tenants(self, *, page_size: int = 0):
        return self._pages(self.admin.ListTenants, admin_pb2.ListTenantsRequest(page_size=page_size), "tenants")

    def update_tenant_quota(self, name: str, quota, *, request_id: str = ""):
        req = admin_pb2.UpdateTenantQuotaRequest(name=name, quota=quota, request_id=request_id)
        return self._unary(self.admin.UpdateTenantQuota, self._with_request_id(req)).tenant

    def create_api_key(self, parent: str, display_name: str, role: int, *, request_id: str = ""):
        """A new key and its secret (shown only here). If a retry finds the key made but its
        secret lost with the first answer, raises: revoke that key and create another."""
        req = admin_pb2.CreateApiKeyRequest(
            parent=parent,
            api_key=admin_pb2.ApiKey(display_name=display_name, role=role),
            request_id=request_id,
        )
        resp = self._unary(self.admin.CreateApiKey, self._with_request_id(req))
        if not resp.secret:
            raise RuntimeError(f"{resp.api_key.name} was created but its secret was lost: revoke it and create another")
        return resp

    def list_api_keys(self, parent: str = "", *, show_revoked: bool = False, page_size: int = 0):
        """Keys of ``tenants/{t}``, of every tenant (``tenants/-``) or the platform's (``""``)."""
        req = admin_pb2.ListApiKeysRequest(parent=parent, show_revoked=show_revoked, page_size=page_size)
        return self._pages(self.admin.ListApiKeys, req, "api_keys")

    def revoke_api_key(self, name: str):
        return self._unary(self.admin.RevokeApiKey, admin_pb2.RevokeApiKeyRequest(name=name)).api_key

    def list_workers(self):
        return list(self._unary(self.admin.ListWorkers, admin_pb2.ListWorkersRequest()).workers)


class _Ended(grpc.RpcError):
    """A stream the server ended before the caller was done with it (it is shutting down)."""

    def code(self):
        return grpc.StatusCode.UNAVAILABLE

    def details(self):
        return "the stream ended early"
