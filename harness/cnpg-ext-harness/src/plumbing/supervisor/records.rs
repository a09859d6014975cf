//! Owner records (`.cnpg-ext-owner` in a work directory): the harness, its supervisor, the
//! engine of a container run and the images it put there.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::owner::{Owner, OWNER_FILE};

/// An engine and the run whose containers and volumes it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineTarget {
    pub program: PathBuf,
    pub global: Vec<String>,
    pub run_id: String,
}

/// An image a run put into an engine under `reference`: if the run dies, removed — or, when
/// the reference named another image before the run, given back to that image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineImage {
    pub run_id: String,
    pub reference: String,
    /// The image id the reference pointed to before the run (never deleted).
    #[serde(default)]
    pub previous: Option<String>,
    /// The image id the run loaded under the reference (known once loaded).
    #[serde(default)]
    pub loaded: Option<String>,
}

/// Undoes what a run did to the engine's images, running each engine command through `run`
/// (arguments after the program and its global flags; `false` when it failed): one `rmi` of
/// every reference that named nothing before (one by one if the batch fails: an interrupted
/// load leaves one missing), then each borrowed reference tagged back and the run's image
/// removed. Used by the container backend at the end of a run and by the cleanup after a
/// dead one.
///
/// Under the engine's image lock: a removal never races another run's load.
pub(crate) fn restore_images(images: &[EngineImage], mut run: impl FnMut(&[String]) -> bool) {
    if images.is_empty() {
        return;
    }
    let _store = crate::plumbing::engine::image_store_lock();
    let ours: Vec<String> = images.iter().filter(|i| i.previous.is_none()).map(|i| i.reference.clone()).collect();
    if !ours.is_empty() {
        let batch: Vec<String> = std::iter::once("rmi".to_string()).chain(ours.iter().cloned()).collect();
        if !run(&batch) {
            for r in &ours {
                run(&["rmi".to_string(), r.clone()]);
            }
        }
    }
    for img in images {
        if let (Some(prev), Some(loaded)) = (&img.previous, &img.loaded) {
            if prev != loaded {
                run(&["tag".to_string(), prev.clone(), img.reference.clone()]);
                run(&["rmi".to_string(), loaded.clone()]);
            }
        }
    }
}

/// The record written to `<work dir>/.cnpg-ext-owner`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OwnerRecord {
    pub owner: Owner,
    #[serde(default)]
    pub supervisor: Option<Owner>,
    #[serde(default)]
    pub engine: Option<EngineTarget>,
    /// Images the run put into `engine`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<EngineImage>,
}

impl OwnerRecord {
    /// Whether the run may still clean up by itself (its harness or its supervisor runs).
    pub fn anyone_alive(&self) -> bool {
        self.owner.alive() || self.supervisor.is_some_and(|s| s.alive())
    }
}

/// The run id the container backend derives from a work directory's name.
pub(crate) fn run_id_of(workdir: &Path) -> String {
    let name = workdir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut out: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c } else { '-' }).collect();
    if !out.chars().next().is_some_and(|c| c.is_ascii_alphanumeric()) {
        out.insert(0, 'x');
    }
    out
}

pub(super) fn write_record(dir: &Path, record: &OwnerRecord) -> std::io::Result<()> {
    let tmp = dir.join(format!("{OWNER_FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?)?;
    std::fs::rename(tmp, dir.join(OWNER_FILE))
}

pub fn read_record(dir: &Path) -> Option<OwnerRecord> {
    serde_json::from_slice(&std::fs::read(dir.join(OWNER_FILE)).ok()?).ok()
}

pub(super) fn upsert_image(images: &mut Vec<EngineImage>, image: &EngineImage) {
    match images.iter_mut().find(|i| i.run_id == image.run_id && i.reference == image.reference) {
        Some(i) => *i = image.clone(),
        None => images.push(image.clone()),
    }
}
