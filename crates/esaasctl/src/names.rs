//! Resource names from what a person types: a full name, or a short id with the tenant
//! from `--tenant` / `$ESAAS_TENANT`.

use anyhow::{Result, bail};

/// `tenants/{tenant}` from `--tenant` (a bare id or the full name).
pub fn tenant(tenant: Option<&str>) -> Result<String> {
    match tenant {
        Some(t) if t.starts_with("tenants/") => Ok(t.to_string()),
        Some(t) if !t.is_empty() => Ok(format!("tenants/{t}")),
        _ => bail!("which tenant? pass --tenant or set ESAAS_TENANT"),
    }
}

/// `tenants/{tenant}/clusters/{cluster}` from a full name, or an id and the tenant.
pub fn cluster(arg: &str, tenant_arg: Option<&str>) -> Result<String> {
    if arg.starts_with("tenants/") {
        return Ok(arg.to_string());
    }
    if arg.contains('/') {
        bail!(
            "{arg:?} is not a cluster: give its id (with --tenant) or tenants/{{tenant}}/clusters/{{id}}"
        );
    }
    let t = tenant(tenant_arg).map_err(|_| {
        anyhow::anyhow!(
            "which tenant is {arg:?} in? pass --tenant, set ESAAS_TENANT, or give tenants/{{tenant}}/clusters/{arg}"
        )
    })?;
    Ok(format!("{t}/clusters/{arg}"))
}

/// The parent and id of a cluster to create.
pub fn new_cluster(arg: &str, tenant_arg: Option<&str>) -> Result<(String, String)> {
    let name = cluster(arg, tenant_arg)?;
    match name.rsplit_once("/clusters/") {
        Some((parent, id)) if !id.is_empty() => Ok((parent.to_string(), id.to_string())),
        _ => bail!("{arg:?} is not a cluster name"),
    }
}

/// `operations/{id}` from a full name or a bare id.
pub fn operation(arg: &str) -> String {
    if arg.starts_with("operations/") {
        arg.to_string()
    } else {
        format!("operations/{arg}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_full_names() {
        assert_eq!(
            cluster("logs", Some("demo")).unwrap(),
            "tenants/demo/clusters/logs"
        );
        assert_eq!(
            cluster("tenants/a/clusters/x", Some("demo")).unwrap(),
            "tenants/a/clusters/x"
        );
        assert!(cluster("logs", None).is_err());
        assert!(cluster("a/b", Some("demo")).is_err());
        assert_eq!(
            new_cluster("logs", Some("tenants/demo")).unwrap(),
            ("tenants/demo".to_string(), "logs".to_string())
        );
        assert_eq!(operation("0193"), "operations/0193");
        assert_eq!(operation("operations/0193"), "operations/0193");
        assert_eq!(tenant(Some("demo")).unwrap(), "tenants/demo");
    }
}
