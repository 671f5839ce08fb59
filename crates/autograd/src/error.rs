//! The one error type of the library. Every message names the op that failed and the
//! shapes or parameters involved, so a user can find the offending line without a debugger.

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Formats a shape the way PyTorch users read it: `[2, 3]`. More than 8 dims (a hostile
/// file can declare thousands) print abbreviated: `[1, 2, 3, 4, ..., 9, 10] (10 dims)`.
pub fn fmt_shape(s: &[usize]) -> String {
    let join = |d: &[usize]| d.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ");
    if s.len() <= 8 {
        return format!("[{}]", join(s));
    }
    format!("[{}, ..., {}] ({} dims)", join(&s[..4]), join(&s[s.len() - 2..]), s.len())
}

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum Error {
    /// Two operands whose shapes cannot be combined (broadcasting, matmul, cat, ...).
    #[error("{op}: {msg} ({} and {})", fmt_shape(.lhs), fmt_shape(.rhs))]
    ShapeMismatch { op: &'static str, msg: String, lhs: Vec<usize>, rhs: Vec<usize> },
    /// A shape argument that is invalid for the input (reshape, narrow, expand, ...).
    #[error("{op}: {msg} (input shape {})", fmt_shape(.shape))]
    InvalidShape { op: &'static str, msg: String, shape: Vec<usize> },
    /// A dimension index out of range for the tensor's rank.
    #[error("{op}: dimension {dim} out of range for a tensor of rank {rank}")]
    DimOutOfRange { op: &'static str, dim: isize, rank: usize },
    /// Mixed element types in one op.
    #[error("{op}: dtype mismatch, {lhs} and {rhs}")]
    DTypeMismatch { op: &'static str, lhs: crate::DType, rhs: crate::DType },
    /// An op given a dtype it does not take (a float op on an i64 or bool tensor, say).
    #[error("{op}: not implemented for dtype {dtype}")]
    UnsupportedDType { op: &'static str, dtype: crate::DType },
    /// Any other invalid argument (empty cat, zero stride, bad value, ...).
    #[error("{op}: {msg}")]
    InvalidArgument { op: &'static str, msg: String },
    /// A size, element count, byte size, offset or stride that does not fit in memory's
    /// address range: the op refuses it rather than let the arithmetic wrap.
    #[error("{op}: size overflow: {msg}")]
    SizeOverflow { op: &'static str, msg: String },
    /// `backward` on a tensor with more than one element and no seed gradient.
    #[error("backward: grad can be implicitly created only for scalar outputs, got shape {}; pass a seed gradient", fmt_shape(.0))]
    NonScalarBackward(Vec<usize>),
    /// `backward` on a tensor that is not part of any graph.
    #[error("backward: tensor does not require grad and has no grad_fn")]
    NoGraph,
    /// A second walk through a graph whose saved values were already freed.
    #[error("backward: trying to backward through the graph a second time (op {op} at tape position {seq}); its saved values were freed after the first backward. Pass retain_graph = true the first time")]
    GraphConsumed { op: &'static str, seq: u64 },
    /// Double backward through an op that only has a first-order rule.
    #[error("double backward through {op} is not implemented: its gradient rule is first-order only")]
    NoSecondOrder { op: &'static str },
    /// Anomaly mode found a NaN or infinity.
    #[error("anomaly: {op} (position {position} on the tape): {what}")]
    Anomaly { op: &'static str, position: usize, what: String },
    /// A gradient rule returned something inconsistent with its inputs (a bug in that rule).
    #[error("backward of {op}: {msg}")]
    BadGradient { op: &'static str, msg: String },
}

impl Error {
    pub(crate) fn shape(op: &'static str, msg: impl Into<String>, lhs: &[usize], rhs: &[usize]) -> Self {
        Error::ShapeMismatch { op, msg: msg.into(), lhs: lhs.into(), rhs: rhs.into() }
    }
    pub(crate) fn invalid_shape(op: &'static str, msg: impl Into<String>, shape: &[usize]) -> Self {
        Error::InvalidShape { op, msg: msg.into(), shape: shape.into() }
    }
    /// An invalid-argument error; public so downstream crates (ops, nn) report alike.
    pub fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        Error::InvalidArgument { op, msg: msg.into() }
    }
    /// A size-overflow error; public for downstream crates.
    pub fn overflow(op: &'static str, msg: impl Into<String>) -> Self {
        Error::SizeOverflow { op, msg: msg.into() }
    }
    /// A shape-mismatch error between two operands; public for downstream crates.
    pub fn mismatch(op: &'static str, msg: impl Into<String>, lhs: &[usize], rhs: &[usize]) -> Self {
        Self::shape(op, msg, lhs, rhs)
    }
}
