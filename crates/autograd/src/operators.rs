//! `+ - * /` and unary `-` on tensor references (and on tensors by value, and with f64
//! scalars on the right). They are sugar over the methods: **they panic** with the method's
//! error message on a shape or dtype mismatch. Use `a.add(&b)?` where the shapes come
//! from user input.

use crate::tensor::Tensor;
use std::ops::{Add, Div, Mul, Neg, Sub};

fn ok(r: crate::Result<Tensor>) -> Tensor {
    r.unwrap_or_else(|e| panic!("{e}"))
}

macro_rules! binary_operator {
    ($trait:ident, $method:ident, $scalar:expr) => {
        impl $trait<&Tensor> for &Tensor {
            type Output = Tensor;
            fn $method(self, rhs: &Tensor) -> Tensor {
                ok(Tensor::$method(self, rhs))
            }
        }
        impl $trait<Tensor> for Tensor {
            type Output = Tensor;
            fn $method(self, rhs: Tensor) -> Tensor {
                ok(Tensor::$method(&self, &rhs))
            }
        }
        impl $trait<&Tensor> for Tensor {
            type Output = Tensor;
            fn $method(self, rhs: &Tensor) -> Tensor {
                ok(Tensor::$method(&self, rhs))
            }
        }
        impl $trait<Tensor> for &Tensor {
            type Output = Tensor;
            fn $method(self, rhs: Tensor) -> Tensor {
                ok(Tensor::$method(self, &rhs))
            }
        }
        impl $trait<f64> for &Tensor {
            type Output = Tensor;
            fn $method(self, rhs: f64) -> Tensor {
                let f: fn(&Tensor, f64) -> Tensor = $scalar;
                f(self, rhs)
            }
        }
        impl $trait<f64> for Tensor {
            type Output = Tensor;
            fn $method(self, rhs: f64) -> Tensor {
                let f: fn(&Tensor, f64) -> Tensor = $scalar;
                f(&self, rhs)
            }
        }
    };
}

binary_operator!(Add, add, |t, c| t.add_scalar(c));
binary_operator!(Sub, sub, |t, c| t.add_scalar(-c));
binary_operator!(Mul, mul, |t, c| t.mul_scalar(c));
binary_operator!(Div, div, |t, c| t.mul_scalar(1.0 / c));

impl Neg for &Tensor {
    type Output = Tensor;
    fn neg(self) -> Tensor {
        Tensor::neg(self)
    }
}
impl Neg for Tensor {
    type Output = Tensor;
    fn neg(self) -> Tensor {
        Tensor::neg(&self)
    }
}
