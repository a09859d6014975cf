//! PostgreSQL shared memory a killed postmaster left: SysV segments and `/dev/shm` DSM files.

use std::collections::BTreeSet;
use std::path::PathBuf;

/// The shared memory of PostgreSQL processes about to be killed: the POSIX segments they map
/// (`/dev/shm/PostgreSQL.<n>`, dynamic shared memory) and the System V segments they created.
/// PostgreSQL removes both on a clean shutdown; after SIGKILL nobody would.
#[derive(Default)]
pub(super) struct SharedMemory {
    pub(super) files: BTreeSet<PathBuf>,
    pub(super) creators: BTreeSet<i32>,
}

impl SharedMemory {
    pub(super) fn note(&mut self, pid: i32) {
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else { return };
        if !std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres") {
            return;
        }
        self.creators.insert(pid);
        for line in maps.lines() {
            if let Some(at) = line.find("/dev/shm/PostgreSQL.") {
                let path = PathBuf::from(line[at..].trim_end_matches(" (deleted)").trim());
                // The control segment lists every segment of the cluster, mapped or not.
                if let Ok(bytes) = std::fs::read(&path) {
                    for handle in dsm_control_handles(&bytes) {
                        self.files.insert(PathBuf::from(format!("/dev/shm/PostgreSQL.{handle}")));
                    }
                }
                self.files.insert(path);
            }
        }
    }

    /// Once the processes are gone: unlinks the files, removes the System V segments they
    /// created that nothing has attached any more. Returns how many went.
    pub(super) fn remove(&self) -> usize {
        let mut n = 0;
        for f in &self.files {
            if std::fs::remove_file(f).is_ok() {
                n += 1;
            }
        }
        // /proc/sysvipc/shm: key shmid perms size cpid lpid nattch …
        let table = std::fs::read_to_string("/proc/sysvipc/shm").unwrap_or_default();
        for line in table.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(id), Some(cpid), Some(nattch)) = (cols.get(1), cols.get(4), cols.get(6)) else { continue };
            let (Ok(id), Ok(cpid)) = (id.parse::<i32>(), cpid.parse::<i32>()) else { continue };
            if self.creators.contains(&cpid) && *nattch == "0" {
                // SAFETY: IPC_RMID with a null buffer only marks the segment for removal.
                if unsafe { nix::libc::shmctl(id, nix::libc::IPC_RMID, std::ptr::null_mut()) } == 0 {
                    n += 1;
                }
            }
        }
        n
    }
}

/// The segment handles listed in a PostgreSQL dynamic shared memory control segment
/// (`dsm_control_header`: magic, nitems, maxitems, then 40-byte items starting with the
/// handle and its reference count, on 64-bit Linux); empty when `bytes` is not one.
pub(super) fn dsm_control_handles(bytes: &[u8]) -> Vec<u32> {
    const MAGIC: u32 = 0x9a50_3d32;
    const ITEMS_AT: usize = 16;
    const ITEM_SIZE: usize = 40;
    let word = |at: usize| bytes.get(at..at + 4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    if word(0) != Some(MAGIC) {
        return Vec::new();
    }
    let (Some(n), Some(max)) = (word(4), word(8)) else { return Vec::new() };
    if n > max || ITEMS_AT + max as usize * ITEM_SIZE != bytes.len() {
        return Vec::new();
    }
    (0..n as usize)
        .filter_map(|i| {
            let at = ITEMS_AT + i * ITEM_SIZE;
            let (handle, refcnt) = (word(at)?, word(at + 4)?);
            (refcnt > 0).then_some(handle)
        })
        .collect()
}
