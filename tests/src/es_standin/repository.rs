//! Snapshot repositories of type `s3`: register (`PUT /_snapshot/{repo}`,
//! verified unless `verify=false` or `readonly`), read back
//! (`GET /_snapshot/{repo}`), verify (`POST /_snapshot/{repo}/_verify`).
//! Reference: "Create or update a snapshot repository", "Verify a snapshot
//! repository" and "S3 repository" in the Elasticsearch reference
//! (www.elastic.co/guide/en/elasticsearch/reference/8.17/put-snapshot-repo-api.html,
//! .../verify-snapshot-repo-api.html, .../repository-s3.html).
//!
//! The repository's contents live in the S3 bucket, as Elasticsearch keeps
//! them (`BlobStoreRepository`): `index.latest` holds the generation N of
//! the current `index-N` (the list of snapshots), each snapshot has its
//! `snap-{uuid}.dat`. Another cluster that registers the same bucket and
//! base path sees the same snapshots, as with the real thing.

use hyper::StatusCode;
use serde_json::{Value, json};

use super::answer::{
    Answer, acknowledged, es_error, es_error_caused, flag, json_answer, json_body,
};
use super::cluster::{Cluster, node_id};
use super::routes::Call;
use super::s3::{S3, S3Error};

/// A registered repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Repo {
    pub(crate) bucket: String,
    /// Without leading or trailing slashes; may be empty.
    pub(crate) base_path: String,
    pub(crate) readonly: bool,
}

impl Repo {
    /// The key of `blob` under the base path.
    pub(super) fn key(&self, blob: &str) -> String {
        if self.base_path.is_empty() {
            blob.to_string()
        } else {
            format!("{}/{blob}", self.base_path)
        }
    }

    /// `BlobPath.toString`: each element in brackets.
    fn printed_path(&self) -> String {
        self.base_path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| format!("[{s}]"))
            .collect()
    }
}

/// The `{repo}` segment of `/_snapshot/{repo}/...`.
pub(super) fn repo_name(call: &Call) -> &str {
    call.path.split('/').nth(2).unwrap_or_default()
}

/// 404 `repository_missing_exception` (`RepositoryMissingException`).
pub(super) fn missing(repo: &str) -> Answer {
    es_error(
        StatusCode::NOT_FOUND,
        "repository_missing_exception",
        &format!("[{repo}] missing"),
    )
}

/// The repository named in the call, with the S3 endpoint it stores to.
pub(super) fn lookup<'a>(c: &'a Cluster, call: &Call) -> Result<(String, &'a Repo), Answer> {
    let name = repo_name(call).to_string();
    match c.repos.get(&name) {
        Some(r) => Ok((name, r)),
        None => Err(missing(&name)),
    }
}

/// The S3 client of the cluster, or the SDK's error for a client with no endpoint.
pub(super) fn s3_of(c: &Cluster) -> Result<S3, S3Error> {
    c.s3.clone().ok_or_else(|| S3Error {
        status: 0,
        code: "SdkClientException".into(),
        message: "Unable to execute HTTP request: no S3 endpoint configured".into(),
    })
}

/// `PUT /_snapshot/{repo}`. Only `type: s3` is modelled (`fs` needs
/// `path.repo`, which the product never sets): another type is
/// `RepositoryException` "repository type [x] does not exist", a 500.
/// No bucket: `S3Repository`'s "No bucket defined for s3 repository", a 500.
pub(super) fn put(c: &mut Cluster, call: &Call) -> Answer {
    let name = repo_name(call).to_string();
    let body = match json_body(call.content_type.as_deref(), &call.body) {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    let repo_error = |reason: &str| {
        es_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "repository_exception",
            &format!("[{name}] {reason}"),
        )
    };
    let kind = body.get("type").and_then(Value::as_str).unwrap_or_default();
    if kind != "s3" {
        return repo_error(&format!("repository type [{kind}] does not exist"));
    }
    let settings = body.get("settings").cloned().unwrap_or(json!({}));
    let setting = |k: &str| settings.get(k).and_then(Value::as_str).map(str::to_string);
    let Some(bucket) = setting("bucket").filter(|b| !b.is_empty()) else {
        return repo_error("No bucket defined for s3 repository");
    };
    let readonly = settings
        .get("readonly")
        .is_some_and(|v| v.as_bool() == Some(true) || v.as_str() == Some("true"));
    let repo = Repo {
        bucket,
        base_path: setting("base_path")
            .unwrap_or_default()
            .trim_matches('/')
            .to_string(),
        readonly,
    };
    // RepositoriesService.registerRepository verifies a repository that is
    // not read-only unless `verify=false`; a failed verification leaves it
    // registered (the answer is the error), as Elasticsearch does.
    let verify = !readonly && call.query.get("verify").is_none_or(|v| v != "false");
    c.repos.insert(name.clone(), repo.clone());
    if verify && let Err(e) = verify_repo(c, &name, &repo) {
        return e;
    }
    acknowledged()
}

/// `GET /_snapshot/{repo}`: its type and settings.
pub(super) fn get(c: &mut Cluster, call: &Call) -> Answer {
    let (name, r) = match lookup(c, call) {
        Ok(x) => x,
        Err(e) => return e,
    };
    let mut settings = json!({ "bucket": r.bucket, "base_path": r.base_path });
    if r.readonly {
        settings["readonly"] = json!("true");
    }
    json_answer(
        StatusCode::OK,
        &json!({ name: { "type": "s3", "settings": settings } }),
    )
}

/// `POST /_snapshot/{repo}/_verify`: the nodes that could write to it.
pub(super) fn verify(c: &mut Cluster, call: &Call) -> Answer {
    let (name, r) = match lookup(c, call) {
        Ok((n, r)) => (n, r.clone()),
        Err(e) => return e,
    };
    if let Err(e) = verify_repo(c, &name, &r) {
        return e;
    }
    let nodes: serde_json::Map<String, Value> = c
        .nodes
        .iter()
        .map(|n| (node_id(n), json!({ "name": n })))
        .collect();
    json_answer(StatusCode::OK, &json!({ "nodes": nodes }))
}

/// `BlobStoreRepository.startVerification`: the master writes
/// `tests-{seed}/master.dat`, every node its `data-{node id}.dat`, then the
/// folder goes. A write S3 refuses is `RepositoryVerificationException`
/// "[repo] path [base] is not accessible on master node", a 500, caused by
/// "Unable to upload object [...] using a single upload" and S3's error.
fn verify_repo(c: &Cluster, name: &str, r: &Repo) -> Result<(), Answer> {
    let seed = uuid::Uuid::new_v4().simple().to_string();
    let master = r.key(&format!("tests-{seed}/master.dat"));
    let refused = |key: &str, e: &S3Error| {
        es_error_caused(
            StatusCode::INTERNAL_SERVER_ERROR,
            "repository_verification_exception",
            &format!(
                "[{name}] path {} is not accessible on master node",
                r.printed_path()
            ),
            "i_o_exception",
            &format!(
                "Unable to upload object [{key}] using a single upload: {}",
                e.aws_text()
            ),
        )
    };
    let s3 = s3_of(c).map_err(|e| refused(&master, &e))?;
    s3.put(&r.bucket, &master, seed.as_bytes())
        .map_err(|e| refused(&master, &e))?;
    let mut written = vec![master];
    for n in &c.nodes {
        let key = r.key(&format!("tests-{seed}/data-{}.dat", node_id(n)));
        s3.put(&r.bucket, &key, seed.as_bytes())
            .map_err(|e| refused(&key, &e))?;
        written.push(key);
    }
    for key in written {
        let _ = s3.delete(&r.bucket, &key);
    }
    Ok(())
}

/// Whether the query says to wait (`wait_for_completion`).
pub(super) fn waits(call: &Call) -> bool {
    flag(&call.query, "wait_for_completion")
}
