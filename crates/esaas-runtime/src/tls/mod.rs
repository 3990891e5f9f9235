//! TLS on every hop: how `esaas serve` protects its listener (`[tls]`), and
//! the one rule every outgoing URL follows (the worker's control plane, the
//! OTLP collector): plaintext only to loopback, unless the operator declares
//! that a service mesh encrypts the pod's traffic.
//!
//! [`check`] is the pure part, tested by table; [`files`] reads and parses
//! the PEM files, [`reload`] swaps the served certificate when its files
//! change, and [`incoming`] turns TCP connections into TLS ones for tonic.

pub mod files;
pub mod incoming;
pub mod reload;

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// How this process's network traffic is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Plaintext, so only on loopback: the listen address, the worker's
    /// control-plane URL and the OTLP endpoint must all be loopback or https://.
    #[default]
    Off,
    /// `esaas serve` terminates TLS itself with `cert_file` and `key_file`.
    Native,
    /// Plaintext to a sidecar that encrypts everything the pod sends and
    /// receives (a service mesh with mTLS): the operator's declaration.
    Mesh,
}

impl Mode {
    /// The spelling in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Native => "native",
            Mode::Mesh => "mesh",
        }
    }
}

/// The `[tls]` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// `off`, `native` or `mesh`.
    pub mode: Mode,
    /// PEM certificate chain, leaf first (`native`).
    pub cert_file: String,
    /// PEM private key of the leaf (`native`).
    pub key_file: String,
    /// How often the two files are re-read; a new valid pair is served to new
    /// connections without a restart.
    pub reload_interval_seconds: u64,
}

/// What [`check`] looks at: the section and every address this process
/// listens on or connects to.
#[derive(Debug, Clone, Copy)]
pub struct Hops<'a> {
    /// `[tls]`.
    pub tls: &'a TlsSection,
    /// `listen_addr` (`ESAAS_LISTEN_ADDR`).
    pub listen_addr: SocketAddr,
    /// `worker.control_plane_url` (`ESAAS_CONTROL_PLANE_URL`); empty: unset.
    pub control_plane_url: &'a str,
    /// `worker.control_plane_ca_file`; empty: the system's roots.
    pub control_plane_ca_file: &'a str,
    /// `telemetry.otlp_endpoint`; empty: no export.
    pub otlp_endpoint: &'a str,
    /// `telemetry.otlp_ca_file`; empty: the system's roots.
    pub otlp_ca_file: &'a str,
}

const HOW: &str = "serve TLS (tls.mode = \"native\" with tls.cert_file and tls.key_file) \
                   or declare that a service mesh encrypts this pod's traffic (tls.mode = \"mesh\")";

/// Refuses the combinations that cannot work or would send secrets in
/// clear outside loopback; the error starts with the key to change.
pub fn check(h: &Hops<'_>) -> Result<(), String> {
    let t = h.tls;
    match t.mode {
        Mode::Native => {
            for (key, value) in [
                ("tls.cert_file", &t.cert_file),
                ("tls.key_file", &t.key_file),
            ] {
                if value.trim().is_empty() {
                    return Err(format!(
                        "{key}: required with tls.mode = \"native\" (a PEM file)"
                    ));
                }
            }
        }
        Mode::Off | Mode::Mesh => {
            for (key, value) in [
                ("tls.cert_file", &t.cert_file),
                ("tls.key_file", &t.key_file),
            ] {
                if !value.trim().is_empty() {
                    return Err(format!(
                        "{key}: set, but tls.mode is \"{}\", which serves plaintext: set tls.mode = \"native\" to serve TLS with it, or remove it",
                        t.mode.as_str()
                    ));
                }
            }
        }
    }
    if t.reload_interval_seconds == 0 {
        return Err("tls.reload_interval_seconds: must be at least 1".into());
    }
    if t.mode == Mode::Off && !h.listen_addr.ip().is_loopback() {
        return Err(format!(
            "listen_addr (ESAAS_LISTEN_ADDR): {} is not a loopback address and tls.mode is \"off\", so API keys would cross the network in clear: {HOW}",
            h.listen_addr
        ));
    }
    check_url(
        "worker.control_plane_url (ESAAS_CONTROL_PLANE_URL)",
        h.control_plane_url,
        ("worker.control_plane_ca_file", h.control_plane_ca_file),
        t.mode,
        "the worker key",
    )?;
    check_url(
        "telemetry.otlp_endpoint (OTEL_EXPORTER_OTLP_ENDPOINT)",
        h.otlp_endpoint,
        ("telemetry.otlp_ca_file", h.otlp_ca_file),
        t.mode,
        "traces and metrics",
    )
}

/// An outgoing URL: `https://` anywhere, `http://` only to loopback or in a
/// mesh; a CA file only with `https://`.
fn check_url(
    key: &str,
    url: &str,
    (ca_key, ca_file): (&str, &str),
    mode: Mode,
    what: &str,
) -> Result<(), String> {
    let url = url.trim();
    if url.is_empty() {
        if !ca_file.trim().is_empty() {
            return Err(format!("{ca_key}: set, but {key} is not"));
        }
        return Ok(());
    }
    let (scheme, host) = scheme_and_host(url)
        .ok_or_else(|| format!("{key}: {url:?} is not an http:// or https:// URL with a host"))?;
    match scheme {
        Scheme::Https => Ok(()),
        Scheme::Http if !ca_file.trim().is_empty() => Err(format!(
            "{ca_key}: set, but {key} is {url:?}, plaintext: use https:// to verify the server with it"
        )),
        Scheme::Http if is_loopback(host) || mode == Mode::Mesh => Ok(()),
        Scheme::Http => Err(format!(
            "{key}: {url:?} would send {what} in clear to {host}, which is not loopback: use https:// (with {ca_key} for a private CA), or declare that a service mesh encrypts this pod's traffic (tls.mode = \"mesh\")"
        )),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

/// The scheme and host of `http://host[:port][/...]` or `https://...`.
fn scheme_and_host(url: &str) -> Option<(Scheme, &str)> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else {
        (Scheme::Http, url.strip_prefix("http://")?)
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split_once(']').map(|(h, _)| h)?
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    (!host.is_empty()).then_some((scheme, host))
}

/// `localhost` or a loopback IP address.
pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(mode: Mode, cert: &str, key: &str) -> TlsSection {
        TlsSection {
            mode,
            cert_file: cert.into(),
            key_file: key.into(),
            reload_interval_seconds: 10,
        }
    }

    struct Case {
        tls: TlsSection,
        listen: &'static str,
        worker: &'static str,
        worker_ca: &'static str,
        otlp: &'static str,
        otlp_ca: &'static str,
    }

    fn case(mode: Mode) -> Case {
        let (cert, key) = match mode {
            Mode::Native => ("/tls/tls.crt", "/tls/tls.key"),
            _ => ("", ""),
        };
        Case {
            tls: section(mode, cert, key),
            listen: "127.0.0.1:50051",
            worker: "",
            worker_ca: "",
            otlp: "",
            otlp_ca: "",
        }
    }

    fn run(c: &Case) -> Result<(), String> {
        check(&Hops {
            tls: &c.tls,
            listen_addr: c.listen.parse().unwrap(),
            control_plane_url: c.worker,
            control_plane_ca_file: c.worker_ca,
            otlp_endpoint: c.otlp,
            otlp_ca_file: c.otlp_ca,
        })
    }

    #[test]
    fn what_works_is_accepted() {
        let ok = [
            // make dev: plaintext on loopback, in every spelling.
            case(Mode::Off),
            Case {
                listen: "[::1]:50051",
                worker: "http://localhost:50051",
                otlp: "http://127.0.0.1:4317",
                ..case(Mode::Off)
            },
            Case {
                worker: "http://[::1]:50051",
                ..case(Mode::Off)
            },
            // Native TLS anywhere, https:// out with or without a CA file.
            Case {
                listen: "0.0.0.0:50051",
                worker: "https://esaas-api.esaas-system.svc:50051",
                worker_ca: "/etc/esaas/ca/ca.crt",
                otlp: "https://otel-collector:4317",
                ..case(Mode::Native)
            },
            Case {
                worker: "https://esaas.internal",
                otlp: "https://collector.internal:4317",
                otlp_ca: "/ca.pem",
                ..case(Mode::Off)
            },
            // A declared mesh: plaintext to the sidecar.
            Case {
                listen: "0.0.0.0:50051",
                worker: "http://esaas-api.esaas-system.svc:50051",
                otlp: "http://otel-collector.observability.svc:4317",
                ..case(Mode::Mesh)
            },
        ];
        for c in ok {
            assert_eq!(run(&c), Ok(()), "{:?} {} {}", c.tls, c.listen, c.worker);
        }
    }

    #[test]
    fn what_cannot_work_or_leaks_is_refused_by_key() {
        let bad = [
            (
                Case {
                    tls: section(Mode::Native, "", "/k"),
                    ..case(Mode::Native)
                },
                "tls.cert_file: required",
            ),
            (
                Case {
                    tls: section(Mode::Native, "/c", " "),
                    ..case(Mode::Native)
                },
                "tls.key_file: required",
            ),
            (
                Case {
                    tls: section(Mode::Off, "/c", "/k"),
                    ..case(Mode::Off)
                },
                "tls.cert_file: set, but tls.mode is \"off\"",
            ),
            (
                Case {
                    tls: section(Mode::Mesh, "", "/k"),
                    ..case(Mode::Mesh)
                },
                "tls.key_file: set, but tls.mode is \"mesh\"",
            ),
            (
                Case {
                    tls: TlsSection {
                        reload_interval_seconds: 0,
                        ..section(Mode::Native, "/c", "/k")
                    },
                    ..case(Mode::Native)
                },
                "tls.reload_interval_seconds",
            ),
            (
                Case {
                    listen: "0.0.0.0:50051",
                    ..case(Mode::Off)
                },
                "listen_addr (ESAAS_LISTEN_ADDR): 0.0.0.0:50051 is not a loopback address",
            ),
            (
                Case {
                    listen: "10.1.2.3:50051",
                    ..case(Mode::Off)
                },
                "listen_addr",
            ),
            (
                Case {
                    worker: "http://esaas-api.esaas-system.svc:50051",
                    ..case(Mode::Off)
                },
                "worker.control_plane_url (ESAAS_CONTROL_PLANE_URL): \"http://esaas-api.esaas-system.svc:50051\" would send the worker key in clear",
            ),
            (
                // Native TLS on the listener says nothing about a mesh.
                Case {
                    worker: "http://10.0.0.7:50051",
                    ..case(Mode::Native)
                },
                "worker.control_plane_url",
            ),
            (
                // "localhost.example.com" is not loopback.
                Case {
                    worker: "http://localhost.example.com:50051",
                    ..case(Mode::Off)
                },
                "worker.control_plane_url",
            ),
            (
                Case {
                    worker: "http://127.0.0.1:50051",
                    worker_ca: "/ca.pem",
                    ..case(Mode::Off)
                },
                "worker.control_plane_ca_file: set, but worker.control_plane_url (ESAAS_CONTROL_PLANE_URL) is \"http://127.0.0.1:50051\", plaintext",
            ),
            (
                Case {
                    worker_ca: "/ca.pem",
                    ..case(Mode::Off)
                },
                "worker.control_plane_ca_file: set, but",
            ),
            (
                Case {
                    worker: "ftp://esaas:21",
                    ..case(Mode::Off)
                },
                "worker.control_plane_url (ESAAS_CONTROL_PLANE_URL): \"ftp://esaas:21\" is not",
            ),
            (
                Case {
                    otlp: "http://otel-collector:4317",
                    ..case(Mode::Native)
                },
                "telemetry.otlp_endpoint (OTEL_EXPORTER_OTLP_ENDPOINT): \"http://otel-collector:4317\" would send traces and metrics in clear",
            ),
            (
                Case {
                    otlp: "http://127.0.0.1:4317",
                    otlp_ca: "/ca.pem",
                    ..case(Mode::Off)
                },
                "telemetry.otlp_ca_file: set, but",
            ),
        ];
        for (c, want) in bad {
            let err = run(&c).expect_err(want);
            assert!(err.starts_with(want), "want {want:?}, got {err:?}");
        }
    }

    #[test]
    fn hosts_are_read_from_urls() {
        for (url, want) in [
            ("http://h:1", Some((Scheme::Http, "h"))),
            ("https://h", Some((Scheme::Https, "h"))),
            ("http://user@h:1/x?y", Some((Scheme::Http, "h"))),
            ("http://[::1]:1", Some((Scheme::Http, "::1"))),
            ("http://:1", None),
            ("h:1", None),
        ] {
            assert_eq!(scheme_and_host(url), want, "{url}");
        }
    }
}
