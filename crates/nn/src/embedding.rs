//! `Embedding`, as PyTorch's: a `[num_embeddings, embedding_dim]` weight initialised
//! N(0, 1) with the `padding_idx` row zeroed; the forward looks up i64 indices of any
//! shape. The row at `padding_idx` gets no gradient. `max_norm` (renormalising looked-up
//! rows in place) and sparse gradients are not provided. The maths is `ops::embedding`.

use crate::error::{Error, Result};
use crate::module::{Module, Visitor};
use autograd::{Parameter, Rng, Tensor};

/// A lookup table of `num_embeddings` vectors of `embedding_dim` values.
pub struct Embedding {
    pub weight: Parameter,
    pub num_embeddings: usize,
    pub embedding_dim: usize,
    /// The row that gets no gradient, as given (negative counts from the end).
    pub padding_idx: Option<isize>,
    pub scale_grad_by_freq: bool,
}

impl Embedding {
    /// PyTorch's `nn.Embedding(num_embeddings, embedding_dim, padding_idx)`: weight N(0, 1),
    /// the padding row zeros. An error naming `Embedding` for a `padding_idx` outside
    /// `[-num_embeddings, num_embeddings)`.
    pub fn new(num_embeddings: usize, embedding_dim: usize, padding_idx: Option<isize>, rng: &mut Rng) -> Result<Embedding> {
        let row = ops::embedding::normalize_padding_idx("Embedding", padding_idx, num_embeddings)
            .map_err(|e| Error::config("Embedding", e.to_string()))?;
        let shape = [num_embeddings, embedding_dim];
        autograd::shape::checked_numel("Embedding", &shape)?;
        let mut w = Tensor::randn(&shape, rng);
        if let Some(r) = row {
            let mask: Vec<f32> = (0..num_embeddings).map(|i| if i == r { 0.0 } else { 1.0 }).collect();
            w = w.mul(&Tensor::from_vec(mask, &[num_embeddings, 1])?)?;
        }
        Ok(Embedding { weight: Parameter::new(&w), num_embeddings, embedding_dim, padding_idx, scale_grad_by_freq: false })
    }

    /// PyTorch's `nn.Embedding.from_pretrained(weights, freeze, padding_idx)`.
    pub fn from_pretrained(weights: &Tensor, freeze: bool, padding_idx: Option<isize>) -> Result<Embedding> {
        if weights.rank() != 2 {
            return Err(Error::config("Embedding", format!("from_pretrained expects a 2-d weight, got {:?}", weights.shape())));
        }
        let (n, d) = (weights.shape()[0], weights.shape()[1]);
        ops::embedding::normalize_padding_idx("Embedding", padding_idx, n).map_err(|e| Error::config("Embedding", e.to_string()))?;
        let weight = Parameter::new(weights);
        weight.requires_grad_(!freeze);
        Ok(Embedding { weight, num_embeddings: n, embedding_dim: d, padding_idx, scale_grad_by_freq: false })
    }

    /// Divide each row's gradient by its index's count in the batch (builder style).
    pub fn scale_grad_by_freq(mut self, on: bool) -> Self {
        self.scale_grad_by_freq = on;
        self
    }
}

impl Module for Embedding {
    /// `x`: i64 indices of any shape; the output is `x.shape() + [embedding_dim]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let options = ops::EmbeddingOptions { padding_idx: self.padding_idx, scale_grad_by_freq: self.scale_grad_by_freq };
        Ok(ops::embedding(&self.weight.tensor(), x, options)?)
    }
    fn visit<'a>(&'a self, v: &mut dyn Visitor<'a>) {
        v.parameter("weight", &self.weight);
    }
    fn describe(&self) -> String {
        let mut s = format!("Embedding({}, {}", self.num_embeddings, self.embedding_dim);
        if let Some(p) = self.padding_idx {
            // PyTorch stores the normalised row.
            let row = if p < 0 { p + self.num_embeddings as isize } else { p };
            s += &format!(", padding_idx={row}");
        }
        if self.scale_grad_by_freq {
            s += ", scale_grad_by_freq=True";
        }
        s + ")"
    }
}
