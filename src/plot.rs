//! The book's training figure (train loss, train accuracy, test accuracy per epoch) as a
//! self-contained SVG: no fonts or system libraries needed.

use nn::EpochStats;
use std::fmt::Write;
use std::path::Path;

const W: f64 = 480.0;
const H: f64 = 320.0;
const LEFT: f64 = 50.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 20.0;
const BOTTOM: f64 = 40.0;

/// Renders the figure; the y axis spans 0 to max(1, largest value).
pub fn training_svg(epochs: &[EpochStats]) -> String {
    let series: [(&str, &str, Vec<f64>); 3] = [
        ("train loss", "#1f77b4", epochs.iter().map(|e| e.loss).collect()),
        ("train acc", "#ff7f0e", epochs.iter().map(|e| e.train_acc).collect()),
        ("test acc", "#2ca02c", epochs.iter().map(|e| e.test_acc).collect()),
    ];
    let n = epochs.len().max(1) as f64;
    let ymax = series.iter().flat_map(|s| s.2.iter().copied()).filter(|v| v.is_finite()).fold(1.0f64, f64::max);
    let px = |i: usize| LEFT + i as f64 / (n - 1.0).max(1.0) * (W - LEFT - RIGHT);
    let py = |v: f64| TOP + (1.0 - v / ymax) * (H - TOP - BOTTOM);
    let mut s = String::new();
    writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">"#
    )
    .unwrap();
    writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#).unwrap();
    // Axes and ticks.
    writeln!(s, r#"<path d="M{LEFT} {TOP} V{} H{}" stroke="black" fill="none"/>"#, H - BOTTOM, W - RIGHT).unwrap();
    for k in 0..=4 {
        let v = ymax * k as f64 / 4.0;
        writeln!(s, r#"<text x="{}" y="{}" text-anchor="end">{v:.2}</text>"#, LEFT - 4.0, py(v) + 4.0).unwrap();
        writeln!(s, r##"<path d="M{LEFT} {y} H{}" stroke="#ddd"/>"##, W - RIGHT, y = py(v)).unwrap();
    }
    for i in 0..epochs.len() {
        writeln!(s, r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#, px(i), H - BOTTOM + 14.0, i + 1).unwrap();
    }
    writeln!(s, r#"<text x="{}" y="{}" text-anchor="middle">epoch</text>"#, (LEFT + W - RIGHT) / 2.0, H - 8.0).unwrap();
    for (k, (name, color, vals)) in series.iter().enumerate() {
        let pts: Vec<String> =
            vals.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(i, &v)| format!("{:.1},{:.1}", px(i), py(v))).collect();
        writeln!(s, r#"<polyline points="{}" stroke="{color}" stroke-width="2" fill="none"/>"#, pts.join(" ")).unwrap();
        for p in &pts {
            let (x, y) = p.split_once(',').unwrap();
            writeln!(s, r#"<circle cx="{x}" cy="{y}" r="2.5" fill="{color}"/>"#).unwrap();
        }
        let ly = TOP + 14.0 * k as f64 + 6.0;
        writeln!(
            s,
            r#"<path d="M{} {ly} h16" stroke="{color}" stroke-width="2"/><text x="{}" y="{}">{name}</text>"#,
            W - RIGHT - 90.0,
            W - RIGHT - 70.0,
            ly + 4.0
        )
        .unwrap();
    }
    s.push_str("</svg>\n");
    s
}

/// Writes the figure atomically, as checkpoints are written: a unique temporary file
/// (removed on failure), then a rename; only a regular file is replaced.
pub fn write_training_svg(path: &Path, epochs: &[EpochStats]) -> nn::Result<()> {
    nn::write_atomic(path, training_svg(epochs).as_bytes())
}
