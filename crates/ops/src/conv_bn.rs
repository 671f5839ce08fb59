//! A convolution, training-mode batch normalisation and an activation as one op,
//! [`conv2d_bn_train`]: what `Sequential` and ResNet's residual blocks run in training mode
//! (evaluation mode folds the batch norm into the convolution instead, `conv2d_fused`).
//!
//! The layers in turn make four passes over the activations after the convolution (two
//! for the statistics, then the normalised output, then the activation's) and keep three
//! tensors for the backward; their backward makes three more (the activation's gradient,
//! the batch norm's sums, its input gradient). Here the forward writes `z = act(x_hat *
//! gamma + beta)` in the pass that normalises, and keeps only the convolution's output `y`
//! and `z`; the backward forms the activation's gradient on the fly in both of the batch
//! norm's passes (its sums, then `dy`), and hands `dy` to the convolution's own gradient
//! maps: a pass fewer each way, and a tensor fewer written and kept. Every
//! value is computed with the layers' arithmetic in their order (the same kernels), so
//! outputs, statistics and gradients are bitwise those of `conv2d`, `batch_norm_train` and
//! the activation in turn. See docs/gradients.md.

use crate::batch_norm::{composed_backward, kernel_backward, normalise, BatchNormTrain};
use crate::conv::{conv2d, conv_grads, Conv2dArgs};
use autograd::{no_grad, record_saving_with_internals, Activation, Result, Saves, Tensor};

/// The batch norm's side of [`conv2d_bn_train`]: its affine parameters (`None` for
/// `affine=False`, meaning 1 and 0) and `eps`.
#[derive(Clone, Copy, Debug)]
pub struct BatchNormParams<'a> {
    pub weight: Option<&'a Tensor>,
    pub bias: Option<&'a Tensor>,
    pub eps: f64,
}

/// `act(batch_norm_train(conv2d(input, weight, bias, args), bn))` as one op on the tape,
/// `act` `None` for none. Returns the output and the batch's statistics of the
/// convolution's output (from which a layer updates its running statistics), exactly as
/// the ops in turn would.
pub fn conv2d_bn_train(
    input: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    args: Conv2dArgs,
    bn: BatchNormParams<'_>,
    act: Option<Activation>,
) -> Result<BatchNormTrain> {
    const OP: &str = "conv2d_bn_train";
    // The convolution's output is an internal value of this op: not on the tape.
    let y = no_grad(|| conv2d(input, weight, bias, args))?;
    let (out, stats) = normalise(OP, &y, bn.weight, bn.bias, bn.eps, act)?;
    let mut inputs = vec![input, weight];
    inputs.extend(bias);
    let at_gamma = inputs.len();
    inputs.extend(bn.weight);
    let at_beta = inputs.len();
    inputs.extend(bn.bias);
    let (has_cb, has_gamma, has_beta) = (bias.is_some(), bn.weight.is_some(), bn.bias.is_some());
    let eps = bn.eps;
    // All inputs: the convolution's gradients read `input` and `weight`, `dy` reads gamma,
    // and a differentiated backward recomputes the whole op from them. The output is the
    // activation's (its derivative comes from it).
    let saves = if act.is_some() { Saves::ALL } else { Saves::INPUTS };
    let kept = y.clone();
    let output = record_saving_with_internals(OP, out.output, &inputs, &[&y], saves, move |ctx| {
        let dz = ctx.grad_output();
        let gamma = has_gamma.then(|| ctx.input(at_gamma));
        let (dy, dgamma, dbeta) = if ctx.create_graph() {
            // As tape ops of the inputs, so the gradients are differentiable again.
            let (x, w) = (ctx.input(0), ctx.input(1));
            let y = conv2d(x, w, has_cb.then(|| ctx.input(2)), args)?;
            let g = match act {
                Some(a) => {
                    let beta = has_beta.then(|| ctx.input(at_beta));
                    a.backward_from_input(dz, &crate::batch_norm_train(&y, gamma, beta, eps)?.output)?
                }
                None => dz.clone(),
            };
            composed_backward(&y, gamma, &g, eps)?
        } else {
            kernel_backward(&kept, gamma, dz, act.map(|a| (a, ctx.output())), &stats, eps)?
        };
        let mut grads = conv_grads(ctx, &dy, args, has_cb.then_some(2))?;
        crate::shared::push_affine_grads(&mut grads, (dgamma, dbeta), has_gamma, has_beta);
        Ok(grads)
    });
    Ok(BatchNormTrain { output, ..out })
}
