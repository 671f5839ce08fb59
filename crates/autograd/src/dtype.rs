//! Element types. Training runs in f32; gradient checks run in f64. Tensors carry their
//! dtype at run time (like PyTorch), so one graph can mix both through a differentiable cast.

use std::fmt;

/// Run-time element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F64,
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
        })
    }
}

/// The buffer behind a tensor. Views share it through an `Arc`. Dropping it hands the
/// buffer to the recycling cache (`buffers.rs`).
#[derive(Debug, Clone)]
pub enum Storage {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl Drop for Storage {
    fn drop(&mut self) {
        match self {
            Storage::F32(v) => crate::buffers::recycle(std::mem::take(v)),
            Storage::F64(v) => crate::buffers::recycle(std::mem::take(v)),
        }
    }
}

impl Storage {
    pub fn dtype(&self) -> DType {
        match self {
            Storage::F32(_) => DType::F32,
            Storage::F64(_) => DType::F64,
        }
    }
    pub fn len(&self) -> usize {
        match self {
            Storage::F32(v) => v.len(),
            Storage::F64(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A float element type the kernels are generic over (f32 or f64).
pub trait Element:
    num_traits::Float
    + num_traits::FloatConst
    + Copy
    + Send
    + Sync
    + Default
    + fmt::Debug
    + fmt::Display
    + std::iter::Sum
    + std::ops::AddAssign
    + std::ops::MulAssign
    + crate::buffers::Cached
    + 'static
{
    const DTYPE: DType;
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    fn slice(s: &Storage) -> Option<&[Self]>;
    fn slice_mut(s: &mut Storage) -> Option<&mut Vec<Self>>;
    fn into_storage(v: Vec<Self>) -> Storage;
    /// The logistic function, vectorisable in f32 (see `math.rs`), exact libm maths in f64.
    fn sigmoid(self) -> Self;
}

macro_rules! impl_element {
    ($t:ty, $variant:ident, $sigmoid:expr) => {
        impl Element for $t {
            const DTYPE: DType = DType::$variant;
            #[inline(always)]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
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
            fn sigmoid(self) -> Self {
                let f: fn($t) -> $t = $sigmoid;
                f(self)
            }
        }
    };
}
impl_element!(f32, F32, crate::math::sigmoid_f32);
impl_element!(f64, F64, |v: f64| if v >= 0.0 { 1.0 / (1.0 + (-v).exp()) } else { v.exp() / (1.0 + v.exp()) });

/// Runs `$body` with `$v` bound to the typed slice of a storage and `$T` to its element type.
#[macro_export]
#[doc(hidden)]
macro_rules! dispatch {
    ($storage:expr, |$v:ident : $T:ident| $body:expr) => {
        match $storage {
            $crate::Storage::F32($v) => {
                #[allow(dead_code)]
                type $T = f32;
                #[allow(unused_imports)]
                use $crate::num_traits::{Float as _, One as _, Zero as _};
                #[allow(unused_imports)]
                use $crate::Element as _;
                $body
            }
            $crate::Storage::F64($v) => {
                #[allow(dead_code)]
                type $T = f64;
                #[allow(unused_imports)]
                use $crate::num_traits::{Float as _, One as _, Zero as _};
                #[allow(unused_imports)]
                use $crate::Element as _;
                $body
            }
        }
    };
}
