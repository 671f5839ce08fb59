//! # nn
//!
//! Modules and training on top of `autograd` and `ops`: layers, initialisers, optimisers,
//! losses, data loading and checkpoints.

pub mod error;

pub use error::{Error, Result};
