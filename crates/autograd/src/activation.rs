//! Element-wise activations as values, so an op that produces a tensor (a convolution)
//! can apply one while it writes its output: one pass over memory instead of two, and the
//! derivative comes from the output alone. `nn::Sequential` fuses a convolution with the
//! activation (and 2x2 pooling) after it this way; the results are bitwise those
//! of the ops in turn.

use crate::elementwise::{binary_kernel, ReluGradOp, SigmoidGradOp, TanhGradOp};
use crate::{Element, Result, Tensor};

/// `max(x, 0)` with NaN kept (PyTorch's `relu`): a select with `|` rather than `f32::max` or
/// `if x > 0`, which both turn NaN into 0. The compiler still vectorises it (a compare,
/// an unordered compare, a blend).
#[inline(always)]
pub fn relu<T: Element>(x: T) -> T {
    if (x > T::zero()) | x.is_nan() {
        x
    } else {
        T::zero()
    }
}

/// An activation that can be fused into the op before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Sigmoid,
    Relu,
    Tanh,
}

impl Activation {
    /// The activation as its own recorded op: `x.sigmoid()`, `x.relu()`, `x.tanh()`.
    pub fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Activation::Sigmoid => x.sigmoid(),
            Activation::Relu => x.relu(),
            Activation::Tanh => x.tanh(),
        }
    }

    /// Applies the activation to every value of `v` in place, exactly as [`Self::apply`]
    /// computes each value.
    #[inline(always)]
    pub fn apply_slice<T: Element>(self, v: &mut [T]) {
        match self {
            Activation::Sigmoid => v.iter_mut().for_each(|v| *v = Element::sigmoid(*v)),
            Activation::Relu => v.iter_mut().for_each(|v| *v = relu(*v)),
            Activation::Tanh => v.iter_mut().for_each(|v| *v = v.tanh()),
        }
    }

    /// `g * act'(x)` for one value, from the output `y = act(x)`: the arithmetic of every
    /// first-order activation backward in this library.
    #[inline(always)]
    pub fn grad_from_output<T: Element>(self, g: T, y: T) -> T {
        match self {
            Activation::Sigmoid => g * y * (T::one() - y),
            // relu(x) <= 0 exactly where x <= 0, and relu(NaN) = NaN: the gradient passes
            // at NaN, as PyTorch's `threshold_backward` (`x <= 0 ? 0 : g`) passes it.
            Activation::Relu => {
                if y <= T::zero() {
                    T::zero()
                } else {
                    g
                }
            }
            Activation::Tanh => g * (T::one() - y * y),
        }
    }

    /// `g[i] = grad_from_output(g[i], y[i])` for every `i`, with the activation picked once
    /// outside the loop, so the loop vectorises.
    #[inline(always)]
    pub fn grad_from_output_slice<T: Element>(self, g: &mut [T], y: &[T]) {
        #[inline(always)]
        fn each<T: Element>(g: &mut [T], y: &[T], act: Activation) {
            g.iter_mut().zip(y).for_each(|(g, &y)| *g = act.grad_from_output(*g, y));
        }
        match self {
            Activation::Sigmoid => each(g, y, Activation::Sigmoid),
            Activation::Relu => each(g, y, Activation::Relu),
            Activation::Tanh => each(g, y, Activation::Tanh),
        }
    }

    /// `dy * act'(x)` from the output `y = act(x)`, in one pass and not recorded: the
    /// first-order backward of a fused op (the same arithmetic as the activation's own
    /// backward).
    pub fn backward_from_output(self, dy: &Tensor, y: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Sigmoid => binary_kernel::<SigmoidGradOp>("sigmoid_backward", dy, y),
            Activation::Relu => binary_kernel::<ReluGradOp>("relu_backward", dy, y),
            Activation::Tanh => binary_kernel::<TanhGradOp>("tanh_backward", dy, y),
        }
    }

    /// `dy * act'(z)` as recorded ops of the pre-activation `z`, for a backward pass that is
    /// itself differentiated.
    pub fn backward_from_input(self, dy: &Tensor, z: &Tensor) -> Result<Tensor> {
        let d = match self {
            Activation::Sigmoid => {
                let s = z.sigmoid();
                s.mul(&s.neg().add_scalar(1.0))?
            }
            Activation::Relu => z.relu_mask(),
            Activation::Tanh => {
                let t = z.tanh();
                t.mul(&t)?.neg().add_scalar(1.0)
            }
        };
        dy.mul(&d)
    }
}
