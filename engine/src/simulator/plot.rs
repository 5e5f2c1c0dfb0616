//! Line charts as plain SVG text, for the book's plots of simulator runs (`lab simulate
//! --plots DIR`). No plotting crate: an SVG line chart is a few rectangles, a polyline per
//! series and some labels, and writing it by hand keeps the output byte-for-byte stable, so a
//! regenerated plot shows up in `git diff` only when its numbers changed.

use std::fmt::Write;

/// One named line of points `(x, y)`, drawn in the given order.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A chart: axes from the data's range (y from 0), one polyline and markers per series.
#[derive(Debug, Clone, PartialEq)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Powers of two on the x axis, evenly spaced (token budgets, batch sizes).
    pub log2_x: bool,
    /// Powers of ten on the y axis (for values spanning several orders of magnitude; every
    /// y must then be positive). Otherwise the y axis starts at 0.
    pub log10_y: bool,
    /// Draw markers at the points (off for long series such as per-step counts).
    pub markers: bool,
    pub series: Vec<Series>,
}

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 400.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 55.0;
/// Colours that stay apart for readers with the common colour-vision deficiencies (Okabe-Ito).
const COLOURS: [&str; 6] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9",
];

impl LineChart {
    /// The chart as a standalone SVG document.
    pub fn to_svg(&self) -> String {
        let pts = self.series.iter().flat_map(|s| s.points.iter().copied());
        let (mut x0, mut x1) = (f64::INFINITY, f64::NEG_INFINITY);
        let (mut ylo, mut yhi) = (f64::INFINITY, f64::NEG_INFINITY);
        for (x, y) in pts {
            let x = self.tx(x);
            (x0, x1, ylo, yhi) = (x0.min(x), x1.max(x), ylo.min(y), yhi.max(y));
        }
        if !x0.is_finite() {
            (x0, x1, ylo, yhi) = (0.0, 1.0, 1.0, 1.0);
        }
        if !self.log2_x {
            x0 = x0.min(0.0); // a linear axis starts at 0, like the y axis
        }
        if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        // Tick values, and the axis range in the transformed (log or linear) y.
        let (y_ticks, y0, y1) = if self.log10_y {
            let lo = ylo.max(f64::MIN_POSITIVE).log10().floor() as i32;
            let hi = (yhi.max(f64::MIN_POSITIVE).log10().ceil() as i32).max(lo + 1);
            let ticks = (lo..=hi).map(|e| 10f64.powi(e)).collect::<Vec<_>>();
            (ticks, lo as f64, hi as f64)
        } else {
            let ticks = nice_ticks(0.0, if yhi > 0.0 { yhi } else { 1.0 });
            let top = *ticks.last().unwrap_or(&1.0);
            (ticks, 0.0, top)
        };
        let (pw, ph) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
        let px = |x: f64| LEFT + (self.tx(x) - x0) / (x1 - x0) * pw;
        let py = |y: f64| TOP + ph - (self.ty(y) - y0) / (y1 - y0) * ph;

        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
            WIDTH / 2.0,
            esc(&self.title)
        );
        // Grid and y ticks.
        for &t in &y_ticks {
            let y = py(t);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + pw,
                LEFT - 6.0,
                y + 4.0,
                fmt_num(t)
            );
        }
        // X ticks: the points' own x values on a log2 axis, round numbers otherwise.
        let x_ticks: Vec<f64> = if self.log2_x {
            let mut v: Vec<f64> = (self.series.iter())
                .flat_map(|s| s.points.iter().map(|p| p.0))
                .collect();
            v.sort_by(f64::total_cmp);
            v.dedup();
            v
        } else {
            nice_ticks(x0, x1)
                .into_iter()
                .filter(|&t| t >= x0 && t <= x1)
                .collect()
        };
        for &t in &x_ticks {
            let x = px(t);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#999"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                TOP + ph,
                TOP + ph + 5.0,
                TOP + ph + 19.0,
                fmt_num(t)
            );
        }
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            LEFT + pw / 2.0,
            HEIGHT - 12.0,
            esc(&self.x_label)
        );
        let _ = writeln!(
            s,
            r#"<text transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            TOP + ph / 2.0,
            esc(&self.y_label)
        );
        for (i, series) in self.series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let line: Vec<String> = (series.points.iter())
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
                line.join(" ")
            );
            if self.markers {
                for &(x, y) in &series.points {
                    let _ = writeln!(
                        s,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"/>"#,
                        px(x),
                        py(y)
                    );
                }
            }
            // Legend, top right, one line per series.
            let ly = TOP + 16.0 + 16.0 * i as f64;
            let lx = LEFT + pw - 150.0;
            let _ = writeln!(
                s,
                r#"<line x1="{lx:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{colour}" stroke-width="2"/><text x="{:.1}" y="{ly:.1}">{}</text>"#,
                ly - 4.0,
                lx + 18.0,
                ly - 4.0,
                lx + 24.0,
                esc(&series.name)
            );
        }
        s.push_str("</svg>\n");
        s
    }

    fn ty(&self, y: f64) -> f64 {
        if self.log10_y {
            y.max(f64::MIN_POSITIVE).log10()
        } else {
            y
        }
    }

    fn tx(&self, x: f64) -> f64 {
        if self.log2_x {
            x.max(f64::MIN_POSITIVE).log2()
        } else {
            x
        }
    }
}

/// About five round tick values (1, 2 or 5 times a power of ten) covering `lo..=hi`.
pub fn nice_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(f64::MIN_POSITIVE);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).floor() as i64;
    let last = (hi / step).ceil() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

/// A tick label: no exponent, no trailing zeros.
fn fmt_num(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    let s = if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        let digits = (-a.log10().floor()) as usize + 1; // two significant digits
        format!("{v:.digits$}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(nice_ticks(0.0, 9.0), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(
            nice_ticks(0.0, 0.3),
            vec![0.0, 0.1, 0.2, 0.30000000000000004]
        );
        assert_eq!(fmt_num(0.30000000000000004), "0.3");
        assert_eq!(fmt_num(2048.0), "2048");
        assert_eq!(fmt_num(0.0125), "0.013");
    }

    #[test]
    fn a_chart_has_one_polyline_per_series_and_escapes_labels() {
        let chart = LineChart {
            title: "a < b".into(),
            x_label: "budget".into(),
            y_label: "s".into(),
            log2_x: true,
            log10_y: false,
            markers: true,
            series: vec![
                Series {
                    name: "one".into(),
                    points: vec![(64.0, 1.0), (128.0, 2.0)],
                },
                Series {
                    name: "two".into(),
                    points: vec![(64.0, 0.5), (128.0, 0.0)],
                },
            ],
        };
        let svg = chart.to_svg();
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 4);
        assert!(svg.contains("a &lt; b") && svg.ends_with("</svg>\n"));
        // The log2 axis puts 64 at the left edge and 128 at the right.
        assert!(svg.contains(r#"points="70.0,"#) && svg.contains("620.0,"));
        // An empty chart is still a valid document.
        let empty = LineChart {
            series: vec![],
            ..chart.clone()
        };
        assert!(empty.to_svg().ends_with("</svg>\n"));
        // A log axis gets one tick per power of ten: 0.5 and 2 span 0.1 to 10.
        let log = LineChart {
            log10_y: true,
            series: vec![Series {
                name: "one".into(),
                points: vec![(64.0, 0.5), (128.0, 2.0)],
            }],
            ..chart
        }
        .to_svg();
        for tick in [">0.1<", ">1<", ">10<"] {
            assert!(log.contains(tick), "{tick} missing");
        }
    }
}
