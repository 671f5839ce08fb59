//! Issue 16, hostile files: bombs are refused from their headers (a counting allocator
//! checks that no single allocation reaches 64 MiB in this test binary), saves touch only
//! regular files, and reads never block on a FIFO. Everything happens in temp dirs.

use autograd::rng;
use flate2::write::{DeflateEncoder, GzEncoder};
use flate2::Compression;
use nn::data::{read_idx, read_images, Dim};
use nn::{lenet, Act, FashionMnist, Module, Pool};
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The largest single allocation any test here may make.
const LIMIT: usize = 64 << 20;
static LARGEST: AtomicUsize = AtomicUsize::new(0);

struct Counting;
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // Refuse what a bomb would ask for, so a regression fails instead of swapping.
        if layout.size() > 1 << 30 {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        if new_size > 1 << 30 {
            return std::ptr::null_mut();
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn assert_small_allocations() {
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(largest < LIMIT, "an allocation of {largest} bytes");
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// An IDX u8 header with these dims, then `data` bytes of zeros.
fn idx(dims: &[u32], data: usize) -> Vec<u8> {
    let mut b = vec![0, 0, 8, dims.len() as u8];
    dims.iter().for_each(|d| b.extend(d.to_be_bytes()));
    b.resize(b.len() + data, 0);
    b
}

const FASHION: [Dim; 3] = [Dim::count(60_000), Dim::exactly(28), Dim::exactly(28)];

#[test]
fn idx_bombs_are_refused_from_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bomb.gz");
    // An honest header for 5,000,000 images (the data would be 3.9 GB; 1 MB is enough here).
    std::fs::write(&p, gzip(&idx(&[5_000_000, 28, 28], 1 << 20))).unwrap();
    let e = read_images(&p, FASHION).unwrap_err().to_string();
    assert!(e.starts_with(&p.display().to_string()) && e.contains("at byte 4") && e.contains("5000000"), "{e}");
    assert!(e.contains("1 to 60000") && !e.contains("corrupt gzip"), "{e}");
    // One 46000x46000 image.
    std::fs::write(&p, gzip(&idx(&[1, 46000, 46000], 1 << 20))).unwrap();
    let e = read_images(&p, FASHION).unwrap_err().to_string();
    assert!(e.contains("at byte 8") && e.contains("exactly 28"), "{e}");
    // The generic reader takes its limit from the caller.
    std::fs::write(&p, gzip(&idx(&[3_000_000_000], 1 << 20))).unwrap();
    let e = read_idx(&p, &[Dim::at_most(1 << 20)]).unwrap_err().to_string();
    assert!(e.contains("at most 1048576"), "{e}");
    assert_small_allocations();
}

/// The four Fashion-MNIST files in `dir`, with these image dims (labels to match).
fn fashion_files(dir: &Path, train: &[u32], test: &[u32]) {
    for (prefix, dims) in [("train", train), ("t10k", test)] {
        let n: usize = dims.iter().map(|&d| d as usize).product();
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte.gz")), gzip(&idx(dims, n))).unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte.gz")), gzip(&idx(&[dims[0]], dims[0] as usize))).unwrap();
    }
}

#[test]
fn empty_or_misshapen_data_sets_name_the_file() {
    let cases: [(&[u32], &[u32], &str, &str); 4] = [
        (&[0, 28, 28], &[5, 28, 28], "train-images", "(no samples)"),
        (&[5, 28, 28], &[0, 28, 28], "t10k-images", "(no samples)"),
        (&[5, 32, 32], &[5, 28, 28], "train-images", "exactly 28"),
        (&[5, 28, 28], &[5, 28, 27], "t10k-images", "exactly 28"),
    ];
    for (train, test, file, what) in cases {
        let dir = tempfile::tempdir().unwrap();
        fashion_files(dir.path(), train, test);
        let e = FashionMnist::load(dir.path()).map(|_| ()).unwrap_err().to_string();
        assert!(e.starts_with(&dir.path().join(format!("{file}-idx3-ubyte.gz")).display().to_string()) && e.contains(what), "{e}");
    }
    let dir = tempfile::tempdir().unwrap();
    fashion_files(dir.path(), &[5, 28, 28], &[3, 28, 28]);
    let (train, test) = FashionMnist::load(dir.path()).unwrap();
    assert_eq!((nn::Dataset::len(&train), nn::Dataset::len(&test)), (5, 3));
}

/// A zip of members (name, method 0 or 8, data as stored, declared inflated size), with
/// sizes and CRCs as declared (the CRC is never reached when a member is refused).
fn zip(members: &[(&str, u16, Vec<u8>, u32)]) -> Vec<u8> {
    let (mut out, mut central) = (Vec::new(), Vec::new());
    for (name, method, data, size) in members {
        let at = out.len() as u32;
        let fields = |b: &mut Vec<u8>| {
            b.extend(20u16.to_le_bytes()); // version needed
            b.extend(0u16.to_le_bytes()); // flags
            b.extend(method.to_le_bytes());
            b.extend([0, 0, 0x21, 0]); // time, date (1980-01-01)
            b.extend(0u32.to_le_bytes()); // crc
            b.extend((data.len() as u32).to_le_bytes());
            b.extend(size.to_le_bytes());
            b.extend((name.len() as u16).to_le_bytes());
            b.extend(0u16.to_le_bytes()); // extra
        };
        out.extend(b"PK\x03\x04");
        fields(&mut out);
        out.extend(name.as_bytes());
        out.extend(data);
        central.extend(b"PK\x01\x02");
        central.extend(20u16.to_le_bytes()); // version made by
        fields(&mut central);
        central.extend([0u8; 8]); // comment len, disk, internal attrs, external attrs (part)
        central.extend([0u8; 2]);
        central.extend(at.to_le_bytes());
        central.extend(name.as_bytes());
    }
    let (cd_at, cd_len) = (out.len() as u32, central.len() as u32);
    out.extend(central);
    out.extend(b"PK\x05\x06");
    out.extend([0u8; 4]);
    out.extend((members.len() as u16).to_le_bytes());
    out.extend((members.len() as u16).to_le_bytes());
    out.extend(cd_len.to_le_bytes());
    out.extend(cd_at.to_le_bytes());
    out.extend([0u8; 2]);
    out
}

/// An npy v1 header for `shape` of `<f4`.
fn npy_header(shape: &str) -> Vec<u8> {
    let mut text = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + text.len() + 1) % 64 != 0 {
        text.push(' ');
    }
    text.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend((text.len() as u16).to_le_bytes());
    b.extend(text.as_bytes());
    b
}

#[test]
fn npz_bomb_is_refused_from_the_npy_headers_before_inflating() {
    let net = lenet(Pool::Avg, Act::Sigmoid, &mut rng(0)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bomb.npz");
    // 1 MB of deflate that claims to inflate to 1 GB (within deflate's ratio): the npy
    // header at its start, then padding that is never inflated.
    let header = npy_header("(250000000,)");
    let mut e = DeflateEncoder::new(Vec::new(), Compression::fast());
    e.write_all(&header).unwrap();
    let mut data = e.finish().unwrap();
    data.resize(1 << 20, 0xAA);
    let declared = header.len() as u32 + 1_000_000_000;
    std::fs::write(&p, zip(&[("0.weight.npy", 8, data, declared)])).unwrap();
    let e = nn::load_state_dict_file(&net, &p).unwrap_err().to_string();
    assert!(e.starts_with(&p.display().to_string()) && e.contains("'0.weight' has shape [250000000]"), "{e}");
    assert!(e.contains("missing key '0.bias'"), "{e}");
    // A header whose shape does not match the member's declared size is refused too.
    let header = npy_header("(1000,)");
    std::fs::write(&p, zip(&[("0.weight.npy", 0, header.clone(), header.len() as u32)])).unwrap();
    let e = nn::load(&p).unwrap_err().to_string();
    assert!(e.contains("needs 4000 bytes of data but the member declares 0"), "{e}");
    assert_small_allocations();
}

#[test]
fn safetensors_bomb_is_refused_from_its_header() {
    let net = lenet(Pool::Avg, Act::Sigmoid, &mut rng(0)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bomb.safetensors");
    let header = br#"{"0.weight":{"dtype":"F32","shape":[250000000],"data_offsets":[0,1000000000]}}"#;
    let mut f = std::fs::File::create(&p).unwrap();
    f.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
    f.write_all(header).unwrap();
    f.set_len(8 + header.len() as u64 + 1_000_000_000).unwrap(); // sparse: costs no disk
    drop(f);
    let e = nn::load_state_dict_file(&net, &p).unwrap_err().to_string();
    assert!(e.starts_with(&p.display().to_string()) && e.contains("'0.weight' has shape [250000000]"), "{e}");
    assert_small_allocations();
}

#[test]
fn state_dict_errors_name_the_file_and_abbreviate_long_shapes() {
    let net = lenet(Pool::Avg, Act::Sigmoid, &mut rng(0)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("w.npz");
    let mut sd = net.state_dict();
    sd[0].1 = autograd::Tensor::zeros(&[1; 12]);
    nn::save(&p, &sd).unwrap();
    let e = nn::load_state_dict_file(&net, &p).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}: load_state_dict: '0.weight' has shape [1, 1, 1, 1, ..., 1, 1] (12 dims)", p.display())), "{e}");
    // Parameter::set says what differs.
    let e = net.parameters()[0].set(&autograd::Tensor::zeros(&[2, 2])).unwrap_err().to_string();
    assert!(e.contains("shape") && !e.contains("dtype"), "{e}");
}

fn mkfifo(p: &Path) {
    assert!(std::process::Command::new("mkfifo").arg(p).status().unwrap().success());
}

/// Runs `f` on another thread; fails the test if it does not finish in 20 s (a hang).
fn within_20s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(f()).unwrap());
    rx.recv_timeout(Duration::from_secs(20)).expect("hung")
}

#[test]
fn reading_a_fifo_is_refused_not_blocked() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["x.npz", "x.safetensors", "x.npy", "idx"] {
        let p = dir.path().join(name);
        mkfifo(&p);
        let q = p.clone();
        let e = within_20s(move || match name {
            "x.npy" => nn::load_npy(&q).map(|_| ()),
            "idx" => read_idx(&q, &[Dim::at_most(10)]).map(|_| ()),
            _ => nn::load(&q).map(|_| ()),
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("is a FIFO, not a regular file"), "{e}");
    }
}

#[test]
fn saves_replace_only_regular_files() {
    let dir = tempfile::tempdir().unwrap();
    let sd = vec![("w".to_string(), autograd::Tensor::ones(&[3]))];
    // A FIFO (standing in for a device: tests never touch real ones), directly and through a
    // symlink, and a folder: refused, left as they were.
    let fifo = dir.path().join("fifo.npz");
    mkfifo(&fifo);
    let link = dir.path().join("link.npz");
    std::os::unix::fs::symlink(&fifo, &link).unwrap();
    let folder = dir.path().join("folder.npz");
    std::fs::create_dir(&folder).unwrap();
    for (p, what) in [(&fifo, "a FIFO"), (&link, "a FIFO (via symlinks"), (&folder, "a folder")] {
        let e = nn::save(p, &sd).unwrap_err().to_string();
        assert!(e.contains(&format!("is {what}")) && e.contains("refusing to replace it"), "{e}");
        assert!(nn::check_save_path(p).is_err());
    }
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3, "no temporary files left");
}

#[test]
fn saves_write_through_symlinks_in_the_targets_folder() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let target = b.join("real.npz");
    let link = a.join("link.npz");
    std::os::unix::fs::symlink("../b/real.npz", &link).unwrap(); // dangling, relative
    let sd = vec![("w".to_string(), autograd::Tensor::ones(&[3]))];
    nn::save(&link, &sd).unwrap();
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link stays");
    assert_eq!(nn::load(&target).unwrap()[0].1.to_vec::<f32>(), vec![1.0; 3]);
    let sd2 = vec![("w".to_string(), autograd::Tensor::zeros(&[3]))];
    nn::save(&link, &sd2).unwrap();
    assert_eq!(nn::load(&target).unwrap()[0].1.to_vec::<f32>(), vec![0.0; 3]);
    assert_eq!(std::fs::read_dir(&a).unwrap().count(), 1);
    assert_eq!(std::fs::read_dir(&b).unwrap().count(), 1);
}

#[test]
fn a_255_byte_name_saves() {
    let dir = tempfile::tempdir().unwrap();
    let sd = vec![("w".to_string(), autograd::Tensor::ones(&[3]))];
    for ext in ["npz", "safetensors"] {
        let name = format!("{}.{ext}", "n".repeat(255 - ext.len() - 1));
        let p = dir.path().join(&name);
        nn::save(&p, &sd).unwrap();
        nn::check_save_path(&p).unwrap();
        assert_eq!(nn::load(&p).unwrap()[0].1.to_vec::<f32>(), vec![1.0; 3]);
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

#[test]
fn stale_temporary_files_of_dead_writers_are_removed_live_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("run.npz");
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    let mut live = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    let stale = dir.path().join(format!(".run.npz.{dead_pid}.0.tmp"));
    let busy = dir.path().join(format!(".run.npz.{}.0.tmp", live.id()));
    let other = dir.path().join(format!(".other.npz.{dead_pid}.0.tmp"));
    for f in [&stale, &busy, &other] {
        std::fs::write(f, b"partial").unwrap();
    }
    nn::save(&p, &[("w".to_string(), autograd::Tensor::ones(&[3]))]).unwrap();
    live.kill().unwrap();
    live.wait().unwrap();
    assert!(!stale.exists(), "a dead writer's file is removed");
    assert!(busy.exists(), "a live writer's file is kept");
    assert!(other.exists(), "another target's file is not ours");
}

#[test]
fn set_num_threads_refuses_absurd_counts() {
    for n in [0, autograd::MAX_THREADS + 1, usize::MAX] {
        let e = autograd::set_num_threads(n).unwrap_err().to_string();
        assert!(e.starts_with("set_num_threads: expects 1 to 1024 threads"), "{e}");
    }
}
