//! Element types. Training runs in f32; gradient checks run in f64; labels, indices and
//! counters (`num_batches_tracked`) are i64; masks and comparison results are bool.
//! Tensors carry their dtype at run time (like PyTorch), so one graph can mix f32 and f64
//! through a differentiable cast. Only the float dtypes take part in differentiation.

use std::fmt;

/// Run-time element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F64,
    I64,
    Bool,
}

impl DType {
    /// Whether tensors of this dtype can require grad and go through the float kernels.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64)
    }
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 | DType::I64 => 8,
            DType::Bool => 1,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::I64 => "i64",
            DType::Bool => "bool",
        })
    }
}

/// The buffer behind a tensor. Views share it through an `Arc`. Dropping a float buffer
/// hands it to the recycling cache (`buffers.rs`).
#[derive(Debug, Clone)]
pub enum Storage {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    Bool(Vec<bool>),
}

impl Drop for Storage {
    fn drop(&mut self) {
        match self {
            Storage::F32(v) => crate::buffers::recycle(std::mem::take(v)),
            Storage::F64(v) => crate::buffers::recycle(std::mem::take(v)),
            Storage::I64(_) | Storage::Bool(_) => {}
        }
    }
}

impl Storage {
    pub fn dtype(&self) -> DType {
        match self {
            Storage::F32(_) => DType::F32,
            Storage::F64(_) => DType::F64,
            Storage::I64(_) => DType::I64,
            Storage::Bool(_) => DType::Bool,
        }
    }
    pub fn len(&self) -> usize {
        crate::dispatch_all!(self, |v: T| v.len())
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Any element type a tensor can hold: what copying, viewing, converting and printing
/// need. The float kernels need more ([`Element`]).
pub trait Scalar: Copy + Send + Sync + Default + PartialEq + PartialOrd + fmt::Debug + 'static {
    const DTYPE: DType;
    fn slice(s: &Storage) -> Option<&[Self]>;
    fn slice_mut(s: &mut Storage) -> Option<&mut Vec<Self>>;
    fn into_storage(v: Vec<Self>) -> Storage;
    /// The value as f64 (bool as 0 or 1; i64 rounded past 2^53).
    fn to_f64(self) -> f64;
    /// The nearest value of this type: floats round, i64 truncates toward zero and
    /// saturates (NaN gives 0), bool is `v != 0`. For exact, checked conversions use
    /// [`crate::Tensor::try_to_dtype`].
    fn from_f64(v: f64) -> Self;
}

macro_rules! impl_scalar {
    ($t:ty, $variant:ident, |$x:ident| $to_f64:expr, |$y:ident| $from_f64:expr) => {
        impl Scalar for $t {
            const DTYPE: DType = DType::$variant;
            fn slice(s: &Storage) -> Option<&[Self]> {
                match s {
                    Storage::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn slice_mut(s: &mut Storage) -> Option<&mut Vec<Self>> {
                match s {
                    Storage::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn into_storage(v: Vec<Self>) -> Storage {
                Storage::$variant(v)
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                let $x = self;
                $to_f64
            }
            #[inline(always)]
            fn from_f64(v: f64) -> Self {
                let $y = v;
                $from_f64
            }
        }
    };
}
impl_scalar!(f32, F32, |x| x as f64, |v| v as f32);
impl_scalar!(f64, F64, |x| x, |v| v);
impl_scalar!(i64, I64, |x| x as f64, |v| v as i64);
impl_scalar!(bool, Bool, |x| if x { 1.0 } else { 0.0 }, |v| v != 0.0);

/// A float element type the kernels are generic over (f32 or f64).
pub trait Element:
    Scalar
    + num_traits::Float
    + num_traits::FloatConst
    + fmt::Display
    + std::iter::Sum
    + std::ops::AddAssign
    + std::ops::MulAssign
    + crate::buffers::Cached
{
    /// The logistic function, vectorisable in f32 (see `math.rs`), exact libm maths in f64.
    fn sigmoid(self) -> Self;
}

macro_rules! impl_element {
    ($t:ty, $sigmoid:expr) => {
        impl Element for $t {
            #[inline(always)]
            fn sigmoid(self) -> Self {
                let f: fn($t) -> $t = $sigmoid;
                f(self)
            }
        }
    };
}
impl_element!(f32, crate::math::sigmoid_f32);
impl_element!(f64, |v: f64| if v >= 0.0 { 1.0 / (1.0 + (-v).exp()) } else { v.exp() / (1.0 + v.exp()) });

/// Runs `$body` with `$v` bound to the typed slice of a float storage and `$T` to its
/// element type (an [`Element`]); on an i64 or bool storage the enclosing function returns
/// `Err(Error::UnsupportedDType { op: $op, .. })`. The dtype is matched once per op, never
/// per element.
#[macro_export]
#[doc(hidden)]
macro_rules! dispatch {
    ($op:expr, $storage:expr, |$v:ident : $T:ident| $body:expr) => {
        match $storage {
            s @ ($crate::Storage::F32(_) | $crate::Storage::F64(_)) => $crate::dispatch_float!(s, |$v: $T| $body),
            other => return Err($crate::Error::UnsupportedDType { op: $op, dtype: other.dtype() }.into()),
        }
    };
}

/// Runs `$body` with `$v` bound to the typed slice of any storage and `$T` to its element
/// type (a [`Scalar`]): for code that only moves, compares or converts elements.
#[macro_export]
#[doc(hidden)]
macro_rules! dispatch_all {
    ($storage:expr, |$v:ident : $T:ident| $body:expr) => {
        match $storage {
            $crate::Storage::F32($v) => {
                #[allow(dead_code)]
                type $T = f32;
                #[allow(unused_imports)]
                use $crate::Scalar as _;
                $body
            }
            $crate::Storage::F64($v) => {
                #[allow(dead_code)]
                type $T = f64;
                #[allow(unused_imports)]
                use $crate::Scalar as _;
                $body
            }
            $crate::Storage::I64($v) => {
                #[allow(dead_code)]
                type $T = i64;
                #[allow(unused_imports)]
                use $crate::Scalar as _;
                $body
            }
            $crate::Storage::Bool($v) => {
                #[allow(dead_code)]
                type $T = bool;
                #[allow(unused_imports)]
                use $crate::Scalar as _;
                $body
            }
        }
    };
}

/// [`dispatch!`] for a storage the caller has already checked is float (and in code that
/// cannot return an error): an i64 or bool storage here is a bug in that caller. It holds
/// the float arms [`dispatch!`] runs too.
#[macro_export]
#[doc(hidden)]
macro_rules! dispatch_float {
    ($storage:expr, |$v:ident : $T:ident| $body:expr) => {
        match $storage {
            $crate::Storage::F32($v) => {
                #[allow(dead_code)]
                type $T = f32;
                #[allow(unused_imports)]
                use $crate::num_traits::{Float as _, One as _, Zero as _};
                #[allow(unused_imports)]
                use $crate::{Element as _, Scalar as _};
                $body
            }
            $crate::Storage::F64($v) => {
                #[allow(dead_code)]
                type $T = f64;
                #[allow(unused_imports)]
                use $crate::num_traits::{Float as _, One as _, Zero as _};
                #[allow(unused_imports)]
                use $crate::{Element as _, Scalar as _};
                $body
            }
            other => unreachable!("float kernel reached with a {} storage", other.dtype()),
        }
    };
}
