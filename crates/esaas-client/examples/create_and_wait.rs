//! Creates a cluster and waits until it is READY, printing each stage as it starts.
//!
//! ```sh
//! ESAAS_ADDR=127.0.0.1:50051 ESAAS_KEY=esk_... ESAAS_TENANT=demo \
//!   cargo run -p esaas-client --example create_and_wait -- logs
//! ```

use esaas_client::{Client, v1};
use futures::TryStreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tenant = std::env::var("ESAAS_TENANT").map_err(|_| "set ESAAS_TENANT")?;
    let id = std::env::args().nth(1).unwrap_or_else(|| "example".into());
    let client = Client::from_env().await?;

    let spec = v1::ClusterSpec::new("8.17.10").with_node_set(
        v1::NodeSet::new("default", 3, "small", 100)
            .with_roles(&[v1::NodeRole::Master, v1::NodeRole::Data]),
    );
    let created = client
        .create_cluster(v1::CreateClusterRequest::new(
            format!("tenants/{tenant}"),
            id,
            spec,
        ))
        .await?;
    let name = created.cluster.clone().unwrap_or_default().name;

    // Progress as a stream; `client.wait_operation(name)` alone would just wait.
    let mut progress = client.watch_operation(created.operation_name());
    let mut started = Vec::new();
    while let Some(op) = progress.try_next().await? {
        for s in op
            .stages
            .iter()
            .filter(|s| s.state() == v1::StageState::Running)
        {
            if !started.contains(&s.name) {
                println!("stage {}", s.name);
                started.push(s.name.clone());
            }
        }
        if op.done {
            println!("{:?}", op.state());
        }
    }
    let cluster = client.get_cluster(&name).await?;
    println!(
        "{} is {:?} at {}",
        cluster.name,
        cluster.status.clone().unwrap_or_default().state(),
        cluster.status.unwrap_or_default().endpoint
    );
    Ok(())
}
