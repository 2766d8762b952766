//! A small SVG chart writer for the benchmarks' plots: a grid of panels, each with linear axes,
//! "nice" tick labels, polylines and point marks, and one legend for the figure.
//!
//! Only what `bench bbr` draws: no log axes, no text wrapping. Text is XML-escaped; coordinates
//! are finite (non-finite data points are skipped).

use std::fmt::Write as _;

/// One axis: its label and data range. `reversed` puts `min` on the right (Pantheon draws delay
/// that way, so that "better" is up and to the right).
#[derive(Clone, Debug)]
pub struct Axis {
    pub label: String,
    pub min: f64,
    pub max: f64,
    pub reversed: bool,
}

impl Axis {
    /// An axis spanning `values` (0 included when `from_zero`), widened to nice tick bounds.
    pub fn fit(label: &str, values: impl IntoIterator<Item = f64>, from_zero: bool) -> Self {
        let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values.into_iter().filter(|v| v.is_finite()) {
            min = min.min(v);
            max = max.max(v);
        }
        if !min.is_finite() {
            (min, max) = (0.0, 1.0);
        }
        if from_zero {
            min = min.min(0.0);
        }
        if max - min < 1e-9 {
            let pad = if max.abs() > 1e-9 {
                max.abs() * 0.1
            } else {
                1.0
            };
            (min, max) = (min - pad, max + pad);
        }
        let step = nice_step(max - min);
        Self {
            label: label.to_owned(),
            min: (min / step).floor() * step,
            max: (max / step).ceil() * step,
            reversed: false,
        }
    }

    /// Tick positions: multiples of the [`nice_step`] of the range.
    pub fn ticks(&self) -> Vec<f64> {
        let step = nice_step(self.max - self.min);
        let first = (self.min / step).ceil() as i64;
        let last = (self.max / step + 1e-9).floor() as i64;
        (first..=last).map(|i| i as f64 * step).collect()
    }

    /// `v`'s position on a `length`-pixel axis, 0 at the start.
    fn place(&self, v: f64, length: f64) -> f64 {
        let span = (self.max - self.min).max(f64::MIN_POSITIVE);
        let f = ((v - self.min) / span).clamp(-0.05, 1.05);
        if self.reversed {
            (1.0 - f) * length
        } else {
            f * length
        }
    }
}

/// The smallest 1, 2 or 5 × 10^k step of at least `span` / 5: at most five intervals.
pub fn nice_step(span: f64) -> f64 {
    let rough = (span / 5.0).abs().max(1e-12);
    let magnitude = 10f64.powf(rough.log10().floor());
    let fraction = rough / magnitude;
    let nice = if fraction <= 1.0 {
        1.0
    } else if fraction <= 2.0 {
        2.0
    } else if fraction <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// A polyline in data coordinates.
#[derive(Clone, Debug)]
pub struct Line {
    pub color: &'static str,
    pub points: Vec<(f64, f64)>,
}

/// A point mark: a small circle (one run) or a large one with an outline (the median).
#[derive(Clone, Debug)]
pub struct Mark {
    pub color: &'static str,
    pub x: f64,
    pub y: f64,
    pub large: bool,
}

#[derive(Clone, Debug)]
pub struct Panel {
    pub title: String,
    pub x: Axis,
    pub y: Axis,
    pub lines: Vec<Line>,
    pub marks: Vec<Mark>,
}

const PANEL_W: f64 = 420.0;
const PANEL_H: f64 = 220.0;
/// Room left of and below each plot area for tick labels and the axis label.
const MARGIN_L: f64 = 64.0;
const MARGIN_B: f64 = 44.0;
const MARGIN_T: f64 = 26.0;
const MARGIN_R: f64 = 16.0;
const HEADER: f64 = 30.0;
const LEGEND_ROW: f64 = 20.0;

/// Colours that stay distinguishable for up to eight series (Okabe–Ito).
pub const PALETTE: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000",
];

/// The whole figure: `title` above, `panels` in rows of `columns`, `legend` (label, colour) below.
pub fn figure(title: &str, panels: &[Panel], columns: usize, legend: &[(String, &str)]) -> String {
    let columns = columns.max(1);
    let rows = panels.len().div_ceil(columns).max(1);
    let cell_w = MARGIN_L + PANEL_W + MARGIN_R;
    let cell_h = MARGIN_T + PANEL_H + MARGIN_B;
    let width = cell_w * columns as f64;
    let height = HEADER + cell_h * rows as f64 + LEGEND_ROW * (legend.len() as f64 + 1.0);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(
        s,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{:.1}" y="20" text-anchor="middle" font-size="15">{}</text>"#,
        width / 2.0,
        escape(title)
    );
    for (i, panel) in panels.iter().enumerate() {
        let left = cell_w * (i % columns) as f64 + MARGIN_L;
        let top = HEADER + cell_h * (i / columns) as f64 + MARGIN_T;
        draw_panel(&mut s, panel, left, top);
    }
    let legend_top = HEADER + cell_h * rows as f64;
    for (i, (label, color)) in legend.iter().enumerate() {
        let y = legend_top + LEGEND_ROW * (i as f64 + 0.5);
        let _ = write!(
            s,
            r#"<rect x="{MARGIN_L}" y="{:.1}" width="14" height="10" fill="{color}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            y - 9.0,
            MARGIN_L + 20.0,
            y,
            escape(label)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn draw_panel(s: &mut String, panel: &Panel, left: f64, top: f64) {
    let x = |v: f64| left + panel.x.place(v, PANEL_W);
    let y = |v: f64| top + PANEL_H - panel.y.place(v, PANEL_H);
    let _ = write!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-weight="bold">{}</text><rect x="{left:.1}" y="{top:.1}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#444"/>"##,
        left + PANEL_W / 2.0,
        top - 8.0,
        escape(&panel.title)
    );
    for tick in panel.x.ticks() {
        let px = x(tick);
        let _ = write!(
            s,
            r##"<line x1="{px:.1}" y1="{top:.1}" x2="{px:.1}" y2="{:.1}" stroke="#ddd"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            top + PANEL_H,
            top + PANEL_H + 15.0,
            tick_label(tick)
        );
    }
    for tick in panel.y.ticks() {
        let py = y(tick);
        let _ = write!(
            s,
            r##"<line x1="{left:.1}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + PANEL_W,
            left - 5.0,
            py + 4.0,
            tick_label(tick)
        );
    }
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text transform="translate({:.1} {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        left + PANEL_W / 2.0,
        top + PANEL_H + 34.0,
        escape(&panel.x.label),
        left - 48.0,
        top + PANEL_H / 2.0,
        escape(&panel.y.label)
    );
    for line in &panel.lines {
        let points: Vec<String> = line
            .points
            .iter()
            .filter(|(a, b)| a.is_finite() && b.is_finite())
            .map(|&(a, b)| format!("{:.1},{:.1}", x(a), y(b)))
            .collect();
        if points.len() > 1 {
            let _ = write!(
                s,
                r#"<polyline fill="none" stroke="{}" stroke-width="1.2" points="{}"/>"#,
                line.color,
                points.join(" ")
            );
        }
    }
    for mark in panel
        .marks
        .iter()
        .filter(|m| m.x.is_finite() && m.y.is_finite())
    {
        let (r, stroke) = if mark.large {
            (7.0, "black")
        } else {
            (3.0, "none")
        };
        let _ = write!(
            s,
            r#"<circle cx="{:.1}" cy="{:.1}" r="{r}" fill="{}" fill-opacity="{}" stroke="{stroke}"/>"#,
            x(mark.x),
            y(mark.y),
            mark.color,
            if mark.large { 1.0 } else { 0.6 }
        );
    }
}

fn tick_label(v: f64) -> String {
    let text = format!("{v:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".into()
    } else {
        text.into()
    }
}

/// `text` with XML's five special characters escaped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(100.0), 20.0);
        assert_eq!(nice_step(7.0), 2.0);
        // 0.3 / 5 = 0.06: the next 1-2-5 step up is 0.1.
        assert_eq!(nice_step(0.3), 0.1);
        assert_eq!(nice_step(0.2), 0.05);
        assert_eq!(nice_step(1000.0), 200.0);
        assert_eq!(nice_step(24.0), 5.0);
    }

    #[test]
    fn fitted_axis_covers_data_with_round_ticks() {
        let axis = Axis::fit("x", [21.3, 37.9, f64::NAN], false);
        assert_eq!((axis.min, axis.max), (20.0, 40.0));
        assert_eq!(axis.ticks(), vec![20.0, 25.0, 30.0, 35.0, 40.0]);
        let zero = Axis::fit("y", [94.0, 95.0], true);
        assert_eq!((zero.min, zero.max), (0.0, 100.0));
        let flat = Axis::fit("y", [5.0, 5.0], false);
        assert!(flat.min < 5.0 && flat.max > 5.0);
    }

    #[test]
    fn reversed_axis_places_min_on_the_right() {
        let mut axis = Axis::fit("x", [0.0, 10.0], false);
        assert_eq!(axis.place(0.0, 100.0), 0.0);
        axis.reversed = true;
        assert_eq!(axis.place(0.0, 100.0), 100.0);
        assert_eq!(axis.place(10.0, 100.0), 0.0);
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(escape(r#"a<b>&"c'"#), "a&lt;b&gt;&amp;&quot;c&apos;");
    }

    #[test]
    fn figure_is_well_formed_xml_with_every_element() {
        let panel = Panel {
            title: "cwnd <KB> & rate".into(),
            x: Axis::fit("time (s)", [0.0, 10.0], true),
            y: Axis::fit("KB", [0.0, 500.0], true),
            lines: vec![
                Line {
                    color: PALETTE[0],
                    points: vec![(0.0, 1.0), (1.0, f64::NAN), (2.0, 300.0), (3.0, 250.0)],
                },
                // One point: nothing to draw.
                Line {
                    color: PALETTE[1],
                    points: vec![(1.0, 1.0)],
                },
            ],
            marks: vec![
                Mark {
                    color: PALETTE[2],
                    x: 5.0,
                    y: 100.0,
                    large: true,
                },
                Mark {
                    color: PALETTE[2],
                    x: f64::INFINITY,
                    y: 1.0,
                    large: false,
                },
            ],
        };
        let svg = figure(
            "a \"title\"",
            &[panel.clone(), panel],
            2,
            &[("bbr_p2p".into(), PALETTE[0])],
        );
        let root = xmltree::Element::parse(svg.as_bytes()).expect("well-formed XML");
        assert_eq!(root.name, "svg");
        let count = |name: &str| {
            root.children
                .iter()
                .filter_map(|c| c.as_element())
                .filter(|e| e.name == name)
                .count()
        };
        assert_eq!(count("polyline"), 2, "one drawable line per panel");
        assert_eq!(count("circle"), 2, "the non-finite mark is skipped");
        let texts: Vec<String> = root
            .children
            .iter()
            .filter_map(|c| c.as_element())
            .filter(|e| e.name == "text")
            .filter_map(|e| e.get_text().map(|t| t.into_owned()))
            .collect();
        assert!(texts.iter().any(|t| t == "cwnd <KB> & rate"), "{texts:?}");
        assert!(texts.iter().any(|t| t == "a \"title\""));
        assert!(texts.iter().any(|t| t == "bbr_p2p"));
        // A polyline's points are finite numbers inside the figure.
        let line = root
            .children
            .iter()
            .filter_map(|c| c.as_element())
            .find(|e| e.name == "polyline")
            .unwrap();
        let points = &line.attributes["points"];
        assert_eq!(points.split(' ').count(), 3, "the NaN point is skipped");
        let width: f64 = root.attributes["width"].parse().unwrap();
        for pair in points.split(' ') {
            let (a, _) = pair.split_once(',').unwrap();
            let a: f64 = a.parse().unwrap();
            assert!((0.0..=width).contains(&a));
        }
    }
}
