//! A request as the fake API received it (recorded for the tests to check).

use serde_json::Value;

use super::query::query_param;

#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Option<Value>,
}

impl RecordedRequest {
    /// A watch request (`watch=true` or `watch=1`).
    pub fn is_watch(&self) -> bool {
        query_param(&self.query, "watch").is_some_and(|v| v == "true" || v == "1")
    }
}
