#!/usr/bin/env bash
# deploy/: every overlay renders with `kubectl kustomize`, every rendered object passes
# `kubernetes-validate --strict` (any line that is not INFO is a failure, as in
# tests/tests/manifests.rs), the objects say what deploy/README.md promises (non-root pods,
# replicas, IRSA, the platform label, the least RBAC), and the worker's IAM policy is valid
# JSON naming exactly the EKS and IAM actions the worker uses.
# Needs no database and no server. Run by scripts/test.sh; alone:
#   ESAAS_TEST_VENV=~/.cache/esaas-venv tests/e2e/deploy.sh
# Prints `N passed, M failed` as its last line; exits non-zero if anything failed.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT" || exit 2
: "${ESAAS_TEST_VENV:=$HOME/.cache/esaas-venv}"
: "${ESAAS_BIN:=${CARGO_TARGET_DIR:-$HOME/.cache/esaas-target}/debug/esaas}"
K8S_VERSION=1.34.0
OVERLAYS="dev prod"
VALIDATE=$ESAAS_TEST_VENV/bin/kubernetes-validate
PY=$ESAAS_TEST_VENV/bin/python # has PyYAML (a dependency of kubernetes-validate)

PASSED=0
FAILED=0
pass() {
  PASSED=$((PASSED + 1))
  echo "ok   - $1"
}
fail() {
  FAILED=$((FAILED + 1))
  echo "FAIL - $1"
  shift
  local d
  for d in "$@"; do printf '%s\n' "$d" | head -n 60 | sed 's/^/       | /'; done
}
finish() {
  echo "$PASSED passed, $FAILED failed"
  [ "$FAILED" = 0 ]
  exit
}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/esaas-deploy.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

for tool in "$VALIDATE" "$PY"; do
  if [ -x "$tool" ]; then pass "found $tool"; else fail "missing $tool: run scripts/ensure-tools.sh"; fi
done
if command -v kubectl >/dev/null; then
  # The overlays use `labels`, `replicas` and regex patch targets: kustomize v4 or later
  # (kubectl 1.21+; Debian bookworm's kubernetes-client 1.20 is too old for them).
  kustomize_version=$(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9]*\).*/\1/p')
  if [ "${kustomize_version:-0}" -ge 4 ]; then
    pass "found kubectl ($(kubectl version --client 2>/dev/null | tr '\n' ' '))"
  else
    fail "kubectl's kustomize is older than v4 (or unknown): install kubectl 1.21 or later" \
      "$(kubectl version --client 2>&1)"
  fi
else
  fail "kubectl is missing: run scripts/ensure-tools.sh"
  finish
fi
[ "$FAILED" = 0 ] || finish

# --- Each overlay: render, validate against the schemas, check the promises ----------------
for overlay in $OVERLAYS; do
  out=$TMP/$overlay.yaml
  if err=$(kubectl kustomize "deploy/overlays/$overlay" 2>&1 >"$out"); then
    if [ -n "$err" ]; then
      fail "kubectl kustomize deploy/overlays/$overlay warns" "$err"
    else
      pass "kubectl kustomize deploy/overlays/$overlay renders"
    fi
  else
    fail "kubectl kustomize deploy/overlays/$overlay" "$err"
    continue
  fi

  rc=0
  text=$("$VALIDATE" --strict --kubernetes-version "$K8S_VERSION" "$out" 2>&1) || rc=$?
  bad=$(printf '%s\n' "$text" | grep -v '^INFO' | grep -v '^[[:space:]]*$' || true)
  if [ "$rc" != 0 ] || [ -n "$bad" ] || [[ $text != *passed* ]]; then
    fail "kubernetes-validate --strict -k $K8S_VERSION ($overlay), exit $rc" "${bad:-$text}"
  else
    pass "kubernetes-validate --strict -k $K8S_VERSION: all $(grep -c '^INFO .* passed for resource' <<<"$text") objects of $overlay pass"
  fi

  # Checks on the objects: one `PASS<TAB>message` or `FAIL<TAB>message<TAB>detail` a line.
  while IFS=$'\t' read -r verdict message detail; do
    case $verdict in
      PASS) pass "$overlay: $message" ;;
      *) fail "$overlay: $message" "$detail" ;;
    esac
  done < <("$PY" - "$out" "$overlay" <<'PYEOF' 2>&1 || echo "FAIL	the object checks crashed"
import sys, yaml

path, overlay = sys.argv[1], sys.argv[2]
docs = [d for d in yaml.safe_load_all(open(path)) if d]
by = {}
for d in docs:
    by[(d["kind"], d["metadata"]["name"])] = d

def check(ok, msg, detail=""):
    print(("PASS" if ok else "FAIL") + "\t" + msg + ("" if ok else "\t" + str(detail).replace("\n", " ")))

def get(kind, name, report=False):
    obj = by.get((kind, name))
    if report or obj is None:
        check(obj is not None, f"has {kind} {name}", f"objects: {sorted(by)}")
    return obj or {}

for kind, name in [("Namespace", "esaas-system"), ("Service", "esaas-api"),
                   ("ServiceAccount", "esaas-api"), ("ServiceAccount", "esaas-worker"),
                   ("PodDisruptionBudget", "esaas-api"), ("PodDisruptionBudget", "esaas-worker"),
                   ("NetworkPolicy", "esaas-api"), ("NetworkPolicy", "esaas-worker"),
                   ("NetworkPolicy", "esaas-migrate"), ("NetworkPolicy", "esaas-default-deny"),
                   ("ValidatingAdmissionPolicy", "esaas-worker-confinement"),
                   ("ValidatingAdmissionPolicyBinding", "esaas-worker-confinement"),
                   ("ClusterRole", "esaas-api"), ("ClusterRole", "esaas-worker"),
                   ("ClusterRoleBinding", "esaas-api"), ("ClusterRoleBinding", "esaas-worker"),
                   ("StorageClass", "esaas-gp3"), ("Deployment", "esaas-api"),
                   ("Deployment", "esaas-worker"), ("Job", "esaas-migrate")]:
    get(kind, name, report=True)

ns = get("Namespace", "esaas-system")
check(ns.get("metadata", {}).get("labels", {}).get("esaas.io/platform") == "true",
      "namespace esaas-system has esaas.io/platform: \"true\"", ns.get("metadata"))
cluster_scoped = ("Namespace", "StorageClass", "ClusterRole", "ClusterRoleBinding",
                  "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
namespaced = [d for d in docs if d["kind"] not in cluster_scoped]
stray = [f'{d["kind"]}/{d["metadata"]["name"]}' for d in docs
         if d["kind"] in cluster_scoped and "namespace" in d["metadata"]]
check(not stray, "no cluster-scoped object carries a namespace", stray)
wrong = [f'{d["kind"]}/{d["metadata"]["name"]}' for d in namespaced
         if d["metadata"].get("namespace") != "esaas-system"]
check(not wrong, "every namespaced object is in esaas-system", wrong)

# Pods: non-root, read-only root filesystem, no privilege escalation, the image set.
workloads = [d for d in docs if d["kind"] in ("Deployment", "Job")]
check(sorted(d["metadata"]["name"] for d in workloads) == ["esaas-api", "esaas-migrate", "esaas-worker"],
      "Deployments esaas-api and esaas-worker and Job esaas-migrate", [d["metadata"]["name"] for d in workloads])
for d in workloads:
    name = f'{d["kind"]} {d["metadata"]["name"]}'
    pod = d["spec"]["template"]["spec"]
    psc = pod.get("securityContext", {})
    for c in pod.get("containers", []) + pod.get("initContainers", []):
        sc = c.get("securityContext", {})
        non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True
        uid = sc.get("runAsUser", psc.get("runAsUser"))
        check(non_root and uid not in (None, 0), f"{name}/{c['name']} runs as non-root (uid {uid})", sc or psc)
        check(sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False
              and "ALL" in sc.get("capabilities", {}).get("drop", []),
              f"{name}/{c['name']}: read-only root filesystem, no escalation, no capabilities", sc)
        image = c.get("image", "")
        check(":" in image and image.split("/")[0] != "esaas" and not image.endswith(":latest"),
              f"{name}/{c['name']}: the overlay sets the image ({image})", image)
        check("requests" in c.get("resources", {}) and "limits" in c.get("resources", {}),
              f"{name}/{c['name']}: resource requests and limits", c.get("resources"))

def env(dep):
    c = dep["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}

api, worker = get("Deployment", "esaas-api"), get("Deployment", "esaas-worker")
want = {"dev": 1, "prod": 3}.get(overlay)
if want:
    check(api["spec"]["replicas"] == want and worker["spec"]["replicas"] == want,
          f"{want} API replica(s) and {want} worker(s)", (api["spec"]["replicas"], worker["spec"]["replicas"]))
ae, we = env(api), env(worker)
check(api["spec"]["template"]["spec"]["containers"][0].get("args") == ["serve"]
      and ae.get("ESAAS_LISTEN_ADDR") == "0.0.0.0:50051" and ae.get("ESAAS_WORKERS") == "0"
      and ae.get("DATABASE_URL") == {"secretKeyRef": {"name": "esaas-database", "key": "url"}},
      "esaas-api: esaas serve on 0.0.0.0:50051, no in-process workers, DATABASE_URL from esaas-database", ae)
c = api["spec"]["template"]["spec"]["containers"][0]
check(c.get("readinessProbe", {}).get("grpc", {}).get("port") == 50051
      and c.get("livenessProbe", {}).get("grpc", {}).get("port") == 50051
      and c.get("livenessProbe", {}).get("grpc", {}).get("service") == "esaas.liveness"
      and not c.get("readinessProbe", {}).get("grpc", {}).get("service"),
      "esaas-api: gRPC readiness (follows the database) and liveness (esaas.liveness, does not) probes", c.get("readinessProbe"))
check(worker["spec"]["template"]["spec"]["containers"][0].get("args") == ["worker"]
      and we.get("ESAAS_CONTROL_PLANE_URL") == "http://esaas-api.esaas-system.svc:50051"
      and we.get("ESAAS_WORKER_KEY") == {"secretKeyRef": {"name": "esaas-worker-key", "key": "key"}}
      and "DATABASE_URL" not in we,
      "esaas-worker: esaas worker against the esaas-api Service, key from esaas-worker-key, no database", we)
check(worker["spec"]["template"]["spec"].get("terminationGracePeriodSeconds") == 60,
      "esaas-worker: terminationGracePeriodSeconds 60 (leases are handed back)",
      worker["spec"]["template"]["spec"].get("terminationGracePeriodSeconds"))
check(all(e.get("ESAAS_CONFIG") == "/etc/esaas/esaas.toml" for e in (ae, we)),
      "both read ESAAS_CONFIG=/etc/esaas/esaas.toml", (ae.get("ESAAS_CONFIG"), we.get("ESAAS_CONFIG")))
check(worker["spec"]["template"]["spec"].get("serviceAccountName") == "esaas-worker"
      and api["spec"]["template"]["spec"].get("serviceAccountName") == "esaas-api",
      "service accounts esaas-api and esaas-worker are used", "")
if overlay == "prod":
    for d in (api, worker):
        tsc = d["spec"]["template"]["spec"].get("topologySpreadConstraints", [])
        check(any(t["topologyKey"] == "topology.kubernetes.io/zone" for t in tsc),
              f'{d["metadata"]["name"]} spreads over zones', tsc)

svc = get("Service", "esaas-api")
ports = svc.get("spec", {}).get("ports", [])
check(any(p["port"] == 50051 and p.get("appProtocol") == "kubernetes.io/h2c" for p in ports),
      "Service esaas-api: 50051 with appProtocol kubernetes.io/h2c", ports)

arn = get("ServiceAccount", "esaas-worker").get("metadata", {}).get("annotations", {}).get("eks.amazonaws.com/role-arn", "")
check(arn.startswith("arn:aws:iam::") and arn != "arn:aws:iam::ACCOUNT_ID:role/esaas-worker",
      f"worker IRSA role is the overlay's ({arn})", arn)

sc = get("StorageClass", "esaas-gp3")
check(sc.get("provisioner") == "ebs.csi.aws.com" and sc.get("parameters", {}).get("type") == "gp3"
      and sc.get("parameters", {}).get("encrypted") == "true" and sc.get("allowVolumeExpansion") is True
      and sc.get("volumeBindingMode") == "WaitForFirstConsumer" and sc.get("reclaimPolicy") == "Delete",
      "StorageClass esaas-gp3: encrypted gp3 on the EBS CSI driver, expandable, WaitForFirstConsumer", sc)

for name in ("esaas-api", "esaas-worker"):
    pdb = get("PodDisruptionBudget", name)
    check(pdb.get("spec", {}).get("maxUnavailable") == 1, f"PDB {name}: maxUnavailable 1", pdb.get("spec"))
np = get("NetworkPolicy", "esaas-worker").get("spec", {})
check(np.get("policyTypes") == ["Ingress", "Egress"] and not np.get("ingress"), "NetworkPolicy esaas-worker: no ingress", np)
deny = get("NetworkPolicy", "esaas-default-deny").get("spec", {})
check(deny.get("podSelector") == {} and deny.get("policyTypes") == ["Ingress", "Egress"]
      and not deny.get("ingress") and not deny.get("egress"),
      "NetworkPolicy esaas-default-deny: nothing in or out unless another policy says so", deny)
api_np = get("NetworkPolicy", "esaas-api").get("spec", {})
peers = [p for r in api_np.get("ingress", []) for p in r.get("from", [])]
check(peers and all(p.get("podSelector") or p.get("namespaceSelector", {}).get("matchLabels") for p in peers),
      "NetworkPolicy esaas-api: admits named pods and labelled namespaces, not every namespace", peers)
for name in ("esaas-api", "esaas-worker", "esaas-migrate"):
    spec = get("NetworkPolicy", name).get("spec", {})
    blocks = [p["ipBlock"] for r in spec.get("egress", []) for p in r.get("to", []) if "ipBlock" in p]
    ok = "Egress" in spec.get("policyTypes", []) and all(
        not b["cidr"].startswith("0.0.0.0/") or "169.254.0.0/16" in b.get("except", []) for b in blocks)
    check(ok and all(r.get("ports") for r in spec.get("egress", [])),
          f"NetworkPolicy {name}: egress by port only, never to the instance metadata endpoint", spec.get("egress"))

vap = get("ValidatingAdmissionPolicy", "esaas-worker-confinement").get("spec", {})
conds = [c.get("expression", "") for c in vap.get("matchConditions", [])]
check(vap.get("failurePolicy") == "Fail"
      and any("system:serviceaccount:esaas-system:esaas-worker" in c for c in conds)
      and len(vap.get("validations", [])) >= 3,
      "ValidatingAdmissionPolicy esaas-worker-confinement: fails closed, for the worker's ServiceAccount", vap)
vb = get("ValidatingAdmissionPolicyBinding", "esaas-worker-confinement").get("spec", {})
check(vb.get("policyName") == "esaas-worker-confinement" and vb.get("validationActions") == ["Deny"],
      "ValidatingAdmissionPolicyBinding: Deny", vb)

# RBAC: exactly these rules; no wildcards anywhere.
def rules(name):
    return sorted((tuple(r.get("apiGroups", [])), tuple(sorted(r.get("resources", []))), tuple(sorted(r.get("verbs", []))))
                  for r in get("ClusterRole", name).get("rules", []))
check(rules("esaas-api") == [(("",), ("secrets",), ("get",))], "ClusterRole esaas-api: get secrets only", rules("esaas-api"))
expected_worker = sorted([
    (("",), ("namespaces",), ("create", "patch")),
    (("",), ("secrets", "services"), ("create", "delete", "get", "patch")),
    (("",), ("configmaps", "serviceaccounts"), ("create", "delete", "patch")),
    (("apps",), ("statefulsets",), ("create", "delete", "get", "list", "patch")),
    (("policy",), ("poddisruptionbudgets",), ("create", "delete", "patch")),
    (("networking.k8s.io",), ("networkpolicies",), ("create", "delete", "patch")),
    (("",), ("persistentvolumeclaims",), ("create", "deletecollection", "list", "patch")),
    (("",), ("pods",), ("list",)),
    (("storage.k8s.io",), ("storageclasses", "volumeattributesclasses"), ("create", "patch")),
])
check(rules("esaas-worker") == expected_worker, "ClusterRole esaas-worker: exactly the worker's rules", rules("esaas-worker"))
wild = [d["metadata"]["name"] for d in docs if d["kind"] in ("ClusterRole", "Role")
        for r in d.get("rules", []) for v in r.get("verbs", []) + r.get("resources", []) + r.get("apiGroups", []) if v == "*"]
check(not wild, "no wildcard in any RBAC rule", wild)
for name in ("esaas-api", "esaas-worker"):
    b = get("ClusterRoleBinding", name)
    check(b.get("roleRef", {}).get("name") == name
          and b.get("subjects") == [{"kind": "ServiceAccount", "name": name, "namespace": "esaas-system"}],
          f"ClusterRoleBinding {name} binds ServiceAccount esaas-system/{name}", b)
PYEOF
  )
done

# --- The configuration files parse (with the esaas binary, when it is built) ---------------
if [ -x "$ESAAS_BIN" ] && "$ESAAS_BIN" config --help >/dev/null 2>&1; then
  for f in deploy/base/esaas.toml deploy/overlays/*/esaas.toml; do
    if err=$("$ESAAS_BIN" --config "$f" config check 2>&1 >/dev/null); then
      pass "esaas config check accepts $f"
    else
      fail "esaas config check $f" "$err"
    fi
  done
else
  echo "skip - esaas config check (no esaas binary with \`config\` at $ESAAS_BIN)"
fi

# --- The node groups' launch template ------------------------------------------------------
lt=deploy/launch-template/esaas-nodes.cfn.yaml
lt_checks=$("$PY" - "$lt" <<'PYEOF' 2>&1
import base64, sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
problems = []
res = doc.get("Resources", {})
lts = [r for r in res.values() if r.get("Type") == "AWS::EC2::LaunchTemplate"]
if len(lts) != 1:
    problems.append(f"expected one AWS::EC2::LaunchTemplate, found {len(lts)}")
else:
    data = lts[0]["Properties"]["LaunchTemplateData"]
    # EKS refuses an instance type in both places and a custom AMI beside amiType.
    for banned in ("InstanceType", "ImageId", "IamInstanceProfile", "NetworkInterfaces"):
        if banned in data:
            problems.append(f"the template sets {banned}, which EKS refuses beside its own")
    ud = data.get("UserData", {}).get("Fn::Base64", "")
    if "vm.max_map_count=262144" not in ud or "Content-Type: multipart/mixed" not in ud:
        problems.append("the user data is not a MIME multi-part document setting vm.max_map_count=262144")
    if data.get("MetadataOptions", {}).get("HttpTokens") != "required":
        problems.append("IMDSv2 (HttpTokens: required) is not enforced")
print("\n".join(problems))
PYEOF
)
if [ -z "$lt_checks" ]; then
  pass "$lt: one launch template, user data sets vm.max_map_count, nothing EKS refuses, IMDSv2"
else
  fail "$lt" "$lt_checks"
fi

# --- The worker's IAM policy -----------------------------------------------------------------
policy=deploy/iam/worker-policy.json
if err=$(python3 -m json.tool "$policy" 2>&1 >/dev/null); then
  pass "$policy is valid JSON"
else
  fail "$policy is not valid JSON" "$err"
fi
want_actions="ec2:DescribeLaunchTemplateVersions
eks:CreateNodegroup
eks:DeleteNodegroup
eks:DescribeCluster
eks:DescribeNodegroup
eks:ListNodegroups
eks:TagResource
eks:UpdateNodegroupConfig
eks:UpdateNodegroupVersion
iam:PassRole"
got_actions=$(python3 - "$policy" <<'PYEOF' 2>&1
import json, sys
d = json.load(open(sys.argv[1]))
acts = set()
for s in d["Statement"]:
    a = s.get("Action", [])
    acts.update([a] if isinstance(a, str) else a)
print("\n".join(sorted(acts)))
PYEOF
)
if [ "$got_actions" = "$want_actions" ]; then
  pass "the IAM policy names exactly the actions the worker uses"
else
  fail "the IAM policy's actions" "expected:" "$want_actions" "got:" "$got_actions"
fi
policy_checks=$(python3 - "$policy" <<'PYEOF' 2>&1
import json, sys
d = json.load(open(sys.argv[1]))
problems = []
if d.get("Version") != "2012-10-17":
    problems.append("Version is not 2012-10-17")
for s in d["Statement"]:
    acts = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
    res = s.get("Resource")
    res = res if isinstance(res, list) else [res]
    if s.get("Effect") != "Allow" or "NotAction" in s or "NotResource" in s:
        problems.append(f"{s.get('Sid')}: only plain Allow statements")
    # EC2's Describe actions have no resource-level permissions: "*" is their only form.
    if any(r in (None, "*") for r in res) and not all(a.startswith("ec2:Describe") for a in acts):
        problems.append(f"{s.get('Sid')}: Resource is not scoped: {res}")
    cond = s.get("Condition", {})
    if any(a in ("eks:CreateNodegroup", "eks:TagResource") for a in acts):
        if cond.get("StringEquals", {}).get("aws:RequestTag/esaas.io/managed-by") != "esaas" \
                or cond.get("Null", {}).get("aws:RequestTag/esaas.io/cluster-uid") != "false" \
                or "aws:TagKeys" not in cond.get("ForAllValues:StringLike", {}):
            problems.append(f"{s.get('Sid')}: creating or tagging needs the managed-by and cluster-uid request tags and a TagKeys limit")
    if any(a in ("eks:TagResource", "eks:UpdateNodegroupConfig", "eks:UpdateNodegroupVersion", "eks:DeleteNodegroup") for a in acts):
        if not all(":nodegroup/EKS_CLUSTER_NAME/esaas-*/" in r for r in res):
            problems.append(f"{s.get('Sid')}: node group actions must be limited to esaas-* node groups: {res}")
    if any(a in ("eks:UpdateNodegroupConfig", "eks:UpdateNodegroupVersion", "eks:DeleteNodegroup") for a in acts):
        if cond.get("StringEquals", {}).get("aws:ResourceTag/esaas.io/managed-by") != "esaas":
            problems.append(f"{s.get('Sid')}: changing a node group needs its managed-by tag")
    if "iam:PassRole" in acts:
        if s.get("Condition", {}).get("StringEquals", {}).get("iam:PassedToService") != "eks.amazonaws.com":
            problems.append("iam:PassRole lacks the condition iam:PassedToService = eks.amazonaws.com")
        if not all(r.startswith("arn:aws:iam::") and ":role/" in r for r in res):
            problems.append(f"iam:PassRole is not limited to a role ARN: {res}")
    elif all(a.startswith("eks:") for a in acts) and not all(r.startswith("arn:aws:eks:") for r in res):
        problems.append(f"{s.get('Sid')}: EKS actions on non-EKS resources {res}")
print("\n".join(problems))
PYEOF
)
if [ -z "$policy_checks" ]; then
  pass "the IAM policy: Version 2012-10-17, resources scoped by ARN, tags required on create, node group changes only on esaas-* groups tagged managed-by, PassRole only to EKS"
else
  fail "the IAM policy" "$policy_checks"
fi

finish
