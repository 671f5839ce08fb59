//! Checkpoints as numpy `.npz` archives (and single `.npy` arrays), so weights move between
//! this library and numpy/PyTorch scripts with no converter: `np.load("ckpt.npz")["fc1.weight"]`.
//!
//! The zip layer is our own rather than a zip crate's, for two guarantees that are easier to
//! keep in a few hundred lines we control:
//! - **Reproducible files.** The same tensors give the same bytes (hashable, diffable): members
//!   in the order given, stored uncompressed like `numpy.savez`, timestamps fixed at
//!   1980-01-01 00:00, no extra fields, no comment, npy headers byte-identical to numpy's.
//! - **Hostile input is an error, never a panic or a huge allocation.** Every size and offset
//!   read from the file is checked against the file's real length (and, for deflate, against
//!   deflate's maximum ratio) before anything is allocated, and every member's CRC-32 is checked.
//!   Members may not overlap, so an N-byte file never loads to more than about 1032 N bytes.
//!
//! Inflate and CRC-32 come from `flate2`.
//!
//! Read: what we write, `numpy.savez` (zip64 extra fields) and `numpy.savez_compressed`
//! (deflate); npy versions 1.0-3.0; dtypes `<f4`, `<f8` and their big-endian forms; Fortran-order
//! arrays are transposed into C order, so every value lands at the index numpy gives it.
//! Not written: archives or members over 4 GiB (zip64); saving one is an `Error::Io`.

use crate::error::{Error, Result};
use autograd::{DType, Tensor};
use std::borrow::Cow;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

// ----- public API ------------------------------------------------------------------------

/// Saves named tensors as an `.npz` archive that `numpy.load` reads: one member `NAME.npy` per
/// entry, in the order given, f32 as `<f4` and f64 as `<f8`, C order, shape as given.
///
/// The write is atomic: the archive goes to a uniquely named temporary file in the target's
/// folder, is fsynced, then renamed over `path`, so a crash never leaves a half-written
/// checkpoint under the real name. On error the temporary file is removed.
pub fn save_npz(path: &Path, entries: &[(String, Tensor)]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for (name, _) in entries {
        if name.is_empty() {
            return Err(Error::io(path, "save_npz: an entry has an empty name"));
        }
        if !seen.insert(name.as_str()) {
            return Err(Error::io(path, format!("save_npz: duplicate entry name '{name}'")));
        }
    }
    let members: Vec<Member> = entries.iter().map(|(name, t)| Member::new(name, t)).collect::<Result<_>>()?;
    plan_zip(&members).map_err(|m| Error::io(path, format!("save_npz: {m}")))?;
    atomic_write(path, |w| write_zip(w, &members))
}

/// Loads every array of an `.npz` archive, in archive order, named by member name minus `.npy`.
///
/// Corrupt, truncated or unsupported files give `Error::Format` with the byte offset of the
/// problem (of the member, or inside its npy data); read failures give `Error::Io`.
pub fn load_npz(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let mut file = ReadFile::open(path)?;
    let dir = read_central_directory(&mut file)?;
    let mut out = Vec::with_capacity(dir.entries.len());
    for e in &dir.entries {
        let tensor = read_member(&mut file, e, dir.cd_offset)?;
        out.push((e.key.clone(), tensor));
    }
    Ok(out)
}

/// Saves one tensor as a `.npy` file (`numpy.save` format), atomically like [`save_npz`].
pub fn save_npy(path: &Path, tensor: &Tensor) -> Result<()> {
    let m = Member::new("", tensor)?;
    atomic_write(path, |w| {
        w.write_all(&m.header)?;
        m.data.write_le(w)
    })
}

/// Loads a `.npy` file (any of the dtypes and orders [`load_npz`] accepts).
pub fn load_npy(path: &Path) -> Result<Tensor> {
    let mut file = ReadFile::open(path)?;
    let len = usize::try_from(file.len).map_err(|_| Error::format(path, 0, "file too large for this platform"))?;
    let bytes = file.read_at(0, len, "npy file")?;
    parse_npy(&bytes).map_err(|(at, m)| Error::format(path, at as u64, m))
}

// ----- writing ---------------------------------------------------------------------------

/// The data of one tensor in its own dtype, contiguous.
enum Data<'a> {
    F32(Cow<'a, [f32]>),
    F64(Cow<'a, [f64]>),
}

impl Data<'_> {
    fn byte_len(&self) -> u64 {
        match self {
            Data::F32(v) => v.len() as u64 * 4,
            Data::F64(v) => v.len() as u64 * 8,
        }
    }

    /// Feeds the little-endian bytes to `f` in chunks (no copy of the whole tensor).
    fn for_each_le_chunk(&self, f: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        const CHUNK: usize = 8192;
        let mut buf = Vec::with_capacity(CHUNK * 8);
        macro_rules! chunks {
            ($v:expr) => {
                for c in $v.chunks(CHUNK) {
                    buf.clear();
                    c.iter().for_each(|x| buf.extend_from_slice(&x.to_le_bytes()));
                    f(&buf)?;
                }
            };
        }
        match self {
            Data::F32(v) => chunks!(v),
            Data::F64(v) => chunks!(v),
        }
        Ok(())
    }

    fn write_le(&self, w: &mut dyn Write) -> io::Result<()> {
        self.for_each_le_chunk(&mut |b| w.write_all(b))
    }
}

/// One archive member: zip name, npy header, data and CRC-32 of header + data.
struct Member<'a> {
    zip_name: String,
    header: Vec<u8>,
    data: Data<'a>,
    crc: u32,
    size: u64,
}

impl<'a> Member<'a> {
    fn new(name: &str, t: &'a Tensor) -> Result<Member<'a>> {
        let (data, descr) = match t.dtype() {
            DType::F32 => (Data::F32(t.contiguous_data::<f32>()?), "<f4"),
            DType::F64 => (Data::F64(t.contiguous_data::<f64>()?), "<f8"),
        };
        let header = npy_header(descr, t.shape());
        let mut crc = flate2::Crc::new();
        crc.update(&header);
        data.for_each_le_chunk(&mut |b| {
            crc.update(b);
            Ok(())
        })
        .map_err(|e| Error::io("", e))?;
        let size = header.len() as u64 + data.byte_len();
        Ok(Member { zip_name: format!("{name}.npy"), header, data, crc: crc.sum(), size })
    }
}

/// The npy header exactly as numpy 1.24+ writes it: the dict in sorted key order, spare spaces
/// for growing the first axis, padded with spaces and a newline to a multiple of 64 bytes.
fn npy_header(descr: &str, shape: &[usize]) -> Vec<u8> {
    const ALIGN: usize = 64;
    const GROWTH_AXIS_MAX_DIGITS: usize = 21;
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_repr = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_repr}, }}");
    if let Some(first) = dims.first() {
        dict.push_str(&" ".repeat(GROWTH_AXIS_MAX_DIGITS.saturating_sub(first.len())));
    }
    // Version 1.0 has a u16 header length; 2.0 a u32 (only for absurdly many dimensions).
    let hlen = dict.len() + 1;
    let pad = |prefix: usize| ALIGN - (prefix + hlen) % ALIGN;
    let mut out = b"\x93NUMPY".to_vec();
    if hlen + pad(10) <= u16::MAX as usize {
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&((hlen + pad(10)) as u16).to_le_bytes());
        out.extend_from_slice(dict.as_bytes());
        out.resize(out.len() + pad(10) + 1, b' ');
    } else {
        out.extend_from_slice(&[2, 0]);
        out.extend_from_slice(&((hlen + pad(12)) as u32).to_le_bytes());
        out.extend_from_slice(dict.as_bytes());
        out.resize(out.len() + pad(12) + 1, b' ');
    }
    *out.last_mut().expect("header is not empty") = b'\n';
    out
}

const SIG_LOCAL: u32 = 0x0403_4b50;
const SIG_CENTRAL: u32 = 0x0201_4b50;
const SIG_EOCD: u32 = 0x0605_4b50;
const SIG_ZIP64_EOCD: u32 = 0x0606_4b50;
const SIG_ZIP64_LOCATOR: u32 = 0x0706_4b50;
/// MS-DOS date of 1980-01-01 (the zip epoch), time 00:00: fixed so files are reproducible.
const DOS_DATE_1980: u16 = (1 << 5) | 1;
const LOCAL_HEADER_LEN: u64 = 30;
const CENTRAL_HEADER_LEN: u64 = 46;
const EOCD_LEN: u64 = 22;
/// Zip 2.0: enough for stored and deflated members.
const ZIP_VERSION: u16 = 20;
/// General-purpose flag: the name is UTF-8.
const FLAG_UTF8: u16 = 1 << 11;

/// Checks that the archive fits the classic (non-zip64) format before anything is written.
fn plan_zip(members: &[Member]) -> std::result::Result<(), String> {
    let too_big = |what: &str| format!("{what} does not fit a non-zip64 archive (over 4 GiB or 65535 entries)");
    if members.len() >= u16::MAX as usize {
        return Err(too_big(&format!("{} entries", members.len())));
    }
    let (mut offset, mut central) = (0u64, 0u64);
    for m in members {
        if m.zip_name.len() > u16::MAX as usize {
            return Err(format!("entry name of {} bytes is too long", m.zip_name.len()));
        }
        if m.size >= u32::MAX as u64 || offset >= u32::MAX as u64 {
            return Err(too_big(&format!("entry '{}'", m.zip_name)));
        }
        offset += LOCAL_HEADER_LEN + m.zip_name.len() as u64 + m.size;
        central += CENTRAL_HEADER_LEN + m.zip_name.len() as u64;
    }
    if offset >= u32::MAX as u64 || central >= u32::MAX as u64 {
        return Err(too_big("the archive"));
    }
    Ok(())
}

/// Writes a stored zip of the members (sizes already checked by [`plan_zip`]).
fn write_zip(w: &mut dyn Write, members: &[Member]) -> io::Result<()> {
    let mut central = Vec::new();
    let mut offset = 0u64;
    for m in members {
        let flags = if m.zip_name.is_ascii() { 0 } else { FLAG_UTF8 };
        let (size, name) = (m.size as u32, m.zip_name.as_bytes());
        // Local file header.
        let mut h = Vec::with_capacity(LOCAL_HEADER_LEN as usize + name.len());
        put32(&mut h, SIG_LOCAL);
        for v in [ZIP_VERSION, flags, 0 /* stored */, 0 /* time */, DOS_DATE_1980] {
            put16(&mut h, v);
        }
        for v in [m.crc, size, size] {
            put32(&mut h, v);
        }
        put16(&mut h, name.len() as u16);
        put16(&mut h, 0); // no extra field
        h.extend_from_slice(name);
        w.write_all(&h)?;
        w.write_all(&m.header)?;
        m.data.write_le(w)?;
        // Its central directory record.
        put32(&mut central, SIG_CENTRAL);
        for v in [ZIP_VERSION /* made by: MS-DOS, 2.0 */, ZIP_VERSION, flags, 0, 0, DOS_DATE_1980] {
            put16(&mut central, v);
        }
        for v in [m.crc, size, size] {
            put32(&mut central, v);
        }
        for v in [name.len() as u16, 0 /* extra */, 0 /* comment */, 0 /* disk */, 0 /* internal attrs */] {
            put16(&mut central, v);
        }
        put32(&mut central, 0); // external attributes
        put32(&mut central, offset as u32);
        central.extend_from_slice(name);
        offset += LOCAL_HEADER_LEN + name.len() as u64 + m.size;
    }
    w.write_all(&central)?;
    let mut eocd = Vec::with_capacity(EOCD_LEN as usize);
    put32(&mut eocd, SIG_EOCD);
    for v in [0, 0, members.len() as u16, members.len() as u16] {
        put16(&mut eocd, v);
    }
    put32(&mut eocd, central.len() as u32);
    put32(&mut eocd, offset as u32);
    put16(&mut eocd, 0); // no comment
    w.write_all(&eocd)
}

fn put16(b: &mut Vec<u8>, v: u16) {
    b.extend_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}

/// Writes through a unique temporary file in the target's folder, fsyncs it and renames it
/// over `path`; removes the temporary file on any failure (the guard also covers panics).
fn atomic_write(path: &Path, write: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> Result<()> {
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

// ----- reading ---------------------------------------------------------------------------

/// A file being read, with every read bounds-checked against its real length.
struct ReadFile<'p> {
    file: File,
    len: u64,
    path: &'p Path,
}

impl<'p> ReadFile<'p> {
    fn open(path: &'p Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        Ok(ReadFile { file, len, path })
    }

    fn err(&self, offset: u64, message: impl Into<String>) -> Error {
        Error::format(self.path, offset, message)
    }

    /// Reads `n` bytes at `offset`, or a `Format` error naming `what` if the file is too short
    /// (so `n` never exceeds the file's size and no declared size can cause a huge allocation).
    fn read_at(&mut self, offset: u64, n: usize, what: &str) -> Result<Vec<u8>> {
        let end = offset.checked_add(n as u64);
        if end.is_none_or(|end| end > self.len) {
            return Err(self.err(offset, format!("truncated file: {what} needs {n} bytes here but the file has {} bytes", self.len)));
        }
        let mut buf = vec![0; n];
        self.file.seek(SeekFrom::Start(offset)).map_err(|e| Error::io(self.path, e))?;
        self.file.read_exact(&mut buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => self.err(offset, format!("truncated file: {what} (file shrank while reading)")),
            _ => Error::io(self.path, e),
        })?;
        Ok(buf)
    }
}

/// Little-endian fields of a byte slice; `None` past its end.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn u16(&mut self) -> Option<u16> {
        self.bytes(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.bytes(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        self.bytes(8).map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    }
}

struct CentralDirectory {
    entries: Vec<Entry>,
    cd_offset: u64,
}

/// A member as the central directory describes it.
struct Entry {
    zip_name: String,
    key: String,
    method: u16,
    crc: u32,
    compressed: u64,
    uncompressed: u64,
    local_offset: u64,
}

const METHOD_STORED: u16 = 0;
const METHOD_DEFLATE: u16 = 8;
/// Deflate cannot expand data by more than about 1032:1; a member claiming more is corrupt.
const MAX_DEFLATE_RATIO: u64 = 1032;

fn read_central_directory(f: &mut ReadFile) -> Result<CentralDirectory> {
    let magic = f.read_at(0, f.len.min(8) as usize, "magic")?;
    if magic.starts_with(b"\x93NUMPY") {
        return Err(f.err(0, "this is an .npy array, not an .npz archive (use load_npy)"));
    }
    if !(magic.starts_with(b"PK\x03\x04") || magic.starts_with(b"PK\x05\x06")) {
        return Err(f.err(0, format!("not an .npz (zip) file: starts with {magic:02x?}, expected 50 4b 03 04")));
    }
    // The end-of-central-directory record ends the file, after a comment of at most 64 KiB.
    if f.len < EOCD_LEN {
        return Err(f.err(0, format!("truncated file: {} bytes is too short for a zip archive", f.len)));
    }
    let tail_len = f.len.min(EOCD_LEN + u16::MAX as u64);
    let tail_start = f.len - tail_len;
    let tail = f.read_at(tail_start, tail_len as usize, "end of central directory")?;
    let eocd_pos = (0..=tail.len() - EOCD_LEN as usize)
        .rev()
        .find(|&i| {
            tail[i..i + 4] == SIG_EOCD.to_le_bytes()
                && i + EOCD_LEN as usize + u16::from_le_bytes([tail[i + 20], tail[i + 21]]) as usize == tail.len()
        })
        .ok_or_else(|| f.err(f.len, "no end-of-central-directory record: truncated or not a zip archive"))?;
    let eocd_at = tail_start + eocd_pos as u64;
    let mut c = Cursor::new(&tail[eocd_pos + 4..]);
    let field = |v: Option<u16>| v.unwrap_or_default();
    let (disk, cd_disk, n_disk, n_total) = (field(c.u16()), field(c.u16()), field(c.u16()), field(c.u16()));
    let (cd_size, cd_offset) = (c.u32().unwrap_or_default() as u64, c.u32().unwrap_or_default() as u64);
    let (mut disk, mut cd_disk, mut n_disk, mut n_total, mut cd_size, mut cd_offset, mut cd_limit) =
        (disk as u32, cd_disk as u32, n_disk as u64, n_total as u64, cd_size, cd_offset, eocd_at);

    // Zip64: a locator just before the record points at the 64-bit version of it.
    let has_locator = eocd_pos >= 20 && tail[eocd_pos - 20..eocd_pos - 16] == SIG_ZIP64_LOCATOR.to_le_bytes();
    if has_locator {
        let loc_at = eocd_at - 20;
        let mut c = Cursor::new(&tail[eocd_pos - 16..eocd_pos]);
        let (_, z64_at) = (c.u32(), c.u64().unwrap_or_default());
        if z64_at > loc_at.saturating_sub(56) {
            return Err(f.err(loc_at, format!("zip64 locator points at byte {z64_at}, past itself")));
        }
        let rec = f.read_at(z64_at, 56, "zip64 end of central directory")?;
        let mut c = Cursor::new(&rec);
        if c.u32() != Some(SIG_ZIP64_EOCD) {
            return Err(f.err(z64_at, "bad zip64 end-of-central-directory signature"));
        }
        let _ = (c.u64(), c.u16(), c.u16()); // record size, versions
        disk = c.u32().unwrap_or_default();
        cd_disk = c.u32().unwrap_or_default();
        n_disk = c.u64().unwrap_or_default();
        n_total = c.u64().unwrap_or_default();
        cd_size = c.u64().unwrap_or_default();
        cd_offset = c.u64().unwrap_or_default();
        cd_limit = z64_at;
    } else if n_total == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_offset == 0xFFFF_FFFF {
        return Err(f.err(eocd_at, "zip64 values in the end record but no zip64 locator"));
    }
    if disk != 0 || cd_disk != 0 || n_disk != n_total {
        return Err(f.err(eocd_at, "multi-disk (split) zip archives are not supported"));
    }
    if cd_offset.checked_add(cd_size).is_none_or(|end| end > cd_limit) {
        return Err(
            f.err(eocd_at, format!("central directory (offset {cd_offset}, {cd_size} bytes) runs past its end record at byte {cd_limit}"))
        );
    }
    if n_total.checked_mul(CENTRAL_HEADER_LEN).is_none_or(|min| min > cd_size) {
        return Err(f.err(eocd_at, format!("{n_total} entries cannot fit a central directory of {cd_size} bytes")));
    }
    let cd = f.read_at(cd_offset, cd_size as usize, "central directory")?;

    let mut entries: Vec<Entry> = Vec::with_capacity(n_total as usize);
    let mut c = Cursor::new(&cd);
    for _ in 0..n_total {
        let at = cd_offset + c.pos as u64;
        let trunc = || f.err(at, "central directory entry is truncated");
        if c.u32() != Some(SIG_CENTRAL) {
            return Err(f.err(at, "bad central directory entry signature"));
        }
        let _versions = c.bytes(4).ok_or_else(trunc)?;
        let flags = c.u16().ok_or_else(trunc)?;
        let method = c.u16().ok_or_else(trunc)?;
        let _time_date = c.bytes(4).ok_or_else(trunc)?;
        let crc = c.u32().ok_or_else(trunc)?;
        let compressed32 = c.u32().ok_or_else(trunc)?;
        let uncompressed32 = c.u32().ok_or_else(trunc)?;
        let name_len = c.u16().ok_or_else(trunc)? as usize;
        let extra_len = c.u16().ok_or_else(trunc)? as usize;
        let comment_len = c.u16().ok_or_else(trunc)? as usize;
        let _disk_attrs = c.bytes(8).ok_or_else(trunc)?;
        let offset32 = c.u32().ok_or_else(trunc)?;
        let name = c.bytes(name_len).ok_or_else(trunc)?;
        let extra = c.bytes(extra_len).ok_or_else(trunc)?;
        c.bytes(comment_len).ok_or_else(trunc)?;

        let zip_name = std::str::from_utf8(name)
            .map_err(|_| f.err(at, format!("entry name {:?} is not UTF-8", String::from_utf8_lossy(name))))?
            .to_string();
        let ctx = |m: String| f.err(at, format!("entry '{zip_name}': {m}"));
        if flags & 1 != 0 {
            return Err(ctx("encrypted entries are not supported".into()));
        }
        if method != METHOD_STORED && method != METHOD_DEFLATE {
            return Err(ctx(format!("compression method {method} is not supported (only stored and deflate)")));
        }
        let Some(key) = zip_name.strip_suffix(".npy") else {
            return Err(ctx("not an array: .npz members must be named NAME.npy".into()));
        };
        if entries.iter().any(|e| e.key == key) {
            return Err(ctx("duplicate entry".into()));
        }
        // Zip64 extra field: 64-bit values for exactly the fields saturated at 0xFFFFFFFF.
        let (mut uncompressed, mut compressed, mut local_offset) = (uncompressed32 as u64, compressed32 as u64, offset32 as u64);
        let mut x = Cursor::new(extra);
        while let (Some(id), Some(size)) = (x.u16(), x.u16()) {
            let body = x.bytes(size as usize).ok_or_else(|| ctx("extra field is truncated".into()))?;
            if id == 1 {
                let mut z = Cursor::new(body);
                let bad = || ctx("zip64 extra field is too short".into());
                if uncompressed32 == u32::MAX {
                    uncompressed = z.u64().ok_or_else(bad)?;
                }
                if compressed32 == u32::MAX {
                    compressed = z.u64().ok_or_else(bad)?;
                }
                if offset32 == u32::MAX {
                    local_offset = z.u64().ok_or_else(bad)?;
                }
            }
        }
        if method == METHOD_STORED && compressed != uncompressed {
            return Err(ctx(format!("stored entry has compressed size {compressed} but size {uncompressed}")));
        }
        if method == METHOD_DEFLATE && uncompressed > compressed.saturating_mul(MAX_DEFLATE_RATIO).saturating_add(1024) {
            return Err(ctx(format!("claims {uncompressed} bytes from {compressed} deflated bytes, beyond deflate's limit")));
        }
        entries.push(Entry { key: key.to_string(), zip_name, method, crc, compressed, uncompressed, local_offset });
    }
    // Members may not share data: otherwise a small file could list the same deflate stream
    // thousands of times and inflate to far more than its size allows.
    let members_len =
        entries.iter().try_fold(0u64, |sum, e| sum.checked_add(LOCAL_HEADER_LEN + e.zip_name.len() as u64)?.checked_add(e.compressed));
    if members_len.is_none_or(|len| len > cd_offset) {
        return Err(f.err(cd_offset, "members overlap: their sizes add up to more than the data before the central directory"));
    }
    Ok(CentralDirectory { entries, cd_offset })
}

/// Reads, inflates and CRC-checks one member, then decodes its npy array.
fn read_member(f: &mut ReadFile, e: &Entry, cd_offset: u64) -> Result<Tensor> {
    let at = e.local_offset;
    let ctx = |m: String| format!("entry '{}': {m}", e.zip_name);
    let h = f.read_at(at, LOCAL_HEADER_LEN as usize, "local file header")?;
    let mut c = Cursor::new(&h);
    if c.u32() != Some(SIG_LOCAL) {
        return Err(f.err(at, ctx("bad local file header signature".into())));
    }
    let _ = c.bytes(22);
    let (name_len, extra_len) = (c.u16().unwrap_or_default() as u64, c.u16().unwrap_or_default() as u64);
    let name = f.read_at(at + LOCAL_HEADER_LEN, name_len as usize, "local file name")?;
    if name != e.zip_name.as_bytes() {
        return Err(f.err(at, ctx(format!("local header names '{}'", String::from_utf8_lossy(&name)))));
    }
    let data_at = at + LOCAL_HEADER_LEN + name_len + extra_len;
    if data_at.checked_add(e.compressed).is_none_or(|end| end > cd_offset) {
        return Err(f.err(at, ctx(format!("{} bytes of data run past the central directory", e.compressed))));
    }
    let raw = f.read_at(data_at, e.compressed as usize, "entry data")?;
    let bytes = if e.method == METHOD_DEFLATE {
        let mut out = Vec::new();
        flate2::read::DeflateDecoder::new(&raw[..])
            .take(e.uncompressed.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|err| f.err(data_at, ctx(format!("corrupt deflate data: {err}"))))?;
        if out.len() as u64 != e.uncompressed {
            return Err(f.err(
                data_at,
                ctx(format!(
                    "inflates to {}{} bytes, the directory says {}",
                    if out.len() as u64 > e.uncompressed { "more than " } else { "" },
                    out.len().min(e.uncompressed as usize),
                    e.uncompressed
                )),
            ));
        }
        out
    } else {
        raw
    };
    let mut crc = flate2::Crc::new();
    crc.update(&bytes);
    if crc.sum() != e.crc {
        return Err(f.err(data_at, ctx(format!("CRC-32 mismatch: data {:08x}, directory {:08x}", crc.sum(), e.crc))));
    }
    parse_npy(&bytes).map_err(|(pos, m)| match e.method {
        METHOD_STORED => f.err(data_at + pos as u64, ctx(m)),
        _ => f.err(data_at, ctx(format!("at byte {pos} of the inflated member: {m}"))),
    })
}

/// Decodes an npy array; errors carry the byte position inside `b`.
fn parse_npy(b: &[u8]) -> std::result::Result<Tensor, (usize, String)> {
    if !b.starts_with(b"\x93NUMPY") {
        return Err((0, "bad npy magic (expected \\x93NUMPY)".into()));
    }
    let (major, minor) = (b.get(6).copied(), b.get(7).copied());
    let (header_at, header_len): (usize, usize) = match (major, minor) {
        (Some(1), Some(0)) if b.len() >= 10 => (10, u16::from_le_bytes([b[8], b[9]]) as usize),
        (Some(2 | 3), Some(0)) if b.len() >= 12 => (12, u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize),
        (Some(_), Some(_)) if b.len() >= 12 => {
            return Err((6, format!("unsupported npy version {}.{}", b[6], b[7])));
        }
        _ => return Err((b.len(), "truncated npy preamble".into())),
    };
    let data_at = header_at
        .checked_add(header_len)
        .filter(|&end| end <= b.len())
        .ok_or_else(|| (8, format!("npy header of {header_len} bytes runs past the member's {} bytes", b.len())))?;
    let text =
        std::str::from_utf8(&b[header_at..data_at]).map_err(|e| (header_at + e.valid_up_to(), "npy header is not text".to_string()))?;
    let h = parse_header(text).map_err(|(pos, m)| (header_at + pos, format!("npy header {text:?}: {m}")))?;

    let (big_endian, item) = match h.descr.as_str() {
        "<f4" => (false, 4),
        ">f4" => (true, 4),
        "<f8" => (false, 8),
        ">f8" => (true, 8),
        d => return Err((header_at, format!("unsupported dtype '{d}' (only float32 '<f4' and float64 '<f8')"))),
    };
    // Zero-sized dims do not excuse huge others: strides multiply the non-zero dims too.
    let extent = h.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d.max(1)));
    let numel = h.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    let nbytes = numel
        .and_then(|n| n.checked_mul(item))
        .filter(|_| extent.and_then(|e| e.checked_mul(item)).is_some_and(|e| e <= isize::MAX as usize));
    let Some((numel, nbytes)) = numel.zip(nbytes) else {
        return Err((header_at, format!("shape {:?} has too many elements", h.shape)));
    };
    let data = &b[data_at..];
    if data.len() != nbytes {
        return Err((data_at, format!("shape {:?} of '{}' needs {nbytes} bytes of data but there are {}", h.shape, h.descr, data.len())));
    }
    let tensor = if item == 4 {
        let v: Vec<f32> = data
            .chunks_exact(4)
            .map(|c| {
                let a = [c[0], c[1], c[2], c[3]];
                if big_endian {
                    f32::from_be_bytes(a)
                } else {
                    f32::from_le_bytes(a)
                }
            })
            .collect();
        let v = if h.fortran_order { fortran_to_c(&v, &h.shape) } else { v };
        Tensor::from_vec(v, &h.shape)
    } else {
        let v: Vec<f64> = data
            .chunks_exact(8)
            .map(|c| {
                let a = [c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]];
                if big_endian {
                    f64::from_be_bytes(a)
                } else {
                    f64::from_le_bytes(a)
                }
            })
            .collect();
        let v = if h.fortran_order { fortran_to_c(&v, &h.shape) } else { v };
        Tensor::from_vec(v, &h.shape)
    };
    debug_assert_eq!(numel * item, nbytes);
    tensor.map_err(|e| (data_at, e.to_string()))
}

/// Reorders column-major (Fortran) data of `shape` into row-major (C) order.
fn fortran_to_c<T: Copy>(src: &[T], shape: &[usize]) -> Vec<T> {
    if shape.len() < 2 || src.is_empty() {
        return src.to_vec();
    }
    // Fortran strides; their products are bounded by src.len(), so they cannot overflow.
    let mut stride = vec![1usize; shape.len()];
    for k in 1..shape.len() {
        stride[k] = stride[k - 1] * shape[k - 1];
    }
    let mut index = vec![0usize; shape.len()];
    let mut offset = 0;
    let mut out = Vec::with_capacity(src.len());
    for _ in 0..src.len() {
        out.push(src[offset]);
        for k in (0..shape.len()).rev() {
            index[k] += 1;
            offset += stride[k];
            if index[k] < shape[k] {
                break;
            }
            offset -= stride[k] * shape[k];
            index[k] = 0;
        }
    }
    out
}

/// The npy header dict: `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`.
struct NpyHeader {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// Parses the Python-literal header with a small recursive-descent parser (no eval). Requires
/// exactly the keys `descr`, `fortran_order` and `shape`, like numpy. Errors carry the position.
fn parse_header(s: &str) -> std::result::Result<NpyHeader, (usize, String)> {
    let b = s.as_bytes();
    let mut i = 0;
    let ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    let expect = |i: &mut usize, ch: u8| -> std::result::Result<(), (usize, String)> {
        ws(i);
        if b.get(*i) == Some(&ch) {
            *i += 1;
            Ok(())
        } else {
            Err((*i, format!("expected '{}'", ch as char)))
        }
    };
    let string = |i: &mut usize| -> std::result::Result<String, (usize, String)> {
        ws(i);
        let q = match b.get(*i) {
            Some(&q @ (b'\'' | b'"')) => q,
            _ => return Err((*i, "expected a string".into())),
        };
        let start = *i + 1;
        let len = b[start..].iter().position(|&c| c == q).ok_or((*i, "unterminated string".to_string()))?;
        if b[start..start + len].contains(&b'\\') {
            return Err((start, "escapes are not supported in header strings".into()));
        }
        *i = start + len + 1;
        Ok(s[start..start + len].to_string())
    };
    let (mut descr, mut fortran_order, mut shape) = (None, None, None);
    expect(&mut i, b'{')?;
    loop {
        ws(&mut i);
        if b.get(i) == Some(&b'}') {
            i += 1;
            break;
        }
        let key_at = i;
        let key = string(&mut i)?;
        expect(&mut i, b':')?;
        ws(&mut i);
        let dup = match key.as_str() {
            "descr" => descr.replace(string(&mut i)?).is_some(),
            "fortran_order" => {
                let v = if s[i..].starts_with("True") {
                    true
                } else if s[i..].starts_with("False") {
                    false
                } else {
                    return Err((i, "expected True or False".into()));
                };
                i += if v { 4 } else { 5 };
                fortran_order.replace(v).is_some()
            }
            "shape" => {
                let mut dims = Vec::new();
                expect(&mut i, b'(')?;
                loop {
                    ws(&mut i);
                    if b.get(i) == Some(&b')') {
                        i += 1;
                        break;
                    }
                    let start = i;
                    let mut d = 0usize;
                    while let Some(c @ b'0'..=b'9') = b.get(i).copied() {
                        d = d
                            .checked_mul(10)
                            .and_then(|d| d.checked_add((c - b'0') as usize))
                            .ok_or((start, "dimension too large".to_string()))?;
                        i += 1;
                    }
                    if i == start {
                        return Err((i, "expected a dimension".into()));
                    }
                    if b.get(i) == Some(&b'L') {
                        i += 1; // Python 2 long
                    }
                    dims.push(d);
                    ws(&mut i);
                    match b.get(i) {
                        Some(b',') => i += 1,
                        Some(b')') => {}
                        _ => return Err((i, "expected ',' or ')' in the shape".into())),
                    }
                }
                shape.replace(dims).is_some()
            }
            _ => return Err((key_at, format!("unexpected key '{key}'"))),
        };
        if dup {
            return Err((key_at, format!("duplicate key '{key}'")));
        }
        ws(&mut i);
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => {}
            _ => return Err((i, "expected ',' or '}'".into())),
        }
    }
    ws(&mut i);
    if i != b.len() {
        return Err((i, "unexpected text after the header dict".into()));
    }
    match (descr, fortran_order, shape) {
        (Some(descr), Some(fortran_order), Some(shape)) => Ok(NpyHeader { descr, fortran_order, shape }),
        _ => Err((0, "header needs the keys 'descr', 'fortran_order' and 'shape'".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_matches_numpy_layout() {
        // numpy 2.4: np.save of np.zeros((2, 3), np.float32), first 64 bytes.
        let h = npy_header("<f4", &[2, 3]);
        assert_eq!(h.len(), 128);
        let text = std::str::from_utf8(&h[10..]).unwrap();
        assert!(text.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"));
        assert!(text.ends_with(" \n"));
        assert_eq!(u16::from_le_bytes([h[8], h[9]]) as usize, h.len() - 10);
        for shape in [&[][..], &[7], &[1, 2, 3, 4]] {
            let h = npy_header("<f8", shape);
            assert_eq!(h.len() % 64, 0);
            let p = parse_header(std::str::from_utf8(&h[10..]).unwrap()).unwrap();
            assert_eq!((p.descr.as_str(), p.fortran_order, &p.shape[..]), ("<f8", false, shape));
        }
    }

    #[test]
    fn fortran_order_is_transposed() {
        // Column-major [[0, 1, 2], [3, 4, 5]] is 0 3 1 4 2 5.
        assert_eq!(fortran_to_c(&[0, 3, 1, 4, 2, 5], &[2, 3]), vec![0, 1, 2, 3, 4, 5]);
        let src: Vec<usize> = (0..24).collect();
        let out = fortran_to_c(&src, &[2, 3, 4]);
        // out[i][j][k] = src[i + 2 j + 6 k]
        assert_eq!(out[(3 + 2) * 4 + 3], 1 + 2 * 2 + 6 * 3); // i, j, k = 1, 2, 3
    }

    #[test]
    fn header_parser_rejects_garbage() {
        for bad in [
            "",
            "{",
            "{'descr': '<f4'}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'x': 1}",
            "{'descr': '<f4', 'fortran_order': Nope, 'shape': (2,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,)}",
            "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': ()}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)} trailing",
        ] {
            assert!(parse_header(bad).is_err(), "{bad:?}");
        }
    }
}
