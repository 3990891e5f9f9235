#!/usr/bin/env bash
# The platform admin's tool: grpcurl against a fresh `esaas serve`, with nothing but server
# reflection to learn the API from. Lists and describes the services, checks health and
# authentication, walks through tenant -> API key -> cluster -> operation, and shows that
# an invalid request comes back as INVALID_ARGUMENT with readable google.rpc details.
# Run by scripts/test.sh; alone: ESAAS_TEST_DATABASE_URL=$(scripts/ensure-postgres.sh) tests/e2e/grpcurl.sh
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "$0")/lib.sh"

# shellcheck disable=SC2317 # called through `capture`
grpcurl() { "$ESAAS_GRPCURL" "$@"; }
ADMIN="authorization: Bearer $ADMIN_KEY"
uuid() { python3 -c 'import uuid; print(uuid.uuid4())'; }

# --- Reflection: what is there, and does it read well --------------------------------------
capture grpcurl -plaintext "$ADDR" list
check_ok "grpcurl list"
for service in esaas.v1.ClusterService esaas.v1.OperationService esaas.v1.AdminService \
  esaas.v1.WorkerService grpc.health.v1.Health; do
  check_contains "list shows $service" "$service" "$OUT"
done

capture grpcurl -plaintext "$ADDR" describe esaas.v1.CreateClusterRequest
check_ok "grpcurl describe esaas.v1.CreateClusterRequest"
check_contains "describe shows the field comments of cluster.proto" \
  "// The cluster's name within the tenant: lowercase letters, digits and '-'," "$OUT"
check_contains "describe shows the message comment" "// Request of CreateCluster." "$OUT"

capture grpcurl -plaintext "$ADDR" describe esaas.v1.ClusterService.CreateCluster
check_contains "describe shows the method comment" \
  "Creates a cluster and queues its create operation" "$OUT"

# --- Health and authentication -------------------------------------------------------------
capture grpcurl -plaintext "$ADDR" grpc.health.v1.Health/Check
check_eq "health Check (no key needed)" SERVING "$(json_get status)"

capture grpcurl -plaintext -d '{"service": "esaas.v1.ClusterService"}' "$ADDR" grpc.health.v1.Health/Check
check_eq "health Check of esaas.v1.ClusterService" SERVING "$(json_get status)"

capture grpcurl -plaintext "$ADDR" esaas.v1.AdminService/ListTenants
check_err "a call without a key fails"
check_contains "a call without a key is Unauthenticated" "Code: Unauthenticated" "$OUT"

capture grpcurl -plaintext -H "authorization: Bearer esk_not-a-key-at-all" "$ADDR" esaas.v1.AdminService/ListTenants
check_contains "a call with an unknown key is Unauthenticated" "Code: Unauthenticated" "$OUT"

# --- A tenant, its admin key, a cluster ----------------------------------------------------
capture grpcurl -plaintext -H "$ADMIN" -d @ "$ADDR" esaas.v1.AdminService/CreateTenant <<EOF
{
  "tenant_id": "search",
  "tenant": {
    "display_name": "Search team",
    "quota": {"max_clusters": 3, "max_nodes": 12, "max_storage_gib": 4096}
  },
  "request_id": "$(uuid)"
}
EOF
check_ok "CreateTenant"
check_eq "CreateTenant: name" tenants/search "$(json_get tenant.name)"
check_eq "CreateTenant: quota" 12 "$(json_get tenant.quota.maxNodes)"

capture grpcurl -plaintext -H "$ADMIN" -d @ "$ADDR" esaas.v1.AdminService/CreateApiKey <<EOF
{
  "parent": "tenants/search",
  "api_key": {"display_name": "search CI", "role": "ROLE_TENANT_ADMIN"}
}
EOF
check_ok "CreateApiKey"
check_eq "CreateApiKey: role" ROLE_TENANT_ADMIN "$(json_get apiKey.role)"
check_contains "CreateApiKey: a key of the tenant" tenants/search/apiKeys/ "$(json_get apiKey.name)"
TEAM_KEY=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["secret"])' <<<"$OUT") || TEAM_KEY=
if [ -n "$TEAM_KEY" ]; then pass "CreateApiKey: the secret is in the response"; else fail "CreateApiKey: no secret in" "$OUT"; fi
TEAM="authorization: Bearer $TEAM_KEY"

capture grpcurl -plaintext -H "$TEAM" -d @ "$ADDR" esaas.v1.ClusterService/CreateCluster <<EOF
{
  "parent": "tenants/search",
  "cluster_id": "logs",
  "cluster": {
    "spec": {
      "version": "8.17.10",
      "node_sets": [{
        "name": "main",
        "roles": ["NODE_ROLE_MASTER", "NODE_ROLE_DATA"],
        "count": 3,
        "size_class": "small",
        "storage_gib": 100
      }],
      "zone_count": 3
    }
  },
  "request_id": "$(uuid)"
}
EOF
check_ok "CreateCluster with the tenant's key"
check_eq "CreateCluster: name" tenants/search/clusters/logs "$(json_get cluster.name)"
check_eq "CreateCluster: state" CLUSTER_STATE_PROVISIONING "$(json_get cluster.status.state)"
check_eq "CreateCluster: operation state" OPERATION_STATE_QUEUED "$(json_get operation.state)"
check_eq "CreateCluster: operation kind" OPERATION_KIND_CREATE "$(json_get operation.kind)"
check_eq "CreateCluster: started by the tenant" INITIATOR_KIND_TENANT "$(json_get operation.initiator.kind)"
OPERATION=$(json_get operation.name)
check_eq "CreateCluster: the cluster names its operation" "$OPERATION" "$(json_get cluster.status.currentOperation)"

capture grpcurl -plaintext -H "$TEAM" -d '{"name": "tenants/search/clusters/logs"}' "$ADDR" esaas.v1.ClusterService/GetCluster
check_ok "GetCluster"
check_eq "GetCluster: state" CLUSTER_STATE_PROVISIONING "$(json_get cluster.status.state)"
check_eq "GetCluster: generation" 1 "$(json_get cluster.generation)"
check_eq "GetCluster: node count" 3 "$(json_get cluster.spec.nodeSets.0.count)"
check_eq "GetCluster: size class" small "$(json_get cluster.spec.nodeSets.0.sizeClass)"
check_eq "GetCluster: version" 8.17.10 "$(json_get cluster.spec.version)"

capture grpcurl -plaintext -H "$TEAM" -d '{"parent": "tenants/search"}' "$ADDR" esaas.v1.ClusterService/ListClusters
check_ok "ListClusters"
check_eq "ListClusters: the tenant's one cluster" '["tenants/search/clusters/logs"]' \
  "$(python3 -c 'import json, sys; print(json.dumps([c["name"] for c in json.load(sys.stdin).get("clusters", [])]))' <<<"$OUT" 2>&1)"

capture grpcurl -plaintext -H "$ADMIN" -d '{"parent": "tenants/-"}' "$ADDR" esaas.v1.ClusterService/ListClusters
check_eq "ListClusters tenants/- as platform admin" tenants/search/clusters/logs "$(json_get clusters.0.name)"

capture grpcurl -plaintext -H "$TEAM" -d "{\"name\": \"$OPERATION\"}" "$ADDR" esaas.v1.OperationService/GetOperation
check_ok "GetOperation"
check_eq "GetOperation: state" OPERATION_STATE_QUEUED "$(json_get operation.state)"
check_eq "GetOperation: cluster" tenants/search/clusters/logs "$(json_get operation.cluster)"
check_eq "GetOperation: first stage" namespace "$(json_get operation.stages.0.name)"

# Snapshots: none yet; a delete's dry run says whether it would take a final one, and why not.
capture grpcurl -plaintext -H "$TEAM" -d '{"parent": "tenants/search/clusters/logs"}' "$ADDR" esaas.v1.ClusterService/ListSnapshots
check_ok "ListSnapshots"
check_eq "ListSnapshots: none yet" "" "$(json_get snapshots.0.name)"
capture grpcurl -plaintext -H "$TEAM" -d '{"parent": "tenants/search/clusters/never"}' "$ADDR" esaas.v1.ClusterService/ListSnapshots
check_contains "ListSnapshots of a cluster that never was is NotFound" "Code: NotFound" "$OUT"
capture grpcurl -plaintext -H "$TEAM" -d '{"name": "tenants/search/clusters/logs", "validateOnly": true}' "$ADDR" esaas.v1.ClusterService/DeleteCluster
check_ok "DeleteCluster validateOnly"
check_contains "the dry run says why no final snapshot is taken" "snapshots are not configured on this platform" "$(json_get finalSnapshot.reason)"
capture grpcurl -plaintext -H "$TEAM" -d '{"name": "tenants/search/clusters/logs"}' "$ADDR" esaas.v1.ClusterService/CreateSnapshot
check_err "CreateSnapshot without a snapshot bucket fails"
check_contains "CreateSnapshot without a bucket is FailedPrecondition" "Code: FailedPrecondition" "$OUT"
check_contains "CreateSnapshot names the missing configuration" "SNAPSHOTS_NOT_CONFIGURED" "$OUT"

# Another team's key sees nothing of it: NOT_FOUND, never PERMISSION_DENIED.
capture grpcurl -plaintext -H "$ADMIN" -d '{"tenant_id": "billing"}' "$ADDR" esaas.v1.AdminService/CreateTenant
check_ok "CreateTenant billing"
capture grpcurl -plaintext -H "$ADMIN" -d '{"parent": "tenants/billing", "api_key": {"role": "ROLE_TENANT_ADMIN"}}' \
  "$ADDR" esaas.v1.AdminService/CreateApiKey
OTHER="authorization: Bearer $(json_get secret)"
capture grpcurl -plaintext -H "$OTHER" -d '{"name": "tenants/search/clusters/logs"}' "$ADDR" esaas.v1.ClusterService/GetCluster
check_contains "another tenant's cluster is NotFound" "Code: NotFound" "$OUT"

# --- An invalid request: the error details print readably ---------------------------------
capture grpcurl -plaintext -H "$TEAM" -d @ "$ADDR" esaas.v1.ClusterService/CreateCluster <<EOF
{
  "parent": "tenants/search",
  "cluster_id": "Bad_Name",
  "cluster": {
    "spec": {
      "version": "8.17.10",
      "node_sets": [{
        "name": "main",
        "roles": ["NODE_ROLE_MASTER", "NODE_ROLE_DATA"],
        "count": -1,
        "size_class": "gigantic",
        "storage_gib": 100
      }]
    }
  }
}
EOF
check_err "a bad CreateCluster fails"
check_contains "a bad CreateCluster is InvalidArgument" "Code: InvalidArgument" "$OUT"
details=
[[ $OUT != *Details:* ]] || details=${OUT#*Details:}
check_contains "the error has a google.rpc.BadRequest detail" "type.googleapis.com/google.rpc.BadRequest" "$details"
check_contains "the error has a google.rpc.ErrorInfo detail" "type.googleapis.com/google.rpc.ErrorInfo" "$details"
# Quoted, as JSON strings of the detail (the message names the fields too, unquoted).
check_contains "BadRequest names cluster_id" '"cluster_id"' "$details"
check_contains "BadRequest names cluster.spec.node_sets[0].count" '"cluster.spec.node_sets[0].count"' "$details"
check_contains "BadRequest names cluster.spec.node_sets[0].size_class" '"cluster.spec.node_sets[0].size_class"' "$details"

capture grpcurl -plaintext -H "$TEAM" -d '{"parent": "tenants/search"}' "$ADDR" esaas.v1.ClusterService/ListClusters
check_eq "the bad request created nothing" tenants/search/clusters/logs "$(json_get clusters.0.name)"

finish
