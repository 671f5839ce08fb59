//! `.safetensors` files, the format PyTorch users exchange weights in, through the
//! `safetensors` crate: an 8-byte header length, a JSON header of names, dtypes, shapes and
//! data offsets, then the little-endian data. The crate validates the header (size limit,
//! offsets that tile the data exactly, no overflow) before we look at any tensor.
//!
//! Tensors are stored in the crate's order (by dtype, then name), so the bytes depend only on
//! the tensors, and read back in file order.

use super::atomic::atomic_write;
use super::{check_count, check_names, open_regular, Data, EntryInfo, Values};
use crate::error::{Error, Result};
use autograd::{DType, Tensor};
use safetensors::tensor::Metadata;
use safetensors::{Dtype, View};
use std::borrow::Cow;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Saves named tensors as a `.safetensors` file (F32, F64, I64, BOOL; no metadata), atomically like
/// [`save_npz`](super::save_npz). `safetensors.torch.load_file` reads it.
pub fn save_safetensors(path: &Path, entries: &[(String, Tensor)]) -> Result<()> {
    check_names(path, "save_safetensors", entries)?;
    let views: Vec<(&str, TensorView)> =
        entries.iter().map(|(name, t)| Ok((name.as_str(), TensorView { data: Data::of(t)?, shape: t.shape() }))).collect::<Result<_>>()?;
    let bytes = safetensors::serialize(views, None).map_err(|e| Error::io(path, format!("save_safetensors: {e}")))?;
    atomic_write(path, |w| w.write_all(&bytes))
}

/// Loads every tensor of a `.safetensors` file, in the order of their data in the file.
/// Invalid files give `Error::Format` naming the file (offset 0 for the header, else the
/// tensor's data); dtypes are kept, except U8, which loads as i64 ([module doc](super)).
pub fn load_safetensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    load_safetensors_checked(path, |infos| Ok(vec![true; infos.len()]))
}

/// The largest header read, as in the `safetensors` crate.
const MAX_HEADER: u64 = 100_000_000;

/// [`load_safetensors`] that reads the header alone first (the `safetensors` crate's
/// `Metadata`, which checks that the offsets tile the data with no overflow) and lets
/// `select` refuse the file or pick tensors; then reads only the picked tensors' bytes.
pub(crate) fn load_safetensors_checked(
    path: &Path,
    select: impl FnOnce(&[EntryInfo]) -> Result<Vec<bool>>,
) -> Result<Vec<(String, Tensor)>> {
    let (mut file, file_len) = open_regular(path)?;
    let bad = |m: String| Error::format(path, 0, format!("not a readable safetensors file: {m}"));
    let mut n = [0u8; 8];
    file.read_exact(&mut n).map_err(|e| bad(format!("no header length ({e})")))?;
    let header_len = u64::from_le_bytes(n);
    if header_len > MAX_HEADER || header_len > file_len - 8 {
        return Err(bad(format!("header length {header_len} is beyond the limit ({MAX_HEADER}) or the file's {file_len} bytes")));
    }
    let mut header = Vec::with_capacity(header_len as usize);
    (&mut file).take(header_len).read_to_end(&mut header).map_err(|e| Error::io(path, e))?;
    let metadata: Metadata = serde_json::from_slice(&header).map_err(|e| bad(format!("header: {e}")))?;
    let data_at = 8 + header_len;
    if metadata.data_len() as u64 != file_len - data_at {
        return Err(bad(format!("the header describes {} bytes of data but the file has {}", metadata.data_len(), file_len - data_at)));
    }
    let names = metadata.offset_keys();
    check_count(names.len()).map_err(|m| Error::format(path, 0, m))?;
    let mut infos = Vec::with_capacity(names.len());
    for name in &names {
        let info = metadata.info(name).ok_or_else(|| Error::format(path, 0, format!("tensor '{name}' is listed but has no entry")))?;
        let dtype = match info.dtype {
            Dtype::F32 => DType::F32,
            Dtype::F64 => DType::F64,
            Dtype::I64 | Dtype::U8 => DType::I64,
            Dtype::BOOL => DType::Bool,
            d => {
                let at = data_at + info.data_offsets.0 as u64;
                return Err(Error::format(path, at, format!("tensor '{name}': unsupported dtype {d:?} (read: F32, F64, I64, BOOL, U8)")));
            }
        };
        infos.push(EntryInfo { name: name.clone(), dtype, shape: info.shape.clone() });
    }
    let keep = select(&infos)?;

    let mut out = Vec::with_capacity(names.len());
    for (name, _) in names.into_iter().zip(keep).filter(|(_, k)| *k) {
        let info = metadata.info(&name).ok_or_else(|| Error::format(path, 0, format!("tensor '{name}' is listed but has no entry")))?;
        let (start, end) = info.data_offsets;
        let at = data_at + start as u64;
        let err = |m: String| Error::format(path, at, format!("tensor '{name}': {m}"));
        // The header was checked to tile exactly the data the file holds.
        let mut raw = Vec::with_capacity(end - start);
        file.seek(SeekFrom::Start(at)).map_err(|e| Error::io(path, e))?;
        (&mut file).take((end - start) as u64).read_to_end(&mut raw).map_err(|e| Error::io(path, e))?;
        if raw.len() != end - start {
            return Err(err("data runs past the end of the file".into()));
        }
        let values = match info.dtype {
            Dtype::F32 => Values::F32(raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
            Dtype::F64 => Values::F64(raw.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or_default())).collect()),
            Dtype::I64 => Values::I64(raw.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default())).collect()),
            Dtype::U8 => Values::U8(raw),
            Dtype::BOOL => Values::Bool(
                raw.iter()
                    .map(|&b| match b {
                        0 | 1 => Ok(b == 1),
                        _ => Err(err(format!("invalid bool byte {b}"))),
                    })
                    .collect::<Result<_>>()?,
            ),
            d => return Err(err(format!("unsupported dtype {d:?} (read: F32, F64, I64, BOOL, U8)"))),
        };
        let tensor = values.into_tensor(&info.shape).map_err(err)?;
        out.push((name, tensor));
    }
    Ok(out)
}

/// A tensor as the `safetensors` serializer sees it; bytes are made one tensor at a time.
struct TensorView<'a> {
    data: Data<'a>,
    shape: &'a [usize],
}

impl View for TensorView<'_> {
    fn dtype(&self) -> Dtype {
        match self.data {
            Data::F32(_) => Dtype::F32,
            Data::F64(_) => Dtype::F64,
            Data::I64(_) => Dtype::I64,
            Data::Bool(_) => Dtype::BOOL,
        }
    }

    fn shape(&self) -> &[usize] {
        self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(match &self.data {
            Data::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::Bool(v) => v.iter().map(|&x| u8::from(x)).collect(),
        })
    }

    fn data_len(&self) -> usize {
        match &self.data {
            Data::F32(v) => v.len() * 4,
            Data::F64(v) => v.len() * 8,
            Data::I64(v) => v.len() * 8,
            Data::Bool(v) => v.len(),
        }
    }
}
