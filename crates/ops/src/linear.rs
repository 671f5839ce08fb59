//! `linear(x, w, b) = x wᵀ + b`, PyTorch's `F.linear`, as one op. The bias initialises the
//! output that the GEMM then accumulates into (one pass over the output instead of two),
//! and the weight gradient comes out contiguous in the weight's own `[out, in]` layout, so
//! optimisers update it without a copy. The rule is built from differentiable ops, so
//! double backward works. See docs/gradients.md.

use crate::cpu::gemm::{gemm_batch, MatRef, Product};
use crate::matmul::matmul;
use autograd::{record_saving, Element, Error, Result, Saves, Tensor};

/// `x wᵀ + b` over the last dim of `x`: `x` is `[..., in]`, `w` is `[out, in]`, `b` is
/// `[out]`; the result is `[..., out]`.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let bad = |msg: &'static str| Error::mismatch("linear", msg, x.shape(), w.shape());
    if w.rank() != 2 {
        return Err(bad("the weight must be [out, in]"));
    }
    let (out_f, in_f) = (w.shape()[0], w.shape()[1]);
    if x.rank() == 0 || x.shape()[x.rank() - 1] != in_f {
        return Err(bad("the input's last dim must equal the weight's second"));
    }
    for t in std::iter::once(w).chain(b) {
        if t.dtype() != x.dtype() {
            return Err(Error::DTypeMismatch { op: "linear", lhs: x.dtype(), rhs: t.dtype() });
        }
    }
    if let Some(b) = b {
        if b.shape() != [out_f] {
            return Err(Error::mismatch("linear", "the bias must be [out]", b.shape(), w.shape()));
        }
    }
    let rows: usize = x.shape()[..x.rank() - 1].iter().product();
    let mut out_shape = x.shape().to_vec();
    *out_shape.last_mut().expect("rank checked") = out_f;
    // An empty result needs no contiguous copy of the input (which may be a huge view).
    let empty = autograd::shape::checked_numel("linear", &out_shape)? == 0;
    let x = if empty { x.clone() } else { x.contiguous() };
    let out = autograd::dispatch!("linear", x.storage(), |_s: T| {
        let c = forward_kernel::<T>(&x, w, b, rows, in_f, out_f);
        Tensor::from_vec(c, &out_shape)?
    });
    let mut inputs = vec![&x, w];
    inputs.extend(b);
    // The input's gradient reads the weight, the weight's the input, the bias's nothing.
    let saves = Saves::NOTHING.and_input_if(1, x.requires_grad()).and_input_if(0, w.requires_grad());
    Ok(record_saving("linear", out, &inputs, saves, move |ctx| {
        let g = ctx.grad_output().reshape(&[rows as isize, out_f as isize])?;
        let gx = if ctx.needs_grad(0) { Some(matmul(&g, ctx.input(1))?.reshape_to(ctx.input_shape(0))?) } else { None };
        let gw = if ctx.needs_grad(1) { Some(matmul(&g.t()?, &ctx.input(0).reshape(&[rows as isize, in_f as isize])?)?) } else { None };
        let mut grads = vec![gx, gw];
        if ctx.num_inputs() == 3 {
            grads.push(if ctx.needs_grad(2) { Some(g.sum_dims(&[0], false)?) } else { None });
        }
        Ok(grads)
    }))
}

/// The output rows start as the bias (or are overwritten when there is none) and the GEMM
/// adds `x wᵀ` to them.
fn forward_kernel<T: Element>(x: &Tensor, w: &Tensor, b: Option<&Tensor>, rows: usize, in_f: usize, out_f: usize) -> Vec<T> {
    if rows == 0 || out_f == 0 {
        return Vec::new();
    }
    let mut c = autograd::buffers::for_overwrite::<T>(rows * out_f);
    if let Some(b) = b {
        let bias = b.contiguous_data::<T>().expect("dtype checked");
        for row in c.chunks_exact_mut(out_f.max(1)) {
            row.copy_from_slice(&bias);
        }
    }
    let (xd, wl) = (T::slice(x.storage()).expect("dtype checked"), w.layout());
    let wd = T::slice(w.storage()).expect("dtype checked");
    // Element (p, j) of wᵀ is w[j, p].
    let wt = MatRef { data: wd, offset: wl.offset, rs: wl.strides[1] as isize, cs: wl.strides[0] as isize };
    let product = Product { a: MatRef::row_major(xd, x.layout().offset, in_f), b: wt, c_offset: 0 };
    gemm_batch(rows, out_f, in_f, &[product], &mut c, b.is_some());
    c
}
