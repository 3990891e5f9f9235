//! Reading the PEM files `[tls]` and the CA keys name. Every error starts
//! with the key whose file is wrong, and never holds key material.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// A certificate and key pair that parse, match and are in their validity.
#[derive(Debug)]
pub struct Identity {
    /// What rustls serves.
    pub key: Arc<CertifiedKey>,
    /// The leaf, for logs: subject, SHA-256 fingerprint and expiry.
    pub leaf: LeafInfo,
}

/// What the logs say about a served certificate (nothing secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafInfo {
    /// The subject, as text.
    pub subject: String,
    /// Hex SHA-256 of the leaf's DER.
    pub sha256: String,
    /// When it expires, RFC 3339.
    pub not_after: String,
}

/// The crypto provider of every TLS stack of the process (aws-lc-rs).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn read(key: &str, path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{key}: reading {path}: {e}"))
}

/// Loads and checks the pair in `cert_file` and `key_file`.
pub fn identity(cert_file: &str, key_file: &str) -> Result<Identity, String> {
    let cert_pem = read("tls.cert_file", cert_file)?;
    let key_pem = read("tls.key_file", key_file)?;
    identity_from_pem((&cert_pem, cert_file), (&key_pem, key_file))
}

/// [`identity`] from the files' contents, each with its path (for errors).
pub fn identity_from_pem(
    (cert_pem, cert_path): (&[u8], &str),
    (key_pem, key_path): (&[u8], &str),
) -> Result<Identity, String> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls.cert_file: {cert_path} is not PEM: {e}"))?;
    let Some(first) = chain.first() else {
        return Err(format!(
            "tls.cert_file: {cert_path} holds no PEM certificate"
        ));
    };
    let leaf = leaf_info(first).map_err(|e| format!("tls.cert_file: {cert_path}: {e}"))?;
    // The error of a bad key says only that it is bad: never its bytes.
    let private = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| {
        format!("tls.key_file: {key_path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")
    })?;
    let certified = CertifiedKey::from_der(chain, private, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            format!("tls.key_file: {key_path} is not the key of the certificate in tls.cert_file ({cert_path})")
        }
        e => format!("tls.key_file: {key_path}: {e}"),
    })?;
    Ok(Identity {
        key: Arc::new(certified),
        leaf,
    })
}

fn leaf_info(der: &CertificateDer<'_>) -> Result<LeafInfo, String> {
    use sha2::Digest;
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("the first certificate does not parse: {e}"))?;
    let validity = cert.validity();
    if !validity.is_valid() {
        return Err(format!(
            "the certificate is valid only from {} to {}",
            validity.not_before, validity.not_after
        ));
    }
    Ok(LeafInfo {
        subject: cert.subject().to_string(),
        sha256: hex::encode(sha2::Sha256::digest(der.as_ref())),
        not_after: validity
            .not_after
            .to_rfc2822()
            .unwrap_or_else(|_| validity.not_after.to_string()),
    })
}

/// Reads the CA bundle `path` (the value of `key`): PEM, at least one
/// certificate, each one a CA rustls can trust.
pub fn ca_bundle(key: &str, path: &str) -> Result<String, String> {
    let pem = read(key, path)?;
    check_ca_bundle(&pem).map_err(|e| format!("{key}: {path}: {e}"))?;
    String::from_utf8(pem).map_err(|_| format!("{key}: {path}: not UTF-8 text"))
}

fn check_ca_bundle(pem: &[u8]) -> Result<(), String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    let mut roots = rustls::RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        roots
            .add(cert)
            .map_err(|e| format!("certificate {} is not a usable CA: {e}", i + 1))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_matching_pair_loads_and_says_what_it_serves() {
        let (cert, key) = pair("esaas.internal");
        let id = identity_from_pem((cert.as_bytes(), "c.pem"), (key.as_bytes(), "k.pem")).unwrap();
        assert_eq!(id.leaf.sha256.len(), 64);
        assert!(!id.leaf.not_after.is_empty());
        assert!(check_ca_bundle(cert.as_bytes()).is_ok());
    }

    #[test]
    fn bad_pairs_and_bundles_are_refused_by_key_without_the_key() {
        let (cert, key) = pair("a");
        let (_, other_key) = pair("b");
        for (c, k, want) in [
            (
                "",
                key.as_str(),
                "tls.cert_file: c.pem holds no PEM certificate",
            ),
            (
                cert.as_str(),
                "",
                "tls.key_file: k.pem holds no PEM private key",
            ),
            (
                cert.as_str(),
                other_key.as_str(),
                "tls.key_file: k.pem is not the key of the certificate in tls.cert_file (c.pem)",
            ),
            (
                key.as_str(),
                key.as_str(),
                "tls.cert_file: c.pem holds no PEM certificate",
            ),
        ] {
            let err =
                identity_from_pem((c.as_bytes(), "c.pem"), (k.as_bytes(), "k.pem")).unwrap_err();
            assert!(err.starts_with(want), "{want}: {err}");
            assert!(!err.contains("PRIVATE KEY-----"), "{err}");
        }
        assert!(
            check_ca_bundle(b"")
                .unwrap_err()
                .contains("no PEM certificate")
        );
        assert!(
            check_ca_bundle(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
                .is_err()
        );
    }
}
