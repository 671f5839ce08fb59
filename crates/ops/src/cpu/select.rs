//! Which kernel computes each convolution map, decided in this one place.
//!
//! The three maps of a convolution (the forward, the input gradient and the weight
//! gradient) each ask [`select`] for an algorithm; the gradient rules never choose one
//! themselves. A caller can ask for one per call ([`Conv2dArgs::algo`](crate::Conv2dArgs)) or for a whole
//! process (`CONVNET_CONV_ALGO=direct|unfold|gemm1x1|taps|auto`, read once), which is how tests
//! run every kernel and benchmarks compare them. A request that does not apply to a
//! geometry (the direct kernels without AVX-512, `gemm1x1` for a 3x3 kernel) falls back
//! to the automatic choice; [`last_conv2d_algo`] tells what ran.

use super::direct;
use super::geom::Geom;
use crate::args::{out_size, Conv2dAlgo, Conv2dArgs, Conv2dMap, Pair};
use autograd::Result;
use std::cell::Cell;
use std::sync::OnceLock;

/// The process-wide request from `CONVNET_CONV_ALGO`, read once. An unknown name is
/// reported on stderr once and ignored.
fn env_request() -> Conv2dAlgo {
    static REQ: OnceLock<Conv2dAlgo> = OnceLock::new();
    *REQ.get_or_init(|| match std::env::var("CONVNET_CONV_ALGO") {
        Ok(v) => Conv2dAlgo::from_name(v.trim()).unwrap_or_else(|| {
            eprintln!("CONVNET_CONV_ALGO={v:?} is not one of auto, direct, unfold, gemm1x1, taps; using auto");
            Conv2dAlgo::Auto
        }),
        Err(_) => Conv2dAlgo::Auto,
    })
}

/// Whether `algo` can compute `g`. Empty problems (no samples, channels or outputs) take
/// the unfolding path, which handles them without any tile or product.
fn applies(algo: Conv2dAlgo, g: &Geom) -> bool {
    let empty = [g.n, g.o, g.l(), g.rows()].contains(&0);
    match algo {
        Conv2dAlgo::Auto => false,
        Conv2dAlgo::Unfold => true,
        Conv2dAlgo::Direct => !empty && direct::applies(),
        Conv2dAlgo::Gemm1x1 => !empty && (g.kh, g.kw) == (1, 1) && g.a.stride == Pair(1, 1) && g.a.padding == Pair(0, 0),
        Conv2dAlgo::Taps => !empty && super::taps::applies(g),
    }
}

/// The direct kernels win while a tap's few multiply-adds per output position dominate:
/// LeNet's convolutions (25 taps x 6 channels, 150 taps x 16) run 2-5x faster than
/// unfolded, and up to 64 channels they still match or beat the GEMM. Past that, the
/// GEMM, which blocks for the cache, is as fast or faster (the sweep in
/// docs/benchmarks.md, issue 23).
///
/// Strided, over the phase planes (tenth session's sweep, stride 2): 1.2-3x faster than
/// unfolding for kernels of 3x3 and up, and for 1x1 kernels over 3 channels; but a strided
/// 1x1 kernel over 16 or more channels unfolds into a plain product that runs up to 1.8x
/// faster, and with 64 output channels unfolding is 5-12% faster for outputs of 7x7 and
/// below.
fn direct_wins(g: &Geom) -> bool {
    let strided = g.a.stride != Pair(1, 1);
    let strided_loses = strided && ((g.kh * g.kw == 1 && g.cg >= 16) || (g.og > 32 && g.l() < 196));
    g.rows() <= DIRECT_MAX_TAPS && g.og <= DIRECT_MAX_OUT && !strided_loses
}

/// Largest `C/groups * kh * kw` the direct kernels are chosen for (64 channels of 5x5).
const DIRECT_MAX_TAPS: usize = 1600;
/// Largest `O/groups` the direct kernels are chosen for.
const DIRECT_MAX_OUT: usize = 64;

/// The per-position products win where a sample's products would be thin: small output
/// maps (where most of a 3x3 kernel reads padding, too), with enough samples and channels
/// that one product over the batch runs near the GEMM's peak. Found by sweeping both
/// (docs/benchmarks.md, "Eighth session"): at batch 64 they run 1.3-2x faster than the
/// direct or unfolding kernels up to 7x7 outputs, and up to 14x14 for 5x5 kernels; for a
/// 1x1 kernel, only up to 4x4 outputs (past that a sample's planes are a wide enough
/// product).
/// At 28x28 with 5x5 kernels they win only for the channel counts between the direct
/// kernels' (up to 64 outputs) and unfolding's (256): at 128 channels 1.31x PyTorch's
/// time against unfolding's 1.70x (ninth session).
///
/// With 8 to 15 samples a position's products are thin. At stride 1 the kernel then
/// multiplies runs of positions at once and wins for 3x3 and 5x5 kernels (see below). At
/// other strides it wins only for 5x5 kernels over 32-128 channels, at outputs up to 7x7,
/// or up to 14x14 with 64 outputs or fewer (eleventh session's batch-8 sweep), and for 3x3
/// kernels at stride 2 onto small outputs (twelfth session).
fn taps_win(g: &Geom) -> bool {
    let (l, taps) = (g.l(), g.kh * g.kw);
    if g.n < TAPS_SMALL_BATCH || g.cg < TAPS_MIN_CHANNELS || g.og < TAPS_MIN_CHANNELS {
        return false;
    }
    if g.n < TAPS_MIN_BATCH {
        // At stride 1 the products go by runs of positions (`taps.rs`), `len N` rows each:
        // 1.1-1.35x faster than the next best kernel for 3x3 kernels onto 3x3 to 14x14
        // outputs and 5x5 kernels onto 3x3 to 28x28, from 64 to 256 channels, at 1 and 2
        // threads (twelfth session; at 28x28 with 3x3 kernels, up to 9% slower).
        if super::taps::runs_apply(g) && taps >= 9 && l >= 9 && (taps >= 25 || l <= 196) {
            return true;
        }
        let narrow = g.cg <= TAPS_WIDE_MAX_CHANNELS && g.og <= TAPS_WIDE_MAX_CHANNELS;
        let five = narrow && taps >= 25 && (l <= 49 || (l <= 196 && g.og <= DIRECT_MAX_OUT));
        // 3x3 at stride 2 onto 3x3 to 4x4 outputs (up to 256 channels), or up to 7x7 with
        // 64 outputs or fewer: 1.2-2.5x faster than unfolding at 2 threads, and at 1 thread
        // as fast or faster except 256 channels (9% slower; twelfth session).
        let small_out = (9..=16).contains(&l) || ((9..=49).contains(&l) && g.og <= DIRECT_MAX_OUT);
        let strided = taps == 9 && g.a.stride == Pair(2, 2) && g.cg <= 256 && g.og <= 256 && small_out;
        return five || strided;
    }
    if taps == 1 {
        // Strided (ResNet's shortcuts), only with a batch of 64 or more and 128 or more
        // outputs: 1.1-1.25x faster than unfolding there, 1.4x at batch 256 (`b4_short`),
        // but slower at batch 16 or with 64 outputs or fewer (eleventh session).
        return l <= 16 && (g.a.stride == Pair(1, 1) || (g.n >= 64 && g.og >= 128));
    }
    let between = g.og > DIRECT_MAX_OUT && g.og <= TAPS_WIDE_MAX_CHANNELS && g.cg <= TAPS_WIDE_MAX_CHANNELS;
    // 3x3 onto up to 14x14 outputs over 33-64 channels: 13-27% faster than the direct
    // kernels at batch 16 and 64, 1 thread (at 2 threads, as fast to 13% faster); not at 32
    // channels, where the direct kernels win by 30% (twelfth session).
    let sixty_four = (TAPS_MIN_CHANNELS + 1..=DIRECT_MAX_OUT).contains(&g.cg) && (TAPS_MIN_CHANNELS + 1..=DIRECT_MAX_OUT).contains(&g.og);
    l <= 49 || (taps >= 25 && (l <= 196 || (l <= 784 && between))) || (taps == 9 && l <= 196 && sixty_four)
}

/// Most channels (in and out) the taps kernel is chosen for at 28x28 outputs.
const TAPS_WIDE_MAX_CHANNELS: usize = 128;

/// Fewest samples (the products' rows) and channels the taps kernel is chosen for in
/// general, and for 5x5 kernels at small outputs.
const TAPS_MIN_BATCH: usize = 16;
const TAPS_SMALL_BATCH: usize = 8;
const TAPS_MIN_CHANNELS: usize = 32;

/// The automatic choice for `map` of `g`: the per-position products for small maps with
/// many channels, 1x1 kernels as plain products, the direct kernels for few channels
/// where they run, unfolding otherwise. The same for all three maps today; `map` is there
/// so one can be tuned apart.
fn auto(_map: Conv2dMap, g: &Geom) -> Conv2dAlgo {
    if applies(Conv2dAlgo::Taps, g) && taps_win(g) {
        Conv2dAlgo::Taps
    } else if applies(Conv2dAlgo::Gemm1x1, g) {
        Conv2dAlgo::Gemm1x1
    } else if applies(Conv2dAlgo::Direct, g) && direct_wins(g) {
        Conv2dAlgo::Direct
    } else {
        Conv2dAlgo::Unfold
    }
}

/// The algorithm for `map` of `g`: the call's request if it applies, else the process's
/// (`CONVNET_CONV_ALGO`) if it applies, else the automatic choice. Never `Auto`.
pub(crate) fn select(map: Conv2dMap, g: &Geom) -> Conv2dAlgo {
    [g.a.algo, env_request()].into_iter().find(|&a| applies(a, g)).unwrap_or_else(|| auto(map, g))
}

thread_local! {
    /// The algorithm each map last ran with on this thread (the front-ends run on the
    /// caller's thread, so a test sees its own calls).
    static LAST: Cell<[Option<Conv2dAlgo>; 3]> = const { Cell::new([None; 3]) };
}

/// Notes that `map` ran with `algo` on this thread.
pub(crate) fn record(map: Conv2dMap, algo: Conv2dAlgo) {
    LAST.with(|l| {
        let mut v = l.get();
        v[map as usize] = Some(algo);
        l.set(v);
    });
}

/// The algorithm `map` last ran with on this thread, if it ran: how tests and benchmarks
/// see which kernel a request or the automatic choice ended up with.
pub fn last_conv2d_algo(map: Conv2dMap) -> Option<Conv2dAlgo> {
    LAST.with(|l| l.get()[map as usize])
}

/// The algorithm `map` of a convolution of `input_shape` by `weight_shape` runs with:
/// the very function the ops call. Fails as the op would on an invalid geometry.
pub fn conv2d_algo_for(map: Conv2dMap, input_shape: &[usize], weight_shape: &[usize], args: Conv2dArgs) -> Result<Conv2dAlgo> {
    let op = match map {
        Conv2dMap::Forward => "conv2d",
        Conv2dMap::InputGrad => "conv2d_input_grad",
        Conv2dMap::WeightGrad => "conv2d_weight_grad",
    };
    Ok(select(map, &Geom::new(op, input_shape, weight_shape, args)?))
}

/// Whether `algo` can run `map` of this geometry on this machine (a request for it would
/// be honoured).
pub fn conv2d_algo_applies(algo: Conv2dAlgo, input_shape: &[usize], weight_shape: &[usize], args: Conv2dArgs) -> Result<bool> {
    Ok(applies(algo, &Geom::new("conv2d", input_shape, weight_shape, args)?))
}

/// The kernel taps some output sees a real input through, when others see only padding:
/// `(first row, rows, first column, columns)` of the kernel, such that the convolution with
/// the weight cropped to them and the padding reduced by what was cropped on top and left
/// has the same output, and (since the taps cropped multiply only zeros) the same values.
/// At ResNet's small maps most taps are padding: a 3x3 kernel with padding 1 over 1x1
/// planes is a 1x1 convolution. `None` when every tap counts, or when the cropped geometry
/// would need uneven padding.
pub(crate) fn live_taps(g: &Geom) -> Option<(usize, usize, usize, usize)> {
    let (Pair(sh, sw), Pair(ph, pw), Pair(dh, dw)) = (g.a.stride, g.a.padding, g.a.dilation);
    // Kernel rows (or columns) `i` with some output `o` reading `i d + o s - p` in `0..len`.
    let live = |k: usize, d: usize, s: usize, p: usize, len: usize, outs: usize| {
        let reads = |i: usize| (0..outs).any(|o| (i * d + o * s).checked_sub(p).is_some_and(|r| r < len));
        let first = (0..k).find(|&i| reads(i))?;
        let last = (0..k).rev().find(|&i| reads(i))?;
        Some((first, last + 1 - first))
    };
    let (i0, ti) = live(g.kh, dh, sh, ph, g.h, g.oh)?;
    let (j0, tj) = live(g.kw, dw, sw, pw, g.w, g.ow)?;
    if (ti, tj) == (g.kh, g.kw) || ph < i0 * dh || pw < j0 * dw {
        return None;
    }
    let (ph2, pw2) = (ph - i0 * dh, pw - j0 * dw);
    let same = |len, k, s, p, d, out| matches!(out_size("conv2d", len, k, s, p, d), Ok(Some(o)) if o == out);
    (same(g.h, ti, sh, ph2, dh, g.oh) && same(g.w, tj, sw, pw2, dw, g.ow)).then_some((i0, ti, j0, tj))
}
