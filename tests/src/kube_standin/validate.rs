//! Validation per kind: what the real API server answers `422 Invalid` (or `400`) to.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::State;
use super::errors::{ApiError, Cause};
use super::resources::{CONFIGMAP, NS, PDB, PVC, RESOURCES, SC, SECRET, SERVICE, STS, VAC};
use super::select::selector_reqs;
use super::util::str_at;

pub(super) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub(super) fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

pub(super) fn is_label_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

pub(super) fn is_qualified_name(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_label_name(name),
        None => is_label_name(s),
    }
}

pub(super) fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_label_name(s)
}

pub(super) const LABEL_VALUE_HELP: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
pub(super) const LABEL_KEY_HELP: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')";
pub(super) const DNS_LABEL_HELP: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
pub(super) const DNS_SUBDOMAIN_HELP: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
pub(super) const CONFIG_KEY_HELP: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

pub(super) fn check_labels(field: &str, labels: Option<&Value>, causes: &mut Vec<Cause>) {
    let Some(labels) = labels else { return };
    let Some(m) = labels.as_object() else {
        causes.push(Cause::invalid(
            field,
            labels,
            "labels must be a map of strings",
        ));
        return;
    };
    for (k, v) in m {
        if !is_qualified_name(k) {
            causes.push(Cause::invalid(field, &json!(k), LABEL_KEY_HELP));
        }
        match v.as_str() {
            Some(s) if is_label_value(s) => {}
            _ => causes.push(Cause::invalid(field, v, LABEL_VALUE_HELP)),
        }
    }
}

pub(super) fn label_selector_matches(sel: &Value, labels: Option<&Map<String, Value>>) -> bool {
    selector_reqs(sel).iter().all(|r| r.matches(labels))
}

pub(super) fn validate(r: usize, obj: &Value, old: Option<&Value>) -> Result<(), ApiError> {
    let res = &RESOURCES[r];
    let name = str_at(obj, &["metadata", "name"]).unwrap_or_default();
    let mut causes = Vec::new();
    let label_names = matches!(r, NS | SERVICE);
    if label_names && !is_dns_label(name) {
        causes.push(Cause::invalid(
            "metadata.name",
            &json!(name),
            DNS_LABEL_HELP,
        ));
    } else if !label_names && !is_dns_subdomain(name) {
        causes.push(Cause::invalid(
            "metadata.name",
            &json!(name),
            DNS_SUBDOMAIN_HELP,
        ));
    }
    check_labels(
        "metadata.labels",
        obj.pointer("/metadata/labels"),
        &mut causes,
    );
    let spec = obj.get("spec").cloned().unwrap_or(json!({}));
    let old_spec = old.and_then(|o| o.get("spec"));
    match r {
        // kubernetes/kubernetes pkg/apis/storage/validation/validation.go:
        // ValidateStorageClass (provisioner required) and ValidateStorageClassUpdate
        // (parameters, provisioner and reclaimPolicy forbidden to change;
        // volumeBindingMode immutable; allowVolumeExpansion may change).
        SC => {
            if str_at(obj, &["provisioner"]).is_none_or(str::is_empty) {
                causes.push(Cause::required("provisioner", ""));
            }
            if let Some(old) = old {
                for field in ["parameters", "provisioner", "reclaimPolicy"] {
                    if old.get(field) != obj.get(field) {
                        causes.push(Cause::forbidden(
                            field,
                            &format!("updates to {field} are forbidden."),
                        ));
                    }
                }
                if old.get("volumeBindingMode") != obj.get("volumeBindingMode") {
                    causes.push(Cause::invalid(
                        "volumeBindingMode",
                        obj.get("volumeBindingMode").unwrap_or(&Value::Null),
                        "field is immutable",
                    ));
                }
            }
        }
        // The same file: ValidateVolumeAttributesClass (driverName required, at least one
        // parameter) and ValidateVolumeAttributesClassUpdate (driverName and parameters
        // may not change: a class is a fixed profile).
        VAC => {
            if str_at(obj, &["driverName"]).is_none_or(str::is_empty) {
                causes.push(Cause::required("driverName", ""));
            }
            if obj
                .get("parameters")
                .and_then(Value::as_object)
                .is_none_or(Map::is_empty)
            {
                causes.push(Cause::required(
                    "parameters",
                    "must contain at least one key",
                ));
            }
            if let Some(old) = old {
                for field in ["driverName", "parameters"] {
                    if old.get(field) != obj.get(field) {
                        causes.push(Cause::forbidden(
                            field,
                            &format!("updates to {field} are forbidden."),
                        ));
                    }
                }
            }
        }
        SECRET | CONFIGMAP => {
            for field in ["data", "binaryData"] {
                if let Some(m) = obj.get(field).and_then(Value::as_object) {
                    for (k, v) in m {
                        if k.is_empty()
                            || !k
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
                        {
                            causes.push(Cause::invalid(
                                format!("{field}[{k}]"),
                                &json!(k),
                                CONFIG_KEY_HELP,
                            ));
                        }
                        let base64_field = r == SECRET || field == "binaryData";
                        if base64_field
                            && v.as_str().is_none_or(|s| {
                                base64::engine::general_purpose::STANDARD.decode(s).is_err()
                            })
                        {
                            return Err(ApiError::bad_request(format!(
                                "{} in version \"v1\" cannot be handled as a {}: illegal base64 data in {field}[{k}]",
                                res.kind, res.kind
                            )));
                        }
                        if !base64_field && !v.is_string() {
                            causes.push(Cause::invalid(
                                format!("{field}[{k}]"),
                                v,
                                "must be a string",
                            ));
                        }
                    }
                }
            }
            if let Some(old) = old
                && old.get("immutable") == Some(&json!(true))
            {
                for field in ["data", "binaryData", "type"] {
                    if old.get(field) != obj.get(field) {
                        causes.push(Cause::forbidden(
                            field,
                            "field is immutable when `immutable` is set",
                        ));
                    }
                }
                if obj.get("immutable") != Some(&json!(true)) {
                    causes.push(Cause::forbidden(
                        "immutable",
                        "field is immutable when `immutable` is set",
                    ));
                }
            }
        }
        SERVICE => {
            let headless = spec.get("clusterIP") == Some(&json!("None"));
            let ports = spec.get("ports").and_then(Value::as_array);
            if !headless
                && spec.get("type") != Some(&json!("ExternalName"))
                && ports.is_none_or(Vec::is_empty)
            {
                causes.push(Cause::required("spec.ports", ""));
            }
            if let Some(ports) = ports
                && ports.len() > 1
            {
                for (i, p) in ports.iter().enumerate() {
                    if str_at(p, &["name"]).is_none_or(str::is_empty) {
                        causes.push(Cause::required(format!("spec.ports[{i}].name"), ""));
                    }
                }
            }
            if let (Some(was), Some(now)) = (
                old_spec
                    .and_then(|s| s.get("clusterIP"))
                    .and_then(Value::as_str),
                spec.get("clusterIP").and_then(Value::as_str),
            ) && was != now
            {
                causes.push(Cause::invalid(
                    "spec.clusterIP",
                    &json!(now),
                    "field is immutable",
                ));
            }
        }
        PVC => {
            if spec
                .get("accessModes")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty)
            {
                causes.push(Cause::required(
                    "spec.accessModes",
                    "at least 1 access mode is required",
                ));
            }
            let storage = |s: &Value| s.pointer("/resources/requests/storage").cloned();
            if storage(&spec).is_none() {
                causes.push(Cause::required("spec.resources[storage]", ""));
            }
            if let Some(old_spec) = old_spec {
                let strip = |s: &Value| {
                    let mut s = s.clone();
                    if let Some(m) = s.as_object_mut() {
                        m.remove("volumeAttributesClassName");
                        if let Some(res) = m.get_mut("resources").and_then(Value::as_object_mut) {
                            res.remove("requests");
                            if res.is_empty() {
                                m.remove("resources");
                            }
                        }
                    }
                    s
                };
                if strip(old_spec) != strip(&spec) {
                    causes.push(Cause::forbidden(
                        "spec",
                        "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
                    ));
                }
                let q = |v: Option<Value>| v.as_ref().and_then(quantity);
                if let (Some(was), Some(now)) = (q(storage(old_spec)), q(storage(&spec)))
                    && now < was
                {
                    causes.push(Cause::forbidden(
                        "spec.resources.requests.storage",
                        "field can not be less than previous value",
                    ));
                }
            }
        }
        STS => {
            let selector = spec.get("selector");
            let template_labels = spec.pointer("/template/metadata/labels");
            check_labels(
                "spec.template.metadata.labels",
                template_labels,
                &mut causes,
            );
            match selector {
                None => causes.push(Cause::required("spec.selector", "")),
                Some(sel) if selector_reqs(sel).is_empty() => causes.push(Cause::invalid(
                    "spec.selector",
                    sel,
                    "empty selector is invalid for statefulset",
                )),
                Some(sel) => {
                    if !label_selector_matches(sel, template_labels.and_then(Value::as_object)) {
                        causes.push(Cause::invalid(
                            "spec.template.metadata.labels",
                            template_labels.unwrap_or(&Value::Null),
                            "`selector` does not match template `labels`",
                        ));
                    }
                }
            }
            if spec
                .pointer("/template/spec/containers")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty)
            {
                causes.push(Cause::required("spec.template.spec.containers", ""));
            }
            if let Some(n) = spec.get("replicas").and_then(Value::as_i64)
                && n < 0
            {
                causes.push(Cause::invalid(
                    "spec.replicas",
                    &json!(n),
                    "must be greater than or equal to 0",
                ));
            }
            if let Some(p) = spec.get("podManagementPolicy").and_then(Value::as_str)
                && !matches!(p, "OrderedReady" | "Parallel")
            {
                causes.push(Cause::unsupported(
                    "spec.podManagementPolicy",
                    p,
                    &["OrderedReady", "Parallel"],
                ));
            }
            if let Some(t) = spec.pointer("/updateStrategy/type").and_then(Value::as_str)
                && !matches!(t, "RollingUpdate" | "OnDelete")
            {
                causes.push(Cause::unsupported(
                    "spec.updateStrategy.type",
                    t,
                    &["OnDelete", "RollingUpdate"],
                ));
            }
            for (i, t) in spec
                .get("volumeClaimTemplates")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                if str_at(t, &["metadata", "name"]).is_none_or(|n| !is_dns_subdomain(n)) {
                    causes.push(Cause::required(
                        format!("spec.volumeClaimTemplates[{i}].metadata.name"),
                        "",
                    ));
                }
            }
            if let Some(old_spec) = old_spec {
                let strip = |s: &Value| {
                    let mut s = s.clone();
                    if let Some(m) = s.as_object_mut() {
                        for k in [
                            "replicas",
                            "ordinals",
                            "template",
                            "updateStrategy",
                            "revisionHistoryLimit",
                            "persistentVolumeClaimRetentionPolicy",
                            "minReadySeconds",
                        ] {
                            m.remove(k);
                        }
                    }
                    s
                };
                if strip(old_spec) != strip(&spec) {
                    causes.push(Cause::forbidden(
                        "spec",
                        "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
                    ));
                }
            }
        }
        PDB if spec.get("minAvailable").is_some() && spec.get("maxUnavailable").is_some() => {
            causes.push(Cause::invalid(
                "spec",
                &spec,
                "minAvailable and maxUnavailable cannot be both set",
            ));
        }
        _ => {}
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(res, name, causes))
    }
}

/// A Kubernetes quantity in its base unit (`100Gi`, `1.5G`, `500m`, `2`).
pub(super) fn quantity(v: &Value) -> Option<f64> {
    if let Some(n) = v.as_f64() {
        return Some(n);
    }
    let s = v.as_str()?.trim();
    const SUFFIXES: [(&str, f64); 15] = [
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    for (suffix, mul) in SUFFIXES {
        if let Some(n) = s.strip_suffix(suffix)
            && let Ok(n) = n.parse::<f64>()
        {
            return Some(n * mul);
        }
    }
    s.parse().ok()
}

impl State {
    /// Admission that needs other objects: a claim grows only when its StorageClass
    /// allows it (kubernetes/kubernetes plugin/pkg/admission/storage/persistentvolume/
    /// resize/admission.go: `allowResize`, answered with `admission.NewForbidden`, a 403).
    pub(super) fn admit(&self, r: usize, obj: &Value, old: Option<&Value>) -> Result<(), ApiError> {
        if r != PVC {
            return Ok(());
        }
        let Some(old) = old else { return Ok(()) };
        let storage = |v: &Value| {
            v.pointer("/spec/resources/requests/storage")
                .and_then(quantity)
        };
        let grows = matches!((storage(old), storage(obj)), (Some(was), Some(now)) if now > was);
        if !grows {
            return Ok(());
        }
        let class = str_at(obj, &["spec", "storageClassName"]).unwrap_or_default();
        let expandable = self
            .objects
            .get(&(SC, String::new(), class.to_string()))
            .and_then(|sc| sc.get("allowVolumeExpansion"))
            == Some(&json!(true));
        let bound = str_at(obj, &["spec", "volumeName"]).is_some_and(|v| !v.is_empty());
        if expandable && bound {
            return Ok(());
        }
        let name = str_at(obj, &["metadata", "name"]).unwrap_or_default();
        Err(ApiError::new(
            403,
            "Forbidden",
            format!(
                "persistentvolumeclaims \"{name}\" is forbidden: only dynamically provisioned pvc \
                 can be resized and the storageclass that provisions the pvc must support resize"
            ),
        ))
    }
}
