//! `plot`: SVG charts from `rfc2544` results files, one series per file (its `label`).
//!
//! - `throughput_mpps.svg`: throughput in Mpps against frame size (log scale);
//! - `throughput_gbps.svg`: the same in Gbit/s of frames;
//! - `latency.svg`: p50 and p99 latency at the throughput rate against frame size;
//! - `latency_hist_<SIZE>.svg`: the latency distribution at one frame size (share of frames
//!   per histogram bucket, log-scaled latency axis).
//!
//! SVG needs no font files (text is left to the viewer), so the charts build on a bare machine.

use std::path::{Path, PathBuf};

use clap::Args;
use plotters::prelude::*;
use serde_json::Value;

use crate::cli::CliError;

/// Options of `plot`.
#[derive(Args, Debug)]
pub struct PlotArgs {
    /// rfc2544 results files (JSON), one series each.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Directory for the SVG files.
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// Prefix of the file names.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Frame size of the latency histogram (default: the smallest measured).
    #[arg(long)]
    hist_size: Option<usize>,
    /// Chart title prefix.
    #[arg(long, default_value = "")]
    title: String,
}

/// One frame size's figures.
struct Point {
    size: usize,
    pps: f64,
    bps: f64,
    p50: f64,
    p99: f64,
    hist: Vec<(u64, u64)>,
}

/// One file's series.
struct Series {
    label: String,
    points: Vec<Point>,
    /// The loss ratio the throughput allowed.
    loss: f64,
}

/// Named lines of (x, y).
type Lines = Vec<(String, Vec<(f64, f64)>)>;

const COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];

fn load(path: &Path) -> Result<Series, CliError> {
    let err = |why: String| CliError::Read {
        path: path.display().to_string(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| err(format!("not JSON: {e}")))?;
    if v["command"] != "rfc2544" {
        return Err(err("not the results of `vwire-pktgen rfc2544`".into()));
    }
    let label = match v["label"].as_str() {
        Some(l) if !l.is_empty() => l.to_string(),
        _ => path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let mut points = Vec::new();
    for r in v["results"].as_array().into_iter().flatten() {
        if r.get("skipped").is_some_and(|s| !s.is_null()) {
            continue;
        }
        let f = |x: &Value| x.as_f64().unwrap_or(0.0);
        let hist = r["latency"]["histogram"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| Some((b[0].as_u64()?, b[1].as_u64()?)))
            .collect();
        points.push(Point {
            size: usize::try_from(r["size"].as_u64().unwrap_or(0)).unwrap_or(0),
            pps: f(&r["throughput_pps"]),
            bps: f(&r["throughput_bps"]),
            p50: f(&r["latency"]["p50"]),
            p99: f(&r["latency"]["p99"]),
            hist,
        });
    }
    let loss = v["rfc2544"]["loss_ratio_allowed"].as_f64().unwrap_or(0.0);
    Ok(Series {
        label,
        points,
        loss,
    })
}

fn de<E: std::fmt::Display>(e: E) -> CliError {
    CliError::Plot(e.to_string())
}

/// Draws a chart of y against frame size, one line per series.
fn size_chart(
    path: &Path,
    title: &str,
    y_desc: &str,
    series: &Lines,
    log_y: bool,
) -> Result<(), CliError> {
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(de)?;
    let xs = series.iter().flat_map(|s| s.1.iter().map(|p| p.0));
    let xmin = xs.clone().fold(f64::MAX, f64::min).min(64.0);
    let xmax = xs.fold(0.0, f64::max).max(1518.0);
    let ys = series.iter().flat_map(|s| s.1.iter().map(|p| p.1));
    let ymax = ys.clone().fold(0.0, f64::max).max(1e-9) * 1.15;
    let ymin = ys.filter(|y| *y > 0.0).fold(f64::MAX, f64::min);
    let mut builder = ChartBuilder::on(&root);
    let chart = builder
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70);
    let x = (xmin * 0.9..xmax * 1.1).log_scale();
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc("frame size, bytes (FCS included)")
                .y_desc(y_desc)
                .draw()
                .map_err(de)?;
            for (i, (label, pts)) in series.iter().enumerate() {
                let c = COLORS[i % COLORS.len()];
                chart
                    .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
                    .map_err(de)?
                    .label(label.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                    });
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))
                    .map_err(de)?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(de)?;
        }};
    }
    if log_y && ymin < f64::MAX {
        draw!(chart
            .build_cartesian_2d(x, (ymin * 0.7..ymax * 1.5).log_scale())
            .map_err(de)?);
    } else {
        draw!(chart.build_cartesian_2d(x, 0.0..ymax).map_err(de)?);
    }
    root.present().map_err(de)?;
    Ok(())
}

/// Draws the latency distributions at one size.
fn hist_chart(
    path: &Path,
    title: &str,
    series: &[(String, Vec<(u64, u64)>)],
) -> Result<(), CliError> {
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(de)?;
    // Share of frames per bucket, at the bucket's lower bound (µs).
    let norm: Vec<(String, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(l, h)| {
            let total: u64 = h.iter().map(|b| b.1).sum::<u64>().max(1);
            (
                l.clone(),
                h.iter()
                    .map(|&(lo, c)| ((lo.max(1)) as f64 / 1e3, c as f64 / total as f64 * 100.0))
                    .collect(),
            )
        })
        .collect();
    let xs = norm.iter().flat_map(|s| s.1.iter().map(|p| p.0));
    let xmin = xs.clone().fold(f64::MAX, f64::min);
    let xmax = xs.fold(0.0, f64::max);
    if xmin >= xmax {
        return Ok(());
    }
    let ymax = norm
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(0.0, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((xmin * 0.8..xmax * 1.25).log_scale(), 0.0..ymax)
        .map_err(de)?;
    chart
        .configure_mesh()
        .x_desc("latency, µs (histogram bucket, ≤ 3 % wide)")
        .y_desc("% of frames")
        .draw()
        .map_err(de)?;
    for (i, (label, pts)) in norm.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
            .map_err(de)?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(de)?;
    root.present().map_err(de)?;
    Ok(())
}

/// Runs `plot`.
pub fn run(a: PlotArgs) -> Result<(), CliError> {
    let series = a
        .inputs
        .iter()
        .map(|p| load(p))
        .collect::<Result<Vec<_>, _>>()?;
    std::fs::create_dir_all(&a.out).map_err(|source| CliError::Write {
        path: a.out.display().to_string(),
        source,
    })?;
    let t = |s: &str| {
        if a.title.is_empty() {
            s.to_string()
        } else {
            format!("{}: {s}", a.title)
        }
    };
    let file = |name: &str| a.out.join(format!("{}{name}", a.prefix));
    let pick = |f: fn(&Point) -> f64| -> Lines {
        series
            .iter()
            .map(|s| {
                (
                    s.label.clone(),
                    s.points
                        .iter()
                        .map(|p| (p.size as f64, f(p)))
                        .filter(|p| p.1 > 0.0)
                        .collect(),
                )
            })
            .collect()
    };
    let mut written = Vec::new();
    let p = file("throughput_mpps.svg");
    let loss = series.iter().map(|s| s.loss).fold(0.0, f64::max);
    let within = if loss > 0.0 {
        format!("RFC 2544 throughput (loss ≤ {loss})")
    } else {
        "RFC 2544 throughput (zero loss)".to_string()
    };
    size_chart(&p, &t(&within), "Mpps", &pick(|p| p.pps / 1e6), false)?;
    written.push(p);
    let p = file("throughput_gbps.svg");
    size_chart(
        &p,
        &t("RFC 2544 throughput"),
        "Gbit/s of frames",
        &pick(|p| p.bps / 1e9),
        false,
    )?;
    written.push(p);
    let mut lat = pick(|p| p.p50 / 1e3);
    for l in &mut lat {
        l.0 += " p50";
    }
    for mut l in pick(|p| p.p99 / 1e3) {
        l.0 += " p99";
        lat.push(l);
    }
    let p = file("latency.svg");
    size_chart(&p, &t("latency at the throughput rate"), "µs", &lat, true)?;
    written.push(p);
    let size = a.hist_size.or_else(|| {
        series
            .iter()
            .flat_map(|s| {
                s.points
                    .iter()
                    .filter(|p| !p.hist.is_empty())
                    .map(|p| p.size)
            })
            .min()
    });
    if let Some(size) = size {
        let hs: Vec<(String, Vec<(u64, u64)>)> = series
            .iter()
            .filter_map(|s| {
                s.points
                    .iter()
                    .find(|p| p.size == size)
                    .map(|p| (s.label.clone(), p.hist.clone()))
            })
            .collect();
        let p = file(&format!("latency_hist_{size}.svg"));
        hist_chart(
            &p,
            &t(&format!("latency distribution, {size}-byte frames")),
            &hs,
        )?;
        written.push(p);
    }
    for p in written {
        println!("{}", p.display());
    }
    Ok(())
}
