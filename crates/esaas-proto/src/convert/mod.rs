//! Conversions between the wire types (`esaas_proto::v1`) and the domain,
//! all of them: parsing a request is where input errors are found, and each
//! names its field. Handlers, workers and tests call these; nobody else
//! converts.

mod admin;
mod catalog;
mod cluster;
mod maintenance;
mod operation;
mod snapshots;
mod spec;
mod worker;

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

pub use admin::*;
pub use catalog::*;
pub use cluster::*;
pub use maintenance::*;
pub use operation::*;
pub use snapshots::*;
pub use spec::*;
pub use worker::*;

/// A wire timestamp.
pub fn ts(t: DateTime<Utc>) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    })
}

/// An optional wire timestamp.
pub fn ots(t: Option<DateTime<Utc>>) -> Option<Timestamp> {
    t.and_then(ts)
}

/// A protobuf `Struct` as JSON.
pub fn struct_to_json(s: &prost_types::Struct) -> serde_json::Value {
    serde_json::Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect(),
    )
}

fn value_to_json(v: &prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        // A Struct holds every number as a double; a whole one within
        // the doubles' exact range comes back as an integer, so that it
        // reads back into the integer field it was written from.
        Some(Kind::NumberValue(n)) if n.fract() == 0.0 && n.abs() <= 9_007_199_254_740_992.0 => {
            serde_json::Value::Number(serde_json::Number::from(*n as i64))
        }
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(*n)
            .map(serde_json::Value::Number)
            .unwrap_or_default(),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::StructValue(s)) => struct_to_json(s),
        Some(Kind::ListValue(l)) => {
            serde_json::Value::Array(l.values.iter().map(value_to_json).collect())
        }
    }
}

/// JSON as a protobuf `Struct` (a non-object becomes `{"value": ...}`).
pub fn json_to_struct(v: &serde_json::Value) -> prost_types::Struct {
    match v {
        serde_json::Value::Object(m) => prost_types::Struct {
            fields: m
                .iter()
                .map(|(k, v)| (k.clone(), json_to_value(v)))
                .collect(),
        },
        other => prost_types::Struct {
            fields: [("value".to_string(), json_to_value(other))]
                .into_iter()
                .collect(),
        },
    }
}

fn json_to_value(v: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        serde_json::Value::Object(_) => Kind::StructValue(json_to_struct(v)),
    };
    prost_types::Value { kind: Some(kind) }
}

#[cfg(test)]
mod struct_tests {
    use super::*;

    #[test]
    fn whole_numbers_come_back_as_integers() {
        let v = serde_json::json!({"n": 3, "big": 9_007_199_254_740_992_i64, "half": 0.5, "neg": -7, "list": [1, 2.5]});
        let back = struct_to_json(&json_to_struct(&v));
        assert_eq!(back, v);
        let n: i32 = serde_json::from_value(back["n"].clone()).expect("an i32");
        assert_eq!(n, 3);
    }

    #[test]
    fn observation_facts_cross_the_wire_whole() {
        use esaas_core::lifecycle::observe::Facts;
        use esaas_core::plan::{NodeGroupObs, NodeGroupStatus};
        let facts = Facts {
            generation: 4,
            node_groups: Ok([(
                "data".to_string(),
                NodeGroupObs {
                    instance_type: "r6i.large".into(),
                    desired_size: 3,
                    status: NodeGroupStatus::Active,
                    message: String::new(),
                    zones: Default::default(),
                },
            )]
            .into_iter()
            .collect()),
            workloads: Err("KUBE_FORBIDDEN: no".into()),
            health: Ok(None),
        };
        let wire = json_to_struct(&serde_json::to_value(&facts).expect("json"));
        let back: Facts = serde_json::from_value(struct_to_json(&wire)).expect("parses");
        assert_eq!(back, facts);
    }
}
