//! Atomic replacement of a file, so a crash or a full disk never leaves a half-written
//! checkpoint under the real name, and safe opening of files to read.
//!
//! What a save may touch: only a regular file (or nothing) at the target, found by following
//! symlinks as `torch.save` does (the link stays, its target gets the new contents), and
//! temporary files named after that target. A device, FIFO, socket or folder at the target
//! is refused, never replaced: `--save /dev/null` as root used to replace the device.

use crate::error::{Error, Result};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The most symlinks followed to find the real target (Linux's own limit is 40).
const MAX_LINKS: usize = 40;
/// Target names longer than this (bytes) are shortened in temporary names, so that
/// `.{stem}.{pid}.{n}.tmp` stays under NAME_MAX (255) for every legal target name.
const STEM_MAX: usize = 180;
/// How much of a long name a shortened stem keeps before `~` and the name's hash.
const STEM_KEEP: usize = 150;

/// What a file system object is, for messages.
fn kind(t: fs::FileType) -> &'static str {
    match () {
        _ if t.is_dir() => "a folder",
        _ if t.is_fifo() => "a FIFO",
        _ if t.is_char_device() => "a character device",
        _ if t.is_block_device() => "a block device",
        _ if t.is_socket() => "a socket",
        _ if t.is_symlink() => "a symlink",
        _ => "not a regular file",
    }
}

/// Opens `path` to read, refusing anything but a regular file. `O_NONBLOCK` makes opening a
/// FIFO with no writer return at once instead of blocking forever; the type is then checked
/// on the open file (`fstat`), so nothing can be swapped in between. Returns the file size.
pub(crate) fn open_regular(path: &Path) -> Result<(File, u64)> {
    let file = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::io(path, format!("is {}, not a regular file: refusing to read it", kind(meta.file_type()))));
    }
    Ok((file, meta.len()))
}

/// The file a save to `path` really writes: symlinks followed (a dangling one too, so its
/// target is created). An error if it exists and is not a regular file.
pub(crate) fn resolve_target(path: &Path) -> Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let to = fs::read_link(&p).map_err(|e| Error::io(path, format!("reading the symlink {}: {e}", p.display())))?;
                // A relative link is relative to the link's folder; an absolute one replaces it.
                p = p.parent().map_or(to.clone(), |d| d.join(&to));
            }
            Ok(m) if m.is_file() => return Ok(p),
            Ok(m) => {
                let via = if p == path { String::new() } else { format!(" (via symlinks: {})", p.display()) };
                return Err(Error::io(path, format!("is {}{via}, not a regular file: refusing to replace it", kind(m.file_type()))));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(p),
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    Err(Error::io(path, format!("more than {MAX_LINKS} levels of symlinks")))
}

/// The folder a file lives in (`.` for a bare name).
fn folder(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// The part of a temporary name that names the target: the name itself, or for a long one
/// its first bytes, `~` and a hash of the whole (stable across runs, so stale files from
/// an earlier run are found).
fn temp_stem(name: &OsStr) -> OsString {
    let b = name.as_bytes();
    if b.len() <= STEM_MAX {
        return name.to_os_string();
    }
    let mut cut = STEM_KEEP;
    while cut > 0 && b[cut] & 0xc0 == 0x80 {
        cut -= 1; // keep UTF-8 names valid
    }
    // FNV-1a: tiny and fixed forever, unlike std's hasher.
    let hash = b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3));
    let mut out = b[..cut].to_vec();
    out.extend(format!("~{hash:016x}").bytes());
    OsString::from_vec(out)
}

/// `.{stem}.{pid}.{n}.tmp`.
fn temp_name(stem: &OsStr, pid: u32, n: u64) -> OsString {
    let mut name = OsString::from(".");
    name.push(stem);
    name.push(format!(".{pid}.{n}.tmp"));
    name
}

/// The writer's pid if `name` is one of our temporary files for `stem`.
fn temp_pid(name: &OsStr, stem: &OsStr) -> Option<u32> {
    let rest = name.as_bytes().strip_prefix(b".")?.strip_prefix(stem.as_bytes())?.strip_prefix(b".")?.strip_suffix(b".tmp")?;
    let dot = rest.iter().position(|&c| c == b'.')?;
    let (pid, n) = (&rest[..dot], &rest[dot + 1..]);
    let digits = |s: &[u8]| !s.is_empty() && s.len() <= 20 && s.iter().all(u8::is_ascii_digit);
    if !(digits(pid) && digits(n)) {
        return None;
    }
    std::str::from_utf8(pid).ok()?.parse().ok()
}

/// Whether process `pid` exists. `kill(pid, 0)` sends nothing; only `ESRCH` means there is
/// no such process (`EPERM`: it exists but is not ours). In doubt, alive.
fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return true };
    if pid <= 0 {
        return true; // 0 and negatives address process groups: never probe them
    }
    // SAFETY: kill with signal 0 only checks for the process; it touches no memory.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Removes temporary files for `stem` in `dir` left by writers that no longer run (a killed
/// save). A live writer's file, including this process's, is never touched. Best effort.
fn remove_stale(dir: &Path, stem: &OsStr) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    let me = std::process::id();
    for e in entries.flatten() {
        let name = e.file_name();
        if let Some(pid) = temp_pid(&name, stem) {
            if pid != me && !alive(pid) {
                let _ = fs::remove_file(dir.join(&name));
            }
        }
    }
}

/// Creates a new, uniquely named temporary file for `target` in its folder.
fn create_temp(path: &Path, target: &Path) -> Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let file_name = target.file_name().ok_or_else(|| Error::io(path, "not a file path"))?;
    let stem = temp_stem(file_name);
    let dir = folder(target);
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(temp_name(&stem, std::process::id(), n));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            // A stale file from a crashed run with the same pid: take the next number.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n % 1000 != 999 => continue,
            Err(e) => return Err(Error::io(path, format!("cannot create a temporary file in {}: {e}", dir.display()))),
        }
    }
}

/// Checks, before any work, that a later [`atomic_write`] to `path` can succeed as far as
/// can be known now: the target is a regular file or absent, its folder exists, and a file
/// can be created there (created and removed at once).
pub(crate) fn check_writable(path: &Path) -> Result<()> {
    let target = resolve_target(path)?;
    let dir = folder(&target);
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(Error::io(path, format!("{} is not a folder", dir.display()))),
        Err(e) => return Err(Error::io(path, format!("folder {}: {e}", dir.display()))),
    }
    let (tmp, file) = create_temp(path, &target)?;
    drop(file);
    let _ = fs::remove_file(tmp);
    Ok(())
}

/// Writes through a unique temporary file in the target's folder (so the rename stays on one
/// filesystem), fsyncs it and renames it over the target; removes the temporary file on any
/// failure (the guard also covers panics). The target is `path` with symlinks followed; it
/// must be a regular file or absent. Stale temporary files of killed writers are removed
/// first. The writer is seekable, as the zip writer needs.
pub(crate) fn atomic_write(path: &Path, write: impl FnOnce(&mut BufWriter<&File>) -> io::Result<()>) -> Result<()> {
    struct RemoveOnDrop(Option<PathBuf>);
    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            if let Some(p) = self.0.take() {
                let _ = fs::remove_file(p);
            }
        }
    }

    let target = resolve_target(path)?;
    let dir = folder(&target);
    if let Some(name) = target.file_name() {
        remove_stale(dir, &temp_stem(name));
    }
    let (tmp, file) = create_temp(path, &target)?;
    let mut guard = RemoveOnDrop(Some(tmp.clone()));
    let io_err = |what: &str, e: io::Error| Error::io(path, format!("{what} {}: {e}", tmp.display()));
    let mut w = BufWriter::with_capacity(1 << 20, &file);
    write(&mut w).map_err(|e| io_err("writing", e))?;
    w.flush().map_err(|e| io_err("writing", e))?;
    drop(w);
    file.sync_all().map_err(|e| io_err("syncing", e))?;
    drop(file);
    // Checked again just before the rename: something other than a regular file may have
    // appeared at the target while we wrote (a window remains, as with any rename).
    resolve_target(path)?;
    fs::rename(&tmp, &target).map_err(|e| Error::io(path, format!("renaming {} over {}: {e}", tmp.display(), target.display())))?;
    guard.0 = None;
    // Make the rename itself durable. Best effort: some filesystems refuse to sync a folder.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_fit_name_max_and_parse_back() {
        for len in [1, 100, 180, 181, 255] {
            let name = OsString::from("é".repeat(len / 2) + &"x".repeat(len % 2));
            let stem = temp_stem(&name);
            let tmp = temp_name(&stem, u32::MAX, u64::MAX);
            assert!(tmp.len() <= 255, "{len}: {}", tmp.len());
            assert!(tmp.to_str().is_some(), "stays UTF-8");
            assert_eq!(temp_pid(&tmp, &stem), Some(u32::MAX));
        }
        let stem = OsStr::new("a");
        assert_eq!(temp_pid(OsStr::new(".a.12.3.tmp"), stem), Some(12));
        for other in [".a.npz.12.3.tmp", ".a.1.2.3.tmp", ".a.12.tmp", ".a..3.tmp", "a.12.3.tmp", ".a.x.3.tmp", ".ab.12.3.tmp"] {
            assert_eq!(temp_pid(OsStr::new(other), stem), None, "{other}");
        }
        assert_ne!(temp_stem(OsStr::new(&"a".repeat(200))), temp_stem(OsStr::new(&("a".repeat(199) + "b"))));
    }

    #[test]
    fn liveness() {
        assert!(alive(std::process::id()));
        assert!(alive(0) && alive(u32::MAX));
    }
}
