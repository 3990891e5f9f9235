//! What commands print: tables for people, JSON or YAML for scripts. JSON is the
//! proto3 JSON mapping (what grpcurl prints: camelCase names, enums by name,
//! RFC 3339 times), with every field present so that `jq .status.state` always
//! finds one, and 64-bit integers as numbers.

use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow};
use comfy_table::{Table, presets};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};

/// stdout was closed by its reader (`esaasctl ... | head`): the command stops quietly.
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Writes `text` and a newline to stdout; [`StdoutClosed`] once the reader has gone.
pub fn say(text: impl std::fmt::Display) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        other => Ok(other?),
    }
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// JSON (proto3 mapping); lists are arrays, watches one object per line.
    Json,
    /// YAML of the same document.
    Yaml,
}

fn pool() -> Result<&'static DescriptorPool> {
    static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(esaas_client::FILE_DESCRIPTOR_SET).map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| anyhow!("the API's descriptors: {e}"))
}

/// `msg`, of the proto message type `full_name` (`esaas.v1.Cluster`), as JSON.
pub fn to_json<M: Message>(full_name: &str, msg: &M) -> Result<serde_json::Value> {
    let desc = pool()?
        .get_message_by_name(full_name)
        .ok_or_else(|| anyhow!("no message {full_name} in the API"))?;
    let dynamic = DynamicMessage::decode(desc, msg.encode_to_vec().as_slice())
        .with_context(|| format!("re-reading a {full_name}"))?;
    let options = SerializeOptions::new()
        .skip_default_fields(false)
        .stringify_64_bit_integers(false);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .with_context(|| format!("a {full_name} as JSON"))
}

/// A message of type `full_name` from JSON or YAML text (proto3 JSON mapping).
pub fn from_text<M: Message + Default>(full_name: &str, text: &str) -> Result<M> {
    let desc = pool()?
        .get_message_by_name(full_name)
        .ok_or_else(|| anyhow!("no message {full_name} in the API"))?;
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => serde_yaml::from_str(text).context("neither JSON nor YAML")?,
    };
    let dynamic =
        DynamicMessage::deserialize(desc, value).with_context(|| format!("not a {full_name}"))?;
    dynamic
        .transcode_to::<M>()
        .with_context(|| format!("not a {full_name}"))
}

/// Prints a JSON document in `format` (which is not `Table`).
pub fn print_document(format: Format, doc: &serde_json::Value) -> Result<()> {
    match format {
        Format::Yaml => say(serde_yaml::to_string(doc)?.trim_end()),
        _ => say(serde_json::to_string_pretty(doc)?),
    }
}

/// Prints one message: `table` for people, the message itself otherwise.
pub fn print_one<M: Message>(
    format: Format,
    full_name: &str,
    msg: &M,
    table: impl FnOnce(&M) -> String,
) -> Result<()> {
    match format {
        Format::Table => say(table(msg)),
        _ => print_document(format, &to_json(full_name, msg)?),
    }
}

/// Prints a list: one row per item for people, an array of messages otherwise.
pub fn print_list<M: Message>(
    format: Format,
    full_name: &str,
    items: &[M],
    headers: &[&str],
    row: impl Fn(&M) -> Vec<String>,
) -> Result<()> {
    match format {
        Format::Table => say(table(headers, items.iter().map(row))),
        _ => {
            let docs = items
                .iter()
                .map(|m| to_json(full_name, m))
                .collect::<Result<Vec<_>>>()?;
            print_document(format, &serde_json::Value::Array(docs))
        }
    }
}

/// Columns without borders, as kubectl prints them.
pub fn table(headers: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    t.set_header(headers.iter().copied());
    for r in rows {
        t.add_row(r);
    }
    // comfy-table pads the first column with a leading space; people read from the margin.
    t.to_string()
        .lines()
        .map(|l| l.strip_prefix(' ').unwrap_or(l).trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Key-value lines, aligned.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{k:<width$}  {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// An enum's name without its type prefix (`CLUSTER_STATE_READY` -> `READY`).
pub fn short(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix).unwrap_or(name).to_string()
}

/// A wire time, in UTC to the second; `-` when unset.
pub fn time(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

/// Seconds between two wire times, as `1.2s` or `3m04s`.
pub fn elapsed(
    from: Option<&prost_types::Timestamp>,
    to: Option<&prost_types::Timestamp>,
) -> Option<String> {
    let (from, to) = (from?, to?);
    let ms = (to.seconds - from.seconds) * 1000 + i64::from(to.nanos - from.nanos) / 1_000_000;
    Some(human_ms(ms.max(0)))
}

/// Milliseconds for people.
pub fn human_ms(ms: i64) -> String {
    if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use esaas_client::v1;

    #[test]
    fn json_is_the_proto3_mapping_with_every_field() {
        let c = v1::Cluster {
            name: "tenants/a/clusters/logs".into(),
            generation: 3,
            status: Some(v1::ClusterStatus {
                state: v1::ClusterState::Ready as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        let j = to_json("esaas.v1.Cluster", &c).unwrap();
        assert_eq!(j["name"], "tenants/a/clusters/logs");
        assert_eq!(j["generation"], 3);
        assert_eq!(j["status"]["state"], "CLUSTER_STATE_READY");
        assert_eq!(j["etag"], "", "defaults are present");
    }

    #[test]
    fn specs_read_from_json_and_yaml() {
        let yaml = "version: 8.17.10\nnodeSets:\n- name: default\n  roles: [NODE_ROLE_MASTER, NODE_ROLE_DATA]\n  count: 3\n  sizeClass: small\n  storageGib: 100\n";
        let s: v1::ClusterSpec = from_text("esaas.v1.ClusterSpec", yaml).unwrap();
        assert_eq!(s.node_sets[0].count, 3);
        assert_eq!(
            s.node_sets[0].roles().collect::<Vec<_>>(),
            [v1::NodeRole::Master, v1::NodeRole::Data]
        );
        let json = r#"{"version": "8.17.10", "node_sets": [{"name": "d", "count": 1}]}"#;
        let s: v1::ClusterSpec = from_text("esaas.v1.ClusterSpec", json).unwrap();
        assert_eq!(s.node_sets[0].name, "d");
        assert!(from_text::<v1::ClusterSpec>("esaas.v1.ClusterSpec", "{\"nope\": 1}").is_err());
    }

    #[test]
    fn tables_start_at_the_margin() {
        let t = table(
            &["NAME", "STATE"],
            [vec!["logs".to_string(), "READY".to_string()]],
        );
        assert!(t.starts_with("NAME"), "{t:?}");
        assert!(t.lines().nth(1).unwrap().starts_with("logs"), "{t:?}");
    }
}
