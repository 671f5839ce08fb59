//! A run's settings, by name, and the checks every value passes: a command-line flag and the
//! same setting read back from a checkpoint go through one function, so a value is
//! accepted or refused the same way wherever it comes from. Each check returns a message
//! without the setting's name (clap adds the flag; a resume adds the file).

use autograd::Tensor;

/// The most epochs a run may have (and a checkpoint's history may hold): the history has a
/// row per epoch, so this bounds what a resumed file may make us read.
pub const MAX_EPOCHS: usize = 1_000_000;

/// The largest seed: 2^53, so a seed survives the round trip through a checkpoint, which
/// stores numbers as f64.
pub const MAX_SEED: u64 = 1 << 53;

/// The most threads a run accepts (`autograd::set_num_threads` refuses more, too).
pub const MAX_THREADS: usize = autograd::MAX_THREADS;

/// An epoch count in `0..=MAX_EPOCHS`.
pub fn epochs(n: usize) -> Result<usize, String> {
    if n <= MAX_EPOCHS {
        Ok(n)
    } else {
        Err(format!("expects a whole number from 0 to {MAX_EPOCHS}, got {n}"))
    }
}

/// A learning rate: finite and > 0.
pub fn learning_rate(x: f64) -> Result<f64, String> {
    if x.is_finite() && x > 0.0 {
        Ok(x)
    } else {
        Err(format!("expects a finite number > 0, got {x}"))
    }
}

/// A finite number >= 0: momentum, weight decay, a clipping norm of 0 (off).
pub fn non_negative(x: f64) -> Result<f64, String> {
    if x.is_finite() && x >= 0.0 {
        Ok(x)
    } else {
        Err(format!("expects a finite number >= 0, got {x}"))
    }
}

/// A factor in `(0, 1]`: a scheduler's gamma.
pub fn factor(x: f64) -> Result<f64, String> {
    if x.is_finite() && x > 0.0 && x <= 1.0 {
        Ok(x)
    } else {
        Err(format!("expects a number in (0, 1], got {x}"))
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

/// A seed in `0..=MAX_SEED`.
pub fn seed(n: u64) -> Result<u64, String> {
    if n <= MAX_SEED {
        Ok(n)
    } else {
        Err(format!("expects a whole number from 0 to {MAX_SEED}, got {n}"))
    }
}

/// A whole number stored as f64 (checkpoints keep numbers as f64) that fits `T`; the checks
/// above then apply to the result.
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

/// One setting's value: a number (f64, exact for whole numbers up to 2^53) or a text (a
/// choice such as an optimiser's name, or a list).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    Text(String),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Number(x) => write!(f, "{x}"),
            Value::Text(s) => write!(f, "{s}"),
        }
    }
}

/// The longest text a setting may hold (a checkpoint's entry is refused before it is read
/// if larger).
pub const MAX_TEXT: usize = 4096;

/// A run's settings in the order they were set: what a checkpoint saves so that a resumed
/// run is the same run. Stored as `_train.setting.{name}` entries: a number as an f64
/// scalar, a text as its UTF-8 bytes in an i64 vector.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings(Vec<(String, Value)>);

/// The checkpoint entries' prefix.
pub const PREFIX: &str = "_train.setting.";

impl Settings {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets (or replaces) a number.
    pub fn number(mut self, name: &str, x: f64) -> Self {
        self.set(name, Value::Number(x));
        self
    }

    /// Sets (or replaces) a text.
    pub fn text(mut self, name: &str, s: impl Into<String>) -> Self {
        self.set(name, Value::Text(s.into()));
        self
    }

    pub fn set(&mut self, name: &str, v: Value) {
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = v,
            None => self.0.push((name.to_string(), v)),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The number `name`, or a message if it is missing or a text.
    pub fn get_number(&self, name: &str) -> Result<f64, String> {
        match self.get(name) {
            Some(Value::Number(x)) => Ok(*x),
            Some(Value::Text(_)) => Err(format!("setting '{name}' is a text, expected a number")),
            None => Err(format!("no setting '{name}'")),
        }
    }

    /// The text `name`, or a message if it is missing or a number.
    pub fn get_text(&self, name: &str) -> Result<&str, String> {
        match self.get(name) {
            Some(Value::Text(s)) => Ok(s),
            Some(Value::Number(_)) => Err(format!("setting '{name}' is a number, expected a text")),
            None => Err(format!("no setting '{name}'")),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v))
    }

    /// The checkpoint entries.
    pub fn entries(&self) -> Vec<(String, Tensor)> {
        self.0
            .iter()
            .map(|(n, v)| {
                let t = match v {
                    Value::Number(x) => Tensor::scalar_dtype(*x, autograd::DType::F64),
                    Value::Text(s) => {
                        let bytes: Vec<i64> = s.bytes().map(i64::from).collect();
                        let len = bytes.len();
                        Tensor::from_vec(bytes, &[len]).expect("a vector of its own length")
                    }
                };
                (format!("{PREFIX}{n}"), t)
            })
            .collect()
    }

    /// Whether an entry's header may be a setting: a scalar number, or a text of at most
    /// [`MAX_TEXT`] bytes.
    pub fn header_ok(dtype: autograd::DType, shape: &[usize]) -> bool {
        match dtype {
            autograd::DType::I64 => matches!(shape, [n] if *n <= MAX_TEXT),
            d => d.is_float() && shape.is_empty(),
        }
    }

    /// The settings among a checkpoint's entries (others are ignored).
    pub fn from_entries(entries: &[(String, Tensor)]) -> Result<Settings, String> {
        let mut out = Settings::new();
        for (k, t) in entries {
            let Some(name) = k.strip_prefix(PREFIX) else { continue };
            if !Self::header_ok(t.dtype(), t.shape()) {
                return Err(format!("'{k}' is neither a number nor a text"));
            }
            let v = match t.dtype() {
                autograd::DType::I64 => {
                    let bytes: Vec<u8> = t
                        .to_vec::<i64>()
                        .into_iter()
                        .map(u8::try_from)
                        .collect::<Result<_, _>>()
                        .map_err(|_| format!("'{k}' is not text"))?;
                    Value::Text(String::from_utf8(bytes).map_err(|_| format!("'{k}' is not UTF-8 text"))?)
                }
                _ => Value::Number(t.to_vec::<f64>()[0]),
            };
            out.set(name, v);
        }
        Ok(out)
    }

    /// The first setting among `given` (the names set explicitly now, e.g. on the command
    /// line) whose value here differs from `saved`'s: `(name, now, saved)`. A resumed run
    /// refuses such a contradiction rather than silently changing the run.
    pub fn contradiction<'a>(&'a self, saved: &'a Settings, given: &[&str]) -> Option<(&'a str, &'a Value, &'a Value)> {
        self.iter().filter(|(n, _)| given.contains(n)).find_map(|(n, now)| match saved.get(n) {
            Some(s) if s != now => Some((n, now, s)),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_accept_and_refuse_the_documented_ranges() {
        assert_eq!(learning_rate(0.5), Ok(0.5));
        for bad in [0.0, -1.0, f64::INFINITY, f64::NAN] {
            assert!(learning_rate(bad).is_err(), "{bad}");
        }
        assert!(count(1).is_ok() && count(0).is_err());
        assert!(threads(1024).is_ok() && threads(0).is_err() && threads(1025).is_err());
        assert_eq!(seed(MAX_SEED), Ok(MAX_SEED));
        assert!(seed(MAX_SEED + 1).is_err());
        assert!(factor(1.0).is_ok() && factor(0.0).is_err() && factor(1.5).is_err());
        assert!(non_negative(0.0).is_ok() && non_negative(-0.1).is_err() && non_negative(f64::NAN).is_err());
        assert_eq!(whole::<usize>(256.0), Ok(256));
        assert_eq!(whole::<u64>(9_007_199_254_740_992.0), Ok(1 << 53));
        for bad in [-1.0, 0.5, f64::NAN, f64::INFINITY] {
            assert!(whole::<u64>(bad).unwrap_err().contains("whole number"), "{bad}");
        }
        assert!(whole::<u64>(18_446_744_073_709_551_616.0).unwrap_err().contains("too large"));
        assert!(whole::<u8>(256.0).unwrap_err().contains("too large"));
    }

    #[test]
    fn settings_round_trip_through_entries_and_find_contradictions() {
        let s = Settings::new().number("lr", 0.1).text("optimizer", "adamw").number("seed", MAX_SEED as f64).text("empty", "");
        let back = Settings::from_entries(&s.entries()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.get_text("optimizer"), Ok("adamw"));
        assert!(back.get_number("optimizer").is_err() && back.get_text("nothing").is_err());
        let now = Settings::new().number("lr", 0.2).text("optimizer", "adamw");
        assert_eq!(now.contradiction(&s, &["optimizer"]), None);
        let (name, a, b) = now.contradiction(&s, &["lr", "optimizer"]).unwrap();
        assert_eq!((name, a.to_string(), b.to_string()), ("lr", "0.2".to_string(), "0.1".to_string()));
        let bad = vec![(format!("{PREFIX}x"), Tensor::from_vec(vec![300i64], &[1]).unwrap())];
        assert!(Settings::from_entries(&bad).unwrap_err().contains("not text"));
    }
}
