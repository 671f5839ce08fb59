//! A run's checkpoint: the model's `state_dict` beside the `_train.*` entries, all by name
//! (see the [module docs](super)). Reading one back is done in two steps, each bounded by
//! the headers before any data is read: [`read_settings`] (a few small entries, to rebuild
//! the model and optimiser as the saved run had them), then [`Trainer::resume`].

use super::settings::{self, Settings};
use super::{EpochStats, Trainer};
use crate::error::{Error, Result};
use crate::io::{list_problems, load_checked, EntryInfo};
use autograd::{DType, Generator, Tensor};
use std::path::Path;

const EPOCH: &str = "_train.epoch";
const HISTORY: &str = "_train.history";
const RNG: &str = "_train.rng";
const OPTIMIZER: &str = "_train.optimizer.";
const SCHEDULER: &str = "_train.scheduler.";

/// The entries of a checkpoint of `t` at its current epoch boundary.
pub(super) fn entries(t: &Trainer) -> Vec<(String, Tensor)> {
    let mut out = t.model.state_dict();
    out.push((EPOCH.into(), Tensor::scalar_dtype(t.epoch as f64, DType::F64)));
    // No timings: the file must not depend on how fast the machine was.
    let hist: Vec<f64> = t.history.iter().flat_map(|e| [e.loss, e.train_acc, e.test_acc]).collect();
    out.push((HISTORY.into(), Tensor::from_vec(hist, &[t.history.len(), 3]).expect("three numbers a row")));
    out.push((RNG.into(), t.rng.state_tensor()));
    out.extend(t.config.settings.entries());
    out.extend(t.optimizer.state_dict().into_iter().map(|(k, v)| (format!("{OPTIMIZER}{k}"), v)));
    if let Some((s, _)) = &t.scheduler {
        out.extend(s.state_dict().into_iter().map(|(k, v)| (format!("{SCHEDULER}{k}"), v)));
    }
    out
}

/// The settings a checkpoint was saved with (only the `_train.setting.*` entries are read;
/// each must be a number or a short text).
pub fn read_settings(path: &Path) -> Result<Settings> {
    let entries = load_checked(path, |infos| {
        let mut keep = Vec::with_capacity(infos.len());
        for i in infos {
            let is_setting = i.name.starts_with(settings::PREFIX);
            if is_setting && !Settings::header_ok(i.dtype, &i.shape) {
                return Err(format!("'{}' is neither a number nor a short text", i.name));
            }
            keep.push(is_setting);
        }
        Ok(keep)
    })?;
    Settings::from_entries(&entries).map_err(|m| Error::Checkpoint { path: path.to_path_buf(), message: m })
}

/// What a checkpoint's headers must be for `t`: the model's entries with their shapes, the
/// `_train` entries with theirs (at most [`settings::MAX_EPOCHS`] history rows), optimiser
/// and scheduler state shaped as `t`'s own would be, settings small; nothing else. So a
/// file cannot make a resume read more than about four models.
fn check_headers(t: &Trainer, infos: &[EntryInfo]) -> std::result::Result<Vec<bool>, String> {
    let model = crate::module::expected_shapes(t.model);
    let sched: Vec<(String, Vec<usize>)> =
        t.scheduler.iter().flat_map(|(s, _)| s.state_dict()).map(|(k, v)| (k, v.shape().to_vec())).collect();
    let mut problems = Vec::new();
    for info in infos {
        let (name, shape) = (info.name.as_str(), info.shape.as_slice());
        let ok = match name {
            EPOCH => shape.is_empty(),
            HISTORY => matches!(shape, [rows, 3] if *rows <= settings::MAX_EPOCHS),
            RNG => info.dtype == DType::I64 && shape == [2],
            _ if name.starts_with(settings::PREFIX) => Settings::header_ok(info.dtype, shape),
            _ => match (name.strip_prefix(OPTIMIZER), name.strip_prefix(SCHEDULER)) {
                (Some(k), _) => t.optimizer.entry_shape(k).is_some_and(|s| s == shape),
                (_, Some(k)) => sched.iter().any(|(n, s)| n == k && s == shape),
                _ => model.iter().any(|(n, s)| n == name && s == shape),
            },
        };
        if !ok {
            problems.push(format!("unexpected entry '{name}' of shape {}", autograd::error::fmt_shape(shape)));
        }
    }
    match problems.is_empty() {
        true => Ok(vec![true; infos.len()]),
        false => Err(format!("not a checkpoint of this run: {}", list_problems(&problems))),
    }
}

/// Reads `path` into `t` (see [`Trainer::resume`]): everything is read and checked before
/// anything is changed.
pub(super) fn resume(t: &mut Trainer, path: &Path) -> Result<()> {
    let entries = load_checked(path, |infos| check_headers(t, infos))?;
    let bad = |m: String| Error::Checkpoint { path: path.to_path_buf(), message: format!("not a resumable checkpoint: {m}") };
    let get = |k: &str| entries.iter().find(|(n, _)| n == k).map(|(_, t)| t).ok_or_else(|| bad(format!("no '{k}' entry")));
    let saved = |what: &'static str| move |m: String| bad(format!("saved {what} {m}"));
    let epoch: usize = settings::whole(get(EPOCH)?.to_vec::<f64>()[0]).and_then(settings::epochs).map_err(saved("epoch"))?;
    let h = get(HISTORY)?.to_vec::<f64>();
    if h.len() / 3 != epoch {
        return Err(bad(format!("'{HISTORY}' has {} rows for {epoch} epochs", h.len() / 3)));
    }
    let rng = Generator::from_state_tensor(get(RNG)?).map_err(|e| bad(e.to_string()))?;
    let settings = Settings::from_entries(&entries).map_err(&bad)?;
    // The data order is a function of (seed, epoch) and the batch size: another of either
    // would silently make another run.
    for key in ["seed", "batch_size"] {
        let (now, then) = (t.config.settings.get(key), settings.get(key));
        if let (Some(now), Some(then)) = (now, then) {
            if now != then {
                return Err(bad(format!("it was saved with {key} {then}, this run has {now}")));
            }
        }
    }
    // A data-parallel run's order of updates depends on its number of processes (a file
    // without the setting was saved by one).
    let world = |s: &Settings| match s.get(super::WORLD_SIZE) {
        Some(settings::Value::Number(n)) => *n,
        _ => 1.0,
    };
    let (now, then) = (world(&t.config.settings), world(&settings));
    if now != then {
        return Err(bad(format!("it was saved by a run of {then} processes, this run has {now}: resume with the same number of ranks")));
    }
    // A NaN or infinite optimiser moment would turn the weights NaN at the first step.
    let opt_state: Vec<(String, Tensor)> =
        entries.iter().filter_map(|(k, t)| k.strip_prefix(OPTIMIZER).map(|k| (k.to_string(), t.clone()))).collect();
    for (k, v) in &opt_state {
        if let Some((i, x)) = crate::module::first_non_finite(v) {
            return Err(bad(format!("'{OPTIMIZER}{k}' holds {x} at index {i} (a non-finite value)")));
        }
    }
    let sched_state: Vec<(String, Tensor)> =
        entries.iter().filter_map(|(k, t)| k.strip_prefix(SCHEDULER).map(|k| (k.to_string(), t.clone()))).collect();
    if t.scheduler.is_some() == sched_state.is_empty() {
        return Err(bad("the saved run's learning-rate scheduler differs from this one's".into()));
    }
    let model: Vec<(String, Tensor)> = entries.iter().filter(|(k, _)| !k.starts_with("_train.")).cloned().collect();

    // Everything is read and checked; each load below checks its part before changing it,
    // in an order where a failure leaves the model, then the optimiser, untouched.
    let in_file = |e: Error| Error::Checkpoint { path: path.to_path_buf(), message: e.to_string() };
    let before = (t.model.state_dict(), t.optimizer.state_dict());
    t.model.load_state_dict(&model).map_err(in_file)?;
    let restore_model = |t: &mut Trainer, e: Error| {
        let _ = t.model.load_state_dict(&before.0);
        in_file(e)
    };
    if let Err(e) = t.optimizer.load_state_dict(&opt_state) {
        return Err(restore_model(t, e));
    }
    if let Some((s, _)) = &mut t.scheduler {
        if let Err(e) = s.load_state_dict(&sched_state) {
            let _ = t.optimizer.load_state_dict(&before.1);
            return Err(restore_model(t, e));
        }
    }
    t.epoch = epoch;
    t.history = h.chunks(3).map(|e| EpochStats { loss: e[0], train_acc: e[1], test_acc: e[2], examples_per_sec: f64::NAN }).collect();
    t.rng = rng;
    // Settings the caller did not set are kept from the file.
    for (k, v) in settings.iter() {
        if t.config.settings.get(k).is_none() {
            t.config.settings.set(k, v.clone());
        }
    }
    Ok(())
}
