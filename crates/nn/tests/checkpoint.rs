//! Checkpoints (`nn::io`): `.npz`, `.npy` and `.safetensors` round trips, byte-for-byte
//! reproducible files, atomic writes, files made by numpy (tests/fixtures/ckpt/make_fixtures.py),
//! and hostile files that must give errors, never panics.

use autograd::{DType, Tensor};
use nn::{load, load_npy, load_npz, load_safetensors, save, save_npy, save_npz, save_safetensors, Error, Module};
use proptest::prelude::*;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/ckpt").join(name)
}

fn f32s(t: &Tensor) -> Vec<f32> {
    assert_eq!(t.dtype(), DType::F32);
    t.to_vec::<f32>()
}

fn f64s(t: &Tensor) -> Vec<f64> {
    assert_eq!(t.dtype(), DType::F64);
    t.to_vec::<f64>()
}

/// Same names, order, dtypes, shapes and bit patterns (so NaN and -0.0 count too).
fn assert_same(a: &[(String, Tensor)], b: &[(String, Tensor)]) {
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(b) {
        assert_eq!(na, nb);
        assert_eq!(ta.dtype(), tb.dtype(), "{na}");
        assert_eq!(ta.shape(), tb.shape(), "{na}");
        let bits = |t: &Tensor| match t.dtype() {
            DType::F32 => t.to_vec::<f32>().iter().map(|x| x.to_bits() as u64).collect::<Vec<_>>(),
            DType::F64 => t.to_vec::<f64>().iter().map(|x| x.to_bits()).collect(),
            DType::I64 => t.to_vec::<i64>().iter().map(|&x| x as u64).collect(),
            DType::Bool => t.to_vec::<bool>().iter().map(|&x| u64::from(x)).collect(),
        };
        assert_eq!(bits(ta), bits(tb), "{na}");
    }
}

fn dir_listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

fn sample_entries() -> Vec<(String, Tensor)> {
    let shapes: [&[usize]; 7] = [&[], &[1], &[5], &[2, 3], &[2, 3, 4, 5], &[0], &[3, 0, 2]];
    let specials = [0.0, -0.0, 1.0, -1.5, f64::INFINITY, f64::NEG_INFINITY, f64::NAN, 1e-310, 3.4e38, 0.1];
    let mut out = Vec::new();
    for (i, shape) in shapes.iter().enumerate() {
        let n: usize = shape.iter().product();
        let vals: Vec<f64> = (0..n).map(|k| specials[(k + i) % specials.len()] * (1.0 + k as f64 / 7.0)).collect();
        let f32s: Vec<f32> = vals.iter().map(|&v| v as f32).collect();
        out.push((format!("layer{i}.weight"), Tensor::from_vec(f32s, shape).unwrap()));
        out.push((format!("layer{i}.double"), Tensor::from_vec(vals, shape).unwrap()));
    }
    out.push(("ünïcode name/with slash".into(), Tensor::scalar(2.5)));
    out
}

#[test]
fn round_trip_f32_f64_all_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.npz");
    let entries = sample_entries();
    save_npz(&path, &entries).unwrap();
    assert_same(&load_npz(&path).unwrap(), &entries);
}

#[test]
fn strided_views_are_saved_in_logical_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.npz");
    let t = Tensor::from_vec((0..6).map(|x| x as f32).collect::<Vec<_>>(), &[2, 3]).unwrap().t().unwrap();
    save_npz(&path, &[("t".into(), t)]).unwrap();
    let back = load_npz(&path).unwrap();
    assert_eq!(back[0].1.shape(), &[3, 2]);
    assert_eq!(f32s(&back[0].1), vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
}

#[test]
fn empty_archive_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.npz");
    save_npz(&path, &[]).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 22);
    assert!(load_npz(&path).unwrap().is_empty());
}

#[test]
fn saves_are_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.npz"), dir.path().join("b.npz"));
    save_npz(&a, &sample_entries()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100)); // a timestamp would now differ
    save_npz(&b, &sample_entries()).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}

/// Pins the exact bytes we write. `ours.npz` was checked with numpy by hand:
/// `python3 tests/fixtures/ckpt/make_fixtures.py --check` (it loads the file, compares the
/// arrays, and checks every member is stored, dated 1980-01-01 and without extra fields).
/// Set UPDATE_CKPT_FIXTURES=1 to rewrite it after a deliberate format change (a new zip or
/// npyz version may change the bytes), then run that check again.
#[test]
fn golden_file() {
    let entries = vec![
        ("conv.weight".to_string(), Tensor::from_vec((0..8).map(|i| i as f32 * 0.5 - 1.0).collect::<Vec<_>>(), &[2, 1, 2, 2]).unwrap()),
        ("conv.bias".to_string(), Tensor::from_vec(vec![0.25f32, -0.75], &[2]).unwrap()),
        ("scalar".to_string(), Tensor::scalar(7.0)),
        ("double".to_string(), Tensor::from_vec(vec![0.1f64, 1e300, -0.0], &[3]).unwrap()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ours.npz");
    save_npz(&path, &entries).unwrap();
    if std::env::var_os("UPDATE_CKPT_FIXTURES").is_some() {
        std::fs::copy(&path, fixture("ours.npz")).unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes, std::fs::read(fixture("ours.npz")).unwrap());
    assert_same(&load_npz(&fixture("ours.npz")).unwrap(), &entries);
    // Walk the local headers: members in the order given, stored, 1980-01-01 00:00, no extras.
    let (u16_at, u32_at) =
        (|at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]), |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()));
    let mut at = 0;
    for (name, _) in &entries {
        assert_eq!(u32_at(at), 0x0403_4b50, "{name}");
        assert_eq!((u16_at(at + 8), u16_at(at + 10), u16_at(at + 12)), (0, 0, (1 << 5) | 1), "{name}: method, time, date");
        let (name_len, extra_len) = (u16_at(at + 26) as usize, u16_at(at + 28) as usize);
        assert_eq!(extra_len, 0, "{name}");
        assert_eq!(&bytes[at + 30..at + 30 + name_len], format!("{name}.npy").as_bytes());
        at += 30 + name_len + u32_at(at + 18) as usize;
    }
    assert_eq!(u32_at(at), 0x0201_4b50, "the central directory follows the last member");
}

#[test]
fn atomic_write_leaves_only_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.npz");
    save_npz(&path, &sample_entries()).unwrap();
    // Overwriting replaces the file whole.
    let small = vec![("x".to_string(), Tensor::scalar(1.0))];
    save_npz(&path, &small).unwrap();
    assert_same(&load_npz(&path).unwrap(), &small);
    assert_eq!(dir_listing(dir.path()), ["ckpt.npz"]);

    // A failing rename (the target is a folder) removes the temporary file.
    let folder = dir.path().join("folder.npz");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("keep"), b"x").unwrap();
    assert!(matches!(save_npz(&folder, &small), Err(Error::Io { .. })));
    assert_eq!(dir_listing(dir.path()), ["ckpt.npz", "folder.npz"]);

    // Bad arguments fail before any file is created.
    let dup = vec![("a".to_string(), Tensor::scalar(1.0)), ("a".to_string(), Tensor::scalar(2.0))];
    let err = save_npz(&dir.path().join("dup.npz"), &dup).unwrap_err();
    assert!(err.to_string().contains("duplicate entry name 'a'"), "{err}");
    let err = save_safetensors(&dir.path().join("dup.safetensors"), &dup).unwrap_err();
    assert!(err.to_string().contains("duplicate entry name 'a'"), "{err}");
    assert!(matches!(save_safetensors(&folder, &small), Err(Error::Io { .. })));
    assert!(matches!(save_npz(&dir.path().join("missing/x.npz"), &small), Err(Error::Io { .. })));
    assert_eq!(dir_listing(dir.path()), ["ckpt.npz", "folder.npz"]);
}

/// Values from make_fixtures.py; both numpy writers must give the same arrays.
fn check_numpy_fixture(name: &str) {
    let got = load_npz(&fixture(name)).unwrap();
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["w", "b", "s", "empty", "fortran", "big"]);
    let t = |i: usize| &got[i].1;
    assert_eq!(t(0).shape(), &[2, 3, 4]);
    assert_eq!(f32s(t(0)), (0..24).map(|i| (i as f32 - 5.0) / 8.0).collect::<Vec<_>>());
    assert_eq!(t(1).shape(), &[3]);
    assert_eq!(f64s(t(1)), vec![0.1, -2.5, 1e-300]);
    assert_eq!(t(2).shape(), &[] as &[usize]);
    assert_eq!(f32s(t(2)), vec![3.5]);
    assert_eq!(t(3).shape(), &[0, 3]);
    assert!(f32s(t(3)).is_empty());
    // np.asfortranarray(arange(6).reshape(2, 3)): same values at the same indices as C order.
    assert_eq!(t(4).shape(), &[2, 3]);
    assert_eq!(f32s(t(4)), vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    assert_eq!(f64s(t(5)), vec![1.5, -2.0]); // '>f8'
}

#[test]
fn reads_numpy_savez() {
    check_numpy_fixture("savez.npz");
}

#[test]
fn reads_numpy_savez_compressed() {
    check_numpy_fixture("savez_compressed.npz");
}

#[test]
fn npy_files() {
    let t = load_npy(&fixture("array.npy")).unwrap();
    assert_eq!(t.shape(), &[2, 2]);
    assert_eq!(f32s(&t), vec![1.0, -1.0, 0.25, 4.0]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.npy");
    save_npy(&path, &t).unwrap();
    let back = load_npy(&path).unwrap();
    assert_eq!((back.shape(), f32s(&back)), (t.shape(), f32s(&t)));
    // Same header dict as np.save's (npyz's spacing differs), padded to 64 bytes.
    let bytes = std::fs::read(&path).unwrap();
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + header_len) % 64, 0);
    let dict = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(dict.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2, ), }") && dict.ends_with('\n'), "{dict:?}");
    let err = load_npz(&path).unwrap_err();
    assert!(err.to_string().contains("use load_npy"), "{err}");
}

fn format_error(r: nn::Result<impl std::fmt::Debug>) -> (u64, String) {
    match r {
        Err(Error::Format { offset, message, .. }) => (offset, message),
        other => panic!("expected a format error, got {other:?}"),
    }
}

fn i64s(t: &Tensor) -> Vec<i64> {
    assert_eq!(t.dtype(), DType::I64);
    t.to_vec::<i64>()
}

fn bools(t: &Tensor) -> Vec<bool> {
    assert_eq!(t.dtype(), DType::Bool);
    t.to_vec::<bool>()
}

/// int64, bool and uint8 arrays made by numpy (make_fixtures.py): int64 and bool as
/// themselves, uint8 as i64, through both `load_npz` and `load`.
#[test]
fn reads_numpy_int64_bool_uint8() {
    for got in [load_npz(&fixture("int_bool.npz")).unwrap(), load(&fixture("int_bool.npz")).unwrap()] {
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["bn.num_batches_tracked", "ints", "mask", "pixels"]);
        assert_eq!((got[0].1.shape(), i64s(&got[0].1)), (&[] as &[usize], vec![7]));
        assert_eq!((got[1].1.shape(), i64s(&got[1].1)), (&[4usize] as &[usize], vec![-(1 << 53), -1, 0, 1 << 53]));
        assert_eq!((got[2].1.shape(), bools(&got[2].1)), (&[2usize, 2] as &[usize], vec![true, false, false, true]));
        assert_eq!((got[3].1.shape(), i64s(&got[3].1)), (&[3usize] as &[usize], vec![0, 128, 255]));
    }
    // The header-first check reports the dtypes the entries load as.
    let mut dtypes = Vec::new();
    nn::load_checked(&fixture("int_bool.npz"), |infos| {
        dtypes = infos.iter().map(|i| i.dtype).collect();
        Ok(vec![false; infos.len()])
    })
    .unwrap();
    assert_eq!(dtypes, [DType::I64, DType::I64, DType::Bool, DType::I64]);
}

/// An int64 beyond 2^53 (which f64 could not hold) loads exactly.
#[test]
fn int64_beyond_2_pow_53_loads_exactly() {
    let got = load_npz(&fixture("int64_inexact.npz")).unwrap();
    assert_eq!(got[0].0, "i");
    assert_eq!(i64s(&got[0].1), vec![0, (1 << 53) + 1]);
}

/// i64 (with the extremes and values f64 cannot hold) and bool, in every rank we test floats
/// with, beside floats.
fn int_bool_entries() -> Vec<(String, Tensor)> {
    let ints = [i64::MIN, i64::MAX, (1 << 53) + 1, -(1 << 53) - 1, 0, -1, 7];
    let shapes: [&[usize]; 5] = [&[], &[3], &[2, 3], &[0], &[2, 0, 3]];
    let mut out = Vec::new();
    for (i, shape) in shapes.iter().enumerate() {
        let n: usize = shape.iter().product();
        out.push((format!("int{i}"), Tensor::from_vec((0..n).map(|k| ints[(k + i) % ints.len()]).collect::<Vec<_>>(), shape).unwrap()));
        out.push((format!("mask{i}"), Tensor::from_vec((0..n).map(|k| (k + i) % 3 == 0).collect::<Vec<_>>(), shape).unwrap()));
    }
    out.push(("float".into(), Tensor::scalar(0.5)));
    out
}

#[test]
fn i64_and_bool_round_trip_with_their_dtypes_and_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let entries = int_bool_entries();
    for name in ["a.npz", "a.safetensors"] {
        let (a, b) = (dir.path().join(name), dir.path().join(format!("b{name}")));
        save(&a, &entries).unwrap();
        assert_same(&sorted(load(&a).unwrap()), &sorted(entries.clone()));
        save(&b, &entries).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), "{name}");
    }
    // A strided view saves in logical order.
    let t = Tensor::from_vec(vec![i64::MIN, 1, 2, i64::MAX], &[2, 2]).unwrap().transpose(0, 1).unwrap();
    for (name, t) in [("i.npy", t), ("b.npy", Tensor::from_vec(vec![true, false, false], &[3]).unwrap())] {
        let path = dir.path().join(name);
        save_npy(&path, &t).unwrap();
        assert_same(&[(name.into(), load_npy(&path).unwrap())], &[(name.into(), t.clone())]);
        let bytes = std::fs::read(&path).unwrap();
        let descr = if t.dtype() == DType::I64 { "'<i8'" } else { "'|b1'" };
        assert!(std::str::from_utf8(&bytes[10..30]).unwrap().contains(descr), "{name}");
    }
    assert_eq!(i64s(&load_npy(&dir.path().join("i.npy")).unwrap()), vec![i64::MIN, 2, 1, i64::MAX]);
}

/// Parameters are float; a state dict whose weights arrive as i64 loads, cast.
#[test]
fn i64_weights_load_into_float_parameters() {
    let net = nn::Sequential::new().append(nn::Linear::new(2, 1, &mut autograd::rng(1)).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ints.safetensors");
    let entries = vec![
        ("0.weight".to_string(), Tensor::from_vec(vec![3i64, -4], &[1, 2]).unwrap()),
        ("0.bias".to_string(), Tensor::from_vec(vec![5i64], &[1]).unwrap()),
    ];
    save(&path, &entries).unwrap();
    nn::load_state_dict_file(&net, &path).unwrap();
    let sd = net.state_dict();
    assert_eq!((f32s(&sd[0].1), f32s(&sd[1].1)), (vec![3.0, -4.0], vec![5.0]));
}

/// A bool byte other than 0 or 1 is an error at the array's data (numpy writes only 0 and 1).
#[test]
fn npy_bool_bytes_must_be_0_or_1() {
    let m = npy("{'descr': '|b1', 'fortran_order': False, 'shape': (3,), }", &[1, 0, 2]);
    let data_at = m.len() - 3;
    let got = load_bytes(&zip_stored(&[("v.npy", npy("{'descr': '|b1', 'fortran_order': False, 'shape': (2,), }", &[1, 0]))])).unwrap();
    assert_eq!(bools(&got[0].1), vec![true, false]);
    let (offset, msg) = format_error(load_bytes(&zip_stored(&[("v.npy", m.clone())])));
    assert!(msg.contains("entry 'v.npy'") && msg.contains("invalid value for bool: 2"), "{msg}");
    assert_eq!(offset, (30 + "v.npy".len() + data_at) as u64, "the member's data");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("v.npy"), &m).unwrap();
    assert_eq!(format_error(load_npy(&dir.path().join("v.npy"))).0, data_at as u64);
}

/// A big-endian int64 `.npy` (numpy gives '>i8' on request) loads as the same i64 values.
#[test]
fn big_endian_int64_npy() {
    let data: Vec<u8> = [i64::MIN, 1].iter().flat_map(|x| x.to_be_bytes()).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("be.npy");
    std::fs::write(&path, npy("{'descr': '>i8', 'fortran_order': False, 'shape': (2,), }", &data)).unwrap();
    assert_eq!(i64s(&load_npy(&path).unwrap()), vec![i64::MIN, 1]);
}

// ----- safetensors and the format by extension -----------------------------------------

/// safetensors stores tensors by dtype, then name: compare by name.
fn sorted(mut v: Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn safetensors_round_trip_all_ranks_and_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.safetensors"), dir.path().join("b.safetensors"));
    save_safetensors(&a, &sample_entries()).unwrap();
    assert_same(&sorted(load_safetensors(&a).unwrap()), &sorted(sample_entries()));
    // Given in another order, the same tensors give the same bytes.
    let mut reversed = sample_entries();
    reversed.reverse();
    save(&b, &reversed).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_same(&sorted(load(&b).unwrap()), &sorted(sample_entries()));
    save_safetensors(&a, &[("x".to_string(), Tensor::scalar(1.0))]).unwrap();
    assert_eq!(dir_listing(dir.path()), ["a.safetensors", "b.safetensors"], "no temporary file left");
}

#[test]
fn save_and_load_pick_the_format_by_extension() {
    let dir = tempfile::tempdir().unwrap();
    let entries = sample_entries();
    for name in ["c.npz", "c.safetensors", "C.NPZ"] {
        let path = dir.path().join(name);
        save(&path, &entries).unwrap();
        assert_same(&sorted(load(&path).unwrap()), &sorted(entries.clone()));
    }
    assert!(std::fs::read(dir.path().join("c.npz")).unwrap().starts_with(b"PK\x03\x04"));
    for name in ["c.pt", "c"] {
        let path = dir.path().join(name);
        let err = save(&path, &entries).unwrap_err().to_string();
        assert!(err.contains("use .npz or .safetensors") && err.contains(name), "{err}");
        assert!(load(&path).unwrap_err().to_string().contains("use .npz or .safetensors"));
    }
    assert!(save(&dir.path().join("c.pt"), &entries).unwrap_err().to_string().contains("unknown checkpoint extension '.pt'"));
    assert_eq!(dir_listing(dir.path()), ["C.NPZ", "c.npz", "c.safetensors"]);
}

#[test]
fn state_dict_files_in_both_formats() {
    let net = nn::Sequential::new().append(nn::Linear::new(3, 2, &mut autograd::rng(1)).unwrap());
    let other = nn::Sequential::new().append(nn::Linear::new(3, 2, &mut autograd::rng(2)).unwrap());
    let dir = tempfile::tempdir().unwrap();
    for name in ["sd.npz", "sd.safetensors"] {
        let path = dir.path().join(name);
        nn::save_state_dict(&net, &path).unwrap();
        nn::load_state_dict_file(&other, &path).unwrap();
        assert_same(&other.state_dict(), &net.state_dict());
    }
    let wrong = nn::Sequential::new().append(nn::Linear::new(3, 4, &mut autograd::rng(1)).unwrap());
    let err = nn::load_state_dict_file(&wrong, &dir.path().join("sd.safetensors")).unwrap_err().to_string();
    assert!(err.contains("'0.weight' has shape [2, 3] but the module expects [4, 3]"), "{err}");
}

/// A safetensors file by hand: header JSON, then the data.
fn safetensors_bytes(header: &str, data: &[u8]) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(data);
    v
}

fn load_safetensors_bytes(bytes: &[u8]) -> nn::Result<Vec<(String, Tensor)>> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.safetensors");
    std::fs::write(&path, bytes).unwrap();
    load_safetensors(&path)
}

#[test]
fn safetensors_int64_bool_uint8() {
    let mut data = Vec::new();
    for x in [7i64, -(1 << 53)] {
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.extend_from_slice(&[1, 0, 0, 255]);
    let header = r#"{"n":{"dtype":"I64","shape":[2],"data_offsets":[0,16]},"b":{"dtype":"BOOL","shape":[1,2],"data_offsets":[16,18]},"u":{"dtype":"U8","shape":[2],"data_offsets":[18,20]}}"#;
    let got = load_safetensors_bytes(&safetensors_bytes(header, &data)).unwrap();
    assert_eq!(got.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["n", "b", "u"], "file order");
    assert_eq!(i64s(&got[0].1), vec![7, -(1 << 53)]);
    assert_eq!((got[1].1.shape(), bools(&got[1].1)), (&[1usize, 2] as &[usize], vec![true, false]));
    assert_eq!(i64s(&got[2].1), vec![0, 255]);
    let infos = std::cell::RefCell::new(Vec::new());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.safetensors");
    std::fs::write(&path, safetensors_bytes(header, &data)).unwrap();
    nn::load_checked(&path, |i| {
        infos.replace(i.iter().map(|i| (i.name.clone(), i.dtype)).collect());
        Ok(vec![false; i.len()])
    })
    .unwrap();
    assert_eq!(
        infos.take(),
        [("n".to_string(), DType::I64), ("b".to_string(), DType::Bool), ("u".to_string(), DType::I64)],
        "the header's dtypes"
    );

    // A bool byte that is not 0 or 1, an unsupported dtype: errors at the tensor's data.
    let bad_bool = safetensors_bytes(r#"{"b":{"dtype":"BOOL","shape":[1],"data_offsets":[0,1]}}"#, &[2]);
    let (offset, msg) = format_error(load_safetensors_bytes(&bad_bool));
    assert!(msg.contains("tensor 'b'") && msg.contains("invalid bool byte 2"), "{msg}");
    assert_eq!(offset, bad_bool.len() as u64 - 1, "the tensor's data");
    let half = safetensors_bytes(r#"{"h":{"dtype":"F16","shape":[1],"data_offsets":[0,2]}}"#, &[0, 60]);
    assert!(format_error(load_safetensors_bytes(&half)).1.contains("unsupported dtype F16"));
}

#[test]
fn hostile_safetensors_are_errors() {
    let cases: [(&[u8], &str); 5] = [
        (b"", "not a readable safetensors file"),
        (&u64::MAX.to_le_bytes(), "not a readable safetensors file"),
        (
            &safetensors_bytes(r#"{"a":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,4]}}"#, &[0; 4]),
            "not a readable",
        ),
        (&safetensors_bytes(r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, &[0; 4]), "not a readable"),
        (&safetensors_bytes(r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}"#, &[0; 4]), "not a readable"),
    ];
    for (bytes, want) in cases {
        let (_, msg) = format_error(load_safetensors_bytes(bytes));
        assert!(msg.contains(want), "{msg}");
    }
}

// ----- hostile files -------------------------------------------------------------------

/// A minimal stored zip (what our writer does), so tests can wrap hand-made npy members
/// with valid CRCs and reach the npy parser.
fn zip_stored(members: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let (mut out, mut central) = (Vec::new(), Vec::new());
    for (name, data) in members {
        let mut crc = flate2::Crc::new();
        crc.update(data);
        let offset = out.len() as u32;
        let common = |v: &mut Vec<u8>| {
            v.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 33, 0]);
            v.extend_from_slice(&crc.sum().to_le_bytes());
            v.extend_from_slice(&(data.len() as u32).to_le_bytes());
            v.extend_from_slice(&(data.len() as u32).to_le_bytes());
            v.extend_from_slice(&(name.len() as u16).to_le_bytes());
            v.extend_from_slice(&[0, 0]);
        };
        out.extend_from_slice(b"PK\x03\x04");
        common(&mut out);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        central.extend_from_slice(b"PK\x01\x02\x14\x00");
        common(&mut central);
        central.extend_from_slice(&[0; 10]); // comment length, disk, attributes
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(b"PK\x05\x06\0\0\0\0");
    out.extend_from_slice(&(members.len() as u16).to_le_bytes());
    out.extend_from_slice(&(members.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

fn npy(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut v = b"\x93NUMPY\x01\x00".to_vec();
    v.extend_from_slice(&(dict.len() as u16 + 1).to_le_bytes());
    v.extend_from_slice(dict.as_bytes());
    v.push(b'\n');
    v.extend_from_slice(data);
    v
}

fn load_bytes(bytes: &[u8]) -> nn::Result<Vec<(String, Tensor)>> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.npz");
    std::fs::write(&path, bytes).unwrap();
    load_npz(&path)
}

#[test]
fn hand_made_zip_is_read() {
    let m = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", &[0, 0, 128, 63, 0, 0, 0, 64]);
    let got = load_bytes(&zip_stored(&[("v.npy", m)])).unwrap();
    assert_eq!(f32s(&got[0].1), vec![1.0, 2.0]);
}

#[test]
fn hostile_headers_are_errors() {
    let cases = [
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 1099511627776), }", "too many elements"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 1099511627776, 1099511627776), }", "too many elements"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000,), }", "needs 4000000000 bytes"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", "needs 12 bytes of data but the member declares 8"),
        ("{'descr': '<f2', 'fortran_order': False, 'shape': (4,), }", "unsupported dtype '<f2'"),
        ("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", "unsupported dtype"),
        ("{'descr': '<f4', 'shape': (2,), }", "missing key 'fortran_order'"),
        ("{'descr': '<f4', 'fortran_order': False, }", "'shape' is missing"),
        ("__import__('os')", "npy header"),
    ];
    for (dict, want) in cases {
        let bytes = zip_stored(&[("v.npy", npy(dict, &[0; 8]))]);
        let (offset, msg) = format_error(load_bytes(&bytes));
        assert!(msg.contains(want) && msg.contains("entry 'v.npy'"), "{dict}: {msg}");
        assert!(offset >= 35 && offset < bytes.len() as u64, "{dict}: offset {offset}");
    }
    // Not an array member, a duplicate, and an npy header length past the end.
    let m = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (), }", &[0; 4]);
    assert!(format_error(load_bytes(&zip_stored(&[("v.txt", m.clone())]))).1.contains("NAME.npy"));
    assert!(format_error(load_bytes(&zip_stored(&[("v.npy", m.clone()), ("v.npy", m.clone())]))).1.contains("duplicate"));
    let mut long = m.clone();
    long[8..10].copy_from_slice(&u16::MAX.to_le_bytes());
    assert!(format_error(load_bytes(&zip_stored(&[("v.npy", long)]))).1.contains("runs past"));
}

#[test]
fn hostile_zip_structures_are_errors() {
    let good = std::fs::read(fixture("savez_compressed.npz")).unwrap();
    let eocd = good.len() - 22;
    let cd_offset = u32::from_le_bytes(good[eocd + 16..eocd + 20].try_into().unwrap()) as usize;
    let patch = |at: usize, bytes: &[u8]| {
        let mut b = good.clone();
        b[at..at + bytes.len()].copy_from_slice(bytes);
        load_bytes(&b)
    };
    // Entry count far beyond what the central directory can hold.
    assert!(format_error(patch(eocd + 8, &[0x60, 0xEA, 0x60, 0xEA])).1.contains("not a readable zip archive"));
    // Central directory offset past the end of the file.
    assert!(format_error(patch(eocd + 16, &0x7FFF_FFF0u32.to_le_bytes())).1.contains("CDFH offset"));
    // First entry claims 4 GB inflated: rejected before inflating (deflate's ratio limit).
    assert!(format_error(patch(cd_offset + 24, &0xFFFF_FFF0u32.to_le_bytes())).1.contains("beyond deflate's limit"));
    // ... or a bit more than it really holds: the npy header's shape disagrees with the
    // declared size, found before the data is inflated.
    let (offset, msg) = format_error(patch(cd_offset + 24, &300u32.to_le_bytes()));
    assert!(msg.contains("entry 'w.npy': shape [2, 3, 4] needs 96 bytes of data but the member declares 172"), "{msg}");
    let local_len = 30 + u16::from_le_bytes([good[26], good[27]]) as u64 + u16::from_le_bytes([good[28], good[29]]) as u64;
    assert_eq!(offset, local_len, "the member's data, after its local header, name and extra field");
    // Compressed size past the data; a local extra field pushing the data past it.
    assert!(format_error(patch(cd_offset + 20, &5000u32.to_le_bytes())).1.contains("runs past the end of the file"));
    assert!(format_error(patch(28, &[0xFF, 0xFF])).1.contains("runs past the end of the file"));
    // Unknown compression method (14 is LZMA), encryption flag.
    assert!(format_error(patch(cd_offset + 10, &[14, 0])).1.contains("method Lzma is not supported"));
    assert!(format_error(patch(cd_offset + 8, &[1, 0])).1.contains("encrypted"));
    // Zip64 marker values without a zip64 locator.
    assert!(format_error(patch(eocd + 16, &[0xFF; 4])).1.contains("not a readable zip archive"));
    // Bad magic, and a file too short to be a zip.
    assert!(format_error(patch(0, b"GIF8")).1.contains("not an .npz"));
    assert!(format_error(load_bytes(b"PK\x03\x04")).1.contains("Could not find EOCD"));
    assert!(matches!(load_npz(Path::new("/nonexistent/x.npz")), Err(Error::Io { .. })));
}

#[test]
fn members_may_not_share_data() {
    let m = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (), }", &[0; 4]);
    let good = zip_stored(&[("a.npy", m.clone()), ("b.npy", m.clone())]);
    assert_eq!(load_bytes(&good).unwrap().len(), 2);
    let eocd = good.len() - 22;
    let cd = u32::from_le_bytes(good[eocd + 16..eocd + 20].try_into().unwrap()) as usize;
    let second = cd + 46 + 5;
    // The second directory entry points at the first member.
    let mut b = good.clone();
    b[second + 42..second + 46].copy_from_slice(&0u32.to_le_bytes());
    let msg = format_error(load_bytes(&b)).1;
    assert!(msg.contains("entry 'b.npy': its header and data (bytes 0..") && msg.contains("overlaps another member"), "{msg}");
    // The first member claims the second one's bytes as its own.
    let mut b = good.clone();
    let grown = (m.len() + 10) as u32;
    b[cd + 20..cd + 28].copy_from_slice(&[grown.to_le_bytes(), grown.to_le_bytes()].concat());
    assert!(format_error(load_bytes(&b)).1.contains("overlaps another member"));
}

// ----- mutation fuzzing ------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        pos: usize,
        bit: u8,
    },
    Truncate(usize),
    Extend(Vec<u8>),
    Overwrite {
        pos: usize,
        bytes: Vec<u8>,
    },
    /// Within the first 160 bytes: the first local header and npy header.
    OverwriteHead {
        pos: usize,
        bytes: Vec<u8>,
    },
    /// Within the last 300 bytes: the central directory and end record.
    OverwriteTail {
        back: usize,
        bytes: Vec<u8>,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let bytes = || proptest::collection::vec(any::<u8>(), 1..12);
    prop_oneof![
        (any::<usize>(), 0..8u8).prop_map(|(pos, bit)| Mutation::Flip { pos, bit }),
        any::<usize>().prop_map(Mutation::Truncate),
        proptest::collection::vec(any::<u8>(), 1..64).prop_map(Mutation::Extend),
        (any::<usize>(), bytes()).prop_map(|(pos, bytes)| Mutation::Overwrite { pos, bytes }),
        (0..160usize, bytes()).prop_map(|(pos, bytes)| Mutation::OverwriteHead { pos, bytes }),
        (1..300usize, bytes()).prop_map(|(back, bytes)| Mutation::OverwriteTail { back, bytes }),
    ]
}

fn overwrite(b: &mut [u8], pos: usize, bytes: &[u8]) {
    let pos = pos.min(b.len());
    for (dst, src) in b[pos..].iter_mut().zip(bytes) {
        *dst = *src;
    }
}

/// Applies the mutation and loads the result with `load`; panics (fails) if loading panics
/// or if a truncated file loads.
fn check_mutation<T>(good: &[u8], m: &Mutation, load: impl Fn(&Path) -> nn::Result<T> + std::panic::RefUnwindSafe) {
    let mut b = good.to_vec();
    let len = b.len();
    match m {
        Mutation::Flip { pos, bit } => b[pos % len] ^= 1 << bit,
        Mutation::Truncate(n) => b.truncate(n % len),
        Mutation::Extend(tail) => b.extend_from_slice(tail),
        Mutation::Overwrite { pos, bytes } => overwrite(&mut b, pos % len, bytes),
        Mutation::OverwriteHead { pos, bytes } => overwrite(&mut b, *pos, bytes),
        Mutation::OverwriteTail { back, bytes } => overwrite(&mut b, len.saturating_sub(*back), bytes),
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m");
    std::fs::write(&path, &b).unwrap();
    let result = std::panic::catch_unwind(|| load(&path).map(|_| ()));
    match result {
        Err(_) => panic!("load panicked on {m:?}"),
        Ok(Err(Error::Format { .. } | Error::Io { .. })) => {}
        Ok(Err(other)) => panic!("unexpected error kind {other:?} on {m:?}"),
        Ok(Ok(())) => assert!(!matches!(m, Mutation::Truncate(_)), "a truncated file loaded: {m:?}"),
    }
}

proptest! {
    #![proptest_config(autograd::testing::config_from_env(256))]

    #[test]
    fn mutated_own_file_never_panics(m in mutation()) {
        thread_local!(static GOOD: Vec<u8> = {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("g.npz");
            save_npz(&path, &sample_entries()[..6]).unwrap();
            std::fs::read(&path).unwrap()
        });
        GOOD.with(|good| check_mutation(good, &m, load_npz));
    }

    #[test]
    fn mutated_numpy_files_never_panic(m in mutation(), compressed in any::<bool>()) {
        let name = if compressed { "savez_compressed.npz" } else { "savez.npz" };
        check_mutation(&std::fs::read(fixture(name)).unwrap(), &m, load_npz);
    }

    #[test]
    fn mutated_safetensors_never_panic(m in mutation()) {
        thread_local!(static GOOD: Vec<u8> = {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("g.safetensors");
            save_safetensors(&path, &sample_entries()[..6]).unwrap();
            std::fs::read(&path).unwrap()
        });
        GOOD.with(|good| check_mutation(good, &m, load_safetensors));
    }

    /// No CRC guards a bare .npy, so this reaches the npy header parser with every mutation.
    #[test]
    fn mutated_npy_never_panics(m in mutation()) {
        check_mutation(&std::fs::read(fixture("array.npy")).unwrap(), &m, load_npy);
    }
}
