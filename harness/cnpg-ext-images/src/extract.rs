//! Hardened layer application. Every write goes through directory file
//! descriptors opened with `O_NOFOLLOW`, so no symlink is ever followed
//! while writing; unsafe entries are rejected with their name and a reason.
//!
//! Rules: no absolute names or `..`; no writes through a symlink (from this
//! or an earlier layer); symlink targets must be relative with only leading
//! `..` components that stay inside the root; hardlinks must point to an
//! existing non-directory inside the root; device, fifo and sparse entries
//! are rejected; setuid/setgid/sticky bits and ownership are dropped
//! (everything belongs to the unpacking user); directories keep their mode
//! plus owner `rwx` so the tree can always be removed. OCI whiteouts
//! (`.wh.<name>`, `.wh..wh..opq`) hide lower-layer content only.

use crate::digest::HashingReader;
use crate::error::ImageError;
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use std::cell::Cell;
use std::collections::{BTreeMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io::{self, BufRead, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Bytes of tar metadata (headers, long names, PAX records) allowed before one entry.
const MAX_ENTRY_METADATA: u64 = 1 << 20;
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

/// The four bytes every zstd frame starts with (RFC 8878, 3.1.1).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// Largest zstd window accepted: 2^27 = 128 MiB, zstd's own default limit
/// for decoders (`ZSTD_WINDOWLOG_LIMIT_DEFAULT`), stated here so it is not
/// silently raised by a dependency.
const ZSTD_MAX_WINDOW_LOG: u32 = 27;

/// Resource caps against decompression bombs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_bytes: u64,
    pub max_entries: u64,
}

/// Identifies the layer being applied, for messages.
pub(crate) struct LayerCtx<'a> {
    pub image: &'a Path,
    pub layer: &'a str,
}

/// Shared counters of the metered decompressed stream.
struct Meter {
    total: Cell<u64>,
    max_total: u64,
    in_meta: Cell<bool>,
    meta: Cell<u64>,
    tripped: Cell<Option<&'static str>>,
}

struct Metered<R> {
    inner: R,
    m: Rc<Meter>,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let m = &self.m;
        m.total.set(m.total.get() + n as u64);
        if m.total.get() > m.max_total {
            m.tripped.set(Some("decompressed layer size"));
            return Err(io::Error::other("decompressed layer exceeds the size limit"));
        }
        if m.in_meta.get() {
            m.meta.set(m.meta.get() + n as u64);
            if m.meta.get() > MAX_ENTRY_METADATA {
                m.tripped.set(Some("tar metadata (headers, long names, PAX records) of one entry"));
                return Err(io::Error::other("tar metadata exceeds the limit"));
            }
        }
        Ok(n)
    }
}

/// Applies layers, in order, into a root directory.
pub(crate) struct Extractor {
    root: OwnedFd,
    root_path: PathBuf,
    limits: Limits,
    /// Entries seen, all layers.
    pub entries: u64,
    /// Regular-file bytes written, all layers.
    pub bytes: u64,
    dir_modes: BTreeMap<PathBuf, u32>,
    /// Owner and mode of every file and directory entry, as recorded in
    /// the layers (the last layer to write a path wins).
    pub ownership: crate::compat::Ownership,
    layer_paths: HashSet<PathBuf>,
    cache: Option<(PathBuf, Rc<OwnedFd>)>,
    buf: Vec<u8>,
}

fn errno_io(e: Errno) -> io::Error {
    io::Error::from(e)
}

/// Split an entry name into normal components; `Err(reason)` if unsafe.
pub(crate) fn entry_components(name: &[u8]) -> Result<Vec<OsString>, String> {
    if name.first() == Some(&b'/') {
        return Err("absolute path".into());
    }
    let mut out = Vec::new();
    for c in name.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("path contains a '..' component".into()),
            c => out.push(OsString::from_vec(c.to_vec())),
        }
    }
    Ok(out)
}

/// Check a symlink target for a link whose parent is `depth` directories
/// below the root.
pub(crate) fn check_symlink_target(target: &[u8], depth: usize) -> Result<(), String> {
    let shown = String::from_utf8_lossy(target);
    if target.is_empty() {
        return Err("symlink with an empty target".into());
    }
    if target[0] == b'/' {
        return Err(format!("symlink target {shown:?} is absolute and points outside the image root"));
    }
    let mut ups = 0usize;
    let mut seen_name = false;
    for c in target.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." if seen_name => {
                return Err(format!(
                    "symlink target {shown:?} has '..' after a name; only leading '..' can be checked safely"
                ))
            }
            b".." => ups += 1,
            _ => seen_name = true,
        }
    }
    if ups > depth {
        return Err(format!("symlink target {shown:?} escapes the image root"));
    }
    Ok(())
}

fn rel_of(comps: &[OsString]) -> PathBuf {
    comps.iter().collect()
}

impl Extractor {
    /// Start extracting into the existing, empty directory `root_path`.
    pub(crate) fn new(root_path: &Path, limits: Limits) -> io::Result<Self> {
        let root = rustix::fs::open(
            root_path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno_io)?;
        Ok(Extractor {
            root,
            root_path: root_path.to_path_buf(),
            limits,
            entries: 0,
            bytes: 0,
            dir_modes: BTreeMap::new(),
            ownership: Default::default(),
            layer_paths: HashSet::new(),
            cache: None,
            buf: vec![0u8; 256 * 1024],
        })
    }

    /// Apply one layer blob (gzip- or zstd-compressed, or plain tar; told
    /// apart by their magic bytes, not by the media type). When `diff_id`
    /// is given, the uncompressed stream must hash to it.
    pub(crate) fn apply_layer(
        &mut self,
        raw: impl Read,
        diff_id: Option<&str>,
        ctx: &LayerCtx<'_>,
    ) -> Result<(), ImageError> {
        let corrupt =
            |source: io::Error| ImageError::CorruptLayer { image: ctx.image.into(), layer: ctx.layer.into(), source };
        let mut br = io::BufReader::with_capacity(256 * 1024, raw);
        let head = br.fill_buf().map_err(corrupt)?;
        let decoded: Box<dyn Read + '_> = if head.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::bufread::MultiGzDecoder::new(br))
        } else if head.starts_with(&ZSTD_MAGIC) {
            // Same limits as gzip: the decoded stream goes through the meter below.
            // The window is capped so a crafted frame cannot make the decoder
            // reserve more than 2^ZSTD_MAX_WINDOW_LOG bytes.
            let mut d = zstd::stream::read::Decoder::with_buffer(br).map_err(corrupt)?;
            d.window_log_max(ZSTD_MAX_WINDOW_LOG).map_err(corrupt)?;
            Box::new(d)
        } else {
            Box::new(br)
        };
        let meter = Rc::new(Meter {
            total: Cell::new(0),
            max_total: self
                .limits
                .max_bytes
                .saturating_add(self.limits.max_entries.saturating_mul(2048))
                .saturating_add(16 << 20),
            in_meta: Cell::new(false),
            meta: Cell::new(0),
            tripped: Cell::new(None),
        });
        let hashing = HashingReader::new(decoded);
        let metered = Metered { inner: hashing, m: meter.clone() };
        self.layer_paths.clear();
        self.cache = None;
        let mut archive = tar::Archive::new(metered);
        let classify = |e: io::Error, entry: &str| -> ImageError {
            match meter.tripped.get() {
                Some(what) => ImageError::LimitExceeded {
                    image: ctx.image.into(),
                    layer: ctx.layer.into(),
                    entry: entry.into(),
                    what: what.into(),
                    limit: if what.starts_with("tar metadata") { MAX_ENTRY_METADATA } else { meter.max_total },
                },
                None => corrupt(e),
            }
        };
        {
            let mut entries = archive.entries().map_err(|e| classify(e, ""))?;
            let mut last = String::new();
            loop {
                meter.in_meta.set(true);
                meter.meta.set(0);
                let next = entries.next();
                meter.in_meta.set(false);
                let entry = match next {
                    None => break,
                    Some(Err(e)) => return Err(classify(e, &format!("after {last}"))),
                    Some(Ok(e)) => e,
                };
                last = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                self.entries += 1;
                if self.entries > self.limits.max_entries {
                    return Err(ImageError::LimitExceeded {
                        image: ctx.image.into(),
                        layer: ctx.layer.into(),
                        entry: last,
                        what: "entry count".into(),
                        limit: self.limits.max_entries,
                    });
                }
                self.apply_entry(entry, ctx).map_err(|e| match e {
                    EntryError::Image(e) => e,
                    EntryError::Read(io) => classify(io, &last),
                })?;
            }
        }
        // Drain the rest so a truncated or corrupt compressed trailer is
        // detected and the whole stream is hashed.
        let mut rest = archive.into_inner();
        io::copy(&mut rest, &mut io::sink()).map_err(|e| classify(e, "(end of layer)"))?;
        let (actual, _) = rest.inner.finish();
        if let Some(expected) = diff_id {
            if actual != expected {
                return Err(ImageError::DigestMismatch {
                    image: ctx.image.into(),
                    digest: expected.into(),
                    what: format!("uncompressed content (diff_id) of layer {}", ctx.layer),
                    actual: actual.trim_start_matches("sha256:").into(),
                });
            }
        }
        Ok(())
    }

    /// Set the recorded directory modes; call once after the last layer.
    pub(crate) fn finish(&mut self) -> io::Result<()> {
        self.cache = None;
        let modes = std::mem::take(&mut self.dir_modes);
        for (rel, mode) in modes.iter().rev() {
            let comps: Vec<OsString> = rel.iter().map(|c| c.to_os_string()).collect();
            if let Ok(Some(fd)) = self.walk(&comps, false) {
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(*mode)).map_err(errno_io)?;
            }
        }
        rustix::fs::fchmod(&self.root, Mode::from_raw_mode(0o755)).map_err(errno_io)?;
        Ok(())
    }

    /// Open the directory `comps` (relative to the root) without following
    /// symlinks. Missing directories are created when `create`, else `None`.
    fn walk(&mut self, comps: &[OsString], create: bool) -> Result<Option<OwnedFd>, String> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut cur = rustix::io::dup(&self.root).map_err(|e| e.to_string())?;
        for (i, c) in comps.iter().enumerate() {
            let next = match rustix::fs::openat(&cur, c.as_os_str(), flags, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&cur, c.as_os_str(), Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(format!("cannot create directory: {e}")),
                    }
                    let rel = rel_of(&comps[..=i]);
                    self.dir_modes.entry(rel.clone()).or_insert(0o755);
                    self.layer_paths.insert(rel);
                    rustix::fs::openat(&cur, c.as_os_str(), flags, Mode::empty())
                        .map_err(|e| format!("cannot open directory: {e}"))?
                }
                Err(Errno::NOENT) => return Ok(None),
                Err(Errno::LOOP) | Err(Errno::NOTDIR) => {
                    let prefix = rel_of(&comps[..=i]);
                    let st = rustix::fs::statat(&cur, c.as_os_str(), AtFlags::SYMLINK_NOFOLLOW);
                    return Err(match st {
                        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => format!(
                            "path component {:?} is a symlink; writing through symlinks is not allowed",
                            prefix.display()
                        ),
                        _ => format!("path component {:?} is not a directory", prefix.display()),
                    });
                }
                Err(e) => return Err(format!("cannot open directory {:?}: {e}", rel_of(&comps[..=i]).display())),
            };
            cur = next;
        }
        Ok(Some(cur))
    }

    /// Parent directory fd of an entry (cached for runs of entries in the
    /// same directory).
    fn parent(&mut self, parent: &[OsString]) -> Result<Rc<OwnedFd>, String> {
        let rel = rel_of(parent);
        if let Some((p, fd)) = &self.cache {
            if *p == rel {
                return Ok(fd.clone());
            }
        }
        let fd = Rc::new(self.walk(parent, true)?.expect("created"));
        self.cache = Some((rel, fd.clone()));
        Ok(fd)
    }

    /// Remove whatever is at `name` in `dir` (directories recursively).
    fn remove(&mut self, dir: &impl AsFd, rel: &Path, name: &OsStr) -> io::Result<()> {
        match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                self.cache = None;
                // std's remove_dir_all never follows symlinks; every parent
                // of `rel` was just checked to be a real directory.
                std::fs::remove_dir_all(self.root_path.join(rel))
            }
            Ok(_) => rustix::fs::unlinkat(dir, name, AtFlags::empty()).map_err(errno_io),
            Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(errno_io(e)),
        }
    }

    fn apply_entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>, ctx: &LayerCtx<'_>) -> Result<(), EntryError> {
        let raw_name = entry.path_bytes().into_owned();
        let at = EntryAt { ctx, shown: String::from_utf8_lossy(&raw_name).into_owned() };
        let kind = entry.header().entry_type();
        let mut comps = entry_components(&raw_name).map_err(|r| at.unsafe_entry(r))?;
        use tar::EntryType as T;
        let is_dir =
            kind == T::Directory || ((kind == T::Regular || kind == T::Continuous) && raw_name.ends_with(b"/"));
        match kind {
            T::XGlobalHeader => return Ok(()),
            T::Char | T::Block => return Err(at.unsafe_entry("device nodes are not allowed")),
            T::Fifo => return Err(at.unsafe_entry("fifos are not allowed")),
            T::GNUSparse => return Err(at.unsafe_entry("sparse files are not supported")),
            T::Regular | T::Continuous | T::Directory | T::Symlink | T::Link => {}
            other => return Err(at.unsafe_entry(format!("unsupported entry type {other:?}"))),
        }
        let Some(name) = comps.pop() else {
            if is_dir {
                return Ok(()); // the root itself
            }
            return Err(at.unsafe_entry("entry names the image root"));
        };
        let mode = entry.header().mode().map_err(EntryError::Read)? & 0o777;
        if name.as_bytes().starts_with(WHITEOUT_PREFIX) {
            return self.whiteout(&comps, &name, &at);
        }
        let owner = crate::compat::FileOwner {
            uid: entry.header().uid().unwrap_or(0),
            gid: entry.header().gid().unwrap_or(0),
            mode,
        };
        let parent = self.parent(&comps).map_err(|r| at.unsafe_entry(r))?;
        let place = Place { parent: &parent, rel: rel_of(&comps).join(&name), name: &name, comps: &comps };
        self.layer_paths.insert(place.rel.clone());
        if is_dir {
            return self.directory(place, owner, &at);
        }
        match kind {
            T::Symlink => {
                let target = entry.link_name_bytes().ok_or_else(|| at.unsafe_entry("symlink without a target"))?;
                check_symlink_target(&target, comps.len()).map_err(|r| at.unsafe_entry(r))?;
                self.remove(place.parent, &place.rel, place.name).map_err(|e| at.io(e))?;
                rustix::fs::symlinkat(OsStr::from_bytes(&target), place.parent, place.name)
                    .map_err(|e| at.io(e.into()))?;
                self.ownership.remove(&place.rel);
                Ok(())
            }
            T::Link => {
                let target =
                    entry.link_name_bytes().ok_or_else(|| at.unsafe_entry("hardlink without a target"))?.into_owned();
                self.hardlink(place, &target, &at)
            }
            _ => self.regular_file(&mut entry, place, owner, &at),
        }
    }

    /// A whiteout entry (`.wh.<name>` or the opaque `.wh..wh..opq`) in the directory `comps`.
    fn whiteout(&mut self, comps: &[OsString], name: &OsStr, at: &EntryAt) -> Result<(), EntryError> {
        let parent_rel = rel_of(comps);
        let nb = name.as_bytes();
        if nb == OPAQUE {
            if let Some(dir) = self.walk(comps, false).map_err(|r| at.unsafe_entry(r))? {
                self.cache = None;
                self.clear_lower(&dir, &parent_rel).map_err(|e| at.io(e))?;
            }
            return Ok(());
        }
        let target = OsStr::from_bytes(&nb[WHITEOUT_PREFIX.len()..]);
        if target.is_empty() || target == "." || target == ".." || target.as_bytes().contains(&b'/') {
            return Err(at.unsafe_entry("whiteout of an invalid name"));
        }
        let trel = parent_rel.join(target);
        if self.layer_paths.contains(&trel) {
            return Ok(()); // whiteouts hide lower layers only
        }
        if let Some(dir) = self.walk(comps, false).map_err(|r| at.unsafe_entry(r))? {
            self.remove(&dir, &trel, target).map_err(|e| at.io(e))?;
        }
        self.ownership.retain(|p, _| !p.starts_with(&trel));
        Ok(())
    }

    /// A directory entry: an existing directory stays (its lower content too), anything else
    /// at that name is replaced.
    fn directory(&mut self, place: Place<'_>, owner: crate::compat::FileOwner, at: &EntryAt) -> Result<(), EntryError> {
        match rustix::fs::statat(place.parent, place.name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
            _ => {
                self.remove(place.parent, &place.rel, place.name).map_err(|e| at.io(e))?;
                rustix::fs::mkdirat(place.parent, place.name, Mode::from_raw_mode(0o755))
                    .map_err(|e| at.io(e.into()))?;
            }
        }
        self.ownership.insert(place.rel.clone(), owner);
        self.dir_modes.insert(place.rel, owner.mode | 0o700);
        Ok(())
    }

    /// A hard link: its target must be a regular file (or a safe symlink) already unpacked
    /// inside the root; the link takes the target's owner and mode (one inode).
    fn hardlink(&mut self, place: Place<'_>, target: &[u8], at: &EntryAt) -> Result<(), EntryError> {
        let tshown = String::from_utf8_lossy(target).into_owned();
        let mut tcomps = entry_components(target)
            .map_err(|r| at.unsafe_entry(format!("hardlink target {tshown:?} is outside the image root ({r})")))?;
        let Some(tname) = tcomps.pop() else {
            return Err(at.unsafe_entry("hardlink to the image root"));
        };
        if tcomps == place.comps && tname == place.name {
            return Ok(());
        }
        let missing = || at.unsafe_entry(format!("hardlink target {tshown:?} does not exist"));
        let tdir = self
            .walk(&tcomps, false)
            .map_err(|r| at.unsafe_entry(format!("hardlink target {tshown:?}: {r}")))?
            .ok_or_else(missing)?;
        let st = match rustix::fs::statat(&tdir, tname.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Err(missing()),
            Err(e) => return Err(at.io(e.into())),
        };
        match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => {}
            FileType::Symlink => {
                let t = rustix::fs::readlinkat(&tdir, tname.as_os_str(), Vec::new()).map_err(|e| at.io(e.into()))?;
                check_symlink_target(t.as_bytes(), place.comps.len())
                    .map_err(|r| at.unsafe_entry(format!("hardlink to a symlink: {r}")))?;
            }
            _ => return Err(at.unsafe_entry(format!("hardlink target {tshown:?} is not a regular file"))),
        }
        self.remove(place.parent, &place.rel, place.name).map_err(|e| at.io(e))?;
        rustix::fs::linkat(&tdir, tname.as_os_str(), place.parent, place.name, AtFlags::empty())
            .map_err(|e| at.io(e.into()))?;
        let target_rel = rel_of(&tcomps).join(&tname);
        match self.ownership.get(&target_rel).copied() {
            Some(o) => self.ownership.insert(place.rel, o),
            None => self.ownership.remove(&place.rel),
        };
        Ok(())
    }

    /// A regular file: created anew (never through an existing name), metered against the
    /// total size limit, and checked to have as many bytes as its header says.
    fn regular_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        place: Place<'_>,
        owner: crate::compat::FileOwner,
        at: &EntryAt,
    ) -> Result<(), EntryError> {
        let size = entry.size();
        if self.bytes.saturating_add(size) > self.limits.max_bytes {
            return Err(EntryError::Image(ImageError::LimitExceeded {
                image: at.ctx.image.into(),
                layer: at.ctx.layer.into(),
                entry: at.shown.clone(),
                what: "total uncompressed file size".into(),
                limit: self.limits.max_bytes,
            }));
        }
        self.remove(place.parent, &place.rel, place.name).map_err(|e| at.io(e))?;
        let fd = rustix::fs::openat(
            place.parent,
            place.name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| at.io(e.into()))?;
        let mut file = std::fs::File::from(fd);
        let mut written = 0u64;
        loop {
            let n = entry.read(&mut self.buf).map_err(EntryError::Read)?;
            if n == 0 {
                break;
            }
            file.write_all(&self.buf[..n]).map_err(|e| at.io(e))?;
            written += n as u64;
        }
        if written != size {
            return Err(EntryError::Read(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("entry {:?} ended after {written} of {size} bytes", at.shown),
            )));
        }
        self.bytes += written;
        rustix::fs::fchmod(&file, Mode::from_raw_mode(owner.mode)).map_err(|e| at.io(e.into()))?;
        self.ownership.insert(place.rel, owner);
        Ok(())
    }

    /// Opaque whiteout: remove everything below `dir` that this layer did
    /// not itself add.
    fn clear_lower(&mut self, dir: &OwnedFd, dir_rel: &Path) -> io::Result<()> {
        let mut names = Vec::new();
        let mut d = rustix::fs::Dir::read_from(dir).map_err(errno_io)?;
        while let Some(ent) = d.read() {
            let ent = ent.map_err(errno_io)?;
            let n = ent.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(OsString::from_vec(n.to_vec()));
            }
        }
        for n in names {
            let rel = dir_rel.join(&n);
            if self.layer_paths.contains(&rel) {
                let st = rustix::fs::statat(dir, n.as_os_str(), AtFlags::SYMLINK_NOFOLLOW).map_err(errno_io)?;
                if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    let sub = rustix::fs::openat(
                        dir,
                        n.as_os_str(),
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(errno_io)?;
                    self.clear_lower(&sub, &rel)?;
                }
            } else {
                self.remove(dir, &rel, &n)?;
            }
        }
        Ok(())
    }
}

enum EntryError {
    Image(ImageError),
    /// Reading the layer stream failed (corrupt, truncated or over a cap).
    Read(io::Error),
}

/// The entry being applied, for its errors: the image, the layer and the entry's name as shown.
struct EntryAt<'a> {
    ctx: &'a LayerCtx<'a>,
    shown: String,
}

impl EntryAt<'_> {
    fn unsafe_entry(&self, reason: impl Into<String>) -> EntryError {
        EntryError::Image(ImageError::UnsafeEntry {
            image: self.ctx.image.into(),
            layer: self.ctx.layer.into(),
            entry: self.shown.clone(),
            reason: reason.into(),
        })
    }

    fn io(&self, e: io::Error) -> EntryError {
        EntryError::Image(ImageError::io(
            self.ctx.image.to_path_buf(),
            io::Error::new(e.kind(), format!("layer {} entry {:?}: {e}", self.ctx.layer, self.shown)),
        ))
    }
}

/// Where a non-whiteout entry goes: its parent directory (an fd inside the root), its path
/// relative to the root, its last name and its parent's components.
struct Place<'a> {
    parent: &'a OwnedFd,
    rel: PathBuf,
    name: &'a OsStr,
    comps: &'a [OsString],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_targets() {
        assert!(check_symlink_target(b"libfoo.so.1.2", 0).is_ok());
        assert!(check_symlink_target(b"../lib/x.so", 1).is_ok());
        assert!(check_symlink_target(b"../x", 0).is_err());
        assert!(check_symlink_target(b"/etc/passwd", 3).is_err());
        assert!(check_symlink_target(b"a/../../x", 5).is_err());
        assert!(check_symlink_target(b"", 0).is_err());
    }

    #[test]
    fn components() {
        assert_eq!(entry_components(b"./a//b/").unwrap().len(), 2);
        assert!(entry_components(b"/a").is_err());
        assert!(entry_components(b"a/../b").is_err());
    }
}
