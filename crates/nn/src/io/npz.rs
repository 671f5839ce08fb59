//! numpy `.npz` archives and `.npy` arrays: the `zip` crate is the archive layer and `npyz`
//! the npy format of each member. What is ours: the options that make files reproducible, the
//! size checks that bound memory on hostile archives, and a check of the npy header's shape
//! before `npyz` multiplies it out (it would overflow on a hostile one).
//!
//! Read: what we write, `numpy.savez` (stored, zip64 extra fields) and `numpy.savez_compressed`
//! (deflate); npy versions 1.0-3.0; the dtypes listed in the [module doc](super); Fortran-order
//! arrays are transposed into C order, so every value lands at the index numpy gives it.

use super::atomic::atomic_write;
use super::{check_count, check_names, open_regular, Data, EntryInfo, Values};
use crate::error::{Error, Result};
use autograd::error::fmt_shape;
use autograd::{DType, Tensor};
use npyz::{DType as NpyDType, NpyFile, NpyHeader, Order, TypeChar, TypeStr, WriteOptions, WriterBuilder};
use num_traits::ToPrimitive;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::path::Path;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipArchive, ZipWriter};

/// Saves named tensors as an `.npz` archive that `numpy.load` reads: one member `NAME.npy` per
/// entry, in the order given, f32 as `<f4`, f64 as `<f8`, i64 as `<i8` and bool as `|b1`,
/// C order, shape as given.
///
/// The write is atomic: the archive goes to a uniquely named temporary file in the target's
/// folder, is fsynced, then renamed over `path`, so a crash never leaves a half-written
/// checkpoint under the real name. On error the temporary file is removed.
pub fn save_npz(path: &Path, entries: &[(String, Tensor)]) -> Result<()> {
    check_names(path, "save_npz", entries)?;
    let data: Vec<Data> = entries.iter().map(|(_, t)| Data::of(t)).collect::<Result<_>>()?;
    // Stored like numpy.savez; the zip epoch as the time stamp (the default is "now"); no
    // extra fields (none are added for stored members under 4 GiB without `large_file`).
    let options = SimpleFileOptions::default().compression_method(CompressionMethod::Stored).last_modified_time(DateTime::default());
    atomic_write(path, |w| {
        let mut zip = ZipWriter::new(w);
        for ((name, t), data) in entries.iter().zip(&data) {
            zip.start_file(format!("{name}.npy"), options).map_err(io::Error::from)?;
            write_npy(&mut zip, t.shape(), data)?;
        }
        zip.finish().map_err(io::Error::from)?;
        Ok(())
    })
}

/// Loads every array of an `.npz` archive, in archive order, named by member name minus `.npy`.
///
/// Corrupt, truncated or unsupported files give `Error::Format` naming the file, with the byte
/// offset of the member's data (or of the problem inside a stored member's npy data); read
/// failures give `Error::Io`.
pub fn load_npz(path: &Path) -> Result<Vec<(String, Tensor)>> {
    load_npz_checked(path, |infos| Ok(vec![true; infos.len()]))
}

/// [`load_npz`] that reads every member's npy header first (only the first bytes of each
/// member are inflated) and lets `select` refuse the file or pick members before any data.
pub(crate) fn load_npz_checked(path: &Path, select: impl FnOnce(&[EntryInfo]) -> Result<Vec<bool>>) -> Result<Vec<(String, Tensor)>> {
    let (mut file, file_len) = open_regular(path)?;
    let mut magic = Vec::with_capacity(8);
    (&mut file).take(8).read_to_end(&mut magic).map_err(|e| Error::io(path, e))?;
    if magic.starts_with(b"\x93NUMPY") {
        return Err(Error::format(path, 0, "this is an .npy array, not an .npz archive (use load_npy)"));
    }
    if !(magic.starts_with(b"PK\x03\x04") || magic.starts_with(b"PK\x05\x06")) {
        return Err(Error::format(path, 0, format!("not an .npz (zip) file: starts with {magic:02x?}, expected 50 4b 03 04")));
    }
    file.rewind().map_err(|e| Error::io(path, e))?;
    let mut zip = ZipArchive::new(BufReader::new(file)).map_err(|e| Error::format(path, 0, format!("not a readable zip archive: {e}")))?;
    check_count(zip.len()).map_err(|m| Error::format(path, 0, m))?;
    if zip.has_duplicate_names() {
        return Err(Error::format(path, 0, "duplicate entry names in the central directory"));
    }

    // Every declared size is checked before anything is inflated.
    let mut keys = Vec::with_capacity(zip.len());
    let mut spans = Vec::with_capacity(zip.len());
    for i in 0..zip.len() {
        let f = zip.by_index_raw(i).map_err(|e| Error::format(path, 0, format!("entry {i}: {e}")))?;
        let at = f.header_start();
        let name = f.name().map_err(|e| Error::format(path, at, format!("entry {i}: {e}")))?.into_owned();
        let err = |m: String| Error::format(path, at, format!("entry '{name}': {m}"));
        if f.encrypted() {
            return Err(err("encrypted entries are not supported".into()));
        }
        let (compressed, size) = (f.compressed_size(), f.size());
        match f.compression() {
            CompressionMethod::Stored if compressed != size => {
                return Err(err(format!("stored entry has compressed size {compressed} but size {size}")));
            }
            CompressionMethod::Stored => {}
            CompressionMethod::Deflated if size > compressed.saturating_mul(MAX_DEFLATE_RATIO).saturating_add(1024) => {
                return Err(err(format!("claims {size} bytes from {compressed} deflated bytes, beyond deflate's limit")));
            }
            CompressionMethod::Deflated => {}
            m => return Err(err(format!("compression method {m} is not supported (only stored and deflate)"))),
        }
        let Some(key) = name.strip_suffix(".npy") else {
            return Err(err("not an array: .npz members must be named NAME.npy".into()));
        };
        let data_start = f.data_start().ok_or_else(|| err("no data offset".into()))?;
        spans.push((at, data_start.saturating_add(compressed), i));
        keys.push(key.to_string());
    }
    // Members may not share data: otherwise a small file could list one deflate stream
    // thousands of times and inflate to far more than deflate's ratio allows its size. With
    // disjoint spans (local header and data) inside the file, an N-byte file loads to at most
    // about 1032 N bytes.
    spans.sort_unstable();
    let mut end_before = 0;
    for &(start, end, i) in &spans {
        if start < end_before || end > file_len {
            let what = if end > file_len { "runs past the end of the file" } else { "overlaps another member" };
            return Err(Error::format(path, start, format!("entry '{}.npy': its header and data (bytes {start}..{end}) {what}", keys[i])));
        }
        end_before = end;
    }

    // The npy headers: each member's first bytes only, checked against its declared size.
    let mut infos = Vec::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        let mut f = zip.by_index(i).map_err(|e| Error::format(path, 0, format!("entry '{key}.npy': {e}")))?;
        let size = f.size();
        let at = f.data_start().unwrap_or(f.header_start());
        let err = |m: String| Error::format(path, at, format!("entry '{key}.npy': {m}"));
        let mut head = Vec::with_capacity(12);
        f.by_ref().take(size.min(12)).read_to_end(&mut head).map_err(|e| err(format!("corrupt data: {e}")))?;
        let (header_at, header_len) = npy_header_len(&head).map_err(|(_, m)| err(m))?;
        let data_at = (header_at + header_len) as u64;
        if header_len > MAX_NPY_HEADER || data_at > size {
            return Err(err(format!("npy header of {header_len} bytes runs past the member's {size} bytes")));
        }
        // The first 12 bytes are in; read the rest of the header (or drop data bytes).
        let rest = (data_at as usize).saturating_sub(head.len()) as u64;
        head.truncate(data_at as usize);
        f.by_ref().take(rest).read_to_end(&mut head).map_err(|e| err(format!("corrupt data: {e}")))?;
        let (dtype, shape, item) = npy_header_info(&head).map_err(|(_, m)| err(m))?;
        let numel = shape.iter().product::<usize>(); // bounded by npy_header_info
        if (numel as u64).checked_mul(item as u64) != Some(size - data_at) {
            let msg = format!(
                "shape {} needs {} bytes of data but the member declares {}",
                fmt_shape(&shape),
                numel as u128 * item as u128,
                size - data_at
            );
            return Err(err(msg));
        }
        infos.push(EntryInfo { name: key.clone(), dtype, shape });
    }
    let keep = select(&infos)?;

    let mut out = Vec::with_capacity(keys.len());
    for (i, key) in keys.into_iter().enumerate().filter(|&(i, _)| keep[i]) {
        let mut f = zip.by_index(i).map_err(|e| Error::format(path, 0, format!("entry '{key}.npy': {e}")))?;
        let (size, stored) = (f.size(), f.compression() == CompressionMethod::Stored);
        let at = f.data_start().unwrap_or(f.header_start());
        let err = |m: String| Error::format(path, at, format!("entry '{key}.npy': {m}"));
        // At most one byte more than declared, so a lying size cannot make us read more.
        let mut bytes = Vec::with_capacity(size as usize);
        f.by_ref().take(size + 1).read_to_end(&mut bytes).map_err(|e| err(format!("corrupt data: {e}")))?;
        if bytes.len() as u64 != size {
            let more = if bytes.len() as u64 > size { "more than " } else { "" };
            return Err(err(format!("inflates to {more}{} bytes, the directory says {size}", bytes.len().min(size as usize))));
        }
        let tensor = parse_npy(&bytes).map_err(|(pos, m)| match stored {
            true => Error::format(path, at + pos as u64, format!("entry '{key}.npy': {m}")),
            false => err(format!("at byte {pos} of the inflated member: {m}")),
        })?;
        out.push((key, tensor));
    }
    Ok(out)
}

/// The longest npy header read (numpy writes a few hundred bytes; the format allows 4 GiB).
const MAX_NPY_HEADER: usize = 1 << 20;

/// The dtype an npy header's array loads as, its shape and its item size (header checked
/// like [`parse_npy`] does, before `npyz` multiplies the shape out).
fn npy_header_info(b: &[u8]) -> std::result::Result<(DType, Vec<usize>, usize), (usize, String)> {
    let (header_at, data_at) = npy_preamble(b)?;
    check_header(&b[header_at..data_at]).map_err(|m| (header_at, m))?;
    let header = NpyHeader::from_reader(b).map_err(|e| (header_at, format!("npy header: {e}")))?;
    let ty = match header.dtype() {
        NpyDType::Plain(ty) => ty,
        d => return Err((header_at, format!("unsupported dtype '{}' (not a plain number type)", d.descr()))),
    };
    let (dtype, item) = supported(&ty).map_err(|m| (header_at, m))?;
    Ok((dtype, header.shape().iter().map(|&d| d as usize).collect(), item))
}

/// The dtype a supported npy type loads as, and its item size.
fn supported(ty: &TypeStr) -> std::result::Result<(DType, usize), String> {
    match (ty.type_char(), ty.size_field()) {
        (TypeChar::Float, 4) => Ok((DType::F32, 4)),
        (TypeChar::Float, 8) => Ok((DType::F64, 8)),
        (TypeChar::Int, 8) => Ok((DType::I64, 8)),
        (TypeChar::Uint, 1) => Ok((DType::I64, 1)),
        (TypeChar::Bool, 1) => Ok((DType::Bool, 1)),
        _ => Err(format!("unsupported dtype '{ty}' (read: '<f4', '<f8', '<i8', '|b1', '|u1')")),
    }
}

/// Deflate cannot expand data by more than about 1032:1; a member claiming more is corrupt.
const MAX_DEFLATE_RATIO: u64 = 1032;

/// Saves one tensor as a `.npy` file (`numpy.save` format), atomically like [`save_npz`].
pub fn save_npy(path: &Path, tensor: &Tensor) -> Result<()> {
    let data = Data::of(tensor)?;
    atomic_write(path, |w| write_npy(w, tensor.shape(), &data))
}

/// Loads a `.npy` file (any of the dtypes and orders [`load_npz`] accepts).
pub fn load_npy(path: &Path) -> Result<Tensor> {
    // The whole file: its real size bounds the allocation.
    let (mut file, len) = open_regular(path)?;
    let mut bytes = Vec::with_capacity(len as usize);
    file.read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    parse_npy(&bytes).map_err(|(at, m)| Error::format(path, at as u64, m))
}

/// Writes one npy array (header by `npyz`, then the little-endian values).
fn write_npy(w: impl Write, shape: &[usize], data: &Data) -> io::Result<()> {
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    // Explicitly little-endian, so the bytes do not depend on the machine.
    fn begin<T: npyz::Serialize, W: Write>(w: W, descr: &str, shape: &[u64]) -> io::Result<npyz::NpyWriter<T, W>> {
        let ty: TypeStr = descr.parse().map_err(io::Error::other)?;
        WriteOptions::new().dtype(NpyDType::Plain(ty)).shape(shape).writer(w).begin_nd()
    }
    let mut w = BufWriter::new(w);
    match data {
        Data::F32(v) => {
            let mut npy = begin::<f32, _>(&mut w, "<f4", &shape)?;
            npy.extend(v.iter().copied())?;
            npy.finish()?;
        }
        Data::F64(v) => {
            let mut npy = begin::<f64, _>(&mut w, "<f8", &shape)?;
            npy.extend(v.iter().copied())?;
            npy.finish()?;
        }
        Data::I64(v) => {
            let mut npy = begin::<i64, _>(&mut w, "<i8", &shape)?;
            npy.extend(v.iter().copied())?;
            npy.finish()?;
        }
        Data::Bool(v) => {
            let mut npy = begin::<bool, _>(&mut w, "|b1", &shape)?;
            npy.extend(v.iter().copied())?;
            npy.finish()?;
        }
    }
    w.flush()
}

/// Decodes an npy array; errors carry the byte position inside `b`.
fn parse_npy(b: &[u8]) -> std::result::Result<Tensor, (usize, String)> {
    let (header_at, data_at) = npy_preamble(b)?;
    check_header(&b[header_at..data_at]).map_err(|m| (header_at, m))?;
    let npy = NpyFile::new(b).map_err(|e| (header_at, format!("npy header: {e}")))?;
    let ty = match npy.dtype() {
        NpyDType::Plain(ty) => ty,
        d => return Err((header_at, format!("unsupported dtype '{}' (not a plain number type)", d.descr()))),
    };
    let (_, item) = supported(&ty).map_err(|m| (header_at, m))?;
    // check_header bounded the element count; the data must be exactly that many items.
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let numel = npy.len() as usize;
    let have = b.len() - data_at;
    if numel.checked_mul(item) != Some(have) {
        return Err((
            data_at,
            format!("shape {} of '{ty}' needs {} bytes of data but there are {have}", fmt_shape(&shape), numel as u128 * item as u128),
        ));
    }
    let fortran = npy.order() == Order::Fortran;
    let read_err = |e: io::Error| (data_at, format!("npy data: {e}"));
    let values = match ty.type_char() {
        TypeChar::Float if item == 4 => Values::F32(npy.into_vec().map_err(read_err)?),
        TypeChar::Float => Values::F64(npy.into_vec().map_err(read_err)?),
        TypeChar::Int => Values::I64(npy.into_vec().map_err(read_err)?),
        TypeChar::Bool => Values::Bool(npy.into_vec().map_err(read_err)?),
        _ => Values::U8(npy.into_vec().map_err(read_err)?),
    };
    let values = if fortran { fortran_to_c(values, &shape) } else { values };
    values.into_tensor(&shape).map_err(|m| (data_at, m))
}

/// The magic, version and header length; returns where the header text and the data start.
fn npy_preamble(b: &[u8]) -> std::result::Result<(usize, usize), (usize, String)> {
    let (header_at, header_len) = npy_header_len(b)?;
    // Checked here, before npyz allocates a buffer of the declared header length.
    let data_at = header_at
        .checked_add(header_len)
        .filter(|&end| end <= b.len())
        .ok_or_else(|| (8, format!("npy header of {header_len} bytes runs past the array's {} bytes", b.len())))?;
    Ok((header_at, data_at))
}

/// Where the header text starts and its declared length, from the first 10 or 12 bytes.
fn npy_header_len(b: &[u8]) -> std::result::Result<(usize, usize), (usize, String)> {
    if !b.starts_with(b"\x93NUMPY") {
        return Err((0, "bad npy magic (expected \\x93NUMPY)".into()));
    }
    let (header_at, header_len): (usize, usize) = match (b.get(6), b.get(7)) {
        (Some(1), Some(0)) if b.len() >= 10 => (10, u16::from_le_bytes([b[8], b[9]]) as usize),
        (Some(2 | 3), Some(0)) if b.len() >= 12 => (12, u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize),
        (Some(major), Some(minor)) if b.len() >= 12 => return Err((6, format!("unsupported npy version {major}.{minor}"))),
        _ => return Err((b.len(), "truncated npy preamble".into())),
    };
    Ok((header_at, header_len))
}

/// Checks that the header's `descr` is a string and that its shape's elements (zero dims
/// counted as one, since strides multiply the others anyway) fit in memory, so `npyz`'s
/// unchecked products cannot overflow.
fn check_header(text: &[u8]) -> std::result::Result<(), String> {
    use py_literal::Value;
    let text = std::str::from_utf8(text).map_err(|_| "npy header is not text".to_string())?;
    let value: Value = text.trim_end().parse().map_err(|e| format!("npy header {text:?}: {e}"))?;
    let Value::Dict(dict) = value else {
        return Err(format!("npy header {text:?} is not a dict"));
    };
    let get = |key: &str| dict.iter().find(|(k, _)| k.as_string().is_some_and(|k| k == key)).map(|(_, v)| v);
    if !matches!(get("descr"), Some(Value::String(_))) {
        return Err(format!("npy header {text:?}: 'descr' is missing or not a plain dtype string"));
    }
    let dims = match get("shape") {
        Some(Value::Tuple(dims) | Value::List(dims)) => dims,
        _ => return Err(format!("npy header {text:?}: 'shape' is missing or not a tuple")),
    };
    let extent = dims.iter().try_fold(8usize, |n, d| match d {
        Value::Integer(d) => d.to_usize().and_then(|d| n.checked_mul(d.max(1))),
        _ => None,
    });
    match extent {
        Some(bytes) if bytes <= isize::MAX as usize => Ok(()),
        _ => Err(format!("npy header {text:?}: shape has too many elements")),
    }
}

/// Reorders column-major (Fortran) values of `shape` into row-major (C) order.
fn fortran_to_c(values: Values, shape: &[usize]) -> Values {
    fn reorder<T: Copy>(src: Vec<T>, shape: &[usize]) -> Vec<T> {
        if shape.len() < 2 || src.is_empty() {
            return src;
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
    match values {
        Values::F32(v) => Values::F32(reorder(v, shape)),
        Values::F64(v) => Values::F64(reorder(v, shape)),
        Values::I64(v) => Values::I64(reorder(v, shape)),
        Values::Bool(v) => Values::Bool(reorder(v, shape)),
        Values::U8(v) => Values::U8(reorder(v, shape)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fortran_order_is_transposed() {
        let c = |v: Values| match v {
            Values::I64(v) => v,
            _ => unreachable!(),
        };
        // Column-major [[0, 1, 2], [3, 4, 5]] is 0 3 1 4 2 5.
        assert_eq!(c(fortran_to_c(Values::I64(vec![0, 3, 1, 4, 2, 5]), &[2, 3])), vec![0, 1, 2, 3, 4, 5]);
        let out = c(fortran_to_c(Values::I64((0..24).collect()), &[2, 3, 4]));
        // out[i][j][k] = src[i + 2 j + 6 k]
        assert_eq!(out[(3 + 2) * 4 + 3], 1 + 2 * 2 + 6 * 3); // i, j, k = 1, 2, 3
    }

    #[test]
    fn header_check_rejects_garbage() {
        for bad in [
            "",
            "{",
            "[1, 2]",
            "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,)}",
            "{'descr': '<f4', 'fortran_order': False}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': 3}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 1099511627776, 1099511627776)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)} trailing",
        ] {
            assert!(check_header(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert_eq!(check_header(b"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }   \n"), Ok(()));
    }
}
