//! Flag values, validated in one place. The examples' clap value parsers (`parse_*`) call
//! the training loop's checks (`nn::train::settings`), and so does `--resume` for the
//! settings it reads back from a checkpoint, so a value is accepted or refused the same
//! way wherever it comes from. Each check returns a message without the flag's name: clap
//! adds the flag, and the resume path adds the file.

use std::fmt::Display;

/// What an example's run fails with: a usage error, which is the command line's (exit
/// status 2, as clap's own), or the library's error (1). Usage errors live here, not in
/// the library: a library call never has a command line to blame.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A flag that contradicts another or a saved run; the message ends `(try --help)`.
    #[error("{0} (try --help)")]
    Usage(String),
    #[error(transparent)]
    Failed(#[from] nn::Error),
}

impl From<autograd::Error> for RunError {
    fn from(e: autograd::Error) -> Self {
        RunError::Failed(e.into())
    }
}

impl RunError {
    /// The process's exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Usage(_) => 2,
            RunError::Failed(_) => 1,
        }
    }
}
use std::str::FromStr;

// The checks themselves are the training loop's (`nn::train::settings`), which also
// applies them to the settings a checkpoint holds.
pub use nn::train::settings::{
    count, epochs, factor, learning_rate, non_negative, seed, threads, whole, MAX_EPOCHS, MAX_SEED, MAX_THREADS,
};

/// clap value parser for `--epochs`.
pub fn parse_epochs(s: &str) -> Result<usize, String> {
    parse(s, epochs)
}

/// clap value parser for `--momentum`, `--weight-decay`.
pub fn parse_non_negative(s: &str) -> Result<f64, String> {
    parse(s, non_negative)
}

/// clap value parser for `--gamma`.
pub fn parse_factor(s: &str) -> Result<f64, String> {
    parse(s, factor)
}

/// Parses `s` as a `T` and applies `check`: the shape of every `parse_*` below.
fn parse<T: FromStr>(s: &str, check: fn(T) -> Result<T, String>) -> Result<T, String>
where
    T::Err: Display,
{
    check(s.parse::<T>().map_err(|e| format!("{e}"))?)
}

/// clap value parser for `--lr`.
pub fn parse_learning_rate(s: &str) -> Result<f64, String> {
    parse(s, learning_rate)
}

/// clap value parser for `--batch-size`, `--train-limit`, `--test-limit`, `--reps`.
pub fn parse_count(s: &str) -> Result<usize, String> {
    parse(s, count)
}

/// clap value parser for `--seed`.
pub fn parse_seed(s: &str) -> Result<u64, String> {
    parse(s, seed)
}

/// clap value parser for `--threads`.
pub fn parse_threads(s: &str) -> Result<usize, String> {
    parse(s, threads)
}
