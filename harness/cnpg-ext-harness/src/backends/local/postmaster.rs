//! One running `postgres` process: started as the unprivileged user in its own process
//! group, with exactly the environment the operator would give it, and stopped on drop.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::plumbing::procs;
use crate::plumbing::run_as::RunAs;

pub(crate) struct Postmaster {
    child: Option<Child>,
    pub pid: u32,
}

/// The `PATH` the stand-in instance manager gives every postmaster before extensions.
pub(crate) const INHERITED_PATH: &str = "/usr/bin:/bin";

pub(crate) struct StartSpec<'a> {
    pub postgres: &'a Path,
    pub data: &'a Path,
    pub socket_dir: &'a Path,
    pub log: &'a Path,
    pub ld_library_path: Option<&'a str>,
    /// Appended to the stand-in instance manager's `PATH` (1.29+ `bin_path`).
    pub bin_path: Option<&'a str>,
    /// The extensions' `env` (1.29+).
    pub env: &'a std::collections::BTreeMap<String, String>,
    pub run_as: &'a RunAs,
}

impl Postmaster {
    pub(crate) fn start(spec: &StartSpec<'_>) -> Result<Postmaster, String> {
        if procs::interrupted() {
            return Err("interrupted: not starting postgres".into());
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(spec.log)
            .map_err(|e| format!("cannot open {}: {e}", spec.log.display()))?;
        spec.run_as.own(spec.log).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(spec.postgres);
        cmd.arg("-D")
            .arg(spec.data)
            .arg("-k")
            .arg(spec.socket_dir)
            .env_clear()
            .env("PATH", spec.bin_path.map_or_else(|| INHERITED_PATH.to_string(), |b| format!("{INHERITED_PATH}:{b}")))
            .envs(spec.env)
            .env("LANG", "C")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .process_group(0);
        if let Some(ld) = spec.ld_library_path {
            cmd.env("LD_LIBRARY_PATH", ld);
        }
        spec.run_as.apply(&mut cmd);
        let child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", spec.postgres.display()))?;
        let pid = child.id();
        procs::register(pid, &spec.data.display().to_string());
        crate::plumbing::supervisor::fault_after_postmaster_start();
        Ok(Postmaster { child: Some(child), pid })
    }

    /// Whether the process has exited (and its status).
    pub(crate) fn exited(&mut self) -> Option<String> {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(status))) => Some(status.to_string()),
            Some(Ok(None)) => None,
            Some(Err(e)) => Some(e.to_string()),
            None => Some("stopped".into()),
        }
    }

    /// Fast shutdown (SIGINT), then SIGKILL after `grace`.
    pub(crate) fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else { return };
        let group = Pid::from_raw(self.pid as i32);
        let _ = killpg(group, Signal::SIGINT);
        let deadline = Instant::now() + grace;
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = killpg(group, Signal::SIGKILL);
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        procs::unregister(self.pid);
    }
}

pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for Postmaster {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}
