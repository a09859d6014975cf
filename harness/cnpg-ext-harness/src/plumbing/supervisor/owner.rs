//! Who owns what: a process named by pid and start time (`Owner`), and the names the
//! supervisor, owner records and engine labels share.

use serde::{Deserialize, Serialize};

/// First argument of the hidden supervisor mode.
pub(crate) const SUPERVISE_ARG: &str = "__supervise";

/// `pid:start,pid:start,…` of every harness process above (and including) this one; children
/// inherit it, which is how a supervisor finds processes started a moment before its harness died.
pub(crate) const ENV_OWNERS: &str = "CNPG_EXT_HARNESS_OWNERS";

/// The owner record in a work directory.
pub const OWNER_FILE: &str = ".cnpg-ext-owner";

/// Container/volume label carrying the owner (`pid:start`) of the run that created it.
pub const LABEL_OWNER: &str = "io.cnpg-ext-harness.owner";

/// Label holding the run id on every container and volume (same as the container backend's).
/// Work directories the sweep looks at: `cnpg-ext-<random>` (runs), `cnpg-ext-cell-<random>` (matrix cells).
pub(super) const DIR_PREFIX: &str = "cnpg-ext-";

/// A process, identified across pid reuse by its start time (clock ticks since boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Owner {
    pub pid: i32,
    pub start: u64,
}

/// What `/proc/<pid>/stat` says about a process.
#[derive(Debug, Clone)]
pub(super) struct Stat {
    pub(super) comm: String,
    pub(super) state: char,
    pub(super) ppid: i32,
    pub(super) start: u64,
}

pub(super) fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state); starttime is field 22.
    Some(Stat {
        comm,
        state: rest.first()?.chars().next()?,
        ppid: rest.get(1)?.parse().ok()?,
        start: rest.get(19)?.parse().ok()?,
    })
}

impl Owner {
    pub fn me() -> Owner {
        let pid = std::process::id() as i32;
        Owner { pid, start: stat(pid).map(|s| s.start).unwrap_or(0) }
    }

    /// The process now running as `pid`, if any.
    pub fn of(pid: i32) -> Option<Owner> {
        stat(pid).map(|s| Owner { pid, start: s.start })
    }

    /// Whether this very process (same pid *and* start time) still runs (a zombie does not).
    pub fn alive(&self) -> bool {
        matches!(stat(self.pid), Some(s) if s.start == self.start && s.state != 'Z' && s.state != 'X')
    }

    pub fn token(&self) -> String {
        format!("{}:{}", self.pid, self.start)
    }

    pub fn parse(s: &str) -> Option<Owner> {
        let (pid, start) = s.trim().split_once(':')?;
        Some(Owner { pid: pid.parse().ok()?, start: start.parse().ok()? })
    }
}
