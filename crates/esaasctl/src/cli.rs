//! The command line, as clap reads it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::output::Format;

/// esaas from the terminal: clusters, their operations (waited for, with live
/// progress), tenants, API keys, the catalog and workers.
#[derive(Debug, Parser)]
#[command(name = "esaasctl", version, after_help = crate::exit::HELP)]
pub struct Cli {
    /// The control plane: https://host[:port], http://host:port, or a bare host:port
    /// (plaintext on loopback only).
    #[arg(
        long,
        env = "ESAAS_ADDR",
        global = true,
        default_value = "http://127.0.0.1:50051"
    )]
    pub addr: String,
    /// The API key (esk_...).
    #[arg(long, env = "ESAAS_KEY", global = true, hide_env_values = true)]
    pub key: Option<String>,
    /// A PEM CA bundle that verifies https:// instead of the system's roots.
    #[arg(long, env = "ESAAS_CA_CERT", global = true)]
    pub ca_cert: Option<PathBuf>,
    /// The tenant of short cluster names (`logs` for `tenants/{tenant}/clusters/logs`).
    #[arg(long, short = 't', env = "ESAAS_TENANT", global = true)]
    pub tenant: Option<String>,
    /// How results are printed on stdout (progress always goes to stderr).
    #[arg(long, short = 'o', value_enum, default_value = "table", global = true)]
    pub output: Format,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Elasticsearch clusters of a tenant.
    #[command(subcommand)]
    Clusters(Clusters),
    /// Snapshots of a cluster: take one, list them, restore indices from one.
    #[command(subcommand)]
    Snapshots(Snapshots),
    /// Long-running operations: follow, retry, cancel.
    #[command(subcommand)]
    Operations(Operations),
    /// Tenants and their quotas (platform admins).
    #[command(subcommand)]
    Tenants(Tenants),
    /// API keys.
    #[command(subcommand)]
    Keys(Keys),
    /// What a cluster may ask for: versions, upgrade paths, size classes, limits.
    Catalog,
    /// The workers connected to the control plane (platform admins).
    Workers,
    /// Prints a shell completion script: `esaasctl completions bash > /etc/bash_completion.d/esaasctl`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// How a change is made.
#[derive(Debug, Args, Clone, Copy)]
pub struct ChangeFlags {
    /// Return once the change is queued instead of waiting for it.
    #[arg(long = "async")]
    pub no_wait: bool,
    /// Check the change and show how disruptive it would be, without making it.
    #[arg(long)]
    pub dry_run: bool,
}

/// A node set's shape on the command line.
#[derive(Debug, Args, Clone)]
pub struct NodeSetFlags {
    /// Nodes in the node set.
    #[arg(long)]
    pub nodes: Option<i32>,
    /// Size class of each node (see `esaasctl catalog`).
    #[arg(long)]
    pub size: Option<String>,
    /// gp3 volume per node, in GiB.
    #[arg(long)]
    pub storage_gib: Option<i32>,
    /// Provisioned IOPS per node (0: the gp3 baseline).
    #[arg(long)]
    pub iops: Option<i32>,
    /// Provisioned throughput per node, in MiB/s (0: the gp3 baseline).
    #[arg(long)]
    pub throughput_mibps: Option<i32>,
}

#[derive(Debug, Subcommand)]
pub enum Clusters {
    /// Creates a cluster and waits until it is READY.
    #[command(
        after_help = "Example:\n  esaasctl -t demo clusters create logs --version 8.17.10 --nodes 3 --size small --storage-gib 100"
    )]
    Create {
        /// `id` (with --tenant) or `tenants/{tenant}/clusters/{id}`.
        name: String,
        /// The whole spec from a file: a ClusterSpec in JSON or YAML (proto3 JSON names).
        #[arg(long, conflicts_with_all = ["version", "node_set", "roles", "zones"])]
        spec: Option<PathBuf>,
        /// Elasticsearch version (see `esaasctl catalog`).
        #[arg(long, required_unless_present = "spec")]
        version: Option<String>,
        /// Name of the node set.
        #[arg(long, default_value = "default")]
        node_set: String,
        /// Roles of its nodes.
        #[arg(long, value_delimiter = ',', default_value = "master,data,ingest")]
        roles: Vec<Role>,
        #[command(flatten)]
        shape: NodeSetFlags,
        /// Availability zones to spread over.
        #[arg(long)]
        zones: Option<i32>,
        #[command(flatten)]
        restore: RestoreFlags,
        #[command(flatten)]
        change: ChangeFlags,
    },
    /// Shows a cluster.
    Get {
        /// `id` (with --tenant) or the full name.
        name: String,
    },
    /// Lists the clusters of the tenant (every page).
    List {
        /// Every tenant's clusters (platform admins).
        #[arg(long)]
        all_tenants: bool,
        /// Only clusters in this state (READY, PROVISIONING, ...).
        #[arg(long)]
        state: Option<String>,
        /// Include DELETED tombstones.
        #[arg(long)]
        show_deleted: bool,
    },
    /// Changes a cluster (scale, grow storage, upgrade) and waits until it is applied.
    #[command(
        after_help = "Examples:\n  esaasctl -t demo clusters update logs --nodes 5 --dry-run\n  esaasctl -t demo clusters update logs --version 8.19.3"
    )]
    Update {
        /// `id` (with --tenant) or the full name.
        name: String,
        /// Replace the whole spec with a file's (JSON or YAML ClusterSpec).
        #[arg(long, conflicts_with_all = ["version", "zones"])]
        spec: Option<PathBuf>,
        /// Upgrade to this Elasticsearch version.
        #[arg(long)]
        version: Option<String>,
        /// The node set that --nodes, --storage-gib, --iops and --throughput-mibps change
        /// (needed when there are several).
        #[arg(long)]
        node_set: Option<String>,
        #[command(flatten)]
        shape: NodeSetFlags,
        /// Availability zones.
        #[arg(long)]
        zones: Option<i32>,
        /// Fail with ABORTED unless the cluster still has this etag (default: the etag
        /// read just before the change).
        #[arg(long)]
        etag: Option<String>,
        #[command(flatten)]
        change: ChangeFlags,
    },
    /// Deletes a cluster and waits until it is gone. A final snapshot is taken first
    /// when the platform has a snapshot bucket (the dry run says whether).
    Delete {
        /// `id` (with --tenant) or the full name.
        name: String,
        /// Fail with ABORTED unless the cluster still has this etag.
        #[arg(long)]
        etag: Option<String>,
        /// Delete without taking a final snapshot first (also unblocks a delete stalled
        /// on its final snapshot).
        #[arg(long)]
        skip_final_snapshot: bool,
        #[command(flatten)]
        change: ChangeFlags,
    },
    /// Follows a cluster: its state, then every event, resuming after reconnects. Ctrl-C ends it.
    Watch {
        /// `id` (with --tenant) or the full name.
        name: String,
        /// Start after this revision (0: after the current state).
        #[arg(long, default_value_t = 0)]
        since: i64,
    },
    /// Prints the endpoint, CA and `elastic` password of a READY cluster (tenant admins).
    Credentials {
        /// `id` (with --tenant) or the full name.
        name: String,
    },
}

/// A new cluster restored from a snapshot.
#[derive(Debug, Args, Clone)]
pub struct RestoreFlags {
    /// Restore a snapshot of this cluster into the new one (id with --tenant, or the full
    /// name; it may be deleted).
    #[arg(long, requires = "snapshot")]
    pub restore_from: Option<String>,
    /// The snapshot's id (see `esaasctl snapshots list`).
    #[arg(long, requires = "restore_from")]
    pub snapshot: Option<String>,
    /// Only these indices (default: every index in the snapshot).
    #[arg(long, value_delimiter = ',', requires = "restore_from")]
    pub indices: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum Snapshots {
    /// Takes a snapshot of every index of a running cluster and waits until it is written.
    Create {
        /// `id` (with --tenant) or the full name.
        name: String,
        /// Return once the snapshot is queued.
        #[arg(long = "async")]
        no_wait: bool,
    },
    /// Lists the snapshots of the clusters that had this name (deleted ones too),
    /// newest first (every page).
    List {
        /// `id` (with --tenant) or the full name.
        name: String,
    },
    /// Restores chosen indices of a snapshot into a running cluster and waits until they
    /// are green. The indices must not be open in the cluster: delete or close them first.
    #[command(
        after_help = "Example:\n  esaasctl -t demo snapshots restore logs --from logs --snapshot manual-20261201-120000-a1b2c3 --indices orders"
    )]
    Restore {
        /// The cluster restored into: `id` (with --tenant) or the full name.
        name: String,
        /// The cluster the snapshot was taken of (this one, or another of the tenant).
        #[arg(long = "from")]
        from: String,
        /// The snapshot's id (see `esaasctl snapshots list`).
        #[arg(long)]
        snapshot: String,
        /// The indices to restore (at least one).
        #[arg(long, value_delimiter = ',', required = true)]
        indices: Vec<String>,
        /// Return once the restore is queued.
        #[arg(long = "async")]
        no_wait: bool,
    },
}

/// An Elasticsearch node role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Master-eligible.
    Master,
    /// Holds data.
    Data,
    /// Runs ingest pipelines.
    Ingest,
    /// Machine learning.
    Ml,
    /// Transforms.
    Transform,
}

#[derive(Debug, Subcommand)]
pub enum Operations {
    /// Shows an operation: stages, attempts, what blocks it, its error.
    Get {
        /// `operations/{id}` or the id.
        name: String,
    },
    /// Lists the tenant's operations, newest first.
    List {
        /// Only those of this cluster (id or full name).
        #[arg(long)]
        cluster: Option<String>,
        /// Only those in this state (QUEUED, RUNNING, STALLED, FAILED, ...).
        #[arg(long)]
        state: Option<String>,
        /// Every tenant's (platform admins).
        #[arg(long)]
        all_tenants: bool,
    },
    /// Follows an operation until it ends, with live progress.
    Watch {
        /// `operations/{id}` or the id.
        name: String,
    },
    /// Re-queues a FAILED or STALLED operation and waits for it.
    Retry {
        /// `operations/{id}` or the id.
        name: String,
        /// Return once it is queued.
        #[arg(long = "async")]
        no_wait: bool,
    },
    /// Asks an operation to stop at its next safe point and waits until it has.
    Cancel {
        /// `operations/{id}` or the id.
        name: String,
        /// Return once the cancellation is asked for.
        #[arg(long = "async")]
        no_wait: bool,
    },
}

/// A quota on the command line; unset limits keep their value.
#[derive(Debug, Args, Clone, Copy)]
pub struct QuotaFlags {
    /// Most clusters.
    #[arg(long)]
    pub max_clusters: Option<i32>,
    /// Most nodes over all clusters.
    #[arg(long)]
    pub max_nodes: Option<i32>,
    /// Most storage over all nodes, in GiB.
    #[arg(long)]
    pub max_storage_gib: Option<i64>,
}

#[derive(Debug, Subcommand)]
pub enum Tenants {
    /// Creates a tenant (without a quota: the platform default).
    Create {
        /// The tenant id.
        id: String,
        /// A human-readable name.
        #[arg(long)]
        display_name: Option<String>,
        #[command(flatten)]
        quota: QuotaFlags,
    },
    /// Shows a tenant's quota and usage (members may read their own).
    Get {
        /// The tenant id or `tenants/{id}`.
        id: String,
    },
    /// Lists every tenant.
    List,
    /// Changes a tenant's quota; limits not given keep their value.
    SetQuota {
        /// The tenant id or `tenants/{id}`.
        id: String,
        #[command(flatten)]
        quota: QuotaFlags,
    },
}

/// The role of a new key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyRole {
    /// Change the tenant's clusters, read their credentials (needs --tenant).
    TenantAdmin,
    /// Read the tenant's clusters and operations (needs --tenant).
    TenantViewer,
    /// Everything (no tenant).
    PlatformAdmin,
    /// Connect as a worker (no tenant).
    Worker,
}

#[derive(Debug, Subcommand)]
pub enum Keys {
    /// Creates a key (platform admins); its secret is printed once.
    Create {
        /// What the key may do.
        #[arg(long, value_enum)]
        role: KeyRole,
        /// Who or what uses it.
        #[arg(long)]
        display_name: String,
    },
    /// Lists keys without their secrets: the tenant's, or with --platform the
    /// platform's own, or with --all-tenants every tenant's.
    List {
        /// The platform's PLATFORM_ADMIN and WORKER keys.
        #[arg(long, conflicts_with = "all_tenants")]
        platform: bool,
        /// Every tenant's keys.
        #[arg(long)]
        all_tenants: bool,
        /// Include revoked keys.
        #[arg(long)]
        show_revoked: bool,
    },
    /// Revokes a key at once.
    Revoke {
        /// `tenants/{tenant}/apiKeys/{id}` or `apiKeys/{id}`.
        name: String,
    },
}
