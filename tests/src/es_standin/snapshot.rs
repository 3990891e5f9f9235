//! Snapshots in an `s3` repository: create (`PUT|POST
//! /_snapshot/{repo}/{snap}`), get (`GET /_snapshot/{repo}/{snap}`, `_all`,
//! `*` or a comma list), delete (`DELETE /_snapshot/{repo}/{snap}`) and
//! restore (`POST /_snapshot/{repo}/{snap}/_restore`, with `indices` and
//! `rename_pattern`/`rename_replacement`). Reference: "Create snapshot API",
//! "Get snapshot API", "Delete snapshot API", "Restore snapshot API" in the
//! Elasticsearch reference (www.elastic.co/guide/en/elasticsearch/reference/8.17/).
//!
//! A snapshot completes as soon as it is asked for; its documents are the
//! ids of each index's documents, written to S3 in `snap-{uuid}.dat`, and the
//! list of snapshots in `index-N` (with `index.latest`), so what a cluster
//! restores comes from the bucket, not from the stand-in's memory.

use hyper::StatusCode;
use serde_json::{Value, json};

use super::IndexDef;
use super::answer::{Answer, es_error, es_error_caused, json_answer, json_body};
use super::cluster::{Cluster, DEFAULT_VERSION};
use super::docs::index_not_found;
use super::repository::{Repo, lookup, s3_of, waits};
use super::routes::Call;
use super::s3::S3;

/// The `{snap}` segment of `/_snapshot/{repo}/{snap}`.
fn snap_name(call: &Call) -> &str {
    call.path.split('/').nth(3).unwrap_or_default()
}

/// `SnapshotsService.validate`: 400 `invalid_snapshot_name_exception`.
fn invalid_name(repo: &str, snap: &str) -> Option<Answer> {
    let why = if snap.is_empty() {
        "cannot be empty"
    } else if snap.contains('#') {
        "must not contain '#'"
    } else if snap.starts_with('_') {
        "must not start with '_'"
    } else if snap.to_lowercase() != snap {
        "must be lowercase"
    } else if snap.chars().any(|ch| "\\/*?\"<>|, ".contains(ch)) {
        "must not contain the following characters [ , \", *, \\, <, |, ,, >, /, ?]"
    } else {
        return None;
    };
    Some(invalid(repo, snap, why))
}

fn invalid(repo: &str, snap: &str, why: &str) -> Answer {
    es_error(
        StatusCode::BAD_REQUEST,
        "invalid_snapshot_name_exception",
        &format!("[{repo}:{snap}] Invalid snapshot name [{snap}], {why}"),
    )
}

/// 404 `snapshot_missing_exception` (`SnapshotMissingException`).
fn missing(repo: &str, snap: &str) -> Answer {
    es_error(
        StatusCode::NOT_FOUND,
        "snapshot_missing_exception",
        &format!("[{repo}:{snap}] is missing"),
    )
}

/// The repository's list of snapshots (`index-N`, N from `index.latest`),
/// with N (-1: an empty repository). What S3 refuses is
/// `BlobStoreRepository`'s "could not read repository data from index
/// blob", a 500 `repository_exception`.
fn read_data(s3: &S3, name: &str, r: &Repo) -> Result<(i64, Vec<Value>), Answer> {
    let refused = |why: String| {
        es_error_caused(
            StatusCode::INTERNAL_SERVER_ERROR,
            "repository_exception",
            &format!("[{name}] could not read repository data from index blob"),
            "i_o_exception",
            &why,
        )
    };
    let Some(latest) = s3
        .get(&r.bucket, &r.key("index.latest"))
        .map_err(|e| refused(e.aws_text()))?
    else {
        return Ok((-1, Vec::new()));
    };
    let generation: i64 = String::from_utf8_lossy(&latest)
        .trim()
        .parse()
        .map_err(|_| refused("index.latest is not a generation".into()))?;
    let blob = s3
        .get(&r.bucket, &r.key(&format!("index-{generation}")))
        .map_err(|e| refused(e.aws_text()))?
        .ok_or_else(|| refused(format!("index-{generation} is missing")))?;
    let data: Value = serde_json::from_slice(&blob).map_err(|e| refused(e.to_string()))?;
    let snaps = data
        .get("snapshots")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    Ok((generation, snaps))
}

/// Writes generation `generation + 1` of the list of snapshots, then points
/// `index.latest` at it.
fn write_data(
    s3: &S3,
    name: &str,
    r: &Repo,
    generation: i64,
    snaps: &[Value],
) -> Result<(), Answer> {
    let next = generation + 1;
    let body = json!({ "snapshots": snaps }).to_string();
    s3.put(&r.bucket, &r.key(&format!("index-{next}")), body.as_bytes())
        .and_then(|()| {
            s3.put(
                &r.bucket,
                &r.key("index.latest"),
                next.to_string().as_bytes(),
            )
        })
        .map_err(|e| {
            es_error_caused(
                StatusCode::INTERNAL_SERVER_ERROR,
                "repository_exception",
                &format!("[{name}] failed to update snapshot in repository"),
                "i_o_exception",
                &e.aws_text(),
            )
        })
}

/// The index names of an `indices` value (a comma list or an array; `*`,
/// `_all` or none: every index), against `known`; a name not there is 404.
fn select(v: Option<&Value>, known: &[String]) -> Result<Vec<String>, Answer> {
    let wanted: Vec<String> = match v {
        None => Vec::new(),
        Some(Value::String(s)) => s.split(',').map(|p| p.trim().to_string()).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(_) => Vec::new(),
    };
    let wanted: Vec<String> = wanted.into_iter().filter(|w| !w.is_empty()).collect();
    if wanted.is_empty() || wanted.iter().any(|w| w == "*" || w == "_all") {
        return Ok(known.to_vec());
    }
    let mut out = Vec::new();
    for w in wanted {
        if let Some(prefix) = w.strip_suffix('*') {
            out.extend(known.iter().filter(|k| k.starts_with(prefix)).cloned());
        } else if known.contains(&w) {
            out.push(w);
        } else {
            return Err(index_not_found(&w));
        }
    }
    out.dedup();
    Ok(out)
}

fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn iso(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A snapshot as the get and create APIs print it (`SnapshotInfo`).
fn info(repo: &str, s: &Value) -> Value {
    let start = s["start_time_in_millis"].as_i64().unwrap_or_default();
    let end = s["end_time_in_millis"].as_i64().unwrap_or_default();
    let shards = s["shards"].as_u64().unwrap_or_default();
    json!({
        "snapshot": s["name"],
        "uuid": s["uuid"],
        "repository": repo,
        "version_id": 8_17_10_99,
        "version": DEFAULT_VERSION,
        "indices": s["indices"],
        "data_streams": [],
        "include_global_state": true,
        "state": "SUCCESS",
        "start_time": iso(start),
        "start_time_in_millis": start,
        "end_time": iso(end),
        "end_time_in_millis": end,
        "duration_in_millis": end - start,
        "failures": [],
        "shards": { "total": shards, "failed": 0, "successful": shards },
    })
}

/// `PUT|POST /_snapshot/{repo}/{snap}`: `wait_for_completion` answers the
/// snapshot, otherwise `{"accepted": true}`; the snapshot is done either way.
pub(super) fn create(c: &mut Cluster, call: &Call) -> Answer {
    let (repo, r) = match lookup(c, call) {
        Ok((n, r)) => (n, r.clone()),
        Err(e) => return e,
    };
    let snap = snap_name(call).to_string();
    if let Some(e) = invalid_name(&repo, &snap) {
        return e;
    }
    // BlobStoreRepository.finalizeSnapshot on a read-only repository.
    if r.readonly {
        return es_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "repository_exception",
            &format!("[{repo}] cannot create snapshot in a readonly repository"),
        );
    }
    let body = if call.body.is_empty() {
        json!({})
    } else {
        match json_body(call.content_type.as_deref(), &call.body) {
            Ok(b) => b,
            Err(refused) => return refused,
        }
    };
    let known: Vec<String> = c.indices.iter().map(|i| i.name.clone()).collect();
    let indices = match select(body.get("indices"), &known) {
        Ok(i) => i,
        Err(e) => return e,
    };
    let s3 = match s3_of(c) {
        Ok(s) => s,
        Err(e) => return read_data_error(&repo, &e.aws_text()),
    };
    let (generation, mut snaps) = match read_data(&s3, &repo, &r) {
        Ok(d) => d,
        Err(e) => return e,
    };
    if snaps.iter().any(|s| s["name"] == snap.as_str()) {
        return invalid(&repo, &snap, "snapshot with the same name already exists");
    }
    let uuid = uuid::Uuid::new_v4().simple().to_string()[..22].to_string();
    let start = now_millis();
    let contents: serde_json::Map<String, Value> = c
        .indices
        .iter()
        .filter(|i| indices.contains(&i.name))
        .map(|i| {
            let ids: Vec<&String> = c
                .docs
                .get(&i.name)
                .map(|d| d.iter().collect())
                .unwrap_or_default();
            (
                i.name.clone(),
                json!({ "primaries": i.primaries, "replicas": i.replicas, "ids": ids }),
            )
        })
        .collect();
    let shards: u32 = c
        .indices
        .iter()
        .filter(|i| indices.contains(&i.name))
        .map(|i| i.primaries)
        .sum();
    let blob = json!({ "name": snap, "uuid": uuid, "indices": contents }).to_string();
    if let Err(e) = s3.put(
        &r.bucket,
        &r.key(&format!("snap-{uuid}.dat")),
        blob.as_bytes(),
    ) {
        return es_error_caused(
            StatusCode::INTERNAL_SERVER_ERROR,
            "snapshot_exception",
            &format!("[{repo}:{snap}/{uuid}] failed to write snapshot"),
            "i_o_exception",
            &e.aws_text(),
        );
    }
    let entry = json!({
        "name": snap,
        "uuid": uuid,
        "indices": indices,
        "shards": shards,
        "start_time_in_millis": start,
        "end_time_in_millis": now_millis(),
    });
    snaps.push(entry.clone());
    if let Err(e) = write_data(&s3, &repo, &r, generation, &snaps) {
        return e;
    }
    if waits(call) {
        json_answer(StatusCode::OK, &json!({ "snapshot": info(&repo, &entry) }))
    } else {
        json_answer(StatusCode::OK, &json!({ "accepted": true }))
    }
}

fn read_data_error(repo: &str, why: &str) -> Answer {
    es_error_caused(
        StatusCode::INTERNAL_SERVER_ERROR,
        "repository_exception",
        &format!("[{repo}] could not read repository data from index blob"),
        "i_o_exception",
        why,
    )
}

/// The repository, its S3 client and its snapshots, or the refusal.
fn load(c: &Cluster, call: &Call) -> Result<(String, Repo, S3, i64, Vec<Value>), Answer> {
    let (repo, r) = lookup(c, call).map(|(n, r)| (n, r.clone()))?;
    let s3 = s3_of(c).map_err(|e| read_data_error(&repo, &e.aws_text()))?;
    let (generation, snaps) = read_data(&s3, &repo, &r)?;
    Ok((repo, r, s3, generation, snaps))
}

/// `GET /_snapshot/{repo}/{snap}` (`_all`, `*`, or names with commas): a
/// name that is not there is 404, unless `ignore_unavailable`.
pub(super) fn get(c: &mut Cluster, call: &Call) -> Answer {
    let (repo, _, _, _, snaps) = match load(c, call) {
        Ok(x) => x,
        Err(e) => return e,
    };
    let wanted = snap_name(call);
    let chosen: Vec<Value> = if wanted == "_all" || wanted == "*" {
        snaps.iter().map(|s| info(&repo, s)).collect()
    } else {
        let mut out = Vec::new();
        for w in wanted.split(',') {
            match snaps.iter().find(|s| s["name"] == w) {
                Some(s) => out.push(info(&repo, s)),
                None if super::answer::flag(&call.query, "ignore_unavailable") => {}
                None => return missing(&repo, w),
            }
        }
        out
    };
    let total = chosen.len();
    json_answer(
        StatusCode::OK,
        &json!({ "snapshots": chosen, "total": total, "remaining": 0 }),
    )
}

/// `DELETE /_snapshot/{repo}/{snap}`.
pub(super) fn delete(c: &mut Cluster, call: &Call) -> Answer {
    let (repo, r, s3, generation, mut snaps) = match load(c, call) {
        Ok(x) => x,
        Err(e) => return e,
    };
    let snap = snap_name(call);
    let Some(pos) = snaps.iter().position(|s| s["name"] == snap) else {
        return missing(&repo, snap);
    };
    let gone = snaps.remove(pos);
    if let Err(e) = write_data(&s3, &repo, &r, generation, &snaps) {
        return e;
    }
    if let Some(uuid) = gone["uuid"].as_str() {
        let _ = s3.delete(&r.bucket, &r.key(&format!("snap-{uuid}.dat")));
    }
    super::answer::acknowledged()
}

/// `POST /_snapshot/{repo}/{snap}/_restore`: the chosen indices (all by
/// default), renamed by `rename_pattern`/`rename_replacement` (a Java
/// regex; `$1` references work alike). An open index of the name a
/// restored one gets is `RestoreService.validateExistingIndex`'s 500
/// `snapshot_restore_exception`.
pub(super) fn restore(c: &mut Cluster, call: &Call) -> Answer {
    let (repo, r, s3, _, snaps) = match load(c, call) {
        Ok(x) => x,
        Err(e) => return e,
    };
    let snap = snap_name(call).to_string();
    let Some(entry) = snaps.iter().find(|s| s["name"] == snap.as_str()) else {
        return missing(&repo, &snap);
    };
    let uuid = entry["uuid"].as_str().unwrap_or_default().to_string();
    let body = if call.body.is_empty() {
        json!({})
    } else {
        match json_body(call.content_type.as_deref(), &call.body) {
            Ok(b) => b,
            Err(refused) => return refused,
        }
    };
    let blob = match s3.get(&r.bucket, &r.key(&format!("snap-{uuid}.dat"))) {
        Ok(Some(b)) => b,
        Ok(None) => return missing(&repo, &snap),
        Err(e) => return read_data_error(&repo, &e.aws_text()),
    };
    let contents: Value = serde_json::from_slice(&blob).unwrap_or(json!({}));
    let in_snapshot: Vec<String> = contents["indices"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let chosen = match select(body.get("indices"), &in_snapshot) {
        Ok(i) => i,
        Err(e) => return e,
    };
    let rename = match (
        body.get("rename_pattern").and_then(Value::as_str),
        body.get("rename_replacement").and_then(Value::as_str),
    ) {
        (Some(p), Some(to)) => match regex::Regex::new(p) {
            Ok(re) => Some((re, to.to_string())),
            Err(e) => {
                return es_error(
                    StatusCode::BAD_REQUEST,
                    "illegal_argument_exception",
                    &format!("failed to parse rename_pattern [{p}]: {e}"),
                );
            }
        },
        _ => None,
    };
    let renamed: Vec<(String, String)> = chosen
        .iter()
        .map(|i| {
            let to = match &rename {
                Some((re, to)) => re.replace_all(i, to.as_str()).to_string(),
                None => i.clone(),
            };
            (i.clone(), to)
        })
        .collect();
    if let Some((_, to)) = renamed.iter().find(|(_, to)| c.has_index(to)) {
        return es_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "snapshot_restore_exception",
            &format!(
                "[{repo}:{snap}/{uuid}] cannot restore index [{to}] because an open index with same name already exists in the cluster. Either close or delete the existing index or restore the index under a different name by providing a rename pattern and replacement name"
            ),
        );
    }
    let mut shards = 0;
    for (from, to) in &renamed {
        let def = &contents["indices"][from];
        let primaries = def["primaries"].as_u64().unwrap_or(1) as u32;
        let replicas = def["replicas"].as_u64().unwrap_or(1) as u32;
        shards += primaries;
        c.add_index(IndexDef::new(to, primaries, replicas));
        c.restored_from.insert(
            to.clone(),
            (repo.to_string(), snap.to_string(), from.clone()),
        );
        let ids = def["ids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        c.docs.insert(to.clone(), ids);
    }
    if waits(call) {
        let names: Vec<&String> = renamed.iter().map(|(_, to)| to).collect();
        json_answer(
            StatusCode::OK,
            &json!({ "snapshot": {
                "snapshot": snap,
                "indices": names,
                "shards": { "total": shards, "failed": 0, "successful": shards },
            } }),
        )
    } else {
        json_answer(StatusCode::OK, &json!({ "accepted": true }))
    }
}

/// `GET /{index}/_recovery` (comma list): each index's shard recoveries,
/// as `RecoveryState` prints them. A primary restored from a snapshot is
/// type `SNAPSHOT` with its source (repository, snapshot, index); one
/// created by a write is `EMPTY_STORE`; replicas recover from their primary
/// (`PEER`). Reference: "Index recovery API" in the Elasticsearch reference.
/// An index that is not there is 404 `index_not_found_exception`.
pub(super) fn recovery(c: &mut Cluster, call: &Call) -> Answer {
    let list = call
        .path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let mut out = serde_json::Map::new();
    for name in list.split(',').filter(|n| !n.is_empty()) {
        let Some(def) = c.indices.iter().find(|i| i.name == name) else {
            return super::docs::index_not_found(name);
        };
        let primary = match c.restored_from.get(name) {
            Some((repo, snap, index)) => json!({
                "type": "SNAPSHOT",
                "stage": "DONE",
                "primary": true,
                "source": { "repository": repo, "snapshot": snap, "index": index },
            }),
            None => {
                json!({ "type": "EMPTY_STORE", "stage": "DONE", "primary": true, "source": {} })
            }
        };
        let shards: Vec<Value> = (0..def.primaries)
            .map(|id| {
                let mut p = primary.clone();
                p["id"] = json!(id);
                p
            })
            .collect();
        out.insert(name.to_string(), json!({ "shards": shards }));
    }
    json_answer(StatusCode::OK, &Value::Object(out))
}
