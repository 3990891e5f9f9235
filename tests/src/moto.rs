//! `moto` in server mode: an independent emulator of the AWS APIs that stands in for EKS.
//!
//! [`Moto::start`] runs `moto_server -H 127.0.0.1 -p PORT` from the test venv
//! (`$ESAAS_TEST_VENV/bin/moto_server`, which `make test` installs; else `moto_server` on
//! `PATH`) and waits until it answers. [`shared`] starts one per test process, for tests that
//! only need an EKS endpoint: moto keeps all state in memory, so such tests use names of
//! their own and never call [`Moto::reset`].
//!
//! The server runs under a tiny `sh` guardian that holds a pipe from this process on its
//! stdin: when the pipe closes (the [`Moto`] is dropped, or the test process exits or is
//! killed, even with SIGKILL) the guardian kills `moto_server`. That is what makes a shared
//! instance in a `static` safe: statics are never dropped, but no `moto_server` outlives
//! its test process.
//!
//! # What moto (5.2) does with S3, found by trying
//!
//! Path-style requests (`PUT /{bucket}/{key}`) on the same port. An object call with no
//! `Authorization` header is anonymous: a read of a private object is `403` with an empty
//! body, so callers send one with an `.../s3/aws4_request` scope (the signature is not
//! checked) and `x-amz-content-sha256: UNSIGNED-PAYLOAD`. A body sent as a form
//! (`application/x-www-form-urlencoded`) is swallowed: send `application/octet-stream`. A
//! bucket that does not exist is `404` `<Code>NoSuchBucket</Code>`, a key `404`
//! `<Code>NoSuchKey</Code>`.
//!
//! # What moto (5.2) does with EKS, found by trying
//!
//! Requests are routed by the credential scope in the `Authorization` header (`.../eks/
//! aws4_request`); signatures are not checked, any access key works. An unsigned request
//! lands in moto's S3 emulation. State is per account (`123456789012`) and region (from the
//! credential scope).
//!
//! `CreateCluster`:
//! - `roleArn` must match `arn:PARTITION:iam::<12 digits>:role/<anything>` with a known
//!   partition (`aws`, `aws-cn`, `aws-us-gov`, …); otherwise `400 InvalidParameterException`
//!   `Invalid Role Arn: '…'`. `arn:aws:iam::123456789012:role/eks` is fine.
//! - `resourcesVpcConfig` is stored as given; subnets are not checked at all (empty, or ids
//!   that exist nowhere, are accepted).
//! - `version` defaults to `1.19`; the cluster is `ACTIVE` at once.
//! - A second create with the same name: `409 ResourceInUseException` `Cluster already exists
//!   with name: NAME`. Deleting a cluster that still has node groups: `409
//!   ResourceInUseException` `Cluster has nodegroups attached`.
//! - Unknown cluster: `404 ResourceNotFoundException` `No cluster found for name: NAME.`
//!
//! `CreateNodegroup`:
//! - The cluster must exist (`404 ResourceNotFoundException`, `No cluster found for name:
//!   NAME.`); `nodeRole` is checked like `roleArn` above (`400 InvalidParameterException`).
//! - `subnets` are not checked (an empty list is accepted); nor are `amiType`, `capacityType`,
//!   taint `effect`, `scalingConfig` (min > max is accepted), or the node group name (length
//!   and characters are not checked: 100 characters, spaces and slashes all pass).
//! - `launchTemplate` together with `diskSize` (or `remoteAccess`): `400
//!   InvalidParameterException` `Disk size must be specified within the launch template.`
//! - Stored and returned by `DescribeNodegroup`: `scalingConfig`, `instanceTypes`,
//!   `subnets`, `amiType`, `capacityType`, `diskSize`, `labels`, `taints` (as sent), `tags`,
//!   `nodeRole`, `releaseVersion`, `version`; `status` is `ACTIVE` at once, `health.issues`
//!   empty, `resources.autoScalingGroups` has one group.
//! - Defaults when absent: amiType `AL2_x86_64`, capacityType `ON_DEMAND`, diskSize `20`,
//!   instanceTypes `["t3.medium"]`, scaling `{min 2, max 2, desired 2}`,
//!   `remoteAccess.ec2SshKey = "eksKeypair"`, version `1.19` (not the cluster's version).
//! - **`updateConfig` is ignored at create** (not stored, not returned); only
//!   `UpdateNodegroupConfig` sets it.
//! - **Always send `scalingConfig`**: a group created without one shares moto's default
//!   dict, and a later `UpdateNodegroupConfig` of its scaling changes the default of every
//!   group created afterwards (a moto bug).
//! - Same name again, with or without the same `clientRequestToken`: `409
//!   ResourceInUseException` `NodeGroup already exists with name NAME and cluster name
//!   CLUSTER` (the token is never treated as idempotent).
//!
//! Others:
//! - `UpdateNodegroupConfig`: labels (`addOrUpdateLabels` / `removeLabels`), taints
//!   (`addOrUpdateTaints` / `removeTaints`, matched by key and effect), `scalingConfig`
//!   (merged into the stored one, not validated), `updateConfig`; answers an update with
//!   `status: Successful` at once.
//! - `DeleteNodegroup` is immediate (no `DELETING`); the next describe is `404
//!   ResourceNotFoundException` `No node group found for name: NAME.`, as is a second
//!   delete. The SDK waiters `nodegroup_active` / `nodegroup_deleted` work.
//! - `ListNodegroups` pages with `maxResults` / `nextToken`.
//! - `TagResource` / `UntagResource` / `ListTagsForResource` work on cluster ARNs only; a
//!   node group ARN gives `404 ResourceNotFoundException` (read node group tags from
//!   `DescribeNodegroup` instead).
//! - Not implemented (an HTML `404 Not Found` page, which aws-sdk-eks reports as an
//!   unhandled error with neither code nor message): `UpdateNodegroupVersion`,
//!   `ListUpdates`, `DescribeUpdate`. Nor are instances: a node group is its record only.
//!   [`crate::eks_nodes`] plays both in front of moto.
//! - Errors carry `x-amzn-ErrorType: <Code>` and a JSON body with `message`; every response
//!   says `Connection: close`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::OnceCell;

/// Region the helpers and [`env_for`] use.
pub const REGION: &str = "us-east-1";
/// Account moto puts every resource in.
pub const ACCOUNT_ID: &str = "123456789012";

/// A running `moto_server`, killed when dropped.
pub struct Moto {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The `sh` guardian; `moto_server` is its child.
    child: Child,
    /// Closing it makes the guardian kill `moto_server`.
    stdin: Option<ChildStdin>,
    log: PathBuf,
}

/// The `moto_server` executable: the test venv's, else the one on `PATH`.
pub fn moto_server_bin() -> PathBuf {
    if let Some(venv) = std::env::var_os("ESAAS_TEST_VENV") {
        let bin = PathBuf::from(venv).join("bin/moto_server");
        if bin.is_file() {
            return bin;
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let bin = dir.join("moto_server");
            if bin.is_file() {
                return bin;
            }
        }
    }
    panic!(
        "moto_server not found: set ESAAS_TEST_VENV to a venv with moto[server] installed \
         (run make test, or scripts/ensure-tools.sh)"
    )
}

/// Runs `moto_server` (`$0`) on port `$1` until a line or EOF arrives on stdin, then kills
/// it. moto stays in the caller's process group, so a kill of the group reaches it too.
const GUARDIAN: &str = r#"
"$0" -H 127.0.0.1 -p "$1" </dev/null &
pid=$!
trap 'kill $pid 2>/dev/null; exit 0' TERM INT HUP
read -r _ || true
kill $pid 2>/dev/null
wait $pid 2>/dev/null
exit 0
"#;

impl Moto {
    /// Starts `moto_server` on a free port of 127.0.0.1 and waits (up to 30 s) until it
    /// answers HTTP. Panics with the server's log if it does not come up.
    pub async fn start() -> Self {
        let bin = moto_server_bin();
        let mut last_log = String::new();
        // A free port can be taken between probing and binding: try a few.
        for _ in 0..3 {
            let port = crate::free_port();
            let log = std::env::temp_dir().join(format!("esaas-moto-{port}.log"));
            let log_file = std::fs::File::create(&log).expect("create the moto log file");
            let mut child = Command::new("sh")
                .arg("-c")
                .arg(GUARDIAN)
                .arg(&bin)
                .arg(port.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
            let stdin = child.stdin.take();
            let mut moto = Moto {
                endpoint: format!("http://127.0.0.1:{port}"),
                child,
                stdin,
                log,
            };
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                if answers(port).await {
                    return moto;
                }
                let exited = !matches!(moto.child.try_wait(), Ok(None));
                if exited || tokio::time::Instant::now() >= deadline {
                    last_log = std::fs::read_to_string(&moto.log).unwrap_or_default();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            drop(moto);
        }
        panic!("moto_server did not come up; its log:\n{last_log}")
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.endpoint
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port in the endpoint")
    }

    /// The variables a process needs to reach this moto with the AWS SDK.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        env_for(&self.endpoint)
    }

    /// Forgets every resource of every service (`POST /moto-api/reset`). Only for a
    /// private instance: other tests share [`shared`]'s.
    pub async fn reset(&self) {
        let status = http_status(self.port(), "POST", "/moto-api/reset")
            .await
            .expect("POST /moto-api/reset");
        assert_eq!(status, 200, "POST /moto-api/reset");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // EOF on the guardian's stdin: it kills moto_server and exits.
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if std::time::Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// One `moto_server` for the whole test process, started on first use. Safe to call from
/// any test's runtime: it holds a process, not a client bound to a runtime.
pub async fn shared() -> &'static Moto {
    static SHARED: OnceCell<Moto> = OnceCell::const_new();
    SHARED.get_or_init(Moto::start).await
}

/// The environment a process needs to talk to the moto at `endpoint` with the AWS SDK:
/// the EKS endpoint override, dummy credentials, the region, and no EC2 metadata lookups.
pub fn env_for(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL_EKS", endpoint.to_string()),
        ("AWS_ACCESS_KEY_ID", "testing".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
        ("AWS_REGION", REGION.to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
    ]
}

/// An IAM role ARN that moto accepts (`arn:aws:iam::<12 digits>:role/NAME`).
pub fn role_arn(name: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT_ID}:role/{name}")
}

async fn answers(port: u16) -> bool {
    matches!(
        http_status(port, "GET", "/moto-api/").await,
        Some(200 | 404)
    )
}

/// The status of one HTTP/1.0 request to 127.0.0.1:`port` (None if it fails).
async fn http_status(port: u16, method: &str, path: &str) -> Option<u16> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let request = format!(
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = Vec::new();
        let mut buf = [0u8; 256];
        while !head.windows(2).any(|w| w == b"\r\n") {
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8_lossy(&head);
        head.split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn starts_answers_and_dies_with_its_value() {
        let moto = Moto::start().await;
        let port = moto.port();
        assert_eq!(http_status(port, "GET", "/moto-api/").await, Some(200));
        moto.reset().await;
        let env = moto.env();
        assert!(env.contains(&("AWS_ENDPOINT_URL_EKS", moto.endpoint.clone())));
        drop(moto);
        assert_eq!(http_status(port, "GET", "/moto-api/").await, None);
    }

    #[tokio::test]
    async fn shared_is_one_instance() {
        let a = shared().await;
        let b = shared().await;
        assert!(std::ptr::eq(a, b));
        assert!(answers(a.port()).await);
    }
}
