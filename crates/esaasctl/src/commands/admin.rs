//! `esaasctl tenants ...`, `keys ...`, `catalog`, `workers`.

use esaas_client::v1;
use futures::TryStreamExt;

use super::Ctx;
use crate::cli::{KeyRole, Keys, QuotaFlags, Tenants};
use crate::exit::Failure;
use crate::names;
use crate::output::say;
use crate::output::{
    Format, fields, print_document, print_list, print_one, short, table, time, to_json,
};

fn tenant_name(id: &str) -> String {
    names::tenant(Some(id)).unwrap_or_else(|_| format!("tenants/{id}"))
}

fn tenant_details(t: &v1::Tenant) -> String {
    let q = t.quota.unwrap_or_default();
    let u = t.usage.unwrap_or_default();
    fields(&[
        ("name", t.name.clone()),
        ("display name", t.display_name.clone()),
        ("clusters", format!("{} of {}", u.clusters, q.max_clusters)),
        ("nodes", format!("{} of {}", u.nodes, q.max_nodes)),
        (
            "storage",
            format!("{} of {} GiB", u.storage_gib, q.max_storage_gib),
        ),
        ("created", time(t.create_time.as_ref())),
    ])
}

fn quota(flags: QuotaFlags, base: v1::Quota) -> v1::Quota {
    v1::Quota {
        max_clusters: flags.max_clusters.unwrap_or(base.max_clusters),
        max_nodes: flags.max_nodes.unwrap_or(base.max_nodes),
        max_storage_gib: flags.max_storage_gib.unwrap_or(base.max_storage_gib),
    }
}

pub async fn tenants(ctx: &Ctx, cmd: Tenants) -> Result<(), Failure> {
    match cmd {
        Tenants::Create {
            id,
            display_name,
            quota: q,
        } => {
            let any_limit =
                q.max_clusters.is_some() || q.max_nodes.is_some() || q.max_storage_gib.is_some();
            if any_limit
                && !(q.max_clusters.is_some()
                    && q.max_nodes.is_some()
                    && q.max_storage_gib.is_some())
            {
                return Err(anyhow::anyhow!(
                    "a quota needs all three of --max-clusters, --max-nodes and --max-storage-gib (or none, for the default)"
                )
                .into());
            }
            let t = ctx
                .client
                .create_tenant(v1::CreateTenantRequest {
                    tenant_id: id.strip_prefix("tenants/").unwrap_or(&id).to_string(),
                    tenant: Some(v1::Tenant {
                        display_name: display_name.unwrap_or_default(),
                        quota: any_limit.then(|| quota(q, v1::Quota::default())),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await?;
            Ok(print_one(
                ctx.format,
                "esaas.v1.Tenant",
                &t,
                tenant_details,
            )?)
        }
        Tenants::Get { id } => {
            let t = ctx.client.get_tenant(&tenant_name(&id)).await?;
            Ok(print_one(
                ctx.format,
                "esaas.v1.Tenant",
                &t,
                tenant_details,
            )?)
        }
        Tenants::List => {
            let all: Vec<_> = ctx
                .client
                .list_tenants(Default::default())
                .try_collect()
                .await?;
            Ok(print_list(
                ctx.format,
                "esaas.v1.Tenant",
                &all,
                &["NAME", "DISPLAY NAME", "CLUSTERS", "NODES", "STORAGE GiB"],
                |t| {
                    let q = t.quota.unwrap_or_default();
                    let u = t.usage.unwrap_or_default();
                    vec![
                        t.name.clone(),
                        t.display_name.clone(),
                        format!("{}/{}", u.clusters, q.max_clusters),
                        format!("{}/{}", u.nodes, q.max_nodes),
                        format!("{}/{}", u.storage_gib, q.max_storage_gib),
                    ]
                },
            )?)
        }
        Tenants::SetQuota { id, quota: q } => {
            let name = tenant_name(&id);
            let current = ctx.client.get_tenant(&name).await?;
            let t = ctx
                .client
                .update_tenant_quota(&name, quota(q, current.quota.unwrap_or_default()))
                .await?;
            Ok(print_one(
                ctx.format,
                "esaas.v1.Tenant",
                &t,
                tenant_details,
            )?)
        }
    }
}

fn role_name(r: i32) -> String {
    short(
        v1::Role::try_from(r).unwrap_or_default().as_str_name(),
        "ROLE_",
    )
}

pub async fn keys(ctx: &Ctx, cmd: Keys) -> Result<(), Failure> {
    match cmd {
        Keys::Create { role, display_name } => {
            let (parent, role) = match role {
                KeyRole::TenantAdmin => {
                    (names::tenant(ctx.tenant.as_deref())?, v1::Role::TenantAdmin)
                }
                KeyRole::TenantViewer => (
                    names::tenant(ctx.tenant.as_deref())?,
                    v1::Role::TenantViewer,
                ),
                KeyRole::PlatformAdmin => (String::new(), v1::Role::PlatformAdmin),
                KeyRole::Worker => (String::new(), v1::Role::Worker),
            };
            let issued = ctx
                .client
                .create_api_key(v1::CreateApiKeyRequest {
                    parent,
                    api_key: Some(v1::ApiKey {
                        display_name,
                        role: role as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await?;
            Ok(print_one(
                ctx.format,
                "esaas.v1.CreateApiKeyResponse",
                &issued,
                |r| {
                    let k = r.api_key.clone().unwrap_or_default();
                    format!(
                        "{}\n\nThe secret is shown only now; the platform keeps only its hash.",
                        fields(&[
                            ("name", k.name),
                            ("role", role_name(k.role)),
                            ("secret", r.secret.clone()),
                        ])
                    )
                },
            )?)
        }
        Keys::List {
            platform,
            all_tenants,
            show_revoked,
        } => {
            let parent = if platform {
                String::new()
            } else if all_tenants {
                "tenants/-".to_string()
            } else {
                names::tenant(ctx.tenant.as_deref()).map_err(|_| {
                    anyhow::anyhow!("whose keys? pass --tenant, --platform or --all-tenants")
                })?
            };
            let req = v1::ListApiKeysRequest {
                parent,
                show_revoked,
                ..Default::default()
            };
            let keys: Vec<_> = ctx.client.list_api_keys(req).try_collect().await?;
            Ok(print_list(
                ctx.format,
                "esaas.v1.ApiKey",
                &keys,
                &["NAME", "ROLE", "DISPLAY NAME", "CREATED", "REVOKED"],
                |k| {
                    vec![
                        k.name.clone(),
                        role_name(k.role),
                        k.display_name.clone(),
                        time(k.create_time.as_ref()),
                        time(k.revoke_time.as_ref()),
                    ]
                },
            )?)
        }
        Keys::Revoke { name } => {
            let k = ctx.client.revoke_api_key(&name).await?;
            Ok(print_one(ctx.format, "esaas.v1.ApiKey", &k, |k| {
                format!("{} revoked at {}", k.name, time(k.revoke_time.as_ref()))
            })?)
        }
    }
}

pub async fn catalog(ctx: &Ctx) -> Result<(), Failure> {
    let c = ctx.client.get_catalog().await?;
    if ctx.format != Format::Table {
        return Ok(print_document(
            ctx.format,
            &to_json("esaas.v1.Catalog", &c)?,
        )?);
    }
    let upgrades = |v: &str| {
        let minor: String = v.split('.').take(2).collect::<Vec<_>>().join(".");
        c.upgrade_paths
            .iter()
            .find(|p| p.from_minor == minor)
            .map(|p| p.to_minors.join(", "))
            .unwrap_or_default()
    };
    let s = c.storage.unwrap_or_default();
    say(format!(
        "{}\n\n{}\n\n{}",
        table(
            &["VERSION", "UPGRADES IN ONE STEP TO (besides newer patches)"],
            c.versions.iter().map(|v| vec![v.clone(), upgrades(v)]),
        ),
        table(
            &["SIZE CLASS", "INSTANCE TYPE", "CPU", "MEMORY"],
            c.size_classes.iter().map(|z| {
                vec![
                    z.name.clone(),
                    z.instance_type.clone(),
                    format!("{}m", z.cpu_millis),
                    format!("{} MiB", z.memory_mib),
                ]
            }),
        ),
        fields(&[
            (
                "storage per node",
                format!("{} to {} GiB", s.min_gib, s.max_gib)
            ),
            (
                "IOPS per node",
                format!(
                    "{} to {}, at most {} per GiB",
                    s.min_iops, s.max_iops, s.max_iops_per_gib
                ),
            ),
            (
                "throughput per node",
                format!(
                    "{} to {} MiB/s, at most {} MiB/s per IOPS",
                    s.min_throughput_mibps, s.max_throughput_mibps, s.max_throughput_mibps_per_iops
                ),
            ),
            ("node sets per cluster", c.max_node_sets.to_string()),
            ("nodes per node set", c.max_nodes_per_set.to_string()),
            ("zones", format!("1 to {}", c.max_zones)),
        ])
    ))?;
    Ok(())
}

pub async fn workers(ctx: &Ctx) -> Result<(), Failure> {
    let workers = ctx.client.list_workers().await?;
    Ok(print_list(
        ctx.format,
        "esaas.v1.Worker",
        &workers,
        &[
            "NAME",
            "REGION",
            "LEASES",
            "VERSION",
            "CONNECTED",
            "LAST HEARTBEAT",
        ],
        |w| {
            vec![
                w.name.clone(),
                w.region.clone(),
                format!("{}/{}", w.leases.len(), w.capacity),
                w.version.clone(),
                time(w.connect_time.as_ref()),
                time(w.last_heartbeat_time.as_ref()),
            ]
        },
    )?)
}
