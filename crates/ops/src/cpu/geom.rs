//! The validated sizes of one convolution, which every kernel reads, and the size checks
//! that keep the kernels' own offset arithmetic from overflowing.

use crate::args::{out_size, Conv2dArgs, Pair};
use autograd::{Error, Result, Tensor};

/// Every size of one convolution, validated once.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geom {
    pub(crate) n: usize,
    pub(crate) c: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) o: usize,
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    pub(crate) oh: usize,
    pub(crate) ow: usize,
    pub(crate) a: Conv2dArgs,
    /// Input channels per group.
    pub(crate) cg: usize,
    /// Output channels per group.
    pub(crate) og: usize,
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
    pub(crate) fn new(op: &'static str, x: &[usize], w: &[usize], a: Conv2dArgs) -> Result<Geom> {
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
    pub(crate) fn l(&self) -> usize {
        self.oh * self.ow
    }
    /// Rows of the unfolded input per group.
    pub(crate) fn rows(&self) -> usize {
        self.cg * self.kh * self.kw
    }
    pub(crate) fn x_shape(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }
    pub(crate) fn w_shape(&self) -> [usize; 4] {
        [self.o, self.cg, self.kh, self.kw]
    }
    pub(crate) fn y_shape(&self) -> [usize; 4] {
        [self.n, self.o, self.oh, self.ow]
    }
    /// Fails unless `dy` is shaped like the convolution's output.
    pub(crate) fn check_output_grad(&self, op: &'static str, dy: &Tensor) -> Result<()> {
        if dy.shape() != self.y_shape() {
            return Err(Error::mismatch(op, "output gradient does not match the convolution's output", dy.shape(), &self.y_shape()));
        }
        Ok(())
    }
}

fn fmt(s: &[usize]) -> String {
    autograd::error::fmt_shape(s)
}
