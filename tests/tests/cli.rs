//! The `esaas` binary's own commands, run as a user would.

use esaas_tests::esaas_bin;

fn run(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    std::process::Command::new(esaas_bin())
        .args(args)
        .env_remove("ESAAS_CONFIG")
        .env_remove("DATABASE_URL")
        .env_remove("ESAAS_BOOTSTRAP_ADMIN_KEY")
        .env("RUST_BACKTRACE", "0")
        .envs(env.iter().copied())
        .output()
        .expect("run esaas")
}

#[test]
fn config_check_prints_the_effective_configuration_without_secrets() {
    let out = run(
        &["config", "check"],
        &[
            (
                "DATABASE_URL",
                "postgres://esaas:hunter2-secret@db.internal/esaas",
            ),
            ("ESAAS_BOOTSTRAP_ADMIN_KEY", "bootstrap-secret-0123456789"),
            ("ESAAS_LISTEN_ADDR", "0.0.0.0:6000"),
            // Plaintext beyond loopback needs the declaration that a mesh encrypts it.
            ("ESAAS_TLS_MODE", "mesh"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("listen_addr = \"0.0.0.0:6000\""),
        "environment overrides apply:\n{text}"
    );
    assert!(text.contains("database_url = \"<redacted>\""), "{text}");
    assert!(
        !text.contains("hunter2") && !text.contains("bootstrap-secret"),
        "a secret was printed:\n{text}"
    );
    assert!(
        text.contains("[catalog]") && text.contains("[eks]"),
        "{text}"
    );
}

#[test]
fn an_invalid_configuration_names_the_key() {
    let dir = std::env::temp_dir().join(format!("esaas-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "max_attempts = 0\n").expect("write");
    let out = run(
        &["config", "check", "--config", bad.to_str().expect("path")],
        &[],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_attempts"), "{err}");

    std::fs::write(&bad, "no_such_key = 1\n").expect("write");
    let out = run(
        &["config", "check", "--config", bad.to_str().expect("path")],
        &[],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no_such_key"), "{err}");
}

#[test]
fn a_worker_without_a_key_says_how_to_get_one() {
    let out = run(
        &["worker", "--control-plane", "http://127.0.0.1:1"],
        &[("ESAAS_WORKER_KEY", "")],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ESAAS_WORKER_KEY") && err.contains("ROLE_WORKER"),
        "{err}"
    );
}
