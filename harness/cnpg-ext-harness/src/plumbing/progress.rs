//! Progress: a spinner per running scenario with its current step on a terminal (indicatif),
//! and, like nextest, one line per scenario as it finishes (`PASS id (ms)`), also in CI logs.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

pub(crate) struct Progress {
    multi: Option<MultiProgress>,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Progress {
    pub(crate) fn new(enabled: bool) -> Progress {
        let multi = (enabled && std::io::stderr().is_terminal()).then(MultiProgress::new);
        Progress { multi, bars: Mutex::new(HashMap::new()) }
    }

    pub(crate) fn line(&self, msg: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(msg);
            }
            None => eprintln!("{msg}"),
        }
    }

    pub(crate) fn scenario_started(&self, id: &str) {
        if let Some(m) = &self.multi {
            let bar = m.add(ProgressBar::new_spinner());
            bar.set_style(ProgressStyle::with_template("{spinner} {prefix:.bold} {wide_msg}").unwrap());
            bar.set_prefix(id.to_string());
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            self.bars.lock().unwrap().insert(id.to_string(), bar);
        }
    }

    /// The current step, on the scenario's spinner; plain logs get only verdicts, and the
    /// steps as `[id] title` with `--verbose`.
    pub(crate) fn step(&self, id: &str, title: &str) {
        match self.bars.lock().unwrap().get(id) {
            Some(bar) => bar.set_message(title.to_string()),
            None => tracing::info!("[{id}] {title}"),
        }
    }

    /// Removes `id`'s spinner and prints its finish `line`.
    pub(crate) fn scenario_finished(&self, id: &str, line: &str) {
        if let Some(bar) = self.bars.lock().unwrap().remove(id) {
            bar.finish_and_clear();
        }
        self.line(line);
    }
}
