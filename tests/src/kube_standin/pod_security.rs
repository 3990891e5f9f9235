//! Pod Security admission: which pods a namespace admits.
//!
//! The API server's PodSecurity admission plugin checks every pod created in a
//! namespace against the level its `pod-security.kubernetes.io/enforce` label names
//! (`privileged`, `baseline` or `restricted`; no label is `privileged`) and refuses a pod
//! that violates it with `403 Forbidden`, "violates PodSecurity "restricted:latest": …"
//! (<https://kubernetes.io/docs/concepts/security/pod-security-admission/>). Workload
//! objects such as StatefulSets are admitted (with warnings); it is their controller's pod
//! creates that fail, so a StatefulSet with a violating template simply gets no pods.
//!
//! The checks are the Pod Security Standards' controls
//! (<https://kubernetes.io/docs/concepts/security/pod-security-standards/>), each named
//! as the docs name it, over `containers`, `initContainers` and `ephemeralContainers`.

use serde_json::Value;

/// Capabilities the baseline level lets a container add.
const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];
/// The "safe" sysctls the baseline level allows.
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];
/// Volume types the restricted level allows.
const RESTRICTED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// The level a namespace enforces, from its labels.
pub(super) fn enforced_level(namespace: Option<&Value>) -> &str {
    namespace
        .and_then(|ns| ns.pointer("/metadata/labels/pod-security.kubernetes.io~1enforce"))
        .and_then(Value::as_str)
        .unwrap_or("privileged")
}

/// Why a pod with `spec` may not be created at `level`: one line per violated control,
/// empty when it may.
pub(super) fn violations(level: &str, spec: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if level != "baseline" && level != "restricted" {
        return out;
    }
    let containers: Vec<&Value> = ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .filter_map(|k| spec.get(*k).and_then(Value::as_array))
        .flatten()
        .collect();
    let name = |c: &Value| {
        c.get("name")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string()
    };
    let sc = |c: &Value, path: &str| c.pointer(&format!("/securityContext{path}")).cloned();
    let pod = |path: &str| spec.pointer(&format!("/securityContext{path}")).cloned();
    let is_true = |v: &Option<Value>| v.as_ref().and_then(Value::as_bool) == Some(true);

    // Baseline.
    for field in ["hostNetwork", "hostPID", "hostIPC"] {
        if spec.get(field).and_then(Value::as_bool) == Some(true) {
            out.push(format!("host namespaces ({field}=true)"));
        }
    }
    if is_true(&pod("/windowsOptions/hostProcess")) {
        out.push("hostProcess".into());
    }
    for v in spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if v.get("hostPath").is_some() {
            out.push(format!("hostPath volumes ({})", name(v)));
        }
    }
    if pod("/seccompProfile/type").as_ref().and_then(Value::as_str) == Some("Unconfined") {
        out.push("seccompProfile (pod must not set type Unconfined)".into());
    }
    for s in pod("/sysctls")
        .as_ref()
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let sysctl = s.get("name").and_then(Value::as_str).unwrap_or_default();
        if !SAFE_SYSCTLS.contains(&sysctl) {
            out.push(format!("forbidden sysctls ({sysctl})"));
        }
    }
    for c in &containers {
        if is_true(&sc(c, "/privileged")) {
            out.push(format!("privileged (container {:?})", name(c)));
        }
        if is_true(&sc(c, "/windowsOptions/hostProcess")) {
            out.push(format!("hostProcess (container {:?})", name(c)));
        }
        let added: Vec<String> = sc(c, "/capabilities/add")
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect();
        if let Some(bad) = added
            .iter()
            .find(|a| !BASELINE_CAPABILITIES.contains(&a.as_str()))
        {
            out.push(format!(
                "non-default capabilities (container {:?} adds {bad})",
                name(c)
            ));
        }
        let host_port = c
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|p| p.get("hostPort").and_then(Value::as_i64).unwrap_or(0) != 0);
        if host_port {
            out.push(format!("hostPort (container {:?})", name(c)));
        }
        if sc(c, "/seccompProfile/type")
            .as_ref()
            .and_then(Value::as_str)
            == Some("Unconfined")
        {
            out.push(format!(
                "seccompProfile (container {:?} is Unconfined)",
                name(c)
            ));
        }
        if sc(c, "/procMount")
            .as_ref()
            .and_then(Value::as_str)
            .is_some_and(|m| m != "Default")
        {
            out.push(format!("procMount (container {:?})", name(c)));
        }
        if level != "restricted" {
            continue;
        }

        // Restricted, per container.
        if sc(c, "/allowPrivilegeEscalation")
            .as_ref()
            .and_then(Value::as_bool)
            != Some(false)
        {
            out.push(format!(
                "allowPrivilegeEscalation != false (container {:?} must set securityContext.allowPrivilegeEscalation=false)",
                name(c)
            ));
        }
        let non_root = sc(c, "/runAsNonRoot")
            .or_else(|| pod("/runAsNonRoot"))
            .and_then(|v| v.as_bool());
        if non_root != Some(true) {
            out.push(format!("runAsNonRoot != true (container {:?})", name(c)));
        }
        if sc(c, "/runAsUser")
            .or_else(|| pod("/runAsUser"))
            .and_then(|v| v.as_i64())
            == Some(0)
        {
            out.push(format!("runAsUser=0 (container {:?})", name(c)));
        }
        let seccomp = sc(c, "/seccompProfile/type").or_else(|| pod("/seccompProfile/type"));
        if !matches!(
            seccomp.as_ref().and_then(Value::as_str),
            Some("RuntimeDefault" | "Localhost")
        ) {
            out.push(format!(
                "seccompProfile (container {:?} must set type RuntimeDefault or Localhost)",
                name(c)
            ));
        }
        let drops_all = sc(c, "/capabilities/drop")
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .any(|d| d.as_str() == Some("ALL"));
        if !drops_all {
            out.push(format!(
                "unrestricted capabilities (container {:?} must drop ALL)",
                name(c)
            ));
        }
        if added.iter().any(|a| a != "NET_BIND_SERVICE") {
            out.push(format!(
                "unrestricted capabilities (container {:?} may add only NET_BIND_SERVICE)",
                name(c)
            ));
        }
    }
    if level == "restricted" {
        for v in spec
            .get("volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let kind = v
                .as_object()
                .and_then(|m| m.keys().find(|k| *k != "name").cloned())
                .unwrap_or_default();
            if !RESTRICTED_VOLUMES.contains(&kind.as_str()) {
                out.push(format!("restricted volume types ({} is {kind})", name(v)));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn compliant() -> Value {
        json!({
            "securityContext": {"runAsNonRoot": true, "runAsUser": 1000,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "es", "securityContext": {
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "d"}},
                        {"name": "certs", "secret": {"secretName": "s"}}],
        })
    }

    #[test]
    fn a_compliant_pod_passes_every_level() {
        for level in ["privileged", "baseline", "restricted"] {
            assert!(violations(level, &compliant()).is_empty(), "{level}");
        }
    }

    #[test]
    fn a_privileged_root_init_container_passes_only_privileged() {
        let mut spec = compliant();
        spec["initContainers"] = json!([{"name": "sysctl",
            "securityContext": {"privileged": true, "runAsUser": 0}}]);
        assert!(violations("privileged", &spec).is_empty());
        let baseline = violations("baseline", &spec);
        assert_eq!(baseline, ["privileged (container \"sysctl\")"]);
        let restricted = violations("restricted", &spec);
        assert!(
            restricted.iter().any(|v| v.starts_with("runAsUser=0")),
            "{restricted:?}"
        );
        assert!(
            restricted
                .iter()
                .any(|v| v.starts_with("allowPrivilegeEscalation"))
        );
    }

    #[test]
    fn restricted_wants_seccomp_dropped_capabilities_and_safe_volumes() {
        let mut spec = compliant();
        spec["securityContext"] = json!({"runAsNonRoot": true});
        spec["containers"][0]["securityContext"]["capabilities"] = json!({"add": ["SYS_ADMIN"]});
        spec["volumes"] = json!([{"name": "host", "hostPath": {"path": "/"}}]);
        let v = violations("restricted", &spec);
        for want in [
            "seccompProfile",
            "unrestricted capabilities",
            "non-default capabilities",
            "hostPath volumes",
            "restricted volume types",
        ] {
            assert!(v.iter().any(|x| x.starts_with(want)), "{want}: {v:?}");
        }
        assert!(
            violations("baseline", &spec)
                .iter()
                .all(|x| !x.starts_with("seccompProfile"))
        );
    }
}
