//! `esaasctl` as people and scripts use it: through pipes (plain progress lines, JSON
//! and YAML on stdout, documented exit codes), in a real terminal (tmux: the live
//! progress display), and following a cluster while its control plane restarts.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use esaas_client::v1;
use esaas_tests::sim::SimConfig;
use esaas_tests::*;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The esaasctl binary built next to the tests (or `ESAASCTL_BIN`).
fn esaasctl_bin() -> PathBuf {
    if let Ok(p) = std::env::var("ESAASCTL_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("esaasctl"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p esaasctl` (make test does)",
        bin.display()
    );
    bin
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs esaasctl against `addr` with `key`, stdin closed, stdout and stderr piped.
async fn ctl(addr: &str, key: &str, args: &[&str]) -> Run {
    let out = tokio::process::Command::new(esaasctl_bin())
        .args(args)
        .env("ESAAS_ADDR", addr)
        .env("ESAAS_KEY", key)
        .env_remove("ESAAS_TENANT")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run esaasctl");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!(
        "$ esaasctl {}\n-> {}\n{}{}",
        args.join(" "),
        run.code,
        run.stdout,
        run.stderr
    );
    run
}

const CREATE: &[&str] = &[
    "-t",
    "search",
    "clusters",
    "create",
    "logs",
    "--version",
    "8.17.10",
    "--nodes",
    "3",
    "--size",
    "small",
    "--storage-gib",
    "100",
];

#[tokio::test]
async fn through_pipes_create_scale_dry_run_and_delete() {
    let (app, _sim) = spawn_app_with_workers(1, SimConfig::default(), |_| {}).await;
    let t = app.tenant("search").await;
    let addr = format!("http://{}", app.addr);
    let key = t.admin.as_str();

    // Create waits, with one plain line per change on stderr and the result on stdout.
    let mut args = CREATE.to_vec();
    args.extend(["-o", "json"]);
    let r = ctl(&addr, key, &args).await;
    assert_eq!(r.code, 0);
    assert!(
        !r.stderr.contains('\u{1b}'),
        "no escape codes off a terminal"
    );
    for line in [
        "attempt 1 started on",
        "stage namespace started",
        "stage elasticsearch_objects done",
        "operation SUCCEEDED",
    ] {
        assert!(r.stderr.contains(line), "{line:?} in the progress");
    }
    let cluster: serde_json::Value = serde_json::from_str(&r.stdout).expect("stdout is JSON");
    assert_eq!(cluster["status"]["state"], "CLUSTER_STATE_READY");
    assert_eq!(cluster["spec"]["nodeSets"][0]["count"], 3);

    let r = ctl(
        &addr,
        key,
        &["-t", "search", "clusters", "list", "-o", "yaml"],
    )
    .await;
    assert_eq!(r.code, 0);
    let listed: serde_yaml::Value = serde_yaml::from_str(&r.stdout).expect("stdout is YAML");
    assert_eq!(
        listed[0]["name"].as_str(),
        Some("tenants/search/clusters/logs")
    );

    // The dry run shows the disruption and changes nothing.
    let r = ctl(
        &addr,
        key,
        &[
            "-t",
            "search",
            "clusters",
            "update",
            "logs",
            "--nodes",
            "5",
            "--dry-run",
        ],
    )
    .await;
    assert_eq!(r.code, 0);
    assert!(
        r.stdout.contains("disruption: NEW_NODES_FIRST"),
        "{}",
        r.stdout
    );
    let c = app
        .wait_cluster(
            "tenants/search/clusters/logs",
            Duration::from_secs(1),
            |_| true,
        )
        .await;
    assert_eq!(c.generation, 1, "a dry run changes nothing");

    // --async returns the queued operation; `operations watch` follows it to the end.
    let r = ctl(
        &addr,
        key,
        &[
            "-t", "search", "clusters", "update", "logs", "--nodes", "5", "--async", "-o", "json",
        ],
    )
    .await;
    assert_eq!(r.code, 0);
    let resp: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
    assert_eq!(resp["disruption"], "DISRUPTION_NEW_NODES_FIRST");
    let op = resp["operation"]["name"]
        .as_str()
        .expect("operation name")
        .to_string();
    let r = ctl(&addr, key, &["operations", "watch", &op, "-o", "json"]).await;
    assert_eq!(r.code, 0);
    let done: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
    assert_eq!(done["state"], "OPERATION_STATE_SUCCEEDED");
    let r = ctl(
        &addr,
        key,
        &["-t", "search", "clusters", "get", "logs", "-o", "json"],
    )
    .await;
    let c: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
    assert_eq!(c["spec"]["nodeSets"][0]["count"], 5);
    assert_eq!(c["status"]["observedGeneration"], 2);

    // Exit codes scripts can rely on.
    let r = ctl(&addr, key, &["-t", "search", "clusters", "get", "nope"]).await;
    assert_eq!(r.code, 4, "NOT_FOUND");
    assert!(r.stderr.contains("NOT_FOUND"));
    let r = ctl(
        &addr,
        "esk_not-a-key",
        &["-t", "search", "clusters", "list"],
    )
    .await;
    assert_eq!(r.code, 3, "UNAUTHENTICATED");
    let r = ctl(
        &addr,
        &t.viewer,
        &["-t", "search", "clusters", "delete", "logs"],
    )
    .await;
    assert_eq!(r.code, 3, "PERMISSION_DENIED");
    let r = ctl(
        &addr,
        key,
        &[
            "-t",
            "search",
            "clusters",
            "create",
            "Bad",
            "--version",
            "1",
            "--nodes",
            "1",
            "--size",
            "x",
            "--storage-gib",
            "1",
        ],
    )
    .await;
    assert_eq!(r.code, 5, "INVALID_ARGUMENT");
    assert!(
        r.stderr.contains("field cluster_id:"),
        "each field at fault is named"
    );
    let r = ctl(
        &format!("http://127.0.0.1:{}", free_port()),
        key,
        &["-t", "search", "clusters", "list"],
    )
    .await;
    assert_eq!(r.code, 7, "unreachable");
    let r = ctl(&addr, key, &["clusters", "get", "logs"]).await;
    assert_eq!(r.code, 1, "no tenant for a short name");
    let r = ctl(&addr, key, &["clusters", "frobnicate"]).await;
    assert_eq!(r.code, 2, "usage");

    // Delete waits until the cluster is gone.
    let r = ctl(
        &addr,
        key,
        &["-t", "search", "clusters", "delete", "logs", "--dry-run"],
    )
    .await;
    assert!(r.stdout.contains("disruption: DESTRUCTIVE"), "{}", r.stdout);
    let r = ctl(&addr, key, &["-t", "search", "clusters", "delete", "logs"]).await;
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("DELETED"), "{}", r.stdout);

    let r = ctl(&addr, key, &["completions", "bash"]).await;
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("esaasctl") && r.stdout.contains("clusters"));
}

/// A platform without a snapshot bucket: `snapshots create` is refused with the server's
/// precondition, the list is empty, restores of a snapshot nobody took are NOT_FOUND, and a
/// delete's dry run says that no final snapshot is taken, and why.
#[tokio::test]
async fn snapshots_without_a_bucket_are_refused_and_a_delete_says_so() {
    let app = spawn_app().await;
    let t = app.tenant("search").await;
    app.create_cluster(&t.admin, "search", "logs", 3).await;
    let addr = format!("http://{}", app.addr);
    let key = t.admin.as_str();

    let r = ctl(&addr, key, &["-t", "search", "snapshots", "create", "logs"]).await;
    assert_eq!(r.code, 5, "FAILED_PRECONDITION is refused");
    assert!(r.stderr.contains("FAILED_PRECONDITION"), "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "precondition SNAPSHOTS_NOT_CONFIGURED on tenants/search/clusters/logs: this platform has no snapshot bucket"
        ),
        "{}",
        r.stderr
    );
    assert_eq!(r.stdout, "", "nothing on stdout");

    let r = ctl(
        &addr,
        key,
        &[
            "snapshots",
            "list",
            "tenants/search/clusters/logs",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(r.code, 0);
    let listed: serde_json::Value = serde_json::from_str(&r.stdout).expect("stdout is JSON");
    assert_eq!(listed, serde_json::json!([]));
    let r = ctl(&addr, key, &["-t", "search", "snapshots", "list", "logs"]).await;
    assert_eq!(r.code, 0);
    assert_eq!(
        r.stdout.trim_end(),
        "SNAPSHOT  KIND  STATE  INDICES  STARTED  TOOK  FAILURE",
        "only the header"
    );

    let r = ctl(
        &addr,
        key,
        &[
            "-t",
            "search",
            "snapshots",
            "restore",
            "logs",
            "--from",
            "logs",
            "--snapshot",
            "manual-nope",
            "--indices",
            "orders",
        ],
    )
    .await;
    assert_eq!(r.code, 4, "an unknown snapshot is NOT_FOUND");
    let r = ctl(
        &addr,
        key,
        &[
            "-t",
            "search",
            "snapshots",
            "restore",
            "logs",
            "--from",
            "logs",
            "--snapshot",
            "x",
        ],
    )
    .await;
    assert_eq!(r.code, 2, "--indices is required");
    let mut create = CREATE.to_vec();
    create[4] = "restored";
    create.extend([
        "--restore-from",
        "logs",
        "--snapshot",
        "manual-nope",
        "--dry-run",
    ]);
    let r = ctl(&addr, key, &create).await;
    assert_eq!(r.code, 4, "a create from an unknown snapshot is NOT_FOUND");
    assert!(
        r.stderr
            .contains("tenants/search/clusters/logs/snapshots/manual-nope"),
        "{}",
        r.stderr
    );
    let mut create = CREATE.to_vec();
    create.extend(["--snapshot", "manual-nope"]);
    let r = ctl(&addr, key, &create).await;
    assert_eq!(r.code, 2, "--snapshot needs --restore-from");

    let r = ctl(
        &addr,
        key,
        &["-t", "search", "clusters", "delete", "logs", "--dry-run"],
    )
    .await;
    assert_eq!(r.code, 0);
    assert!(
        r.stdout
            .contains("final snapshot: none (snapshots are not configured on this platform)"),
        "{}",
        r.stdout
    );
    let r = ctl(
        &addr,
        key,
        &[
            "-t",
            "search",
            "clusters",
            "delete",
            "logs",
            "--dry-run",
            "--skip-final-snapshot",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(r.code, 0);
    let dry: serde_json::Value = serde_json::from_str(&r.stdout).expect("stdout is JSON");
    assert_eq!(dry["finalSnapshot"]["taken"], false);
    assert_eq!(
        dry["finalSnapshot"]["reason"],
        "skip_final_snapshot was set"
    );

    let r = ctl(&addr, key, &["-t", "search", "clusters", "get", "logs"]).await;
    assert_eq!(r.code, 0);
    for (key, value) in [
        ("snapshots", "every 24 h, the newest 7 kept (the default)"),
        ("last snapshot", "-"),
    ] {
        assert!(
            r.stdout
                .lines()
                .any(|l| l.starts_with(key) && l[key.len()..].trim() == value),
            "{key}: {value:?} in\n{}",
            r.stdout
        );
    }
}

#[tokio::test]
async fn admins_manage_tenants_keys_and_see_the_catalog() {
    let app = spawn_app().await;
    let addr = format!("http://{}", app.addr);
    let r = ctl(
        &addr,
        ADMIN_KEY,
        &[
            "tenants",
            "create",
            "demo",
            "--max-clusters",
            "2",
            "--max-nodes",
            "9",
            "--max-storage-gib",
            "900",
        ],
    )
    .await;
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("0 of 9"), "{}", r.stdout);
    let r = ctl(
        &addr,
        ADMIN_KEY,
        &[
            "tenants",
            "set-quota",
            "demo",
            "--max-nodes",
            "12",
            "-o",
            "json",
        ],
    )
    .await;
    let t: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
    assert_eq!(t["quota"]["maxNodes"], 12);
    assert_eq!(
        t["quota"]["maxClusters"], 2,
        "unset limits keep their value"
    );

    let r = ctl(
        &addr,
        ADMIN_KEY,
        &[
            "-t",
            "demo",
            "keys",
            "create",
            "--role",
            "tenant-admin",
            "--display-name",
            "ci",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(r.code, 0);
    let issued: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
    let secret = issued["secret"].as_str().expect("secret").to_string();
    let name = issued["apiKey"]["name"].as_str().expect("name").to_string();
    let r = ctl(&addr, &secret, &["-t", "demo", "keys", "list"]).await;
    assert_eq!(r.code, 0, "a tenant admin lists its tenant's keys");
    assert!(r.stdout.contains(&name) && !r.stdout.contains(&secret));
    let r = ctl(&addr, ADMIN_KEY, &["keys", "revoke", &name]).await;
    assert_eq!(r.code, 0);
    let r = ctl(&addr, &secret, &["-t", "demo", "keys", "list"]).await;
    assert_eq!(r.code, 3, "a revoked key is UNAUTHENTICATED");

    let r = ctl(&addr, ADMIN_KEY, &["catalog", "-o", "json"]).await;
    let c: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
    assert!(
        c["versions"]
            .as_array()
            .is_some_and(|v| v.iter().any(|v| v == "8.17.10"))
    );
    let r = ctl(&addr, ADMIN_KEY, &["catalog"]).await;
    assert!(r.stdout.contains("r6i.large"), "{}", r.stdout);
    let r = ctl(&addr, ADMIN_KEY, &["workers", "-o", "json"]).await;
    assert_eq!(r.code, 0);
    assert_eq!(r.stdout.trim(), "[]", "no worker in this test");
    let r = ctl(
        &addr,
        ADMIN_KEY,
        &[
            "operations",
            "cancel",
            "0193aaaa-0000-7000-8000-000000000000",
        ],
    )
    .await;
    assert_eq!(r.code, 4, "an unknown operation is NOT_FOUND: {}", r.stderr);

    // No worker here: a create stays queued, and a cancel ends it at once.
    let mut create = vec!["-t", "demo"];
    create.extend_from_slice(&CREATE[2..]);
    create.extend_from_slice(&["--async", "-o", "json"]);
    let r = ctl(&addr, ADMIN_KEY, &create).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let created: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
    let op = created["operation"]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("a queued operation in {created}"))
        .to_string();
    let r = ctl(
        &addr,
        ADMIN_KEY,
        &["operations", "cancel", &op, "-o", "json"],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let cancelled: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
    assert_eq!(cancelled["state"], "OPERATION_STATE_CANCELLED");
    let r = ctl(&addr, ADMIN_KEY, &["operations", "cancel", &op]).await;
    assert_eq!(r.code, 0, "cancelling again answers the same: {}", r.stderr);
    let r = ctl(
        &addr,
        ADMIN_KEY,
        &["-t", "demo", "clusters", "delete", "logs", "--async"],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
}

fn tmux(args: &[&str]) -> std::process::Output {
    std::process::Command::new("tmux")
        .args(args)
        .output()
        .expect("tmux is installed (scripts/ensure-tools.sh installs it)")
}

/// In a real terminal the progress is drawn in place: a spinner on the running stage,
/// ✓ on the finished ones, and the header saying who holds the operation.
#[tokio::test]
async fn in_a_terminal_progress_is_drawn_live() {
    let sim = SimConfig {
        pods_ready_delay: Duration::from_millis(1500),
        ..SimConfig::default()
    };
    let (app, _sim) = spawn_app_with_workers(1, sim, |_| {}).await;
    let t = app.tenant("search").await;
    let session = format!("esaasctl-{}", free_port());
    let command = format!(
        "ESAAS_ADDR=http://{} ESAAS_KEY={} {} {}; echo EXIT=$?; sleep 60",
        app.addr,
        t.admin,
        esaasctl_bin().display(),
        CREATE.join(" ")
    );
    let started = tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "160",
        "-y",
        "40",
        &command,
    ]);
    assert!(started.status.success(), "{started:?}");
    let mut screens = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let shot = tmux(&["capture-pane", "-p", "-t", &session]);
        let screen = String::from_utf8_lossy(&shot.stdout).into_owned();
        let finished = screen.contains("EXIT=");
        screens.push(screen);
        if finished || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tmux(&["kill-session", "-t", &session]);
    let last = screens.last().cloned().unwrap_or_default();
    eprintln!("{last}");
    assert!(last.contains("EXIT=0"), "the create succeeded:\n{last}");
    let running = screens
        .iter()
        .find(|s| s.contains("RUNNING · attempt 1 on") && s.contains("waiting for pods"))
        .unwrap_or_else(|| {
            panic!("a screen showed the running attempt and what it waits for; last:\n{last}")
        });
    assert!(
        running.contains("✓ namespace"),
        "a finished stage has its tick:\n{running}"
    );
    let header = last.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("✓ Creating tenants/search/clusters/logs")
            && header.contains("SUCCEEDED"),
        "{header}"
    );
    for stage in [
        "namespace",
        "node_groups",
        "elasticsearch_objects",
        "pods_ready",
        "health_gate",
    ] {
        assert!(
            last.lines().any(|l| l.starts_with(&format!("✓ {stage} "))),
            "✓ {stage} on the last screen:\n{last}"
        );
    }
    // The result follows the progress, drawn once: no line of the progress repeats.
    assert_eq!(last.matches("Creating tenants/search").count(), 1, "{last}");
    assert!(
        last.lines()
            .any(|l| l.starts_with("state ") && l.trim_end().ends_with(" READY")),
        "{last}"
    );
}

/// `esaasctl clusters watch` on control plane A keeps going while A is killed and
/// restarted: changes made meanwhile through B (same database) arrive after the
/// reconnect, in order, none missed and none repeated.
#[tokio::test]
async fn a_watch_resumes_across_a_control_plane_restart() {
    let db = TestDb::new().await;
    let port_a = free_port();
    let a = ServerProcess::start_with(&db, port_a, "").await;
    let b = ServerProcess::start(&db).await;
    let b_url = format!("http://{}", b.addr);
    let admin = esaas_client::Client::connect(&b_url, ADMIN_KEY)
        .await
        .expect("connect to b");
    admin
        .create_tenant(v1::CreateTenantRequest {
            tenant_id: "search".into(),
            ..Default::default()
        })
        .await
        .expect("tenant");
    let spec = |nodes| {
        v1::ClusterSpec::new("8.17.10").with_node_set(
            v1::NodeSet::new("default", nodes, "small", 100)
                .with_roles(&[v1::NodeRole::Master, v1::NodeRole::Data]),
        )
    };
    admin
        .create_cluster(v1::CreateClusterRequest::new(
            "tenants/search",
            "logs",
            spec(3),
        ))
        .await
        .expect("cluster");
    let scale = |nodes: i32| {
        let admin = admin.clone();
        async move {
            admin
                .update_cluster(v1::UpdateClusterRequest {
                    cluster: Some(v1::Cluster {
                        name: "tenants/search/clusters/logs".into(),
                        spec: Some(spec(nodes)),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["spec.node_sets".into()],
                    }),
                    ..Default::default()
                })
                .await
                .expect("scale")
        }
    };

    let mut watch = tokio::process::Command::new(esaasctl_bin())
        .args(["-t", "search", "clusters", "watch", "logs"])
        .env("ESAAS_ADDR", format!("http://127.0.0.1:{port_a}"))
        .env("ESAAS_KEY", ADMIN_KEY)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("esaasctl clusters watch");
    let mut out = BufReader::new(watch.stdout.take().expect("stdout")).lines();
    let mut err = BufReader::new(watch.stderr.take().expect("stderr")).lines();
    let next_line = async |out: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>| {
        tokio::time::timeout(Duration::from_secs(30), out.next_line())
            .await
            .expect("a line within 30 s")
            .expect("read")
            .expect("the watch is still running")
    };
    let revision = |line: &str| -> i64 {
        line.split_whitespace()
            .next()
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("a revision first: {line:?}"))
    };

    let current = next_line(&mut out).await;
    assert!(current.contains("CURRENT"), "{current}");
    let start = revision(&current);
    scale(4).await;
    let first = next_line(&mut out).await;
    assert!(first.contains("SPEC_UPDATED"), "{first}");
    assert_eq!(revision(&first), start + 1);

    // A goes away; B takes changes meanwhile; A comes back on its port.
    a.kill().await;
    scale(5).await;
    scale(6).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let a = ServerProcess::start_with(&db, port_a, "").await;

    let mut seen = vec![revision(&first)];
    while seen.len() < 3 {
        let line = next_line(&mut out).await;
        assert!(line.contains("SPEC_UPDATED"), "{line}");
        seen.push(revision(&line));
    }
    assert_eq!(
        seen,
        [start + 1, start + 2, start + 3],
        "contiguous, none repeated"
    );
    let reconnected = tokio::time::timeout(Duration::from_secs(5), err.next_line())
        .await
        .expect("a note on stderr")
        .expect("read")
        .unwrap_or_default();
    assert_eq!(
        reconnected,
        format!("reconnected; resuming after revision {}", start + 1)
    );

    // And it goes on after the restart.
    scale(7).await;
    let after = next_line(&mut out).await;
    assert_eq!(revision(&after), start + 4);
    watch.kill().await.expect("stop the watch");
    a.kill().await;
    b.kill().await;
}
