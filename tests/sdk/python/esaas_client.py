#!/usr/bin/env python3
"""A tiny Python client of esaas, generated from the repository's proto/ at run time.

It proves that a second language gets a working SDK from `proto/` alone: it runs
grpc_tools.protoc on proto/esaas/v1/*.proto (and the vendored proto/google/rpc/*.proto)
into a temporary directory, imports the generated `esaas.v1` modules, and against a
running server:

  - as platform admin: CreateTenant, then CreateApiKey (ROLE_TENANT_ADMIN);
  - with the tenant's key: CreateCluster (3 x small, 8.17.10, MASTER+DATA, 100 GiB),
    GetCluster, ListClusters, GetOperation;
  - a bad CreateCluster, whose google.rpc.Status is decoded from the
    `grpc-status-details-bin` trailer into BadRequest and ErrorInfo.

One line per check: `PASS: <check>` or `FAIL: <check>: expected ..., got ...`; the exit
status is non-zero if any check failed. Every run uses a new random tenant, so it also
works against a long-running server (`make dev`).

Usage: esaas_client.py --addr 127.0.0.1:50051 --admin-key <platform admin key>
Needs: grpcio, grpcio-tools, protobuf (scripts/ensure-tools.sh puts them into
~/.cache/esaas-venv).
"""

import argparse
import importlib
import importlib.resources
import os
import secrets
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
DEFAULT_PROTO_DIR = REPO / "proto"
TIMEOUT = 10  # seconds per call


def generate(proto_dir: Path, out_dir: Path) -> None:
    """Runs protoc (from grpc_tools) over the esaas and google.rpc protos into out_dir."""
    from grpc_tools import protoc

    # grpc_tools bundles the well-known types (google/protobuf/timestamp.proto, ...).
    try:
        wkt = importlib.resources.files("grpc_tools") / "_proto"
    except (AttributeError, TypeError):  # Python < 3.9
        import grpc_tools

        wkt = Path(grpc_tools.__file__).parent / "_proto"
    protos = sorted(str(p.relative_to(proto_dir)) for p in (proto_dir / "esaas" / "v1").glob("*.proto"))
    protos += ["google/rpc/status.proto", "google/rpc/error_details.proto"]
    args = [
        "grpc_tools.protoc",
        f"--proto_path={proto_dir}",
        f"--proto_path={wkt}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        sys.exit(f"FAIL: protoc could not compile {', '.join(protos)} from {proto_dir}")


class Checks:
    """Counts and prints checks, one line each."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def ok(self, what: str, cond: bool, detail: str = "") -> bool:
        if cond:
            self.passed += 1
            print(f"PASS: {what}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL: {what}{': ' + detail if detail else ''}", flush=True)
        return cond

    def eq(self, what: str, expected, actual) -> bool:
        return self.ok(what, expected == actual, f"expected {expected!r}, got {actual!r}")


def run(addr: str, admin_key: str, mods, check: Checks) -> None:
    import grpc

    pb_admin, pb_admin_grpc, pb_cluster, pb_cluster_grpc, pb_op, pb_op_grpc, pb_status, pb_details = mods

    channel = grpc.insecure_channel(addr)
    grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
    admin = pb_admin_grpc.AdminServiceStub(channel)
    clusters = pb_cluster_grpc.ClusterServiceStub(channel)
    operations = pb_op_grpc.OperationServiceStub(channel)

    def bearer(key: str):
        return [("authorization", f"Bearer {key}")]

    as_admin = bearer(admin_key)

    # --- Platform admin: a tenant and its admin key ---------------------------------------
    tenant_id = "py-" + secrets.token_hex(4)
    resp = admin.CreateTenant(
        pb_admin.CreateTenantRequest(
            tenant_id=tenant_id,
            tenant=pb_admin.Tenant(display_name="Python SDK"),
            request_id=str(uuid.uuid4()),
        ),
        metadata=as_admin,
        timeout=TIMEOUT,
    )
    tenant = resp.tenant.name
    check.eq("CreateTenant: name", f"tenants/{tenant_id}", tenant)
    check.ok("CreateTenant: the default quota", resp.tenant.quota.max_clusters > 0, f"got {resp.tenant.quota}")

    resp = admin.CreateApiKey(
        pb_admin.CreateApiKeyRequest(
            parent=tenant,
            api_key=pb_admin.ApiKey(display_name="python sdk", role=pb_admin.ROLE_TENANT_ADMIN),
        ),
        metadata=as_admin,
        timeout=TIMEOUT,
    )
    check.eq("CreateApiKey: role", "ROLE_TENANT_ADMIN", pb_admin.Role.Name(resp.api_key.role))
    check.ok("CreateApiKey: a key of the tenant", resp.api_key.name.startswith(f"{tenant}/apiKeys/"), resp.api_key.name)
    check.ok("CreateApiKey: the secret is in the response", bool(resp.secret))
    as_team = bearer(resp.secret)

    # --- The tenant: a cluster ------------------------------------------------------------
    spec = pb_cluster.ClusterSpec(
        version="8.17.10",
        node_sets=[
            pb_cluster.NodeSet(
                name="main",
                roles=[pb_cluster.NODE_ROLE_MASTER, pb_cluster.NODE_ROLE_DATA],
                count=3,
                size_class="small",
                storage_gib=100,
            )
        ],
    )
    resp = clusters.CreateCluster(
        pb_cluster.CreateClusterRequest(
            parent=tenant,
            cluster_id="logs",
            cluster=pb_cluster.Cluster(spec=spec),
            request_id=str(uuid.uuid4()),
        ),
        metadata=as_team,
        timeout=TIMEOUT,
    )
    name = f"{tenant}/clusters/logs"
    state = pb_cluster.ClusterState.Name
    op_state = pb_op.OperationState.Name
    check.eq("CreateCluster: name", name, resp.cluster.name)
    check.eq("CreateCluster: state", "CLUSTER_STATE_PROVISIONING", state(resp.cluster.status.state))
    check.eq("CreateCluster: operation state", "OPERATION_STATE_QUEUED", op_state(resp.operation.state))
    check.eq("CreateCluster: operation kind", "OPERATION_KIND_CREATE", pb_op.OperationKind.Name(resp.operation.kind))
    check.eq(
        "CreateCluster: started by the tenant",
        "INITIATOR_KIND_TENANT",
        pb_op.InitiatorKind.Name(resp.operation.initiator.kind),
    )
    uid, operation = resp.cluster.uid, resp.operation.name

    got = clusters.GetCluster(pb_cluster.GetClusterRequest(name=name), metadata=as_team, timeout=TIMEOUT).cluster
    check.eq("GetCluster: name", name, got.name)
    check.eq("GetCluster: uid", uid, got.uid)
    check.eq("GetCluster: state", "CLUSTER_STATE_PROVISIONING", state(got.status.state))
    check.eq("GetCluster: generation", 1, got.generation)
    check.eq("GetCluster: current operation", operation, got.status.current_operation)
    ns = got.spec.node_sets[0] if got.spec.node_sets else pb_cluster.NodeSet()
    check.eq(
        "GetCluster: spec as asked",
        ("8.17.10", "main", 3, "small", 100, ["NODE_ROLE_MASTER", "NODE_ROLE_DATA"]),
        (
            got.spec.version,
            ns.name,
            ns.count,
            ns.size_class,
            ns.storage_gib,
            [pb_cluster.NodeRole.Name(r) for r in ns.roles],
        ),
    )

    listed = clusters.ListClusters(pb_cluster.ListClustersRequest(parent=tenant), metadata=as_team, timeout=TIMEOUT)
    check.eq("ListClusters: the tenant's one cluster", [name], [c.name for c in listed.clusters])
    check.eq("ListClusters: one page", "", listed.next_page_token)

    op = operations.GetOperation(pb_op.GetOperationRequest(name=operation), metadata=as_team, timeout=TIMEOUT).operation
    check.eq("GetOperation: state", "OPERATION_STATE_QUEUED", op_state(op.state))
    check.eq("GetOperation: cluster", name, op.cluster)

    # --- A bad request: rich error details from the trailers ------------------------------
    bad = pb_cluster.ClusterSpec()
    bad.CopyFrom(spec)
    bad.node_sets[0].count = -1
    bad.node_sets[0].size_class = "gigantic"
    try:
        clusters.CreateCluster(
            pb_cluster.CreateClusterRequest(parent=tenant, cluster_id="Bad_Name", cluster=pb_cluster.Cluster(spec=bad)),
            metadata=as_team,
            timeout=TIMEOUT,
        )
        check.ok("a bad CreateCluster fails", False, "it succeeded")
        return
    except grpc.RpcError as err:
        check.eq("a bad CreateCluster is INVALID_ARGUMENT", grpc.StatusCode.INVALID_ARGUMENT, err.code())
        trailers = dict(err.trailing_metadata() or ())
        raw = trailers.get("grpc-status-details-bin")
        if not check.ok("the error carries grpc-status-details-bin", raw is not None, f"trailers: {sorted(trailers)}"):
            return
        status = pb_status.Status.FromString(raw)
        check.eq("google.rpc.Status: code", grpc.StatusCode.INVALID_ARGUMENT.value[0], status.code)
        check.eq("google.rpc.Status: message is the call's message", err.details(), status.message)
        bad_request = pb_details.BadRequest()
        error_info = pb_details.ErrorInfo()
        types = []
        for any_ in status.details:
            types.append(any_.TypeName())
            if any_.Is(pb_details.BadRequest.DESCRIPTOR):
                any_.Unpack(bad_request)
            elif any_.Is(pb_details.ErrorInfo.DESCRIPTOR):
                any_.Unpack(error_info)
        check.ok("details hold google.rpc.BadRequest", "google.rpc.BadRequest" in types, f"got {types}")
        fields = [v.field for v in bad_request.field_violations]
        for field in ("cluster_id", "cluster.spec.node_sets[0].count", "cluster.spec.node_sets[0].size_class"):
            check.ok(f"BadRequest names {field}", field in fields, f"fields: {fields}")
        check.eq("ErrorInfo: reason and domain", ("INVALID_ARGUMENT", "esaas.io"), (error_info.reason, error_info.domain))

    listed = clusters.ListClusters(pb_cluster.ListClustersRequest(parent=tenant), metadata=as_team, timeout=TIMEOUT)
    check.eq("the bad request created nothing", [name], [c.name for c in listed.clusters])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", required=True, help="host:port of esaas (plaintext gRPC)")
    parser.add_argument(
        "--admin-key",
        default=os.environ.get("ESAAS_BOOTSTRAP_ADMIN_KEY"),
        help="a platform-admin API key (default $ESAAS_BOOTSTRAP_ADMIN_KEY)",
    )
    parser.add_argument("--proto-dir", type=Path, default=DEFAULT_PROTO_DIR, help="the repository's proto/")
    args = parser.parse_args()
    if not args.admin_key:
        parser.error("--admin-key is required")

    import grpc

    out = Path(tempfile.mkdtemp(prefix="esaas-py-sdk."))
    check = Checks()
    try:
        generate(args.proto_dir, out)
        # First on the path, so `google.rpc` comes from the repository's vendored protos
        # (google and google.rpc are namespace packages, shared with protobuf).
        sys.path.insert(0, str(out))
        importlib.invalidate_caches()
        mods = [
            importlib.import_module(m)
            for m in (
                "esaas.v1.admin_pb2",
                "esaas.v1.admin_pb2_grpc",
                "esaas.v1.cluster_pb2",
                "esaas.v1.cluster_pb2_grpc",
                "esaas.v1.operation_pb2",
                "esaas.v1.operation_pb2_grpc",
                "google.rpc.status_pb2",
                "google.rpc.error_details_pb2",
            )
        ]
        check.ok("generated Python code from proto/ imports", True)
        try:
            run(args.addr, args.admin_key, mods, check)
        except grpc.RpcError as err:
            check.ok("calls succeed", False, f"unexpected {err.code()}: {err.details()}")
        except grpc.FutureTimeoutError:
            check.ok(f"connect to {args.addr}", False, f"not ready within {TIMEOUT} s")
    finally:
        shutil.rmtree(out, ignore_errors=True)
    print(f"{check.passed} checks passed, {check.failed} failed")
    return 1 if check.failed else 0


if __name__ == "__main__":
    sys.exit(main())
