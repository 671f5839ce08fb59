//! Matrix product with PyTorch's `matmul` semantics: 2-d by 2-d, 1-d operands promoted to
//! a row or column vector, and batched products whose leading dims broadcast. Transposed
//! views go to the kernel as strides, without copies.
//!
//! Gradient rule (see docs/gradients.md): for `C = A B`, `dA = dC B^T` and `dB = A^T dC`,
//! each reduced over broadcast batch dims. Both are matmuls, so the rule is differentiable
//! again and double backward works.

use crate::cpu::gemm::{gemm_batch, MatRef, Product};
use autograd::shape::{broadcast_shapes, checked_numel, Layout};
use autograd::{record_saving, Element, Error, Result, Saves, Tensor};

/// `a @ b`.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let mismatch = || Error::mismatch("matmul", "cannot multiply", a.shape(), b.shape());
    if a.rank() == 0 || b.rank() == 0 {
        return Err(Error::mismatch("matmul", "both arguments need at least 1 dimension", a.shape(), b.shape()));
    }
    if a.dtype() != b.dtype() {
        return Err(Error::DTypeMismatch { op: "matmul", lhs: a.dtype(), rhs: b.dtype() });
    }
    // Vectors become matrices, and the added dim is removed from the result.
    if a.rank() == 1 || b.rank() == 1 {
        let a2 = if a.rank() == 1 { a.unsqueeze(0)? } else { a.clone() };
        let b2 = if b.rank() == 1 { b.unsqueeze(-1)? } else { b.clone() };
        if a2.shape()[a2.rank() - 1] != b2.shape()[b2.rank() - 2] {
            return Err(mismatch());
        }
        let mut out = matmul(&a2, &b2)?;
        if b.rank() == 1 {
            out = out.squeeze(-1)?;
        }
        if a.rank() == 1 {
            out = out.squeeze(if b.rank() == 1 { -1 } else { -2 })?;
        }
        return Ok(out);
    }
    let (ra, rb) = (a.rank(), b.rank());
    let (m, k, k2, n) = (a.shape()[ra - 2], a.shape()[ra - 1], b.shape()[rb - 2], b.shape()[rb - 1]);
    if k != k2 {
        return Err(mismatch());
    }
    let batch = broadcast_shapes("matmul", &a.shape()[..ra - 2], &b.shape()[..rb - 2]).map_err(|e| match e {
        Error::SizeOverflow { .. } => e,
        _ => mismatch(),
    })?;
    let mut out_shape: Vec<usize> = batch.to_vec();
    out_shape.extend([m, n]);
    // Checked before any size is computed from it (`m * n`, the batch's offsets).
    checked_numel("matmul", &out_shape)?;
    let out = autograd::dispatch!("matmul", a.storage(), |_s: T| {
        let c = matmul_kernel::<T>(a, b, &batch, m, k, n);
        Tensor::from_vec(c, &out_shape)?
    });
    // Each side's gradient reads the other side only.
    let saves = Saves::NOTHING.and_input_if(1, a.requires_grad()).and_input_if(0, b.requires_grad());
    Ok(record_saving("matmul", out, &[a, b], saves, |ctx| {
        let g = ctx.grad_output();
        let ga = if ctx.needs_grad(0) { Some(matmul(g, &ctx.input(1).transpose(-1, -2)?)?.sum_to(ctx.input_shape(0))?) } else { None };
        let gb = if ctx.needs_grad(1) { Some(matmul(&ctx.input(0).transpose(-1, -2)?, g)?.sum_to(ctx.input_shape(1))?) } else { None };
        Ok(vec![ga, gb])
    }))
}

/// Strides of `t`'s batch dims seen through the broadcast batch shape.
fn batch_offsets(layout: &Layout, batch: &[usize]) -> Vec<usize> {
    let r = layout.shape.len() - 2;
    let pad = batch.len() - r;
    let count: usize = batch.iter().product();
    let mut offs = Vec::with_capacity(count);
    for flat in 0..count {
        let mut rem = flat;
        let mut off = layout.offset;
        for d in (0..batch.len()).rev() {
            let i = rem % batch[d];
            rem /= batch[d];
            if d >= pad && layout.shape[d - pad] != 1 {
                off += i * layout.strides[d - pad];
            }
        }
        offs.push(off);
    }
    offs
}

fn matmul_kernel<T: Element>(a: &Tensor, b: &Tensor, batch: &[usize], m: usize, k: usize, n: usize) -> Vec<T> {
    if m == 0 || n == 0 || batch.contains(&0) {
        // An empty result: no per-product offsets (a batch of 2^32 empty products would
        // need 32 GB of them).
        return Vec::new();
    }
    let (la, lb) = (a.layout(), b.layout());
    let (ra, rb) = (la.shape.len(), lb.shape.len());
    let (da, db) = (T::slice(a.storage()).expect("dtype checked"), T::slice(b.storage()).expect("dtype checked"));
    let (oa, ob) = (batch_offsets(la, batch), batch_offsets(lb, batch));
    let products: Vec<Product<'_, T>> = oa
        .iter()
        .zip(&ob)
        .enumerate()
        .map(|(i, (&offa, &offb))| Product {
            a: MatRef { data: da, offset: offa, rs: la.strides[ra - 2] as isize, cs: la.strides[ra - 1] as isize },
            b: MatRef { data: db, offset: offb, rs: lb.strides[rb - 2] as isize, cs: lb.strides[rb - 1] as isize },
            c_offset: i * m * n,
        })
        .collect();
    let mut c = autograd::buffers::for_overwrite::<T>(products.len() * m * n);
    gemm_batch(m, n, k, &products, &mut c, false);
    c
}
