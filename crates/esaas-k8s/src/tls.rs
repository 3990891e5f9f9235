//! The TLS material of a cluster: a CA of its own and one node certificate
//! it signs, shared by every pod (HTTP and transport), and the random
//! password of the `elastic` user. Generated once, on the first apply, and
//! kept in the cluster's Secret ever after.
//!
//! The node certificate names the client Service (every DNS form a client
//! inside Kubernetes may use), every pod under the headless transport
//! Service, and `localhost` / `127.0.0.1` (the local setup reaches
//! Elasticsearch through a port on 127.0.0.1; the readiness probe and
//! operators on a pod do too). Transport TLS verifies the chain, not the
//! host name (nodes dial each other by IP), so the certificate carries both
//! server and client authentication.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use esaas_core::backend::Target;
use rand::Rng;
use rand::distr::Alphanumeric;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::names;

/// Lifetime of the cluster CA.
pub const CA_VALIDITY: Duration = Duration::days(3650);
/// Lifetime of the node certificate.
pub const NODE_CERT_VALIDITY: Duration = Duration::days(730);
/// How far `not_before` lies in the past, for clocks a little behind ours.
const BACKDATE: Duration = Duration::hours(1);
/// Length of the `elastic` password.
pub const PASSWORD_LEN: usize = 32;

/// PEM-encoded CA certificate, node certificate and node key of a cluster.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsMaterial {
    /// The cluster's CA certificate (what clients trust).
    pub ca_cert_pem: String,
    /// The node certificate, signed by the CA.
    pub cert_pem: String,
    /// The node certificate's private key (PKCS#8).
    pub key_pem: String,
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca_cert_pem", &self.ca_cert_pem)
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// The DNS names of the node certificate: the client Service in every form,
/// and a wildcard for the pods under the headless transport Service
/// (`{pod}.{transport}.{ns}.svc[.cluster.local]`, whatever the node set).
pub fn dns_names(t: &Target) -> Vec<String> {
    let ns = names::namespace(t);
    let http = names::http_service(t);
    let transport = names::transport_service(t);
    vec![
        http.clone(),
        format!("{http}.{ns}"),
        format!("{http}.{ns}.svc"),
        format!("{http}.{ns}.svc.cluster.local"),
        format!("*.{transport}.{ns}.svc"),
        format!("*.{transport}.{ns}.svc.cluster.local"),
        "localhost".to_string(),
    ]
}

/// Generates a CA for `t`'s cluster (valid 10 years) and a node certificate
/// it signs (valid 2 years), with ECDSA P-256 keys.
pub fn generate(t: &Target) -> Result<TlsMaterial, rcgen::Error> {
    let now = OffsetDateTime::now_utc();

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name.push(
        DnType::CommonName,
        format!("esaas {}/{} CA", t.tenant, t.cluster_id),
    );
    ca.distinguished_name
        .push(DnType::OrganizationName, "esaas");
    // Signs node certificates only, never another CA.
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = now - BACKDATE;
    ca.not_after = now + CA_VALIDITY;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let node_key = KeyPair::generate()?;
    let mut node = CertificateParams::new(dns_names(t))?;
    node.subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    node.distinguished_name
        .push(DnType::CommonName, names::http_service(t));
    node.distinguished_name
        .push(DnType::OrganizationName, "esaas");
    node.is_ca = IsCa::ExplicitNoCa;
    node.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Transport TLS uses the same certificate as server and as client.
    node.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    node.use_authority_key_identifier_extension = true;
    node.not_before = now - BACKDATE;
    node.not_after = now + NODE_CERT_VALIDITY;
    let node_cert = node.signed_by(&node_key, &issuer)?;

    Ok(TlsMaterial {
        ca_cert_pem: ca_cert.pem(),
        cert_pem: node_cert.pem(),
        key_pem: node_key.serialize_pem(),
    })
}

/// A random password of 32 URL-safe characters (letters and digits, about
/// 190 bits) from the thread's cryptographically secure generator.
pub fn random_password() -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(PASSWORD_LEN)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use esaas_core::names::{ClusterId, TenantId};
    use esaas_core::spec::ClusterSpec;
    use uuid::Uuid;

    use super::*;

    fn target() -> Target {
        Target {
            uid: Uuid::nil(),
            tenant: TenantId::parse("t", "acme").expect("valid tenant"),
            cluster_id: ClusterId::parse("c", "logs").expect("valid cluster"),
            spec: ClusterSpec::test(),
            generation: 1,
            operation: Uuid::nil(),
        }
    }

    #[test]
    fn material_is_pem_and_names_the_services() {
        let t = target();
        let m = generate(&t).expect("generates");
        assert!(m.ca_cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(m.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(m.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_ne!(m.ca_cert_pem, m.cert_pem);
        assert!(!format!("{m:?}").contains("PRIVATE KEY"));

        let names = dns_names(&t);
        assert!(names.contains(&"logs-es-http.esaas-acme.svc".to_string()));
        assert!(names.contains(&"logs-es-http.esaas-acme.svc.cluster.local".to_string()));
        assert!(names.contains(&"*.logs-es-transport.esaas-acme.svc".to_string()));
        assert!(names.contains(&"localhost".to_string()));
        // The endpoint tenants get is covered.
        assert!(names.contains(&names::http_host(&t)));
    }

    #[test]
    fn a_new_material_each_time() {
        let t = target();
        let a = generate(&t).expect("generates");
        let b = generate(&t).expect("generates");
        assert_ne!(a.key_pem, b.key_pem);
        assert_ne!(a.ca_cert_pem, b.ca_cert_pem);
    }

    #[test]
    fn passwords_are_long_url_safe_and_random() {
        let a = random_password();
        let b = random_password();
        assert_eq!(a.len(), PASSWORD_LEN);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
