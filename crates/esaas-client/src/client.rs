//! Connecting: the URL, TLS, the API key, timeouts and the retry policy.

use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::error::{Error, Result};
use crate::retry::RetryPolicy;
use crate::v1::admin_service_client::AdminServiceClient;
use crate::v1::cluster_service_client::ClusterServiceClient;
use crate::v1::operation_service_client::OperationServiceClient;
use crate::v1::worker_service_client::WorkerServiceClient;

/// The environment variable [`Client::from_env`] reads the address from.
pub const ADDR_ENV: &str = "ESAAS_ADDR";
/// The environment variable [`Client::from_env`] reads the API key from.
pub const KEY_ENV: &str = "ESAAS_KEY";
/// The environment variable [`Client::from_env`] reads a PEM CA file's path from.
pub const CA_CERT_ENV: &str = "ESAAS_CA_CERT";

/// Adds `authorization: Bearer <key>` to every call (nothing without a key).
///
/// ```
/// use tonic::service::Interceptor;
/// let mut auth = esaas_client::Authorization::bearer("esk_example").unwrap();
/// let req = auth.call(tonic::Request::new(())).unwrap();
/// assert_eq!(req.metadata().get("authorization").unwrap(), "Bearer esk_example");
/// ```
#[derive(Clone, Default)]
pub struct Authorization(Option<MetadataValue<Ascii>>);

impl Authorization {
    /// Sends `key` as a bearer token; an error if it cannot be a header value.
    ///
    /// ```
    /// assert!(esaas_client::Authorization::bearer("esk_ok").is_ok());
    /// assert!(esaas_client::Authorization::bearer("line\nbreak").is_err());
    /// ```
    pub fn bearer(key: &str) -> Result<Self> {
        let mut value: MetadataValue<Ascii> = format!("Bearer {}", key.trim())
            .parse()
            .map_err(|_| Error::Config("the API key is not a valid header value".into()))?;
        value.set_sensitive(true);
        Ok(Self(Some(value)))
    }
}

impl std::fmt::Debug for Authorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Some(_) => "Authorization(<redacted>)",
            None => "Authorization(none)",
        })
    }
}

impl Interceptor for Authorization {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            req.metadata_mut().insert("authorization", value.clone());
        }
        Ok(req)
    }
}

/// The channel of the raw service clients: every call carries the key.
pub type AuthChannel = InterceptedService<tonic::transport::Channel, Authorization>;

/// A connection to esaas. Cheap to clone: clones share one HTTP/2 connection.
///
/// ```no_run
/// # async fn run() -> esaas_client::Result<()> {
/// let client = esaas_client::Client::connect("http://127.0.0.1:50051", "esk_...").await?;
/// let catalog = client.get_catalog().await?;
/// println!("versions: {:?}", catalog.versions);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Client {
    channel: tonic::transport::Channel,
    auth: Authorization,
    pub(crate) retry: RetryPolicy,
    pub(crate) timeout: Duration,
}

/// How to connect: see [`Client::builder`].
///
/// ```no_run
/// # async fn run() -> esaas_client::Result<()> {
/// use std::time::Duration;
/// let client = esaas_client::Client::builder("https://esaas.internal")
///     .key("esk_...")
///     .ca_certificate_pem(std::fs::read_to_string("/etc/esaas/ca.pem").unwrap())
///     .timeout(Duration::from_secs(10))
///     .retry(esaas_client::RetryPolicy::default().max_attempts(3))
///     .connect()
///     .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ClientBuilder {
    url: String,
    key: Option<String>,
    ca_pem: Option<String>,
    connect_timeout: Duration,
    timeout: Duration,
    retry: RetryPolicy,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("url", &self.url)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .finish()
    }
}

impl ClientBuilder {
    /// The API key sent with every call (`esk_...`).
    ///
    /// ```
    /// let b = esaas_client::Client::builder("http://127.0.0.1:50051").key("esk_...");
    /// ```
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into()).filter(|k| !k.trim().is_empty());
        self
    }

    /// Verifies an `https://` server with this PEM CA bundle instead of the
    /// system's roots (as `curl --cacert` and `grpcurl -cacert` do), so a
    /// private CA works in an image without a system bundle. A bundle with
    /// no certificate is refused when connecting.
    ///
    /// ```
    /// let b = esaas_client::Client::builder("https://esaas.internal").ca_certificate_pem("-----BEGIN CERTIFICATE-----...");
    /// ```
    pub fn ca_certificate_pem(mut self, pem: impl Into<String>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// How long to wait for the connection (default 10 s).
    ///
    /// ```
    /// let b = esaas_client::Client::builder("http://127.0.0.1:50051").connect_timeout(std::time::Duration::from_secs(2));
    /// ```
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// The deadline of each unary attempt (default 30 s). Streams have none.
    ///
    /// ```
    /// let b = esaas_client::Client::builder("http://127.0.0.1:50051").timeout(std::time::Duration::from_secs(5));
    /// ```
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// How calls are retried and streams reconnected (default [`RetryPolicy::default`]).
    ///
    /// ```
    /// let b = esaas_client::Client::builder("http://127.0.0.1:50051").retry(esaas_client::RetryPolicy::none());
    /// ```
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    fn endpoint(&self) -> Result<Endpoint> {
        let url = normalize_url(&self.url)?;
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| Error::Config(format!("{:?} is not a valid URL: {e}", self.url)))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            // Notice a dead control plane on long watches.
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        if url.starts_with("https://") {
            let tls = match &self.ca_pem {
                Some(pem) => {
                    check_ca_bundle(pem)?;
                    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem))
                }
                None => ClientTlsConfig::new().with_native_roots(),
            };
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| Error::Config(format!("TLS: {e}")))?;
        }
        Ok(endpoint)
    }

    fn auth(&self) -> Result<Authorization> {
        match &self.key {
            Some(k) => Authorization::bearer(k),
            None => Ok(Authorization::default()),
        }
    }

    /// Connects now; an error if the server cannot be reached. Later calls reconnect
    /// by themselves when the connection drops.
    pub async fn connect(self) -> Result<Client> {
        let endpoint = self.endpoint()?;
        let channel = endpoint.connect().await.map_err(|source| Error::Connect {
            url: self.url.clone(),
            source,
        })?;
        Ok(Client {
            channel,
            auth: self.auth()?,
            retry: self.retry,
            timeout: self.timeout,
        })
    }

    /// Connects on the first call instead (which then retries while the server is
    /// unreachable, per the retry policy).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let client = esaas_client::Client::builder("http://127.0.0.1:1").connect_lazy().unwrap();
    /// # }
    /// ```
    pub fn connect_lazy(self) -> Result<Client> {
        let channel = self.endpoint()?.connect_lazy();
        Ok(Client {
            channel,
            auth: self.auth()?,
            retry: self.retry,
            timeout: self.timeout,
        })
    }
}

/// A CA bundle that holds no certificate would trust nothing, and every
/// handshake would fail as "unknown issuer": say so up front instead.
fn check_ca_bundle(pem: &str) -> Result<()> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut certs = CertificateDer::pem_slice_iter(pem.as_bytes());
    match certs.next() {
        Some(Ok(_)) if certs.all(|c| c.is_ok()) => Ok(()),
        Some(_) => Err(Error::Config("the CA certificate is not valid PEM".into())),
        None => Err(Error::Config(
            "the CA certificate holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        )),
    }
}

/// `http://` and `https://` URLs as they are; a bare `host:port` is plaintext on a
/// loopback host and TLS anywhere else, so a typo never sends a key in clear over
/// the network.
fn normalize_url(url: &str) -> Result<String> {
    let url = url.trim();
    if url.is_empty() {
        return Err(Error::Config(format!(
            "no address: set {ADDR_ENV} (for example http://127.0.0.1:50051)"
        )));
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        return Ok(url.to_string());
    }
    if url.contains("://") {
        return Err(Error::Config(format!(
            "{url:?}: only http:// (plaintext) and https:// (TLS) are supported"
        )));
    }
    let host = url
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(url)
        .trim_matches(['[', ']']);
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    Ok(format!(
        "{}://{url}",
        if loopback { "http" } else { "https" }
    ))
}

impl Client {
    /// A builder for `url` (`https://host[:port]`, `http://host:port`, or a bare
    /// `host:port`: plaintext on loopback, TLS elsewhere).
    ///
    /// ```
    /// let builder = esaas_client::Client::builder("https://esaas.internal");
    /// ```
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            url: url.into(),
            key: None,
            ca_pem: None,
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
        }
    }

    /// Connects to `url` with the API key `key`, with the default policy.
    ///
    /// ```no_run
    /// # async fn run() -> esaas_client::Result<()> {
    /// let client = esaas_client::Client::connect("http://127.0.0.1:50051", "esk_...").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(url: impl Into<String>, key: impl Into<String>) -> Result<Self> {
        Self::builder(url).key(key).connect().await
    }

    /// Connects to `$ESAAS_ADDR` with the key in `$ESAAS_KEY`.
    ///
    /// ```no_run
    /// # async fn run() -> esaas_client::Result<()> {
    /// // ESAAS_ADDR=http://127.0.0.1:50051 ESAAS_KEY=esk_...
    /// let client = esaas_client::Client::from_env().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn from_env() -> Result<Self> {
        Self::builder_from_env()?.connect().await
    }

    /// A builder preset from `$ESAAS_ADDR`, `$ESAAS_KEY` and `$ESAAS_CA_CERT`
    /// (the path of a PEM CA bundle, see [`ClientBuilder::ca_certificate_pem`]),
    /// to adjust further.
    ///
    /// ```no_run
    /// # async fn run() -> esaas_client::Result<()> {
    /// let client = esaas_client::Client::builder_from_env()?
    ///     .timeout(std::time::Duration::from_secs(5))
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder_from_env() -> Result<ClientBuilder> {
        let url = std::env::var(ADDR_ENV).map_err(|_| {
            Error::Config(format!(
                "{ADDR_ENV} is not set (for example http://127.0.0.1:50051)"
            ))
        })?;
        let mut b = Self::builder(url);
        if let Ok(key) = std::env::var(KEY_ENV) {
            b = b.key(key);
        }
        if let Some(path) = std::env::var_os(CA_CERT_ENV).filter(|p| !p.is_empty()) {
            let pem = std::fs::read_to_string(&path).map_err(|e| {
                Error::Config(format!(
                    "{CA_CERT_ENV}: reading {}: {e}",
                    path.to_string_lossy()
                ))
            })?;
            b = b.ca_certificate_pem(pem);
        }
        Ok(b)
    }

    /// A client on a channel the caller already has, sending `key` (none if empty), with
    /// the default policy and deadline.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:50051").connect().await?;
    /// let client = esaas_client::Client::from_channel(channel, "esk_...")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_channel(channel: tonic::transport::Channel, key: &str) -> Result<Self> {
        Ok(Self {
            channel,
            auth: if key.trim().is_empty() {
                Authorization::default()
            } else {
                Authorization::bearer(key)?
            },
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(30),
        })
    }

    /// The same connection with another key (for example a tenant's, after
    /// creating it as a platform admin).
    ///
    /// ```no_run
    /// # async fn run(admin: esaas_client::Client) -> esaas_client::Result<()> {
    /// let team = admin.with_key("esk_team...")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_key(&self, key: &str) -> Result<Self> {
        Ok(Self {
            auth: Authorization::bearer(key)?,
            ..self.clone()
        })
    }

    /// The same client with another retry policy.
    ///
    /// ```no_run
    /// # fn run(client: esaas_client::Client) {
    /// let no_retries = client.with_retry(esaas_client::RetryPolicy::none());
    /// # }
    /// ```
    pub fn with_retry(&self, policy: RetryPolicy) -> Self {
        Self {
            retry: policy,
            ..self.clone()
        }
    }

    /// The authenticated channel, for clients of services this crate has no helper for.
    ///
    /// ```no_run
    /// # fn run(client: esaas_client::Client) {
    /// let raw = esaas_client::v1::cluster_service_client::ClusterServiceClient::new(client.channel());
    /// # }
    /// ```
    pub fn channel(&self) -> AuthChannel {
        InterceptedService::new(self.channel.clone(), self.auth.clone())
    }

    /// The raw `ClusterService` client (no retries), authenticated.
    ///
    /// ```no_run
    /// # async fn run(client: esaas_client::Client) -> Result<(), tonic::Status> {
    /// let c = client.cluster_service()
    ///     .get_cluster(esaas_client::v1::GetClusterRequest { name: "tenants/search/clusters/logs".into() })
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn cluster_service(&self) -> ClusterServiceClient<AuthChannel> {
        ClusterServiceClient::new(self.channel())
    }

    /// The raw `OperationService` client (no retries), authenticated.
    ///
    /// ```no_run
    /// # fn run(client: esaas_client::Client) {
    /// let ops = client.operation_service();
    /// # }
    /// ```
    pub fn operation_service(&self) -> OperationServiceClient<AuthChannel> {
        OperationServiceClient::new(self.channel())
    }

    /// The raw `AdminService` client (no retries), authenticated.
    ///
    /// ```no_run
    /// # fn run(client: esaas_client::Client) {
    /// let admin = client.admin_service();
    /// # }
    /// ```
    pub fn admin_service(&self) -> AdminServiceClient<AuthChannel> {
        AdminServiceClient::new(self.channel())
    }

    /// The raw `WorkerService` client, authenticated (for workers).
    ///
    /// ```no_run
    /// # fn run(client: esaas_client::Client) {
    /// let worker = client.worker_service();
    /// # }
    /// ```
    pub fn worker_service(&self) -> WorkerServiceClient<AuthChannel> {
        WorkerServiceClient::new(self.channel())
    }

    /// A unary request with this client's deadline.
    pub(crate) fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.set_timeout(self.timeout);
        req
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_addresses_are_plaintext_only_on_loopback() {
        let cases = [
            ("127.0.0.1:50051", "http://127.0.0.1:50051"),
            ("localhost:50051", "http://localhost:50051"),
            ("[::1]:50051", "http://[::1]:50051"),
            ("esaas.internal:443", "https://esaas.internal:443"),
            ("10.0.0.1:50051", "https://10.0.0.1:50051"),
            ("http://esaas.internal:80", "http://esaas.internal:80"),
            ("https://esaas.internal", "https://esaas.internal"),
        ];
        for (given, want) in cases {
            assert_eq!(normalize_url(given).unwrap(), want, "{given}");
        }
        assert!(normalize_url("").is_err());
        assert!(normalize_url("ftp://x").is_err());
    }

    #[tokio::test]
    async fn a_ca_bundle_without_a_certificate_is_refused_before_any_handshake() {
        let builder = |pem: &str| Client::builder("https://esaas.internal").ca_certificate_pem(pem);
        for pem in [
            "",
            "not pem at all",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ] {
            match builder(pem).connect_lazy() {
                Err(Error::Config(msg)) => assert!(msg.contains("CA certificate"), "{msg}"),
                other => panic!("{pem:?}: {other:?}"),
            }
        }
        // Plaintext ignores the bundle.
        assert!(
            Client::builder("http://127.0.0.1:1")
                .ca_certificate_pem("")
                .connect_lazy()
                .is_ok()
        );
    }
}
