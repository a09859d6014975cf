//! Frames recorded from a real cluster (`CNPG_EXT_KIND_RECORD`, the `record` module), read
//! back for the fake API: each file one response, in the order they started.

use std::path::Path;

use serde_json::Value;

use super::WatchType;

/// One recorded response.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The file's name (its sequence number first).
    pub file: String,
    pub path: String,
    pub query: String,
    pub status: u16,
    /// A plain GET's answer.
    pub body: Option<Value>,
    /// A watch's events (bookmarks left out), in the order they arrived.
    pub events: Vec<(WatchType, Value)>,
}

impl Frame {
    pub fn is_watch(&self) -> bool {
        crate::record::is_watch(&self.query)
    }
}

/// Every frame of `dir`, in recording order. Panics on a malformed file (a fixture).
pub fn load(dir: &Path) -> Vec<Frame> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json" || x == "jsonl"))
        .collect();
    files.sort();
    files.iter().map(|p| parse(p)).collect()
}

fn parse(p: &Path) -> Frame {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let file = p.file_name().expect("a file").to_string_lossy().into_owned();
    let head_of = |v: &Value| {
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        (s("path"), s("query"), v.get("status").and_then(Value::as_u64).unwrap_or(0) as u16)
    };
    if file.ends_with(".jsonl") {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let head: Value = serde_json::from_str(lines.next().expect("a head line")).expect("head JSON");
        let (path, query, status) = head_of(&head);
        let events = lines
            .filter_map(|l| {
                let ev: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{file}: {e}: {l}"));
                let ty = match ev.get("type").and_then(Value::as_str) {
                    Some("ADDED") => WatchType::Added,
                    Some("MODIFIED") => WatchType::Modified,
                    Some("DELETED") => WatchType::Deleted,
                    _ => return None,
                };
                Some((ty, ev.get("object").cloned().unwrap_or(Value::Null)))
            })
            .collect();
        Frame { file, path, query, status, body: None, events }
    } else {
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        let (path, query, status) = head_of(&v);
        Frame { file, path, query, status, body: v.get("body").cloned(), events: Vec::new() }
    }
}

/// The collection at `path` around one watch session: the items of the last LIST before
/// the `nth` watch of `path` that saw events, and the events of that watch.
pub fn session(frames: &[Frame], path: &str, nth: usize) -> (Vec<Value>, Vec<(WatchType, Value)>) {
    let watches: Vec<usize> = (0..frames.len())
        .filter(|&i| frames[i].path == path && frames[i].is_watch() && !frames[i].events.is_empty())
        .collect();
    let w =
        *watches.get(nth).unwrap_or_else(|| panic!("no watch #{nth} with events of {path} ({} found)", watches.len()));
    let list = frames[..w]
        .iter()
        .rev()
        .find(|f| f.path == path && !f.is_watch() && f.status == 200)
        .unwrap_or_else(|| panic!("no LIST of {path} before {}", frames[w].file));
    let items = list.body.as_ref().and_then(|b| b.get("items")).and_then(Value::as_array).cloned().unwrap_or_default();
    (items, frames[w].events.clone())
}
