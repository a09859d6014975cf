//! Fault injection for the interruption tests (`tests/faults.rs`): a harness told by
//! `CNPG_EXT_HARNESS_FAULT` panics at a chosen point; without the variable nothing happens.

/// Test-only fault injection: `panic-after-postmasters=N` panics right after the Nth
/// postmaster of this process started (before its handle exists); `rollout-primary-first`
/// makes the stand-in operator replace the primary first while its record still lists the
/// replicas first (a lying record, for the tests of the rollout judgment);
/// `rollout-restart-twice=NAME` makes it restart instance NAME twice and record it once,
/// `rollout-not-restarted=NAME` leave NAME running and record its restart all the same;
/// `fail-container-create=ID[,ID…]` fails the first instance-container create of each named
/// scenario in this process the way an engine refuses one (an infrastructure failure, for
/// the `--retries` tests on the container backend).
/// `image-archive-truncated` cuts every extension image archive in half before the engine
/// loads it (the engine refuses it); `image-replaced-after-load` removes each image the
/// engine just loaded and puts another image of the engine under its reference (what another
/// program re-tagging the name would leave), before the harness checks what it holds.
/// `mounts-by-exec` makes the container backend list image mounts with `find` run in the
/// container, the way it must without root or with a remote engine (no host view).
pub const ENV_FAULT: &str = "CNPG_EXT_HARNESS_FAULT";

/// Test-only fault injection in the spawn path of a postmaster (see [`ENV_FAULT`]).
pub(crate) fn fault_after_postmaster_start() {
    static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let Ok(spec) = std::env::var(ENV_FAULT) else { return };
    let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    if let Some(at) = spec.strip_prefix("panic-after-postmasters=").and_then(|v| v.parse::<usize>().ok()) {
        if n == at {
            panic!("{ENV_FAULT}: injected panic after postmaster #{n} started");
        }
    }
}

/// Test-only (see [`ENV_FAULT`]): whether the stand-in replaces the primary first and records
/// the planned order.
pub(crate) fn rollout_primary_first() -> bool {
    std::env::var(ENV_FAULT).is_ok_and(|v| v == "rollout-primary-first")
}

/// Test-only (see [`ENV_FAULT`]): how many times the stand-in restarts `instance` in a
/// rollout that records it once: 2 under `rollout-restart-twice=<instance>`, 0 under
/// `rollout-not-restarted=<instance>`, else 1.
pub(crate) fn rollout_restarts_of(instance: &str) -> usize {
    let spec = std::env::var(ENV_FAULT).unwrap_or_default();
    if spec.strip_prefix("rollout-restart-twice=") == Some(instance) {
        2
    } else if spec.strip_prefix("rollout-not-restarted=") == Some(instance) {
        0
    } else {
        1
    }
}

/// Test-only (see [`ENV_FAULT`]): the engine's refusal to create `container`, once per
/// scenario named in `fail-container-create=…`; `None` otherwise.
pub(crate) fn container_create_refused(scenario: &str, container: &str) -> Option<String> {
    static FIRED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let spec = std::env::var(ENV_FAULT).ok()?;
    let ids = spec.strip_prefix("fail-container-create=")?;
    if !ids.split(',').any(|id| id.trim() == scenario) {
        return None;
    }
    let mut fired = FIRED.lock().unwrap_or_else(|e| e.into_inner());
    if fired.iter().any(|s| s == scenario) {
        return None;
    }
    fired.push(scenario.to_string());
    Some(format!("creating container {container}: {ENV_FAULT}: injected refusal of the engine (fail-container-create)"))
}

/// Test-only (see [`ENV_FAULT`]): whether image mounts must be listed without the host view.
pub(crate) fn mounts_by_exec() -> bool {
    std::env::var(ENV_FAULT).is_ok_and(|v| v == "mounts-by-exec")
}

/// Test-only (see [`ENV_FAULT`]): a fault of the container engine's image store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ImageFault {
    ArchiveTruncated,
    ReplacedAfterLoad,
}

/// Test-only (see [`ENV_FAULT`]): the image fault asked for, if any.
pub(crate) fn image_fault() -> Option<ImageFault> {
    match std::env::var(ENV_FAULT).ok()?.as_str() {
        "image-archive-truncated" => Some(ImageFault::ArchiveTruncated),
        "image-replaced-after-load" => Some(ImageFault::ReplacedAfterLoad),
        _ => None,
    }
}
