//! The TLS material of a cluster: a CA of its own and one node certificate
//! it signs, shared by every pod (HTTP and transport), and the random
//! password of the `elastic` user. Generated on the first apply and kept in
//! the cluster's Secret, CA key included (never mounted into a pod, never
//! in PostgreSQL).
//!
//! Rotation ([`rotate`]) makes a new CA and a node certificate it signs,
//! and keeps everyone connected while nodes and clients move over: the
//! trust bundle (`ca.crt`) holds the new CA and the old one, so every node
//! accepts the other nodes' old and new certificates; the node certificate
//! is served with the new CA cross-signed by the old one, so a client that
//! still trusts only the old CA verifies the new chain too. The next
//! rotation drops the CA before the old one.
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
    /// The CA certificates clients and nodes trust: the cluster's CA, and
    /// after a rotation the previous one too (newest first).
    pub ca_cert_pem: String,
    /// The node certificate, signed by the CA (after a rotation followed by
    /// the new CA cross-signed by the previous one).
    pub cert_pem: String,
    /// The node certificate's private key (PKCS#8).
    pub key_pem: String,
    /// The CA's private key, which signs the next certificates. Empty for a
    /// cluster made before it was kept (its next rotation cannot cross-sign).
    pub ca_key_pem: String,
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca_cert_pem", &self.ca_cert_pem)
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .field("ca_key_pem", &"<redacted>")
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
    generate_valid_for(t, NODE_CERT_VALIDITY)
}

/// A CA's parameters: named for the cluster and the time it is made (so
/// two generations of CA never share a subject), signing node certificates only.
fn ca_params(t: &Target, now: OffsetDateTime) -> Result<CertificateParams, rcgen::Error> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name.push(
        DnType::CommonName,
        format!(
            "esaas {}/{} CA {}",
            t.tenant,
            t.cluster_id,
            now.unix_timestamp_nanos()
        ),
    );
    ca.distinguished_name
        .push(DnType::OrganizationName, "esaas");
    // Signs node certificates, and once its successor: the next CA,
    // cross-signed, sits between it and the node certificates a rotation issues.
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = now - BACKDATE;
    ca.not_after = now + CA_VALIDITY;
    Ok(ca)
}

/// The node certificate's parameters, valid `validity` from `now`.
fn node_params(
    t: &Target,
    now: OffsetDateTime,
    validity: Duration,
) -> Result<CertificateParams, rcgen::Error> {
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
    node.not_after = now + validity;
    Ok(node)
}

/// A new CA and a node certificate it signs (valid `validity`); or, with
/// `previous`, the rotation described in the module documentation.
fn issue(
    t: &Target,
    validity: Duration,
    previous: Option<&TlsMaterial>,
) -> Result<TlsMaterial, rcgen::Error> {
    let now = OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate()?;
    let ca = ca_params(t, now)?;
    let ca_cert = ca.self_signed(&ca_key)?;
    // The new CA signed by the old one, served after the node certificate.
    let cross = match previous {
        Some(p) if !p.ca_key_pem.is_empty() => {
            let old_key = KeyPair::from_pem(&p.ca_key_pem)?;
            let old_ca = first_pem(&p.ca_cert_pem).unwrap_or_default();
            let old = Issuer::from_ca_cert_pem(&old_ca, old_key)?;
            Some(ca.signed_by(&ca_key, &old)?.pem())
        }
        _ => None,
    };
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca, ca_key);
    let node_key = KeyPair::generate()?;
    let node_cert = node_params(t, now, validity)?.signed_by(&node_key, &issuer)?;
    let bundle = match previous.and_then(|p| first_pem(&p.ca_cert_pem)) {
        Some(old) => format!("{}{}", ca_cert.pem(), old),
        None => ca_cert.pem(),
    };
    Ok(TlsMaterial {
        ca_cert_pem: bundle,
        cert_pem: format!("{}{}", node_cert.pem(), cross.unwrap_or_default()),
        key_pem: node_key.serialize_pem(),
        ca_key_pem,
    })
}

/// A new rotation of `previous`: see the module documentation.
pub fn rotate(
    t: &Target,
    previous: &TlsMaterial,
    validity: Duration,
) -> Result<TlsMaterial, rcgen::Error> {
    issue(t, validity, Some(previous))
}

/// The first PEM block of `pem` (the newest CA of a bundle), with its end line.
fn first_pem(pem: &str) -> Option<String> {
    const END: &str = "-----END CERTIFICATE-----";
    let end = pem.find(END)? + END.len();
    Some(format!("{}\n", pem[..end].trim_start()))
}

/// When the first certificate of `pem` expires.
pub fn not_after(pem: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let cert = block.parse_x509().ok()?;
    chrono::DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0)
}

/// [`generate`] with a node certificate valid `validity`.
pub fn generate_valid_for(t: &Target, validity: Duration) -> Result<TlsMaterial, rcgen::Error> {
    issue(t, validity, None)
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

    fn certs(pem: &str) -> Vec<x509_parser::pem::Pem> {
        x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("PEM")
    }

    fn subject_issuer(p: &x509_parser::pem::Pem) -> (String, String) {
        let c = p.parse_x509().expect("x509");
        (c.subject().to_string(), c.issuer().to_string())
    }

    #[test]
    fn a_rotation_keeps_the_old_ca_trusted_and_cross_signs_the_new() {
        let t = target();
        let first = generate_valid_for(&t, Duration::seconds(600)).expect("generates");
        assert!(first.ca_key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(certs(&first.ca_cert_pem).len(), 1);
        let left = not_after(&first.cert_pem).expect("expiry") - chrono::Utc::now();
        assert!((590..=600).contains(&left.num_seconds()), "{left}");

        let second = rotate(&t, &first, Duration::seconds(600)).expect("rotates");
        let (old_ca, _) = subject_issuer(&certs(&first.ca_cert_pem)[0]);
        let bundle = certs(&second.ca_cert_pem);
        assert_eq!(bundle.len(), 2, "new and old CA trusted");
        let (new_ca, new_ca_issuer) = subject_issuer(&bundle[0]);
        assert_eq!(new_ca, new_ca_issuer, "self-signed");
        assert_eq!(subject_issuer(&bundle[1]).0, old_ca);
        assert_ne!(new_ca, old_ca);
        let chain = certs(&second.cert_pem);
        assert_eq!(chain.len(), 2, "node certificate, then the cross-signed CA");
        assert_eq!(subject_issuer(&chain[0]).1, new_ca);
        assert_eq!(subject_issuer(&chain[1]), (new_ca.clone(), old_ca.clone()));
        assert_ne!(second.ca_key_pem, first.ca_key_pem);

        // The next rotation drops the oldest CA.
        let third = rotate(&t, &second, Duration::seconds(600)).expect("rotates");
        let bundle = certs(&third.ca_cert_pem);
        assert_eq!(bundle.len(), 2);
        assert_eq!(subject_issuer(&bundle[1]).0, new_ca);
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
