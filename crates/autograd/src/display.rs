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
    width: usize,
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
        let mut f = Formatter { mode, width: 1 };
        f.width = values.iter().map(|&v| f.fmt(v).len()).max().unwrap_or(1);
        f
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

    fn pad(&self, v: f64) -> String {
        format!("{:>w$}", self.fmt(v), w = self.width)
    }
}

/// One tensor being printed.
struct Printer<'a> {
    /// The value at a row-major element index.
    at: &'a dyn Fn(usize) -> f64,
    shape: &'a [usize],
    f: &'a Formatter,
    summarize: bool,
}

/// Writes dims `d..` of the block starting at `base`, PyTorch style.
fn write_block(out: &mut String, p: &Printer<'_>, d: usize, base: usize, indent: usize) {
    let (at, shape, f, summarize) = (p.at, p.shape, p.f, p.summarize);
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
        let per_line = ((LINE_WIDTH - indent) / (f.width + 2)).max(1);
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
                Some(i) => out.push_str(&f.pad(at(base + i))),
                None => out.push_str("..."),
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
        let at = |flat: usize| {
            let mut rest = flat;
            let mut pos = layout.offset;
            for (&n, &st) in layout.shape.iter().zip(&layout.strides).rev() {
                pos += rest % n * st;
                rest /= n;
            }
            crate::dispatch!(storage, |v: T| v[pos].to_f64())
        };
        let numel = self.numel();
        let summarize = numel > THRESHOLD;
        let shown: Vec<f64> = if summarize { summary_values(&at, self.shape()) } else { (0..numel).map(at).collect() };
        let f = Formatter::new(&shown);
        let mut s = String::from("tensor(");
        if self.rank() == 0 {
            s.push_str(&f.fmt(at(0)));
        } else if self.numel() == 0 {
            s.push_str("[]");
            if self.rank() > 1 {
                let dims: Vec<String> = self.shape().iter().map(|d| d.to_string()).collect();
                s.push_str(&format!(", size=({})", dims.join(", ")));
            }
        } else {
            write_block(&mut s, &Printer { at: &at, shape: self.shape(), f: &f, summarize }, 0, 0, 7);
        }
        if self.dtype() == DType::F64 {
            s.push_str(", dtype=torch.float64");
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

/// The values a summarised print shows (the edges of every dim), for choosing the format.
fn summary_values(at: &dyn Fn(usize) -> f64, shape: &[usize]) -> Vec<f64> {
    let mut out = Vec::new();
    fn walk(at: &dyn Fn(usize) -> f64, shape: &[usize], d: usize, base: usize, out: &mut Vec<f64>) {
        if shape.is_empty() {
            out.push(at(base));
            return;
        }
        let n = shape[d];
        let stride: usize = shape[d + 1..].iter().product();
        let idx: Vec<usize> = if n > 2 * EDGE_ITEMS { (0..EDGE_ITEMS).chain(n - EDGE_ITEMS..n).collect() } else { (0..n).collect() };
        for i in idx {
            if d + 1 == shape.len() {
                out.push(at(base + i));
            } else {
                walk(at, shape, d + 1, base + i * stride, out);
            }
        }
    }
    walk(at, shape, 0, 0, &mut out);
    out
}
