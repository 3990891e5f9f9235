//! EKS managed node groups for esaas: one node group per node set of a
//! tenant's cluster and per zone of the cluster, implementing
//! `esaas_core::backend::NodeGroups` with `aws-sdk-eks`.
//!
//! A node set's node groups are one to the planner: it asks for a size, and
//! the size is split over the cluster's zones as its pods are
//! (`esaas_core::placement::zone_sizes`). Each group is made in its zone's
//! subnets only, so a node EKS replaces (a failed instance, an AMI update)
//! or adds comes back in the zone of the volume its pod needs.
//!
//! Every node group carries labels and a NoSchedule taint so that only its
//! own cluster's pods land on it, and tags that say who owns it; a group of
//! the same name that esaas does not own is never touched. Creation looks
//! before it creates and sends a `clientRequestToken` derived from the
//! operation and step, so a repeated step never makes a second node group.

mod errors;
mod names;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tracing::Instrument;

use aws_sdk_eks::Client;
use aws_sdk_eks::types::{
    AmiTypes, CapacityTypes, LaunchTemplateSpecification, Nodegroup, NodegroupScalingConfig,
    NodegroupStatus, NodegroupUpdateConfig, Taint, TaintEffect,
};
use esaas_core::backend::{NodeGroups, PLATFORM_CLUSTER_GONE, StepError, StepResult, Target};
use esaas_core::catalog::Catalog;
use esaas_core::placement;
use esaas_core::plan::{NodeGroupObs, NodeGroupStatus as Status, ZoneGroupObs};
use serde::{Deserialize, Serialize};

pub use errors::classify;
pub use names::{NAME_PREFIX, cluster_prefix, node_group_name};

/// Tag keys of a node group. Its nodes' labels and taint are
/// `esaas_core::placement`'s, which the pods select and tolerate.
pub mod keys {
    use esaas_core::placement;

    /// The tenant of the node group.
    pub const TENANT: &str = placement::TENANT_LABEL;
    /// The cluster id within the tenant.
    pub const CLUSTER: &str = placement::CLUSTER_LABEL;
    /// The node set.
    pub const NODE_SET: &str = placement::NODE_SET_LABEL;
    /// The cluster's uid: tells this cluster's groups from a deleted
    /// cluster's of the same name.
    pub const CLUSTER_UID: &str = "esaas.io/cluster-uid";
    /// `esaas` on every group esaas manages.
    pub const MANAGED_BY: &str = "esaas.io/managed-by";
    /// The availability zone of the group's subnets.
    pub const ZONE: &str = "esaas.io/zone";
}

/// Where and how node groups are made.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EksConfig {
    /// The EKS cluster that hosts the tenants' node groups.
    pub cluster_name: String,
    /// AWS region.
    pub region: String,
    /// Private subnets for the nodes, by availability zone: each of a node
    /// set's node groups is made in one zone's subnets only, so a node EKS
    /// replaces comes back in the zone of its pod's volume.
    pub zone_subnets: BTreeMap<String, Vec<String>>,
    /// IAM role of the nodes.
    pub node_role_arn: String,
    /// AMI type, e.g. `AL2023_x86_64_STANDARD`.
    pub ami_type: String,
    /// `ON_DEMAND` or `SPOT`.
    pub capacity_type: String,
    /// Root volume of each node, GiB (the data lives on separate EBS volumes).
    /// Not sent when a launch template is: the template sets the disk then.
    pub disk_size_gib: i32,
    /// The EC2 launch template of every node group (`deploy/launch-template/`):
    /// its user data sets `vm.max_map_count`, which Elasticsearch needs and
    /// its pods, running under Pod Security `restricted`, cannot set.
    #[serde(default)]
    pub launch_template: Option<LaunchTemplate>,
    /// The platform's node image: the EKS release version (AMI release and
    /// Kubernetes version, for example `1.31.2-20241121`) every node group is
    /// made with and moved to. Empty: whatever EKS gives a new group (the
    /// latest release for the cluster's Kubernetes version), and no rotation.
    #[serde(default)]
    pub node_release_version: String,
    /// Extra tags on every node group (cost allocation).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Endpoint override (an emulator); `AWS_ENDPOINT_URL_EKS` works too.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Attempts of one API call by the SDK (standard retry mode: throttling,
    /// 5xx and transient errors, exponential backoff with jitter).
    pub max_attempts: u32,
    /// First retry delay of the SDK, milliseconds.
    pub initial_backoff_ms: u64,
    /// Longest one API call may take, its retries by the SDK included (the
    /// SDK's operation timeout), seconds.
    pub timeout_seconds: u64,
    /// Longest one try of an API call may wait for EKS's answer (the SDK's
    /// operation attempt timeout, retried like a transient error), seconds.
    pub attempt_timeout_seconds: u64,
    /// IAM role of the EKS cluster itself, used only by `esaas eks-setup`
    /// to create the cluster in an emulator for the local setup.
    #[serde(default)]
    pub setup_cluster_role_arn: Option<String>,
}

/// An EC2 launch template, by id or by name (exactly one), and a version.
///
/// EKS refuses a template that names an instance type when the request does
/// (esaas sends the size class's), one with a custom AMI when the request
/// names an AMI type, and `diskSize` or `remoteAccess` beside any template:
/// the template must carry user data and (optionally) block devices only.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchTemplate {
    /// The template's id (`lt-…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The template's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The version (a number, `$Latest` or `$Default`); unset: the default version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl LaunchTemplate {
    /// Why the template cannot be sent to EKS, if it cannot.
    pub fn problem(&self) -> Option<&'static str> {
        let given = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
        match (given(&self.id), given(&self.name)) {
            (true, true) => Some("set id or name, not both (EKS takes one)"),
            (false, false) => Some("set its id or its name"),
            _ if self.version.as_deref().is_some_and(|v| v.trim().is_empty()) => {
                Some("version is empty; leave it out for the template's default version")
            }
            _ => None,
        }
    }

    fn to_sdk(&self) -> LaunchTemplateSpecification {
        LaunchTemplateSpecification::builder()
            .set_id(self.id.clone())
            .set_name(self.name.clone())
            .set_version(self.version.clone())
            .build()
    }
}

/// EKS managed node groups.
#[derive(Debug, Clone)]
pub struct EksNodeGroups {
    client: Client,
    config: EksConfig,
    catalog: Catalog,
}

fn status(s: Option<&NodegroupStatus>) -> Status {
    match s {
        Some(NodegroupStatus::Active) => Status::Active,
        Some(NodegroupStatus::Creating) => Status::Creating,
        Some(NodegroupStatus::Updating) => Status::Updating,
        Some(NodegroupStatus::Deleting) => Status::Deleting,
        // CREATE_FAILED, DELETE_FAILED, DEGRADED, and anything newer than this code.
        _ => Status::Failed,
    }
}

/// The span of one EKS API call (a child of the step that makes it).
fn call_span(operation: &'static str) -> tracing::Span {
    tracing::info_span!(
        "eks",
        otel.name = %format_args!("EKS.{operation}"),
        otel.kind = "client",
        rpc.system = "aws-api",
        rpc.service = "EKS",
        rpc.method = operation,
    )
}

fn health_message(ng: &Nodegroup) -> String {
    let issues: Vec<String> = ng
        .health()
        .map(|h| {
            h.issues()
                .iter()
                .map(|i| {
                    format!(
                        "{}: {}",
                        i.code().map(|c| c.as_str()).unwrap_or("Unknown"),
                        i.message().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    issues.join("; ")
}

fn tag<'a>(ng: &'a Nodegroup, key: &str) -> Option<&'a str> {
    ng.tags().and_then(|t| t.get(key)).map(String::as_str)
}

impl EksNodeGroups {
    /// A client from the default AWS configuration chain (environment, IRSA
    /// web identity, instance profile), with the region, endpoint override
    /// and retry policy of `config`.
    pub async fn new(config: EksConfig, catalog: Catalog) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(config.region.clone()));
        if let Some(url) = &config.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let sdk = loader.load().await;
        Self::with_sdk_config(&sdk, config, catalog)
    }

    /// A client from an explicit SDK configuration (tests use static credentials).
    pub fn with_sdk_config(
        sdk: &aws_config::SdkConfig,
        config: EksConfig,
        catalog: Catalog,
    ) -> Self {
        let retry = aws_config::retry::RetryConfig::standard()
            .with_max_attempts(config.max_attempts.max(1))
            .with_initial_backoff(Duration::from_millis(config.initial_backoff_ms));
        // Without these the SDK waits for an answer for ever once connected
        // (its only default is the 3.1 s connect timeout, which stays). An
        // attempt that times out is retried as transient; the operation
        // timeout bounds all attempts and their backoff together.
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .operation_timeout(Duration::from_secs(config.timeout_seconds.max(1)))
            .operation_attempt_timeout(Duration::from_secs(config.attempt_timeout_seconds.max(1)))
            .build();
        let mut builder = aws_sdk_eks::config::Builder::from(sdk)
            .retry_config(retry)
            .timeout_config(timeouts);
        if let Some(url) = &config.endpoint_url {
            builder = builder.endpoint_url(url);
        }
        Self {
            client: Client::from_conf(builder.build()),
            config,
            catalog,
        }
    }

    /// The SDK client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    #[tracing::instrument(level = "debug", skip_all, fields(nodegroup = name))]
    async fn describe(&self, name: &str) -> StepResult<Option<Nodegroup>> {
        match self
            .client
            .describe_nodegroup()
            .cluster_name(&self.config.cluster_name)
            .nodegroup_name(name)
            .send()
            .instrument(call_span("DescribeNodegroup"))
            .await
        {
            Ok(out) => Ok(out.nodegroup().cloned()),
            Err(e) => {
                let e = classify("DescribeNodegroup", e);
                if e.reason == "EKS_NOT_FOUND" {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Creates the EKS cluster named in the configuration if it is missing.
    /// For the local setup against an emulator only: production clusters are
    /// made by the platform team's infrastructure code.
    pub async fn ensure_cluster(&self, role_arn: &str) -> StepResult<()> {
        let exists = self
            .client
            .describe_cluster()
            .name(&self.config.cluster_name)
            .send()
            .instrument(call_span("DescribeCluster"))
            .await;
        match exists {
            Ok(_) => return Ok(()),
            Err(e) => {
                let e = classify("DescribeCluster", e);
                if !matches!(e.reason.as_str(), "EKS_NOT_FOUND" | PLATFORM_CLUSTER_GONE) {
                    return Err(e);
                }
            }
        }
        let vpc = aws_sdk_eks::types::VpcConfigRequest::builder()
            .set_subnet_ids(Some(
                self.config
                    .zone_subnets
                    .values()
                    .flatten()
                    .cloned()
                    .collect(),
            ))
            .build();
        self.client
            .create_cluster()
            .name(&self.config.cluster_name)
            .role_arn(role_arn)
            .resources_vpc_config(vpc)
            .send()
            .instrument(call_span("CreateCluster"))
            .await
            .map_err(|e| classify("CreateCluster", e))?;
        tracing::info!(cluster = %self.config.cluster_name, "created the EKS cluster");
        Ok(())
    }

    fn owned_by(&self, target: &Target, ng: &Nodegroup) -> bool {
        tag(ng, keys::CLUSTER_UID) == Some(target.uid.to_string().as_str())
    }

    async fn create(
        &self,
        target: &Target,
        node_set: &str,
        zone: &str,
        name: &str,
        size: i32,
    ) -> StepResult<()> {
        let subnets = self
            .config
            .zone_subnets
            .get(zone)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                StepError::permanent(
                    "ZONE_NOT_CONFIGURED",
                    format!(
                        "the cluster lives in zone {zone}, which eks.zone_subnets does not list"
                    ),
                )
            })?;
        let ns = target
            .spec
            .node_sets
            .iter()
            .find(|n| n.name == node_set)
            .ok_or_else(|| {
                StepError::permanent(
                    "SPEC_NODE_SET_MISSING",
                    format!("no node set {node_set} in the spec"),
                )
            })?;
        let class = self.catalog.size_class(&ns.size_class).ok_or_else(|| {
            StepError::permanent(
                "SIZE_CLASS_UNKNOWN",
                format!("size class {} is no longer in the catalog", ns.size_class),
            )
        })?;
        let scaling = NodegroupScalingConfig::builder()
            .min_size(size)
            .max_size(size.max(1))
            .desired_size(size)
            .build();
        let dedicated = placement::dedicated_taint(target);
        let taint = Taint::builder()
            .key(dedicated.key)
            .value(dedicated.value)
            .effect(TaintEffect::NoSchedule)
            .build();
        let mut tags: HashMap<String, String> = self.config.tags.clone().into_iter().collect();
        tags.insert(keys::TENANT.into(), target.tenant.to_string());
        tags.insert(keys::CLUSTER.into(), target.cluster_id.to_string());
        tags.insert(keys::NODE_SET.into(), node_set.into());
        tags.insert(keys::CLUSTER_UID.into(), target.uid.to_string());
        tags.insert(keys::MANAGED_BY.into(), "esaas".into());
        tags.insert(keys::ZONE.into(), zone.into());
        let mut request = self
            .client
            .create_nodegroup()
            .cluster_name(&self.config.cluster_name)
            .nodegroup_name(name)
            .scaling_config(scaling)
            .set_subnets(Some(subnets.clone()))
            .instance_types(&class.instance_type)
            .ami_type(AmiTypes::from(self.config.ami_type.as_str()))
            .capacity_type(CapacityTypes::from(self.config.capacity_type.as_str()))
            .node_role(&self.config.node_role_arn)
            .set_labels(Some(
                placement::node_labels(target, node_set)
                    .into_iter()
                    .collect(),
            ))
            .taints(taint)
            .set_tags(Some(tags))
            .update_config(NodegroupUpdateConfig::builder().max_unavailable(1).build())
            .client_request_token(target.idempotency_key(&format!("nodegroup-{node_set}-{zone}")));
        // The platform's node image, with the Kubernetes version it is built for; without
        // one EKS gives the latest release for the cluster's version.
        if !self.config.node_release_version.is_empty() {
            request = request
                .release_version(&self.config.node_release_version)
                .set_version(kubernetes_version(&self.config.node_release_version));
        }
        // EKS refuses diskSize beside a launch template (the template sets the disk).
        request = match &self.config.launch_template {
            Some(template) => request.launch_template(template.to_sdk()),
            None => request.disk_size(self.config.disk_size_gib),
        };
        match request
            .send()
            .instrument(call_span("CreateNodegroup"))
            .await
        {
            Ok(_) => {
                tracing::info!(nodegroup = name, zone, size, instance_type = %class.instance_type, "node group created");
                Ok(())
            }
            Err(e) => {
                let e = classify("CreateNodegroup", e);
                // Someone (another attempt) created it between our look and our create:
                // the next observation decides whether it is ours.
                if e.reason == "EKS_RESOURCE_IN_USE" {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }
}

impl EksNodeGroups {
    /// This cluster's node groups (by its uid tag), with their names.
    async fn owned_groups(&self, target: &Target) -> StepResult<Vec<(String, Nodegroup)>> {
        let prefix = cluster_prefix(&target.tenant, &target.cluster_id);
        let names: Result<Vec<String>, _> = self
            .client
            .list_nodegroups()
            .cluster_name(&self.config.cluster_name)
            .into_paginator()
            .items()
            .send()
            .collect::<Vec<_>>()
            .instrument(call_span("ListNodegroups"))
            .await
            .into_iter()
            .collect::<Result<_, _>>();
        let names = match names {
            Ok(names) => names,
            // A missing EKS cluster is permanent, but not every endpoint says
            // so on this call (an emulator answers a bare 500): ask directly.
            // Not after a timeout: an endpoint that did not answer this call
            // would only spend a second deadline on the next.
            Err(e) => {
                let e = classify("ListNodegroups", e);
                if e.reason == "EKS_SERVER_ERROR"
                    && let Err(missing) = self
                        .client
                        .describe_cluster()
                        .name(&self.config.cluster_name)
                        .send()
                        .instrument(call_span("DescribeCluster"))
                        .await
                {
                    let missing = classify("DescribeCluster", missing);
                    if matches!(
                        missing.reason.as_str(),
                        "EKS_NOT_FOUND" | PLATFORM_CLUSTER_GONE
                    ) {
                        // Whatever DescribeCluster's wording, it was the cluster.
                        return Err(StepError::permanent(PLATFORM_CLUSTER_GONE, missing.message));
                    }
                }
                return Err(e);
            }
        };
        let mut out = Vec::new();
        for name in names.into_iter().filter(|n| n.starts_with(&prefix)) {
            let Some(ng) = self.describe(&name).await? else {
                continue;
            };
            // A prefix can match another cluster's groups ("a-b" + "c" vs "a" + "b-c"):
            // only the uid tag says whose a group is.
            if self.owned_by(target, &ng) {
                out.push((name, ng));
            }
        }
        Ok(out)
    }

    /// Sets the group of `node_set` in `zone` to `size` nodes, creating it
    /// when it is missing and is to have any.
    async fn ensure_zone(
        &self,
        target: &Target,
        node_set: &str,
        zone: &str,
        size: i32,
    ) -> StepResult<()> {
        let name = node_group_name(
            &target.uid,
            &target.tenant,
            &target.cluster_id,
            node_set,
            zone,
        );
        let Some(existing) = self.describe(&name).await? else {
            if size == 0 {
                return Ok(());
            }
            return self.create(target, node_set, zone, &name, size).await;
        };
        if !self.owned_by(target, &existing) {
            return Err(if tag(&existing, keys::MANAGED_BY) == Some("esaas") {
                if status(existing.status()) == Status::Deleting {
                    StepError::retryable(
                        "NODEGROUP_NAME_IN_USE",
                        format!(
                            "node group {name} of an earlier cluster of this name is still being deleted"
                        ),
                    )
                } else {
                    StepError::permanent(
                        "NODEGROUP_CONFLICT",
                        format!(
                            "node group {name} belongs to another esaas cluster (uid {})",
                            tag(&existing, keys::CLUSTER_UID).unwrap_or("?")
                        ),
                    )
                }
            } else {
                StepError::permanent(
                    "NODEGROUP_FOREIGN",
                    format!(
                        "a node group named {name} exists in EKS cluster {} and is not managed by esaas; rename or remove it",
                        self.config.cluster_name
                    ),
                )
            });
        }
        let desired = existing.scaling_config().and_then(|s| s.desired_size());
        if desired == Some(size) {
            return Ok(());
        }
        // A scale-in removes the highest ordinals, whose zones
        // `zone_sizes` shrinks by exactly their count: every pod that stays
        // keeps a node in its volume's zone.
        let scaling = NodegroupScalingConfig::builder()
            .min_size(size)
            .max_size(size.max(1))
            .desired_size(size)
            .build();
        self.client
            .update_nodegroup_config()
            .cluster_name(&self.config.cluster_name)
            .nodegroup_name(&name)
            .scaling_config(scaling)
            .client_request_token(
                target.idempotency_key(&format!("scale-{node_set}-{zone}-{size}")),
            )
            .send()
            .instrument(call_span("UpdateNodegroupConfig"))
            .await
            .map_err(|e| classify("UpdateNodegroupConfig", e))?;
        tracing::info!(nodegroup = %name, zone, from = ?desired, to = size, "node group scaled");
        Ok(())
    }
}

/// The Kubernetes minor an EKS release version is built for: `1.31` of
/// `1.31.2-20241121`. EKS wants it beside the release when the two differ from the
/// group's (a node image of the next Kubernetes minor after a control-plane upgrade).
fn kubernetes_version(release: &str) -> Option<String> {
    let mut parts = release.split(['.', '-']);
    let (major, minor) = (parts.next()?, parts.next()?);
    let numeric = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit());
    (numeric(major) && numeric(minor)).then(|| format!("{major}.{minor}"))
}

/// How bad a status is, when one node set's groups are reported as one.
fn severity(s: Status) -> u8 {
    match s {
        Status::Active => 0,
        Status::Updating => 1,
        Status::Creating => 2,
        Status::Deleting => 3,
        Status::Failed => 4,
    }
}

impl NodeGroups for EksNodeGroups {
    #[tracing::instrument(skip_all, fields(cluster_uid = %target.uid))]
    async fn observe(&self, target: &Target) -> StepResult<BTreeMap<String, NodeGroupObs>> {
        // One node set's groups (one per zone) are one to the planner: their
        // sizes add up, the worst status stands for all, messages name the zone.
        let mut out: BTreeMap<String, NodeGroupObs> = BTreeMap::new();
        for (name, ng) in self.owned_groups(target).await? {
            let Some(node_set) = tag(&ng, keys::NODE_SET) else {
                continue;
            };
            let st = status(ng.status());
            let size = ng
                .scaling_config()
                .and_then(|s| s.desired_size())
                .unwrap_or(0);
            let message = health_message(&ng);
            let entry = out.entry(node_set.to_string()).or_insert(NodeGroupObs {
                instance_type: ng.instance_types().first().cloned().unwrap_or_default(),
                desired_size: 0,
                status: st,
                message: String::new(),
                zones: Default::default(),
            });
            entry.desired_size += size;
            if let Some(zone) = tag(&ng, keys::ZONE) {
                entry.zones.insert(
                    zone.to_string(),
                    ZoneGroupObs {
                        desired_size: size,
                        status: st,
                        release_version: ng.release_version().unwrap_or_default().to_string(),
                    },
                );
            }
            if severity(st) > severity(entry.status) {
                entry.status = st;
            }
            if !message.is_empty() {
                if !entry.message.is_empty() {
                    entry.message.push_str("; ");
                }
                entry.message.push_str(&format!("{name}: {message}"));
            }
        }
        Ok(out)
    }

    #[tracing::instrument(skip_all, fields(cluster_uid = %target.uid, node_set, size))]
    async fn ensure(&self, target: &Target, node_set: &str, size: i32) -> StepResult<()> {
        let zones = placement::cluster_zones(&target.spec, &self.catalog);
        for (zone, n) in placement::zone_sizes(&zones, size) {
            self.ensure_zone(target, node_set, &zone, n).await?;
        }
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(cluster_uid = %target.uid, node_set, zone, release))]
    async fn update_version(
        &self,
        target: &Target,
        node_set: &str,
        zone: &str,
        release: &str,
    ) -> StepResult<()> {
        let name = node_group_name(
            &target.uid,
            &target.tenant,
            &target.cluster_id,
            node_set,
            zone,
        );
        let Some(existing) = self.describe(&name).await? else {
            return Err(StepError::permanent(
                "NODEGROUP_MISSING",
                format!("node group {name} of {node_set} in {zone} does not exist"),
            ));
        };
        if !self.owned_by(target, &existing) {
            return Err(StepError::permanent(
                "NODEGROUP_FOREIGN",
                format!("node group {name} is not this cluster's; it is not touched"),
            ));
        }
        // Done, or under way (EKS takes one update of a group at a time).
        if existing.release_version() == Some(release)
            || status(existing.status()) == Status::Updating
        {
            return Ok(());
        }
        // Not forced: EKS then honours the PodDisruptionBudget when it evicts
        // (the rotation has every pod ready, and this group's pods' node
        // shutdowns COMPLETE, before it asks).
        let sent = self
            .client
            .update_nodegroup_version()
            .cluster_name(&self.config.cluster_name)
            .nodegroup_name(&name)
            .release_version(release)
            .set_version(kubernetes_version(release))
            .force(false)
            .client_request_token(
                target.idempotency_key(&format!("version-{node_set}-{zone}-{release}")),
            )
            .send()
            .instrument(call_span("UpdateNodegroupVersion"))
            .await;
        match sent {
            Ok(out) => {
                tracing::info!(
                    nodegroup = %name,
                    zone,
                    from = existing.release_version().unwrap_or_default(),
                    to = release,
                    update = out.update().and_then(|u| u.id()).unwrap_or_default(),
                    "node group moving to a new node image"
                );
                Ok(())
            }
            Err(e) => {
                let e = classify("UpdateNodegroupVersion", e);
                // An update already in progress (ours, from an attempt whose answer was lost).
                if e.reason == "EKS_RESOURCE_IN_USE" {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    #[tracing::instrument(skip_all, fields(cluster_uid = %target.uid, node_set))]
    async fn delete(&self, target: &Target, node_set: &str) -> StepResult<()> {
        for (name, ng) in self.owned_groups(target).await? {
            if tag(&ng, keys::NODE_SET) != Some(node_set) || status(ng.status()) == Status::Deleting
            {
                continue;
            }
            match self
                .client
                .delete_nodegroup()
                .cluster_name(&self.config.cluster_name)
                .nodegroup_name(&name)
                .send()
                .instrument(call_span("DeleteNodegroup"))
                .await
            {
                Ok(_) => tracing::info!(nodegroup = %name, "node group deleting"),
                Err(e) => {
                    let e = classify("DeleteNodegroup", e);
                    // Gone already, alone or with the whole cluster: done.
                    if !matches!(e.reason.as_str(), "EKS_NOT_FOUND" | PLATFORM_CLUSTER_GONE) {
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::kubernetes_version;

    #[test]
    fn a_release_names_the_kubernetes_minor_it_is_built_for() {
        let cases = [
            ("1.31.2-20241121", Some("1.31")),
            ("1.30-20240605", Some("1.30")),
            ("1.29.0-abcdef12", Some("1.29")),
            ("latest", None),
            ("", None),
        ];
        for (release, want) in cases {
            assert_eq!(kubernetes_version(release).as_deref(), want, "{release}");
        }
    }
}
