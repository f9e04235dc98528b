//! JSON-RPC 2.0 framing as signal-cli's `JsonRpcReader` does it: parse errors, invalid
//! requests, notifications (no id: no answer), batches, ignored client responses, and the
//! multi-account `account` parameter (SIGNAL_PROTOCOL.md §1–§3).

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::methods;
use super::state::{Shared, line};

/// The JSON-RPC error object.
#[derive(Debug, Clone)]
pub(crate) struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Value,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
            data: Value::Null,
        }
    }
    pub fn parse(message: impl Into<String>) -> RpcError {
        RpcError::new(-32700, message)
    }
    pub fn invalid_request(message: impl Into<String>) -> RpcError {
        RpcError::new(-32600, message)
    }
    pub fn invalid_params(message: impl Into<String>) -> RpcError {
        RpcError::new(-32602, message)
    }
    pub fn internal(message: impl Into<String>) -> RpcError {
        RpcError::new(-32603, message)
    }
    pub fn user(message: impl Into<String>) -> RpcError {
        RpcError::new(-1, message)
    }
    pub fn io(message: impl Into<String>) -> RpcError {
        RpcError::new(-3, message)
    }
    /// Attaches the would-be result as `data.response`.
    pub fn with_response(mut self, response: Value) -> RpcError {
        self.data = json!({"response": response});
        self
    }
    fn to_json(&self) -> Value {
        json!({"code": self.code, "message": self.message, "data": self.data})
    }
}

/// A response line's JSON.
pub(crate) fn response(id: &Value, outcome: &Result<Value, RpcError>) -> Value {
    match outcome {
        Ok(result) => json!({"jsonrpc": "2.0", "result": result, "id": id}),
        Err(error) => json!({"jsonrpc": "2.0", "error": error.to_json(), "id": id}),
    }
}

/// What one input line turned into.
pub(crate) enum Incoming {
    /// Answer this line right away (parse error, invalid request).
    Reply(String),
    /// Nothing to do (a response from the client, or nothing at all).
    Nothing,
    /// One request to run.
    Request(Request),
    /// A batch: each entry is a request or an immediate error response.
    Batch(Vec<Result<Request, Value>>),
}

/// A parsed request.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub method: String,
    pub params: Option<Value>,
    /// `None` for notifications (no response is sent).
    pub id: Option<Value>,
}

/// Jackson's name of a JSON node type.
fn node_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "NULL",
        Value::Bool(_) => "BOOLEAN",
        Value::Number(_) => "NUMBER",
        Value::String(_) => "STRING",
        Value::Array(_) => "ARRAY",
        Value::Object(_) => "OBJECT",
    }
}

/// The id as signal-cli echoes it: scalars only.
fn scalar_id(node: &Map<String, Value>) -> Value {
    match node.get("id") {
        Some(v @ (Value::String(_) | Value::Number(_) | Value::Bool(_))) => v.clone(),
        _ => Value::Null,
    }
}

/// Parses one line the client sent.
pub(crate) fn parse_line(bytes: &[u8]) -> Incoming {
    let error_line = |e: RpcError| Incoming::Reply(line(&response(&Value::Null, &Err(e))));
    let Ok(text) = std::str::from_utf8(bytes) else {
        return error_line(RpcError::parse("Invalid UTF-8 start byte"));
    };
    if text.trim().is_empty() {
        return error_line(RpcError::parse("Empty input line"));
    }
    // Like Jackson's readTree: the first value counts, trailing content is ignored.
    let mut values = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    let node = match values.next() {
        Some(Ok(node)) => node,
        Some(Err(e)) => {
            return error_line(RpcError::parse(format!("Unrecognized token: {e}")));
        }
        None => return error_line(RpcError::parse("Empty input line")),
    };
    match node {
        Value::Array(items) if items.is_empty() => {
            error_line(RpcError::invalid_request("invalid request"))
        }
        Value::Array(items) => Incoming::Batch(
            items
                .into_iter()
                .map(|item| match item {
                    Value::Object(map) => parse_request(map).map_err(|(id, e)| response(&id, &Err(e))),
                    other => Err(response(
                        &Value::Null,
                        &Err(RpcError::invalid_request(format!(
                            "Cannot construct instance of `org.asamk.signal.jsonrpc.JsonRpcRequest` from {} value",
                            node_type(&other)
                        ))),
                    )),
                })
                .collect(),
        ),
        Value::Object(map) => {
            if map.contains_key("result") || map.contains_key("error") {
                // A response from the client: signal-cli only logs it.
                return Incoming::Nothing;
            }
            match parse_request(map) {
                Ok(request) => Incoming::Request(request),
                Err((id, e)) => Incoming::Reply(line(&response(&id, &Err(e)))),
            }
        }
        other => error_line(RpcError::invalid_request(format!(
            "unexpected type: {}",
            node_type(&other)
        ))),
    }
}

/// Maps a request object like Jackson maps `JsonRpcRequest` (unknown fields are errors).
fn parse_request(mut map: Map<String, Value>) -> Result<Request, (Value, RpcError)> {
    let id_for_error = scalar_id(&map);
    if map.get("params").is_some_and(Value::is_null) {
        map.remove("params");
    }
    if let Some(key) = map
        .keys()
        .find(|k| !matches!(k.as_str(), "jsonrpc" | "method" | "params" | "id"))
    {
        return Err((
            id_for_error,
            RpcError::invalid_request(format!(
                "Unrecognized field \"{key}\" (class org.asamk.signal.jsonrpc.JsonRpcRequest), not marked as ignorable"
            )),
        ));
    }
    let scalar_string = |v: Option<&Value>, field: &str| -> Result<Option<String>, RpcError> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(Some(v.to_string())),
            Some(other) => Err(RpcError::invalid_request(format!(
                "Cannot deserialize value of type `java.lang.String` from {} value (field \"{field}\")",
                node_type(other)
            ))),
        }
    };
    let jsonrpc = scalar_string(map.get("jsonrpc"), "jsonrpc").map_err(|e| (Value::Null, e))?;
    let method = scalar_string(map.get("method"), "method").map_err(|e| (Value::Null, e))?;
    let params = match map.remove("params") {
        None => None,
        Some(p @ (Value::Object(_) | Value::Array(_))) => Some(p),
        Some(other) => {
            return Err((
                Value::Null,
                RpcError::invalid_request(format!(
                    "Cannot deserialize value of type `com.fasterxml.jackson.databind.node.ContainerNode<?>` from {} value (field \"params\")",
                    node_type(&other)
                )),
            ));
        }
    };
    let id = match map.remove("id") {
        None => None,
        Some(v @ (Value::Null | Value::String(_) | Value::Number(_) | Value::Bool(_))) => Some(v),
        Some(other) => {
            return Err((
                Value::Null,
                RpcError::invalid_request(format!(
                    "Cannot deserialize value of type `com.fasterxml.jackson.databind.node.ValueNode` from {} value (field \"id\")",
                    node_type(&other)
                )),
            ));
        }
    };
    if jsonrpc.as_deref() != Some("2.0") {
        return Err((
            id_for_error,
            RpcError::invalid_request("only jsonrpc version 2.0 is supported"),
        ));
    }
    let Some(method) = method else {
        return Err((
            id_for_error,
            RpcError::invalid_request("method field must be set"),
        ));
    };
    // An explicit `"id":null` is a NullNode for Jackson: it is answered, with `"id":null`.
    Ok(Request { method, params, id })
}

/// Runs a request: answers its response (`None` for notifications) and the accounts whose
/// queues to flush once the response has been written.
pub(crate) async fn run(
    shared: &Arc<Shared>,
    conn: u64,
    request: Request,
) -> (Option<Value>, Vec<String>) {
    let delay = {
        let mut state = shared.lock();
        state.requests.push(json!({
            "method": request.method,
            "params": request.params,
            "id": request.id,
        }));
        state.delays.get(&request.method).copied()
    };
    if let Some(ms) = delay {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    let outcome = methods::dispatch(shared, conn, &request.method, request.params).await;
    (
        request.id.map(|id| response(&id, &outcome.result)),
        outcome.flush,
    )
}
