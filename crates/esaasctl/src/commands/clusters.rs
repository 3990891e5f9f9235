//! `esaasctl clusters ...`.

use anyhow::{Context, anyhow, bail};
use esaas_client::WatchItem;
use esaas_client::v1::{self, Disruption};
use futures::TryStreamExt;

use super::Ctx;
use crate::cli::{ChangeFlags, Clusters, NodeSetFlags, RestoreFlags, Role};
use crate::exit::Failure;
use crate::names;
use crate::output::say;
use crate::output::{
    self, Format, fields, print_document, print_list, print_one, short, table, time, to_json,
};
use crate::progress;

pub async fn run(ctx: &Ctx, cmd: Clusters) -> Result<(), Failure> {
    let tenant = ctx.tenant.as_deref();
    match cmd {
        Clusters::Create {
            name,
            spec,
            version,
            node_set,
            roles,
            shape,
            zones,
            restore,
            change,
        } => {
            let (parent, id) = names::new_cluster(&name, tenant)?;
            let spec = match spec {
                Some(path) => read_spec(&path)?,
                None => new_spec(version.unwrap_or_default(), node_set, &roles, &shape, zones)?,
            };
            let mut req = v1::CreateClusterRequest::new(parent, id, spec);
            if let Some(source) = restore_source(restore, tenant)? {
                req = req.with_restore_from(source);
            }
            req.validate_only = change.dry_run;
            let resp = ctx.client.create_cluster(req).await?;
            let cluster = resp.cluster.clone().unwrap_or_default();
            finish_change(
                ctx,
                "Creating",
                &cluster.name,
                change,
                resp.disruption(),
                &resp,
                "esaas.v1.CreateClusterResponse",
                resp.operation_name(),
                "",
            )
            .await
        }
        Clusters::Get { name } => {
            let c = ctx
                .client
                .get_cluster(&names::cluster(&name, tenant)?)
                .await?;
            Ok(print_one(
                ctx.format,
                "esaas.v1.Cluster",
                &c,
                cluster_details,
            )?)
        }
        Clusters::List {
            all_tenants,
            state,
            show_deleted,
        } => {
            let parent = if all_tenants {
                "tenants/-".to_string()
            } else {
                names::tenant(tenant)?
            };
            let req = v1::ListClustersRequest {
                parent,
                filter: state.map(|s| format!("state = {s}")).unwrap_or_default(),
                show_deleted,
                ..Default::default()
            };
            let clusters: Vec<_> = ctx.client.list_clusters(req).try_collect().await?;
            Ok(print_list(
                ctx.format,
                "esaas.v1.Cluster",
                &clusters,
                &[
                    "NAME",
                    "STATE",
                    "HEALTH",
                    "VERSION",
                    "NODES",
                    "GENERATION",
                    "OPERATION",
                ],
                cluster_row,
            )?)
        }
        Clusters::Update {
            name,
            spec,
            version,
            node_set,
            shape,
            zones,
            etag,
            change,
        } => {
            let name = names::cluster(&name, tenant)?;
            let current = ctx.client.get_cluster(&name).await?;
            let (new_spec, paths) = match spec {
                Some(path) => (read_spec(&path)?, vec!["spec".to_string()]),
                None => changed_spec(
                    current.spec.clone().unwrap_or_default(),
                    version,
                    node_set,
                    &shape,
                    zones,
                )?,
            };
            let req = v1::UpdateClusterRequest {
                cluster: Some(v1::Cluster {
                    name: name.clone(),
                    // A read-modify-write: refuse it if someone changed the cluster in between.
                    etag: etag.unwrap_or(current.etag),
                    spec: Some(new_spec),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask { paths }),
                validate_only: change.dry_run,
                ..Default::default()
            };
            let resp = ctx.client.update_cluster(req).await?;
            finish_change(
                ctx,
                "Updating",
                &name,
                change,
                resp.disruption(),
                &resp,
                "esaas.v1.UpdateClusterResponse",
                resp.operation_name(),
                "",
            )
            .await
        }
        Clusters::Delete {
            name,
            etag,
            skip_final_snapshot,
            change,
        } => {
            let name = names::cluster(&name, tenant)?;
            let req = v1::DeleteClusterRequest {
                name: name.clone(),
                etag: etag.unwrap_or_default(),
                validate_only: change.dry_run,
                skip_final_snapshot,
                ..Default::default()
            };
            let resp = ctx.client.delete_cluster(req).await?;
            let note = final_snapshot_line(resp.final_snapshot.as_ref());
            finish_change(
                ctx,
                "Deleting",
                &name,
                change,
                resp.disruption(),
                &resp,
                "esaas.v1.DeleteClusterResponse",
                resp.operation_name(),
                &note,
            )
            .await
        }
        Clusters::Watch { name, since } => watch(ctx, &names::cluster(&name, tenant)?, since).await,
        Clusters::Credentials { name } => {
            let c = ctx
                .client
                .cluster_credentials(&names::cluster(&name, tenant)?)
                .await?;
            Ok(print_one(
                ctx.format,
                "esaas.v1.GetClusterCredentialsResponse",
                &c,
                |c| {
                    format!(
                        "{}\n\n{}",
                        fields(&[
                            ("endpoint", c.endpoint.clone()),
                            ("username", c.username.clone()),
                            ("password", c.password.clone()),
                        ]),
                        c.ca_certificate_pem.trim_end()
                    )
                },
            )?)
        }
    }
}

/// After a create, update or delete: the dry run's verdict, the queued operation with
/// `--async`, or the operation followed to its end and the cluster as it is then.
/// `note` (a delete's final snapshot) is one more line for people, when not empty.
#[allow(clippy::too_many_arguments)]
async fn finish_change<M: prost::Message>(
    ctx: &Ctx,
    verb: &str,
    name: &str,
    change: ChangeFlags,
    disruption: Disruption,
    resp: &M,
    resp_type: &str,
    op: &str,
    note: &str,
) -> Result<(), Failure> {
    let note = if note.is_empty() {
        String::new()
    } else {
        format!("\n{note}")
    };
    if change.dry_run {
        return Ok(print_one(ctx.format, resp_type, resp, |_| {
            format!(
                "dry run: the request is valid; nothing was changed\ndisruption: {} ({}){note}",
                short(disruption.as_str_name(), "DISRUPTION_"),
                explain(disruption)
            )
        })?);
    }
    if op.is_empty() {
        // Nothing to do: the spec asked for is the spec there is.
        return Ok(print_one(ctx.format, resp_type, resp, |_| {
            format!("{name}: no change")
        })?);
    }
    if change.no_wait {
        return Ok(print_one(ctx.format, resp_type, resp, |_| {
            format!(
                "{op} queued ({}); follow it with: esaasctl operations watch {op}{note}",
                short(disruption.as_str_name(), "DISRUPTION_")
            )
        })?);
    }
    if !note.is_empty() {
        eprintln!("{}", note.trim_start());
    }
    progress::follow(&ctx.client, op, &format!("{verb} {name} ({op})")).await?;
    let cluster = ctx.client.get_cluster(name).await?;
    Ok(print_one(
        ctx.format,
        "esaas.v1.Cluster",
        &cluster,
        cluster_details,
    )?)
}

/// Whether a delete takes a final snapshot, its name, and why (not).
fn final_snapshot_line(f: Option<&v1::FinalSnapshot>) -> String {
    let Some(f) = f else {
        return String::new();
    };
    match (f.taken, f.reason.is_empty()) {
        (true, _) => format!("final snapshot: {} ({})", f.snapshot, f.reason),
        (false, false) => format!("final snapshot: none ({})", f.reason),
        (false, true) => "final snapshot: none".into(),
    }
}

/// The snapshot a new cluster restores, from `--restore-from`, `--snapshot` and `--indices`.
fn restore_source(
    flags: RestoreFlags,
    tenant: Option<&str>,
) -> anyhow::Result<Option<v1::RestoreSource>> {
    let (Some(from), Some(snapshot)) = (flags.restore_from, flags.snapshot) else {
        return Ok(None);
    };
    Ok(Some(
        v1::RestoreSource::new(names::cluster(&from, tenant)?, snapshot)
            .with_indices(&flags.indices),
    ))
}

/// What a disruption means for a running cluster.
pub fn explain(d: Disruption) -> &'static str {
    match d {
        Disruption::None => "nothing running is touched",
        Disruption::InPlace => "changed in place, no node restarts",
        Disruption::Rolling => "nodes restart or leave one at a time, green between them",
        Disruption::NewNodesFirst => "new nodes join before anything moves",
        Disruption::Destructive => "the cluster and, unless retained, its data are removed",
        Disruption::Unspecified => "not reported",
    }
}

fn read_spec(path: &std::path::Path) -> anyhow::Result<v1::ClusterSpec> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    output::from_text("esaas.v1.ClusterSpec", &text)
        .with_context(|| format!("the spec in {}", path.display()))
}

fn role(r: Role) -> v1::NodeRole {
    match r {
        Role::Master => v1::NodeRole::Master,
        Role::Data => v1::NodeRole::Data,
        Role::Ingest => v1::NodeRole::Ingest,
        Role::Ml => v1::NodeRole::Ml,
        Role::Transform => v1::NodeRole::Transform,
    }
}

fn new_spec(
    version: String,
    node_set: String,
    roles: &[Role],
    shape: &NodeSetFlags,
    zones: Option<i32>,
) -> anyhow::Result<v1::ClusterSpec> {
    let (Some(nodes), Some(size), Some(storage)) =
        (shape.nodes, shape.size.clone(), shape.storage_gib)
    else {
        bail!("a new cluster needs --nodes, --size and --storage-gib (or --spec FILE)");
    };
    let roles: Vec<_> = roles.iter().copied().map(role).collect();
    let ns = v1::NodeSet::new(node_set, nodes, size, storage)
        .with_roles(&roles)
        .with_performance(shape.iops.unwrap_or(0), shape.throughput_mibps.unwrap_or(0));
    Ok(v1::ClusterSpec::new(version)
        .with_node_set(ns)
        .with_zone_count(zones.unwrap_or(0)))
}

/// The spec with the flags applied, and the update mask naming what they change.
fn changed_spec(
    mut spec: v1::ClusterSpec,
    version: Option<String>,
    node_set: Option<String>,
    shape: &NodeSetFlags,
    zones: Option<i32>,
) -> anyhow::Result<(v1::ClusterSpec, Vec<String>)> {
    let mut paths = Vec::new();
    if let Some(v) = version {
        spec.version = v;
        paths.push("spec.version".to_string());
    }
    if let Some(z) = zones {
        spec.zone_count = z;
        paths.push("spec.zone_count".to_string());
    }
    if shape.size.is_some() {
        bail!(
            "a node set's size class cannot change in place: add a node set with the new class and remove the old one (--spec FILE)"
        );
    }
    let touches_node_set = shape.nodes.is_some()
        || shape.storage_gib.is_some()
        || shape.iops.is_some()
        || shape.throughput_mibps.is_some();
    if touches_node_set {
        let names: Vec<String> = spec.node_sets.iter().map(|n| n.name.clone()).collect();
        let target = match (&node_set, names.as_slice()) {
            (Some(n), _) => n.clone(),
            (None, [only]) => only.clone(),
            (None, _) => bail!("the cluster has node sets {names:?}: say which with --node-set"),
        };
        let ns = spec
            .node_sets
            .iter_mut()
            .find(|n| n.name == target)
            .ok_or_else(|| anyhow!("no node set {target:?} (there are {names:?})"))?;
        if let Some(n) = shape.nodes {
            ns.count = n;
        }
        if let Some(g) = shape.storage_gib {
            ns.storage_gib = g;
        }
        if let Some(i) = shape.iops {
            ns.storage_iops = i;
        }
        if let Some(t) = shape.throughput_mibps {
            ns.storage_throughput_mibps = t;
        }
        paths.push("spec.node_sets".to_string());
    }
    if paths.is_empty() {
        bail!(
            "nothing to change: give --version, --nodes, --storage-gib, --iops, --throughput-mibps, --zones or --spec"
        );
    }
    Ok((spec, paths))
}

fn state_of(c: &v1::Cluster) -> (String, String) {
    let s = c.status.clone().unwrap_or_default();
    (
        short(s.state().as_str_name(), "CLUSTER_STATE_"),
        short(s.health().as_str_name(), "CLUSTER_HEALTH_"),
    )
}

fn nodes(spec: &v1::ClusterSpec) -> i32 {
    spec.node_sets.iter().map(|n| n.count).sum()
}

pub fn cluster_row(c: &v1::Cluster) -> Vec<String> {
    let (state, health) = state_of(c);
    let spec = c.spec.clone().unwrap_or_default();
    let status = c.status.clone().unwrap_or_default();
    vec![
        c.name.clone(),
        state,
        health,
        spec.version.clone(),
        nodes(&spec).to_string(),
        format!("{}/{}", status.observed_generation, c.generation),
        if status.current_operation.is_empty() {
            "-".into()
        } else {
            status.current_operation.clone()
        },
    ]
}

fn cluster_details(c: &v1::Cluster) -> String {
    let (state, health) = state_of(c);
    let spec = c.spec.clone().unwrap_or_default();
    let status = c.status.clone().unwrap_or_default();
    let mut pairs = vec![
        ("name", c.name.clone()),
        ("state", state),
        ("health", health),
        ("version", spec.version.clone()),
        (
            "generation",
            format!("{} (observed {})", c.generation, status.observed_generation),
        ),
        (
            "endpoint",
            if status.endpoint.is_empty() {
                "-".into()
            } else {
                status.endpoint.clone()
            },
        ),
        (
            "operation",
            if status.current_operation.is_empty() {
                "-".into()
            } else {
                status.current_operation.clone()
            },
        ),
        ("message", status.message.clone()),
        ("etag", c.etag.clone()),
        ("created", time(c.create_time.as_ref())),
        ("snapshots", snapshot_policy(spec.snapshot_policy.as_ref())),
        ("last snapshot", last_snapshot(status.snapshots.as_ref())),
    ];
    let snapshots = status.snapshots.clone().unwrap_or_default();
    if snapshots.last_failure_time.is_some() {
        pairs.push((
            "snapshot failed",
            format!(
                "{}: {}",
                time(snapshots.last_failure_time.as_ref()),
                snapshots.last_failure_reason
            ),
        ));
    }
    if !snapshots.final_snapshot.is_empty() {
        pairs.push(("final snapshot", snapshots.final_snapshot.clone()));
    }
    let mut out = fields(&pairs);
    out.push_str("\n\n");
    out.push_str(&table(
        &[
            "NODE SET", "ROLES", "NODES", "SIZE", "STORAGE", "IOPS", "MiB/s",
        ],
        spec.node_sets.iter().map(|n| {
            vec![
                n.name.clone(),
                n.roles()
                    .map(|r| short(r.as_str_name(), "NODE_ROLE_").to_lowercase())
                    .collect::<Vec<_>>()
                    .join(","),
                n.count.to_string(),
                n.size_class.clone(),
                format!("{} GiB", n.storage_gib),
                n.storage_iops.to_string(),
                n.storage_throughput_mibps.to_string(),
            ]
        }),
    ));
    if !status.conditions.is_empty() {
        out.push_str("\n\n");
        out.push_str(&table(
            &["CONDITION", "STATUS", "REASON", "MESSAGE"],
            status.conditions.iter().map(|k| {
                vec![
                    k.r#type.clone(),
                    short(k.status().as_str_name(), "CONDITION_STATUS_"),
                    k.reason.clone(),
                    k.message.clone(),
                ]
            }),
        ));
    }
    out
}

/// The snapshot policy for people; unset is the platform default.
fn snapshot_policy(p: Option<&v1::SnapshotPolicy>) -> String {
    match p {
        None => "every 24 h, the newest 7 kept (the default)".into(),
        Some(p) if p.interval_hours == 0 => "no scheduled snapshots".into(),
        Some(p) => format!(
            "every {} h, the newest {} kept",
            p.interval_hours, p.retention
        ),
    }
}

/// The newest snapshot that succeeded, and when.
fn last_snapshot(s: Option<&v1::SnapshotStatus>) -> String {
    match s {
        Some(s) if !s.last_success.is_empty() => {
            format!(
                "{} at {}",
                s.last_success,
                time(s.last_success_time.as_ref())
            )
        }
        _ => "-".into(),
    }
}

/// Says on stderr that events expired before the watch could send them.
fn resynced(after: i64, cluster: &esaas_client::v1::Cluster) {
    eprintln!(
        "the events after revision {after} have expired; resynced at revision {}",
        cluster.revision
    );
}

/// One line per event (a JSON object per line with `-o json`), until Ctrl-C.
async fn watch(ctx: &Ctx, name: &str, since: i64) -> Result<(), Failure> {
    let mut stream = ctx.client.watch_cluster(name, since);
    loop {
        let item = tokio::select! {
            item = stream.try_next() => item?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let Some(item) = item else { return Ok(()) };
        match (ctx.format, item) {
            (_, WatchItem::Resumed { revision }) => {
                eprintln!("reconnected; resuming after revision {revision}");
            }
            (Format::Table, WatchItem::Resynced { after, cluster }) => {
                resynced(after, &cluster);
                let (state, health) = state_of(&cluster);
                println!(
                    "{:>4} {:<20} {state} {health} (generation {})",
                    cluster.revision, "CURRENT", cluster.generation
                );
            }
            (format, WatchItem::Resynced { after, cluster }) => {
                resynced(after, &cluster);
                print_line(format, &to_json("esaas.v1.Cluster", &cluster)?)?
            }
            (Format::Table, WatchItem::Cluster(c)) => {
                let (state, health) = state_of(&c);
                println!(
                    "{:>4} {:<20} {state} {health} (generation {})",
                    c.revision, "CURRENT", c.generation
                );
            }
            (Format::Table, WatchItem::Event(e)) => {
                let state = e
                    .cluster_snapshot
                    .as_ref()
                    .map(|c| format!(" [{}]", state_of(c).0))
                    .unwrap_or_default();
                say(format!(
                    "{:>4} {:<20} {}{state}",
                    e.revision,
                    short(e.r#type().as_str_name(), "CLUSTER_EVENT_TYPE_"),
                    e.message
                ))?;
            }
            (format, WatchItem::Cluster(c)) => {
                print_line(format, &to_json("esaas.v1.Cluster", &c)?)?
            }
            (format, WatchItem::Event(e)) => {
                print_line(format, &to_json("esaas.v1.ClusterEvent", &e)?)?
            }
        }
    }
}

/// One document per line for JSON (NDJSON), a YAML document per item otherwise.
fn print_line(format: Format, doc: &serde_json::Value) -> anyhow::Result<()> {
    match format {
        Format::Yaml => {
            say("---")?;
            print_document(format, doc)
        }
        _ => say(serde_json::to_string(doc)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(nodes: Option<i32>) -> NodeSetFlags {
        NodeSetFlags {
            nodes,
            size: None,
            storage_gib: None,
            iops: None,
            throughput_mibps: None,
        }
    }

    #[test]
    fn a_delete_says_whether_it_takes_a_final_snapshot() {
        let taken = v1::FinalSnapshot {
            taken: true,
            snapshot: "final-1".into(),
            reason: "snapshot final-1 is taken before anything is removed".into(),
        };
        assert!(final_snapshot_line(Some(&taken)).starts_with("final snapshot: final-1 ("));
        let none = v1::FinalSnapshot {
            taken: false,
            snapshot: String::new(),
            reason: "skip_final_snapshot was set".into(),
        };
        assert_eq!(
            final_snapshot_line(Some(&none)),
            "final snapshot: none (skip_final_snapshot was set)"
        );
        assert_eq!(final_snapshot_line(None), "");
    }

    #[test]
    fn a_restore_source_from_short_names() {
        let flags = RestoreFlags {
            restore_from: Some("logs".into()),
            snapshot: Some("final-1".into()),
            indices: vec!["orders".into()],
        };
        let src = restore_source(flags, Some("demo")).unwrap().unwrap();
        assert_eq!(src.cluster, "tenants/demo/clusters/logs");
        assert_eq!((src.snapshot.as_str(), src.indices.len()), ("final-1", 1));
        let none = RestoreFlags {
            restore_from: None,
            snapshot: None,
            indices: vec![],
        };
        assert!(restore_source(none, Some("demo")).unwrap().is_none());
    }

    #[test]
    fn an_update_names_what_it_changes() {
        let spec = v1::ClusterSpec::new("8.17.10")
            .with_node_set(v1::NodeSet::new("default", 3, "small", 100));
        let (s, paths) = changed_spec(spec.clone(), None, None, &shape(Some(5)), None).unwrap();
        assert_eq!(s.node_sets[0].count, 5);
        assert_eq!(paths, ["spec.node_sets"]);
        let (s, paths) = changed_spec(
            spec.clone(),
            Some("8.19.3".into()),
            None,
            &shape(None),
            None,
        )
        .unwrap();
        assert_eq!(s.version, "8.19.3");
        assert_eq!(paths, ["spec.version"]);
        assert!(changed_spec(spec.clone(), None, None, &shape(None), None).is_err());
        assert!(
            changed_spec(
                spec.clone(),
                None,
                Some("other".into()),
                &shape(Some(2)),
                None
            )
            .is_err()
        );
        let two = spec.with_node_set(v1::NodeSet::new("data", 2, "large", 500));
        assert!(
            changed_spec(two.clone(), None, None, &shape(Some(2)), None).is_err(),
            "which node set?"
        );
        let (s, _) = changed_spec(two, None, Some("data".into()), &shape(Some(4)), None).unwrap();
        assert_eq!(s.node_sets[1].count, 4);
    }
}
