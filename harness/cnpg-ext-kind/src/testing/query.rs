//! Query strings and selectors of the fake API: percent-decoding, `labelSelector` /
//! `fieldSelector` equality terms, the `resourceVersion` stamp.

use serde_json::Value;

pub(super) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |j: usize| (b[j] as char).to_digit(16);
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() && hex(i + 1).is_some() && hex(i + 2).is_some() => {
                out.push((hex(i + 1).unwrap() * 16 + hex(i + 2).unwrap()) as u8);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The (decoded) value of `key` in a query string.
pub fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (percent_decode(k) == key).then(|| percent_decode(v))
    })
}

/// Does `obj` match a label or field selector (equality terms only: `k=v`, `k==v`, `k!=v`)?
fn matches_selector(obj: &Value, selector: &str, field: bool) -> bool {
    selector.split(',').filter(|t| !t.trim().is_empty()).all(|term| {
        let (key, want, negate) = if let Some((k, v)) = term.split_once("!=") {
            (k, v, true)
        } else if let Some((k, v)) = term.split_once("==") {
            (k, v, false)
        } else if let Some((k, v)) = term.split_once('=') {
            (k, v, false)
        } else {
            // `key` alone: the label exists.
            let has = obj.pointer("/metadata/labels").and_then(|l| l.get(term.trim())).is_some();
            return has;
        };
        let (key, want) = (key.trim(), want.trim());
        let have = if field {
            match key {
                "metadata.name" => obj.pointer("/metadata/name").and_then(Value::as_str),
                "metadata.namespace" => obj.pointer("/metadata/namespace").and_then(Value::as_str),
                _ => return true,
            }
        } else {
            obj.pointer("/metadata/labels").and_then(|l| l.get(key)).and_then(Value::as_str)
        };
        (have == Some(want)) != negate
    })
}

pub(super) fn selected(obj: &Value, query: &str) -> bool {
    query_param(query, "labelSelector").is_none_or(|s| matches_selector(obj, &s, false))
        && query_param(query, "fieldSelector").is_none_or(|s| matches_selector(obj, &s, true))
}

pub(super) fn with_rv(mut obj: Value, rv: u64) -> Value {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
    obj
}
