//! The IDX file format of MNIST and Fashion-MNIST (<http://yann.lecun.com/exdb/mnist/>),
//! raw or gzipped.
//!
//! Layout: two zero bytes, a type code (`0x08` = u8, the only one these data sets use),
//! the number of dims, one big-endian u32 per dim, then the row-major payload.
//!
//! The files come from the network, so nothing in them is trusted: every failure is an
//! [`Error::Format`] naming the byte offset in the decompressed stream, never a panic,
//! and memory grows with the bytes actually decoded, never with what the header claims.
//! Every reader also takes the geometry its caller accepts ([`Dim`] per dim) and checks the
//! header against it before decoding any data: an honest header announcing 5,000,000
//! images, or one 46000x46000 image, is refused in microseconds instead of decoded.

use crate::error::{Error, Result};
use flate2::bufread::MultiGzDecoder;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

/// Type code of unsigned bytes, the third byte of the magic.
const TYPE_U8: u8 = 0x08;
/// The first two bytes of every gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// A decoded IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idx {
    /// The dims from the header, outermost first (`[N, rows, cols]` for images).
    pub dims: Vec<usize>,
    /// The row-major payload; its length is the product of `dims`.
    pub data: Vec<u8>,
}

/// The values one header dim may take: `min..=max`. The reader's limit: the caller says
/// what it can use, and a header outside it is refused before any data is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dim {
    pub min: usize,
    pub max: usize,
}

impl Dim {
    /// Exactly `n` (image rows and columns).
    pub const fn exactly(n: usize) -> Dim {
        Dim { min: n, max: n }
    }
    /// `1..=max` (a sample count: an empty data set is an error).
    pub const fn count(max: usize) -> Dim {
        Dim { min: 1, max }
    }
    /// `0..=max`.
    pub const fn at_most(max: usize) -> Dim {
        Dim { min: 0, max }
    }
    fn describe(&self) -> String {
        match (self.min, self.max) {
            (a, b) if a == b => format!("exactly {a}"),
            (0, b) => format!("at most {b}"),
            (a, b) => format!("{a} to {b}"),
        }
    }
}

/// Reads an IDX file of u8 with one dim per entry of `expect`, each within its [`Dim`]
/// (checked on the header, before any data is decoded). Gzip is detected by the gzip magic
/// `1f 8b`, not by the name, so a renamed file still reads; concatenated gzip members
/// read as one stream, as with `gunzip`. Only regular files are read.
pub fn read_idx(path: impl AsRef<Path>, expect: &[Dim]) -> Result<Idx> {
    let path = path.as_ref();
    let (file, _) = crate::io::open_regular(path)?;
    let mut file = BufReader::with_capacity(1 << 16, file);
    let head = file.fill_buf().map_err(|e| Error::io(path, e))?;
    if head.starts_with(&GZIP_MAGIC) {
        parse(MultiGzDecoder::new(file), path, expect, true)
    } else {
        parse(file, path, expect, false)
    }
}

/// Reads an IDX image file: u8 pixels with dims `[N, rows, cols]` within `expect`.
pub fn read_images(path: impl AsRef<Path>, expect: [Dim; 3]) -> Result<Idx> {
    read_idx(path, &expect)
}

/// Reads an IDX label file (dims `[N]`, `N` within `count`) and checks every label is below
/// `num_classes`, so a bad label fails here, naming its offset, rather than as an index
/// error in the loss.
pub fn read_labels(path: impl AsRef<Path>, count: Dim, num_classes: usize) -> Result<Vec<usize>> {
    let path = path.as_ref();
    let idx = read_idx(path, &[count])?;
    let header = header_len(1);
    idx.data
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            let label = usize::from(b);
            if label < num_classes {
                Ok(label)
            } else {
                let msg = format!("label {label} of sample {i} is out of range 0..{num_classes}");
                Err(Error::format(path, header + i as u64, msg))
            }
        })
        .collect()
}

fn header_len(rank: usize) -> u64 {
    4 + 4 * rank as u64
}

/// Parses the stream: header first, then at most the announced payload plus one byte,
/// which is enough to tell "trailing bytes" from "exact" without decoding a gzip bomb.
fn parse(inner: impl Read, path: &Path, expect: &[Dim], gzip: bool) -> Result<Idx> {
    let rank = expect.len();
    let mut r = Counting { inner, count: 0 };
    let header_bytes = |r: &mut Counting<_>, buf: &mut [u8]| match read_full(r, buf) {
        Ok(true) => Ok(()),
        Ok(false) => Err(Error::format(path, r.count, "truncated in the header")),
        Err(e) => Err(read_error(path, r.count, e, "header", gzip)),
    };

    let mut magic = [0u8; 4];
    header_bytes(&mut r, &mut magic)?;
    if magic[0] != 0 || magic[1] != 0 {
        let [a, b, c, d] = magic;
        let msg = format!("bad magic {a:02x} {b:02x} {c:02x} {d:02x}: an IDX file starts with two zero bytes");
        return Err(Error::format(path, 0, msg));
    }
    if magic[2] != TYPE_U8 {
        let msg = format!("element type 0x{:02x} is not supported (only 0x08, unsigned byte)", magic[2]);
        return Err(Error::format(path, 2, msg));
    }
    if usize::from(magic[3]) != rank {
        let msg = format!("{} dims where {rank} are expected", magic[3]);
        return Err(Error::format(path, 3, msg));
    }

    let mut dims = Vec::with_capacity(rank);
    let mut payload: usize = 1;
    for i in 0..rank {
        let offset = 4 + 4 * i as u64;
        let mut b = [0u8; 4];
        header_bytes(&mut r, &mut b)?;
        let d = u32::from_be_bytes(b) as usize;
        payload = payload.checked_mul(d).ok_or_else(|| {
            let msg = format!("dims {dims:?} times {d} overflow the address space");
            Error::format(path, offset, msg)
        })?;
        dims.push(d);
    }
    // The caller's geometry, before a byte of data is decoded.
    for (i, (&d, rule)) in dims.iter().zip(expect).enumerate() {
        if d < rule.min || d > rule.max {
            let empty = if d == 0 { " (no samples)" } else { "" };
            let msg = format!("header dims {dims:?}: dim {i} is {d}{empty}, this reader accepts {}", rule.describe());
            return Err(Error::format(path, 4 + 4 * i as u64, msg));
        }
    }

    let header = header_len(rank);
    let want = payload as u64;
    // No `with_capacity(payload)`: the header may lie, so grow with the data that is there.
    let mut data = Vec::new();
    let mut limited = (&mut r).take(want.saturating_add(1));
    if let Err(e) = limited.read_to_end(&mut data) {
        return Err(read_error(path, header + data.len() as u64, e, "payload", gzip));
    }
    let got = data.len() as u64;
    if got < want {
        let msg = format!("truncated: the header {dims:?} announces {want} bytes of data but only {got} follow");
        return Err(Error::format(path, header + got, msg));
    }
    if got > want {
        let msg = format!("trailing bytes after the {want} bytes of data announced by the header {dims:?}");
        return Err(Error::format(path, header + want, msg));
    }
    Ok(Idx { dims, data })
}

/// An OS read failure is `Io`; any other error comes from the gzip decoder, so the
/// contents are bad and it is `Format` at the offset reached.
fn read_error(path: &Path, offset: u64, e: io::Error, what: &str, gzip: bool) -> Error {
    if e.kind() == io::ErrorKind::OutOfMemory {
        return Error::io(path, format!("out of memory at byte {offset} of the {what}"));
    }
    if e.raw_os_error().is_some() || !gzip {
        return Error::io(path, e);
    }
    Error::format(path, offset, format!("corrupt gzip stream in the {what} ({e})"))
}

/// Fills `buf`; `Ok(false)` at a clean end of stream, so truncation is told apart from
/// a decoder error, and the byte count stays exact either way.
fn read_full<R: Read>(r: &mut Counting<R>, buf: &mut [u8]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Counts the decompressed bytes read, which is the offset every error reports.
struct Counting<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}
