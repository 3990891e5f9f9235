//! Configuration: built-in defaults, a file laid over them key by key, then
//! environment overrides. Secrets are kept out of `Debug` output.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use esaas_core::catalog::Catalog;
use esaas_core::tenant::Quota;
use serde::{Deserialize, Serialize};

const DEFAULTS: &str = include_str!("../esaas.default.toml");

/// A secret string: never printed.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_string())
    }
}

impl Secret {
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "<redacted>" })
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "<unset>"
        } else {
            "<redacted>"
        })
    }
}

/// The effective configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// gRPC listen address.
    pub listen_addr: SocketAddr,
    /// A second, plaintext listener serving only `grpc.health.v1` (for
    /// probes that cannot speak TLS); empty: none.
    pub health_listen_addr: String,
    /// PostgreSQL URL (may hold a password).
    pub database_url: Secret,
    /// Pool size per process.
    pub database_max_connections: u32,
    /// PostgreSQL `statement_timeout` of the pool's sessions, ms (0: none).
    pub database_statement_timeout_ms: u64,
    /// Migrate at start.
    pub migrate_on_start: bool,
    /// In-process workers.
    pub workers: u32,
    /// Largest request message.
    pub max_message_bytes: usize,
    /// Attempt budget of an operation.
    pub max_attempts: i32,
    /// Deadline of a unary call, ms.
    pub request_timeout_ms: u64,
    /// Unary calls in flight per process before shedding.
    pub max_concurrent_requests: usize,
    /// Watch streams one tenant may hold open at once per process.
    pub max_watch_streams_per_tenant: usize,
    /// HTTP/2 streams one connection may have open at once.
    pub max_concurrent_streams_per_connection: u32,
    /// Streams without an API key (health Watch, reflection) open at once per process.
    pub max_unauthenticated_streams: usize,
    /// How long a stopping server may take.
    pub shutdown_grace_seconds: u64,
    /// How long a valid API key is remembered, ms (0: looked up every call).
    pub auth_cache_ttl_ms: u64,
    /// How the listener and the outgoing connections are protected.
    pub tls: crate::tls::TlsSection,
    /// Logs, traces and metrics.
    pub telemetry: TelemetrySection,
    /// Requests per second per tenant (0: no limit).
    pub rate_limit_per_second: f64,
    /// Burst per tenant.
    pub rate_limit_burst: f64,
    /// Watch safety re-read interval.
    pub watch_poll_seconds: u64,
    /// Lease time-to-live.
    pub lease_ttl_seconds: u64,
    /// First retry delay.
    pub retry_backoff_base_seconds: u64,
    /// Longest retry delay.
    pub retry_backoff_max_seconds: u64,
    /// Claim poll interval.
    pub claim_interval_ms: u64,
    /// Lease reaper interval.
    pub reap_interval_ms: u64,
    /// Platform-admin key accepted as is (normally from the environment).
    #[serde(default)]
    pub bootstrap_admin_key: Secret,
    /// Default tenant quota.
    pub default_quota: Quota,
    /// How workers run operations.
    pub worker: WorkerSection,
    /// How live clusters are observed and repaired.
    pub observe: ObserveSection,
    /// Node certificate lifetime and renewal.
    pub certificates: CertificatesSection,
    /// The maintenance window of clusters that set none.
    pub maintenance: MaintenanceSection,
    /// What is forgotten, and when.
    pub retention: RetentionSection,
    /// Where workers make EKS node groups.
    pub eks: esaas_eks::EksConfig,
    /// How workers and the control plane reach Kubernetes.
    pub kubernetes: KubernetesSection,
    /// How workers reach Elasticsearch.
    pub elasticsearch: ElasticsearchSection,
    /// Where snapshots go, and how Elasticsearch pods reach them.
    pub snapshots: esaas_k8s::SnapshotStorage,
    /// What the platform offers.
    pub catalog: Catalog,
}

/// The `[telemetry]` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySection {
    /// `text` or `json`.
    pub log_format: String,
    /// OTLP/gRPC endpoint; empty: no export.
    pub otlp_endpoint: String,
    /// PEM CA bundle that verifies an https:// endpoint; empty: the system's roots.
    pub otlp_ca_file: String,
    /// Queue sampling interval, ms.
    pub queue_sample_interval_ms: u64,
}

/// The `[kubernetes]` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSection {
    /// A kubeconfig file; empty: KUBECONFIG, ~/.kube/config, in-cluster.
    pub kubeconfig: String,
    /// Connect timeout of every API call, seconds.
    pub connect_timeout_seconds: u64,
    /// Read and write timeout of every API call, seconds.
    pub timeout_seconds: u64,
}

/// The `[elasticsearch]` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchSection {
    /// Connect here instead of resolving Service names (local setup).
    pub connect_to: String,
    /// Request timeout, seconds.
    pub timeout_seconds: u64,
}

/// The `[worker]` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSection {
    /// Operations at once per worker.
    pub capacity: i32,
    /// Gate poll interval.
    pub poll_interval_ms: u64,
    /// Gate timeout.
    pub gate_timeout_seconds: u64,
    /// How long one step (or the observation before it) may take.
    pub step_timeout_seconds: u64,
    /// Ack timeout.
    pub ack_timeout_seconds: u64,
    /// Shutdown grace.
    pub shutdown_grace_seconds: u64,
    /// Region.
    pub region: String,
    /// Observations at once per worker, besides its operations.
    pub observe_capacity: i32,
    /// `esaas worker`: the control plane's URL (`ESAAS_CONTROL_PLANE_URL`).
    pub control_plane_url: String,
    /// PEM CA bundle that verifies an https:// control plane; empty: the system's roots.
    pub control_plane_ca_file: String,
}

/// `[certificates]`: the lifetime of the node certificates workers issue,
/// and how long before expiry the platform renews them.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CertificatesSection {
    /// How long a node certificate is valid.
    pub node_validity_seconds: u64,
    /// A rotation is queued this long before the node certificate expires.
    pub renew_before_seconds: u64,
}

/// `[maintenance]`: the weekly window (UTC) in which the platform starts its
/// planned work on clusters that set no window of their own.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceSection {
    /// The day the default window starts (`saturday`, `sat`, ...); empty:
    /// no default window, planned work starts at once outside freezes.
    pub default_window_day: String,
    /// Its start, UTC, `HH:MM` or `HH:MM:SS`.
    pub default_window_start: String,
    /// Its length, 1 to 24 hours.
    pub default_window_hours: u32,
}

impl MaintenanceSection {
    /// The default window, checked; `None` when there is none.
    pub fn default_window(&self) -> anyhow::Result<Option<esaas_core::spec::MaintenanceWindow>> {
        let day = self.default_window_day.trim();
        if day.is_empty() {
            return Ok(None);
        }
        let day: chrono::Weekday = day.parse().map_err(|_| {
            anyhow::anyhow!("maintenance.default_window_day: {day:?} is not a day of the week")
        })?;
        let start = esaas_proto::convert::time_of_day(self.default_window_start.trim())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "maintenance.default_window_start: {:?} is not HH:MM or HH:MM:SS",
                    self.default_window_start
                )
            })?;
        if !(1..=24).contains(&self.default_window_hours) {
            bail!(
                "maintenance.default_window_hours: must be between 1 and 24, got {}",
                self.default_window_hours
            );
        }
        Ok(Some(esaas_core::spec::MaintenanceWindow {
            day,
            start,
            duration: chrono::TimeDelta::hours(i64::from(self.default_window_hours)),
        }))
    }
}

/// `[observe]`: how the control plane has live clusters observed, and when
/// the platform repairs them.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ObserveSection {
    /// Interval between two observations of one cluster.
    pub interval_seconds: u64,
    /// Spread of the interval: each next observation is interval × (1 ± jitter / 2).
    pub jitter: f64,
    /// How long a worker may take for one observation.
    pub deadline_seconds: u64,
    /// Unready pods are repaired after this long.
    pub pods_unready_grace_seconds: u64,
    /// Wait after the first of a run of repairs; doubles with each.
    pub repair_backoff_base_seconds: u64,
    /// Longest wait between repairs.
    pub repair_backoff_max_seconds: u64,
    /// Repairs within this window count as one run.
    pub repair_window_seconds: u64,
}

/// `[retention]`: how long events, idempotency records, tombstones and
/// attempt logs are kept, and how the sweep runs.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSection {
    /// Events, except each cluster's newest.
    pub events_seconds: u64,
    /// Answers of requests with a request id.
    pub idempotency_seconds: u64,
    /// Tombstones of DELETED clusters (unless they list retained volumes).
    pub tombstones_seconds: u64,
    /// Attempt logs of ended operations, beyond their last attempt.
    pub attempt_logs_seconds: u64,
    /// How often each control-plane process sweeps, ms (0: never).
    pub interval_ms: u64,
    /// Rows per statement.
    pub batch_size: i64,
}

impl RetentionSection {
    /// The periods of `lifecycle::retention`.
    pub fn periods(&self) -> esaas_core::lifecycle::retention::Retention {
        let secs = |s: u64| chrono::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1000));
        esaas_core::lifecycle::retention::Retention {
            events: secs(self.events_seconds),
            idempotency: secs(self.idempotency_seconds),
            tombstones: secs(self.tombstones_seconds),
            attempt_logs: secs(self.attempt_logs_seconds),
        }
    }

    /// How often to sweep; `None`: never.
    pub fn interval(&self) -> Option<Duration> {
        (self.interval_ms > 0).then(|| Duration::from_millis(self.interval_ms))
    }

    fn validate(&self) -> anyhow::Result<()> {
        for (key, value) in [
            ("events_seconds", self.events_seconds),
            ("idempotency_seconds", self.idempotency_seconds),
            ("tombstones_seconds", self.tombstones_seconds),
            ("attempt_logs_seconds", self.attempt_logs_seconds),
        ] {
            if value == 0 {
                bail!("retention.{key}: must be at least 1");
            }
        }
        if !(1..=100_000).contains(&self.batch_size) {
            bail!("retention.batch_size: must be between 1 and 100000");
        }
        if self.interval_ms > 0 && self.interval_ms < 10 {
            bail!("retention.interval_ms: 0 (never) or at least 10");
        }
        Ok(())
    }
}

fn ca_file(key: &str, path: &str) -> anyhow::Result<Option<String>> {
    if path.trim().is_empty() {
        return Ok(None);
    }
    crate::tls::files::ca_bundle(key, path)
        .map(Some)
        .map_err(anyhow::Error::msg)
}

fn overlay(base: &mut toml::Table, top: toml::Table) {
    for (k, v) in top {
        // A table keyed by data, not by settings: a file that names its zones'
        // subnets names all of them, so the local defaults do not leak in.
        if k == "zone_subnets" {
            base.insert(k, v);
            continue;
        }
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(t)) => overlay(b, t),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

impl ObserveSection {
    /// The rules of `lifecycle::observe`.
    pub fn rules(
        &self,
        certificates: &CertificatesSection,
    ) -> esaas_core::lifecycle::observe::ObserveRules {
        let secs = |s: u64| chrono::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1000));
        esaas_core::lifecycle::observe::ObserveRules {
            pods_unready_grace: secs(self.pods_unready_grace_seconds),
            repair_backoff_base: secs(self.repair_backoff_base_seconds),
            repair_backoff_max: secs(self.repair_backoff_max_seconds),
            repair_window: secs(self.repair_window_seconds),
            certificate_renew_before: secs(certificates.renew_before_seconds),
        }
    }
}

impl Config {
    /// Defaults, overlaid with `file` if given, then the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut table: toml::Table = DEFAULTS.parse().context("built-in defaults")?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let top: toml::Table = text
                .parse()
                .with_context(|| format!("parsing {}", path.display()))?;
            overlay(&mut table, top);
        }
        let mut config: Config = table.try_into().with_context(|| {
            format!(
                "invalid configuration{}",
                file.map(|p| format!(" in {}", p.display()))
                    .unwrap_or_default()
            )
        })?;
        config.apply_env()?;
        config.validate()?;
        Ok(config)
    }

    fn apply_env(&mut self) -> anyhow::Result<()> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let Some(v) = var("ESAAS_LISTEN_ADDR") {
            self.listen_addr = v
                .parse()
                .with_context(|| format!("ESAAS_LISTEN_ADDR={v:?} is not an address"))?;
        }
        if let Some(v) = var("DATABASE_URL") {
            self.database_url = Secret(v);
        }
        if let Some(v) = var("ESAAS_BOOTSTRAP_ADMIN_KEY") {
            self.bootstrap_admin_key = Secret(v);
        }
        if let Some(v) = var("ESAAS_LOG_FORMAT") {
            self.telemetry.log_format = v;
        }
        if let Some(v) = var("OTEL_EXPORTER_OTLP_ENDPOINT") {
            self.telemetry.otlp_endpoint = v;
        }
        // The OpenTelemetry exporter specification's name for the CA file.
        if let Some(v) = var("OTEL_EXPORTER_OTLP_CERTIFICATE") {
            self.telemetry.otlp_ca_file = v;
        }
        if let Some(v) = var("ESAAS_CONTROL_PLANE_URL") {
            self.worker.control_plane_url = v;
        }
        if let Some(v) = var("ESAAS_CONTROL_PLANE_CA_FILE") {
            self.worker.control_plane_ca_file = v;
        }
        if let Some(v) = var("ESAAS_TLS_MODE") {
            self.tls.mode = toml::Value::String(v.clone()).try_into().map_err(|_| {
                anyhow::anyhow!(
                    "tls.mode (ESAAS_TLS_MODE): must be \"off\", \"native\" or \"mesh\", got {v:?}"
                )
            })?;
        }
        if let Some(v) = var("ESAAS_HEALTH_LISTEN_ADDR") {
            self.health_listen_addr = v;
        }
        if let Some(v) = var("ESAAS_TLS_CERT_FILE") {
            self.tls.cert_file = v;
        }
        if let Some(v) = var("ESAAS_TLS_KEY_FILE") {
            self.tls.key_file = v;
        }
        if let Some(v) = var("ESAAS_WORKERS") {
            self.workers = v
                .parse()
                .with_context(|| format!("ESAAS_WORKERS={v:?} is not a number"))?;
        }
        Ok(())
    }

    /// Checks the configuration without reading any file (at load; again
    /// after a command-line flag changed it). The error names the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        crate::tls::check(&crate::tls::Hops {
            tls: &self.tls,
            listen_addr: self.listen_addr,
            control_plane_url: &self.worker.control_plane_url,
            control_plane_ca_file: &self.worker.control_plane_ca_file,
            otlp_endpoint: &self.telemetry.otlp_endpoint,
            otlp_ca_file: &self.telemetry.otlp_ca_file,
        })
        .map_err(anyhow::Error::msg)?;
        let health = self.health_listen_addr.trim();
        if !health.is_empty() && health.parse::<SocketAddr>().is_err() {
            bail!("health_listen_addr: {health:?} is not an address (host:port)");
        }
        self.maintenance.default_window()?;
        if self.catalog.versions.is_empty() {
            bail!("catalog.versions: at least one version is required");
        }
        for v in &self.catalog.versions {
            if esaas_core::spec::Version::parse(v).is_none() {
                bail!("catalog.versions: {v:?} is not major.minor.patch");
            }
        }
        let offered_minors: std::collections::BTreeSet<String> = self
            .catalog
            .versions
            .iter()
            .filter_map(|v| esaas_core::spec::Version::parse(v))
            .map(esaas_core::catalog::minor_of)
            .collect();
        for (from, to) in &self.catalog.upgrades {
            for minor in std::iter::once(from).chain(to) {
                if !offered_minors.contains(minor) {
                    bail!(
                        "catalog.upgrades: {minor:?} is not the major.minor of an offered version (offered: {})",
                        self.catalog.versions.join(", ")
                    );
                }
            }
        }
        if self.catalog.size_classes.is_empty() {
            bail!("catalog.size_classes: at least one size class is required");
        }
        let zones = &self.catalog.zones;
        if zones.len() < usize::try_from(self.catalog.max_zones.max(1)).unwrap_or(usize::MAX) {
            bail!(
                "catalog.zones: {} zones are offered, but catalog.max_zones is {}: list at least that many",
                zones.len(),
                self.catalog.max_zones
            );
        }
        let unique: std::collections::BTreeSet<&String> = zones.iter().collect();
        if unique.len() != zones.len() || zones.iter().any(String::is_empty) {
            bail!("catalog.zones: every zone must be named, and named once");
        }
        for zone in zones {
            if self.eks.zone_subnets.get(zone).is_none_or(Vec::is_empty) {
                bail!(
                    "eks.zone_subnets: zone {zone:?} (in catalog.zones) has no subnets; each zone's node groups are made in its own subnets"
                );
            }
        }
        if let Some(problem) = self.eks.launch_template.as_ref().and_then(|t| t.problem()) {
            bail!("eks.launch_template: {problem}");
        }
        let release = &self.eks.node_release_version;
        // EKS release versions read `{Kubernetes version}-{AMI build}` (1.31.2-20241121).
        if !release.is_empty()
            && (release.len() > 64
                || !release.starts_with(|c: char| c.is_ascii_digit())
                || !release
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
        {
            bail!(
                "eks.node_release_version: {release:?} is not an EKS release version (for example \"1.31.2-20241121\"); leave it empty for EKS's latest"
            );
        }
        if let Some(problem) = self.snapshots.problem() {
            bail!("{problem}");
        }
        if !(1..=1000).contains(&self.worker.capacity) {
            bail!("worker.capacity: must be between 1 and 1000");
        }
        if !(0..=1000).contains(&self.worker.observe_capacity) {
            bail!("worker.observe_capacity: must be between 0 and 1000");
        }
        let o = &self.observe;
        if o.interval_seconds == 0 || !(0.0..=1.0).contains(&o.jitter) {
            bail!("observe.interval_seconds must be at least 1 and observe.jitter between 0 and 1");
        }
        if o.deadline_seconds == 0 || o.deadline_seconds > o.interval_seconds.max(1) * 10 {
            bail!("observe.deadline_seconds: must be between 1 and 10 intervals");
        }
        let c = &self.certificates;
        if c.node_validity_seconds < 60 || c.renew_before_seconds >= c.node_validity_seconds {
            bail!(
                "certificates.node_validity_seconds must be at least 60 and more than certificates.renew_before_seconds"
            );
        }
        if o.repair_backoff_base_seconds > o.repair_backoff_max_seconds {
            bail!(
                "observe.repair_backoff_base_seconds: must not exceed observe.repair_backoff_max_seconds"
            );
        }
        if self.rate_limit_per_second < 0.0
            || (self.rate_limit_per_second > 0.0 && self.rate_limit_burst < 1.0)
        {
            bail!(
                "rate_limit_per_second must not be negative, and rate_limit_burst must be at least 1 when limiting"
            );
        }
        if !matches!(self.telemetry.log_format.as_str(), "text" | "json") {
            bail!(
                "telemetry.log_format (ESAAS_LOG_FORMAT): must be \"text\" or \"json\", got {:?}",
                self.telemetry.log_format
            );
        }
        if self.request_timeout_ms < 100 {
            bail!("request_timeout_ms: must be at least 100");
        }
        if self.auth_cache_ttl_ms > 60_000 {
            bail!("auth_cache_ttl_ms: at most 60000 (a revoked key must stop working soon)");
        }
        for (key, value) in [
            (
                "max_watch_streams_per_tenant",
                self.max_watch_streams_per_tenant,
            ),
            (
                "max_concurrent_streams_per_connection",
                self.max_concurrent_streams_per_connection as usize,
            ),
            (
                "max_unauthenticated_streams",
                self.max_unauthenticated_streams,
            ),
        ] {
            if value < 1 {
                bail!("{key}: must be at least 1 (a stream limit of 0 refuses every stream)");
            }
        }
        if self.max_concurrent_requests < 1 {
            bail!("max_concurrent_requests: must be at least 1");
        }
        self.validate_deadlines()?;
        if self.max_attempts < 1 {
            bail!("max_attempts: must be at least 1");
        }
        if self.max_message_bytes < 1024 {
            bail!("max_message_bytes: must be at least 1024");
        }
        if !self.bootstrap_admin_key.0.is_empty() && self.bootstrap_admin_key.0.len() < 16 {
            bail!(
                "bootstrap_admin_key (ESAAS_BOOTSTRAP_ADMIN_KEY): must be at least 16 characters"
            );
        }
        self.retention.validate()?;
        self.default_quota
            .validate("default_quota")
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(())
    }

    /// Every call outside the process has a deadline, and a step outlasts
    /// the calls it makes, so a hung call ends with its own error (which
    /// names the dependency) before the step's deadline ends the attempt.
    fn validate_deadlines(&self) -> anyhow::Result<()> {
        let calls = [
            ("eks.timeout_seconds", self.eks.timeout_seconds),
            (
                "eks.attempt_timeout_seconds",
                self.eks.attempt_timeout_seconds,
            ),
            (
                "kubernetes.timeout_seconds",
                self.kubernetes.timeout_seconds,
            ),
            (
                "kubernetes.connect_timeout_seconds",
                self.kubernetes.connect_timeout_seconds,
            ),
            (
                "elasticsearch.timeout_seconds",
                self.elasticsearch.timeout_seconds,
            ),
            (
                "worker.step_timeout_seconds",
                self.worker.step_timeout_seconds,
            ),
        ];
        for (key, value) in calls {
            if value == 0 {
                bail!("{key}: must be at least 1 (every call outside the process has a deadline)");
            }
        }
        if self.eks.attempt_timeout_seconds > self.eks.timeout_seconds {
            bail!(
                "eks.attempt_timeout_seconds: must not exceed eks.timeout_seconds ({}), which bounds every try of a call",
                self.eks.timeout_seconds
            );
        }
        let step = self.worker.step_timeout_seconds;
        for (key, value) in [calls[0], calls[2], calls[4]] {
            if value > step {
                bail!(
                    "worker.step_timeout_seconds: {step} is shorter than {key} ({value}); a step must outlast the calls it makes"
                );
            }
        }
        Ok(())
    }

    /// Reads and checks every file the configuration names (`esaas config
    /// check`): the served pair, and the CA bundles.
    pub fn check_files(&self) -> anyhow::Result<()> {
        self.server_identity()?;
        self.control_plane_ca()?;
        self.otlp_ca()?;
        Ok(())
    }

    /// The certificate and key `esaas serve` presents (`tls.mode = "native"`).
    pub fn server_identity(&self) -> anyhow::Result<Option<crate::tls::files::Identity>> {
        if self.tls.mode != crate::tls::Mode::Native {
            return Ok(None);
        }
        crate::tls::files::identity(&self.tls.cert_file, &self.tls.key_file)
            .map(Some)
            .map_err(anyhow::Error::msg)
    }

    /// The PEM CA bundle that verifies the control plane (`esaas worker`).
    pub fn control_plane_ca(&self) -> anyhow::Result<Option<String>> {
        ca_file(
            "worker.control_plane_ca_file",
            &self.worker.control_plane_ca_file,
        )
    }

    /// The PEM CA bundle that verifies the OTLP collector.
    pub fn otlp_ca(&self) -> anyhow::Result<Option<String>> {
        ca_file("telemetry.otlp_ca_file", &self.telemetry.otlp_ca_file)
    }

    /// The database URL, required by everything that touches the database.
    pub fn database_url(&self) -> anyhow::Result<&str> {
        match self.database_url.expose() {
            "" => bail!(
                "no database configured: set DATABASE_URL (or database_url in the config file)"
            ),
            url => Ok(url),
        }
    }

    /// Lease behaviour.
    pub fn lease(&self) -> esaas_store::LeaseSettings {
        esaas_store::LeaseSettings {
            ttl: Duration::from_secs(self.lease_ttl_seconds.max(1)),
            backoff: esaas_core::lifecycle::lease::Backoff {
                base: Duration::from_secs(self.retry_backoff_base_seconds),
                max: Duration::from_secs(
                    self.retry_backoff_max_seconds
                        .max(self.retry_backoff_base_seconds),
                ),
            },
        }
    }

    /// How a worker with `key` and `id` connects to `control_plane` and works.
    pub fn worker_config(
        &self,
        control_plane: String,
        key: String,
        id: String,
    ) -> esaas_worker::WorkerConfig {
        let w = &self.worker;
        esaas_worker::WorkerConfig {
            control_plane,
            ca_pem: None,
            key,
            id,
            region: w.region.clone(),
            capacity: w.capacity,
            observe_capacity: w.observe_capacity,
            exec: esaas_worker::ExecSettings {
                poll: Duration::from_millis(w.poll_interval_ms.max(10)),
                gate_timeout: Duration::from_secs(w.gate_timeout_seconds),
                step_timeout: Duration::from_secs(w.step_timeout_seconds),
            },
            ack_timeout: Duration::from_secs(w.ack_timeout_seconds.max(1)),
            shutdown_grace: Duration::from_secs(w.shutdown_grace_seconds),
        }
    }

    /// The effective configuration as TOML, secrets redacted (`esaas config check`).
    pub fn to_redacted_toml(&self) -> anyhow::Result<String> {
        toml::to_string_pretty(self).context("printing the configuration")
    }

    /// How this process logs and exports, as `service` (without the OTLP CA
    /// bundle, which [`crate::init_telemetry`] reads).
    pub fn telemetry(&self, service: &'static str) -> esaas_telemetry::Settings {
        esaas_telemetry::Settings {
            service,
            json_logs: self.telemetry.log_format == "json",
            otlp_endpoint: Some(self.telemetry.otlp_endpoint.clone()).filter(|e| !e.is_empty()),
            otlp_ca_pem: None,
        }
    }

    /// The watch re-read interval.
    pub fn watch_poll(&self) -> Duration {
        Duration::from_secs(self.watch_poll_seconds.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load_and_secrets_do_not_print() {
        let mut c: Config = DEFAULTS.parse::<toml::Table>().unwrap().try_into().unwrap();
        c.validate().unwrap();
        c.database_url = Secret("postgres://u:pw@h/db".into());
        let printed = format!("{c:?}");
        assert!(!printed.contains("pw@"), "{printed}");
    }

    #[test]
    fn telemetry_and_protection_keys_are_checked_by_name() {
        let load = |extra: &str| {
            let mut base: toml::Table = DEFAULTS.parse().unwrap();
            overlay(&mut base, extra.parse().unwrap());
            let c: Config = base.try_into().unwrap();
            c.validate().err().map(|e| e.to_string())
        };
        assert_eq!(
            load("[telemetry]\nlog_format = \"json\"\notlp_endpoint = \"https://c:4317\"\n"),
            None
        );
        let bad = [
            (
                "[telemetry]\nlog_format = \"xml\"\n",
                "telemetry.log_format",
            ),
            (
                "[telemetry]\notlp_endpoint = \"collector:4317\"\n",
                "telemetry.otlp_endpoint",
            ),
            ("request_timeout_ms = 5\n", "request_timeout_ms"),
            ("max_concurrent_requests = 0\n", "max_concurrent_requests"),
            (
                "max_watch_streams_per_tenant = 0\n",
                "max_watch_streams_per_tenant",
            ),
            (
                "[retention]\nevents_seconds = 0\n",
                "retention.events_seconds",
            ),
            ("[retention]\nbatch_size = 0\n", "retention.batch_size"),
            ("[retention]\ninterval_ms = 5\n", "retention.interval_ms"),
            (
                "[eks.launch_template]\nid = \"lt-1\"\nname = \"esaas-nodes\"\n",
                "eks.launch_template",
            ),
            (
                "[eks.launch_template]\nversion = \"1\"\n",
                "eks.launch_template",
            ),
            (
                "[eks]\nnode_release_version = \"latest please\"\n",
                "eks.node_release_version",
            ),
        ];
        for (extra, key) in bad {
            let err = load(extra).unwrap_or_default();
            assert!(err.starts_with(key), "{extra:?}: {err:?}");
        }
    }

    #[test]
    fn every_deadline_is_set_and_a_step_outlasts_its_calls() {
        let load = |extra: &str| {
            let mut base: toml::Table = DEFAULTS.parse().unwrap();
            overlay(&mut base, extra.parse().unwrap());
            let c: Config = base.try_into().unwrap();
            c.validate().map(|_| c).map_err(|e| e.to_string())
        };
        let c = load("").expect("defaults");
        assert_eq!(
            (
                c.eks.attempt_timeout_seconds,
                c.eks.timeout_seconds,
                c.kubernetes.connect_timeout_seconds,
                c.kubernetes.timeout_seconds,
                c.elasticsearch.timeout_seconds,
                c.worker_config(String::new(), String::new(), String::new())
                    .exec
                    .step_timeout,
            ),
            (20, 60, 10, 30, 10, Duration::from_secs(120))
        );
        let small = "[eks]\nattempt_timeout_seconds = 1\ntimeout_seconds = 3\n\
                     [kubernetes]\ntimeout_seconds = 3\n[elasticsearch]\ntimeout_seconds = 3\n\
                     [worker]\nstep_timeout_seconds = 8\n";
        assert_eq!(load(small).err(), None);
        for (extra, starts) in [
            (
                "[eks]\ntimeout_seconds = 0\n",
                "eks.timeout_seconds: must be at least 1",
            ),
            (
                "[kubernetes]\ntimeout_seconds = 0\n",
                "kubernetes.timeout_seconds",
            ),
            (
                "[worker]\nstep_timeout_seconds = 0\n",
                "worker.step_timeout_seconds",
            ),
            (
                "[eks]\nattempt_timeout_seconds = 61\n",
                "eks.attempt_timeout_seconds",
            ),
            (
                "[worker]\nstep_timeout_seconds = 59\n",
                "worker.step_timeout_seconds: 59 is shorter than eks.timeout_seconds (60)",
            ),
            (
                "[elasticsearch]\ntimeout_seconds = 200\n",
                "worker.step_timeout_seconds: 120 is shorter than elasticsearch.timeout_seconds",
            ),
        ] {
            let err = load(extra).err().unwrap_or_default();
            assert!(err.starts_with(starts), "{extra:?}: {err:?}");
        }
    }

    #[test]
    fn zones_and_their_subnets_are_checked_by_name() {
        let load = |extra: &str| {
            let mut base: toml::Table = DEFAULTS.parse().unwrap();
            overlay(&mut base, extra.parse().unwrap());
            let c: Config = base.try_into().unwrap();
            c.validate().map(|_| c).map_err(|e| e.to_string())
        };
        // A file's zone table replaces the defaults' (no us-east-1 subnets left behind).
        let c = load(
            "[catalog]\nzones = [\"eu-west-1a\", \"eu-west-1b\", \"eu-west-1c\"]\n\
             [eks.zone_subnets]\n\"eu-west-1a\" = [\"s-a\"]\n\"eu-west-1b\" = [\"s-b\"]\n\"eu-west-1c\" = [\"s-c\"]\n",
        )
        .expect("valid");
        assert_eq!(
            c.eks.zone_subnets.keys().collect::<Vec<_>>(),
            ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
        );
        for (extra, names) in [
            ("[catalog]\nzones = [\"us-east-1a\"]\n", "catalog.zones"),
            (
                "[catalog]\nzones = [\"us-east-1a\", \"us-east-1a\", \"us-east-1b\"]\n",
                "catalog.zones",
            ),
            (
                "[eks.zone_subnets]\n\"us-east-1a\" = [\"s\"]\n\"us-east-1b\" = [\"s\"]\n",
                "\"us-east-1c\"",
            ),
        ] {
            let err = load(extra).err().unwrap_or_default();
            assert!(err.contains(names), "{extra}: {err}");
        }
    }

    #[test]
    fn a_file_overlays_key_by_key() {
        let mut base: toml::Table = DEFAULTS.parse().unwrap();
        let top: toml::Table = "max_attempts = 9\n[catalog]\nversions = [\"9.9.9\"]\n"
            .parse()
            .unwrap();
        overlay(&mut base, top);
        let c: Config = base.try_into().unwrap();
        assert_eq!(c.max_attempts, 9);
        assert_eq!(c.catalog.versions, vec!["9.9.9"]);
        assert!(
            !c.catalog.size_classes.is_empty(),
            "untouched keys keep their defaults"
        );
    }
}
