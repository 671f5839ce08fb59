//! Embedding lookup (`F.embedding`): row `indices[i]` of a `[num_embeddings, dim]` weight
//! for every index, so the output is `indices.shape() + [dim]`. The gradient adds each
//! output row's gradient back into the row it was read from (`index_add`, so repeated
//! indices add up and the rule is differentiable again); rows read at `padding_idx` get
//! none, and with `scale_grad_by_freq` each row's gradient is divided by how often its
//! index occurs in the batch, as PyTorch's. `max_norm` (which renormalises the weight in
//! place during the forward) and sparse gradients are not provided.

use autograd::{no_grad, record, DType, Error, Result, Tensor};

const OP: &str = "embedding";

/// Options of [`embedding`] beyond the weight and the indices, PyTorch's defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EmbeddingOptions {
    /// The row that gets no gradient (negative counts from the end, as in PyTorch).
    pub padding_idx: Option<isize>,
    /// Divide each row's gradient by its index's count in the batch.
    pub scale_grad_by_freq: bool,
}

/// `padding_idx` in `[-num, num)` as a row, or an error naming `op`.
pub fn normalize_padding_idx(op: &'static str, padding_idx: Option<isize>, num: usize) -> Result<Option<usize>> {
    let Some(p) = padding_idx else { return Ok(None) };
    let n = num as i128;
    let p = p as i128;
    if !(-n..n).contains(&p) {
        return Err(Error::invalid(
            op,
            format!("padding_idx must be within the number of embeddings {num} (or -{num} from the end), got {p}"),
        ));
    }
    Ok(Some(if p < 0 { (p + n) as usize } else { p as usize }))
}

/// The rows of `weight [num_embeddings, dim]` at `indices` (i64, any shape).
pub fn embedding(weight: &Tensor, indices: &Tensor, options: EmbeddingOptions) -> Result<Tensor> {
    weight.check_float(OP)?;
    if weight.rank() != 2 {
        return Err(Error::invalid(OP, format!("expects a 2-d weight [num_embeddings, embedding_dim], got {:?}", weight.shape())));
    }
    if indices.dtype() != DType::I64 {
        return Err(Error::invalid(OP, format!("expects i64 indices, got {} {:?}", indices.dtype(), indices.shape())));
    }
    let (num, dim) = (weight.shape()[0], weight.shape()[1]);
    let pad = normalize_padding_idx(OP, options.padding_idx, num)?;
    let mut yshape = indices.shape().to_vec();
    yshape.push(dim);
    autograd::shape::checked_numel(OP, &yshape)?;
    let idx: Vec<i64> = indices.contiguous_data::<i64>()?.into_owned();
    if let Some(bad) = idx.iter().find(|&&i| i < 0 || i as u64 >= num as u64) {
        return Err(Error::invalid(OP, format!("index {bad} is out of range for {num} embeddings (indices {:?})", indices.shape())));
    }
    let flat = Tensor::from_vec(idx.clone(), &[idx.len()])?;
    let out = no_grad(|| weight.detach().index_select(0, &flat))?.reshape_to(&yshape)?.detach();
    // Each output row's share of its gradient: 0 at the padding row, 1 / count with
    // frequency scaling, else 1 (then no product at all).
    let share: Option<Vec<f64>> = (pad.is_some() || options.scale_grad_by_freq).then(|| {
        let mut count = std::collections::HashMap::new();
        if options.scale_grad_by_freq {
            idx.iter().for_each(|&i| *count.entry(i).or_insert(0usize) += 1);
        }
        idx.iter()
            .map(|&i| match (pad == Some(i as usize), count.get(&i)) {
                (true, _) => 0.0,
                (false, Some(&c)) => 1.0 / c as f64,
                (false, None) => 1.0,
            })
            .collect()
    });
    Ok(record(OP, out, &[weight], move |ctx| {
        let w = ctx.input(0);
        let mut g = ctx.grad_output().reshape_to(&[flat.numel(), dim])?;
        if let Some(s) = &share {
            g = g.mul(&Tensor::from_vec(s.clone(), &[s.len(), 1])?.to_dtype(g.dtype()))?;
        }
        Ok(vec![Some(Tensor::zeros_dtype(w.shape(), w.dtype()).index_add(0, &flat, &g)?)])
    }))
}
