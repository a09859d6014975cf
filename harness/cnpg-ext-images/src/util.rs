//! Small helpers the fixture builder shares with `cnpg-ext-pg` (which depends on this crate):
//! a command line rendered for messages, the absent-or-empty check of an output directory.

use std::io;
use std::path::Path;
use std::process::Command;

/// Renders a command line for messages (arguments with whitespace, and empty ones, quoted).
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        let a = a.to_string_lossy();
        if a.contains(char::is_whitespace) || a.is_empty() {
            s.push_str(&format!("'{a}'"));
        } else {
            s.push_str(&a);
        }
    }
    s
}

/// True when `dir` is missing or an empty directory.
pub fn absent_or_empty(dir: &Path) -> io::Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut rd) => Ok(rd.next().is_none()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_commands() {
        let mut cmd = Command::new("cc");
        cmd.args(["-o", "out dir/x.so", "", "a.c"]);
        assert_eq!(describe(&cmd), "cc -o 'out dir/x.so' '' a.c");
    }

    #[test]
    fn absent_or_empty_dirs() {
        let t = tempfile::tempdir().unwrap();
        assert!(absent_or_empty(&t.path().join("missing")).unwrap());
        assert!(absent_or_empty(t.path()).unwrap());
        std::fs::write(t.path().join("f"), "x").unwrap();
        assert!(!absent_or_empty(t.path()).unwrap());
        assert!(absent_or_empty(&t.path().join("f")).is_err(), "a file is not a directory");
    }
}
