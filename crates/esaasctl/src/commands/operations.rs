//! `esaasctl operations ...`.

use esaas_client::v1;
use futures::TryStreamExt;

use super::Ctx;
use crate::cli::Operations;
use crate::exit::Failure;
use crate::names;
use crate::output::{elapsed, fields, print_list, print_one, short, table, time};
use crate::progress;

pub async fn run(ctx: &Ctx, cmd: Operations) -> Result<(), Failure> {
    match cmd {
        Operations::Get { name } => {
            let op = ctx.client.get_operation(&names::operation(&name)).await?;
            Ok(print_one(
                ctx.format,
                "esaas.v1.Operation",
                &op,
                operation_details,
            )?)
        }
        Operations::List {
            cluster,
            state,
            all_tenants,
        } => {
            let tenant = ctx.tenant.as_deref();
            let cluster = cluster.map(|c| names::cluster(&c, tenant)).transpose()?;
            let parent = match (&cluster, all_tenants) {
                (_, true) => "tenants/-".to_string(),
                (Some(c), false) => c.split("/clusters/").next().unwrap_or_default().to_string(),
                (None, false) => names::tenant(tenant)?,
            };
            let req = v1::ListOperationsRequest {
                parent,
                cluster: cluster.unwrap_or_default(),
                filter: state.map(|s| format!("state = {s}")).unwrap_or_default(),
                ..Default::default()
            };
            let ops: Vec<_> = ctx.client.list_operations(req).try_collect().await?;
            Ok(print_list(
                ctx.format,
                "esaas.v1.Operation",
                &ops,
                &[
                    "NAME", "CLUSTER", "KIND", "STATE", "ATTEMPTS", "CREATED", "MESSAGE",
                ],
                |o| {
                    vec![
                        o.name.clone(),
                        o.cluster.clone(),
                        short(o.kind().as_str_name(), "OPERATION_KIND_"),
                        short(o.state().as_str_name(), "OPERATION_STATE_"),
                        o.attempts.len().to_string(),
                        time(o.create_time.as_ref()),
                        o.message.clone(),
                    ]
                },
            )?)
        }
        Operations::Watch { name } => {
            let name = names::operation(&name);
            let op = progress::follow(&ctx.client, &name, &format!("Following {name}")).await?;
            Ok(print_one(
                ctx.format,
                "esaas.v1.Operation",
                &op,
                operation_details,
            )?)
        }
        Operations::Retry { name, no_wait } => {
            let op = ctx.client.retry_operation(&names::operation(&name)).await?;
            finish(ctx, op, no_wait, "Retrying").await
        }
        Operations::Cancel { name, no_wait } => {
            let op = ctx
                .client
                .cancel_operation(&names::operation(&name))
                .await?;
            finish(ctx, op, no_wait, "Cancelling").await
        }
    }
}

async fn finish(ctx: &Ctx, op: v1::Operation, no_wait: bool, verb: &str) -> Result<(), Failure> {
    if no_wait || op.done {
        return Ok(print_one(
            ctx.format,
            "esaas.v1.Operation",
            &op,
            operation_details,
        )?);
    }
    let title = format!("{verb} {} ({})", op.cluster, op.name);
    let done = match progress::follow(&ctx.client, &op.name, &title).await {
        // A cancelled operation is what `cancel` asked for.
        Err(Failure::Client(esaas_client::Error::OperationFailed(o)))
            if verb == "Cancelling" && o.state() == v1::OperationState::Cancelled =>
        {
            *o
        }
        other => other?,
    };
    Ok(print_one(
        ctx.format,
        "esaas.v1.Operation",
        &done,
        operation_details,
    )?)
}

pub fn operation_details(op: &v1::Operation) -> String {
    let mut out = fields(&[
        ("name", op.name.clone()),
        ("cluster", op.cluster.clone()),
        ("kind", short(op.kind().as_str_name(), "OPERATION_KIND_")),
        ("state", short(op.state().as_str_name(), "OPERATION_STATE_")),
        ("message", op.message.clone()),
        (
            "blocking",
            if op.blocking_check.is_empty() {
                "-".into()
            } else {
                op.blocking_check.clone()
            },
        ),
        (
            "initiator",
            op.initiator
                .as_ref()
                .map(|i| i.principal.clone())
                .unwrap_or_default(),
        ),
        (
            "attempts",
            format!("{} of {}", op.attempts.len(), op.max_attempts),
        ),
        ("created", time(op.create_time.as_ref())),
        ("ended", time(op.end_time.as_ref())),
    ]);
    if let Some(e) = &op.error {
        out.push_str(&format!("\nerror      {}", e.message));
    }
    if !op.stages.is_empty() {
        out.push_str("\n\n");
        out.push_str(&table(
            &["STAGE", "STATE", "TOOK", "MESSAGE"],
            op.stages.iter().map(|s| {
                vec![
                    s.name.clone(),
                    short(s.state().as_str_name(), "STAGE_STATE_"),
                    elapsed(s.start_time.as_ref(), s.end_time.as_ref())
                        .unwrap_or_else(|| "-".into()),
                    s.message.clone(),
                ]
            }),
        ));
    }
    if !op.attempts.is_empty() {
        out.push_str("\n\n");
        out.push_str(&table(
            &["ATTEMPT", "WORKER", "STARTED", "OUTCOME"],
            op.attempts.iter().map(|a| {
                vec![
                    a.number.to_string(),
                    a.worker.clone(),
                    time(a.start_time.as_ref()),
                    if a.outcome.is_empty() {
                        "running".into()
                    } else {
                        a.outcome.clone()
                    },
                ]
            }),
        ));
    }
    out
}
