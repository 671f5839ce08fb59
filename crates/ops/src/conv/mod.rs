//! 2-d convolution (cross-correlation, as in PyTorch) with stride, padding, dilation and
//! groups, the fused `conv2d_fused` (activation and 2x2 average or max pooling applied as
//! the output is written), and the book's `corr2d`.
//!
//! Two kernels compute the same maps. Stride-1 convolutions on a CPU with AVX-512 use the
//! direct kernels (`direct.rs`, `tiles.rs`), which need no unfolded copy. The rest unfold
//! (im2col) a block of samples into a `[C/groups * kh * kw, block * OH * OW]` matrix in a
//! per-task buffer and multiply it by the weight with the GEMM micro-kernel (this file).
//! Samples run in parallel. The three maps below are closed under differentiation, so
//! every gradient rule is itself differentiable (double backward works):
//!
//! - `y = conv2d(x, w)`
//! - `dx = conv2d_input_grad(dy, w)`   (the adjoint in `x`; a transposed convolution)
//! - `dw = conv2d_weight_grad(x, dy)`  (the adjoint in `w`)
//!
//! The weight and bias gradients sum over the batch in fixed blocks of samples, added in
//! block order, so they are bitwise identical at any thread count. See docs/gradients.md.

mod direct;
mod pointwise;
mod scratch;
mod select;
mod tiles;

pub use select::{conv2d_algo_applies, conv2d_algo_for, last_conv2d_algo, Conv2dAlgo, Conv2dMap};
use select::{record as record_algo, select};

use crate::gemm::{gemm_serial, MatRef};
use crate::pool::{avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2x2_grad, Pool2dArgs};
use crate::shared::SharedOut;
use autograd::{no_grad, record, record_with_internals, Activation, Element, Error, Result, Tensor};
use scratch::{ensure_len, par_tasks, Lens, Scratch};

/// A size given per spatial dimension (height, width); `2.into()` means `(2, 2)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pair(pub usize, pub usize);

impl From<usize> for Pair {
    fn from(v: usize) -> Self {
        Pair(v, v)
    }
}
impl From<(usize, usize)> for Pair {
    fn from((a, b): (usize, usize)) -> Self {
        Pair(a, b)
    }
}
impl From<[usize; 2]> for Pair {
    fn from([a, b]: [usize; 2]) -> Self {
        Pair(a, b)
    }
}

/// Arguments of [`conv2d`], PyTorch's defaults: stride 1, padding 0, dilation 1, groups 1;
/// the algorithm chosen by shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dArgs {
    pub stride: Pair,
    pub padding: Pair,
    pub dilation: Pair,
    pub groups: usize,
    /// The kernel to compute this convolution and its gradients with, where it applies
    /// (else the automatic choice; see [`Conv2dAlgo`]). For tests and benchmarks: the
    /// values are the same to rounding whichever runs.
    pub algo: Conv2dAlgo,
}

impl Default for Conv2dArgs {
    fn default() -> Self {
        Conv2dArgs { stride: Pair(1, 1), padding: Pair(0, 0), dilation: Pair(1, 1), groups: 1, algo: Conv2dAlgo::Auto }
    }
}

impl Conv2dArgs {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn stride(mut self, s: impl Into<Pair>) -> Self {
        self.stride = s.into();
        self
    }
    pub fn padding(mut self, p: impl Into<Pair>) -> Self {
        self.padding = p.into();
        self
    }
    pub fn dilation(mut self, d: impl Into<Pair>) -> Self {
        self.dilation = d.into();
        self
    }
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
    pub fn algo(mut self, a: Conv2dAlgo) -> Self {
        self.algo = a;
        self
    }
}

/// Every size of one convolution, validated once.
#[derive(Clone, Copy, Debug)]
struct Geom {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    a: Conv2dArgs,
    /// Input channels per group.
    cg: usize,
    /// Output channels per group.
    og: usize,
}

/// Output length of one spatial dim: `floor((in + 2 pad - dilation (k - 1) - 1) / stride) + 1`,
/// `Ok(None)` when the window does not fit in the padded input (or the stride is 0), and
/// an error naming `op` when the padded input or the window span overflows.
pub fn out_size(op: &'static str, input: usize, k: usize, stride: usize, pad: usize, dilation: usize) -> Result<Option<usize>> {
    let overflow = || Error::overflow(op, format!("input {input}, kernel {k}, padding {pad}, dilation {dilation}"));
    let span = dilation.checked_mul(k.saturating_sub(1)).and_then(|s| s.checked_add(1)).ok_or_else(overflow)?;
    let padded = pad.checked_mul(2).and_then(|p| p.checked_add(input)).ok_or_else(overflow)?;
    Ok((padded >= span && stride > 0).then(|| (padded - span) / stride + 1))
}

/// `a * b * ...` or a size-overflow error naming `op`: the sizes the kernels derive from a
/// geometry (scratch blocks, padded planes, partial sums) must fit as tensors' do.
fn product(op: &'static str, what: &str, factors: &[usize]) -> Result<usize> {
    factors
        .iter()
        .try_fold(1usize, |a, &f| a.checked_mul(f))
        .filter(|&n| n <= autograd::shape::MAX_NUMEL)
        .ok_or_else(|| Error::overflow(op, format!("{what} {factors:?} does not fit in memory")))
}

impl Geom {
    fn new(op: &'static str, x: &[usize], w: &[usize], a: Conv2dArgs) -> Result<Geom> {
        let shapes = || format!("input {}, weight {}", fmt(x), fmt(w));
        if x.len() != 4 || w.len() != 4 {
            return Err(Error::invalid(
                op,
                format!("expects a 4-d input [N, C, H, W] and a 4-d weight [O, C/groups, kh, kw] ({})", shapes()),
            ));
        }
        let (Pair(sh, sw), Pair(ph, pw), Pair(dh, dw)) = (a.stride, a.padding, a.dilation);
        if sh == 0 || sw == 0 || dh == 0 || dw == 0 || a.groups == 0 {
            return Err(Error::invalid(
                op,
                format!(
                    "stride, dilation and groups must be positive (stride {:?}, dilation {:?}, groups {}; {})",
                    (sh, sw),
                    (dh, dw),
                    a.groups,
                    shapes()
                ),
            ));
        }
        let (n, c, h, wd) = (x[0], x[1], x[2], x[3]);
        let (o, cg, kh, kw) = (w[0], w[1], w[2], w[3]);
        if kh == 0 || kw == 0 {
            return Err(Error::invalid(op, format!("kernel size must be positive ({})", shapes())));
        }
        let expected = product(op, "channels per group x groups", &[cg, a.groups])?;
        if c != expected {
            return Err(Error::invalid(
                op,
                format!("input has {c} channels but weight expects {} ({} per group x {} groups; {})", expected, cg, a.groups, shapes()),
            ));
        }
        if o % a.groups != 0 {
            return Err(Error::invalid(op, format!("{o} output channels are not divisible by {} groups ({})", a.groups, shapes())));
        }
        let (oh, ow) = match (out_size(op, h, kh, sh, ph, dh)?, out_size(op, wd, kw, sw, pw, dw)?) {
            (Some(oh), Some(ow)) => (oh, ow),
            _ => {
                return Err(Error::invalid(
                    op,
                    format!(
                        "kernel {}x{} (dilation {:?}) is larger than the padded input {}x{} ({}, padding {:?})",
                        kh,
                        kw,
                        (dh, dw),
                        h + 2 * ph,
                        wd + 2 * pw,
                        shapes(),
                        (ph, pw)
                    ),
                ))
            }
        };
        let g = Geom { n, c, h, w: wd, o, kh, kw, oh, ow, a, cg, og: o / a.groups };
        g.check_sizes(op)?;
        Ok(g)
    }

    /// Every size the kernels compute from the geometry fits: the tensors, the padded
    /// planes, the unfolded and wide blocks (up to 32 samples, rounded to whole vectors
    /// and tiles: the factor 64) and the per-block partial sums. Empty dims count as 1:
    /// the kernels' strides are still products of the others.
    fn check_sizes(&self, op: &'static str) -> Result<()> {
        let nz = |d: usize| d.max(1);
        let (Pair(ph, pw), Pair(dh, dw)) = (self.a.padding, self.a.dilation);
        autograd::shape::checked_numel(op, &self.x_shape())?;
        autograd::shape::checked_numel(op, &self.w_shape())?;
        autograd::shape::checked_numel(op, &self.y_shape())?;
        // Padded planes: `out_size` checked `h + 2 ph`; the direct kernels also offset by
        // the dilated taps inside them.
        let (hp, wp) = (self.h + 2 * ph, self.w + 2 * pw);
        let plane = product(op, "padded plane", &[nz(hp), nz(wp)])?;
        product(op, "padded planes", &[nz(self.cg.max(self.og)), plane, 64])?;
        product(op, "dilated kernel rows", &[nz(self.kh), nz(dh), nz(wp)])?;
        product(op, "dilated kernel columns", &[nz(self.kw), nz(dw)])?;
        let rows = product(op, "unfolded rows", &[nz(self.cg), nz(self.kh), nz(self.kw)])?;
        let l = product(op, "output plane", &[nz(self.oh), nz(self.ow)])?;
        product(op, "unfolded block", &[rows.max(nz(self.og)), l, 64])?;
        product(op, "partial sums", &[nz(self.n), nz(self.o), rows + 1])?;
        Ok(())
    }
    /// Output positions per sample.
    fn l(&self) -> usize {
        self.oh * self.ow
    }
    /// Rows of the unfolded input per group.
    fn rows(&self) -> usize {
        self.cg * self.kh * self.kw
    }
    fn x_shape(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }
    fn w_shape(&self) -> [usize; 4] {
        [self.o, self.cg, self.kh, self.kw]
    }
    fn y_shape(&self) -> [usize; 4] {
        [self.n, self.o, self.oh, self.ow]
    }
    /// Fails unless `dy` is shaped like the convolution's output.
    fn check_output_grad(&self, op: &'static str, dy: &Tensor) -> Result<()> {
        if dy.shape() != self.y_shape() {
            return Err(Error::mismatch(op, "output gradient does not match the convolution's output", dy.shape(), &self.y_shape()));
        }
        Ok(())
    }
}

fn fmt(s: &[usize]) -> String {
    autograd::error::fmt_shape(s)
}

/// Copies a short run (one output row, typically 5 to 30 elements) with fixed-size moves:
/// a `memcpy` call, which the compiler would otherwise emit, costs more than the copy.
#[inline(always)]
fn copy_short<T: Copy>(dst: &mut [T], src: &[T]) {
    let n = dst.len();
    let mut k = 0;
    while k + 8 <= n {
        dst[k..k + 8].copy_from_slice(&src[k..k + 8]);
        k += 8;
    }
    if n - k >= 4 {
        dst[k..k + 4].copy_from_slice(&src[k..k + 4]);
        k += 4;
    }
    if n - k >= 2 {
        dst[k..k + 2].copy_from_slice(&src[k..k + 2]);
        k += 2;
    }
    if n - k == 1 {
        dst[k] = src[k];
    }
}

/// Copies `n` values with 8-wide moves, the last one overlapping its predecessor, so a row
/// of any length of at least 8 takes no scalar tail.
///
/// # Safety
/// `src` and `dst` must be valid for `n` values and must not overlap.
#[inline(always)]
unsafe fn copy_run<T: Copy>(dst: *mut T, src: *const T, n: usize) {
    // SAFETY: the caller upholds this function's `# Safety` contract, which is what the
    // operations below need.
    unsafe {
        if n >= 8 {
            let mut k = 0;
            while k + 8 < n {
                std::ptr::copy_nonoverlapping(src.add(k), dst.add(k), 8);
                k += 8;
            }
            std::ptr::copy_nonoverlapping(src.add(n - 8), dst.add(n - 8), 8);
        } else {
            for k in 0..n {
                *dst.add(k) = *src.add(k);
            }
        }
    }
}

/// `dst += src` for a short run, 8 lanes at a time (the loop the compiler would vectorise
/// with a runtime trip count costs more in setup than a 10-element row takes).
#[inline(always)]
fn add_run<T: Element>(dst: &mut [T], src: &[T]) {
    let n = dst.len().min(src.len());
    let (d8, s8) = (dst[..n].chunks_exact_mut(8), src[..n].chunks_exact(8));
    let tail = n - n % 8;
    for (d, s) in d8.zip(s8) {
        for k in 0..8 {
            d[k] += s[k];
        }
    }
    for k in tail..n {
        dst[k] += src[k];
    }
}

/// The planes of one group of one sample, zero-padded when the convolution pads, so the
/// unfolding loops below never test bounds. Returns the planes and their padded size.
fn padded_planes<'a, T: Element>(g: &Geom, x: &'a [T], grp: usize, buf: &'a mut Vec<T>) -> (&'a [T], usize, usize) {
    let Pair(ph, pw) = g.a.padding;
    let planes = &x[grp * g.cg * g.h * g.w..][..g.cg * g.h * g.w];
    if ph == 0 && pw == 0 {
        return (planes, g.h, g.w);
    }
    let (hp, wp) = (g.h + 2 * ph, g.w + 2 * pw);
    ensure_len(buf, g.cg * hp * wp);
    buf.fill(T::zero());
    for cc in 0..g.cg {
        for y in 0..g.h {
            let dst = &mut buf[(cc * hp + ph + y) * wp + pw..][..g.w];
            copy_short(dst, &planes[(cc * g.h + y) * g.w..][..g.w]);
        }
    }
    (buf, hp, wp)
}

/// Unfolds group `grp` of one sample `x` (`[C, H, W]`) into `cols`: row
/// `(c, i, j)` of the unfolded matrix starts at `cols[row * ld]` and holds, for every output
/// position, the input value that kernel tap `(i, j)` of channel `c` sees there.
fn im2col<T: Element>(g: &Geom, x: &[T], grp: usize, cols: &mut [T], ld: usize, buf: &mut Vec<T>) {
    let (Pair(sh, sw), Pair(dh, dw)) = (g.a.stride, g.a.dilation);
    let (src, hp, wp) = padded_planes(g, x, grp, buf);
    if sw == 1 {
        // The common case, as raw copies: this loop runs C*kh*kw*OH times per sample, and
        // slice bounds checks cost more than the few moves of each row.
        let (rows, l) = (g.rows(), g.l());
        assert!(rows == 0 || (rows - 1) * ld + l <= cols.len(), "im2col: output block too small");
        let fits = g.oh == 0 || g.kh == 0 || ((g.oh - 1) * sh + (g.kh - 1) * dh < hp && g.ow + (g.kw.max(1) - 1) * dw <= wp);
        assert!(g.cg * hp * wp <= src.len() && fits, "im2col: window outside the padded planes");
        for cc in 0..g.cg {
            for i in 0..g.kh {
                for oy in 0..g.oh {
                    // SAFETY: the asserts above bound every row read and written.
                    unsafe {
                        let line = src.as_ptr().add((cc * hp + i * dh + oy * sh) * wp);
                        let dst = cols.as_mut_ptr().add((cc * g.kh + i) * g.kw * ld + oy * g.ow);
                        for j in 0..g.kw {
                            copy_run(dst.add(j * ld), line.add(j * dw), g.ow);
                        }
                    }
                }
            }
        }
        return;
    }
    for cc in 0..g.cg {
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = &mut cols[((cc * g.kh + i) * g.kw + j) * ld..][..g.l()];
                let base = (cc * hp + i * dh) * wp + j * dw;
                for oy in 0..g.oh {
                    let dst = &mut row[oy * g.ow..(oy + 1) * g.ow];
                    let line = &src[base + oy * sh * wp..];
                    if sw == 1 {
                        copy_short(dst, &line[..g.ow]);
                    } else {
                        for (ox, d) in dst.iter_mut().enumerate() {
                            *d = line[ox * sw];
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds the unfolded matrix back into group `grp` of one
/// sample `dx` (through a padded buffer when the convolution pads).
fn col2im<T: Element>(g: &Geom, cols: &[T], ld: usize, grp: usize, dx: &mut [T], buf: &mut Vec<T>) {
    let (Pair(sh, sw), Pair(ph, pw), Pair(dh, dw)) = (g.a.stride, g.a.padding, g.a.dilation);
    let padded = ph > 0 || pw > 0;
    let (hp, wp) = (g.h + 2 * ph, g.w + 2 * pw);
    let dst_planes = &mut dx[grp * g.cg * g.h * g.w..][..g.cg * g.h * g.w];
    let acc: &mut [T] = if padded {
        ensure_len(buf, g.cg * hp * wp);
        buf.fill(T::zero());
        buf
    } else {
        dst_planes
    };
    for cc in 0..g.cg {
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = &cols[((cc * g.kh + i) * g.kw + j) * ld..][..g.l()];
                let base = (cc * hp + i * dh) * wp + j * dw;
                for oy in 0..g.oh {
                    let src = &row[oy * g.ow..(oy + 1) * g.ow];
                    let line = &mut acc[base + oy * sh * wp..];
                    if sw == 1 {
                        add_run(&mut line[..g.ow], src);
                    } else {
                        for (ox, &v) in src.iter().enumerate() {
                            line[ox * sw] += v;
                        }
                    }
                }
            }
        }
    }
    if padded {
        for cc in 0..g.cg {
            for y in 0..g.h {
                let d = &mut dst_planes[(cc * g.h + y) * g.w..][..g.w];
                let s = &buf[(cc * hp + ph + y) * wp + pw..][..g.w];
                d.iter_mut().zip(s).for_each(|(d, &v)| *d += v);
            }
        }
    }
}

/// Samples are processed in blocks: one GEMM covers a whole block (its unfolded inputs side
/// by side), which keeps the products large enough to run near the kernel's peak while
/// the block's buffers stay in cache. The block size depends on the geometry only, never
/// on the thread count, and the weight gradient adds the blocks' partial sums in block
/// order: results are bitwise identical at any thread count.
fn block_samples<T>(g: &Geom) -> usize {
    const BUDGET: usize = 256 * 1024;
    (BUDGET / (g.rows() * g.l() * std::mem::size_of::<T>()).max(1)).clamp(1, 32)
}

/// Runs `f(block index, samples, scratch)` over the sample blocks in parallel, each
/// task's scratch reserved for the unfolding kernels' largest block.
fn for_blocks<T: Element>(g: &Geom, f: impl Fn(usize, std::ops::Range<usize>, &mut Scratch<T>) + Sync + Send) {
    let nb = block_samples::<T>(g);
    let ld = nb.min(g.n) * g.l();
    let Pair(ph, pw) = g.a.padding;
    let pad = if ph > 0 || pw > 0 { g.cg * (g.h + 2 * ph) * (g.w + 2 * pw) } else { 0 };
    let lens = Lens { cols: g.rows() * ld, mat: g.og * ld, pad, ..Lens::default() };
    par_tasks::<T>(g.n.div_ceil(nb), lens, |b, sc| f(b, b * nb..((b + 1) * nb).min(g.n), sc));
}

/// Copies the output gradient of `samples`, group `grp`, into `mat` as `[og, nb * L]`.
fn gather_dy<T: Element>(g: &Geom, dy: &[T], samples: &std::ops::Range<usize>, grp: usize, mat: &mut [T]) {
    let (l, ld) = (g.l(), samples.len() * g.l());
    for (s, n) in samples.clone().enumerate() {
        for oc in 0..g.og {
            let src = &dy[(n * g.o + grp * g.og + oc) * l..][..l];
            mat[oc * ld + s * l..][..l].copy_from_slice(src);
        }
    }
}

/// Unfolds group `grp` of a block of samples into `sc.cols` (`[rows, block * OH*OW]`).
fn unfold_block<T: Element>(g: &Geom, x: &[T], samples: &std::ops::Range<usize>, grp: usize, sc: &mut Scratch<T>) {
    let (l, chw) = (g.l(), g.c * g.h * g.w);
    let ld = samples.len() * l;
    for (s, n) in samples.clone().enumerate() {
        im2col(g, &x[n * chw..(n + 1) * chw], grp, &mut sc.cols[s * l..], ld, &mut sc.pad);
    }
}

/// The forward pass with `algo` (from [`select`]). Returns the output after the
/// activation, and the pooled output when the kernel fused the pooling too.
fn forward_kernel<T: Element>(g: &Geom, algo: Conv2dAlgo, x: &[T], w: &[T], bias: Option<&[T]>, ep: Epilogue) -> (Vec<T>, Option<Vec<T>>) {
    match (algo, direct::Wide::new(g)) {
        (Conv2dAlgo::Direct, Some(wide)) => direct::forward(g, &wide, x, w, bias, ep),
        (Conv2dAlgo::Gemm1x1, _) => (pointwise::forward(g, x, w, bias, ep.act), None),
        _ => (forward_unfolded(g, x, w, bias, ep.act), None),
    }
}

/// The forward pass by unfolding (im2col and GEMM), for strided convolutions and CPUs
/// without the direct kernels.
fn forward_unfolded<T: Element>(g: &Geom, x: &[T], w: &[T], bias: Option<&[T]>, act: Option<Activation>) -> Vec<T> {
    let (l, rows) = (g.l(), g.rows());
    let mut y = autograd::buffers::for_overwrite::<T>(g.n * g.o * l);
    if rows == 0 {
        // No input channels: every output is its bias (or 0).
        for (p, plane) in y.chunks_mut(l.max(1)).enumerate() {
            plane.fill(bias.map_or(T::zero(), |b| b[p % g.o]));
            act.inspect(|a| a.apply_slice(plane));
        }
        return y;
    }
    let out = SharedOut::new(&mut y);
    for_blocks::<T>(g, |_, samples, sc| {
        let ld = samples.len() * l;
        ensure_len(&mut sc.cols, rows * ld);
        ensure_len(&mut sc.mat, g.og * ld);
        for grp in 0..g.a.groups {
            unfold_block(g, x, &samples, grp, sc);
            let a = MatRef::row_major(w, grp * g.og * rows, rows);
            gemm_serial(g.og, ld, rows, a, MatRef::row_major(&sc.cols, 0, ld), &mut sc.mat, ld, false);
            for (s, n) in samples.clone().enumerate() {
                for oc in 0..g.og {
                    let c = grp * g.og + oc;
                    // SAFETY: each sample's output belongs to exactly one block.
                    let dst = unsafe { out.slice((n * g.o + c) * l, l) };
                    let src = &sc.mat[oc * ld + s * l..][..l];
                    match bias {
                        Some(b) => {
                            let bc = b[c]; // hoisted: a bounds check in the loop stops vectorisation
                            dst.iter_mut().zip(src).for_each(|(d, &v)| *d = v + bc);
                        }
                        None => dst.copy_from_slice(src),
                    }
                    act.inspect(|a| a.apply_slice(dst));
                }
            }
        }
    });
    y
}

fn input_grad_kernel<T: Element>(g: &Geom, algo: Conv2dAlgo, dy: &[T], w: &[T]) -> Vec<T> {
    match (algo, direct::Wide::new(g)) {
        (Conv2dAlgo::Direct, Some(wide)) => {
            let b = direct::Backward { dy, y: None, act: None, pool: None, x: None, w: Some(w), bias: false };
            return direct::backward(g, &wide, b).dx.expect("asked for");
        }
        (Conv2dAlgo::Gemm1x1, _) => return pointwise::input_grad(g, dy, w),
        _ => {}
    }
    let (l, rows) = (g.l(), g.rows());
    let chw = g.c * g.h * g.w;
    let mut dx = autograd::buffers::zeroed::<T>(g.n * chw);
    if rows == 0 || dx.is_empty() {
        return dx;
    }
    let out = SharedOut::new(&mut dx);
    for_blocks::<T>(g, |_, samples, sc| {
        let ld = samples.len() * l;
        ensure_len(&mut sc.cols, rows * ld);
        ensure_len(&mut sc.mat, g.og * ld);
        for grp in 0..g.a.groups {
            gather_dy(g, dy, &samples, grp, &mut sc.mat);
            let a = MatRef::transposed(w, grp * g.og * rows, rows);
            gemm_serial(rows, ld, g.og, a, MatRef::row_major(&sc.mat, 0, ld), &mut sc.cols, ld, false);
            for (s, n) in samples.clone().enumerate() {
                // SAFETY: each sample's input gradient belongs to exactly one block.
                let dxn = unsafe { out.slice(n * chw, chw) };
                col2im(g, &sc.cols[s * l..], ld, grp, dxn, &mut sc.pad);
            }
        }
    });
    dx
}

/// The weight gradient. Each block unfolds its samples again (into scratch that stays in
/// cache) rather than reading an unfolded copy of the whole batch kept by the forward:
/// that copy (35 MB for LeNet's batch of 256) cost more in memory traffic than the
/// second unfolding costs in arithmetic.
fn weight_grad_kernel<T: Element>(g: &Geom, algo: Conv2dAlgo, x: &[T], dy: &[T]) -> Vec<T> {
    match (algo, direct::Wide::new(g)) {
        (Conv2dAlgo::Direct, Some(wide)) => {
            let b = direct::Backward { dy, y: None, act: None, pool: None, x: Some(x), w: None, bias: false };
            return direct::backward(g, &wide, b).dw.expect("asked for");
        }
        (Conv2dAlgo::Gemm1x1, _) => return pointwise::weight_grad(g, x, dy),
        _ => {}
    }
    let (l, rows) = (g.l(), g.rows());
    let size = g.o * rows;
    let blocks = g.n.div_ceil(block_samples::<T>(g));
    if size == 0 {
        return Vec::new();
    }
    let mut partials = autograd::buffers::for_overwrite::<T>(blocks * size);
    let out = SharedOut::new(&mut partials);
    for_blocks::<T>(g, |b, samples, sc| {
        let ld = samples.len() * l;
        ensure_len(&mut sc.mat, g.og * ld);
        ensure_len(&mut sc.cols, rows * ld);
        // SAFETY: block `b` owns partial sum `b`.
        let acc = unsafe { out.slice(b * size, size) };
        for grp in 0..g.a.groups {
            unfold_block(g, x, &samples, grp, sc);
            gather_dy(g, dy, &samples, grp, &mut sc.mat);
            let a = MatRef::row_major(&sc.mat, 0, ld);
            gemm_serial(g.og, rows, ld, a, MatRef::transposed(&sc.cols, 0, ld), &mut acc[grp * g.og * rows..], rows, false);
        }
    });
    // Block partial sums, added in block order.
    let mut out = autograd::buffers::zeroed::<T>(size);
    for p in partials.chunks(size.max(1)) {
        out.iter_mut().zip(p).for_each(|(o, &v)| *o += v);
    }
    autograd::buffers::recycle(partials);
    out
}

fn same_dtype(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.dtype() != b.dtype() {
        return Err(Error::DTypeMismatch { op, lhs: a.dtype(), rhs: b.dtype() });
    }
    Ok(())
}

/// 2-d convolution of `input [N, C, H, W]` with `weight [O, C/groups, kh, kw]` plus an
/// optional `bias [O]`, as `torch.nn.functional.conv2d`.
pub fn conv2d(input: &Tensor, weight: &Tensor, bias: Option<&Tensor>, args: Conv2dArgs) -> Result<Tensor> {
    conv2d_fused(input, weight, bias, args, Epilogue::default())
}

/// What [`conv2d_fused`] applies to the convolution's output as it writes it, in this
/// order: an activation, then 2x2 pooling with stride 2.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Epilogue {
    pub act: Option<Activation>,
    pub pool: Option<Pool2x2>,
}

/// The pooling an [`Epilogue`] can end with: `Pool2dArgs::new(2)` (2x2 windows, stride 2,
/// no padding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool2x2 {
    /// `avg_pool2d(y, Pool2dArgs::new(2))`.
    Avg,
    /// `max_pool2d(y, Pool2dArgs::new(2))`.
    Max,
}

impl Epilogue {
    pub fn act(act: Activation) -> Self {
        Epilogue { act: Some(act), pool: None }
    }
    pub fn then_pool(self, pool: Pool2x2) -> Self {
        Epilogue { pool: Some(pool), ..self }
    }
}

/// `conv2d` followed by `epilogue` as one op: the activation and the pooling are applied
/// while each sample's output is in cache, and the backward pass takes both back from the
/// saved activation in one pass. Values and gradients are bitwise those of the ops in turn.
pub fn conv2d_fused(input: &Tensor, weight: &Tensor, bias: Option<&Tensor>, args: Conv2dArgs, epilogue: Epilogue) -> Result<Tensor> {
    let op = if epilogue == Epilogue::default() { "conv2d" } else { "conv2d_fused" };
    let g = Geom::new(op, input.shape(), weight.shape(), args)?;
    same_dtype(op, input, weight)?;
    if let Some(b) = bias {
        same_dtype(op, input, b)?;
        if b.shape() != [g.o] {
            return Err(Error::invalid(
                op,
                format!("bias must have shape [{}], got {} (weight {})", g.o, fmt(b.shape()), fmt(weight.shape())),
            ));
        }
    }
    let pool = Pool2dArgs::new(2);
    if epilogue.pool.is_some() && (g.oh < 2 || g.ow < 2) {
        return Err(Error::invalid(op, format!("2x2 pooling needs a convolution output of at least 2x2, got {}x{}", g.oh, g.ow)));
    }
    let algo = select(Conv2dMap::Forward, &g);
    let (full, pooled) = autograd::dispatch!("conv2d", input.storage(), |_s: T| {
        let (x, w) = (input.contiguous_data::<T>()?, weight.contiguous_data::<T>()?);
        let b = bias.map(|b| b.contiguous_data::<T>()).transpose()?;
        record_algo(Conv2dMap::Forward, algo);
        let (y, pooled) = forward_kernel(&g, algo, &x, &w, b.as_deref(), epilogue);
        let y = Tensor::from_vec(y, &g.y_shape())?;
        let pooled = match pooled {
            Some(p) => Some(Tensor::from_vec(p, &[g.n, g.o, g.oh / 2, g.ow / 2])?),
            None => match epilogue.pool {
                Some(Pool2x2::Avg) => Some(no_grad(|| avg_pool2d(&y, pool))?),
                Some(Pool2x2::Max) => Some(no_grad(|| max_pool2d(&y, pool))?),
                None => None,
            },
        };
        (y, pooled)
    });
    // With pooling, the op's output is the pooled tensor; the backward pass needs the
    // activation before it, which the rule keeps.
    let saved = pooled.is_some().then(|| full.clone());
    let out = pooled.unwrap_or(full);
    let mut inputs = vec![input, weight];
    inputs.extend(bias);
    // Anomaly mode checks the activation before the pooling too: pooling can hide a
    // non-finite value (max drops a -inf, an odd last row is never read).
    let before_pool = saved.clone();
    Ok(record_with_internals(op, out, &inputs, &before_pool.iter().collect::<Vec<_>>(), move |ctx| {
        let (x, w) = (ctx.input(0), ctx.input(1));
        let bias = ctx.inputs().get(2);
        let y = saved.as_ref().unwrap_or(ctx.output());
        // The direct kernels compute every gradient (and take the epilogue back) in one
        // pass, when the selector picks them for both gradient maps; the differentiable
        // path below runs each map through its own op, which asks the selector again.
        if !ctx.create_graph() && [Conv2dMap::InputGrad, Conv2dMap::WeightGrad].iter().all(|&m| select(m, &g) == Conv2dAlgo::Direct) {
            if let Some(wide) = direct::Wide::new(&g) {
                return backward_direct(&g, &wide, ctx, y, epilogue);
            }
        }
        // The gradient before the pooling, then before the activation.
        let mut dy = ctx.grad_output().clone();
        match epilogue.pool {
            Some(Pool2x2::Avg) => dy = avg_pool2d_backward(&dy, &g.y_shape(), pool)?,
            // The winners are those of the activation, which is what the pooling read.
            Some(Pool2x2::Max) => dy = max_pool2x2_grad(y, &dy)?,
            None => {}
        }
        let dy = match epilogue.act {
            None => dy,
            // A differentiated backward needs it as a function of the inputs.
            Some(a) if ctx.create_graph() => a.backward_from_input(&dy, &conv2d(x, w, bias, args)?)?,
            Some(a) => a.backward_from_output(&dy, y)?,
        };
        let dw = if ctx.needs_grad(1) { Some(conv2d_weight_grad(x, &dy, w.shape(), args)?) } else { None };
        let mut grads = vec![if ctx.needs_grad(0) { Some(conv2d_input_grad(&dy, w, x.shape(), args)?) } else { None }, dw];
        if bias.is_some() {
            grads.push(if ctx.needs_grad(2) { Some(dy.sum_dims(&[0, 2, 3], false)?) } else { None });
        }
        Ok(grads)
    }))
}

/// The first-order backward of [`conv2d_fused`] on the direct path: pooling, activation,
/// bias, input and weight gradients in one pass over the samples. `y` is the convolution's
/// output after the activation.
fn backward_direct(g: &Geom, wide: &direct::Wide, ctx: &autograd::BackwardCtx, y: &Tensor, ep: Epilogue) -> Result<Vec<Option<Tensor>>> {
    let (x, w, dy) = (ctx.input(0), ctx.input(1), ctx.grad_output());
    let bias = ctx.inputs().len() == 3 && ctx.needs_grad(2);
    autograd::dispatch!("conv2d_backward", dy.storage(), |_s: T| {
        let (xd, wd, dyd, y) =
            (x.contiguous_data::<T>()?, w.contiguous_data::<T>()?, dy.contiguous_data::<T>()?, y.contiguous_data::<T>()?);
        let b = direct::Backward {
            dy: &dyd,
            y: Some(&y),
            act: ep.act,
            pool: ep.pool,
            x: ctx.needs_grad(1).then_some(&xd[..]),
            w: ctx.needs_grad(0).then_some(&wd[..]),
            bias,
        };
        let grads = direct::backward(g, wide, b);
        for (map, ran) in [(Conv2dMap::InputGrad, ctx.needs_grad(0)), (Conv2dMap::WeightGrad, ctx.needs_grad(1))] {
            if ran {
                record_algo(map, Conv2dAlgo::Direct);
            }
        }
        let mut out = vec![
            grads.dx.map(|v| Tensor::from_vec(v, &g.x_shape())).transpose()?,
            grads.dw.map(|v| Tensor::from_vec(v, &g.w_shape())).transpose()?,
        ];
        if ctx.inputs().len() == 3 {
            out.push(grads.db.map(|v| Tensor::from_vec(v, &[g.o])).transpose()?);
        }
        Ok(out)
    })
}

/// Gradient of `conv2d` with respect to its input, given the output gradient `dy`: a
/// transposed convolution. Differentiable (its adjoints are `conv2d` and
/// [`conv2d_weight_grad`]).
pub fn conv2d_input_grad(dy: &Tensor, weight: &Tensor, input_shape: &[usize], args: Conv2dArgs) -> Result<Tensor> {
    let g = Geom::new("conv2d_input_grad", input_shape, weight.shape(), args)?;
    same_dtype("conv2d_input_grad", dy, weight)?;
    g.check_output_grad("conv2d_input_grad", dy)?;
    let algo = select(Conv2dMap::InputGrad, &g);
    let out = autograd::dispatch!("conv2d_input_grad", dy.storage(), |_s: T| {
        let (d, w) = (dy.contiguous_data::<T>()?, weight.contiguous_data::<T>()?);
        record_algo(Conv2dMap::InputGrad, algo);
        Tensor::from_vec(input_grad_kernel(&g, algo, &d, &w), &g.x_shape())?
    });
    Ok(record("conv2d_input_grad", out, &[dy, weight], move |ctx| {
        let (dy, w, u) = (ctx.input(0), ctx.input(1), ctx.grad_output());
        Ok(vec![
            if ctx.needs_grad(0) { Some(conv2d(u, w, None, args)?) } else { None },
            if ctx.needs_grad(1) { Some(conv2d_weight_grad(u, dy, w.shape(), args)?) } else { None },
        ])
    }))
}

/// Gradient of `conv2d` with respect to its weight, given the input and the output
/// gradient. Differentiable (its adjoints are [`conv2d_input_grad`] and `conv2d`).
pub fn conv2d_weight_grad(input: &Tensor, dy: &Tensor, weight_shape: &[usize], args: Conv2dArgs) -> Result<Tensor> {
    let g = Geom::new("conv2d_weight_grad", input.shape(), weight_shape, args)?;
    same_dtype("conv2d_weight_grad", input, dy)?;
    g.check_output_grad("conv2d_weight_grad", dy)?;
    let algo = select(Conv2dMap::WeightGrad, &g);
    let out = autograd::dispatch!("conv2d_weight_grad", dy.storage(), |_s: T| {
        let (x, d) = (input.contiguous_data::<T>()?, dy.contiguous_data::<T>()?);
        record_algo(Conv2dMap::WeightGrad, algo);
        Tensor::from_vec(weight_grad_kernel(&g, algo, &x, &d), &g.w_shape())?
    });
    Ok(record("conv2d_weight_grad", out, &[input, dy], move |ctx| {
        let (x, dy, v) = (ctx.input(0), ctx.input(1), ctx.grad_output());
        Ok(vec![
            if ctx.needs_grad(0) { Some(conv2d_input_grad(dy, v, x.shape(), args)?) } else { None },
            if ctx.needs_grad(1) { Some(conv2d(x, v, None, args)?) } else { None },
        ])
    }))
}

/// The book's `corr2d`: 2-d cross-correlation of a 2-d input with a 2-d kernel, no padding,
/// stride 1. Differentiable in both arguments.
pub fn corr2d(x: &Tensor, k: &Tensor) -> Result<Tensor> {
    if x.rank() != 2 || k.rank() != 2 {
        return Err(Error::mismatch("corr2d", "expects a 2-d input and a 2-d kernel", x.shape(), k.shape()));
    }
    let (h, w) = (x.shape()[0], x.shape()[1]);
    let (kh, kw) = (k.shape()[0], k.shape()[1]);
    if kh > h || kw > w || kh == 0 || kw == 0 {
        return Err(Error::mismatch("corr2d", "kernel must be non-empty and no larger than the input", x.shape(), k.shape()));
    }
    same_dtype("corr2d", x, k)?;
    x.check_float("corr2d")?;
    let y = conv2d(&x.reshape_to(&[1, 1, h, w])?, &k.reshape_to(&[1, 1, kh, kw])?, None, Conv2dArgs::default())?;
    y.reshape_to(&[h - kh + 1, w - kw + 1])
}
