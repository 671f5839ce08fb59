//! Optimisers, schedulers and gradient clipping against PyTorch: the fixture
//! `tests/fixtures/optim_ref.npz` was written by PyTorch 2.15 running the kept script
//! `tests/fixtures/optim_ref.py` (by hand, never in CI). Values must match to 1e-12
//! relative with a 1e-15 absolute floor; state dict round trips must continue a run
//! bitwise.

use autograd::{DType, Parameter, Tensor};
use nn::optim::lr_scheduler::{
    CosineAnnealingLR, ExponentialLR, LinearLR, LrScheduler, MultiStepLR, OneCycleConfig, OneCycleLR, SequentialLR, StepLR,
};
use nn::optim::{Adagrad, AdagradConfig, Adam, AdamConfig, AdamW, Optimizer, ParamGroup, RmsProp, RmsPropConfig, Sgd, SgdConfig};
use std::collections::HashMap;
use std::sync::OnceLock;

fn fixture() -> &'static HashMap<String, Tensor> {
    static F: OnceLock<HashMap<String, Tensor>> = OnceLock::new();
    F.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/optim_ref.npz");
        nn::load_npz(std::path::Path::new(path)).unwrap().into_iter().collect()
    })
}

fn want(key: &str) -> Vec<f64> {
    fixture().get(key).unwrap_or_else(|| panic!("fixture lacks '{key}'")).to_vec()
}

/// 1e-12 relative, 1e-15 absolute floor.
fn close(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let tol = (1e-12 * w.abs()).max(1e-15);
        assert!((g - w).abs() <= tol, "{what}[{i}]: got {g}, PyTorch {w} (diff {:e})\n got {got:?}\nwant {want:?}", (g - w).abs());
    }
}

// ----- the loss both sides differentiate -------------------------------------------------

const W0: [f64; 6] = [0.5, -1.0, 2.0, 1.5, 0.25, -0.75];
const B0: [f64; 3] = [0.1, -0.2, 0.3];
const KW: [f64; 6] = [1.0, 0.5, 2.0, 1.5, 0.8, 1.2];
const TW: [f64; 6] = [0.3, -0.5, 1.0, -1.0, 0.7, 0.2];
const KB: [f64; 3] = [0.9, 1.1, 2.5];
const TB: [f64; 3] = [1.0, -1.0, 0.5];

/// `k * (p - t) + 0.1 * p * p * p` element by element, in the order PyTorch evaluates it
/// (so the gradient is bitwise PyTorch's), negated for the maximising configurations.
fn grad(p: &Parameter, k: &[f64], t: &[f64], maximize: bool) -> Tensor {
    let v: Vec<f64> = p.data().to_vec();
    let g: Vec<f64> = v
        .iter()
        .zip(k.iter().zip(t))
        .map(|(&p, (&k, &t))| {
            let g = k * (p - t) + 0.1 * p * p * p;
            if maximize {
                -g
            } else {
                g
            }
        })
        .collect();
    Tensor::from_vec(g, &p.shape()).unwrap()
}

fn params() -> (Parameter, Parameter) {
    (Parameter::new(&Tensor::from_vec(W0.to_vec(), &[2, 3]).unwrap()), Parameter::new(&Tensor::from_vec(B0.to_vec(), &[3]).unwrap()))
}

fn named(w: &Parameter, b: &Parameter) -> Vec<(String, Parameter)> {
    vec![("w".to_string(), w.clone()), ("b".to_string(), b.clone())]
}

type Make = fn(&Parameter, &Parameter) -> Box<dyn Optimizer>;

/// Every configuration of the fixture: (name, maximize, how to build it).
fn configs() -> Vec<(&'static str, bool, Make)> {
    fn groups(w: &Parameter, b: &Parameter) -> (ParamGroup, ParamGroup) {
        (ParamGroup::new(vec![("w".into(), w.clone())]), ParamGroup::new(vec![("b".into(), b.clone())]))
    }
    vec![
        ("sgd", false, |w, b| Box::new(Sgd::new(named(w, b), 0.1).unwrap())),
        ("sgd_momentum_dampening", false, |w, b| {
            Box::new(Sgd::with(named(w, b), SgdConfig::new(0.05).momentum(0.9).dampening(0.3)).unwrap())
        }),
        ("sgd_nesterov_wd", false, |w, b| {
            Box::new(Sgd::with(named(w, b), SgdConfig::new(0.05).momentum(0.9).nesterov(true).weight_decay(0.01)).unwrap())
        }),
        ("sgd_maximize", true, |w, b| Box::new(Sgd::with(named(w, b), SgdConfig::new(0.05).momentum(0.5).maximize(true)).unwrap())),
        ("sgd_groups", false, |w, b| {
            let (gw, gb) = groups(w, b);
            let gb = gb.lr(0.02).momentum(0.5).weight_decay(0.0);
            Box::new(Sgd::with(vec![gw, gb], SgdConfig::new(0.05).momentum(0.9).weight_decay(0.1)).unwrap())
        }),
        ("adam", false, |w, b| Box::new(Adam::new(named(w, b), 0.1).unwrap())),
        ("adam_wd_amsgrad", false, |w, b| {
            Box::new(Adam::with(named(w, b), AdamConfig::new(0.05).betas(0.8, 0.99).eps(1e-6).weight_decay(0.1).amsgrad(true)).unwrap())
        }),
        ("adam_maximize", true, |w, b| Box::new(Adam::with(named(w, b), AdamConfig::new(0.05).maximize(true)).unwrap())),
        ("adam_groups", false, |w, b| {
            let (gw, gb) = groups(w, b);
            let gb = gb.lr(0.01).betas(0.5, 0.9).weight_decay(0.0);
            Box::new(Adam::with(vec![gw, gb], AdamConfig::new(0.05).weight_decay(0.05)).unwrap())
        }),
        ("adamw", false, |w, b| Box::new(AdamW::new(named(w, b), 0.05).unwrap())),
        ("adamw_amsgrad_groups", false, |w, b| {
            let (gw, gb) = groups(w, b);
            Box::new(AdamW::with(vec![gw.weight_decay(0.1), gb.weight_decay(0.0)], AdamConfig::adamw(0.05).amsgrad(true)).unwrap())
        }),
        ("rmsprop", false, |w, b| Box::new(RmsProp::new(named(w, b), 0.01).unwrap())),
        ("rmsprop_centered_momentum", false, |w, b| {
            let c = RmsPropConfig::new(0.01).alpha(0.9).eps(1e-6).momentum(0.9).centered(true).weight_decay(0.01);
            Box::new(RmsProp::with(named(w, b), c).unwrap())
        }),
        ("rmsprop_maximize", true, |w, b| {
            Box::new(RmsProp::with(named(w, b), RmsPropConfig::new(0.01).momentum(0.5).maximize(true)).unwrap())
        }),
        ("adagrad", false, |w, b| Box::new(Adagrad::new(named(w, b), 0.1).unwrap())),
        ("adagrad_decay", false, |w, b| {
            let c = AdagradConfig::new(0.1).lr_decay(0.01).weight_decay(0.05).initial_accumulator_value(0.1).eps(1e-8);
            Box::new(Adagrad::with(named(w, b), c).unwrap())
        }),
        ("adagrad_maximize_groups", true, |w, b| {
            let (gw, gb) = groups(w, b);
            Box::new(Adagrad::with(vec![gw, gb.lr(0.3)], AdagradConfig::new(0.1).maximize(true)).unwrap())
        }),
    ]
}

/// Steps `from..to` of the fixture's run: `b` gets no gradient at steps 1, 4, 7, ...
fn steps(opt: &mut dyn Optimizer, w: &Parameter, b: &Parameter, maximize: bool, from: usize, to: usize, mut each: impl FnMut()) {
    for t in from..to {
        w.set_grad(Some(&grad(w, &KW, &TW, maximize))).unwrap();
        let gb = (t % 3 != 1).then(|| grad(b, &KB, &TB, maximize));
        b.set_grad(gb.as_ref()).unwrap();
        opt.step().unwrap();
        each();
    }
}

#[test]
fn every_optimizer_follows_pytorchs_trajectory_for_20_steps() {
    let configs = configs();
    assert_eq!(configs.len() * 2, fixture().keys().filter(|k| !k.starts_with("sched.") && !k.starts_with("clip.")).count());
    for (name, maximize, make) in configs {
        let (w, b) = params();
        let mut opt = make(&w, &b);
        let (mut ws, mut bs) = (w.data().to_vec::<f64>(), b.data().to_vec::<f64>());
        steps(opt.as_mut(), &w, &b, maximize, 0, 20, || {
            ws.extend(w.data().to_vec::<f64>());
            bs.extend(b.data().to_vec::<f64>());
        });
        close(&ws, &want(&format!("{name}.w")), &format!("{name}.w"));
        close(&bs, &want(&format!("{name}.b")), &format!("{name}.b"));
    }
}

fn bits(p: &Parameter) -> Vec<u64> {
    p.data().to_vec::<f64>().iter().map(|v| v.to_bits()).collect()
}

#[test]
fn every_optimizer_resumes_exactly_from_its_state_dict() {
    for (name, maximize, make) in configs() {
        let (w, b) = params();
        let mut opt = make(&w, &b);
        steps(opt.as_mut(), &w, &b, maximize, 0, 20, || {});
        let straight = (bits(&w), bits(&b));

        let (w, b) = params();
        let mut opt = make(&w, &b);
        steps(opt.as_mut(), &w, &b, maximize, 0, 10, || {});
        let state = opt.state_dict();
        // A fresh optimiser over fresh parameters holding the saved values.
        let (w2, b2) = params();
        w2.set(&w.data()).unwrap();
        b2.set(&b.data()).unwrap();
        drop(opt);
        let mut opt = make(&w2, &b2);
        opt.load_state_dict(&state).unwrap();
        assert_eq!(keys(&opt.state_dict()), keys(&state), "{name}");
        steps(opt.as_mut(), &w2, &b2, maximize, 10, 20, || {});
        assert_eq!((bits(&w2), bits(&b2)), straight, "{name}: 10 + save/load + 10 steps differ from 20");
    }
}

fn keys(s: &[(String, Tensor)]) -> Vec<String> {
    let mut k: Vec<String> = s.iter().map(|(k, _)| k.clone()).collect();
    k.sort();
    k
}

#[test]
fn state_is_keyed_by_parameter_name_with_the_groups_hyper_parameters() {
    let (w, b) = params();
    let mut opt = Adam::with(named(&w, &b), AdamConfig::new(0.1).amsgrad(true)).unwrap();
    steps(&mut opt, &w, &b, false, 0, 2, || {});
    let got = keys(&opt.state_dict());
    let mut expected: Vec<String> = ["exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step"]
        .iter()
        .flat_map(|k| [format!("state.w.{k}"), format!("state.b.{k}")])
        .chain(["lr", "beta1", "beta2", "eps", "weight_decay", "amsgrad", "maximize"].iter().map(|k| format!("param_groups.0.{k}")))
        .collect();
    expected.sort();
    assert_eq!(got, expected);
    let sd = opt.state_dict();
    let get = |k: &str| sd.iter().find(|(n, _)| n == k).unwrap().1.clone();
    // b had no gradient at step 1: it took one step, w two.
    assert_eq!((get("state.w.step").item().unwrap(), get("state.b.step").item().unwrap()), (2.0, 1.0));
    assert_eq!(get("state.w.exp_avg").shape(), &[2, 3]);
    assert_eq!(opt.entry_shape("state.w.exp_avg"), Some(vec![2, 3]));
    assert_eq!(opt.entry_shape("state.b.step"), Some(vec![]));
    assert_eq!(opt.entry_shape("param_groups.0.lr"), Some(vec![]));
    assert_eq!(opt.entry_shape("param_groups.1.lr"), None);
    assert_eq!(opt.entry_shape("state.w.momentum_buffer"), None);
}

#[test]
fn load_state_dict_checks_everything_before_changing_anything() {
    let (w, b) = params();
    let mut opt = Adam::new(named(&w, &b), 0.1).unwrap();
    steps(&mut opt, &w, &b, false, 0, 3, || {});
    let good = opt.state_dict();
    let edit = |key: &str, t: Tensor| {
        let mut s = good.clone();
        s.iter_mut().find(|(k, _)| k == key).unwrap().1 = t;
        s
    };
    let cases: Vec<(Vec<(String, Tensor)>, &str)> = vec![
        (edit("state.w.exp_avg", Tensor::zeros(&[6]).to_dtype(DType::F64)), "'state.w.exp_avg' has shape [6], parameter [2, 3]"),
        (
            edit("state.b.exp_avg_sq", Tensor::from_vec(vec![1.0, f64::NAN, 0.0], &[3]).unwrap()),
            "'state.b.exp_avg_sq' holds NaN at index 1",
        ),
        (edit("state.w.step", Tensor::scalar_dtype(2.5, DType::F64)), "'state.w.step' must be a whole number from 0 to 2^53, got 2.5"),
        (edit("param_groups.0.lr", Tensor::scalar_dtype(-1.0, DType::F64)), "parameter group 0: Invalid learning rate: -1"),
        (edit("param_groups.0.amsgrad", Tensor::scalar_dtype(0.5, DType::F64)), "'amsgrad' expects 0 or 1 (a flag), got 0.5"),
        ([good.clone(), vec![("state.v.exp_avg".to_string(), Tensor::zeros(&[3]))]].concat(), "unexpected entry 'state.v.exp_avg'"),
        (
            [good.clone(), vec![("param_groups.1.lr".to_string(), Tensor::scalar_dtype(0.1, DType::F64))]].concat(),
            "unexpected entry 'param_groups.1.lr'",
        ),
        (
            good.iter().filter(|(k, _)| k != "state.w.exp_avg").cloned().collect(),
            "'state.w.exp_avg' is missing (the parameter has taken 3 steps)",
        ),
    ];
    let before = opt.state_dict();
    for (bad, msg) in cases {
        let e = opt.load_state_dict(&bad).unwrap_err().to_string();
        assert!(e.starts_with("load_state_dict: Adam: ") && e.contains(msg), "{e}\nexpected: {msg}");
        assert_eq!(
            opt.state_dict().iter().map(|(k, t)| (k.clone(), t.to_vec::<f64>())).collect::<Vec<_>>(),
            before.iter().map(|(k, t)| (k.clone(), t.to_vec::<f64>())).collect::<Vec<_>>(),
            "a failed load changed the state"
        );
    }
}

#[test]
fn frozen_parameters_and_parameters_without_a_gradient_are_skipped() {
    let (w, b) = params();
    let mut opt = Adam::new(named(&w, &b), 0.1).unwrap();
    w.set_grad(Some(&grad(&w, &KW, &TW, false))).unwrap();
    b.set_grad(Some(&grad(&b, &KB, &TB, false))).unwrap();
    b.requires_grad_(false);
    opt.step().unwrap();
    assert_ne!(w.data().to_vec::<f64>(), W0.to_vec());
    assert_eq!(b.data().to_vec::<f64>(), B0.to_vec(), "a frozen parameter moved");
    let sd = keys(&opt.state_dict());
    assert!(sd.iter().any(|k| k == "state.w.step") && !sd.iter().any(|k| k.starts_with("state.b.")), "{sd:?}");
    // Unfrozen, without a gradient: still untouched.
    b.requires_grad_(true);
    b.zero_grad();
    opt.step().unwrap();
    assert_eq!(b.data().to_vec::<f64>(), B0.to_vec());
}

#[test]
fn invalid_settings_are_errors_naming_the_optimizer() {
    let (w, b) = params();
    let err = |r: nn::Result<Box<dyn Optimizer>>| r.err().map(|e| e.to_string()).unwrap_or_default();
    let boxed = |r: nn::Result<Sgd>| r.map(|o| Box::new(o) as Box<dyn Optimizer>);
    let cases: Vec<(String, &str)> = vec![
        (err(boxed(Sgd::new(named(&w, &b), -0.1))), "SGD: parameter group 0: Invalid learning rate: -0.1"),
        (err(boxed(Sgd::new(named(&w, &b), f64::NAN))), "SGD: parameter group 0: Invalid learning rate: NaN"),
        (
            err(boxed(Sgd::with(named(&w, &b), SgdConfig::new(0.1).nesterov(true)))),
            "SGD: parameter group 0: Nesterov momentum requires a momentum and zero dampening",
        ),
        (err(boxed(Sgd::new(Vec::<Parameter>::new(), 0.1))), "SGD: optimizer got an empty parameter list"),
        (
            err(boxed(Sgd::new(vec![("w".to_string(), w.clone()), ("v".to_string(), w.clone())], 0.1))),
            "SGD: parameter 'v' is also given as 'w'",
        ),
        (err(boxed(Sgd::new(vec![("w".to_string(), w.clone()), ("w".to_string(), b.clone())], 0.1))), "SGD: two parameters are named 'w'"),
        (
            err(boxed(Sgd::new(vec![ParamGroup::new(named(&w, &b)).betas(0.9, 0.99)], 0.1))),
            "SGD: parameter group 0 has no hyper-parameter 'beta1'",
        ),
        (
            err(Adam::with(named(&w, &b), AdamConfig::new(0.1).betas(1.0, 0.999)).map(|o| Box::new(o) as Box<dyn Optimizer>)),
            "Adam: parameter group 0: Invalid beta parameter at index 0: 1",
        ),
        (
            err(RmsProp::with(named(&w, &b), RmsPropConfig::new(0.1).alpha(-0.5)).map(|o| Box::new(o) as Box<dyn Optimizer>)),
            "RMSprop: parameter group 0: Invalid alpha value: -0.5",
        ),
        (
            err(Adagrad::with(named(&w, &b), AdagradConfig::new(0.1).lr_decay(-1.0)).map(|o| Box::new(o) as Box<dyn Optimizer>)),
            "Adagrad: parameter group 0: Invalid lr_decay value: -1",
        ),
    ];
    for (got, msg) in cases {
        assert!(got.starts_with(msg), "got '{got}', expected '{msg}'");
    }
    let mut opt = Sgd::new(named(&w, &b), 0.1).unwrap();
    assert!(opt.set_lr(-1.0).unwrap_err().to_string().starts_with("SGD: parameter group 0: Invalid learning rate: -1"));
    assert_eq!(opt.lr(), 0.1);
    assert!(opt.set_hyper(0, "beta1", 0.9).is_err() && opt.set_hyper(3, "lr", 0.1).is_err());
}

#[test]
fn f32_parameters_step_like_f64_to_f32_rounding() {
    for (name, maximize, make) in configs() {
        let (w, b) = params();
        let mut opt = make(&w, &b);
        steps(opt.as_mut(), &w, &b, maximize, 0, 5, || {});
        let (w32, b32) = params();
        w32.convert(DType::F32).unwrap();
        b32.convert(DType::F32).unwrap();
        let mut opt32 = make(&w32, &b32);
        for t in 0..5 {
            w32.set_grad(Some(&grad(&w32, &KW, &TW, maximize).to_dtype(DType::F32))).unwrap();
            let gb = (t % 3 != 1).then(|| grad(&b32, &KB, &TB, maximize).to_dtype(DType::F32));
            b32.set_grad(gb.as_ref()).unwrap();
            opt32.step().unwrap();
        }
        for (p64, p32) in [(&w, &w32), (&b, &b32)] {
            for (a, b) in p64.data().to_vec::<f64>().iter().zip(p32.data().to_vec::<f64>()) {
                assert!((a - b).abs() < 1e-4, "{name}: f64 {a} vs f32 {b}");
            }
        }
    }
}

// ----- schedulers ---------------------------------------------------------------------------

fn sgd2() -> Box<dyn Optimizer> {
    let (p, q) = (Parameter::new(&Tensor::zeros(&[1])), Parameter::new(&Tensor::zeros(&[1])));
    let groups = vec![ParamGroup::new(vec![("p".into(), p)]), ParamGroup::new(vec![("q".into(), q)]).lr(0.05)];
    Box::new(Sgd::with(groups, SgdConfig::new(0.1).momentum(0.9)).unwrap())
}

fn adam2() -> Box<dyn Optimizer> {
    let (p, q) = (Parameter::new(&Tensor::zeros(&[1])), Parameter::new(&Tensor::zeros(&[1])));
    let groups = vec![ParamGroup::new(vec![("p".into(), p)]), ParamGroup::new(vec![("q".into(), q)]).lr(0.002)];
    Box::new(Adam::with(groups, AdamConfig::new(0.001)).unwrap())
}

type MakeSched = fn(&mut dyn Optimizer) -> Box<dyn LrScheduler>;
type MakeOpt = fn() -> Box<dyn Optimizer>;

/// Every schedule of the fixture: (name, optimiser, scheduler, steps, momentum key).
fn schedules() -> Vec<(&'static str, MakeOpt, MakeSched, usize, Option<&'static str>)> {
    vec![
        ("step", sgd2, |o| Box::new(StepLR::new(o, 3, 0.5).unwrap()), 20, None),
        ("multistep", sgd2, |o| Box::new(MultiStepLR::new(o, &[2, 5, 5, 9], 0.3).unwrap()), 20, None),
        ("exponential", sgd2, |o| Box::new(ExponentialLR::new(o, 0.9).unwrap()), 20, None),
        ("cosine", sgd2, |o| Box::new(CosineAnnealingLR::new(o, 7, 0.001).unwrap()), 30, None),
        ("cosine_zero", sgd2, |o| Box::new(CosineAnnealingLR::new(o, 10, 0.0).unwrap()), 25, None),
        ("linear", sgd2, |o| Box::new(LinearLR::new(o, 0.25, 1.0, 6).unwrap()), 20, None),
        (
            "onecycle_sgd",
            sgd2,
            |o| Box::new(OneCycleLR::with(o, OneCycleConfig::new(0.5, 25).max_lrs(vec![0.5, 0.2])).unwrap()),
            24,
            Some("momentum"),
        ),
        ("onecycle_adam", adam2, |o| Box::new(OneCycleLR::new(o, 0.01, 20).unwrap()), 19, Some("beta1")),
        (
            "onecycle_three_phase_linear",
            adam2,
            |o| {
                let c = OneCycleConfig::new(0.01, 30)
                    .three_phase(true)
                    .anneal_strategy(nn::optim::lr_scheduler::Anneal::Linear)
                    .pct_start(0.25)
                    .div_factor(10.0)
                    .final_div_factor(100.0);
                Box::new(OneCycleLR::with(o, c).unwrap())
            },
            29,
            Some("beta1"),
        ),
        (
            "sequential",
            sgd2,
            |o| {
                let a = LinearLR::new(o, 0.1, 1.0, 4).unwrap();
                let b = CosineAnnealingLR::new(o, 10, 0.0).unwrap();
                Box::new(SequentialLR::new(o, vec![Box::new(a), Box::new(b)], vec![4]).unwrap())
            },
            20,
            None,
        ),
        (
            "sequential3",
            sgd2,
            |o| {
                let a = LinearLR::new(o, 0.5, 1.0, 3).unwrap();
                let b = ExponentialLR::new(o, 0.8).unwrap();
                let c = StepLR::new(o, 2, 0.5).unwrap();
                Box::new(SequentialLR::new(o, vec![Box::new(a), Box::new(b), Box::new(c)], vec![3, 8]).unwrap())
            },
            20,
            None,
        ),
    ]
}

fn read(opt: &dyn Optimizer, key: Option<&str>) -> (Vec<f64>, Vec<f64>) {
    let n = opt.num_groups();
    (opt.lrs(), key.map(|k| (0..n).map(|g| opt.hyper(g, k).unwrap()).collect()).unwrap_or_default())
}

#[test]
fn every_scheduler_gives_pytorchs_learning_rates() {
    let s = schedules();
    assert_eq!(s.len(), fixture().keys().filter(|k| k.starts_with("sched.") && k.ends_with(".lr")).count());
    for (name, make_opt, make_sched, n, key) in s {
        let mut opt = make_opt();
        let mut sched = make_sched(opt.as_mut());
        let (mut lrs, mut moms) = read(opt.as_ref(), key);
        assert_eq!(sched.get_last_lr(), &lrs[..], "{name}");
        for _ in 0..n {
            opt.step().unwrap();
            sched.step(opt.as_mut()).unwrap();
            let (l, m) = read(opt.as_ref(), key);
            assert_eq!(sched.get_last_lr(), &l[..], "{name}");
            lrs.extend(l);
            moms.extend(m);
        }
        assert_eq!(sched.last_epoch(), n as i64);
        close(&lrs, &want(&format!("sched.{name}.lr")), &format!("sched.{name}.lr"));
        if key.is_some() {
            close(&moms, &want(&format!("sched.{name}.momentum")), &format!("sched.{name}.momentum"));
        }
    }
}

#[test]
fn every_scheduler_resumes_exactly_from_its_state_dict() {
    for (name, make_opt, make_sched, n, key) in schedules() {
        let n = n.min(20);
        let mut opt = make_opt();
        let mut sched = make_sched(opt.as_mut());
        let mut straight = Vec::new();
        for _ in 0..n {
            sched.step(opt.as_mut()).unwrap();
            straight.push(read(opt.as_ref(), key));
        }

        let mut opt = make_opt();
        let mut sched = make_sched(opt.as_mut());
        let mut split = Vec::new();
        for _ in 0..n / 2 {
            sched.step(opt.as_mut()).unwrap();
            split.push(read(opt.as_ref(), key));
        }
        let (opt_state, sched_state) = (opt.state_dict(), sched.state_dict());
        // Build both afresh as the run did, then load both (as with PyTorch).
        let mut opt = make_opt();
        let mut sched = make_sched(opt.as_mut());
        opt.load_state_dict(&opt_state).unwrap();
        sched.load_state_dict(&sched_state).unwrap();
        assert_eq!(keys(&sched.state_dict()), keys(&sched_state), "{name}");
        for _ in n / 2..n {
            sched.step(opt.as_mut()).unwrap();
            split.push(read(opt.as_ref(), key));
        }
        let as_bits = |v: &[(Vec<f64>, Vec<f64>)]| {
            v.iter()
                .map(|(a, b)| (a.iter().map(|x| x.to_bits()).collect(), b.iter().map(|x| x.to_bits()).collect()))
                .collect::<Vec<(Vec<u64>, Vec<u64>)>>()
        };
        assert_eq!(as_bits(&split), as_bits(&straight), "{name}: 10 + save/load + 10 steps differ from 20");
    }
}

#[test]
fn scheduler_settings_and_state_dicts_are_checked() {
    let mut opt = sgd2();
    let o = opt.as_mut();
    assert!(StepLR::new(o, 0, 0.1).unwrap_err().to_string().starts_with("StepLR: step_size must be a positive whole number"));
    assert!(LinearLR::new(o, 0.0, 1.0, 5).unwrap_err().to_string().starts_with("LinearLR: Starting multiplicative factor"));
    assert!(OneCycleLR::new(o, 0.1, 0).unwrap_err().to_string().starts_with("OneCycleLR: Expected positive integer total_steps"));
    let mut ada = Adagrad::new(vec![Parameter::new(&Tensor::zeros(&[1]))], 0.1).unwrap();
    let e = OneCycleLR::new(&mut ada, 0.1, 10).unwrap_err().to_string();
    assert!(e.contains("optimizer must support momentum or beta1") && e.contains("Adagrad"), "{e}");
    let only = Box::new(ExponentialLR::new(o, 0.9).unwrap());
    let e = SequentialLR::new(o, vec![only], vec![3]).err().unwrap().to_string();
    assert!(e.starts_with("SequentialLR: Sequential Schedulers expects number of schedulers"), "{e}");

    let mut s = OneCycleLR::new(o, 0.1, 3).unwrap();
    for _ in 0..3 {
        s.step(o).unwrap();
    }
    assert!(s.step(o).unwrap_err().to_string().contains("Tried to step 4 times. The specified number of total steps is 3"));

    let mut s = StepLR::new(o, 2, 0.5).unwrap();
    let mut bad = s.state_dict();
    bad[2].1 = Tensor::from_vec(vec![0.1f64], &[1]).unwrap();
    let e = s.load_state_dict(&bad).unwrap_err().to_string();
    assert!(e.contains("StepLR: 'base_lrs' must hold 2 finite learning rates"), "{e}");
    let e = s.load_state_dict(&[]).unwrap_err().to_string();
    assert!(e.contains("StepLR: no 'last_epoch' entry"), "{e}");
}

// ----- clipping -----------------------------------------------------------------------------

#[test]
fn clip_grad_norm_matches_pytorch() {
    for (case, max_norm, norm_type) in [("l2", 1.0, 2.0), ("inf", 0.5, f64::INFINITY), ("p3", 0.7, 3.0), ("l2_large", 100.0, 2.0)] {
        let (w, b) = params();
        w.set_grad(Some(&grad(&w, &KW, &TW, false))).unwrap();
        b.set_grad(Some(&grad(&b, &KB, &TB, false))).unwrap();
        let before = w.grad().unwrap().to_vec::<f64>();
        let total = nn::clip_grad_norm_(&[w.clone(), b.clone()], max_norm, norm_type, true).unwrap();
        close(&[total], &want(&format!("clip.{case}.total")), &format!("clip.{case}.total"));
        close(&w.grad().unwrap().to_vec::<f64>(), &want(&format!("clip.{case}.w")), &format!("clip.{case}.w"));
        close(&b.grad().unwrap().to_vec::<f64>(), &want(&format!("clip.{case}.b")), &format!("clip.{case}.b"));
        if case == "l2_large" {
            // The coefficient is clamped to 1: the gradients are untouched, bit for bit.
            assert_eq!(w.grad().unwrap().to_vec::<f64>(), before);
        }
    }
}

#[test]
fn clip_grad_norm_skips_missing_gradients_and_handles_non_finite_norms() {
    let (w, b) = params();
    assert_eq!(nn::clip_grad_norm_(&[w.clone(), b.clone()], 1.0, 2.0, true).unwrap(), 0.0);
    w.set_grad(Some(&Tensor::from_vec(vec![3.0f64, 0.0, 0.0, 0.0, 4.0, 0.0], &[2, 3]).unwrap())).unwrap();
    let total = nn::clip_grad_norm_(&[w.clone(), b.clone()], 1.0, 2.0, false).unwrap();
    assert_eq!(total, 5.0);
    assert!(b.grad().is_none());
    let g = w.grad().unwrap().to_vec::<f64>();
    assert!((g[0] - 3.0 / (5.0 + 1e-6)).abs() < 1e-15 && (g[4] - 4.0 / (5.0 + 1e-6)).abs() < 1e-15);
    // NaN in, NaN out; or an error that leaves the gradients alone.
    w.set_grad(Some(&Tensor::from_vec(vec![f64::NAN, 1.0, 0.0, 0.0, 0.0, 0.0], &[2, 3]).unwrap())).unwrap();
    let e = nn::clip_grad_norm_(&[w.clone()], 1.0, 2.0, true).unwrap_err().to_string();
    assert!(e.contains("clip_grad_norm_: the total norm of order 2 for gradients from `parameters` is non-finite"), "{e}");
    assert_eq!(w.grad().unwrap().to_vec::<f64>()[1], 1.0);
    assert!(nn::clip_grad_norm_(&[w.clone()], 1.0, f64::INFINITY, false).unwrap().is_nan());
    assert!(w.grad().unwrap().to_vec::<f64>().iter().all(|v| v.is_nan()));
    assert!(nn::clip_grad_norm_(&[w.clone()], 1.0, 0.0, false).is_err());
}

#[test]
fn clip_grad_value_clamps_every_element() {
    let p = Parameter::new(&Tensor::zeros(&[4]).to_dtype(DType::F64));
    p.set_grad(Some(&Tensor::from_vec(vec![-3.0f64, 0.5, 2.0, f64::NAN], &[4]).unwrap())).unwrap();
    nn::clip_grad_value_(&[p.clone()], 1.0).unwrap();
    let g = p.grad().unwrap().to_vec::<f64>();
    assert_eq!(&g[..3], &[-1.0, 0.5, 1.0]);
    assert!(g[3].is_nan());
    assert!(nn::clip_grad_value_(&[p], -1.0).is_err());
}
