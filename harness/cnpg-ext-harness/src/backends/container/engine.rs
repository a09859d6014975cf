//! The container engine CLI (podman or docker ≥ 28), driven directly: detection, flag
//! handling, and running commands (blocking during preparation, async during scenarios).

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

pub(crate) use crate::plumbing::engine::{ENV_ENGINE_FLAGS, ENV_RUN_FLAGS};
pub(crate) use crate::plumbing::shell::split_flags;

/// Longest an engine command of a scenario may take (a hung engine fails the step).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);

/// Minimum docker server version: `--mount type=image` arrived in 28.0.
pub(crate) const DOCKER_MIN_MAJOR: u32 = 28;
/// Minimum podman version with `--mount type=image`.
pub(crate) const PODMAN_MIN_MAJOR: u32 = 4;

pub(crate) use crate::plumbing::engine::EngineKind;

/// One usable engine and the flags every invocation carries.
#[derive(Debug, Clone)]
pub struct Engine {
    pub kind: EngineKind,
    pub program: PathBuf,
    pub version: String,
    /// Global flags, placed before the subcommand.
    pub global: Vec<String>,
    /// Flags added to every `run`.
    pub run_flags: Vec<String>,
}

/// Set when the run is interrupted: no new container may be started.
static STOPPING: AtomicBool = AtomicBool::new(false);
/// Engine commands currently executing (the Ctrl-C cleanup waits for them).
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn set_stopping() {
    STOPPING.store(true, Ordering::SeqCst);
}

pub(crate) fn stopping() -> bool {
    STOPPING.load(Ordering::SeqCst)
}

/// Waits (bounded) until no engine command is running.
pub(crate) fn wait_idle(max: Duration) {
    let deadline = Instant::now() + max;
    while IN_FLIGHT.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An engine operation under way (CLI or API): [`wait_idle`] waits for it to end.
pub(super) struct InFlight;
impl InFlight {
    pub(super) fn enter() -> InFlight {
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        InFlight
    }
}
impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Engine {
    pub fn name(&self) -> &'static str {
        self.kind.name()
    }

    /// `program <global flags> <args>` as text, for messages.
    pub fn describe(&self, args: &[String]) -> String {
        let mut v = vec![self.name().to_string()];
        v.extend(self.global.iter().cloned());
        v.extend(args.iter().cloned());
        v.iter().map(|a| crate::plumbing::shell::shell_quote(a)).collect::<Vec<_>>().join(" ")
    }

    fn std_command(&self, args: &[String]) -> std::process::Command {
        let mut c = std::process::Command::new(&self.program);
        c.args(&self.global).args(args).stdin(Stdio::null());
        c
    }

    /// Runs to completion (blocking); stdout on success, else a message with stderr.
    pub fn run_sync(&self, args: &[String]) -> Result<String, String> {
        if stopping() {
            return Err("interrupted".into());
        }
        let _g = InFlight::enter();
        tracing::debug!(cmd = %self.describe(args), "engine");
        let out = self.std_command(args).output().map_err(|e| format!("cannot run {}: {e}", self.program.display()))?;
        result_of(self, args, out)
    }

    /// Like [`Engine::run_sync`] with `input` on stdin.
    pub fn run_sync_stdin(&self, args: &[String], input: &[u8]) -> Result<String, String> {
        use std::io::Write;
        if stopping() {
            return Err("interrupted".into());
        }
        let _g = InFlight::enter();
        let mut c = self.std_command(args);
        c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().map_err(|e| format!("cannot run {}: {e}", self.program.display()))?;
        let mut stdin = child.stdin.take().expect("piped");
        let data = input.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        let _ = writer.join();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        // Success: stdout and stderr together (single-user mode reports SQL errors on stderr).
        result_of(self, args, out).map(|stdout| format!("{stdout}{stderr}"))
    }

    /// Best effort, for cleanup: errors are logged, never returned.
    pub fn run_quiet(&self, args: &[String]) -> Option<String> {
        let _g = InFlight::enter();
        match self.std_command(args).output() {
            Ok(out) if out.status.success() => Some(String::from_utf8_lossy(&out.stdout).into_owned()),
            Ok(out) => {
                tracing::debug!(cmd = %self.describe(args), stderr = %String::from_utf8_lossy(&out.stderr).trim(), "cleanup command failed");
                None
            }
            Err(e) => {
                tracing::debug!(cmd = %self.describe(args), "cleanup command failed: {e}");
                None
            }
        }
    }

    /// Runs to completion without blocking the runtime.
    pub async fn run(&self, args: &[String]) -> Result<String, String> {
        if stopping() {
            return Err("interrupted".into());
        }
        let _g = InFlight::enter();
        tracing::debug!(cmd = %self.describe(args), "engine");
        let child = tokio::process::Command::new(&self.program)
            .args(&self.global)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(COMMAND_TIMEOUT, child)
            .await
            .map_err(|_| format!("`{}` did not finish within {}s", self.describe(args), COMMAND_TIMEOUT.as_secs()))?
            .map_err(|e| format!("cannot run {}: {e}", self.program.display()))?;
        result_of(self, args, out)
    }

    /// Async; standard output and error together (what `logs` of a container prints on
    /// both), or the error text.
    pub async fn run_merged(&self, args: &[String]) -> String {
        let child = tokio::process::Command::new(&self.program)
            .args(&self.global)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(COMMAND_TIMEOUT, child).await {
            Ok(Ok(out)) => format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
            Ok(Err(e)) => format!("cannot run {}: {e}", self.program.display()),
            Err(_) => format!("`{}` did not finish within {}s", self.describe(args), COMMAND_TIMEOUT.as_secs()),
        }
    }

    /// Async, with `input` on stdin.
    #[allow(dead_code)]
    pub async fn run_stdin(&self, args: &[String], input: &[u8]) -> Result<String, String> {
        if stopping() {
            return Err("interrupted".into());
        }
        let _g = InFlight::enter();
        let mut child = tokio::process::Command::new(&self.program)
            .args(&self.global)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.program.display()))?;
        let mut stdin = child.stdin.take().expect("piped");
        stdin.write_all(input).await.map_err(|e| e.to_string())?;
        drop(stdin);
        let out = child.wait_with_output().await.map_err(|e| e.to_string())?;
        result_of(self, args, out)
    }

    /// The image id of `reference` in the engine's store, if present.
    pub fn image_id(&self, reference: &str) -> Option<String> {
        let args = strings(&["image", "inspect", "--format", "{{.Id}}", reference]);
        let _g = InFlight::enter();
        let out = self.std_command(&args).stderr(Stdio::null()).output().ok()?;
        if !out.status.success() {
            return None;
        }
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (!id.is_empty()).then(|| id.trim_start_matches("sha256:").to_string())
    }
}

impl Engine {
    /// Every tagged image as `reference → id`, in one call; `None` if listing fails.
    pub fn image_ids(&self) -> Option<std::collections::BTreeMap<String, String>> {
        let args = strings(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}", "--no-trunc"]);
        let _g = InFlight::enter();
        let out = self.std_command(&args).stderr(Stdio::null()).output().ok()?;
        if !out.status.success() {
            return None;
        }
        Some(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.split_once(' '))
                .filter(|(r, _)| !r.contains("<none>"))
                .map(|(r, id)| (r.to_string(), id.trim().trim_start_matches("sha256:").to_string()))
                .collect(),
        )
    }
}

fn result_of(engine: &Engine, args: &[String], out: Output) -> Result<String, String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        Err(format!(
            "`{}` failed ({}): {}{}",
            engine.describe(args),
            out.status,
            stderr.trim(),
            if stdout.trim().is_empty() { String::new() } else { format!("\n{}", tail(&stdout, 20)) }
        ))
    }
}

fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub(crate) fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// What to install or set when no engine is usable.
pub(crate) const ENGINE_HINT: &str =
    "install podman ≥ 4 (Debian/Ubuntu: `apt-get install podman`, with `runc` where crun \
cannot create containers) or docker ≥ 28 with a running daemon, or pass --engine; hosts that need extra flags set \
CNPG_EXT_HARNESS_ENGINE_FLAGS (global, e.g. \"--runtime runc --cgroup-manager cgroupfs\") and \
CNPG_EXT_HARNESS_RUN_FLAGS (for `run`, e.g. \"--ulimit nofile=20000:20000 --ulimit nproc=1024:1024\")";

/// Finds a usable engine: `wanted` (a name or a path), else podman, then docker.
pub(crate) fn detect(wanted: Option<&str>, global: Vec<String>, run_flags: Vec<String>) -> Result<Engine, String> {
    let candidates: Vec<String> = match wanted {
        Some(w) => vec![w.to_string()],
        None => vec!["podman".into(), "docker".into()],
    };
    let mut problems = Vec::new();
    for cand in &candidates {
        match probe_one(cand, &global, &run_flags) {
            Ok(e) => return Ok(e),
            Err(p) => problems.push(p),
        }
    }
    Err(format!("no usable container engine: {}; {ENGINE_HINT}", problems.join("; ")))
}

fn probe_one(cand: &str, global: &[String], run_flags: &[String]) -> Result<Engine, String> {
    let program = if cand.contains('/') {
        let p = PathBuf::from(cand);
        if !p.is_file() {
            return Err(format!("{cand}: no such file"));
        }
        p
    } else {
        find_in_path(cand).ok_or_else(|| format!("{cand}: not found on PATH"))?
    };
    let kind = EngineKind::of(&program).map_err(|e| format!("{cand}: {e}"))?;
    let format = match kind {
        EngineKind::Podman => "{{.Client.Version}}",
        EngineKind::Docker => "{{.Server.Version}}",
    };
    let out = std::process::Command::new(&program)
        .args(global)
        .args(["version", "--format", format])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cand}: cannot run: {e}"))?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || version.is_empty() {
        let why = String::from_utf8_lossy(&out.stderr).trim().lines().last().unwrap_or("").to_string();
        return Err(match kind {
            EngineKind::Docker => format!("{cand}: no docker daemon answers ({why})"),
            EngineKind::Podman => format!("{cand}: `podman version` failed ({why})"),
        });
    }
    let major: u32 = version.split('.').next().and_then(|m| m.trim_start_matches('v').parse().ok()).unwrap_or(0);
    let min = match kind {
        EngineKind::Podman => PODMAN_MIN_MAJOR,
        EngineKind::Docker => DOCKER_MIN_MAJOR,
    };
    if major < min {
        return Err(format!("{cand} {version} is too old: `--mount type=image` needs {} ≥ {min}", kind.name()));
    }
    Ok(Engine { kind, program, version, global: global.to_vec(), run_flags: run_flags.to_vec() })
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_a_shell() {
        assert_eq!(split_flags("").unwrap(), Vec::<String>::new());
        assert_eq!(
            split_flags("  --runtime runc   --cgroup-manager cgroupfs ").unwrap(),
            strings(&["--runtime", "runc", "--cgroup-manager", "cgroupfs"])
        );
        assert_eq!(
            split_flags("--ulimit nofile=20000:20000 --ulimit 'nproc=1024:1024'").unwrap(),
            strings(&["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=1024:1024"])
        );
        assert_eq!(split_flags(r#"--env "A=b c" --x='y z'"#).unwrap(), strings(&["--env", "A=b c", "--x=y z"]));
        assert_eq!(split_flags(r#"a\ b "q\"uote" 'it''s' "\n""#).unwrap(), strings(&["a b", "q\"uote", "its", "\\n"]));
        assert_eq!(split_flags("''").unwrap(), strings(&[""]));
        assert!(split_flags("'open").is_err());
        assert!(split_flags("\"open").is_err());
        assert!(split_flags("x\\").is_err());
    }

    #[test]
    fn quoting_round_trips() {
        for w in ["plain", "with space", "it's", "", "a=b:c", "$HOME"] {
            assert_eq!(split_flags(&crate::plumbing::shell::shell_quote(w)).unwrap(), vec![w.to_string()], "{w:?}");
        }
    }
}
