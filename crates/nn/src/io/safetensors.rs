//! `.safetensors` files, the format PyTorch users exchange weights in, through the
//! `safetensors` crate: an 8-byte header length, a JSON header of names, dtypes, shapes and
//! data offsets, then the little-endian data. The crate validates the header (size limit,
//! offsets that tile the data exactly, no overflow) before we look at any tensor.
//!
//! Tensors are stored in the crate's order (by dtype, then name), so the bytes depend only on
//! the tensors, and read back in file order.

use super::atomic::atomic_write;
use super::{check_count, check_names, Data, Values};
use crate::error::{Error, Result};
use autograd::Tensor;
use safetensors::tensor::Metadata;
use safetensors::{Dtype, SafeTensors, View};
use std::borrow::Cow;
use std::io::Write;
use std::path::Path;

/// Saves named tensors as a `.safetensors` file (F32 and F64, no metadata), atomically like
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
/// tensor's data); I64 loads as f64 and BOOL and U8 as f32, as the [module doc](super) says.
pub fn load_safetensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    // The whole file: its real size bounds the allocation, and the crate works on a slice.
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (header_len, metadata): (usize, Metadata) =
        SafeTensors::read_metadata(&bytes).map_err(|e| Error::format(path, 0, format!("not a readable safetensors file: {e}")))?;
    let names = metadata.offset_keys();
    check_count(names.len()).map_err(|m| Error::format(path, 0, m))?;
    let data_at = 8 + header_len;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let info = metadata.info(&name).ok_or_else(|| Error::format(path, 0, format!("tensor '{name}' is listed but has no entry")))?;
        let (start, end) = info.data_offsets;
        let at = (data_at + start) as u64;
        let err = |m: String| Error::format(path, at, format!("tensor '{name}': {m}"));
        // read_metadata checked that the offsets tile the data; `get` keeps this panic-free anyway.
        let raw = bytes.get(data_at + start..data_at + end).ok_or_else(|| err("data runs past the end of the file".into()))?;
        let values = match info.dtype {
            Dtype::F32 => Values::F32(raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
            Dtype::F64 => Values::F64(raw.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or_default())).collect()),
            Dtype::I64 => Values::I64(raw.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default())).collect()),
            Dtype::U8 => Values::U8(raw.to_vec()),
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
        }
    }

    fn shape(&self) -> &[usize] {
        self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(match &self.data {
            Data::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        })
    }

    fn data_len(&self) -> usize {
        match &self.data {
            Data::F32(v) => v.len() * 4,
            Data::F64(v) => v.len() * 8,
        }
    }
}
