//! PNG plots a scientist looks at first: loss terms over time, and data vs reconstructions vs
//! prior samples (curves for 1-D signals, heat maps for 2-D fields). Drawn with plotters'
//! bitmap backend and an embedded DejaVu Sans font: no system fonts, no display.

use crate::error::{TrainError, io_err};
use plotters::prelude::*;
use std::collections::HashMap;
use std::path::Path;

/// One row of `metrics.csv`, by column name.
pub type MetricsRow = HashMap<String, f64>;

/// Read `metrics.csv`.
pub fn read_metrics(path: &Path) -> Result<Vec<MetricsRow>, TrainError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    Ok(lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            header
                .iter()
                .zip(l.split(','))
                .filter_map(|(h, v)| v.parse::<f64>().ok().map(|v| (h.to_string(), v)))
                .collect()
        })
        .collect())
}

fn font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Run {
        path: path.to_path_buf(),
        message: format!("cannot draw plot: {e}"),
    }
}

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-9);
    (lo - pad, hi + pad)
}

/// The y-axis of a loss panel: linear, or a symmetric log around the late level when the first
/// epochs span far more than the rest (a curve falling from 1 400 to −80 would otherwise be a
/// flat line): `y' = asinh((y − m) / c)`, `m` the median of the last 80 % of the epochs and `c`
/// a quarter of their range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum YAxis {
    /// Plain values.
    Linear,
    /// `asinh((y − center) / scale)`.
    SymLog {
        /// Level the axis is linear around.
        center: f64,
        /// Width of the linear part.
        scale: f64,
    },
}

impl YAxis {
    /// The axis for `values` (in epoch order).
    pub fn for_values(values: &[f64]) -> YAxis {
        let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if finite.len() < 5 {
            return YAxis::Linear;
        }
        let span = |v: &[f64]| {
            v.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b))
                - v.iter().fold(f64::INFINITY, |a, &b| a.min(b))
        };
        let tail = &finite[finite.len() / 5..];
        let (full, late) = (span(&finite), span(tail));
        if !(late > 0.0 && full > 10.0 * late) {
            return YAxis::Linear;
        }
        let mut sorted = tail.to_vec();
        sorted.sort_by(f64::total_cmp);
        YAxis::SymLog {
            center: sorted[sorted.len() / 2],
            scale: late / 4.0,
        }
    }

    fn to_axis(self, y: f64) -> f64 {
        match self {
            YAxis::Linear => y,
            YAxis::SymLog { center, scale } => ((y - center) / scale).asinh(),
        }
    }

    fn from_axis(self, v: f64) -> f64 {
        match self {
            YAxis::Linear => v,
            YAxis::SymLog { center, scale } => center + scale * v.sinh(),
        }
    }
}

fn tick(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-2..1e5).contains(&a) {
        format!("{v:.2e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// `loss.png`: per epoch, train, test and (when present) validation curves of −ELBO,
/// −E[log p(x|z)] and KL for the latent-variable kinds, otherwise of the loss and the next two
/// terms of the objective. A panel whose first epochs dominate gets a symmetric-log axis
/// ([`YAxis`]), labelled in the terms' own units.
pub fn plot_losses(metrics: &[MetricsRow], path: &Path) -> Result<(), TrainError> {
    font();
    let root = BitMapBackend::new(path, (1200, 380)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let panels = root.split_evenly((1, 3));
    let has = |k: &str| {
        metrics
            .first()
            .is_some_and(|r| r.contains_key(&format!("train_{k}")))
    };
    let specs: Vec<(String, String, f64)> = if has("elbo") {
        vec![
            ("negative ELBO (per datum)".into(), "elbo".into(), -1.0),
            (
                "negative log-likelihood term".into(),
                "log_lik".into(),
                -1.0,
            ),
            ("KL(q(z|x) || p(z))".into(), "kl".into(), 1.0),
        ]
    } else {
        let mut keys: Vec<String> = metrics
            .first()
            .map(|r| {
                r.keys()
                    .filter_map(|k| k.strip_prefix("train_").map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        keys.sort_by_key(|k| (k != "loss", k.clone()));
        keys.into_iter()
            .take(3)
            .map(|k| (k.clone(), k, 1.0))
            .collect()
    };
    for (panel, (title, key, sign)) in panels.iter().zip(specs) {
        let raw: Vec<(&str, RGBColor, Vec<(f64, f64)>)> = [
            ("train", "train", BLUE),
            ("test", "test", RED),
            ("validation", "val", RGBColor(44, 160, 44)),
        ]
        .into_iter()
        .map(|(name, prefix, color)| {
            let col = format!("{prefix}_{key}");
            let pts = metrics
                .iter()
                .filter_map(|r| Some((*r.get("epoch")?, sign * *r.get(&col)?)))
                .collect();
            (name, color, pts)
        })
        .filter(|(_, _, p): &(_, _, Vec<_>)| !p.is_empty())
        .collect();
        let train: Vec<f64> = raw
            .first()
            .map(|s| s.2.iter().map(|p| p.1).collect())
            .unwrap_or_default();
        let axis = YAxis::for_values(&train);
        let series: Vec<_> = raw
            .into_iter()
            .map(|(n, c, pts)| {
                let pts: Vec<(f64, f64)> =
                    pts.into_iter().map(|(x, y)| (x, axis.to_axis(y))).collect();
                (n, c, pts)
            })
            .collect();
        let (x0, x1) = range(series.iter().flat_map(|s| s.2.iter().map(|p| p.0)));
        let (y0, y1) = range(series.iter().flat_map(|s| s.2.iter().map(|p| p.1)));
        let caption = match axis {
            YAxis::Linear => title.clone(),
            YAxis::SymLog { .. } => format!("{title} (symlog)"),
        };
        let mut chart = ChartBuilder::on(panel)
            .caption(caption, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(35)
            .y_label_area_size(75)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| plot_err(path, e))?;
        let label = move |v: &f64| tick(axis.from_axis(*v));
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_label_formatter(&label)
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|e| plot_err(path, e))?;
        for (name, color, pts) in series {
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                .map_err(|e| plot_err(path, e))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .label_font(("sans-serif", 13))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| plot_err(path, e))?;
    }
    root.present().map_err(|e| plot_err(path, e))
}

const PALETTE: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
];

/// `samples.png`: test data vs reconstructions, and prior samples.
///
/// `sample_shape` decides the layout: 1-D signals (`[L]` or `[1, L]`) are drawn as curves,
/// 2-D fields (`[1, H, W]` or `[H, W]`) as heat maps (first channel).
pub fn plot_samples(
    data: &[Vec<f64>],
    recon: &[Vec<f64>],
    prior: &[Vec<f64>],
    sample_shape: &[usize],
    path: &Path,
) -> Result<(), TrainError> {
    plot_samples_titled(data, recon, prior, sample_shape, path, &VAE_TITLES)
}

/// Panel titles: `[data, second row / dots, third row / right panel, curve panel 1, curve panel 2]`.
pub type Titles = [&'static str; 5];

const VAE_TITLES: Titles = [
    "test data",
    "reconstructions",
    "prior samples",
    "test data (lines) vs reconstructions (dots)",
    "samples from the prior",
];

/// Titles for a forward surrogate: reference solutions, surrogate means and samples.
pub const SURROGATE_TITLES: Titles = [
    "reference solution",
    "surrogate mean",
    "surrogate sample",
    "reference (lines) vs surrogate mean (dots)",
    "samples of the surrogate q(u|z)",
];

/// Titles for a point-estimate surrogate (PINN): reference, prediction and their difference.
pub const PINN_TITLES: Titles = [
    "reference solution",
    "PINN prediction",
    "error u − u*",
    "reference (lines) vs PINN (dots)",
    "error u − u*",
];

/// [`plot_samples`] with custom titles.
pub fn plot_samples_titled(
    data: &[Vec<f64>],
    recon: &[Vec<f64>],
    prior: &[Vec<f64>],
    sample_shape: &[usize],
    path: &Path,
    titles: &Titles,
) -> Result<(), TrainError> {
    font();
    let spatial: Vec<usize> = sample_shape
        .iter()
        .copied()
        .skip_while(|&s| s == 1)
        .collect();
    match spatial.as_slice() {
        [h, w] => heatmaps(data, recon, prior, *h, *w, path, titles),
        [..] => curves(data, recon, prior, path, titles),
    }
}

fn curves(
    data: &[Vec<f64>],
    recon: &[Vec<f64>],
    prior: &[Vec<f64>],
    path: &Path,
    titles: &Titles,
) -> Result<(), TrainError> {
    let root = BitMapBackend::new(path, (1100, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let panels = root.split_evenly((1, 2));
    let all = data
        .iter()
        .chain(recon)
        .chain(prior)
        .flat_map(|v| v.iter().copied());
    let (y0, y1) = range(all);
    let len = data.first().or(prior.first()).map_or(1, Vec::len);
    for (k, panel) in panels.iter().enumerate() {
        let title = if k == 0 { titles[3] } else { titles[4] };
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d(0f64..(len.max(2) - 1) as f64, y0..y1)
            .map_err(|e| plot_err(path, e))?;
        chart
            .configure_mesh()
            .x_desc("grid index")
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|e| plot_err(path, e))?;
        if k == 0 {
            for (i, (d, r)) in data.iter().zip(recon).enumerate() {
                let c = PALETTE[i % PALETTE.len()];
                chart
                    .draw_series(LineSeries::new(
                        d.iter().enumerate().map(|(j, v)| (j as f64, *v)),
                        c.stroke_width(2),
                    ))
                    .map_err(|e| plot_err(path, e))?;
                chart
                    .draw_series(
                        r.iter()
                            .enumerate()
                            .map(|(j, v)| Circle::new((j as f64, *v), 2, c.filled())),
                    )
                    .map_err(|e| plot_err(path, e))?;
            }
        } else {
            for (i, s) in prior.iter().enumerate() {
                let c = PALETTE[i % PALETTE.len()];
                chart
                    .draw_series(LineSeries::new(
                        s.iter().enumerate().map(|(j, v)| (j as f64, *v)),
                        c.stroke_width(2),
                    ))
                    .map_err(|e| plot_err(path, e))?;
            }
        }
    }
    root.present().map_err(|e| plot_err(path, e))
}

fn diverging(v: f64, scale: f64) -> RGBColor {
    let t = (v / scale).clamp(-1.0, 1.0);
    let (r, g, b) = if t >= 0.0 {
        (1.0, 1.0 - t, 1.0 - t)
    } else {
        (1.0 + t, 1.0 + t, 1.0)
    };
    RGBColor((r * 255.0) as u8, (g * 255.0) as u8, (b * 255.0) as u8)
}

fn heatmaps(
    data: &[Vec<f64>],
    recon: &[Vec<f64>],
    prior: &[Vec<f64>],
    h: usize,
    w: usize,
    path: &Path,
    titles: &Titles,
) -> Result<(), TrainError> {
    let cols = data.len().max(prior.len()).max(1);
    let root = BitMapBackend::new(path, (180 * cols as u32 + 40, 620)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let rows = root.split_evenly((3, 1));
    let scale = data
        .iter()
        .chain(recon)
        .chain(prior)
        .flat_map(|v| v.iter().map(|x| x.abs()))
        .fold(1e-12, f64::max);
    for (row, (title, fields)) in
        rows.iter()
            .zip([(titles[0], data), (titles[1], recon), (titles[2], prior)])
    {
        let row = row
            .titled(title, ("sans-serif", 16))
            .map_err(|e| plot_err(path, e))?;
        let cells = row.split_evenly((1, cols));
        for (cell, field) in cells.iter().zip(fields) {
            let mut chart = ChartBuilder::on(cell)
                .margin(6)
                .build_cartesian_2d(0..w, 0..h)
                .map_err(|e| plot_err(path, e))?;
            chart
                .draw_series((0..h).flat_map(|i| {
                    (0..w).map(move |j| {
                        Rectangle::new(
                            [(j, h - 1 - i), (j + 1, h - i)],
                            diverging(field[i * w + j], scale).filled(),
                        )
                    })
                }))
                .map_err(|e| plot_err(path, e))?;
        }
    }
    root.present().map_err(|e| plot_err(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_are_written_as_png() {
        let dir = std::env::temp_dir().join(format!("varphi-plots-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rows: Vec<MetricsRow> = (1..=3)
            .map(|e| {
                [
                    ("epoch", e as f64),
                    ("train_elbo", -10.0 / e as f64),
                    ("test_elbo", -11.0 / e as f64),
                    ("train_kl", 1.0),
                    ("train_log_lik", -9.0),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect()
            })
            .collect();
        plot_losses(&rows, &dir.join("loss.png")).unwrap();
        let sig: Vec<Vec<f64>> = (0..2)
            .map(|i| (0..8).map(|j| (i + j) as f64).collect())
            .collect();
        plot_samples(&sig, &sig, &sig, &[1, 8], &dir.join("s1.png")).unwrap();
        let fld: Vec<Vec<f64>> = (0..2)
            .map(|i| (0..16).map(|j| (i * j) as f64 - 3.0).collect())
            .collect();
        plot_samples(&fld, &fld, &fld, &[1, 4, 4], &dir.join("s2.png")).unwrap();
        for f in ["loss.png", "s1.png", "s2.png"] {
            let bytes = std::fs::read(dir.join(f)).unwrap();
            assert_eq!(&bytes[1..4], b"PNG", "{f} is not a PNG");
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_curve_dominated_by_its_first_epochs_gets_a_symlog_axis_that_inverts() {
        // −ELBO falling from 1 400 to about −80, then flat within ±5: the late part must
        // not be a flat line.
        let y: Vec<f64> = (0..40)
            .map(|e| {
                if e == 0 {
                    1400.0
                } else if e == 1 {
                    300.0
                } else {
                    -80.0 + 5.0 * (e as f64).sin()
                }
            })
            .collect();
        let axis = YAxis::for_values(&y);
        let YAxis::SymLog { center, scale } = axis else {
            panic!("expected a symlog axis, got {axis:?}");
        };
        assert!(
            (center + 80.0).abs() < 5.0 && scale > 0.5 && scale < 5.0,
            "{axis:?}"
        );
        for v in [1400.0, -80.0, -77.5, 0.0] {
            assert!((axis.from_axis(axis.to_axis(v)) - v).abs() < 1e-9 * (1.0 + v.abs()));
        }
        // The late ±5 wiggle spans a visible part of the axis, the first epoch no longer 99 %.
        let t: Vec<f64> = y.iter().map(|&v| axis.to_axis(v)).collect();
        let late = t[8..].iter().cloned().fold(f64::MIN, f64::max)
            - t[8..].iter().cloned().fold(f64::MAX, f64::min);
        let all =
            t.iter().cloned().fold(f64::MIN, f64::max) - t.iter().cloned().fold(f64::MAX, f64::min);
        assert!(late / all > 0.2, "late part {late} of {all}");
        // A smoothly converging curve stays linear.
        let smooth: Vec<f64> = (0..40).map(|e| 10.0 - 0.1 * e as f64).collect();
        assert_eq!(YAxis::for_values(&smooth), YAxis::Linear);
    }
}

/// `calibration.png`: the reliability diagram of every scored block — empirical coverage of the
/// central intervals against their nominal level (the diagonal is calibrated; below it is
/// over-confident), before and, when recalibrated, after spread scaling and for the conformal
/// intervals. One panel per block, at most 12 (the first ones).
pub fn plot_calibration(
    curves: &[crate::calibration::Curve],
    path: &Path,
) -> Result<(), TrainError> {
    font();
    let shown = &curves[..curves.len().min(12)];
    let cols = shown.len().clamp(1, 4);
    let rows = shown.len().div_ceil(cols).max(1);
    let root = BitMapBackend::new(path, (300 * cols as u32, 300 * rows as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let panels = root.split_evenly((rows, cols));
    let levels = crate::uq::CURVE;
    for (c, panel) in shown.iter().zip(panels.iter()) {
        let mut chart = ChartBuilder::on(panel)
            .caption(&c.block, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(32)
            .y_label_area_size(40)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)
            .map_err(|e| plot_err(path, e))?;
        chart
            .configure_mesh()
            .x_desc("nominal")
            .y_desc("coverage")
            .x_labels(6)
            .y_labels(6)
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(|e| plot_err(path, e))?;
        chart
            .draw_series(LineSeries::new(
                [(0.0, 0.0), (1.0, 1.0)],
                BLACK.mix(0.4).stroke_width(1),
            ))
            .map_err(|e| plot_err(path, e))?;
        let series = [
            (Some(&c.raw), PALETTE[0], "raw"),
            (c.scaled.as_ref(), PALETTE[1], "scaled"),
            (c.conformal.as_ref(), PALETTE[2], "conformal"),
        ];
        for (values, colour, label) in series {
            let Some(v) = values else { continue };
            let points: Vec<(f64, f64)> = levels.iter().copied().zip(v.iter().copied()).collect();
            chart
                .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
                .map_err(|e| plot_err(path, e))?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 16, y)], colour.stroke_width(2))
                });
            chart
                .draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 3, colour.filled())),
                )
                .map_err(|e| plot_err(path, e))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", 12))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .draw()
            .map_err(|e| plot_err(path, e))?;
    }
    root.present().map_err(|e| plot_err(path, e))
}

/// `bands.png`: for the first (up to) three test cases of each block (at most four blocks,
/// per-parameter blocks `a.b` after the others), the predictive mean with its central 50 % and 90 % intervals
/// against the truth, entry by entry (grid nodes in order, or the parameters).
pub fn plot_bands(blocks: &[crate::calibration::Bands], path: &Path) -> Result<(), TrainError> {
    font();
    let mut shown: Vec<&crate::calibration::Bands> =
        blocks.iter().filter(|b| !b.cases.is_empty()).collect();
    shown.sort_by_key(|b| b.block.contains('.'));
    shown.truncate(4);
    if shown.is_empty() {
        return Ok(());
    }
    let cols = shown.iter().map(|b| b.cases.len()).max().unwrap_or(1);
    let root =
        BitMapBackend::new(path, (380 * cols as u32, 280 * shown.len() as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let rows = root.split_evenly((shown.len(), cols));
    for (r, b) in shown.iter().enumerate() {
        for (k, c) in b.cases.iter().enumerate() {
            let panel = &rows[r * cols + k];
            let n = c.truth.len();
            let (y0, y1) = range(c.q05.iter().chain(&c.q95).chain(&c.truth).copied());
            let x1 = (n.max(2) - 1) as f64;
            let mut chart = ChartBuilder::on(panel)
                .caption(format!("{} — case {k}", b.block), ("sans-serif", 14))
                .margin(8)
                .x_label_area_size(28)
                .y_label_area_size(50)
                .build_cartesian_2d(-0.5f64..x1 + 0.5, y0..y1)
                .map_err(|e| plot_err(path, e))?;
            chart
                .configure_mesh()
                .x_desc("entry")
                .label_style(("sans-serif", 11))
                .draw()
                .map_err(|e| plot_err(path, e))?;
            let band = |lo: &[f64], hi: &[f64]| -> Vec<(f64, f64)> {
                let up = hi.iter().enumerate().map(|(j, v)| (j as f64, *v));
                let down = lo.iter().enumerate().rev().map(|(j, v)| (j as f64, *v));
                up.chain(down).collect()
            };
            let blue = PALETTE[0];
            chart
                .draw_series(std::iter::once(Polygon::new(
                    band(&c.q05, &c.q95),
                    blue.mix(0.18).filled(),
                )))
                .map_err(|e| plot_err(path, e))?
                .label("90 %")
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 4), (x + 14, y + 4)], blue.mix(0.18).filled())
                });
            chart
                .draw_series(std::iter::once(Polygon::new(
                    band(&c.q25, &c.q75),
                    blue.mix(0.4).filled(),
                )))
                .map_err(|e| plot_err(path, e))?
                .label("50 %")
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 4), (x + 14, y + 4)], blue.mix(0.4).filled())
                });
            chart
                .draw_series(LineSeries::new(
                    c.mean.iter().enumerate().map(|(j, v)| (j as f64, *v)),
                    blue.stroke_width(2),
                ))
                .map_err(|e| plot_err(path, e))?
                .label("mean")
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 14, y)], blue.stroke_width(2))
                });
            let truth_colour = BLACK;
            let dot = if n > 200 { 1 } else { 3 };
            chart
                .draw_series(
                    c.truth
                        .iter()
                        .enumerate()
                        .map(|(j, v)| Circle::new((j as f64, *v), dot, truth_colour.filled())),
                )
                .map_err(|e| plot_err(path, e))?
                .label("truth")
                .legend(move |(x, y)| Circle::new((x + 7, y), 3, truth_colour.filled()));
            if k == 0 {
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::UpperRight)
                    .label_font(("sans-serif", 11))
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK.mix(0.3))
                    .draw()
                    .map_err(|e| plot_err(path, e))?;
            }
        }
    }
    root.present().map_err(|e| plot_err(path, e))
}
