//! A scenario's timeline: offered load, goodput, rejections, the limit, requests in flight and
//! the p99 latency per recorder window, as CSV and as an SVG chart.
//!
//! The chart is written by hand (polylines on three stacked panels, about a hundred lines)
//! rather than with a plotting crate: it needs no fonts, no image backend and no dependency,
//! and the same run gives the same bytes, so a chart in the docs changes only when the
//! behaviour does.

use crate::recorder::Recorder;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// The gauge name of the limit in [`Recorder::gauge`], shown by the timeline.
pub const LIMIT: &str = "limit";
/// The gauge name of the requests in flight in [`Recorder::gauge`], shown by the timeline.
pub const IN_FLIGHT: &str = "in_flight";

/// One window of a [`Timeline`].
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineRow {
    /// Start of the window, from the recorder's start.
    pub at: Duration,
    /// Requests issued, per second.
    pub offered: f64,
    /// `Ok` answers within their deadline, per second.
    pub goodput: f64,
    /// Requests refused by a layer, per second.
    pub rejected: f64,
    /// Mean of the [`LIMIT`] gauge in the window.
    pub limit: Option<f64>,
    /// Mean of the [`IN_FLIGHT`] gauge in the window.
    pub in_flight: Option<f64>,
    /// 99th percentile latency of the window's `Ok` answers.
    pub p99: Option<Duration>,
}

/// The per-window timeline of one run, from a [`Recorder`] (with the [`LIMIT`] and
/// [`IN_FLIGHT`] gauges if the test recorded them).
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    /// A title for the chart.
    pub title: String,
    /// One row per recorder window.
    pub rows: Vec<TimelineRow>,
}

impl Timeline {
    /// The timeline of everything `recorder` saw so far.
    pub fn from_recorder(title: impl Into<String>, recorder: &Recorder) -> Self {
        let windows = recorder.windows();
        let limits = recorder.gauge_windows(LIMIT);
        let in_flight = recorder.gauge_windows(IN_FLIGHT);
        let rows = windows
            .iter()
            .enumerate()
            .map(|(i, w)| TimelineRow {
                at: w.from,
                offered: w.offered_rps(),
                goodput: w.goodput_rps(),
                rejected: w.rejected as f64 / w.seconds(),
                limit: limits.get(i).copied().flatten(),
                in_flight: in_flight.get(i).copied().flatten(),
                p99: w.p99,
            })
            .collect();
        Self {
            title: title.into(),
            rows,
        }
    }

    /// The timeline as CSV: `t_s,offered_rps,goodput_rps,rejected_rps,limit,in_flight,p99_ms`.
    pub fn to_csv(&self) -> String {
        let mut out =
            String::from("t_s,offered_rps,goodput_rps,rejected_rps,limit,in_flight,p99_ms\n");
        let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.2}"));
        for r in &self.rows {
            let _ = writeln!(
                out,
                "{:.1},{:.1},{:.1},{:.1},{},{},{}",
                r.at.as_secs_f64(),
                r.offered,
                r.goodput,
                r.rejected,
                opt(r.limit),
                opt(r.in_flight),
                opt(r.p99.map(|d| d.as_secs_f64() * 1e3)),
            );
        }
        out
    }

    /// The timeline as an SVG chart: rates on top, limit and in flight in the middle, p99 at
    /// the bottom, all over the same time axis.
    pub fn to_svg(&self) -> String {
        const W: f64 = 900.0;
        const PANEL: f64 = 180.0;
        const LEFT: f64 = 70.0;
        const RIGHT: f64 = 150.0;
        const TOP: f64 = 40.0;
        const GAP: f64 = 40.0;
        let h = TOP + 3.0 * PANEL + 3.0 * GAP;
        let end = self
            .rows
            .last()
            .map_or(1.0, |r| r.at.as_secs_f64() + 0.1)
            .max(0.1);
        let x = |t: f64| LEFT + (W - LEFT - RIGHT) * t / end;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif" font-size="11">"#
        );
        let _ = writeln!(s, r#"<rect width="{W}" height="{h}" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{LEFT}" y="22" font-size="14">{}</text>"#,
            escape(&self.title)
        );
        let t = |r: &TimelineRow| r.at.as_secs_f64() + 0.05;
        let panels: [(&str, Vec<Line<'_>>); 3] = [
            (
                "requests / s",
                vec![
                    ("offered", "#999999", self.series(|r| Some(r.offered), t)),
                    ("goodput", "#1a7f37", self.series(|r| Some(r.goodput), t)),
                    ("rejected", "#cf222e", self.series(|r| Some(r.rejected), t)),
                ],
            ),
            (
                "requests",
                vec![
                    ("limit", "#0969da", self.series(|r| r.limit, t)),
                    ("in flight", "#bf8700", self.series(|r| r.in_flight, t)),
                ],
            ),
            (
                "p99 (ms)",
                vec![(
                    "p99",
                    "#8250df",
                    self.series(|r| r.p99.map(|d| d.as_secs_f64() * 1e3), t),
                )],
            ),
        ];
        for (i, (label, lines)) in panels.iter().enumerate() {
            let top = TOP + i as f64 * (PANEL + GAP);
            let max = lines
                .iter()
                .flat_map(|l| l.2.iter().map(|p| p.1))
                .fold(0.0_f64, f64::max);
            let max = nice(max);
            let y = |v: f64| top + PANEL - PANEL * (v / max).min(1.05);
            // Frame, horizontal grid with labels, time ticks.
            let _ = writeln!(
                s,
                r##"<rect x="{LEFT}" y="{top}" width="{}" height="{PANEL}" fill="none" stroke="#d0d7de"/>"##,
                W - LEFT - RIGHT
            );
            for k in 0..=4 {
                let v = max * f64::from(k) / 4.0;
                let yy = y(v);
                let _ = writeln!(
                    s,
                    r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#eaeef2"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                    W - RIGHT,
                    LEFT - 6.0,
                    yy + 4.0,
                    short(v)
                );
            }
            let step = nice(end / 8.0);
            let mut tick = 0.0;
            while tick <= end {
                let xx = x(tick);
                let _ = writeln!(
                    s,
                    r##"<line x1="{xx:.1}" y1="{:.1}" x2="{xx:.1}" y2="{:.1}" stroke="#d0d7de"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{}s</text>"##,
                    top + PANEL,
                    top + PANEL + 4.0,
                    top + PANEL + 16.0,
                    short(tick)
                );
                tick += step;
            }
            let _ = writeln!(
                s,
                r#"<text x="14" y="{:.1}" transform="rotate(-90 14 {:.1})" text-anchor="middle">{label}</text>"#,
                top + PANEL / 2.0,
                top + PANEL / 2.0
            );
            for (j, (name, colour, points)) in lines.iter().enumerate() {
                if !points.is_empty() {
                    let mut d = String::new();
                    for (px, py) in points {
                        let _ = write!(d, "{:.1},{:.1} ", x(*px), y(*py));
                    }
                    let _ = writeln!(
                        s,
                        r#"<polyline fill="none" stroke="{colour}" stroke-width="1.3" points="{}"/>"#,
                        d.trim_end()
                    );
                }
                let ly = top + 14.0 + 16.0 * j as f64;
                let lx = W - RIGHT + 12.0;
                let _ = writeln!(
                    s,
                    r#"<line x1="{lx}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{colour}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{name}</text>"#,
                    ly - 4.0,
                    lx + 18.0,
                    ly - 4.0,
                    lx + 24.0,
                    ly
                );
            }
        }
        s.push_str("</svg>\n");
        s
    }

    fn series(
        &self,
        value: impl Fn(&TimelineRow) -> Option<f64>,
        t: impl Fn(&TimelineRow) -> f64,
    ) -> Vec<(f64, f64)> {
        self.rows
            .iter()
            .filter_map(|r| value(r).filter(|v| v.is_finite()).map(|v| (t(r), v)))
            .collect()
    }

    /// Writes `<dir>/<name>.csv` and `<dir>/<name>.svg`, creating `dir`.
    ///
    /// # Errors
    ///
    /// Any I/O error creating the directory or writing the files.
    pub fn write(&self, dir: &Path, name: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join(format!("{name}.csv")), self.to_csv())?;
        std::fs::write(dir.join(format!("{name}.svg")), self.to_svg())
    }
}

/// One line of a panel: its name, its colour and its points (seconds, value).
type Line<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// The smallest of 1, 2, 2.5 or 5 times a power of ten at or above `v` (an axis maximum).
fn nice(v: f64) -> f64 {
    if v.is_nan() || v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|&c| c >= v * 0.999)
        .unwrap_or(10.0 * p)
}

fn short(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
