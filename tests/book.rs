//! SPEC sections 1-5: every number of the book, asserted exactly, through the same library
//! functions the examples print.

use convnet::book::{channels, cross_correlation, padding_stride, pooling};

fn vals(t: &autograd::Tensor) -> Vec<f32> {
    t.to_vec::<f32>()
}

#[test]
fn section1_and_2_cross_correlation_edges_and_learning() {
    let o = cross_correlation::run(10, 0).unwrap();
    assert_eq!(vals(&o.corr), vec![19., 25., 37., 43.]);
    assert!(o.text.starts_with("tensor([[19., 25.],\n        [37., 43.]])\n"));
    // The custom layer is corr2d(X, weight) + bias with bias 0.
    assert_eq!(o.custom_layer_out.shape(), &[2, 2]);
    assert_eq!(o.edges.shape(), &[6, 7]);
    for row in vals(&o.edges).chunks(7) {
        assert_eq!(row, [0., 1., 0., 0., 0., -1., 0.]);
    }
    assert_eq!(o.edges_transposed.shape(), &[8, 5]);
    assert!(vals(&o.edges_transposed).iter().all(|&v| v == 0.0));
    // Learning: the loss falls every epoch and the kernel ends near [1, -1].
    assert_eq!(o.losses.len(), 10);
    assert!(o.losses.windows(2).all(|w| w[1] < w[0]), "{:?}", o.losses);
    let w = vals(&o.weight_after);
    assert!((w[0] - 1.0).abs() < 0.1 && (w[1] + 1.0).abs() < 0.1, "{w:?}");
    // Initial kernel is PyTorch's default for a (1, 2) kernel: uniform in +-1/sqrt(2).
    assert!(vals(&o.weight_before).iter().all(|v| v.abs() <= 1.0 / 2f32.sqrt()));
    assert!(o.text.contains("epoch 1, loss ") && o.text.contains("epoch 10, loss "));
    assert!(o.text.contains("before training: tensor([[") && o.text.contains("after training: tensor([["));

    let long = cross_correlation::run(100, 0).unwrap();
    let w = vals(&long.weight_after);
    assert!((w[0] - 1.0).abs() < 1e-3 && (w[1] + 1.0).abs() < 1e-3, "{w:?}");
}

#[test]
fn section3_padding_and_stride_shapes() {
    let (text, shapes) = padding_stride::run(0).unwrap();
    assert_eq!(shapes, vec![vec![8, 8], vec![8, 8], vec![4, 4], vec![2, 2]]);
    assert_eq!(text.lines().filter(|l| l.ends_with("torch.Size([8, 8])")).count(), 2);
}

#[test]
fn section4_channels() {
    let o = channels::run(0).unwrap();
    assert_eq!(vals(&o.multi_in), vec![56., 72., 104., 120.]);
    assert_eq!(o.multi_out.shape(), &[3, 2, 2]);
    assert_eq!(vals(&o.multi_out), vec![56., 72., 104., 120., 76., 100., 148., 172., 96., 128., 192., 224.]);
    assert!(o.one_by_one_diff < 1e-6, "{}", o.one_by_one_diff);
}

#[test]
fn section5_pooling() {
    let o = pooling::run().unwrap();
    let r: Vec<Vec<f32>> = o.results.iter().map(vals).collect();
    assert_eq!(r[0], vec![4., 5., 7., 8.]);
    assert_eq!(r[1], vec![2., 3., 5., 6.]);
    assert_eq!(r[3], vec![10.]);
    assert_eq!(o.results[3].shape(), &[1, 1, 1, 1]);
    assert_eq!(r[4], vec![5., 7., 13., 15.]);
    assert_eq!(r[5], vec![5., 7., 13., 15.]);
    assert_eq!(r[7], vec![5., 7., 13., 15., 6., 8., 14., 16.]);
    assert!(o.text.contains("tensor([[[[10.]]]])"));
}

#[test]
fn autograd_basics_walkthrough() {
    let b = convnet::basics::run().unwrap();
    assert_eq!(b.grad_x, vec![5., 7., 9., 11.]);
    assert_eq!(b.accumulated, vec![15., 17., 19., 21.]);
    assert_eq!(b.cube_grad, vec![3.0, 0.75, 12.0]);
    assert_eq!(b.hvp.len(), 2);
    assert!(b.text.contains("tensor([[ 5.,  7.],\n        [ 9., 11.]])"));
}

#[test]
fn custom_op_is_gradchecked() {
    use autograd::testing::{assert_gradcheck, assert_gradgradcheck};
    let x = autograd::Tensor::from_vec(vec![-1.3f64, 0.4, 2.2], &[3]).unwrap().requires_grad_();
    assert_gradcheck(|v| autograd::apply(convnet::basics::Cube, &[&v[0]]), &[x.clone()]);
    assert_gradgradcheck(|v| autograd::apply(convnet::basics::Cube, &[&v[0]]), &[x]);
}

#[test]
fn bench_runs_in_quick_mode_and_prints_measurement_lines() {
    let opts = convnet::bench::BenchOptions { reps: 1, quick: true, ..Default::default() };
    let mut out = Vec::new();
    let ms = convnet::bench::run_all(&opts, &mut out);
    let text = String::from_utf8(out).unwrap();
    assert!(!ms.is_empty());
    for line in text.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        assert_eq!(parts.len(), 3, "{line}");
        assert!(parts[1].parse::<f64>().unwrap() > 0.0, "{line}");
    }
    assert!(text.contains("sgemm_1024 "));
}
