//! Checkpoint I/O: named tensors to and from numpy `.npz` archives (and single `.npy` arrays)
//! and `.safetensors` files, so weights move between this library and numpy or PyTorch with
//! no converter: `np.load("ckpt.npz")["fc1.weight"]`, `safetensors.torch.load_file(...)`.
//! Names are PyTorch `state_dict` keys (`conv.weight`); an `.npz` member is `conv.weight.npy`.
//!
//! The formats come from well-kept crates: `zip` is the archive layer and `npyz` the npy format
//! of each member ([`npz`]), and `safetensors` reads and writes its format ([`mod@safetensors`]).
//! What this module adds on top, and why:
//! - **Reproducible files.** The same tensors give the same bytes (hashable, diffable). `.npz`:
//!   members in the order given, stored uncompressed like `numpy.savez`, timestamps fixed at
//!   1980-01-01 00:00, no extra fields. `.safetensors`: the crate's order (by dtype, then
//!   name) and no metadata.
//! - **Atomic replace** (`atomic.rs`): a temporary file in the target's folder, fsynced, then
//!   renamed; removed on failure. Symlinks are followed to their target; anything at the
//!   target that is not a regular file is refused; stale temporary files of killed writers
//!   are removed by the next save.
//! - **Headers before data.** [`load_checked`] reads every entry's name, dtype and shape
//!   first and lets the caller refuse the file (or skip entries) before any tensor data is
//!   read or inflated; [`load_state_dict_file`] uses it, so a file that does not fit the
//!   model costs the size of its headers. Files to read must be regular files (a FIFO
//!   would block forever).
//! - **Hostile input is an error naming the file (and the byte offset where there is one),
//!   never a panic or a huge allocation.** An `.npz`'s declared sizes are checked against the
//!   file size and deflate's maximum ratio before anything is inflated, and reads are capped at
//!   the declared size; an npy header's shape is checked before `npyz` multiplies it out;
//!   at most [`MAX_ENTRIES`] entries, with unique names (the zip crate's index and the
//!   safetensors header's map find duplicates in linear time).
//!
//! Dtypes keep what they are: float32 (`<f4`, `F32`), float64 (`<f8`, `F64`), int64 (`<i8`,
//! `I64`: PyTorch BatchNorm's `num_batches_tracked`, exact over its whole range) and bool
//! (`|b1`, `BOOL`) are read and written as f32, f64, i64 and bool tensors; `.npy` also reads
//! their big-endian forms. uint8 (`|u1`, `U8`) is read as i64, since the tensor type has no
//! u8 (it is written back as int64). A bool byte other than 0 or 1 is an error.

mod atomic;
pub mod npz;
pub mod safetensors;

use crate::error::{Error, Result};
use crate::module::Module;
use autograd::{DType, Tensor};
use std::borrow::Cow;
use std::collections::HashSet;
use std::path::Path;

pub use self::safetensors::{load_safetensors, save_safetensors};
pub(crate) use atomic::open_regular;
pub use npz::{load_npy, load_npz, save_npy, save_npz};

/// The most entries a file may hold on read: far above any model, low enough that a hostile
/// directory cannot make the reader build millions of names.
pub const MAX_ENTRIES: usize = 1_000_000;

/// Saves named tensors in the format the extension names: `.npz` ([`save_npz`]) or
/// `.safetensors` ([`save_safetensors`]).
pub fn save(path: &Path, entries: &[(String, Tensor)]) -> Result<()> {
    match Format::of(path)? {
        Format::Npz => save_npz(path, entries),
        Format::Safetensors => save_safetensors(path, entries),
    }
}

/// Loads named tensors from an `.npz` ([`load_npz`]) or `.safetensors` ([`load_safetensors`]) file.
pub fn load(path: &Path) -> Result<Vec<(String, Tensor)>> {
    match Format::of(path)? {
        Format::Npz => load_npz(path),
        Format::Safetensors => load_safetensors(path),
    }
}

/// What a file's header says about one entry, known before any of its data is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    pub name: String,
    /// The dtype the entry loads as: the file's own, except uint8, which loads as i64.
    pub dtype: DType,
    pub shape: Vec<usize>,
}

/// Like [`load`], but first reads every entry's header and passes them to `select`, which
/// refuses the file (`Err(message)`; the error names the file) or says which entries to read
/// (`true`) and which to skip; no tensor data is read or inflated before it has agreed.
/// Returns the entries read, in file order.
pub fn load_checked(
    path: &Path,
    select: impl FnOnce(&[EntryInfo]) -> std::result::Result<Vec<bool>, String>,
) -> Result<Vec<(String, Tensor)>> {
    let select = |infos: &[EntryInfo]| -> Result<Vec<bool>> {
        let keep = select(infos).map_err(|message| Error::Checkpoint { path: path.to_path_buf(), message })?;
        match keep.len() == infos.len() {
            true => Ok(keep),
            false => Err(Error::Checkpoint { path: path.to_path_buf(), message: "the selector returned the wrong number of flags".into() }),
        }
    };
    match Format::of(path)? {
        Format::Npz => npz::load_npz_checked(path, select),
        Format::Safetensors => self::safetensors::load_safetensors_checked(path, select),
    }
}

/// At most this many problems are listed in one message (a hostile file may have a million).
pub(crate) const MAX_PROBLEMS: usize = 10;

/// `problems` joined by "; ", the first [`MAX_PROBLEMS`] of them.
pub(crate) fn list_problems(problems: &[String]) -> String {
    let mut s = problems.iter().take(MAX_PROBLEMS).cloned().collect::<Vec<_>>().join("; ");
    if problems.len() > MAX_PROBLEMS {
        s.push_str(&format!("; and {} more", problems.len() - MAX_PROBLEMS));
    }
    s
}

/// Saves `module.state_dict()` (PyTorch's keys) in the format `path`'s extension names.
pub fn save_state_dict(module: &(impl Module + ?Sized), path: &Path) -> Result<()> {
    save(path, &module.state_dict())
}

/// Loads a file saved by [`save_state_dict`] (or by PyTorch) into `module`, strictly. The
/// headers are compared with the module first (names and shapes; `_train.*` entries are
/// skipped unread), so a file that does not fit is refused before any data is read, with
/// every problem listed and the file named.
pub fn load_state_dict_file(module: &(impl Module + ?Sized), path: &Path) -> Result<()> {
    let shapes = crate::module::expected_shapes(module);
    let entries = load_checked(path, |infos| {
        let (problems, _) = crate::module::state_dict_problems(&shapes, infos.iter().map(|i| (i.name.as_str(), i.shape.as_slice())), true);
        match problems.is_empty() {
            true => Ok(infos.iter().map(|i| !i.name.starts_with("_train.")).collect()),
            false => Err(format!("load_state_dict: {}", list_problems(&problems))),
        }
    })?;
    load_state_dict_from(module, path, &entries)
}

/// [`Module::load_state_dict`] of `entries` read from `path`, with the file named in the
/// error (for callers that read the file for more than the weights, as `lenet --resume`).
/// A missing, unexpected, mis-shaped or non-finite (NaN, infinite) weight is refused.
pub fn load_state_dict_from(module: &(impl Module + ?Sized), path: &Path, entries: &[(String, Tensor)]) -> Result<()> {
    module.load_state_dict(entries).map_err(|e| Error::Checkpoint { path: path.to_path_buf(), message: e.to_string() })
}

/// Checks, before a long run starts, that a checkpoint can later be saved at `path`: a known
/// extension, a regular file or nothing at the target (symlinks followed), an existing folder
/// in which a file can be created.
pub fn check_save_path(path: &Path) -> Result<()> {
    Format::of(path)?;
    atomic::check_writable(path)
}

/// [`check_save_path`] for any file written with [`write_atomic`] (no extension check).
pub fn check_writable(path: &Path) -> Result<()> {
    atomic::check_writable(path)
}

/// Replaces `path` with `bytes` atomically, with the checkpoints' guarantees (a unique
/// temporary file removed on failure, symlinks followed, only a regular file replaced).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    atomic::atomic_write(path, |w| std::io::Write::write_all(w, bytes))
}

enum Format {
    Npz,
    Safetensors,
}

impl Format {
    fn of(path: &Path) -> Result<Format> {
        let ext = path.extension().map(|e| e.to_string_lossy());
        match ext.as_deref() {
            Some(e) if e.eq_ignore_ascii_case("npz") => Ok(Format::Npz),
            Some(e) if e.eq_ignore_ascii_case("safetensors") => Ok(Format::Safetensors),
            Some(e) => Err(Error::io(path, format!("unknown checkpoint extension '.{e}': use .npz or .safetensors"))),
            None => Err(Error::io(path, "no file extension: use .npz or .safetensors")),
        }
    }
}

/// Rejects empty and duplicate names before anything is written.
fn check_names(path: &Path, what: &str, entries: &[(String, Tensor)]) -> Result<()> {
    let mut seen = HashSet::with_capacity(entries.len());
    for (name, _) in entries {
        if name.is_empty() {
            return Err(Error::io(path, format!("{what}: an entry has an empty name")));
        }
        if !seen.insert(name.as_str()) {
            return Err(Error::io(path, format!("{what}: duplicate entry name '{name}'")));
        }
    }
    Ok(())
}

/// A tensor's values in its own dtype, contiguous (a copy only for strided views).
enum Data<'a> {
    F32(Cow<'a, [f32]>),
    F64(Cow<'a, [f64]>),
    I64(Cow<'a, [i64]>),
    Bool(Cow<'a, [bool]>),
}

impl<'a> Data<'a> {
    fn of(t: &'a Tensor) -> Result<Data<'a>> {
        Ok(match t.dtype() {
            DType::F32 => Data::F32(t.contiguous_data::<f32>()?),
            DType::F64 => Data::F64(t.contiguous_data::<f64>()?),
            DType::I64 => Data::I64(t.contiguous_data::<i64>()?),
            DType::Bool => Data::Bool(t.contiguous_data::<bool>()?),
        })
    }
}

/// Values as a file stores them, before they become a tensor.
enum Values {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    Bool(Vec<bool>),
    U8(Vec<u8>),
}

impl Values {
    /// The tensor of `shape` (row-major) in the values' own dtype; uint8 widens to i64.
    fn into_tensor(self, shape: &[usize]) -> std::result::Result<Tensor, String> {
        let t = match self {
            Values::F32(v) => Tensor::from_vec(v, shape),
            Values::F64(v) => Tensor::from_vec(v, shape),
            Values::I64(v) => Tensor::from_vec(v, shape),
            Values::Bool(v) => Tensor::from_vec(v, shape),
            Values::U8(v) => Tensor::from_vec(v.into_iter().map(i64::from).collect::<Vec<_>>(), shape),
        };
        t.map_err(|e| e.to_string())
    }
}

/// An error if a file declares more than [`MAX_ENTRIES`] entries.
fn check_count(n: usize) -> std::result::Result<(), String> {
    match n > MAX_ENTRIES {
        true => Err(format!("{n} entries, more than the {MAX_ENTRIES} allowed")),
        false => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_count_is_capped() {
        assert_eq!(check_count(MAX_ENTRIES), Ok(()));
        assert_eq!(check_count(MAX_ENTRIES + 1), Err("1000001 entries, more than the 1000000 allowed".to_string()));
    }

    #[test]
    fn values_keep_their_dtype_and_uint8_widens_to_i64() {
        let t = Values::I64(vec![i64::MIN, (1 << 53) + 1, i64::MAX]).into_tensor(&[3]).unwrap();
        assert_eq!((t.dtype(), t.to_vec::<i64>()), (DType::I64, vec![i64::MIN, (1 << 53) + 1, i64::MAX]));
        let t = Values::U8(vec![0, 255]).into_tensor(&[2]).unwrap();
        assert_eq!((t.dtype(), t.to_vec::<i64>()), (DType::I64, vec![0, 255]));
        let t = Values::Bool(vec![true, false]).into_tensor(&[1, 2]).unwrap();
        assert_eq!((t.dtype(), t.to_vec::<bool>()), (DType::Bool, vec![true, false]));
    }
}
