//! The cluster settings the stand-in knows, and the values Elasticsearch
//! takes for them.
//!
//! `PUT /_cluster/settings` refuses any other key as Elasticsearch refuses
//! one it does not know: `AbstractScopedSettings.updateSettings` (called by
//! `ClusterSettings.updateDynamicSettings`, transient before persistent)
//! throws `IllegalArgumentException("{scope} setting [{key}], not
//! recognized")`, a 400 `illegal_argument_exception`
//! (elastic/elasticsearch
//! `server/src/main/java/org/elasticsearch/common/settings/AbstractScopedSettings.java`).
//! Elasticsearch knows hundreds more; a setting missing here is refused in
//! those words too, so it is added here, with its upstream declaration,
//! before the product sets it. Every setting here is dynamic.

use serde_json::Value;

/// `cluster.routing.allocation.exclude.{attribute}`: nodes whose attribute
/// matches one of the values hold no shards.
pub(super) const EXCLUDE: &str = "cluster.routing.allocation.exclude.";

/// `cluster.routing.allocation.enable`: which shards may be allocated.
pub(super) const ENABLE: &str = "cluster.routing.allocation.enable";

/// `cluster.max_voting_config_exclusions`: how many voting configuration
/// exclusions there may be at once.
pub(super) const MAX_VOTING_CONFIG_EXCLUSIONS: &str = "cluster.max_voting_config_exclusions";

/// How a key is matched.
enum Key {
    Exact(&'static str),
    /// Elasticsearch's `Setting.prefixKeySetting`: the prefix, then
    /// dot-separated segments of `[-\w]+` (`Setting.AffixKey`'s pattern
    /// `prefix((?:[-\w]+[.])*[-\w]+$)`).
    Prefix(&'static str),
}

/// What values a setting takes.
enum Kind {
    /// `Setting.stringListSetting`: a string (comma-separated) or an array.
    /// `_ip`, `_host_ip` and `_publish_ip` values must be IP addresses or
    /// patterns (`DiscoveryNodeFilters.validateIpValue`).
    NodeFilter,
    /// `Setting<EnableAllocationDecider.Allocation>`: one string.
    Allocation,
    /// `Setting.intSetting` with a minimum: `Setting.parseInt` refuses a
    /// value below it ("Failed to parse value [{v}] for setting [{key}] must
    /// be >= {min}") and what is not an integer (Java's `NumberFormatException`).
    Int { min: i64 },
}

struct Known {
    key: Key,
    kind: Kind,
}

const KNOWN: &[Known] = &[
    // FilterAllocationDecider.CLUSTER_ROUTING_EXCLUDE_GROUP_SETTING
    // (server/.../cluster/routing/allocation/decider/FilterAllocationDecider.java):
    // any attribute is valid, `_name`, `_ip`, `_host`, `_id` and custom ones
    // alike, so a misspelt attribute (`exclude._nmae`) is accepted and
    // matches no node.
    Known {
        key: Key::Prefix(EXCLUDE),
        kind: Kind::NodeFilter,
    },
    // EnableAllocationDecider.CLUSTER_ROUTING_ALLOCATION_ENABLE_SETTING
    // (server/.../cluster/routing/allocation/decider/EnableAllocationDecider.java).
    Known {
        key: Key::Exact(ENABLE),
        kind: Kind::Allocation,
    },
    // TransportAddVotingConfigExclusionsAction.MAXIMUM_VOTING_CONFIG_EXCLUSIONS_SETTING
    // (server/.../action/admin/cluster/configuration/TransportAddVotingConfigExclusionsAction.java):
    // 10 by default, at least 1.
    Known {
        key: Key::Exact(MAX_VOTING_CONFIG_EXCLUSIONS),
        kind: Kind::Int { min: 1 },
    },
];

/// `cluster.routing.allocation.enable`, as `EnableAllocationDecider.Allocation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Allocation {
    /// Every shard (the default).
    All,
    /// Primaries only.
    Primaries,
    /// Primaries of new indices only.
    NewPrimaries,
    /// No shard.
    None,
}

impl Allocation {
    /// `Allocation.parse`: case-insensitive, else
    /// `Illegal allocation.enable value [{VALUE}]` (upper-cased, as it is there).
    pub(super) fn parse(v: &str) -> Result<Self, String> {
        match v.to_ascii_uppercase().as_str() {
            "ALL" => Ok(Self::All),
            "PRIMARIES" => Ok(Self::Primaries),
            "NEW_PRIMARIES" => Ok(Self::NewPrimaries),
            "NONE" => Ok(Self::None),
            upper => Err(format!("Illegal allocation.enable value [{upper}]")),
        }
    }
}

fn affix_suffix_ok(rest: &str) -> bool {
    !rest.is_empty()
        && rest.split('.').all(|seg| {
            !seg.is_empty()
                && seg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
}

fn lookup(key: &str) -> Option<&'static Known> {
    KNOWN.iter().find(|k| match k.key {
        Key::Exact(exact) => key == exact,
        Key::Prefix(prefix) => key.strip_prefix(prefix).is_some_and(affix_suffix_ok),
    })
}

/// Whether a key is a known setting.
pub(super) fn is_known(key: &str) -> bool {
    lookup(key).is_some()
}

/// Checks `value` (a string or an array of strings, as stored) for `key`
/// in `scope` (`persistent` or `transient`), with Elasticsearch's message
/// when it refuses it.
pub(super) fn validate(scope: &str, key: &str, value: &Value) -> Result<(), String> {
    let Some(known) = lookup(key) else {
        return Err(format!("{scope} setting [{key}], not recognized"));
    };
    match known.kind {
        Kind::NodeFilter => {
            let ip_key =
                key.ends_with("._ip") || key.ends_with("._host_ip") || key.ends_with("_publish_ip");
            if !ip_key {
                return Ok(());
            }
            for v in list_values(value) {
                if !v.contains('*') && v.parse::<std::net::IpAddr>().is_err() {
                    return Err(format!("invalid IP address [{v}] for [{key}]"));
                }
            }
            Ok(())
        }
        Kind::Allocation => match value {
            // `Settings.get` on a list value for a setting that is not one.
            Value::Array(_) => Err(format!(
                "Found list type value for setting [{key}] but but did not expect a list for it."
            )),
            v => Allocation::parse(v.as_str().unwrap_or_default()).map(|_| ()),
        },
        Kind::Int { min } => {
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            match text.trim().parse::<i64>() {
                Ok(n) if n >= min => Ok(()),
                Ok(_) => Err(format!(
                    "Failed to parse value [{text}] for setting [{key}] must be >= {min}"
                )),
                Err(_) => Err(format!("For input string: \"{text}\"")),
            }
        }
    }
}

/// The values of a list setting: a comma-separated string or an array,
/// trimmed, empty ones dropped (`DiscoveryNodeFilters.buildFromKeyValues`).
pub(super) fn list_values(v: &Value) -> Vec<String> {
    let items: Vec<&str> = match v {
        Value::String(s) => s.split(',').collect(),
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    items
        .into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn exclude_takes_any_attribute_and_nothing_else_is_known_by_prefix() {
        for ok in [
            "cluster.routing.allocation.exclude._name",
            "cluster.routing.allocation.exclude._ip",
            "cluster.routing.allocation.exclude._host",
            "cluster.routing.allocation.exclude._id",
            "cluster.routing.allocation.exclude.foo",
            "cluster.routing.allocation.exclude._nmae",
            "cluster.routing.allocation.exclude.rack.zone-1",
            ENABLE,
        ] {
            assert!(is_known(ok), "{ok}");
        }
        for unknown in [
            "cluster.routing.allocation.exclude.",
            "cluster.routing.allocation.exclude",
            "cluster.routing.allocation.exclude.a..b",
            "cluster.routing.allocation.exclude.a b",
            "cluster.routing.allocation.exclud._name",
            "cluster.routing.alocation.enable",
            "cluster.routing.allocation.enable.x",
        ] {
            assert!(!is_known(unknown), "{unknown}");
            assert_eq!(
                validate("persistent", unknown, &json!("x")),
                Err(format!("persistent setting [{unknown}], not recognized"))
            );
        }
    }

    #[test]
    fn values_are_checked_as_elasticsearch_checks_them() {
        assert_eq!(validate("transient", ENABLE, &json!("Primaries")), Ok(()));
        assert_eq!(
            validate("transient", ENABLE, &json!("sometimes")),
            Err("Illegal allocation.enable value [SOMETIMES]".into())
        );
        assert_eq!(
            validate("persistent", ENABLE, &json!(["all"])),
            Err(format!(
                "Found list type value for setting [{ENABLE}] but but did not expect a list for it."
            ))
        );
        let ip = "cluster.routing.allocation.exclude._ip";
        assert_eq!(
            validate("persistent", ip, &json!("10.0.0.1,10.0.0.*")),
            Ok(())
        );
        assert_eq!(
            validate("persistent", ip, &json!(["10.0.0.1", "pod-1"])),
            Err(format!("invalid IP address [pod-1] for [{ip}]"))
        );
        // A name is not an IP address, but `_name` takes any string.
        assert_eq!(
            validate(
                "persistent",
                "cluster.routing.allocation.exclude._name",
                &json!("pod-1")
            ),
            Ok(())
        );
    }
}
