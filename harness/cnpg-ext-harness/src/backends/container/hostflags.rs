//! The engine-run flags (`CNPG_EXT_HARNESS_RUN_FLAGS` / `--engine-run-flags`) as the Engine
//! API's `HostConfig` of instance containers: the `docker run` / `podman run` host flags that
//! hosts commonly need, read the way those CLIs read them. A flag outside this list is refused
//! (it would be silently lost), naming the flag and the list.

use serde::Serialize;
use testcontainers::bollard::models::{DeviceMapping, HostConfig, ResourcesUlimits};

use super::engine::EngineKind;

/// The flags understood, as listed in errors.
pub(crate) const ACCEPTED: &str =
    "--ulimit NAME=SOFT[:HARD], --security-opt KEY[=VALUE], --cap-add CAP, --cap-drop CAP, \
--shm-size SIZE, --pids-limit N, --memory/-m SIZE, --device HOST[:CONTAINER][:PERMS], --network/--net NAME \
(each as `--flag value` or `--flag=value`)";

/// `--security-opt` keys docker or podman know.
const SECURITY_OPT_KEYS: &[&str] =
    &["label", "apparmor", "seccomp", "no-new-privileges", "systempaths", "mask", "unmask", "proc-opts"];

/// The host settings of instance containers. Serialized (for the spec snapshots) with only
/// `ulimits` always present, so that a host without extra flags sees no change.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct HostFlags {
    pub ulimits: Vec<ResourcesUlimits>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub security_opt: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<i64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceMapping>,
    /// Replaces the instances' default network mode `none` (shown as the spec's `network_mode`).
    #[serde(skip)]
    pub network: Option<String>,
}

impl HostFlags {
    /// Parses the engine-run flags (already split like a shell).
    pub(crate) fn parse(run_flags: &[String]) -> Result<HostFlags, String> {
        let mut out = HostFlags::default();
        let mut it = run_flags.iter();
        while let Some(arg) = it.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with('-') => (f, Some(v)),
                _ => (arg.as_str(), None),
            };
            let name = match flag {
                "--ulimit" | "--security-opt" | "--cap-add" | "--cap-drop" | "--shm-size" | "--pids-limit"
                | "--memory" | "--device" | "--network" => flag,
                "-m" => "--memory",
                "--net" => "--network",
                _ => {
                    return Err(format!(
                        "`{arg}` cannot be given to instance containers, which are created through the Engine API; \
                         understood there: {ACCEPTED}"
                    ))
                }
            };
            let value = match inline {
                Some(v) => v,
                None => it
                    .next()
                    .map(String::as_str)
                    .ok_or_else(|| format!("`{flag}` without a value ({})", usage(name)))?,
            };
            let bad = |why: String| format!("`{flag} {value}`: {why} ({})", usage(name));
            match name {
                "--ulimit" => out.ulimits.push(ulimit(value).map_err(bad)?),
                "--security-opt" => out.security_opt.push(security_opt(value).map_err(bad)?),
                "--cap-add" => out.cap_add.push(capability(value).map_err(bad)?),
                "--cap-drop" => out.cap_drop.push(capability(value).map_err(bad)?),
                "--shm-size" => out.shm_size = Some(size(value).map_err(bad)?),
                "--memory" => out.memory = Some(size(value).map_err(bad)?),
                "--pids-limit" => out.pids_limit = Some(pids_limit(value).map_err(bad)?),
                "--device" => out.devices.push(device(value).map_err(bad)?),
                "--network" => out.network = Some(network(value).map_err(bad)?),
                _ => unreachable!("every accepted flag is handled"),
            }
        }
        Ok(out)
    }

    /// What the engine's API expects where it differs from the flags: docker's API takes a
    /// seccomp profile's JSON where its CLI takes a file (podman's API takes the file's path,
    /// as its CLI does).
    pub(crate) fn for_engine(mut self, kind: EngineKind) -> Result<HostFlags, String> {
        if kind == EngineKind::Docker {
            for opt in &mut self.security_opt {
                if let Some(path) = opt.strip_prefix("seccomp=").filter(|p| *p != "unconfined") {
                    let profile = std::fs::read_to_string(path)
                        .map_err(|e| format!("`--security-opt {opt}`: cannot read the seccomp profile {path}: {e}"))?;
                    *opt = format!("seccomp={profile}");
                }
            }
        }
        Ok(self)
    }

    /// Sets these flags on an instance container's `HostConfig` (network mode and mounts are
    /// the spec's own).
    pub(crate) fn apply(&self, hc: &mut HostConfig) {
        let some = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        hc.ulimits = (!self.ulimits.is_empty()).then(|| self.ulimits.clone());
        hc.security_opt = some(&self.security_opt);
        hc.cap_add = some(&self.cap_add);
        hc.cap_drop = some(&self.cap_drop);
        hc.shm_size = self.shm_size;
        hc.pids_limit = self.pids_limit;
        hc.memory = self.memory;
        hc.devices = (!self.devices.is_empty()).then(|| self.devices.clone());
    }
}

fn usage(flag: &str) -> &'static str {
    match flag {
        "--ulimit" => "expected NAME=SOFT[:HARD], e.g. nofile=20000:20000",
        "--security-opt" => "expected KEY[=VALUE], e.g. seccomp=unconfined, label=disable, no-new-privileges",
        "--cap-add" | "--cap-drop" => "expected a capability, e.g. SYS_PTRACE or ALL",
        "--shm-size" | "--memory" => "expected a size: a number with an optional unit b, k, m, g, e.g. 256m",
        "--pids-limit" => "expected a number of processes, -1 for no limit",
        "--device" => "expected HOST[:CONTAINER][:PERMS], e.g. /dev/fuse or /dev/sdb:/dev/xvdc:rw",
        "--network" => "expected a network mode or name, e.g. host or bridge",
        _ => "",
    }
}

fn ulimit(value: &str) -> Result<ResourcesUlimits, String> {
    let (name, limits) = value.split_once('=').ok_or("no `=`")?;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase()) {
        return Err(format!("`{name}` is not a limit name (nofile, nproc, core, …)"));
    }
    let number = |v: &str| -> Result<i64, String> {
        if v == "unlimited" || v == "-1" {
            return Ok(-1);
        }
        v.parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| format!("`{v}` is not a limit (a number or `unlimited`)"))
    };
    let (soft, hard) = match limits.split_once(':') {
        Some((s, h)) => (number(s)?, number(h)?),
        None => (number(limits)?, number(limits)?),
    };
    if hard != -1 && (soft == -1 || soft > hard) {
        return Err(format!("the soft limit {soft} is above the hard limit {hard}"));
    }
    Ok(ResourcesUlimits { name: Some(name.to_string()), soft: Some(soft), hard: Some(hard) })
}

fn security_opt(value: &str) -> Result<String, String> {
    let (key, val) = match value.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (value, None),
    };
    if !SECURITY_OPT_KEYS.contains(&key) {
        return Err(format!("`{key}` is not a security option ({})", SECURITY_OPT_KEYS.join(", ")));
    }
    match (key, val) {
        ("no-new-privileges", None | Some("true" | "false")) => {}
        ("no-new-privileges", Some(v)) => return Err(format!("`{v}` is not true or false")),
        (_, None | Some("")) => return Err(format!("`{key}` needs a value")),
        // The file is read on this host (by docker's CLI, or podman's service).
        ("seccomp", Some(path)) if path != "unconfined" && !std::path::Path::new(path).is_file() => {
            return Err(format!("the seccomp profile {path} is not a file"));
        }
        _ => {}
    }
    Ok(value.to_string())
}

fn capability(value: &str) -> Result<String, String> {
    if value.is_empty() || !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("`{value}` is not a capability name"));
    }
    Ok(value.to_ascii_uppercase())
}

/// A size as docker reads it (`RAMInBytes`): a decimal number, an optional unit b, k, m, g, t
/// or p (powers of 1024, any case, optionally followed by `b` or `ib`).
fn size(value: &str) -> Result<i64, String> {
    let v = value.trim();
    let split = v.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let n: f64 = number.parse().map_err(|_| format!("`{value}` is not a size"))?;
    let unit = unit.trim_start().to_ascii_lowercase();
    let unit = unit.strip_suffix("ib").or_else(|| unit.strip_suffix('b')).unwrap_or(&unit);
    let power = match unit {
        "" => 0,
        "k" => 1,
        "m" => 2,
        "g" => 3,
        "t" => 4,
        "p" => 5,
        _ => return Err(format!("`{value}` has an unknown unit")),
    };
    let bytes = n * 1024f64.powi(power);
    if !(bytes >= 1.0 && bytes < i64::MAX as f64) {
        return Err(format!("`{value}` is not a positive size"));
    }
    Ok(bytes as i64)
}

fn pids_limit(value: &str) -> Result<i64, String> {
    value.parse::<i64>().ok().filter(|n| *n >= -1).ok_or_else(|| format!("`{value}` is not a number ≥ -1"))
}

/// `HOST[:CONTAINER][:PERMS]` as docker reads it: a second field made only of r, w, m is the
/// permissions; the container path defaults to the host path, the permissions to `rwm`.
fn device(value: &str) -> Result<DeviceMapping, String> {
    let parts: Vec<&str> = value.split(':').collect();
    let perms_like = |p: &str| {
        !p.is_empty()
            && p.chars().all(|c| matches!(c, 'r' | 'w' | 'm'))
            && p.chars().collect::<std::collections::BTreeSet<_>>().len() == p.len()
    };
    let (host, container, perms) = match parts.as_slice() {
        [h] => (*h, *h, "rwm"),
        [h, p] if perms_like(p) => (*h, *h, *p),
        [h, c] => (*h, *c, "rwm"),
        [h, c, p] if perms_like(p) => (*h, *c, *p),
        [_, _, p] => return Err(format!("`{p}` is not a permission set (r, w, m)")),
        _ => return Err("too many `:`".into()),
    };
    for path in [host, container] {
        if !path.starts_with('/') {
            return Err(format!("`{path}` is not an absolute path"));
        }
    }
    Ok(DeviceMapping {
        path_on_host: Some(host.into()),
        path_in_container: Some(container.into()),
        cgroup_permissions: Some(perms.into()),
    })
}

fn network(value: &str) -> Result<String, String> {
    if value.is_empty() || value.chars().any(char::is_whitespace) {
        return Err(format!("`{value}` is not a network"));
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<HostFlags, String> {
        HostFlags::parse(&super::super::engine::split_flags(s).unwrap())
    }

    fn ulimits(h: &HostFlags) -> Vec<(String, i64, i64)> {
        h.ulimits.iter().map(|l| (l.name.clone().unwrap(), l.soft.unwrap(), l.hard.unwrap())).collect()
    }

    #[test]
    fn nothing_is_nothing() {
        assert_eq!(parse("").unwrap(), HostFlags::default());
        let mut hc = HostConfig { network_mode: Some("none".into()), ..HostConfig::default() };
        HostFlags::default().apply(&mut hc);
        assert_eq!(hc, HostConfig { network_mode: Some("none".into()), ..HostConfig::default() });
    }

    #[test]
    fn each_flag_in_both_forms() {
        for (a, b) in [
            ("--ulimit nofile=20000:30000", "--ulimit=nofile=20000:30000"),
            ("--security-opt label=disable", "--security-opt=label=disable"),
            ("--cap-add sys_ptrace", "--cap-add=SYS_PTRACE"),
            ("--cap-drop ALL", "--cap-drop=all"),
            ("--shm-size 256m", "--shm-size=256M"),
            ("--pids-limit 512", "--pids-limit=512"),
            ("--memory 1g", "--memory=1g"),
            ("-m 1g", "-m=1gb"),
            ("--memory 1g", "-m 1GiB"),
            ("--device /dev/fuse", "--device=/dev/fuse:/dev/fuse:rwm"),
            ("--network host", "--network=host"),
            ("--net host", "--network host"),
        ] {
            assert_eq!(parse(a).unwrap(), parse(b).unwrap(), "{a} vs {b}");
            assert_ne!(parse(a).unwrap(), HostFlags::default(), "{a}");
        }
    }

    #[test]
    fn values_are_read_as_the_engines_read_them() {
        let h = parse(
            "--ulimit nofile=20000:20000 --ulimit=nproc=1024 --ulimit core=unlimited:-1 \
             --security-opt seccomp=unconfined --security-opt no-new-privileges --security-opt label=disable \
             --cap-add SYS_PTRACE --cap-add=net_admin --cap-drop MKNOD \
             --shm-size 256m --pids-limit -1 -m 1.5g \
             --device /dev/fuse --device /dev/sdb:/dev/xvdc --device=/dev/kvm:r --device /dev/a:/dev/b:rw \
             --network slirp4netns",
        )
        .unwrap();
        assert_eq!(
            ulimits(&h),
            [("nofile".to_string(), 20000, 20000), ("nproc".into(), 1024, 1024), ("core".into(), -1, -1)]
        );
        assert_eq!(h.security_opt, ["seccomp=unconfined", "no-new-privileges", "label=disable"]);
        assert_eq!(h.cap_add, ["SYS_PTRACE", "NET_ADMIN"]);
        assert_eq!(h.cap_drop, ["MKNOD"]);
        assert_eq!(h.shm_size, Some(256 << 20));
        assert_eq!(h.pids_limit, Some(-1));
        assert_eq!(h.memory, Some(3 << 29));
        let devices: Vec<(String, String, String)> = h
            .devices
            .iter()
            .map(|d| {
                (
                    d.path_on_host.clone().unwrap(),
                    d.path_in_container.clone().unwrap(),
                    d.cgroup_permissions.clone().unwrap(),
                )
            })
            .collect();
        let d = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        assert_eq!(
            devices,
            [
                d("/dev/fuse", "/dev/fuse", "rwm"),
                d("/dev/sdb", "/dev/xvdc", "rwm"),
                d("/dev/kvm", "/dev/kvm", "r"),
                d("/dev/a", "/dev/b", "rw")
            ]
        );
        assert_eq!(h.network.as_deref(), Some("slirp4netns"));
        // Sizes: plain bytes, every unit, decimals.
        for (s, n) in [("1024", 1024), ("10b", 10), ("2k", 2048), ("1KB", 1024), ("64mib", 64 << 20), ("0.5g", 1 << 29)]
        {
            assert_eq!(size(s), Ok(n), "{s}");
        }
        // On the HostConfig.
        let mut hc = HostConfig::default();
        h.apply(&mut hc);
        assert_eq!(hc.ulimits.as_ref().map(Vec::len), Some(3));
        assert_eq!(hc.cap_add.as_deref(), Some(&["SYS_PTRACE".to_string(), "NET_ADMIN".into()][..]));
        assert_eq!(hc.cap_drop.as_deref(), Some(&["MKNOD".to_string()][..]));
        assert_eq!(hc.security_opt.as_ref().map(Vec::len), Some(3));
        assert_eq!((hc.shm_size, hc.pids_limit, hc.memory), (Some(256 << 20), Some(-1), Some(3 << 29)));
        assert_eq!(hc.devices.as_ref().map(Vec::len), Some(4));
        let api = serde_json::to_value(&hc).unwrap();
        assert_eq!(api["ShmSize"], 256 << 20);
        assert_eq!(api["Devices"][1]["PathInContainer"], "/dev/xvdc");
    }

    #[test]
    fn bad_values_say_which_flag_and_what_is_expected() {
        for (bad, says) in [
            ("--ulimit", "`--ulimit` without a value (expected NAME=SOFT[:HARD]"),
            ("--ulimit nofile", "no `=`"),
            ("--ulimit nofile=lots", "`lots` is not a limit"),
            ("--ulimit NOFILE=1", "not a limit name"),
            ("--ulimit nofile=10:5", "above the hard limit"),
            ("--security-opt bogus=1", "`bogus` is not a security option"),
            ("--security-opt label", "`label` needs a value"),
            ("--security-opt no-new-privileges=maybe", "not true or false"),
            ("--security-opt seccomp=/nonexistent/profile.json", "is not a file"),
            ("--cap-add", "`--cap-add` without a value"),
            ("--cap-add SYS-PTRACE", "not a capability name"),
            ("--cap-drop=", "not a capability name"),
            ("--shm-size lots", "`lots` is not a size"),
            ("--shm-size 12x", "unknown unit"),
            ("--shm-size 0", "not a positive size"),
            ("--memory=-1g", "`-1g` is not a size"),
            ("-m", "`-m` without a value"),
            ("--pids-limit -2", "not a number ≥ -1"),
            ("--pids-limit many", "not a number ≥ -1"),
            ("--device dev/fuse", "not an absolute path"),
            ("--device /dev/a:/dev/b:rx", "`rx` is not a permission set"),
            ("--device /dev/a:/dev/b:rw:x", "too many"),
            ("--network", "`--network` without a value"),
            ("--network ''", "is not a network"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn an_unknown_flag_is_named_with_the_accepted_list() {
        for bad in ["--privileged", "--env=A=b", "-v /a:/b", "nofile=1"] {
            let e = parse(bad).unwrap_err();
            let first = bad.split_whitespace().next().unwrap();
            assert!(e.contains(&format!("`{first}`")) && e.contains(ACCEPTED), "{bad}: {e}");
        }
    }

    #[test]
    fn docker_gets_the_seccomp_profile_itself() {
        let dir = tempfile::tempdir().unwrap();
        let profile = dir.path().join("p.json");
        std::fs::write(&profile, r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#).unwrap();
        let flags = format!("--security-opt seccomp={} --security-opt seccomp=unconfined", profile.display());
        let podman = parse(&flags).unwrap().for_engine(EngineKind::Podman).unwrap();
        assert_eq!(podman.security_opt[0], format!("seccomp={}", profile.display()));
        let docker = parse(&flags).unwrap().for_engine(EngineKind::Docker).unwrap();
        assert_eq!(docker.security_opt, [r#"seccomp={"defaultAction":"SCMP_ACT_ALLOW"}"#, "seccomp=unconfined"]);
    }
}
