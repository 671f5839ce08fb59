//! Flag values, validated in one place. The examples' clap value parsers (`parse_*`) call
//! these checks, and so does `lenet --resume` for the settings it reads back from a
//! checkpoint, so a value is accepted or refused the same way wherever it comes from.
//! Each check returns a message without the flag's name: clap adds the flag, and the
//! resume path adds the file.

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

/// The most threads `--threads` accepts: far above any core count, low enough that a typo
/// does not spawn millions of threads (`autograd::set_num_threads` refuses more, too).
pub const MAX_THREADS: usize = autograd::MAX_THREADS;

/// The most epochs `--epochs` accepts (and a checkpoint may hold): the saved history has a
/// row per epoch, so this bounds what a resumed file may make us read.
pub const MAX_EPOCHS: usize = 1_000_000;

/// An epoch count in `0..=MAX_EPOCHS`.
pub fn epochs(n: usize) -> Result<usize, String> {
    if n <= MAX_EPOCHS {
        Ok(n)
    } else {
        Err(format!("expects a whole number from 0 to {MAX_EPOCHS}, got {n}"))
    }
}

/// clap value parser for `--epochs`.
pub fn parse_epochs(s: &str) -> Result<usize, String> {
    parse(s, epochs)
}

/// A learning rate: finite and > 0.
pub fn learning_rate(x: f64) -> Result<f64, String> {
    if x.is_finite() && x > 0.0 {
        Ok(x)
    } else {
        Err(format!("expects a finite number > 0, got {x}"))
    }
}

/// A count that must be at least 1: batch size, data limits, repetitions.
pub fn count(n: usize) -> Result<usize, String> {
    if n >= 1 {
        Ok(n)
    } else {
        Err(format!("expects a whole number >= 1, got {n}"))
    }
}

/// A thread count in `1..=MAX_THREADS`.
pub fn threads(n: usize) -> Result<usize, String> {
    if (1..=MAX_THREADS).contains(&n) {
        Ok(n)
    } else {
        Err(format!("expects a whole number from 1 to {MAX_THREADS}, got {n}"))
    }
}

/// The largest seed: 2^53, so a seed survives the round trip through a checkpoint, which
/// stores settings as f64 (a larger one would resume with a different seed).
pub const MAX_SEED: u64 = 1 << 53;

/// A seed in `0..=MAX_SEED`.
pub fn seed(n: u64) -> Result<u64, String> {
    if n <= MAX_SEED {
        Ok(n)
    } else {
        Err(format!("expects a whole number from 0 to {MAX_SEED}, got {n}"))
    }
}

/// A whole number stored as f64 (checkpoints keep settings as f64) that fits `T`; the
/// checks above then apply to the result.
pub fn whole<T: TryFrom<u64>>(x: f64) -> Result<T, String> {
    if !(x.is_finite() && x >= 0.0 && x.fract() == 0.0) {
        return Err(format!("expects a non-negative whole number, got {x}"));
    }
    let too_large = || format!("is too large: {x}");
    // 2^64: the first whole f64 that does not fit in a u64.
    if x >= 18_446_744_073_709_551_616.0 {
        return Err(too_large());
    }
    T::try_from(x as u64).map_err(|_| too_large())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_accept_and_refuse_the_documented_ranges() {
        assert_eq!(parse_learning_rate("0.5"), Ok(0.5));
        for bad in ["0", "-1", "inf", "NaN", "x"] {
            assert!(parse_learning_rate(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_count("1"), Ok(1));
        assert!(parse_count("0").is_err());
        assert_eq!(parse_threads("1024"), Ok(1024));
        assert!(parse_threads("0").is_err() && parse_threads("1025").is_err());
        assert_eq!(parse_seed("9007199254740992"), Ok(MAX_SEED));
        assert!(parse_seed("9007199254740993").is_err());
        assert_eq!(whole::<usize>(256.0), Ok(256));
        assert_eq!(whole::<u64>(9_007_199_254_740_992.0), Ok(1 << 53));
        for bad in [-1.0, 0.5, f64::NAN, f64::INFINITY] {
            assert!(whole::<u64>(bad).unwrap_err().contains("whole number"), "{bad}");
        }
        assert!(whole::<u64>(18_446_744_073_709_551_616.0).unwrap_err().contains("too large"));
        assert!(whole::<u8>(256.0).unwrap_err().contains("too large"));
    }
}
