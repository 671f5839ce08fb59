//! Atomic replacement of a file, so a crash or a full disk never leaves a half-written
//! checkpoint under the real name.

use crate::error::{Error, Result};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes through a unique temporary file in the target's folder (so the rename stays on one
/// filesystem), fsyncs it and renames it over `path`; removes the temporary file on any
/// failure (the guard also covers panics). The writer is seekable, as the zip writer needs.
pub(crate) fn atomic_write(path: &Path, write: impl FnOnce(&mut BufWriter<&File>) -> io::Result<()>) -> Result<()> {
    struct RemoveOnDrop(Option<PathBuf>);
    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            if let Some(p) = self.0.take() {
                let _ = fs::remove_file(p);
            }
        }
    }
    static COUNTER: AtomicU64 = AtomicU64::new(0);

    let file_name = path.file_name().ok_or_else(|| Error::io(path, "not a file path"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let (tmp, file) = loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut name = std::ffi::OsString::from(".");
        name.push(file_name);
        name.push(format!(".{}.{n}.tmp", std::process::id()));
        let tmp = dir.join(name);
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => break (tmp, f),
            // A stale file from a crashed run with the same pid: take the next number.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n % 1000 != 999 => continue,
            Err(e) => return Err(Error::io(path, format!("cannot create temporary file {}: {e}", tmp.display()))),
        }
    };
    let mut guard = RemoveOnDrop(Some(tmp.clone()));
    let io_err = |what: &str, e: io::Error| Error::io(path, format!("{what} {}: {e}", tmp.display()));
    let mut w = BufWriter::with_capacity(1 << 20, &file);
    write(&mut w).map_err(|e| io_err("writing", e))?;
    w.flush().map_err(|e| io_err("writing", e))?;
    drop(w);
    file.sync_all().map_err(|e| io_err("syncing", e))?;
    drop(file);
    fs::rename(&tmp, path).map_err(|e| Error::io(path, format!("renaming {} over it: {e}", tmp.display())))?;
    guard.0 = None;
    // Make the rename itself durable. Best effort: some filesystems refuse to sync a folder.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
