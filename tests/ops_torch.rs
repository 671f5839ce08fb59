//! The ops and losses of issue 27 against PyTorch's values and gradients
//! (tests/fixtures/ops27/make_fixture.py, run by hand): each case's f64 inputs, PyTorch's
//! result `NAME.out`, an upstream gradient `NAME.v` and the gradients of `sum(out * v)`
//! (`NAME.ga`, ...) are read from ops27.npz; the op runs here on the same inputs and every
//! value must agree to 1e-12 (relative above 1), NaN and infinities exactly.

use autograd::{BackwardOptions, DType, Result, Tensor};
use ops::{CrossEntropyOptions, NllLossOptions, Reduction};
use std::collections::HashMap;
use std::path::PathBuf;

struct Cases(HashMap<String, Tensor>);

fn cases() -> Cases {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ops27/ops27.npz");
    Cases(nn::load_npz(&path).unwrap().into_iter().collect())
}

fn close(name: &str, what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.shape(), want.shape(), "{name}.{what}: shape");
    for (i, (g, w)) in got.to_vec::<f64>().iter().zip(want.to_vec::<f64>()).enumerate() {
        let ok = g == &w || (g.is_nan() && w.is_nan()) || (g - w).abs() <= 1e-12 * w.abs().max(1.0);
        assert!(ok, "{name}.{what}[{i}]: got {g}, PyTorch {w}");
    }
}

impl Cases {
    fn get(&self, key: &str) -> Tensor {
        self.0.get(key).unwrap_or_else(|| panic!("{key} missing from the fixture")).clone()
    }

    fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// Runs `f` on the case's inputs `keys` (those with a stored gradient require grad),
    /// compares the result and the gradients of `sum(out * v)`.
    fn run(&self, name: &str, keys: &[&str], f: impl Fn(&[Tensor]) -> Result<Tensor>) {
        let inputs: Vec<Tensor> = keys
            .iter()
            .map(|k| {
                let t = self.get(&format!("{name}.{k}"));
                if self.has(&format!("{name}.g{k}")) {
                    t.requires_grad_()
                } else {
                    t
                }
            })
            .collect();
        let out = f(&inputs).unwrap_or_else(|e| panic!("{name}: {e}"));
        close(name, "out", &out, &self.get(&format!("{name}.out")));
        let diff: Vec<(&str, &Tensor)> = keys.iter().zip(&inputs).filter(|(_, t)| t.requires_grad()).map(|(k, t)| (*k, t)).collect();
        if diff.is_empty() {
            return;
        }
        let v = self.get(&format!("{name}.v"));
        let leaves: Vec<&Tensor> = diff.iter().map(|(_, t)| *t).collect();
        let gs = autograd::grad(&out.mul(&v).unwrap().sum(), &leaves, None, BackwardOptions::default()).unwrap();
        for ((k, x), g) in diff.iter().zip(gs) {
            let g = g.unwrap_or_else(|| x.zeros_like());
            close(name, &format!("g{k}"), &g, &self.get(&format!("{name}.g{k}")));
        }
    }
}

#[test]
fn element_wise() {
    let c = cases();
    c.run("rsqrt", &["a"], |v| Ok(v[0].rsqrt()));
    c.run("log1p", &["a"], |v| Ok(v[0].log1p()));
    c.run("expm1", &["a"], |v| Ok(v[0].expm1()));
    c.run("sin", &["a"], |v| Ok(v[0].sin()));
    c.run("cos", &["a"], |v| Ok(v[0].cos()));
    c.run("log_sigmoid", &["a"], |v| Ok(v[0].log_sigmoid()));
    c.run("clamp", &["a"], |v| Ok(v[0].clamp(-0.5, 0.7)));
    c.run("clamp_min", &["a"], |v| Ok(v[0].clamp_min(-0.3)));
    c.run("clamp_max", &["a"], |v| Ok(v[0].clamp_max(0.4)));
    c.run("clamp_nan", &["a"], |v| Ok(v[0].clamp_min(0.1)));
    c.run("pow_tensor", &["a", "b"], |v| v[0].pow_tensor(&v[1]));
    c.run("pow_zeros", &["a", "b"], |v| v[0].pow_tensor(&v[1]));
    c.run("maximum", &["a", "b"], |v| v[0].maximum(&v[1]));
    c.run("minimum", &["a", "b"], |v| v[0].minimum(&v[1]));
    c.run("maximum_bcast", &["a", "b"], |v| v[0].maximum(&v[1]));
}

#[test]
fn reductions() {
    let c = cases();
    for k in [0, 1, 2] {
        c.run(&format!("var_c{k}"), &["a"], |v| v[0].var_dims(&[0, 2], k as f64, true));
        c.run(&format!("std_c{k}"), &["a"], |v| v[0].std_dims(&[1], k as f64, false));
    }
    c.run("var_all", &["a"], |v| v[0].var(1.0));
    c.run("std_all", &["a"], |v| v[0].std(0.0));
    c.run("std_const", &["a"], |v| v[0].std_dims(&[1], 1.0, false));
    c.run("prod_all", &["a"], |v| v[0].prod());
    c.run("prod_all_zero", &["a"], |v| v[0].prod());
    c.run("prod_dim1", &["a"], |v| v[0].prod_dim(1, false));
    c.run("prod_dim0_keep", &["a"], |v| v[0].prod_dim(0, true));
    c.run("cumsum0", &["a"], |v| v[0].cumsum(0));
    c.run("cumsum2", &["a"], |v| v[0].cumsum(-1));
    c.run("min_all", &["a"], |v| v[0].min());
    c.run("max_all", &["a"], |v| v[0].max());
    c.run("amax01", &["a"], |v| v[0].amax(&[0, 1], false));
    c.run("amin_keep", &["a"], |v| v[0].amin(&[1], true));
    c.run("min_dim", &["a"], |v| v[0].min_dim(1, false).map(|r| r.0));
    let (_, idx) = c.get("min_dim.a").min_dim(1, false).unwrap();
    assert_eq!(idx.to_vec::<i64>(), c.get("min_dim.idx").to_vec::<i64>());
    for (p, tag) in [(1.0, "1"), (2.0, "2"), (f64::INFINITY, "inf")] {
        c.run(&format!("norm{tag}_all"), &["a"], |v| v[0].norm(p));
        c.run(&format!("norm{tag}_dims"), &["a"], |v| v[0].norm_dims(p, &[0, 2], true));
        c.run(&format!("norm{tag}_zero"), &["a"], |v| v[0].norm_dims(p, &[1], false));
    }
    c.run("norminf_ties", &["a"], |v| v[0].norm(f64::INFINITY));
}

#[test]
fn creation() {
    let c = cases();
    c.run("eye", &[], |_| Tensor::eye_dtype(3, 5, DType::F64));
    c.run("eye_tall", &[], |_| Tensor::eye_dtype(4, 2, DType::F64));
    // Exact, as PyTorch computes them (both ends exact).
    for (name, (a, b, n)) in [
        ("linspace", (-1.3, 2.9, 11)),
        ("linspace2", (5.0, -5.0, 8)),
        ("linspace1", (3.0, 9.0, 1)),
        ("linspace3", (0.1, 0.7, 23)),
        ("linspace4", (-3.7, 11.3, 40)),
    ] {
        let got = Tensor::linspace_dtype(a, b, n, DType::F64).unwrap();
        assert_eq!(got.to_vec::<f64>(), c.get(&format!("{name}.out")).to_vec::<f64>(), "{name}");
    }
    let want = c.get("linspace_f32.out");
    assert_eq!(want.dtype(), DType::F32);
    assert_eq!(Tensor::linspace(-3.7, 11.3, 40).unwrap().to_vec::<f32>(), want.to_vec::<f32>(), "linspace in f32");
}

fn reduction(red: &str) -> Reduction {
    match red {
        "mean" => Reduction::Mean,
        "sum" => Reduction::Sum,
        "none" => Reduction::None,
        _ => Reduction::BatchMean,
    }
}

#[test]
fn class_index_losses() {
    let c = cases();
    for red in ["mean", "sum", "none"] {
        let r = reduction(red);
        let opts = |w: Option<Tensor>, s: f64| CrossEntropyOptions { weight: w, reduction: r, label_smoothing: s, ..Default::default() };
        let t = c.get(&format!("ce_{red}.t"));
        c.run(&format!("ce_{red}"), &["a"], |v| ops::cross_entropy_with(&v[0], &t, &opts(None, 0.0)));
        let name = format!("ce_w_ign_{red}");
        let (t, w) = (c.get(&format!("{name}.t")), c.get(&format!("{name}.w")));
        c.run(&name, &["a"], |v| ops::cross_entropy_with(&v[0], &t, &opts(Some(w.clone()), 0.0)));
        let t = c.get(&format!("ce_ls_{red}.t"));
        c.run(&format!("ce_ls_{red}"), &["a"], |v| ops::cross_entropy_with(&v[0], &t, &opts(None, 0.2)));
        let name = format!("ce_w_ls_{red}");
        let (t, w) = (c.get(&format!("{name}.t")), c.get(&format!("{name}.w")));
        c.run(&name, &["a"], |v| ops::cross_entropy_with(&v[0], &t, &opts(Some(w.clone()), 0.1)));
        let name = format!("nll_{red}");
        let (t, w) = (c.get(&format!("{name}.t")), c.get(&format!("{name}.w")));
        c.run(&name, &["a"], |v| ops::nll_loss(&v[0], &t, &NllLossOptions { weight: Some(w.clone()), reduction: r, ..Default::default() }));
    }
    let t = c.get("ce_ignore1.t");
    c.run("ce_ignore1", &["a"], |v| ops::cross_entropy_with(&v[0], &t, &CrossEntropyOptions { ignore_index: 1, ..Default::default() }));
    let (t, w) = (c.get("ce_kdim.t"), c.get("ce_kdim.w"));
    c.run("ce_kdim", &["a"], |v| {
        ops::cross_entropy_with(&v[0], &t, &CrossEntropyOptions { weight: Some(w.clone()), label_smoothing: 0.05, ..Default::default() })
    });
    let t = c.get("ce_kdim_none.t");
    c.run("ce_kdim_none", &["a"], |v| {
        ops::cross_entropy_with(&v[0], &t, &CrossEntropyOptions { reduction: Reduction::None, ..Default::default() })
    });
    let t = c.get("ce_unbatched.t");
    c.run("ce_unbatched", &["a"], |v| ops::cross_entropy(&v[0], &t));
}

#[test]
fn element_wise_losses() {
    let c = cases();
    for red in ["mean", "sum", "none"] {
        let r = reduction(red);
        c.run(&format!("bce_{red}"), &["a", "b"], |v| ops::binary_cross_entropy(&v[0], &v[1], None, r));
        c.run(&format!("bcel_{red}"), &["a", "b"], |v| ops::binary_cross_entropy_with_logits(&v[0], &v[1], None, None, r));
        c.run(&format!("l1_{red}"), &["a", "b"], |v| ops::l1_loss(&v[0], &v[1], r));
        c.run(&format!("mse_{red}"), &["a", "b"], |v| ops::mse_loss(&v[0], &v[1], r));
        c.run(&format!("smooth_l1_{red}"), &["a", "b"], |v| ops::smooth_l1_loss(&v[0], &v[1], r, 0.7));
        c.run(&format!("huber_{red}"), &["a", "b"], |v| ops::huber_loss(&v[0], &v[1], r, 0.6));
    }
    for red in ["mean", "sum", "none", "batchmean"] {
        let r = reduction(red);
        c.run(&format!("kl_{red}"), &["a", "b"], |v| ops::kl_div(&v[0], &v[1], r, false));
        c.run(&format!("kl_log_{red}"), &["a", "b"], |v| ops::kl_div(&v[0], &v[1], r, true));
    }
    c.run("kl_zero_target", &["a", "b"], |v| ops::kl_div(&v[0], &v[1], Reduction::Sum, false));
    c.run("smooth_l1_b0", &["a", "b"], |v| ops::smooth_l1_loss(&v[0], &v[1], Reduction::Mean, 0.0));
    c.run("bce_w", &["a", "b", "w"], |v| ops::binary_cross_entropy(&v[0], &v[1], Some(&v[2]), Reduction::Mean));
    c.run("bce_edges", &["a", "b"], |v| ops::binary_cross_entropy(&v[0], &v[1], None, Reduction::None));
    c.run("bcel_pw_w", &["a", "b", "w", "pw"], |v| {
        ops::binary_cross_entropy_with_logits(&v[0], &v[1], Some(&v[2]), Some(&v[3]), Reduction::Mean)
    });
    c.run("bcel_huge", &["a", "b"], |v| ops::binary_cross_entropy_with_logits(&v[0], &v[1], None, None, Reduction::None));
}

/// The nn loss modules are their functions with the options as fields.
#[test]
fn loss_modules_forward_to_the_functions() {
    let x = Tensor::from_vec(vec![0.2f64, 0.7, 0.4, 0.9], &[2, 2]).unwrap();
    let y = Tensor::from_vec(vec![0.0f64, 1.0, 1.0, 0.5], &[2, 2]).unwrap();
    let f = |a: Tensor, b: Tensor| assert_eq!(a.item().unwrap(), b.item().unwrap());
    f(nn::BceLoss::default().forward(&x, &y).unwrap(), ops::binary_cross_entropy(&x, &y, None, ops::Reduction::Mean).unwrap());
    f(nn::L1Loss { reduction: ops::Reduction::Sum }.forward(&x, &y).unwrap(), ops::l1_loss(&x, &y, ops::Reduction::Sum).unwrap());
    f(nn::HuberLoss::default().forward(&x, &y).unwrap(), ops::huber_loss(&x, &y, ops::Reduction::Mean, 1.0).unwrap());
    f(nn::SmoothL1Loss::default().forward(&x, &y).unwrap(), ops::smooth_l1_loss(&x, &y, ops::Reduction::Mean, 1.0).unwrap());
    f(nn::MseLoss::default().forward(&x, &y).unwrap(), ops::mse(&x, &y).unwrap());
    f(nn::KlDivLoss::default().forward(&x, &y).unwrap(), ops::kl_div(&x, &y, ops::Reduction::Mean, false).unwrap());
    let t = Tensor::from_vec(vec![1i64, 0], &[2]).unwrap();
    f(nn::CrossEntropyLoss::default().forward(&x, &t).unwrap(), ops::cross_entropy(&x, &t).unwrap());
    f(nn::NllLoss::default().forward(&x, &t).unwrap(), ops::nll_loss(&x, &t, &Default::default()).unwrap());
    f(
        nn::BceWithLogitsLoss::default().forward(&x, &y).unwrap(),
        ops::binary_cross_entropy_with_logits(&x, &y, None, None, ops::Reduction::Mean).unwrap(),
    );
}
