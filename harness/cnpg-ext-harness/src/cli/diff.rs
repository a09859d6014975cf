//! `diff OLD NEW`: each side a `report.json`, a report directory or a bundle.

use std::path::{Path, PathBuf};

use crate::error::Exit;
use crate::reports::bundle::Bundle;
use crate::reports::diff::{self, Side, Slowness};

#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The earlier run or matrix: report.json, its directory, or a bundle (.tar.gz).
    pub old: PathBuf,
    /// The later one, in any of the same forms.
    pub new: PathBuf,
    /// Slower means more than this many percent over the old duration …
    #[arg(long, default_value_t = 50)]
    pub slower_percent: u64,
    /// … and at least this many milliseconds more.
    #[arg(long, default_value_t = 1000)]
    pub slower_min_ms: u64,
    /// Also write the Markdown here (for a CI comment); it is printed either way.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

/// A side from a report.json, a directory holding one, or a bundle.
pub(crate) fn load(path: &Path) -> Result<Side, String> {
    let bytes = if path.is_dir() {
        let f = path.join("report.json");
        std::fs::read(&f).map_err(|e| format!("{}: {e}", f.display()))?
    } else if path.to_string_lossy().ends_with(".tar.gz") || path.to_string_lossy().ends_with(".tgz") {
        let b = Bundle::open(path)?;
        b.report_json().ok_or_else(|| format!("{}: the bundle holds no reports/report.json", path.display()))?.to_vec()
    } else {
        std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?
    };
    diff::side_of(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

pub(crate) fn command(args: &DiffArgs) -> Exit {
    let (old, new) = match (load(&args.old), load(&args.new)) {
        (Ok(o), Ok(n)) => (o, n),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return Exit::Invalid;
        }
    };
    let diffs = diff::compare(&old, &new, Slowness { percent: args.slower_percent, min_ms: args.slower_min_ms });
    let md = diff::markdown(&args.old.display().to_string(), &args.new.display().to_string(), &old, &new, &diffs);
    print!("{md}");
    if let Some(out) = &args.output {
        if let Err(e) = std::fs::write(out, &md) {
            eprintln!("error: {}: {e}", out.display());
            return Exit::Environment;
        }
    }
    if diff::has_regression(&diffs) {
        Exit::Failed
    } else {
        Exit::Passed
    }
}
