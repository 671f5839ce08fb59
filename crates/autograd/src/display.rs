//! Prints tensors the way PyTorch does, so output from the book's scripts reads the same:
//! `tensor([[19., 25.],` / `        [37., 43.]])`.

use crate::dtype::DType;
use crate::tensor::Tensor;
use std::fmt;

const LINE_WIDTH: usize = 80;
const THRESHOLD: usize = 1000;
const EDGE_ITEMS: usize = 3;

/// How every element of one tensor is written (PyTorch's `_Formatter`).
struct Formatter {
    mode: Mode,
}

#[derive(Clone, Copy)]
enum Mode {
    Int,
    Fixed,
    Sci,
}

fn sci(v: f64) -> String {
    // Rust writes 1.0000e5; PyTorch writes 1.0000e+05.
    let s = format!("{v:.4e}");
    let (m, e) = s.split_once('e').unwrap();
    let e: i32 = e.parse().unwrap();
    format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
}

impl Formatter {
    fn new(values: &[f64]) -> Self {
        let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        let all_int = finite.iter().all(|v| v.fract() == 0.0);
        let nonzero: Vec<f64> = finite.iter().map(|v| v.abs()).filter(|&v| v != 0.0).collect();
        let (min, max) = nonzero.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let mode = if nonzero.is_empty() {
            if all_int {
                Mode::Int
            } else {
                Mode::Fixed
            }
        } else if all_int {
            if max > 1e8 {
                Mode::Sci
            } else {
                Mode::Int
            }
        } else if max / min > 1000.0 || max > 1e8 || min < 1e-4 {
            Mode::Sci
        } else {
            Mode::Fixed
        };
        Formatter { mode }
    }

    fn fmt(&self, v: f64) -> String {
        if v.is_nan() {
            return "nan".into();
        }
        if v.is_infinite() {
            return if v > 0.0 { "inf".into() } else { "-inf".into() };
        }
        match self.mode {
            Mode::Int => format!("{v:.0}."),
            Mode::Fixed => format!("{v:.4}"),
            Mode::Sci => sci(v),
        }
    }
}

/// One tensor being printed.
struct Printer<'a> {
    /// The padded text of the element at a row-major index.
    cell: &'a dyn Fn(usize) -> String,
    /// Width of every cell.
    width: usize,
    shape: &'a [usize],
    summarize: bool,
}

/// Writes dims `d..` of the block starting at `base`, PyTorch style.
fn write_block(out: &mut String, p: &Printer<'_>, d: usize, base: usize, indent: usize) {
    let (shape, summarize) = (p.shape, p.summarize);
    let rank = shape.len();
    let n = shape[d];
    let stride: usize = shape[d + 1..].iter().product();
    let shown: Vec<Option<usize>> = if summarize && n > 2 * EDGE_ITEMS {
        (0..EDGE_ITEMS).map(Some).chain(std::iter::once(None)).chain((n - EDGE_ITEMS..n).map(Some)).collect()
    } else {
        (0..n).map(Some).collect()
    };
    out.push('[');
    if d == rank - 1 {
        let per_line = ((LINE_WIDTH - indent) / (p.width + 2)).max(1);
        for (k, i) in shown.iter().enumerate() {
            if k > 0 {
                out.push(',');
                if k % per_line == 0 {
                    out.push('\n');
                    out.push_str(&" ".repeat(indent + 1));
                } else {
                    out.push(' ');
                }
            }
            match i {
                Some(i) => out.push_str(&(p.cell)(base + i)),
                None => out.push_str(" ..."),
            }
        }
    } else {
        let sep = format!(",{}{}", "\n".repeat(rank - d - 1), " ".repeat(indent + 1));
        for (k, i) in shown.iter().enumerate() {
            if k > 0 {
                out.push_str(&sep);
            }
            match i {
                Some(i) => write_block(out, p, d + 1, base + i * stride, indent + 1),
                None => out.push_str("..."),
            }
        }
    }
    out.push(']');
}

fn camel(name: &str) -> String {
    name.split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
        })
        .collect()
}

impl fmt::Display for Tensor {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values are read where they are shown, never copied out whole: a summarised print
        // of a huge (say expanded) view touches only its edges.
        let layout = self.layout();
        let storage = self.storage();
        let pos = |flat: usize| {
            let mut rest = flat;
            let mut pos = layout.offset;
            for (&n, &st) in layout.shape.iter().zip(&layout.strides).rev() {
                pos += rest % n * st;
                rest /= n;
            }
            pos
        };
        let numel = self.numel();
        let summarize = numel > THRESHOLD;
        let shown: Vec<usize> = if summarize { summary_indices(self.shape()) } else { (0..numel).collect() };
        // The unpadded text of one element: floats in PyTorch's shared format, integers
        // exactly, booleans as Python writes them.
        let float_format = self.dtype().is_float().then(|| {
            let vals: Vec<f64> = shown.iter().map(|&i| crate::dispatch_all!(storage, |v: T| v[pos(i)].to_f64())).collect();
            Formatter::new(&vals)
        });
        let text = |flat: usize| -> String {
            match storage {
                crate::Storage::I64(v) => v[pos(flat)].to_string(),
                crate::Storage::Bool(v) => if v[pos(flat)] { "True" } else { "False" }.to_string(),
                s => float_format.as_ref().expect("float dtype").fmt(crate::dispatch_all!(s, |v: T| v[pos(flat)].to_f64())),
            }
        };
        let width = shown.iter().map(|&i| text(i).len()).max().unwrap_or(1);
        let cell = |flat: usize| format!("{:>width$}", text(flat));
        let mut s = String::from("tensor(");
        if self.rank() == 0 {
            s.push_str(&text(0));
        } else if self.numel() == 0 {
            s.push_str("[]");
            if self.rank() > 1 {
                let dims: Vec<String> = self.shape().iter().map(|d| d.to_string()).collect();
                s.push_str(&format!(", size=({})", dims.join(", ")));
            }
        } else {
            write_block(&mut s, &Printer { cell: &cell, width, shape: self.shape(), summarize }, 0, 0, 7);
        }
        // PyTorch names the dtype when it is not the one the printed values imply: f64
        // always, and i64 or bool when there are no values to show it.
        match self.dtype() {
            DType::F64 => s.push_str(", dtype=torch.float64"),
            DType::I64 if numel == 0 => s.push_str(", dtype=torch.int64"),
            DType::Bool if numel == 0 => s.push_str(", dtype=torch.bool"),
            _ => {}
        }
        if let Some(name) = self.grad_fn_name() {
            s.push_str(&format!(", grad_fn=<{}Backward0>", camel(name)));
        } else if self.requires_grad() {
            s.push_str(", requires_grad=True");
        }
        s.push(')');
        out.write_str(&s)
    }
}

/// The row-major indices of the elements a summarised print shows (the edges of every
/// dim), for choosing the format.
fn summary_indices(shape: &[usize]) -> Vec<usize> {
    fn walk(shape: &[usize], d: usize, base: usize, out: &mut Vec<usize>) {
        if shape.is_empty() {
            out.push(base);
            return;
        }
        let n = shape[d];
        let stride: usize = shape[d + 1..].iter().product();
        let idx: Vec<usize> = if n > 2 * EDGE_ITEMS { (0..EDGE_ITEMS).chain(n - EDGE_ITEMS..n).collect() } else { (0..n).collect() };
        for i in idx {
            if d + 1 == shape.len() {
                out.push(base + i);
            } else {
                walk(shape, d + 1, base + i * stride, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(shape, 0, 0, &mut out);
    out
}
