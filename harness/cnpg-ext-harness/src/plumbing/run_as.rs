//! Who PostgreSQL runs as. PostgreSQL refuses to run as root, so as root the harness runs
//! every PostgreSQL program as an unprivileged user (`nobody` unless told otherwise).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use nix::unistd::{chown, Gid, Uid, User};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    /// Whether commands must switch to this user (we are root).
    pub switch: bool,
}

impl RunAs {
    /// As root: the user `name` (default `nobody`). Otherwise: ourselves.
    pub fn resolve(name: Option<&str>) -> Result<RunAs, String> {
        let me = Uid::effective();
        if !me.is_root() {
            let user = User::from_uid(me).ok().flatten().map(|u| u.name).unwrap_or_else(|| me.to_string());
            return Ok(RunAs { user, uid: me.as_raw(), gid: Gid::effective().as_raw(), switch: false });
        }
        let name = name.unwrap_or("nobody");
        let user =
            User::from_name(name).map_err(|e| format!("cannot look up user `{name}`: {e}"))?.ok_or_else(|| {
                format!(
                    "user `{name}` does not exist; PostgreSQL cannot run as root, pass --run-as <an unprivileged user>"
                )
            })?;
        if user.uid.is_root() {
            return Err(format!("--run-as `{name}` is root; PostgreSQL refuses to run as root"));
        }
        Ok(RunAs { user: user.name, uid: user.uid.as_raw(), gid: user.gid.as_raw(), switch: true })
    }

    /// Makes `cmd` run as this user.
    pub fn apply<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        if self.switch {
            cmd.uid(self.uid).gid(self.gid);
        }
        cmd
    }

    /// Gives `path` to this user (a directory PostgreSQL must write).
    pub fn own(&self, path: &Path) -> std::io::Result<()> {
        if self.switch {
            chown(path, Some(Uid::from_raw(self.uid)), Some(Gid::from_raw(self.gid)))?;
        }
        Ok(())
    }
}
