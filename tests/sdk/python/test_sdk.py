#!/usr/bin/env python3
"""The installed esaas Python package against a running server.

As a platform admin: a tenant and its admin key. As the tenant: create a cluster and
wait until it is READY, watch it, list over pages, a dry-run scale and its disruption, a
bad request whose google.rpc details arrive decoded, the catalog and the tenant's keys,
snapshot calls refused as a platform without a bucket refuses them, then delete and wait. One line per check: `PASS: <check>` or `FAIL: <check>: ...`.

Usage: test_sdk.py --addr 127.0.0.1:50051 --admin-key <platform admin key> [--expect-from DIR]
"""

import argparse
import secrets
import sys
import zipfile
from pathlib import Path


class Checks:
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


def run(args, check: Checks) -> None:
    import grpc

    import esaas
    from esaas import Client, EsaasError, v1
    from esaas.client import RetryPolicy, retryable

    if args.expect_from:
        check.ok("esaas comes from the installed wheel", str(Path(esaas.__file__)).startswith(args.expect_from), esaas.__file__)
        import google.rpc.status_pb2 as status_pb2

        check.ok("google.rpc comes from googleapis-common-protos", not status_pb2.__file__.startswith(args.expect_from), status_pb2.__file__)
    if args.wheel:
        names = zipfile.ZipFile(args.wheel).namelist()
        check.ok("the wheel vendors no google.rpc", not any(n.startswith("google/") for n in names), str(names))
        meta = next(n for n in names if n.endswith("METADATA"))
        requires = zipfile.ZipFile(args.wheel).read(meta).decode()
        for dep in ("googleapis-common-protos", "grpcio-status", "grpcio>=", "protobuf>="):
            check.ok(f"the wheel requires {dep}", f"Requires-Dist: {dep}" in requires, requires)

    c, o, a = v1.cluster_pb2, v1.operation_pb2, v1.admin_pb2
    fast = RetryPolicy(initial_backoff=0.05, max_backoff=0.5)
    admin = Client(args.addr, args.admin_key, retry=fast)
    tenant_id = "py-" + secrets.token_hex(4)
    tenant = admin.create_tenant(tenant_id, display_name="Python SDK")
    check.eq("create_tenant", f"tenants/{tenant_id}", tenant.name)
    key = admin.create_api_key(tenant.name, "python sdk", a.ROLE_TENANT_ADMIN)
    check.ok("create_api_key returns the secret", key.secret.startswith("esk_"))
    team = admin.with_key(key.secret)

    # Create and wait, in a few lines.
    spec = c.ClusterSpec(
        version="8.17.10",
        node_sets=[c.NodeSet(name="default", roles=[c.NODE_ROLE_MASTER, c.NODE_ROLE_DATA], count=3, size_class="small", storage_gib=100)],
    )
    created = team.create_cluster(tenant.name, "logs", spec)
    check.eq("create_cluster queues a create", "OPERATION_KIND_CREATE", o.OperationKind.Name(created.operation.kind))
    done = team.wait_operation(created.operation.name, timeout=60)
    check.eq("wait_operation: SUCCEEDED", "OPERATION_STATE_SUCCEEDED", o.OperationState.Name(done.state))
    check.ok("the stages are reported", any(s.name == "health_gate" for s in done.stages), str([s.name for s in done.stages]))
    cluster = team.get_cluster(created.cluster.name)
    check.eq("the cluster is READY", "CLUSTER_STATE_READY", c.ClusterState.Name(cluster.status.state))

    first = next(iter(team.watch_cluster(cluster.name)))
    check.eq("watch_cluster starts with the cluster", cluster.revision, first.cluster.revision if first.cluster else None)
    events = (item.event for item in team.watch_cluster(cluster.name, since_revision=1) if item.event)
    revisions = [next(events).revision for _ in range(3)]
    check.eq("watch_cluster from a revision: the events after it, in order", [2, 3, 4], revisions)
    if args.database_url:
        # The retention sweep removes the oldest events (as it would after events_seconds):
        # a watch from revision 1 is OUT_OF_RANGE, and the package starts again from now.
        import subprocess

        subprocess.run(
            ["psql", "-w", "-X", "-q", "-v", "ON_ERROR_STOP=1", args.database_url, "-c",
             f"DELETE FROM cluster_events WHERE cluster_uid = '{cluster.uid}' AND revision <= 3"],
            check=True,
        )
        again = next(iter(team.watch_cluster(cluster.name, since_revision=1)))
        now_rev = again.cluster.revision if again.cluster else 0
        check.ok(
            "watch_cluster from an expired revision: resynced from the cluster as it is now",
            again.resynced_after == 1 and now_rev >= cluster.revision,
            f"resynced_after={again.resynced_after!r}, revision {now_rev} (was {cluster.revision})",
        )

    # Paging over every page.
    import uuid

    rid = str(uuid.uuid4())
    once = team.create_cluster(tenant.name, "extra0", spec, request_id=rid)
    again = team.create_cluster(tenant.name, "extra0", spec, request_id=rid)
    check.eq("a repeated request id is the first answer, not a second cluster", once.cluster.uid, again.cluster.uid)
    for i in (1, 2):
        team.create_cluster(tenant.name, f"extra{i}", spec)
    names = [x.name for x in team.list_clusters(tenant.name, page_size=1)]
    check.eq("list_clusters walks every page", sorted(names), names)
    check.eq("list_clusters: all four", 4, len(names))
    ops = list(team.list_operations(tenant.name, page_size=2))
    check.ok("list_operations walks every page", len(ops) >= 4, str(len(ops)))

    # A dry run says how disruptive a change is and changes nothing.
    bigger = c.Cluster()
    bigger.CopyFrom(cluster)
    bigger.spec.node_sets[0].count = 5
    dry = team.update_cluster(bigger, ["spec.node_sets"], validate_only=True)
    check.eq("a dry-run scale out is NEW_NODES_FIRST", "DISRUPTION_NEW_NODES_FIRST", c.Disruption.Name(dry.disruption))
    check.eq("the dry run changed nothing", cluster.generation, team.get_cluster(cluster.name).generation)

    # Errors arrive with their google.rpc details.
    bad = c.ClusterSpec()
    bad.CopyFrom(spec)
    bad.node_sets[0].count = -1
    try:
        team.create_cluster(tenant.name, "Bad_Name", bad)
        check.ok("a bad create fails", False, "it succeeded")
    except EsaasError as e:
        check.eq("a bad create is INVALID_ARGUMENT", grpc.StatusCode.INVALID_ARGUMENT, e.code)
        check.eq("with a stable reason", "INVALID_ARGUMENT", e.reason)
        fields = [v.field for v in e.field_violations]
        for f in ("cluster_id", "cluster.spec.node_sets[0].count"):
            check.ok(f"the violation of {f} is decoded", f in fields, str(fields))
        check.ok("INVALID_ARGUMENT is not retried", not retryable(e))
    try:
        team.get_cluster(f"{tenant.name}/clusters/nope")
        check.ok("a missing cluster fails", False)
    except EsaasError as e:
        check.eq("a missing cluster is NOT_FOUND", grpc.StatusCode.NOT_FOUND, e.code)
        check.eq("ResourceInfo names it", f"{tenant.name}/clusters/nope", e.resource.resource_name if e.resource else None)

    # What admins were missing.
    catalog = team.get_catalog()
    check.ok("get_catalog lists the versions", "8.17.10" in catalog.versions, str(list(catalog.versions)))
    check.ok("get_catalog: size classes with instance types", any(s.instance_type for s in catalog.size_classes))
    keys = list(team.list_api_keys(tenant.name))
    check.eq("list_api_keys: the tenant's key, never its secret", [key.api_key.name], [k.name for k in keys])
    check.ok("no secret in the listing", key.secret not in str(keys))

    # Snapshots: this platform has no snapshot bucket.
    try:
        team.create_snapshot(cluster.name)
        check.ok("create_snapshot without a bucket fails", False, "it succeeded")
    except EsaasError as e:
        check.eq("create_snapshot without a bucket is FAILED_PRECONDITION", grpc.StatusCode.FAILED_PRECONDITION, e.code)
        check.eq("naming SNAPSHOTS_NOT_CONFIGURED", ["SNAPSHOTS_NOT_CONFIGURED"], [v.type for v in e.precondition_violations])
    check.eq("list_snapshots: none", [], list(team.list_snapshots(cluster.name, page_size=1)))
    source = c.RestoreSource(cluster=cluster.name, snapshot="manual-nope", indices=["orders"])
    try:
        team.restore_snapshot(cluster.name, source)
        check.ok("restore_snapshot of an unknown snapshot fails", False, "it succeeded")
    except EsaasError as e:
        check.eq("restore_snapshot of an unknown snapshot is NOT_FOUND", grpc.StatusCode.NOT_FOUND, e.code)
    try:
        team.create_cluster(tenant.name, "restored", spec, restore_from=source, validate_only=True)
        check.ok("create_cluster from an unknown snapshot fails", False, "it succeeded")
    except EsaasError as e:
        check.eq("create_cluster from an unknown snapshot is NOT_FOUND", grpc.StatusCode.NOT_FOUND, e.code)
    dry = team.delete_cluster(cluster.name, validate_only=True)
    check.ok("a dry-run delete takes no final snapshot without a bucket", not dry.final_snapshot.taken, str(dry.final_snapshot))
    check.ok("and says why", "not configured" in dry.final_snapshot.reason, dry.final_snapshot.reason)
    skipped = team.delete_cluster(cluster.name, validate_only=True, skip_final_snapshot=True)
    check.ok("skip_final_snapshot is sent", "skip_final_snapshot" in skipped.final_snapshot.reason, skipped.final_snapshot.reason)

    # Delete and wait.
    gone = team.delete_cluster(cluster.name)
    team.wait_operation(gone.operation.name, timeout=60)
    check.eq("delete: the cluster is DELETED", "CLUSTER_STATE_DELETED", c.ClusterState.Name(team.get_cluster(cluster.name).status.state))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", required=True, help="esaas address (http://host:port, or host:port on loopback)")
    parser.add_argument("--admin-key", required=True, help="a platform-admin API key")
    parser.add_argument("--expect-from", help="the directory the esaas package must be imported from")
    parser.add_argument("--wheel", help="the wheel that was installed, to check what it holds")
    parser.add_argument("--database-url", help="the server's database, to expire events as the retention sweep does")
    args = parser.parse_args()
    check = Checks()
    try:
        run(args, check)
    except Exception as e:  # a crash is a failed check, with what it was
        check.ok("the run completes", False, f"{type(e).__name__}: {e}")
    print(f"{check.passed} checks passed, {check.failed} failed")
    return 1 if check.failed else 0


if __name__ == "__main__":
    sys.exit(main())
