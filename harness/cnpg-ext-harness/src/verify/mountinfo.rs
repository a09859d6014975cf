//! Whether an image volume is read-only, judged from the mount itself: the instance's own
//! `/proc/self/mountinfo` (read through SQL, the same on every backend). A write probe cannot
//! tell: a writable mount of root-owned files refuses the postgres uid as well.

/// The mount an instance sees at one path (the topmost one, when mounts are stacked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountAccess {
    /// Per-mount options (`ro`/`rw`, …).
    pub mount_options: String,
    pub fstype: String,
    /// Options of the filesystem (superblock): an overlay without an upper layer is `ro` here.
    pub super_options: String,
}

impl MountAccess {
    /// Read-only when either the mount or its filesystem is.
    pub(crate) fn read_only(&self) -> bool {
        has_ro(&self.mount_options) || has_ro(&self.super_options)
    }

    pub(crate) fn describe(&self) -> String {
        format!("mount options {}; {} options {}", self.mount_options, self.fstype, self.super_options)
    }
}

fn has_ro(options: &str) -> bool {
    options.split(',').any(|o| o == "ro")
}

/// `mountinfo` escapes space, tab, newline and backslash as `\ooo` (the kernel's `mangle`);
/// the backslash last, so that an escaped `\134` followed by digits stays as it was.
fn unescape(field: &str) -> String {
    field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

/// The mount at exactly `path` (trailing slashes ignored), if `path` is a mount point.
pub(crate) fn mount_at(mountinfo: &str, path: &str) -> Option<MountAccess> {
    let want = path.trim_end_matches('/');
    let want = if want.is_empty() { "/" } else { want };
    let mut found = None;
    for line in mountinfo.lines() {
        // id parent major:minor root mount-point options [optional…] - fstype source super-options;
        // spaces inside fields are escaped, so " - " is only the separator.
        let Some((head, tail)) = line.split_once(" - ") else { continue };
        let (head, tail): (Vec<&str>, Vec<&str>) = (head.split(' ').collect(), tail.split(' ').collect());
        let (Some(point), Some(options), Some(fstype), Some(super_options)) =
            (head.get(4), head.get(5), tail.first(), tail.get(2))
        else {
            continue;
        };
        if unescape(point) != want {
            continue;
        }
        // Later lines are mounted on top of earlier ones at the same point.
        found = Some(MountAccess {
            mount_options: options.to_string(),
            fstype: fstype.to_string(),
            super_options: super_options.to_string(),
        });
    }
    found
}

/// Mount points strictly below `root` (unescaped, sorted, each once): a mount nested in an
/// image mount counts as much as one beside it.
pub(crate) fn points_under(mountinfo: &str, root: &str) -> Vec<String> {
    let prefix = format!("{}/", root.trim_end_matches('/'));
    let mut out: Vec<String> = mountinfo
        .lines()
        .filter_map(|l| l.split_once(" - ").and_then(|(head, _)| head.split(' ').nth(4)).map(unescape))
        .filter(|p| p.strip_prefix(&prefix).is_some_and(|below| !below.is_empty()))
        .map(|p| p.trim_end_matches('/').to_string())
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Seen in a podman container: the image mount without and with `rw=true`.
    const RO: &str = "98 92 0:53 / /extensions/pgvector rw,relatime - overlay /var/lib/containers/storage/x/merge ro,lowerdir=/a/merged:/b/lower,redirect_dir=on";
    const RW: &str = "98 92 0:53 / /extensions/pgvector rw,relatime - overlay /var/lib/containers/storage/x/merge rw,lowerdir=/a/merged,upperdir=/u,workdir=/w,uuid=on";

    #[test]
    fn an_overlay_without_upper_layer_is_read_only_though_its_mount_says_rw() {
        let m = mount_at(RO, "/extensions/pgvector").unwrap();
        assert!(m.read_only(), "{m:?}");
        assert_eq!(m.fstype, "overlay");
        let m = mount_at(RW, "/extensions/pgvector/").unwrap();
        assert!(!m.read_only(), "{m:?}");
        assert!(m.describe().contains("mount options rw,relatime; overlay options rw,"), "{}", m.describe());
    }

    #[test]
    fn a_read_only_bind_mount_is_read_only() {
        let info = "36 35 98:0 /mnt1 /mnt/a ro,noatime master:1 - ext3 /dev/root rw,errors=continue";
        assert!(mount_at(info, "/mnt/a").unwrap().read_only());
        // `ro` must be a whole option, not a part of one.
        let info = "36 35 98:0 /mnt1 /mnt/a rw,noatime,rootcontext=x - ext4 /dev/root rw,errors=ro-remount";
        assert!(!mount_at(info, "/mnt/a").unwrap().read_only());
    }

    #[test]
    fn the_topmost_of_stacked_mounts_counts_and_other_points_do_not() {
        let info = format!("{RO}\n99 98 0:60 / /extensions/pgvector rw,relatime - tmpfs tmpfs rw,mode=755\n");
        assert!(!mount_at(&info, "/extensions/pgvector").unwrap().read_only());
        let info = format!("{RW}\n99 98 0:60 / /extensions/pgvector ro,relatime - tmpfs tmpfs rw\n");
        assert!(mount_at(&info, "/extensions/pgvector").unwrap().read_only());
        assert_eq!(mount_at(RO, "/extensions"), None);
        assert_eq!(mount_at(RO, "/extensions/pgvector/lib"), None);
        assert_eq!(mount_at(RO, "/extensions/pgvecto"), None);
        assert_eq!(mount_at("garbage line\n1 2 3 4 - x\n", "/extensions/pgvector"), None);
        assert_eq!(mount_at("1 2 3 4 /extensions/pgvector - overlay o ro\n", "/extensions/pgvector"), None);
        assert_eq!(mount_at("1 2 3 4 /extensions/pgvector ro - overlay o\n", "/extensions/pgvector"), None);
    }

    #[test]
    fn escaped_mount_points() {
        let info = "40 35 0:5 / /tmp/dir\\040with\\134space ro - tmpfs tmpfs rw";
        assert!(mount_at(info, "/tmp/dir with\\space").unwrap().read_only());
        assert_eq!(unescape("a\\0401\\"), "a 1\\");
        assert_eq!(unescape("a\\09"), "a\\09");
        assert_eq!(unescape("t\\011n\\012"), "t\tn\n");
        let root = "1 0 8:1 / / rw - ext4 /dev/vda rw";
        assert!(!mount_at(root, "/").unwrap().read_only());
    }

    #[test]
    fn mount_points_below_a_root_nested_ones_included() {
        let info = format!(
            "{RO}\n{}\n1 0 8:1 / / rw - ext4 /dev/vda rw\n5 1 0:9 / /extensions rw - tmpfs t rw\n6 5 0:9 / /extensionsx rw - tmpfs t rw\n8 1 0:9 / /var/lib/postgresql/data rw - tmpfs t rw\n7 5 0:9 / /extensions/a\\040b rw - tmpfs t rw\n{RO}",
            RW.replace("/extensions/pgvector ", "/extensions/pgvector/lib ")
        );
        assert_eq!(
            points_under(&info, "/extensions/"),
            ["/extensions/a b", "/extensions/pgvector", "/extensions/pgvector/lib"]
        );
        assert!(points_under("1 0 8:1 / / rw - ext4 /dev/vda rw", "/extensions").is_empty());
        // The root itself is not below it, whichever way it is written.
        assert!(points_under("5 1 0:9 / /extensions/ rw - tmpfs t rw", "/extensions").is_empty());
    }
}
