//! # autograd
//!
//! The core of the library: an n-dimensional [`Tensor`] (f32, f64, i64 or bool), the [`tape`]
//! that records every differentiable op, [`Parameter`]s, and the tensor algebra that
//! every other op is built from (element-wise maths with broadcasting, reductions, shape
//! ops and operators).
//!
//! ```
//! use autograd::Tensor;
//! let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3])?.requires_grad_();
//! let y = (&x * &x).sum(); // y = sum(x^2)
//! y.backward()?;
//! assert_eq!(x.grad().unwrap().to_vec::<f32>(), vec![2.0, 4.0, 6.0]);
//! # Ok::<(), autograd::Error>(())
//! ```

pub mod activation;
pub mod buffers;
pub mod compare;
pub mod creation;
pub mod display;
pub mod dtype;
pub mod elementwise;
pub mod error;
pub mod function;
pub mod gradcheck;
pub mod index;
pub mod integer;
pub mod math;
pub mod operators;
pub mod parallel;
pub mod param;
pub mod random;
pub mod reduce;
pub mod shape;
pub mod shape_ops;
pub mod stats;
pub mod tape;
pub mod tensor;
#[cfg(feature = "testing")]
pub mod testing;

pub use activation::Activation;
pub use dtype::{DType, Element, Scalar, Storage};
pub use error::{Error, Result};
pub use function::{apply, Function};
pub use gradcheck::{gradcheck, gradgradcheck, GradcheckOptions, GradcheckReport};
#[doc(hidden)]
pub use num_traits;
pub use parallel::{num_threads, set_num_threads, MAX_THREADS};
pub use param::Parameter;
pub use random::{manual_seed, rng, rng_state, set_rng_state, with_default_generator, Draws, Generator, Rng};
pub use shape::Shape;
pub use tape::{
    check_finite_graph, grad, is_anomaly_enabled, is_grad_enabled, no_grad, record, record_first_order, record_first_order_saving,
    record_saving, record_saving_with_internals, record_with_internals, set_detect_anomaly, BackwardCtx, BackwardOptions, Saves,
};
pub use tensor::Tensor;
