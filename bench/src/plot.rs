//! The PNG plot: throughput and latency per contender (plotters, bitmap backend).
//!
//! Text is drawn with plotters' `ab_glyph` renderer (no system font libraries); the font is
//! read at run time from a TrueType file of the machine (DejaVu Sans, or
//! `BENCH_PLOT_FONT`). Without one the plot is skipped with an error saying so.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::contender::Kind;
use crate::error::{BenchError, Result};
use crate::runner::Results;

const FONT_CANDIDATES: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

static FONT: OnceLock<std::result::Result<(), String>> = OnceLock::new();

fn ensure_font() -> Result<()> {
    FONT.get_or_init(|| {
        let candidates: Vec<PathBuf> = std::env::var_os("BENCH_PLOT_FONT")
            .map(PathBuf::from)
            .into_iter()
            .chain(FONT_CANDIDATES.iter().map(PathBuf::from))
            .collect();
        let path = candidates.iter().find(|p| p.is_file()).ok_or_else(|| {
            format!("no TrueType font found (looked at {candidates:?}); set BENCH_PLOT_FONT")
        })?;
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        // register_font keeps the bytes for the life of the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{}: not a usable font", path.display()))
    })
    .clone()
    .map_err(BenchError::Plot)
}

fn plot_err<E: std::fmt::Display>(e: E) -> BenchError {
    BenchError::Plot(e.to_string())
}

/// A panel: title, y-axis unit, and the metrics drawn side by side per contender.
type Panel = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

const PANELS: [Panel; 4] = [
    (
        "HTTPS keep-alive, small responses",
        "requests/s",
        &[
            ("keep_alive_many_rps", "N connections"),
            ("keep_alive_one_rps", "1 connection"),
        ],
    ),
    (
        "New TLS connection per request",
        "connections/s",
        &[("new_connections_per_s", "full handshakes")],
    ),
    (
        "Bulk download",
        "MB/s",
        &[("bulk_mb_per_s", "256 MiB, one connection")],
    ),
    (
        "Latency, keep-alive, 1 connection",
        "µs",
        &[
            ("keep_alive_one_p50_us", "p50"),
            ("keep_alive_one_p99_us", "p99"),
        ],
    ),
];

const COLORS: [RGBColor; 2] = [RGBColor(31, 119, 180), RGBColor(255, 127, 14)];

/// Draws the plot of `results` into `path` (PNG).
pub fn draw(results: &Results, path: &Path) -> Result<()> {
    ensure_font()?;
    let kinds: Vec<Kind> = Kind::ALL
        .into_iter()
        .filter(|k| results.summary.contains_key(k.name()))
        .collect();
    if kinds.is_empty() {
        return Err(BenchError::Plot("nothing measured".into()));
    }
    let root = BitMapBackend::new(path, (1400, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let title = format!(
        "bottleneck-bench{}: medians over {} round(s), whiskers min–max (clipped at the top of an axis)",
        if results.config.quick {
            " (QUICK MODE)"
        } else {
            ""
        },
        results.config.rounds
    );
    let root = root.titled(&title, ("sans-serif", 26)).map_err(plot_err)?;
    for (area, (caption, unit, metrics)) in root.split_evenly((2, 2)).iter().zip(PANELS) {
        panel(area, results, &kinds, caption, unit, metrics)?;
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

fn panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    results: &Results,
    kinds: &[Kind],
    caption: &str,
    unit: &str,
    metrics: &[(&str, &str)],
) -> Result<()> {
    let get = |k: Kind, m: &str| results.summary.get(k.name()).and_then(|s| s.get(m));
    // The axis follows the medians; a bar or whisker far above the others (mitmproxy's
    // latency) is clipped at the top, its label still gives the value.
    let all = |pick: fn(&crate::stats::Summary) -> f64| -> Vec<f64> {
        kinds
            .iter()
            .flat_map(|k| {
                metrics
                    .iter()
                    .filter_map(move |(m, _)| get(*k, m).map(pick))
            })
            .collect()
    };
    // Per contender, its highest median; compare the highest contender with the next.
    let mut medians: Vec<f64> = kinds
        .iter()
        .map(|k| {
            metrics
                .iter()
                .filter_map(|(m, _)| get(*k, m).map(|s| s.median))
                .fold(0.0f64, f64::max)
        })
        .collect();
    medians.sort_by(f64::total_cmp);
    let top = medians.last().copied().unwrap_or(1.0);
    let second = medians.iter().rev().nth(1).copied().unwrap_or(top);
    let ymax = if top > 5.0 * second && second > 0.0 {
        3.0 * second
    } else {
        all(|s| s.max)
            .into_iter()
            .fold(0.0f64, f64::max)
            .min(2.0 * top)
    }
    .max(1.0);
    let clip = |v: f64| v.min(ymax * 1.1);
    let n = kinds.len();
    let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(80)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..ymax * 1.2)
        .map_err(plot_err)?;
    let formatter = |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 0.01 && i >= 0.0 && (i as usize) < names.len() {
            names[i as usize].to_owned()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2 + 1)
        .x_label_formatter(&formatter)
        .y_label_formatter(&|y| crate::report::num(*y))
        .y_desc(unit)
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(plot_err)?;
    let width = 0.8 / metrics.len() as f64;
    for (j, (metric, label)) in metrics.iter().enumerate() {
        let color = COLORS[j % COLORS.len()];
        let bars: Vec<(f64, f64, f64, f64)> = kinds
            .iter()
            .enumerate()
            .filter_map(|(i, k)| {
                let s = get(*k, metric)?;
                let x0 = i as f64 - 0.4 + j as f64 * width;
                Some((x0, s.median, s.min, s.max))
            })
            .collect();
        chart
            .draw_series(bars.iter().map(|(x0, med, _, _)| {
                Rectangle::new(
                    [(*x0, 0.0), (*x0 + width * 0.9, clip(*med))],
                    color.filled(),
                )
            }))
            .map_err(plot_err)?
            .label(*label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 12, y + 6)], color.filled()));
        chart
            .draw_series(bars.iter().map(|(x0, _, lo, hi)| {
                let xm = *x0 + width * 0.45;
                PathElement::new(
                    vec![(xm, clip(*lo)), (xm, clip(*hi))],
                    BLACK.stroke_width(2),
                )
            }))
            .map_err(plot_err)?;
        chart
            .draw_series(bars.iter().map(|(x0, med, _, _)| {
                Text::new(
                    crate::report::num(*med),
                    (*x0, clip(*med) + ymax * 0.02),
                    ("sans-serif", 13),
                )
            }))
            .map_err(plot_err)?;
    }
    if metrics.len() > 1 {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(plot_err)?;
    }
    Ok(())
}
