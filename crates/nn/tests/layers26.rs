//! Issue 26's layers and functions against PyTorch (tests/fixtures/layers26/make_fixture.py,
//! a kept script run by hand): each case's f64 inputs, PyTorch's output and the gradients
//! of `sum(out * v)` must agree to 1e-12 (relative above 1). Then the layers themselves:
//! PyTorch's reprs, state_dict keys and initialisation.

use autograd::{BackwardOptions, DType, Result, Tensor};
use nn::Module;
use ops::{ConvTranspose2dArgs, EmbeddingOptions, GeluApproximate, InterpolateArgs, InterpolateMode};
use std::collections::HashMap;
use std::path::PathBuf;

struct Cases(HashMap<String, Tensor>);

fn cases() -> Cases {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/layers26/layers26.npz");
    Cases(nn::load_npz(&path).unwrap().into_iter().collect())
}

/// The fixture's tolerance: 1e-12, relative above 1.
const TOL: f64 = 1e-12;

fn close(name: &str, what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.shape(), want.shape(), "{name}.{what}: shape");
    for (i, (g, w)) in got.to_vec::<f64>().iter().zip(want.to_vec::<f64>()).enumerate() {
        let ok = g == &w || (g.is_nan() && w.is_nan()) || (g - w).abs() <= TOL * w.abs().max(1.0);
        assert!(ok, "{name}.{what}[{i}]: got {g}, PyTorch {w}");
    }
}

impl Cases {
    fn get(&self, key: &str) -> Tensor {
        self.0.get(key).unwrap_or_else(|| panic!("{key} missing from the fixture")).clone()
    }

    /// Runs `f` on the case's inputs `keys` (those with a stored gradient require grad)
    /// and compares the output and the gradients of `sum(out * v)`.
    fn run(&self, name: &str, keys: &[&str], f: impl Fn(&[Tensor]) -> Result<Tensor>) {
        let inputs: Vec<Tensor> = keys
            .iter()
            .map(|k| {
                let t = self.get(&format!("{name}.{k}"));
                if self.0.contains_key(&format!("{name}.g{k}")) {
                    t.requires_grad_()
                } else {
                    t
                }
            })
            .collect();
        let out = f(&inputs).unwrap_or_else(|e| panic!("{name}: {e}"));
        close(name, "out", &out, &self.get(&format!("{name}.out")));
        let diff: Vec<(&str, &Tensor)> = keys.iter().zip(&inputs).filter(|(_, t)| t.requires_grad()).map(|(k, t)| (*k, t)).collect();
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
fn activations_match_pytorch() {
    let c = cases();
    c.run("leaky_relu", &["a"], |v| ops::leaky_relu(&v[0], 0.01));
    c.run("leaky_relu_02", &["a"], |v| ops::leaky_relu(&v[0], 0.2));
    c.run("elu", &["a"], |v| ops::elu(&v[0], 1.0));
    c.run("elu_05", &["a"], |v| ops::elu(&v[0], 0.5));
    c.run("gelu", &["a"], |v| ops::gelu(&v[0], GeluApproximate::None));
    c.run("gelu_tanh", &["a"], |v| ops::gelu(&v[0], GeluApproximate::Tanh));
    c.run("silu", &["a"], |v| ops::silu(&v[0]));
    c.run("softplus", &["a"], |v| ops::softplus(&v[0], 1.0, 20.0));
    c.run("softplus_b2_t5", &["a"], |v| ops::softplus(&v[0], 2.0, 5.0));
    c.run("hardtanh", &["a"], |v| ops::hardtanh(&v[0], -1.0, 1.0));
    c.run("hardtanh_wide", &["a"], |v| ops::hardtanh(&v[0], -0.5, 2.0));
    c.run("erf", &["a"], |v| ops::erf(&v[0]));
    // The layers run the same maths.
    c.run("softmax", &["a"], |v| nn::Softmax::new(1).forward(&v[0]).map_err(to_autograd));
    c.run("log_softmax", &["a"], |v| nn::LogSoftmax::new(0).forward(&v[0]).map_err(to_autograd));
    c.run("gelu_tanh", &["a"], |v| nn::GELU::new(GeluApproximate::Tanh).forward(&v[0]).map_err(to_autograd));
    c.run("softplus_b2_t5", &["a"], |v| nn::Softplus::new(2.0, 5.0).forward(&v[0]).map_err(to_autograd));
}

fn to_autograd(e: nn::Error) -> autograd::Error {
    match e {
        nn::Error::Tensor(t) => t,
        other => autograd::Error::invalid("layer", other.to_string()),
    }
}

#[test]
fn layer_and_group_norm_match_pytorch() {
    let c = cases();
    c.run("layer_norm_last", &["a", "w", "b"], |v| ops::layer_norm(&v[0], &[5], Some(&v[1]), Some(&v[2]), 1e-5));
    c.run("layer_norm_two", &["a", "w", "b"], |v| ops::layer_norm(&v[0], &[4, 5], Some(&v[1]), Some(&v[2]), 1e-3));
    c.run("layer_norm_plain", &["a"], |v| ops::layer_norm(&v[0], &[4, 5], None, None, 1e-5));
    c.run("layer_norm_weight_only", &["a", "w"], |v| ops::layer_norm(&v[0], &[5], Some(&v[1]), None, 1e-5));
    c.run("group_norm_3", &["a", "w", "b"], |v| ops::group_norm(&v[0], 3, Some(&v[1]), Some(&v[2]), 1e-5));
    c.run("group_norm_1", &["a", "w", "b"], |v| ops::group_norm(&v[0], 1, Some(&v[1]), Some(&v[2]), 1e-3));
    c.run("group_norm_6", &["a", "w", "b"], |v| ops::group_norm(&v[0], 6, Some(&v[1]), Some(&v[2]), 1e-5));
    c.run("group_norm_plain", &["a"], |v| ops::group_norm(&v[0], 2, None, None, 1e-5));
    c.run("group_norm_3d", &["a", "w", "b"], |v| ops::group_norm(&v[0], 2, Some(&v[1]), Some(&v[2]), 1e-5));
    // The layers, with the fixture's parameters loaded.
    let ln = nn::LayerNorm::new(nn::LayerNormConfig::new(&[4, 5]).eps(1e-3)).unwrap();
    ln.to_dtype(DType::F64).unwrap();
    ln.load_state_dict(&[("weight".into(), c.get("layer_norm_two.w")), ("bias".into(), c.get("layer_norm_two.b"))]).unwrap();
    close("LayerNorm", "out", &ln.forward(&c.get("layer_norm_two.a")).unwrap(), &c.get("layer_norm_two.out"));
    let gn = nn::GroupNorm::new(nn::GroupNormConfig::new(3, 6)).unwrap();
    gn.to_dtype(DType::F64).unwrap();
    gn.load_state_dict(&[("weight".into(), c.get("group_norm_3.w")), ("bias".into(), c.get("group_norm_3.b"))]).unwrap();
    close("GroupNorm", "out", &gn.forward(&c.get("group_norm_3.a")).unwrap(), &c.get("group_norm_3.out"));
}

#[test]
fn conv_transpose2d_matches_pytorch_with_every_argument() {
    let c = cases();
    type Ct = (&'static str, (usize, usize), (usize, usize), (usize, usize), usize, (usize, usize), bool);
    let table: [Ct; 7] = [
        ("ct_s2_p1_op1", (2, 2), (1, 1), (1, 1), 1, (1, 1), true),
        ("ct_groups_dil", (2, 1), (0, 1), (0, 0), 2, (1, 2), true),
        ("ct_op_ge_stride", (1, 1), (0, 0), (1, 1), 1, (2, 2), true),
        ("ct_gaps", (3, 3), (0, 0), (2, 1), 1, (1, 1), false),
        ("ct_1x1", (1, 1), (0, 0), (0, 0), 1, (1, 1), true),
        ("ct_3x3_same", (1, 1), (1, 1), (0, 0), 1, (1, 1), true),
        ("ct_rect", (2, 3), (1, 0), (1, 2), 3, (1, 1), true),
    ];
    for (name, s, p, op, g, d, bias) in table {
        let args = ConvTranspose2dArgs::new().stride(s).padding(p).output_padding(op).groups(g).dilation(d);
        let keys: &[&str] = if bias { &["a", "w", "b"] } else { &["a", "w"] };
        c.run(name, keys, |v| ops::conv_transpose2d(&v[0], &v[1], v.get(2), args));
    }
}

#[test]
fn embedding_and_adaptive_max_pool_match_pytorch() {
    let c = cases();
    let opts = |padding_idx, scale_grad_by_freq| EmbeddingOptions { padding_idx, scale_grad_by_freq };
    c.run("embedding", &["w", "i"], |v| ops::embedding(&v[0], &v[1], opts(None, false)));
    c.run("embedding_pad", &["w", "i"], |v| ops::embedding(&v[0], &v[1], opts(Some(2), false)));
    c.run("embedding_pad_neg_freq", &["w", "i"], |v| ops::embedding(&v[0], &v[1], opts(Some(-1), true)));
    for (oh, ow) in [(2, 3), (3, 3), (5, 7), (1, 1), (4, 6)] {
        let name = format!("adaptive_max_{oh}x{ow}");
        c.run(&name, &["a"], |v| ops::adaptive_max_pool2d(&v[0], (oh, ow)));
        let (_, idx) = ops::adaptive_max_pool2d_with_indices(&c.get(&format!("{name}.a")), (oh, ow)).unwrap();
        assert_eq!(idx.to_vec::<i64>(), c.get(&format!("{name}.idx")).to_vec::<i64>(), "{name}: indices");
    }
}

#[test]
fn interpolate_matches_pytorch() {
    let c = cases();
    use InterpolateMode::{Bilinear, Nearest};
    let size = |h, w| InterpolateArgs::size((h, w));
    let scale = InterpolateArgs::scale_factor;
    let nearest: [(&str, InterpolateArgs); 8] = [
        ("nearest_size_up", size(8, 10)),
        ("nearest_size_odd", size(3, 7)),
        ("nearest_size_down", size(2, 2)),
        ("nearest_scale_2", scale(2.0, 2.0)),
        ("nearest_scale_mixed", scale(1.5, 0.7)),
        ("nearest_scale_21", scale(2.1, 1.3)),
        ("nearest_scale_half", scale(0.5, 0.5)),
        ("nearest_recompute", scale(1.5, 0.7).recompute_scale_factor(true)),
    ];
    for (name, a) in nearest {
        c.run(&format!("interp_{name}"), &["a"], |v| ops::interpolate(&v[0], a.mode(Nearest)));
    }
    for align in [false, true] {
        let tag = if align { "ac" } else { "noac" };
        let bilinear: [(&str, InterpolateArgs); 7] = [
            ("size_up", size(7, 9)),
            ("size_down", size(3, 2)),
            ("same", size(4, 5)),
            ("one", size(1, 1)),
            ("scale_2", scale(2.0, 2.0)),
            ("scale_mixed", scale(1.7, 0.6)),
            ("recompute", scale(1.7, 0.6).recompute_scale_factor(true)),
        ];
        for (name, a) in bilinear {
            c.run(&format!("interp_bilinear_{tag}_{name}"), &["a"], |v| ops::interpolate(&v[0], a.mode(Bilinear).align_corners(align)));
        }
    }
}

// ----- gradients against finite differences, first and second order, in f64 ------------

mod gradients {
    use autograd::testing::{assert_gradcheck, assert_gradgradcheck};
    use autograd::{rng, DType, Result, Tensor};
    use ops::{ConvTranspose2dArgs, EmbeddingOptions, GeluApproximate, InterpolateArgs, InterpolateMode};
    use proptest::prelude::*;

    fn both(f: impl Fn(&[Tensor]) -> Result<Tensor> + Copy, inputs: &[Tensor]) {
        assert_gradcheck(f, inputs);
        assert_gradgradcheck(f, inputs);
    }

    /// Values in `[0.2, 2.5]` with random signs: away from every kink at 0 and from the
    /// bounds used below.
    fn away_from_kinks(n: usize, seed: u64) -> Tensor {
        let mut r = rng(seed);
        let mag = Tensor::uniform_dtype(&[n], 0.2, 2.5, DType::F64, &mut r).to_vec::<f64>();
        let sign = Tensor::uniform_dtype(&[n], -1.0, 1.0, DType::F64, &mut r).to_vec::<f64>();
        let v: Vec<f64> = mag
            .iter()
            .zip(&sign)
            .map(|(&m, &s)| if s < 0.0 { -m } else { m })
            .map(|v| if (v.abs() - 1.0).abs() < 0.05 { v * 1.2 } else { v })
            .collect();
        Tensor::from_vec(v, &[n]).unwrap()
    }

    fn cfg() -> ProptestConfig {
        autograd::testing::config_from_env(12)
    }

    proptest! {
        #![proptest_config(cfg())]

        #[test]
        fn activations(n in 1usize..12, seed in any::<u64>(), beta in 0.5f64..2.0) {
            let x = away_from_kinks(n, seed).requires_grad_();
            let i = [x];
            both(|v| ops::leaky_relu(&v[0], 0.2), &i);
            both(|v| ops::elu(&v[0], 0.7), &i);
            both(|v| ops::gelu(&v[0], GeluApproximate::None), &i);
            both(|v| ops::gelu(&v[0], GeluApproximate::Tanh), &i);
            both(|v| ops::erf(&v[0]), &i);
            both(|v| ops::silu(&v[0]), &i);
            both(move |v| ops::softplus(&v[0], beta, 20.0), &i);
            // Past the threshold (beta x > 0.1 for x >= 0.2 and beta >= 0.5): the identity.
            both(|v| ops::softplus(&v[0], 1.0, 0.1), &i);
            both(|v| ops::hardtanh(&v[0], -1.5, 0.9), &i);
            both(|v| v[0].reshape(&[1, -1])?.softmax(1), &i);
            both(|v| v[0].reshape(&[1, -1])?.log_softmax(-1), &i);
        }

        #[test]
        fn layer_and_group_norm(a in 1usize..4, g in 1usize..4, cg in 1usize..3, s in 1usize..4, seed in any::<u64>()) {
            let mut r = rng(seed);
            let c = g * cg;
            let x = Tensor::uniform_dtype(&[a, c, s], -2.0, 2.0, DType::F64, &mut r).requires_grad_();
            let w = Tensor::uniform_dtype(&[c], 0.5, 1.5, DType::F64, &mut r).requires_grad_();
            let b = Tensor::uniform_dtype(&[c], -1.0, 1.0, DType::F64, &mut r).requires_grad_();
            // tanh after the norm, so the second order is not trivially zero.
            both(|v| Ok(ops::group_norm(&v[0], g, Some(&v[1]), Some(&v[2]), 1e-5)?.tanh()), &[x.clone(), w.clone(), b.clone()]);
            both(|v| Ok(ops::group_norm(&v[0], g, None, None, 1e-5)?.tanh()), &[x.clone()]);
            let wl = Tensor::uniform_dtype(&[c, s], 0.5, 1.5, DType::F64, &mut r).requires_grad_();
            let bl = Tensor::uniform_dtype(&[c, s], -1.0, 1.0, DType::F64, &mut r).requires_grad_();
            both(|v| Ok(ops::layer_norm(&v[0], &[c, s], Some(&v[1]), Some(&v[2]), 1e-5)?.tanh()), &[x.clone(), wl, bl]);
            both(|v| Ok(ops::layer_norm(&v[0], &[s], None, None, 1e-5)?.tanh()), &[x]);
        }

        #[test]
        fn conv_transpose2d(
            (n, g, cin_g, cout_g) in (1usize..3, 1usize..3, 1usize..3, 1usize..3),
            (h, w, kh, kw) in (1usize..4, 1usize..4, 1usize..4, 1usize..4),
            (s, p, d) in (1usize..4, 0usize..3, 1usize..3),
            op in 0usize..3,
            seed in any::<u64>(),
        ) {
            let op = op % s.max(d);
            let args = ConvTranspose2dArgs::new().stride(s).padding(p).output_padding(op).dilation(d).groups(g);
            let mut r = rng(seed);
            let x = Tensor::uniform_dtype(&[n, cin_g * g, h, w], -1.0, 1.0, DType::F64, &mut r).requires_grad_();
            let wt = Tensor::uniform_dtype(&[cin_g * g, cout_g, kh, kw], -1.0, 1.0, DType::F64, &mut r).requires_grad_();
            let b = Tensor::uniform_dtype(&[cout_g * g], -1.0, 1.0, DType::F64, &mut r).requires_grad_();
            let f = move |v: &[Tensor]| Ok(ops::conv_transpose2d(&v[0], &v[1], Some(&v[2]), args)?.tanh());
            // Geometries whose output would be empty are errors; skip them.
            if f(&[x.clone(), wt.clone(), b.clone()]).is_ok() {
                both(f, &[x, wt, b]);
            }
        }

        #[test]
        fn embedding_adaptive_max_pool_and_interpolate(
            (h, w) in (1usize..6, 1usize..6),
            (oh, ow) in (1usize..6, 1usize..6),
            align in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let mut r = rng(seed);
            let weight = Tensor::uniform_dtype(&[5, 3], -1.0, 1.0, DType::F64, &mut r).requires_grad_();
            let idx = Tensor::randint(0, 5, &[2, 3], &mut r).unwrap();
            // The plain lookup (padding_idx and scale_grad_by_freq change the gradient on
            // purpose, so finite differences do not apply; the fixture checks them).
            both(|v| Ok(ops::embedding(&v[0], &idx, EmbeddingOptions::default())?.tanh()), &[weight]);
            // Distinct values, so no window holds a tie.
            let n = 2 * h * w;
            let perm = Tensor::randperm(n, &mut r).unwrap().to_vec::<i64>();
            let x = Tensor::from_vec(perm.iter().map(|&p| p as f64 * 0.1 - 1.0).collect::<Vec<_>>(), &[1, 2, h, w]).unwrap().requires_grad_();
            both(|v| Ok(ops::adaptive_max_pool2d(&v[0], (oh, ow))?.tanh()), &[x.clone()]);
            for mode in [InterpolateMode::Nearest, InterpolateMode::Bilinear] {
                let mut a = InterpolateArgs::size((oh, ow)).mode(mode);
                if mode == InterpolateMode::Bilinear {
                    a = a.align_corners(align);
                }
                both(move |v| Ok(ops::interpolate(&v[0], a)?.tanh()), &[x.clone()]);
            }
        }

        #[test]
        fn dropout_with_a_fixed_mask(n in 1usize..10, c in 1usize..4, p in 0.1f64..0.9, seed in any::<u64>()) {
            let x = Tensor::uniform_dtype(&[n, c, 2, 2], -1.0, 1.0, DType::F64, &mut rng(seed)).requires_grad_();
            // Reseeded in each evaluation: the same mask every time.
            both(move |v| { autograd::manual_seed(seed); Ok(ops::dropout(&v[0], p, true)?.tanh()) }, &[x.clone()]);
            both(move |v| { autograd::manual_seed(seed); Ok(ops::dropout2d(&v[0], p, true)?.tanh()) }, &[x]);
        }
    }
}

// ----- the layers: PyTorch's reprs, state_dict keys, initialisation, config errors -------

#[test]
fn layers_have_pytorch_reprs_and_keys() {
    let mut r = autograd::rng(0);
    let keys = |m: &dyn Module| m.state_dict().into_iter().map(|(k, t)| (k, t.shape().to_vec())).collect::<Vec<_>>();
    let ln = nn::LayerNorm::new(nn::LayerNormConfig::new(&[10])).unwrap();
    assert_eq!(ln.describe(), "LayerNorm((10,), eps=1e-05, elementwise_affine=True, bias=True)");
    assert_eq!(keys(&ln), [("weight".into(), vec![10]), ("bias".into(), vec![10])]);
    let plain = nn::LayerNorm::new(nn::LayerNormConfig::new(&[2, 3]).elementwise_affine(false)).unwrap();
    assert_eq!(plain.describe(), "LayerNorm((2, 3), eps=1e-05, elementwise_affine=False, bias=False)");
    assert!(plain.state_dict().is_empty());
    assert_eq!(keys(&nn::LayerNorm::new(nn::LayerNormConfig::new(&[4]).bias(false)).unwrap()), [("weight".into(), vec![4])]);
    let gn = nn::GroupNorm::new(nn::GroupNormConfig::new(2, 6)).unwrap();
    assert_eq!(gn.describe(), "GroupNorm(2, 6, eps=1e-05, affine=True, bias=True)");
    assert_eq!(keys(&gn), [("weight".into(), vec![6]), ("bias".into(), vec![6])]);
    assert_eq!(gn.weight.as_ref().unwrap().data().to_vec::<f32>(), [1.0; 6]);
    let ct = nn::ConvTranspose2d::new(nn::ConvTranspose2dConfig::new(4, 6, 3).groups(2), &mut r).unwrap();
    assert_eq!(ct.describe(), "ConvTranspose2d(4, 6, kernel_size=(3, 3), stride=(1, 1), groups=2)");
    assert_eq!(keys(&ct), [("weight".into(), vec![4, 3, 3, 3]), ("bias".into(), vec![6])]);
    let ct2 = nn::ConvTranspose2dConfig::new(2, 3, (2, 3)).stride(2).padding(1).output_padding(1).dilation(2).bias(false);
    assert_eq!(
        nn::ConvTranspose2d::new(ct2, &mut r).unwrap().describe(),
        "ConvTranspose2d(2, 3, kernel_size=(2, 3), stride=(2, 2), padding=(1, 1), dilation=(2, 2), output_padding=(1, 1), bias=False)"
    );
    let emb = nn::Embedding::new(10, 3, Some(0), &mut r).unwrap();
    assert_eq!(emb.describe(), "Embedding(10, 3, padding_idx=0)");
    assert_eq!(keys(&emb), [("weight".into(), vec![10, 3])]);
    assert_eq!(emb.weight.data().narrow(0, 0, 1).unwrap().to_vec::<f32>(), [0.0; 3], "the padding row starts at zero");
    let reprs: [(Box<dyn Module>, &str); 14] = [
        (Box::new(nn::Upsample::by_scale(2.0, 2.0, InterpolateMode::Nearest).unwrap()), "Upsample(scale_factor=2.0, mode='nearest')"),
        (Box::new(nn::Upsample::to_size((3, 4), InterpolateMode::Bilinear).unwrap()), "Upsample(size=(3, 4), mode='bilinear')"),
        (
            Box::new(nn::Upsample::nearest2d(InterpolateArgs::scale_factor(2.0, 2.0)).unwrap()),
            "UpsamplingNearest2d(scale_factor=2.0, mode='nearest')",
        ),
        (
            Box::new(nn::Upsample::bilinear2d(InterpolateArgs::scale_factor(2.0, 2.0)).unwrap()),
            "UpsamplingBilinear2d(scale_factor=2.0, mode='bilinear')",
        ),
        (Box::new(nn::AdaptiveMaxPool2d::new((2, 3))), "AdaptiveMaxPool2d(output_size=(2, 3))"),
        (Box::new(nn::LeakyReLU::default()), "LeakyReLU(negative_slope=0.01)"),
        (Box::new(nn::ELU::default()), "ELU(alpha=1.0)"),
        (Box::new(nn::GELU::default()), "GELU(approximate='none')"),
        (Box::new(nn::GELU::new(GeluApproximate::Tanh)), "GELU(approximate='tanh')"),
        (Box::new(nn::SiLU), "SiLU()"),
        (Box::new(nn::Softplus::default()), "Softplus(beta=1.0, threshold=20.0)"),
        (Box::new(nn::Hardtanh::default()), "Hardtanh(min_val=-1.0, max_val=1.0)"),
        (Box::new(nn::Softmax::new(1)), "Softmax(dim=1)"),
        (Box::new(nn::LogSoftmax::new(1)), "LogSoftmax(dim=1)"),
    ];
    for (m, want) in reprs {
        assert_eq!(m.describe(), want);
        assert!(m.state_dict().is_empty());
    }
}

#[test]
fn initialisation_follows_pytorch() {
    // ConvTranspose2d: kaiming_uniform(a = sqrt(5)) over PyTorch's fan_in, weight.size(1) k k:
    // uniform in +-1/sqrt(fan_in), the bias too.
    let ct = nn::ConvTranspose2d::new(nn::ConvTranspose2dConfig::new(64, 8, 3).groups(2), &mut autograd::rng(1)).unwrap();
    let bound = 1.0 / ((4 * 3 * 3) as f64).sqrt();
    let w = ct.weight.data().to_vec::<f32>();
    let max = w.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
    assert!(max <= bound && max > 0.9 * bound, "weights within +-{bound}, max {max}");
    assert!(ct.bias.as_ref().unwrap().data().to_vec::<f32>().iter().all(|v| (v.abs() as f64) <= bound));
    // Embedding: N(0, 1).
    let e = nn::Embedding::new(1000, 50, None, &mut autograd::rng(2)).unwrap().weight.data().to_vec::<f32>();
    let mean = e.iter().map(|&v| v as f64).sum::<f64>() / e.len() as f64;
    let var = e.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / e.len() as f64;
    assert!(mean.abs() < 0.02 && (var - 1.0).abs() < 0.03, "mean {mean}, var {var}");
}

#[test]
fn invalid_configurations_are_errors_naming_the_layer() {
    let mut r = autograd::rng(0);
    let starts = |e: nn::Error, with: &str| assert!(e.to_string().starts_with(with), "{e}");
    starts(nn::LayerNorm::new(nn::LayerNormConfig::new(&[])).err().unwrap(), "LayerNorm: ");
    starts(nn::GroupNorm::new(nn::GroupNormConfig::new(4, 6)).err().unwrap(), "GroupNorm: ");
    starts(nn::GroupNorm::new(nn::GroupNormConfig::new(0, 6)).err().unwrap(), "GroupNorm: ");
    starts(nn::ConvTranspose2d::new(nn::ConvTranspose2dConfig::new(3, 4, 3).groups(2), &mut r).err().unwrap(), "ConvTranspose2d: ");
    starts(
        nn::ConvTranspose2d::new(nn::ConvTranspose2dConfig::new(2, 4, 3).stride(2).output_padding(2), &mut r).err().unwrap(),
        "ConvTranspose2d: ",
    );
    starts(nn::ConvTranspose2d::new(nn::ConvTranspose2dConfig::new(2, 4, 0), &mut r).err().unwrap(), "ConvTranspose2d: ");
    starts(nn::Embedding::new(5, 2, Some(5), &mut r).err().unwrap(), "Embedding: ");
    starts(nn::Embedding::new(5, 2, Some(-6), &mut r).err().unwrap(), "Embedding: ");
    starts(nn::Hardtanh::new(1.0, -1.0).err().unwrap(), "Hardtanh: ");
    starts(nn::Upsample::new(InterpolateArgs::default()).err().unwrap(), "Upsample: ");
    starts(nn::Upsample::new(InterpolateArgs::size((2, 2)).align_corners(true)).err().unwrap(), "Upsample: ");
    // Inputs that do not fit a layer: errors naming the op.
    let gn = nn::GroupNorm::new(nn::GroupNormConfig::new(2, 6)).unwrap();
    starts(gn.forward(&Tensor::zeros(&[2, 4, 3])).err().unwrap(), "group_norm: ");
    let emb = nn::Embedding::new(5, 2, None, &mut r).unwrap();
    starts(emb.forward(&Tensor::from_vec(vec![0i64, 5], &[2]).unwrap()).err().unwrap(), "embedding: ");
    starts(emb.forward(&Tensor::zeros(&[2])).err().unwrap(), "embedding: ");
}

#[test]
fn embedding_layer_keeps_the_padding_row_out_of_training() {
    let emb = nn::Embedding::new(4, 3, Some(1), &mut autograd::rng(3)).unwrap();
    let idx = Tensor::from_vec(vec![1i64, 2, 1, 3], &[2, 2]).unwrap();
    let y = emb.forward(&idx).unwrap();
    assert_eq!(y.shape(), &[2, 2, 3]);
    y.sum().backward().unwrap();
    let g = emb.weight.grad().unwrap().to_vec::<f32>();
    assert_eq!(&g[..3], &[0.0; 3], "row 0 is not used");
    assert_eq!(&g[3..6], &[0.0; 3], "row 1 is the padding row");
    assert_eq!(&g[6..], &[1.0; 6]);
    let frozen = nn::Embedding::from_pretrained(&Tensor::ones(&[3, 2]), true, None).unwrap();
    assert!(!frozen.weight.requires_grad());
}
