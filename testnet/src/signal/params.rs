//! Reading method params the way signal-cli's `JsonRpcNamespace` does: camelCase keys, a
//! single value or an array for multi-valued options, singular or plural key.

use serde_json::{Map, Value};

use super::rpc::RpcError;
use super::util;

/// Java's class name for a JSON value as Jackson maps it into `Map<String, Object>`.
fn java_class(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "java.lang.Boolean",
        Value::Number(n) if n.is_f64() => "java.lang.Double",
        Value::Number(n) => match n.as_i64() {
            Some(i) if i32::try_from(i).is_ok() => "java.lang.Integer",
            _ => "java.lang.Long",
        },
        Value::String(_) => "java.lang.String",
        Value::Array(_) => "java.util.ArrayList",
        Value::Object(_) => "java.util.LinkedHashMap",
    }
}

/// The ClassCastException signal-cli reports as -32603 when a param has the wrong JSON type.
pub(crate) fn class_cast(value: &Value, to: &str) -> RpcError {
    RpcError::internal(format!(
        "class {} cannot be cast to class {to} (ClassCastException)",
        java_class(value)
    ))
}

/// A missing required param: signal-cli hits a NullPointerException (-32603).
pub(crate) fn missing(name: &str) -> RpcError {
    RpcError::internal(format!(
        "Cannot invoke method on null value of parameter \"{name}\" (NullPointerException)"
    ))
}

/// Java's `Object.toString()` of a JSON value, as `Namespace.getString` applies it.
fn java_string(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(java_string).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{k}={}", java_string(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

/// A method's params object (with `account` already taken out).
#[derive(Debug, Clone, Default)]
pub(crate) struct Params(pub Map<String, Value>);

impl Params {
    /// A non-null value.
    pub fn raw(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    pub fn string(&self, key: &str) -> Option<String> {
        self.raw(key).map(java_string)
    }

    pub fn bool(&self, key: &str) -> Result<bool, RpcError> {
        match self.raw(key) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(class_cast(other, "java.lang.Boolean")),
        }
    }

    /// An integer param (the sim accepts any JSON integer; see SIGNAL_PROTOCOL.md §3).
    pub fn long(&self, key: &str) -> Result<Option<i64>, RpcError> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| class_cast(v, "java.lang.Long")),
        }
    }

    /// A multi-valued param: `key` (single value or array), else `key + "s"`.
    pub fn list(&self, key: &str) -> Option<Vec<Value>> {
        let value = self.raw(key).or_else(|| self.raw(&format!("{key}s")))?;
        Some(match value {
            Value::Array(items) => items.clone(),
            other => vec![other.clone()],
        })
    }

    pub fn strings(&self, key: &str) -> Result<Option<Vec<String>>, RpcError> {
        let Some(items) = self.list(key) else {
            return Ok(None);
        };
        items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(class_cast(other, "java.lang.String")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    pub fn longs(&self, key: &str) -> Result<Option<Vec<i64>>, RpcError> {
        let Some(items) = self.list(key) else {
            return Ok(None);
        };
        items
            .iter()
            .map(|v| v.as_i64().ok_or_else(|| class_cast(v, "java.lang.Long")))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    pub fn to_value(&self) -> Value {
        Value::Object(self.0.clone())
    }
}

/// A single recipient as signal-cli normalises it: a uuid (lower-cased), `u:username`,
/// `PNI:uuid`, or a phone number in E.164.
pub(crate) fn recipient(text: Option<&str>) -> Result<String, RpcError> {
    let invalid =
        |text: &str, why: &str| RpcError::user(format!("Invalid phone number '{text}': {why}"));
    let Some(text) = text else {
        return Err(invalid("null", "Null String passed as number."));
    };
    if util::is_uuid(text) {
        return Ok(text.to_ascii_lowercase());
    }
    if let Some(pni) = text.strip_prefix("PNI:") {
        if !util::is_uuid(pni) {
            return Err(invalid(text, "Invalid PNI"));
        }
        return Ok(text.to_owned());
    }
    if text.starts_with("u:") {
        return Ok(text.to_owned());
    }
    if text.contains('@') {
        return Err(invalid(text, "Possible attempt to use email address."));
    }
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return Err(invalid(text, "No valid characters found."));
    }
    Ok(format!("+{digits}"))
}

/// A group id: base64 of 16 (v1) or 32 (v2) bytes.
pub(crate) fn group_id(text: &str) -> Result<String, RpcError> {
    match util::b64_decode(text) {
        Some(bytes) if bytes.len() == 32 || bytes.len() == 16 => Ok(util::b64_encode(&bytes)),
        Some(bytes) => Err(RpcError::user(format!(
            "Invalid group id: Invalid group id length: {}",
            bytes.len()
        ))),
        None => Err(RpcError::user(format!(
            "Invalid group id: Illegal base64 character in {text}"
        ))),
    }
}
