//! Documents, as far as a test needs them to prove data survives a snapshot
//! and a restore: index one (`PUT /{index}/_doc/{id}`, `POST /{index}/_doc`)
//! and count them (`GET /{index}/_count`). The source itself is not kept.

use hyper::StatusCode;
use serde_json::json;

use super::IndexDef;
use super::answer::{Answer, es_error, json_answer, json_body};
use super::cluster::Cluster;
use super::routes::Call;

/// `MetadataCreateIndexService.validateIndexOrAliasName` and
/// `validateIndexName`: lowercase, none of `\ / * ? " < > | , # :` or a
/// space, not starting with `_`, `-` or `+`, not `.` or `..`
/// (elastic/elasticsearch `server/.../cluster/metadata/MetadataCreateIndexService.java`).
pub(super) fn invalid_index_name(name: &str) -> Option<String> {
    let why = if name.chars().any(|ch| "\\/*?\"<>|,# :".contains(ch)) {
        "must not contain the following characters [ , \", *, \\, <, |, ,, >, /, ?, #, :]"
    } else if name.starts_with(['_', '-', '+']) {
        "must not start with '_', '-', or '+'"
    } else if name.to_lowercase() != name {
        "must be lowercase"
    } else if name == "." || name == ".." {
        "must not be '.' or '..'"
    } else {
        return None;
    };
    Some(format!("Invalid index name [{name}], {why}"))
}

/// 404 `index_not_found_exception` (`IndexNotFoundException`), as a search
/// or count of an index that is not there answers.
pub(super) fn index_not_found(index: &str) -> Answer {
    es_error(
        StatusCode::NOT_FOUND,
        "index_not_found_exception",
        &format!("no such index [{index}]"),
    )
}

/// The `{index}` segment of the call's path.
fn index_of(call: &Call) -> &str {
    call.path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
}

/// `PUT /{index}/_doc/{id}` and `POST /{index}/_doc` (id generated): the
/// index is created on first write (`action.auto_create_index` defaults to
/// true) with one primary and one replica, Elasticsearch's defaults. 201
/// `created`, or 200 `updated` when the id was there.
pub(super) fn index(c: &mut Cluster, call: &Call) -> Answer {
    let name = index_of(call).to_string();
    if let Some(why) = invalid_index_name(&name) {
        return es_error(
            StatusCode::BAD_REQUEST,
            "invalid_index_name_exception",
            &why,
        );
    }
    if let Err(refused) = json_body(call.content_type.as_deref(), &call.body) {
        return refused;
    }
    let id = match call.path.trim_start_matches('/').split('/').nth(2) {
        Some(id) => id.to_string(),
        None => uuid::Uuid::new_v4().simple().to_string()[..20].to_string(),
    };
    if !c.has_index(&name) {
        c.add_index(IndexDef::new(&name, 1, 1));
    }
    let ids = c.docs.entry(name.clone()).or_default();
    let created = ids.insert(id.clone());
    let seq_no = ids.len() - 1;
    json_answer(
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        &json!({
            "_index": name,
            "_id": id,
            "_version": 1,
            "result": if created { "created" } else { "updated" },
            "_shards": { "total": 2, "successful": 1, "failed": 0 },
            "_seq_no": seq_no,
            "_primary_term": 1,
        }),
    )
}

/// `GET /{index}/_count`: the documents in the index.
pub(super) fn count(c: &mut Cluster, call: &Call) -> Answer {
    let name = index_of(call);
    let Some(def) = c.indices.iter().find(|i| i.name == name) else {
        return index_not_found(name);
    };
    let count = c.docs.get(name).map_or(0, |ids| ids.len());
    json_answer(
        StatusCode::OK,
        &json!({
            "count": count,
            "_shards": {
                "total": def.primaries,
                "successful": def.primaries,
                "skipped": 0,
                "failed": 0,
            },
        }),
    )
}
