//! OpAMP attribute values as text, and statuses by name.

use agentpkg_model::InstallStatus;
use std::collections::BTreeMap;

use crate::proto::{AnyValue, KeyValue, any_value};

/// A value as text: a string as it is, anything else as JSON.
pub(crate) fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        _ => json(value).to_string(),
    }
}

fn json(value: Option<&AnyValue>) -> serde_json::Value {
    use serde_json::Value;
    match value.and_then(|v| v.value.as_ref()) {
        None => Value::Null,
        Some(any_value::Value::StringValue(s)) => Value::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        Some(any_value::Value::IntValue(i)) => Value::from(*i),
        Some(any_value::Value::DoubleValue(d)) => Value::from(*d),
        Some(any_value::Value::BytesValue(b)) => Value::String(hex::encode(b)),
        Some(any_value::Value::ArrayValue(a)) => {
            Value::Array(a.values.iter().map(|v| json(Some(v))).collect())
        }
        Some(any_value::Value::KvlistValue(l)) => Value::Object(
            l.values
                .iter()
                .map(|kv| (kv.key.clone(), json(kv.value.as_ref())))
                .collect(),
        ),
    }
}

/// How many bytes a value takes on the wire (what a bound on attributes counts).
pub(crate) fn value_len(value: Option<&AnyValue>) -> usize {
    value.map_or(0, prost::Message::encoded_len)
}

/// Attributes by key (a repeated key: the last one).
pub(crate) fn map(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

/// A package status as OpAMP numbers it.
pub(crate) fn install_status(status: i32) -> InstallStatus {
    use crate::proto::PackageStatusEnum as S;
    match S::try_from(status) {
        Ok(S::Installed) => InstallStatus::Installed,
        Ok(S::InstallPending) => InstallStatus::InstallPending,
        Ok(S::Installing) => InstallStatus::Installing,
        Ok(S::InstallFailed) => InstallStatus::InstallFailed,
        Ok(S::Downloading) => InstallStatus::Downloading,
        Err(_) => InstallStatus::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{ArrayValue, KeyValueList};

    fn v(value: any_value::Value) -> Option<AnyValue> {
        Some(AnyValue { value: Some(value) })
    }

    #[test]
    fn values_become_text() {
        assert_eq!(
            text(v(any_value::Value::StringValue("otelcol".into())).as_ref()),
            "otelcol"
        );
        assert_eq!(text(v(any_value::Value::IntValue(-3)).as_ref()), "-3");
        assert_eq!(text(v(any_value::Value::BoolValue(true)).as_ref()), "true");
        assert_eq!(
            text(v(any_value::Value::BytesValue(vec![1, 255])).as_ref()),
            "\"01ff\""
        );
        let list = any_value::Value::ArrayValue(ArrayValue {
            values: vec![AnyValue {
                value: Some(any_value::Value::IntValue(1)),
            }],
        });
        assert_eq!(text(v(list).as_ref()), "[1]");
        let kv = any_value::Value::KvlistValue(KeyValueList {
            values: vec![KeyValue {
                key: "a".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue("b".into())),
                }),
            }],
        });
        assert_eq!(text(v(kv).as_ref()), "{\"a\":\"b\"}");
        assert_eq!(text(None), "null");
    }
}
