//! The library's surface as a user meets it: one `Result` for calls into all three
//! crates, `grad` with parameters, and training-time random draws that are bitwise the
//! same at any thread count and after a split-and-resume run.

use convnet::prelude::*;

/// A user's dropout-like layer: in training, multiplies by a fresh Bernoulli mask drawn
/// from the thread's default generator, scaled by 1/keep.
struct RandomMask {
    keep: f64,
    training: Training,
}

impl Module for RandomMask {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if !self.training.get() {
            return Ok(x.clone());
        }
        let mask = Tensor::bernoulli_default(x.shape(), self.keep, x.dtype())?;
        Ok(x.mul(&mask.mul_scalar(1.0 / self.keep))?)
    }
    fn visit<'a>(&'a self, v: &mut dyn Visitor<'a>) {
        v.training(&self.training);
    }
}

fn net(seed: u64) -> Result<Sequential> {
    let r = &mut rng(seed);
    let net = Sequential::new()
        .append(Linear::new(6, 32, r)?)
        .append(ReLU)
        .append(RandomMask { keep: 0.7, training: Training::default() })
        .append(Linear::new(32, 3, r)?);
    net.to_dtype(DType::F64)?;
    Ok(net)
}

/// The fixed data of step `i`: a batch of 40 rows and their labels.
fn batch(i: usize) -> Result<(Tensor, Vec<usize>)> {
    let x = Tensor::normal_dtype(&[40, 6], 0.0, 1.0, DType::F64, &mut rng(100 + i as u64));
    let y = (0..40).map(|k| (k * 7 + i) % 3).collect();
    Ok((x, y))
}

/// Trains `steps` steps from step `first`, with momentum (optimiser state to resume).
fn train(net: &Sequential, opt: &mut Sgd, first: usize, steps: usize) -> Result<Vec<f64>> {
    let mut losses = Vec::new();
    for i in first..first + steps {
        let (x, y) = batch(i)?;
        let loss = cross_entropy(&net.forward(&x)?, &y)?;
        opt.zero_grad();
        loss.backward()?;
        opt.step()?;
        losses.push(loss.item()?);
    }
    Ok(losses)
}

fn sgd(net: &Sequential) -> Result<Sgd> {
    Sgd::with(net.named_parameters(), nn::optim::SgdConfig::new(0.1).momentum(0.9))
}

fn bits(net: &Sequential) -> Vec<Vec<u64>> {
    net.parameters().iter().map(|p| p.data().to_vec::<f64>().iter().map(|v| v.to_bits()).collect()).collect()
}

/// A straight 8-step run from seed 5 on `threads` threads.
fn straight(threads: usize) -> Result<(Vec<f64>, Vec<Vec<u64>>, Generator)> {
    autograd::set_num_threads(threads)?;
    manual_seed(5);
    let n = net(1)?;
    let mut opt = sgd(&n)?;
    let losses = train(&n, &mut opt, 0, 8)?;
    Ok((losses, bits(&n), autograd::rng_state()))
}

#[test]
fn random_draws_are_the_same_at_one_and_two_threads_and_after_resuming() -> Result<()> {
    let one = straight(1)?;
    let two = straight(2)?;
    assert_eq!(one.1, two.1, "weights differ between 1 and 2 threads");
    assert_eq!(one.2, two.2);
    assert_eq!(one.2, Generator::from_state(5, 8 * 40 * 32), "one draw per mask element");

    // Split: 3 steps, a checkpoint (weights, optimiser, generator) written to a file,
    // then a new process-like start (other weights, other generator state) that loads
    // it and trains the remaining 5.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.npz");
    manual_seed(5);
    let first = net(1)?;
    let mut opt = sgd(&first)?;
    let mut losses = train(&first, &mut opt, 0, 3)?;
    let mut entries = first.state_dict();
    entries.extend(opt.state_dict().into_iter().map(|(k, v)| (format!("_optimizer.{k}"), v)));
    entries.push(("_rng".to_string(), autograd::rng_state().state_tensor()));
    nn::save(&path, &entries)?;

    manual_seed(999);
    let resumed = net(2)?;
    let mut opt = sgd(&resumed)?;
    let saved = nn::load(&path)?;
    let (model, rest): (Vec<_>, Vec<_>) = saved.into_iter().partition(|(k, _)| !k.starts_with('_'));
    resumed.load_state_dict(&model)?;
    let optim: Vec<_> = rest.iter().filter_map(|(k, v)| k.strip_prefix("_optimizer.").map(|k| (k.to_string(), v.clone()))).collect();
    opt.load_state_dict(&optim)?;
    let rng_entry = &rest.iter().find(|(k, _)| k == "_rng").expect("saved").1;
    autograd::set_rng_state(Generator::from_state_tensor(rng_entry)?);
    losses.extend(train(&resumed, &mut opt, 3, 5)?);

    assert_eq!(losses.iter().map(|l| l.to_bits()).collect::<Vec<_>>(), one.0.iter().map(|l| l.to_bits()).collect::<Vec<_>>());
    assert_eq!(bits(&resumed), one.1, "the resumed run's weights differ from the straight run's");
    // Without the generator's state the masks differ, and so does the run: the test can fail.
    manual_seed(5);
    let forgetful = net(1)?;
    let mut opt = sgd(&forgetful)?;
    train(&forgetful, &mut opt, 0, 3)?;
    manual_seed(5);
    train(&forgetful, &mut opt, 3, 5)?;
    assert_ne!(bits(&forgetful), one.1);
    // Eval mode draws nothing.
    let before = autograd::rng_state();
    forgetful.eval();
    forgetful.forward(&batch(0)?.0)?;
    assert_eq!(autograd::rng_state(), before);
    Ok(())
}

#[test]
fn one_result_type_carries_errors_from_all_three_crates() {
    fn autograd_call() -> Result<Tensor> {
        Ok(Tensor::ones(&[2, 3]).add(&Tensor::ones(&[4]))?)
    }
    fn ops_call() -> Result<Tensor> {
        Ok(cross_entropy(&Tensor::ones(&[2, 3]), &[0, 5])?)
    }
    fn nn_call() -> Result<Sgd> {
        Sgd::new(net(0)?.named_parameters(), -1.0)
    }
    let e = autograd_call().unwrap_err();
    assert!(matches!(e, Error::Tensor(_)) && e.to_string().contains("add"), "{e}");
    let e = ops_call().unwrap_err();
    assert!(matches!(e, Error::Tensor(_)) && e.to_string().contains("cross_entropy"), "{e}");
    let e = nn_call().err().unwrap();
    assert!(matches!(e, Error::Config { .. }) && e.to_string().contains("learning rate"), "{e}");
}

#[test]
fn grad_of_a_models_loss_with_its_parameters_equals_backward() -> Result<()> {
    let n = net(3)?;
    n.eval(); // no random mask: both passes see the same function
    let (x, y) = batch(0)?;
    let params = n.parameters();
    let handles: Vec<Tensor> = params.iter().map(|p| p.tensor()).collect();
    // The forward takes its own handles (each `tensor()` call is a new one): matched by slot.
    let loss = cross_entropy(&n.forward(&x)?, &y)?;
    let refs: Vec<&Tensor> = handles.iter().collect();
    let grads = grad(&loss, &refs, None, BackwardOptions::default())?;
    cross_entropy(&n.forward(&x)?, &y)?.backward()?;
    for (g, p) in grads.iter().zip(&params) {
        assert_eq!(g.as_ref().expect("used").to_vec::<f64>(), p.grad().expect("backward reached it").to_vec::<f64>());
    }
    Ok(())
}
