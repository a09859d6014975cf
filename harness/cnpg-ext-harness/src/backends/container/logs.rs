//! An instance's whole server log on the container backend. PostgreSQL logs to standard
//! error, so the engine holds the log of each container; a container about to be removed (a
//! replaced one, one whose start failed) leaves its whole log beside the instance first
//! (`<instance dir>/server-<generation>.log`), and the instance's log is those, oldest first,
//! then the running container's.

use std::path::Path;

use super::api;

/// The file a removed container of generation `generation` leaves its log in.
fn kept_name(generation: u32) -> String {
    format!("server-{generation}.log")
}

/// Saves the whole log of container `id` (generation `generation` of the instance whose
/// host directory is `dir`) before it is removed.
pub(super) async fn keep(dir: &Path, generation: u32, id: &str) {
    let log = api::log_all(id).await;
    if let Err(e) = std::fs::write(dir.join(kept_name(generation)), log) {
        tracing::debug!("keeping the log of {id}: {e}");
    }
}

/// The whole log of the instance whose host directory is `dir`, containers named from
/// `cname` up to generation `generation`: every kept log, then the running container's
/// (`running`: its id and name), each headed by the container it came from when there is
/// more than one.
pub(super) async fn whole_log(
    dir: &Path,
    cname: &str,
    generation: u32,
    running: Option<(&str, &str)>,
) -> Option<String> {
    let mut parts: Vec<(String, String)> = Vec::new();
    for g in 0..=generation {
        if let Ok(text) = std::fs::read_to_string(dir.join(kept_name(g))) {
            let name = match g {
                0 => cname.to_string(),
                g => format!("{cname}-{g}"),
            };
            parts.push((format!("{name} (removed)"), text));
        }
    }
    if let Some((id, name)) = running {
        parts.push((format!("{name} (running)"), api::log_all(id).await));
    }
    Some(join(parts)).filter(|l| !l.trim().is_empty())
}

/// One log from the logs of several containers, in order.
fn join(parts: Vec<(String, String)>) -> String {
    if parts.len() == 1 {
        return parts.into_iter().next().map(|(_, t)| t).unwrap_or_default();
    }
    parts
        .into_iter()
        .map(|(from, text)| format!("-- container {from} --\n{}", text.trim_end_matches('\n')))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_container_is_its_log_and_several_are_headed() {
        assert_eq!(super::join(vec![("a (running)".into(), "LOG: x\n".into())]), "LOG: x\n");
        assert_eq!(
            super::join(vec![("a (removed)".into(), "LOG: 1\n".into()), ("a-1 (running)".into(), "LOG: 2\n".into())]),
            "-- container a (removed) --\nLOG: 1\n-- container a-1 (running) --\nLOG: 2"
        );
        assert_eq!(super::join(Vec::new()), "");
    }
}
