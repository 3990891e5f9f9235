//! `esaasctl snapshots ...`.

use esaas_client::v1;
use futures::TryStreamExt;

use super::Ctx;
use super::operations::operation_details;
use crate::cli::Snapshots;
use crate::exit::Failure;
use crate::names;
use crate::output::{elapsed, fields, print_list, print_one, short, time};
use crate::progress;

pub async fn run(ctx: &Ctx, cmd: Snapshots) -> Result<(), Failure> {
    let tenant = ctx.tenant.as_deref();
    match cmd {
        Snapshots::Create { name, no_wait } => {
            let name = names::cluster(&name, tenant)?;
            let resp = ctx
                .client
                .create_snapshot(v1::CreateSnapshotRequest::new(&name))
                .await?;
            let (op, id) = (resp.operation_name(), resp.snapshot_id());
            if no_wait {
                return Ok(print_one(
                    ctx.format,
                    "esaas.v1.CreateSnapshotResponse",
                    &resp,
                    |_| {
                        format!(
                            "{op} queued: snapshot {id}; follow it with: esaasctl operations watch {op}"
                        )
                    },
                )?);
            }
            let done = progress::follow(
                &ctx.client,
                op,
                &format!("Snapshotting {name} as {id} ({op})"),
            )
            .await?;
            // The snapshot as the platform recorded it; the operation if it is not listed.
            let listed = find(ctx, &name, id).await?;
            match listed {
                Some(s) => Ok(print_one(
                    ctx.format,
                    "esaas.v1.Snapshot",
                    &s,
                    snapshot_details,
                )?),
                None => Ok(print_one(
                    ctx.format,
                    "esaas.v1.Operation",
                    &done,
                    operation_details,
                )?),
            }
        }
        Snapshots::List { name } => {
            let req = v1::ListSnapshotsRequest::new(names::cluster(&name, tenant)?);
            let snapshots: Vec<_> = ctx.client.list_snapshots(req).try_collect().await?;
            Ok(print_list(
                ctx.format,
                "esaas.v1.Snapshot",
                &snapshots,
                &[
                    "SNAPSHOT", "KIND", "STATE", "INDICES", "STARTED", "TOOK", "FAILURE",
                ],
                snapshot_row,
            )?)
        }
        Snapshots::Restore {
            name,
            from,
            snapshot,
            indices,
            no_wait,
        } => {
            let name = names::cluster(&name, tenant)?;
            let source = v1::RestoreSource::new(names::cluster(&from, tenant)?, snapshot)
                .with_indices(&indices);
            let resp = ctx
                .client
                .restore_snapshot(v1::RestoreSnapshotRequest::new(&name, source))
                .await?;
            let op = resp.operation_name();
            if no_wait {
                return Ok(print_one(
                    ctx.format,
                    "esaas.v1.RestoreSnapshotResponse",
                    &resp,
                    |_| format!("{op} queued; follow it with: esaasctl operations watch {op}"),
                )?);
            }
            let done =
                progress::follow(&ctx.client, op, &format!("Restoring into {name} ({op})")).await?;
            Ok(print_one(
                ctx.format,
                "esaas.v1.Operation",
                &done,
                operation_details,
            )?)
        }
    }
}

/// Snapshot `id` of the clusters named `cluster`, if listed.
async fn find(ctx: &Ctx, cluster: &str, id: &str) -> Result<Option<v1::Snapshot>, Failure> {
    let mut all = ctx
        .client
        .list_snapshots(v1::ListSnapshotsRequest::new(cluster));
    while let Some(s) = all.try_next().await? {
        if s.snapshot_id == id {
            return Ok(Some(s));
        }
    }
    Ok(None)
}

fn snapshot_row(s: &v1::Snapshot) -> Vec<String> {
    vec![
        s.snapshot_id.clone(),
        short(s.kind().as_str_name(), "SNAPSHOT_KIND_"),
        short(s.state().as_str_name(), "SNAPSHOT_STATE_"),
        s.indices.len().to_string(),
        time(s.start_time.as_ref()),
        elapsed(s.start_time.as_ref(), s.end_time.as_ref()).unwrap_or_else(|| "-".into()),
        if s.failure_reason.is_empty() {
            "-".into()
        } else {
            s.failure_reason.clone()
        },
    ]
}

fn snapshot_details(s: &v1::Snapshot) -> String {
    fields(&[
        ("name", s.name.clone()),
        ("snapshot", s.snapshot_id.clone()),
        ("kind", short(s.kind().as_str_name(), "SNAPSHOT_KIND_")),
        ("state", short(s.state().as_str_name(), "SNAPSHOT_STATE_")),
        (
            "indices",
            if s.indices.is_empty() {
                "-".into()
            } else {
                s.indices.join(",")
            },
        ),
        ("started", time(s.start_time.as_ref())),
        ("ended", time(s.end_time.as_ref())),
        ("operation", s.operation.clone()),
        ("cluster uid", s.cluster_uid.clone()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_row_for_people() {
        let s = v1::Snapshot {
            snapshot_id: "manual-1".into(),
            kind: v1::SnapshotKind::Manual as i32,
            state: v1::SnapshotState::Success as i32,
            indices: vec!["a".into(), "b".into()],
            ..Default::default()
        };
        assert_eq!(
            snapshot_row(&s),
            ["manual-1", "MANUAL", "SUCCESS", "2", "-", "-", "-"]
        );
        assert!(snapshot_details(&s).contains("indices      a,b"));
    }
}
