//! Numerical gradient checking, like `torch.autograd.gradcheck`: the tape's Jacobian
//! against central finite differences, in f64.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tape::{grad, BackwardOptions};
use crate::tensor::Tensor;
use std::fmt;

/// Tolerances; the defaults are PyTorch's.
#[derive(Debug, Clone, Copy)]
pub struct GradcheckOptions {
    pub eps: f64,
    pub atol: f64,
    pub rtol: f64,
}

impl Default for GradcheckOptions {
    fn default() -> Self {
        GradcheckOptions { eps: 1e-6, atol: 1e-5, rtol: 1e-3 }
    }
}

/// The worst disagreement found.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// Which differentiated input.
    pub input: usize,
    /// Flat element index within that input.
    pub element: usize,
    /// Flat element index within the output.
    pub output: usize,
    pub analytic: f64,
    pub numeric: f64,
}

/// Outcome of a gradient check.
#[derive(Debug, Clone)]
pub struct GradcheckReport {
    pub passed: bool,
    /// Largest `|analytic - numeric|` over all Jacobian entries.
    pub max_abs_error: f64,
    /// Largest `|analytic - numeric| / |numeric|` over entries with a nonzero numeric value.
    pub max_rel_error: f64,
    /// The entry that came closest to (or went furthest past) the tolerance.
    pub worst: Option<Mismatch>,
    /// Number of Jacobian entries compared.
    pub entries: usize,
}

impl fmt::Display for GradcheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gradcheck {}: {} Jacobian entries, max abs error {:.3e}, max rel error {:.3e}",
            if self.passed { "passed" } else { "FAILED" },
            self.entries,
            self.max_abs_error,
            self.max_rel_error
        )?;
        if let Some(w) = &self.worst {
            write!(
                f,
                "; worst at input {} element {} output {}: analytic {:.9e} vs numeric {:.9e}",
                w.input, w.element, w.output, w.analytic, w.numeric
            )?;
        }
        Ok(())
    }
}

/// Checks the gradient of `f` with respect to every input that requires grad. Inputs must
/// be f64 (finite differences in f32 are too noisy to mean anything); cast an f32 layer's
/// parameters with `to_dtype` inside `f` to check it.
pub fn gradcheck(f: impl Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor], opts: GradcheckOptions) -> Result<GradcheckReport> {
    let which: Vec<usize> = (0..inputs.len()).filter(|&i| inputs[i].requires_grad()).collect();
    if which.is_empty() {
        return Err(Error::invalid("gradcheck", "no input requires grad"));
    }
    for &i in &which {
        if inputs[i].dtype() != DType::F64 {
            return Err(Error::invalid("gradcheck", format!("input {i} is {}; finite differences need f64", inputs[i].dtype())));
        }
    }
    // Fresh leaves, so the check does not touch the callers' `.grad`.
    let leaves = |vals: &[Vec<f64>]| -> Result<Vec<Tensor>> {
        inputs
            .iter()
            .enumerate()
            .map(|(i, t)| match which.iter().position(|&w| w == i) {
                Some(k) => Ok(Tensor::from_vec(vals[k].clone(), t.shape())?.requires_grad_()),
                None => Ok(t.detach()),
            })
            .collect()
    };
    let base: Vec<Vec<f64>> = which.iter().map(|&i| inputs[i].to_vec::<f64>()).collect();
    let xs = leaves(&base)?;
    let out = f(&xs)?;
    if out.dtype() != DType::F64 {
        return Err(Error::invalid("gradcheck", format!("output is {}; expected f64", out.dtype())));
    }
    let n_out = out.numel();

    // Analytic Jacobian, one backward pass per output element.
    let diff: Vec<&Tensor> = which.iter().map(|&i| &xs[i]).collect();
    let mut analytic: Vec<Vec<f64>> = base.iter().map(|b| vec![0.0; b.len() * n_out]).collect();
    if out.requires_grad() {
        for o in 0..n_out {
            let mut seed = vec![0.0; n_out];
            seed[o] = 1.0;
            let seed = Tensor::from_vec(seed, out.shape())?;
            let gs = grad(&out, &diff, Some(&seed), BackwardOptions { retain_graph: true, allow_unused: true, ..Default::default() })?;
            for (k, g) in gs.into_iter().enumerate() {
                if let Some(g) = g {
                    for (e, v) in g.to_vec::<f64>().into_iter().enumerate() {
                        analytic[k][e * n_out + o] = v;
                    }
                }
            }
        }
    }

    // Numeric Jacobian, central differences.
    let mut report = GradcheckReport { passed: true, max_abs_error: 0.0, max_rel_error: 0.0, worst: None, entries: 0 };
    let mut worst_score = f64::NEG_INFINITY;
    for (k, b) in base.iter().enumerate() {
        for e in 0..b.len() {
            let eval = |delta: f64| -> Result<Vec<f64>> {
                let mut vals = base.clone();
                vals[k][e] += delta;
                Ok(f(&leaves(&vals)?)?.to_vec::<f64>())
            };
            let (plus, minus) = (eval(opts.eps)?, eval(-opts.eps)?);
            for o in 0..n_out {
                let numeric = (plus[o] - minus[o]) / (2.0 * opts.eps);
                let a = analytic[k][e * n_out + o];
                let err = (a - numeric).abs();
                report.entries += 1;
                report.max_abs_error = report.max_abs_error.max(err);
                if numeric != 0.0 {
                    report.max_rel_error = report.max_rel_error.max(err / numeric.abs());
                }
                let allowed = opts.atol + opts.rtol * numeric.abs();
                if err.is_nan() || err > allowed {
                    report.passed = false;
                }
                let score = if err.is_nan() { f64::INFINITY } else { err / allowed };
                if score > worst_score {
                    worst_score = score;
                    report.worst = Some(Mismatch { input: which[k], element: e, output: o, analytic: a, numeric });
                }
            }
        }
    }
    Ok(report)
}

/// Second-order check (like `torch.autograd.gradgradcheck`): gradchecks the map from the
/// inputs to the gradient of `sum(f(x) * v)`, for a fixed pseudo-random `v`, computed with
/// `create_graph`. Every rule used by `f` must therefore be differentiable.
pub fn gradgradcheck(f: impl Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor], opts: GradcheckOptions) -> Result<GradcheckReport> {
    let which: Vec<usize> = (0..inputs.len()).filter(|&i| inputs[i].requires_grad()).collect();
    let probe = f(inputs)?;
    // A fixed, irregular seed so that no second-order term cancels by symmetry.
    let v: Vec<f64> = (0..probe.numel()).map(|i| ((i as f64 * 0.7548776662).fract() - 0.5) * 2.0 + 0.1).collect();
    let v = Tensor::from_vec(v, probe.shape())?;
    let g = move |xs: &[Tensor]| -> Result<Tensor> {
        let out = f(xs)?;
        let diff: Vec<&Tensor> = which.iter().map(|&i| &xs[i]).collect();
        let gs = grad(&out, &diff, Some(&v), BackwardOptions { retain_graph: true, create_graph: true, allow_unused: true })?;
        let flat: Vec<Tensor> =
            gs.into_iter().zip(&diff).map(|(g, x)| g.unwrap_or_else(|| x.zeros_like()).reshape(&[-1])).collect::<Result<_>>()?;
        let refs: Vec<&Tensor> = flat.iter().collect();
        Tensor::cat(&refs, 0)
    };
    gradcheck(g, inputs, opts)
}
