//! What an instance's server log says about its postmasters: each postmaster logs
//! `starting PostgreSQL <version> on …` once, as it starts (after its log collector, if any,
//! so the line reaches the log the backend reads). That line, not `database system is ready
//! to accept connections`, is what is counted: the ready line comes again when a standby is
//! promoted or after a crash's reinitialisation, with no new postmaster, and a replica logs
//! `… ready to accept read-only connections` instead.
//!
//! Lines are read with the default `log_line_prefix` (`%m [%p] `: timestamp and process id),
//! which the stand-in's instances keep and kind's pod log is rendered in; a line with no
//! prefix still counts, without a timestamp. Pure: the harness reads the logs.

use std::collections::BTreeMap;

/// The message a postmaster logs once, when it starts.
const START: &str = "LOG:  starting PostgreSQL ";

/// One postmaster start, as its server log line records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedStart {
    /// The line's timestamp (`%m`), when the prefix has one.
    pub at: Option<String>,
    /// The postmaster's process id (`%p`), when the prefix has one.
    pub pid: Option<String>,
    /// The whole line.
    pub line: String,
}

impl LoggedStart {
    /// `<timestamp> [<pid>]`, or what of it the line has.
    pub fn describe(&self) -> String {
        match (&self.at, &self.pid) {
            (Some(at), Some(pid)) => format!("{at} [{pid}]"),
            (None, Some(pid)) => format!("[{pid}]"),
            _ => "(no log line prefix)".to_string(),
        }
    }
}

/// The postmaster start `line` records, if it is one: `START` after nothing or after a
/// `<timestamp> [<pid>] ` prefix (so that a statement or detail quoting the message is not).
fn start_of(line: &str) -> Option<LoggedStart> {
    let at = line.find(START)?;
    let prefix = &line[..at];
    let (stamp, pid) = if prefix.is_empty() {
        (None, None)
    } else {
        let inner = prefix.strip_suffix("] ")?;
        let (stamp, pid) = inner.rsplit_once('[')?;
        if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let stamp = stamp.trim_end();
        (Some(stamp.to_string()).filter(|s| !s.is_empty()), Some(pid.to_string()))
    };
    Some(LoggedStart { at: stamp, pid, line: line.to_string() })
}

/// Every postmaster start `log` records, oldest first.
pub fn logged_starts(log: &str) -> Vec<LoggedStart> {
    log.lines().filter_map(start_of).collect()
}

/// The starts `after` records that `before` (the same instance's log, read earlier) does
/// not: each start line of `before` accounts for one equal line of `after`. Lines that left
/// the log read (a bounded tail, a replaced pod) are not counted twice, and no two starts
/// share a line (its timestamp has milliseconds).
pub fn starts_since(before: &str, after: &str) -> Vec<LoggedStart> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for s in logged_starts(before) {
        *seen.entry(s.line).or_default() += 1;
    }
    logged_starts(after)
        .into_iter()
        .filter(|s| match seen.get_mut(&s.line) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        })
        .collect()
}

/// The postmaster starts an instance's server log shows between two reads of it, or why
/// they could not be counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeasuredStarts {
    Logged(Vec<LoggedStart>),
    NotMeasured(String),
}

impl MeasuredStarts {
    /// From the two reads of one instance's log (each the text, or why it could not be read).
    pub fn between(before: &Result<String, String>, after: &Result<String, String>) -> MeasuredStarts {
        match (before, after) {
            (Ok(b), Ok(a)) => MeasuredStarts::Logged(starts_since(b, a)),
            (Err(why), _) => MeasuredStarts::NotMeasured(format!("server log before: {why}")),
            (_, Err(why)) => MeasuredStarts::NotMeasured(format!("server log after: {why}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PostgreSQL 18.6 primary's log as the local backend kept it (`postgres.log`, every
    /// postmaster of the instance appending; `scenarios/add-extension`, `--keep`): created,
    /// then restarted by the rollout, with the harness's marks.
    const PRIMARY: &str = r#"2026-12-03 17:01:19.175 UTC [7789] LOG:  starting PostgreSQL 18.6 on x86_64-pc-linux-gnu, compiled by gcc (GCC) 14.2.1 20250110 (Red Hat 14.2.1-11), 64-bit
2026-12-03 17:01:19.176 UTC [7789] LOG:  listening on Unix socket "/tmp/history-keep/cnpg-ext-QNeghq/s/add-extension/1/run/.s.PGSQL.5432"
2026-12-03 17:01:19.180 UTC [7795] LOG:  database system was shut down at 2026-12-03 16:54:07 UTC
2026-12-03 17:01:19.183 UTC [7796] FATAL:  the database system is starting up
2026-12-03 17:01:19.184 UTC [7789] LOG:  database system is ready to accept connections
2026-12-03 17:01:19.227 UTC [7793] LOG:  checkpoint starting: immediate force wait
2026-12-03 17:01:19.228 UTC [7793] LOG:  checkpoint complete: wrote 2 buffers (0.1%), wrote 3 SLRU buffers; 0 WAL file(s) added, 1 removed, 0 recycled; write=0.001 s, sync=0.001 s, total=0.002 s; sync files=0, longest=0.000 s, average=0.000 s; distance=56 kB, estimate=56 kB; lsn=0/C00080, redo lsn=0/C00028
2026-12-03 17:01:19.932 UTC [7793] LOG:  checkpoint starting: immediate force wait
2026-12-03 17:01:19.933 UTC [7793] LOG:  checkpoint complete: wrote 0 buffers (0.0%), wrote 0 SLRU buffers; 0 WAL file(s) added, 1 removed, 0 recycled; write=0.001 s, sync=0.001 s, total=0.002 s; sync files=0, longest=0.000 s, average=0.000 s; distance=1024 kB, estimate=1024 kB; lsn=0/D00080, redo lsn=0/D00028
2026-12-03 17:01:20.643 UTC [7941] ERROR:  extension "vector" is not available
2026-12-03 17:01:20.643 UTC [7941] HINT:  The extension must first be installed on the system where PostgreSQL is running.
2026-12-03 17:01:20.643 UTC [7941] STATEMENT:  CREATE EXTENSION vector
2026-12-03 17:01:20.676 UTC [7948] LOG:  cnpg-ext-harness log mark cluster-add-1 1796317280672176082
2026-12-03 17:01:20.676 UTC [7948] CONTEXT:  PL/pgSQL function inline_code_block line 1 at RAISE
2026-12-03 17:01:20.676 UTC [7948] STATEMENT:  DO $$BEGIN RAISE LOG '%', 'cnpg-ext-harness log mark cluster-add-1 1796317280672176082'; END$$
2026-12-03 17:01:20.893 UTC [7789] LOG:  received fast shutdown request
2026-12-03 17:01:20.893 UTC [7789] LOG:  aborting any active transactions
2026-12-03 17:01:20.914 UTC [7789] LOG:  background worker "logical replication launcher" (PID 7799) exited with exit code 1
2026-12-03 17:01:20.918 UTC [7793] LOG:  shutting down
2026-12-03 17:01:20.930 UTC [7793] LOG:  checkpoint starting: shutdown immediate
2026-12-03 17:01:20.937 UTC [7793] LOG:  checkpoint complete: wrote 44 buffers (2.1%), wrote 1 SLRU buffers; 0 WAL file(s) added, 0 removed, 1 recycled; write=0.001 s, sync=0.001 s, total=0.007 s; sync files=0, longest=0.000 s, average=0.000 s; distance=1040 kB, estimate=1040 kB; lsn=0/E04070, redo lsn=0/E04070
2026-12-03 17:01:20.954 UTC [7987] FATAL:  the database system is shutting down
2026-12-03 17:01:20.964 UTC [7990] FATAL:  the database system is shutting down
2026-12-03 17:01:20.983 UTC [7789] LOG:  database system is shut down
2026-12-03 17:01:21.010 UTC [7992] LOG:  starting PostgreSQL 18.6 on x86_64-pc-linux-gnu, compiled by gcc (GCC) 14.2.1 20250110 (Red Hat 14.2.1-11), 64-bit
2026-12-03 17:01:21.010 UTC [7992] LOG:  listening on Unix socket "/tmp/history-keep/cnpg-ext-QNeghq/s/add-extension/1/run/.s.PGSQL.5432"
2026-12-03 17:01:21.020 UTC [7999] FATAL:  the database system is starting up
2026-12-03 17:01:21.023 UTC [7998] LOG:  database system was shut down at 2026-12-03 17:01:20 UTC
2026-12-03 17:01:21.029 UTC [7992] LOG:  database system is ready to accept connections
2026-12-03 17:01:21.139 UTC [8011] LOG:  cnpg-ext-harness log mark cluster-add-1 1796317281123174486
2026-12-03 17:01:21.139 UTC [8011] CONTEXT:  PL/pgSQL function inline_code_block line 1 at RAISE
2026-12-03 17:01:21.139 UTC [8011] STATEMENT:  DO $$BEGIN RAISE LOG '%', 'cnpg-ext-harness log mark cluster-add-1 1796317281123174486'; END$$
2026-12-03 17:01:21.759 UTC [7992] LOG:  received fast shutdown request
2026-12-03 17:01:21.759 UTC [7992] LOG:  aborting any active transactions
2026-12-03 17:01:21.759 UTC [8055] FATAL:  terminating connection due to administrator command
2026-12-03 17:01:21.767 UTC [7992] LOG:  background worker "logical replication launcher" (PID 8002) exited with exit code 1
2026-12-03 17:01:21.767 UTC [7996] LOG:  shutting down
2026-12-03 17:01:21.767 UTC [7996] LOG:  checkpoint starting: shutdown immediate
2026-12-03 17:01:21.784 UTC [7996] LOG:  checkpoint complete: wrote 161 buffers (7.9%), wrote 3 SLRU buffers; 0 WAL file(s) added, 0 removed, 0 recycled; write=0.002 s, sync=0.001 s, total=0.017 s; sync files=0, longest=0.000 s, average=0.000 s; distance=378 kB, estimate=378 kB; lsn=0/E62AD0, redo lsn=0/E62AD0
2026-12-03 17:01:21.804 UTC [7992] LOG:  database system is shut down
"#;

    /// A replica's first start (the same run): "ready to accept read-only connections".
    const REPLICA: &str = r#"2026-12-03 17:01:19.863 UTC [7839] LOG:  starting PostgreSQL 18.6 on x86_64-pc-linux-gnu, compiled by gcc (GCC) 14.2.1 20250110 (Red Hat 14.2.1-11), 64-bit
2026-12-03 17:01:19.864 UTC [7839] LOG:  listening on Unix socket "/tmp/history-keep/cnpg-ext-QNeghq/s/add-extension/2/run/.s.PGSQL.5432"
2026-12-03 17:01:19.876 UTC [7853] LOG:  database system was interrupted; last known up at 2026-12-03 17:01:19 UTC
2026-12-03 17:01:19.876 UTC [7853] LOG:  starting backup recovery with redo LSN 0/C00028, checkpoint LSN 0/C00080, on timeline ID 1
2026-12-03 17:01:19.876 UTC [7853] LOG:  entering standby mode
2026-12-03 17:01:19.878 UTC [7853] LOG:  redo starts at 0/C00028
2026-12-03 17:01:19.878 UTC [7853] LOG:  completed backup recovery with redo LSN 0/C00028 and end LSN 0/C00120
2026-12-03 17:01:19.878 UTC [7853] LOG:  consistent recovery state reached at 0/C00120
2026-12-03 17:01:19.878 UTC [7839] LOG:  database system is ready to accept read-only connections
2026-12-03 17:01:19.894 UTC [7854] LOG:  started streaming WAL from primary at 0/D00000 on timeline 1
"#;

    #[test]
    fn each_postmaster_start_is_one_line_with_its_time_and_pid() {
        let starts = logged_starts(PRIMARY);
        let found: Vec<(Option<&str>, Option<&str>)> =
            starts.iter().map(|s| (s.at.as_deref(), s.pid.as_deref())).collect();
        assert_eq!(
            found,
            [(Some("2026-12-03 17:01:19.175 UTC"), Some("7789")), (Some("2026-12-03 17:01:21.010 UTC"), Some("7992"))]
        );
        assert_eq!(starts[1].line, PRIMARY.lines().nth(24).unwrap());
        assert_eq!(starts[1].describe(), "2026-12-03 17:01:21.010 UTC [7992]");
        let replica = logged_starts(REPLICA);
        assert_eq!(replica.len(), 1, "a replica's start counts once: {replica:?}");
        assert_eq!(replica[0].pid.as_deref(), Some("7839"));
    }

    #[test]
    fn lines_quoting_the_message_are_not_starts() {
        let log = "\
2026-12-03 16:40:04.000 UTC [4300] ERROR:  syntax error at or near \"LOG\"
2026-12-03 16:40:04.000 UTC [4300] STATEMENT:  LOG:  starting PostgreSQL 18.1 on x
\tLOG:  starting PostgreSQL 18.1 on x
2026-12-03 16:40:04.000 UTC [] LOG:  starting PostgreSQL 18.1 on x
2026-12-03 16:40:04.000 UTC [43a] LOG:  starting PostgreSQL 18.1 on x
2026-12-03 16:40:04.000 UTC [4300]LOG:  starting PostgreSQL 18.1 on x
2026-12-03 16:40:04.000 UTC 4300] LOG:  starting PostgreSQL 18.1 on x
2026-12-03 16:40:04.000 UTC [4300] LOG:  starting PostgreSQL18
2026-12-03 16:40:04.000 UTC [4300] LOG:  database system is ready to accept connections
";
        assert_eq!(logged_starts(log), []);
    }

    #[test]
    fn a_line_without_a_prefix_or_a_timestamp_still_counts() {
        let bare = logged_starts("LOG:  starting PostgreSQL 18.1 on x\n");
        assert_eq!(bare.len(), 1);
        assert_eq!((bare[0].at.as_deref(), bare[0].pid.as_deref()), (None, None));
        assert_eq!(bare[0].describe(), "(no log line prefix)");
        // kind renders a record without log_time as " [<pid>] LOG:  …".
        let no_time = logged_starts(" [7] LOG:  starting PostgreSQL 18.1 on x");
        assert_eq!((no_time[0].at.as_deref(), no_time[0].pid.as_deref()), (None, Some("7")));
        assert_eq!(no_time[0].describe(), "[7]");
    }

    #[test]
    fn starts_since_counts_only_what_the_later_read_adds() {
        let first = &PRIMARY[..PRIMARY.find("2026-12-03 17:01:20.893").unwrap()];
        let new = starts_since(first, PRIMARY);
        assert_eq!(new.len(), 1, "{new:?}");
        assert_eq!(new[0].pid.as_deref(), Some("7992"));
        assert_eq!(starts_since(PRIMARY, PRIMARY), []);
        assert_eq!(starts_since("", PRIMARY).len(), 2);
        // A read that lost its older lines (a bounded tail, a replaced pod's log) counts
        // only the starts the earlier read did not have.
        let tail = &PRIMARY[PRIMARY.find("2026-12-03 17:01:21.010").unwrap()..];
        assert_eq!(starts_since(first, tail).len(), 1);
        assert_eq!(starts_since(PRIMARY, tail), []);
        // Two equal lines (one logged twice) are two starts, each accounted once.
        let twice = format!("{first}{first}");
        assert_eq!(starts_since(first, &twice).len(), 1);
        assert_eq!(starts_since(&twice, &twice), []);
    }

    #[test]
    fn a_missing_read_is_not_measured_and_says_which() {
        let ok = |s: &str| Ok::<String, String>(s.to_string());
        let gone = Err::<String, String>("no server log".into());
        let first = PRIMARY[..PRIMARY.find("2026-12-03 17:01:20.893").unwrap()].to_string();
        match MeasuredStarts::between(&ok(&first), &ok(PRIMARY)) {
            MeasuredStarts::Logged(s) => assert_eq!(s.len(), 1),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            MeasuredStarts::between(&gone, &ok(PRIMARY)),
            MeasuredStarts::NotMeasured("server log before: no server log".into())
        );
        assert_eq!(
            MeasuredStarts::between(&ok(PRIMARY), &gone),
            MeasuredStarts::NotMeasured("server log after: no server log".into())
        );
    }
}
