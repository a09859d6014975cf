//! One served collection: its initial objects, its scripted watch events and how far
//! they have been delivered or have happened.

use serde_json::Value;

use super::request::RecordedRequest;

pub(super) type Gate = Box<dyn Fn(&RecordedRequest) -> bool + Send>;

/// The kind of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchType {
    Added,
    Modified,
    Deleted,
}

impl WatchType {
    pub fn as_str(self) -> &'static str {
        match self {
            WatchType::Added => "ADDED",
            WatchType::Modified => "MODIFIED",
            WatchType::Deleted => "DELETED",
        }
    }
}

pub(super) struct Collection {
    pub(super) initial: Vec<Value>,
    /// (resourceVersion, type, object with that resourceVersion).
    pub(super) events: Vec<(u64, WatchType, Value)>,
    /// Highest resourceVersion written to a watch stream.
    pub(super) delivered: u64,
    pub(super) list_kind: String,
    /// The request that causes the events (`None`: they happen as they are watched).
    pub(super) gate: Option<Gate>,
    /// The events may be delivered (no gate, or its request arrived).
    pub(super) released: bool,
    /// Every event up to here has happened (LIST and GET show it) even if unwatched.
    pub(super) happened: u64,
}

impl Collection {
    /// The objects (in insertion order) as of `rv`.
    pub(super) fn state_at(&self, rv: u64) -> Vec<Value> {
        let mut items: Vec<Value> = self.initial.clone();
        for (erv, ty, obj) in &self.events {
            if *erv > rv {
                break;
            }
            let name = obj.pointer("/metadata/name").cloned();
            let pos = items.iter().position(|o| o.pointer("/metadata/name").cloned() == name);
            match (ty, pos) {
                (WatchType::Deleted, Some(i)) => {
                    items.remove(i);
                }
                (WatchType::Deleted, None) => {}
                (_, Some(i)) => items[i] = obj.clone(),
                (_, None) => items.push(obj.clone()),
            }
        }
        items
    }
}
