//! Where the harness executable is: matrix cells and the supervisor re-execute it.

use std::path::{Path, PathBuf};

use crate::error::HarnessError;

/// The harness binary cells run: `explicit`, else this executable when it is the harness,
/// else a `cnpg-ext-harness` next to it or one directory up (cargo examples and tests).
pub fn harness_binary(explicit: Option<&Path>) -> Result<PathBuf, HarnessError> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let exe = std::env::current_exe()
        .map_err(|e| HarnessError::Environment(format!("cannot find the harness binary: {e}")))?;
    if exe.file_name().map(|n| n == "cnpg-ext-harness").unwrap_or(false) {
        return Ok(exe);
    }
    let dir = exe.parent().unwrap_or(Path::new("."));
    for cand in [dir.join("cnpg-ext-harness"), dir.join("../cnpg-ext-harness")] {
        if cand.is_file() {
            return Ok(cand);
        }
    }
    Err(HarnessError::Environment(format!(
        "no cnpg-ext-harness binary next to {}; build it or set CNPG_EXT_HARNESS_BIN",
        exe.display()
    )))
}
