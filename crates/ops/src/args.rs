//! Argument types shared by the op front-ends (`conv.rs`, `pool.rs`) and the CPU kernels
//! (`cpu/`): plain data, so the kernels depend on no front-end and the front-ends on no
//! kernel internals.

use autograd::{Activation, Error, Result};

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

/// Arguments of [`conv2d`](crate::conv2d), PyTorch's defaults: stride 1, padding 0, dilation 1, groups 1;
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

/// A convolution algorithm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Conv2dAlgo {
    /// Let the selector choose by shape (the default).
    #[default]
    Auto,
    /// The direct stride-1 kernels over wide rows (`direct.rs`, `tiles.rs`): nothing
    /// unfolded; AVX-512 only. Fast for few channels (LeNet's 1 to 16).
    Direct,
    /// Unfold (im2col) a block of samples and multiply by the weight with our GEMM.
    Unfold,
    /// 1x1 kernels at stride 1 without padding: the convolution is a product of the
    /// weight with each sample's `[C, H W]` planes as they lie, nothing copied.
    Gemm1x1,
    /// One product over the whole batch per output position and kernel tap, on
    /// position-major copies, skipping every tap that reads padding (`taps.rs`). For small
    /// maps with many channels: ResNet's 4x4 to 1x1 stages. One group only.
    Taps,
}

impl Conv2dAlgo {
    /// Every algorithm a geometry can run, `Auto` excluded.
    pub const ALL: [Conv2dAlgo; 4] = [Conv2dAlgo::Direct, Conv2dAlgo::Unfold, Conv2dAlgo::Gemm1x1, Conv2dAlgo::Taps];

    /// The name `CONVNET_CONV_ALGO` uses.
    pub fn name(self) -> &'static str {
        match self {
            Conv2dAlgo::Auto => "auto",
            Conv2dAlgo::Direct => "direct",
            Conv2dAlgo::Unfold => "unfold",
            Conv2dAlgo::Gemm1x1 => "gemm1x1",
            Conv2dAlgo::Taps => "taps",
        }
    }

    /// The algorithm called `name` (as [`name`](Self::name) spells it).
    pub fn from_name(name: &str) -> Option<Conv2dAlgo> {
        [Conv2dAlgo::Auto].into_iter().chain(Self::ALL).find(|a| a.name() == name)
    }
}

/// One of the three maps of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Conv2dMap {
    /// `y = conv2d(x, w)`.
    Forward,
    /// `dx = conv2d_input_grad(dy, w)`.
    InputGrad,
    /// `dw = conv2d_weight_grad(x, dy)`.
    WeightGrad,
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

/// What [`conv2d_fused`](crate::conv2d_fused) applies to the convolution's output as it writes it, in this
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
