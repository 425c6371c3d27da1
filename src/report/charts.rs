//! Line charts for run reports (latency percentiles, SLO compliance), written as PNG for quick
//! viewing and SVG for zooming, both from one drawing routine.
//!
//! Text uses DejaVu Sans compiled into the binary via plotters' `ab_glyph` feature instead of
//! the default `ttf` feature, which links fontconfig/freetype and depends on the host's fonts:
//! charts would differ, or fail, on CI machines and minimal containers. SVG text is emitted as
//! `font-family="sans-serif"`, so viewers use their own face; layout still uses DejaVu metrics.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;

/// One plotted series. `y = None` means "not delivered yet / infinite" for that x: draw it clipped at the top of the y range
/// (so an outage shows as a spike to the top, never as a gap), e.g. with the line going to y_max.
/// `y = Some(NaN)` (or a NaN x) is a break: there is no data there, and the line does not join
/// its neighbours across it; a lone point between breaks is drawn as a dot.
pub struct Line {
    pub label: String,
    pub points: Vec<(f64, Option<f64>)>,
    /// Palette index; `None` = the line's own position. Lines of one group (a region's p50
    /// and p99) share a colour and differ by `dashed`.
    pub colour: Option<usize>,
    pub dashed: bool,
}

impl Line {
    /// A solid line in the colour of its position.
    pub fn new(label: impl Into<String>, points: Vec<(f64, Option<f64>)>) -> Line {
        Line {
            label: label.into(),
            points,
            colour: None,
            dashed: false,
        }
    }
}

/// A horizontal reference line such as an SLO target (dashed if you can, labelled in the legend).
pub struct HLine {
    pub y: f64,
    pub label: String,
}

/// A vertical event marker such as a chaos action at x seconds, drawn as a vertical line with its label written next to it at the top.
#[derive(Debug, Clone)]
pub struct Marker {
    pub x: f64,
    pub label: String,
    /// A consequence rather than an action (a balancer eviction): drawn lighter, and its label
    /// is the first left out when labels would need more than [`MAX_MARKER_ROWS`] rows.
    pub minor: bool,
}

/// Everything needed to draw one chart; the caller owns ranges and labels so that several
/// charts of the same run can share an x axis.
pub struct ChartSpec {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub lines: Vec<Line>,
    pub hlines: Vec<HLine>,
    pub markers: Vec<Marker>,
    pub x_range: (f64, f64),
    pub y_range: Option<(f64, f64)>,
    pub y_log: bool,
}

/// Why a chart could not be written. Errors from plotters are generic over the backend, so
/// they are carried as strings together with the file that failed.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("cannot create chart directory {path}: {message}")]
    CreateDir { path: PathBuf, message: String },
    #[error("cannot render chart {path}: {message}")]
    Render { path: PathBuf, message: String },
    #[error("cannot load embedded chart font: {0}")]
    Font(String),
}

/// Family name used for every text element. plotters' own defaults (mesh labels, legend)
/// ask for "sans-serif", so registering under that name covers them too.
const FONT: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 600;
const TITLE_PX: u32 = 28;
const DESC_PX: u32 = 20;
const TICK_PX: u32 = 16;
const LEGEND_PX: u32 = 16;
const MARKER_PX: u32 = 15;
const MARKER_ROW_H: i32 = MARKER_PX as i32 + 7;
const MARGIN: u32 = 15;
const Y_AREA: u32 = 95;
/// Legend box width beyond its longest label: padding, line sample and gap to the plot.
const LEGEND_EXTRA: u32 = 8 * 3 + 28 + 12;
const LEGEND_MIN_W: u32 = 200;
/// Tableau-10: colours that stay distinguishable for the ~8 series a report plots.
const PALETTE: [u32; 10] = [
    0x1f77b4, 0xff7f0e, 0x2ca02c, 0xd62728, 0x9467bd, 0x8c564b, 0xe377c2, 0x7f7f7f, 0xbcbd22, 0x17becf,
];
/// Reference lines are dark so they stand apart from the data colours.
const HLINE_COLOURS: [u32; 3] = [0x000000, 0xaa0000, 0x005a00];
const MARKER_COLOUR: RGBColor = RGBColor(90, 90, 90);
const MINOR_MARKER_COLOUR: RGBColor = RGBColor(150, 150, 150);
/// Label rows above the plot before minor markers lose their labels (their lines stay).
pub const MAX_MARKER_ROWS: usize = 4;

/// Registers the embedded font once per process: plotters keeps a global font table and any
/// text fails with `FontUnavailable` until it is filled.
fn ensure_font() -> Result<(), ChartError> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    let register = || {
        plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES)
            .map_err(|_| "DejaVuSans.ttf is not a valid font".to_string())
    };
    let registered = REGISTERED.get_or_init(register).clone();
    registered.map_err(ChartError::Font)
}

/// Writes `<dir>/<stem>.png` (1200x600) and `<dir>/<stem>.svg` (same layout). Creates `dir` if missing.
pub fn render(spec: &ChartSpec, dir: &Path, stem: &str) -> Result<(), ChartError> {
    ensure_font()?;
    std::fs::create_dir_all(dir).map_err(|e| ChartError::CreateDir {
        path: dir.to_path_buf(),
        message: e.to_string(),
    })?;
    // plotters' error type differs per backend, hence the strings.
    let fail = |path: &PathBuf, message| ChartError::Render {
        path: path.clone(),
        message,
    };
    let png = dir.join(format!("{stem}.png"));
    let area = BitMapBackend::new(&png, (WIDTH, HEIGHT)).into_drawing_area();
    draw(&area, spec).map_err(|e| fail(&png, e.to_string()))?;
    let svg = dir.join(format!("{stem}.svg"));
    let area = SVGBackend::new(&svg, (WIDTH, HEIGHT)).into_drawing_area();
    draw(&area, spec).map_err(|e| fail(&svg, e.to_string()))
}

/// Picks entry `i` of a hex palette, wrapping so any number of series gets a colour.
fn colour(palette: &[u32], i: usize) -> RGBColor {
    let c = palette[i % palette.len()]; // callers pass the non-empty constant palettes
    RGBColor((c >> 16) as u8, (c >> 8) as u8, c as u8)
}

/// Every text element names the font explicitly rather than relying on plotters' defaults.
fn text(px: u32) -> TextStyle<'static> {
    TextStyle::from((FONT, px).into_font()).color(&BLACK)
}

/// Returns a usable (lo, hi) with lo < hi, a finite span, and lo > 0 on log axes, whatever the
/// caller passed: plotters can neither map points nor place ticks on empty or NaN ranges.
fn sane_range(lo: f64, hi: f64, log: bool) -> (f64, f64) {
    let fallback: (f64, f64) = if log { (1.0, 10.0) } else { (0.0, 1.0) };
    let lo = if lo.is_finite() { lo } else { fallback.0 };
    let hi = if hi.is_finite() { hi } else { fallback.1.max(lo + 1.0) };
    let (mut lo, mut hi) = (lo.min(hi), lo.max(hi));
    if log && lo <= 0.0 {
        lo = (hi / 10.0).clamp(f64::MIN_POSITIVE, 1.0);
    }
    if hi <= lo {
        hi = lo + if log { lo * 9.0 } else { lo.abs().max(1.0) };
    }
    match (hi - lo).is_finite() && hi > lo && (!log || hi / lo < 1e300) {
        true => (lo, hi),
        false => fallback,
    }
}

/// Auto y range: from 0 (1 on log axes) to 10% above the largest finite value, including
/// reference lines so an SLO target is visible even when every sample is far below it.
fn y_bounds(spec: &ChartSpec) -> (f64, f64) {
    if let Some((lo, hi)) = spec.y_range {
        return sane_range(lo, hi, spec.y_log);
    }
    let ys = spec.lines.iter().flat_map(|l| &l.points).filter_map(|p| p.1);
    let ys = ys.chain(spec.hlines.iter().map(|h| h.y));
    let max = ys.filter(|y| y.is_finite()).fold(f64::NEG_INFINITY, f64::max);
    let lo = if spec.y_log { 1.0 } else { 0.0 };
    sane_range(lo, if max > lo { max * 1.1 } else { f64::NAN }, spec.y_log)
}

/// Trims tick labels to what a reader needs: integers without ".0", at most three decimals,
/// exponents only for extreme magnitudes.
fn fmt_tick(v: &f64) -> String {
    let (v, a) = (*v + 0.0, v.abs()); // `+ 0.0` turns -0.0 into 0.0
    if a != 0.0 && !(1e-3..1e7).contains(&a) {
        format!("{v:.1e}")
    } else if (v - v.round()).abs() < 1e-9 * a.max(1.0) {
        format!("{}", v.round())
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

type DrawResult<T, DB> = Result<T, DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// Draws the whole chart onto any backend, so PNG and SVG share one layout.
fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, spec: &ChartSpec) -> DrawResult<(), DB> {
    root.fill(&WHITE)?;
    // The legend sits right of the plot so it never hides data; size it from the labels.
    let mut label_w = 0;
    let labels = spec.lines.iter().map(|l| &l.label);
    for l in labels.chain(spec.hlines.iter().map(|h| &h.label)) {
        label_w = label_w.max(root.estimate_text_size(l, &text(LEGEND_PX))?.0);
    }
    // A minimum width keeps plot areas (and so x axes) aligned across a report's charts.
    let legend_w = match label_w {
        0 => 0,
        w => (w + LEGEND_EXTRA).clamp(LEGEND_MIN_W, WIDTH * 2 / 5),
    };
    let xr @ (x0, x1) = sane_range(spec.x_range.0, spec.x_range.1, false);
    let yr @ (y0, y1) = y_bounds(spec);
    // Marker labels sit in rows between title and plot; a first layout pass over the
    // predicted plot span tells how many rows to reserve.
    let predicted = ((MARGIN + Y_AREA) as i32, (WIDTH - MARGIN - legend_w) as i32);
    let rows = marker_labels(root, spec, xr, predicted)?;
    let n_rows = rows.iter().map(|m| m.row as u32 + 1).max().unwrap_or(0);
    let title_style = text(TITLE_PX);
    let below_title = root.margin(8, 0, 0, 0).titled(&spec.title, title_style)?;
    let mut builder = ChartBuilder::on(&below_title);
    builder
        .margin(MARGIN)
        .margin_top(8 + n_rows * MARKER_ROW_H as u32)
        .margin_right(MARGIN + legend_w)
        .x_label_area_size(55)
        .y_label_area_size(Y_AREA);
    let (px, py) = if spec.y_log {
        let chart = builder.build_cartesian_2d(x0..x1, (y0..y1).log_scale())?;
        plot(chart, spec, xr, yr)?
    } else {
        plot(builder.build_cartesian_2d(x0..x1, y0..y1)?, spec, xr, yr)?
    };
    let anchor = Pos::new(HPos::Left, VPos::Center);
    for m in marker_labels(root, spec, xr, (px.start, px.end))? {
        let colour = if m.minor { MINOR_MARKER_COLOUR } else { MARKER_COLOUR };
        let y = py.start - (m.row as i32 + 1) * MARKER_ROW_H;
        let mid = y + MARKER_ROW_H / 2;
        let connector = [(m.px, py.start), (m.px, mid)];
        root.draw(&PathElement::new(connector, colour))?;
        let bg = [(m.left - 2, y + 2), (m.right + 2, y + MARKER_ROW_H - 2)];
        root.draw(&Rectangle::new(bg, WHITE.filled()))?;
        let style = text(MARKER_PX).color(&colour).pos(anchor);
        root.draw(&Text::new(m.label, (m.left, mid), style))?;
    }
    if label_w > 0 {
        draw_legend(root, spec, (px.end, py.start), label_w as i32)?;
    }
    root.present()
}

/// Everything inside the plotting area; generic over the y axis type so the linear and
/// logarithmic charts share this code. Returns the plot's pixel ranges for the overlays.
fn plot<'a, DB, Y>(
    mut chart: ChartContext<'a, DB, Cartesian2d<RangedCoordf64, Y>>,
    spec: &ChartSpec,
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
) -> DrawResult<(Range<i32>, Range<i32>), DB>
where
    DB: DrawingBackend + 'a,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc(&spec.x_label)
        .y_desc(&spec.y_label)
        .axis_desc_style(text(DESC_PX))
        .label_style(text(TICK_PX))
        .x_labels(12)
        .y_labels(10)
        .x_label_formatter(&fmt_tick)
        .y_label_formatter(&fmt_tick)
        .bold_line_style(RGBColor(215, 215, 215))
        .light_line_style(RGBColor(240, 240, 240))
        .max_light_lines(1)
        .draw()?;
    // Event lines go under the data: a spike often starts exactly at the event.
    // (Range::contains is false for NaN and, with finite bounds, for infinities.)
    // Minor markers first, so an action at the same x draws over its consequence.
    let mut markers: Vec<&Marker> = spec.markers.iter().filter(|m| (x0..=x1).contains(&m.x)).collect();
    markers.sort_by_key(|m| !m.minor);
    for m in markers {
        let (colour, dash, gap) = match m.minor {
            true => (MINOR_MARKER_COLOUR, 2, 4),
            false => (MARKER_COLOUR, 6, 4),
        };
        let style = colour.stroke_width(1);
        chart.draw_series(DashedLineSeries::new([(m.x, y0), (m.x, y1)], dash, gap, style))?;
    }
    for (i, h) in spec.hlines.iter().enumerate() {
        let style = colour(&HLINE_COLOURS, i).stroke_width(2);
        let pts = match (y0..=y1).contains(&h.y) {
            true => vec![(x0, h.y), (x1, h.y)],
            false => vec![], // still listed in the legend
        };
        chart.draw_series(DashedLineSeries::new(pts, 10, 6, style))?;
    }
    for (i, line) in spec.lines.iter().enumerate() {
        // Undelivered (None / +inf) goes to the top edge so outages read as spikes. Clamping is
        // done here in data space: plotters only pins out-of-range pixels to the plot edge
        // (distorting slopes), and a log axis maps values <= 0 to NaN. NaN points break the line.
        let style = colour(&PALETTE, line.colour.unwrap_or(i)).stroke_width(2);
        let mut runs: Vec<Vec<(f64, f64)>> = vec![vec![]];
        for &(x, y) in &line.points {
            let y = y.unwrap_or(f64::INFINITY);
            if x.is_nan() || y.is_nan() {
                runs.push(vec![]);
            } else if (x0..=x1).contains(&x) {
                runs.last_mut().into_iter().for_each(|r| r.push((x, y.clamp(y0, y1))));
            }
        }
        for run in runs.into_iter().filter(|r| !r.is_empty()) {
            match (run.len(), line.dashed) {
                (1, _) => chart.draw_series([Circle::new(run[0], 2, style.filled())])?,
                (_, true) => chart.draw_series(DashedLineSeries::new(run, 7, 5, style))?,
                (_, false) => chart.draw_series(LineSeries::new(run, style))?,
            };
        }
    }
    Ok(chart.plotting_area().get_pixel_range())
}

/// A marker label placed above the plot: line at `px`, text spanning `left..right` in `row`.
struct MarkerLabel {
    px: i32,
    left: i32,
    right: i32,
    row: usize,
    label: String,
    minor: bool,
}

/// Places marker labels into rows above the plot so that nearby events (e.g. "kill" then
/// "restore" seconds apart) overwrite neither each other nor each other's connector lines.
/// Going right to left means labels, which mostly extend rightwards, are placed before the
/// connectors that could cross them. A label goes left of its line when that needs a lower row
/// (a staircase of close actions) or when it would run off the image.
///
/// When that takes more than [`MAX_MARKER_ROWS`] rows, minor markers are left unlabelled (their
/// dotted lines remain) so the actions keep readable labels and the plot keeps its height.
fn marker_labels<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    spec: &ChartSpec,
    xr: (f64, f64),
    px: (i32, i32),
) -> DrawResult<Vec<MarkerLabel>, DB> {
    let all = place_labels(root, spec, xr, px, true)?;
    match all.iter().any(|m| m.row >= MAX_MARKER_ROWS) {
        true => place_labels(root, spec, xr, px, false),
        false => Ok(all),
    }
}

fn place_labels<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    spec: &ChartSpec,
    (x0, x1): (f64, f64),
    (left_px, right_px): (i32, i32),
    with_minor: bool,
) -> DrawResult<Vec<MarkerLabel>, DB> {
    let in_range = |m: &&Marker| (x0..=x1).contains(&m.x) && (with_minor || !m.minor);
    let mut markers: Vec<&Marker> = spec.markers.iter().filter(in_range).collect();
    markers.sort_by(|a, b| b.x.total_cmp(&a.x));
    let to_px = |x: f64| left_px + ((x - x0) / (x1 - x0) * f64::from(right_px - left_px)).round() as i32;
    let all_px: Vec<i32> = markers.iter().map(|m| to_px(m.x)).collect();
    let mut out: Vec<MarkerLabel> = Vec::with_capacity(markers.len());
    for m in markers {
        let px = to_px(m.x);
        let w = root.estimate_text_size(&m.label, &text(MARKER_PX))?.0 as i32;
        // In row `r` a placed label blocks its own span, and its connector blocks a pixel
        // column in every row below its own.
        let blocked = |r: usize, a: i32, b: i32, connectors: bool| {
            out.iter().any(|o| match o.row {
                row if row == r => a <= o.right && o.left <= b,
                row if row > r && connectors => a <= o.px && o.px <= b,
                _ => false,
            })
        };
        let lowest_row = |left: i32| {
            let free = |r: &usize| {
                !blocked(*r, left - 8, left + w + 8, true) && (0..*r).all(|lower| !blocked(lower, px, px, false))
            };
            let rows = out.iter().map(|o| o.row + 1).max().unwrap_or(0);
            (0..=rows).find(free).unwrap_or(rows)
        };
        // Right of the line reads most naturally; the left side when it needs a lower row.
        // A label left of its line must not hide another marker's line, whose connector
        // (for markers further left, not placed yet) may have to pass through it.
        let (right_side, left_side) = (px + 4, px - 4 - w);
        let fits_right = right_side + w <= root.dim_in_pixel().0 as i32 - 5;
        let fits_left = left_side >= 0 && !all_px.iter().any(|&o| o != px && (left_side - 8..=px).contains(&o));
        let sides = [fits_right.then_some(right_side), fits_left.then_some(left_side)];
        let (row, left) = sides
            .into_iter()
            .flatten()
            .map(|left| (lowest_row(left), left))
            .min_by_key(|(row, _)| *row) // the first (right) on ties
            .unwrap_or_else(|| (lowest_row(0), 0));
        let (right, label, minor) = (left + w, m.label.clone(), m.minor);
        out.push(MarkerLabel {
            px,
            left,
            right,
            row,
            label,
            minor,
        });
    }
    Ok(out)
}

/// Legend box right of the plot's top-right corner `(x, y)`. Drawn by hand because plotters'
/// series-label box is confined to the plotting area, where it hides data.
fn draw_legend<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    spec: &ChartSpec,
    (x, y): (i32, i32),
    label_w: i32,
) -> DrawResult<(), DB> {
    let series = spec.lines.iter().enumerate();
    let series = series.map(|(i, l)| (&l.label, colour(&PALETTE, l.colour.unwrap_or(i)), l.dashed));
    let refs = spec.hlines.iter().enumerate();
    let refs = refs.map(|(i, h)| (&h.label, colour(&HLINE_COLOURS, i), true));
    let entries: Vec<_> = series.chain(refs).collect();
    let (pad, sample, row_h) = (8, 28, LEGEND_PX as i32 + 8);
    let (x, w) = (x + 12, pad * 3 + sample + label_w);
    let corners = [(x, y), (x + w, y + pad * 2 + row_h * entries.len() as i32)];
    root.draw(&Rectangle::new(corners, WHITE.mix(0.85).filled()))?;
    root.draw(&Rectangle::new(corners, RGBColor(160, 160, 160)))?;
    let style = text(LEGEND_PX).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, (label, colour, dashed)) in entries.into_iter().enumerate() {
        let (mid, x0) = (y + pad + row_h * i as i32 + row_h / 2, x + pad);
        let (line, gap) = (colour.stroke_width(2), if dashed { 6 } else { 0 });
        root.draw(&PathElement::new([(x0, mid), (x0 + 11, mid)], line))?;
        let second = [(x0 + 11 + gap, mid), (x0 + sample, mid)];
        root.draw(&PathElement::new(second, line))?;
        let pos = (x0 + sample + pad, mid);
        root.draw(&Text::new(label.clone(), pos, style.clone()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    const NAN: f64 = f64::NAN;
    const INF: f64 = f64::INFINITY;

    fn marker(x: f64, label: &str) -> Marker {
        let label = label.into();
        Marker { x, label, minor: false }
    }

    fn line(label: &str, points: Vec<(f64, Option<f64>)>) -> Line {
        Line::new(label, points)
    }

    /// A sawtooth with one undelivered (None) sample, i.e. an outage spike.
    fn sawtooth(label: &str, scale: f64) -> Line {
        let y = |s: i32| (s != 65).then_some(scale * f64::from(1 + s % 7));
        line(label, (0..=180).map(|s| (f64::from(s), y(s))).collect())
    }

    fn spec(lines: Vec<Line>, y_log: bool) -> ChartSpec {
        let (title, label) = ("Delivery time p99".to_string(), "SLO".to_string());
        ChartSpec {
            title,
            x_label: "run time (s)".into(),
            y_label: "delivery time (ms)".into(),
            lines,
            hlines: vec![HLine { y: 5000.0, label }],
            markers: vec![marker(60.0, "kill region/us-east"), marker(75.0, "restore")],
            x_range: (0.0, 180.0),
            y_range: None,
            y_log,
        }
    }

    fn render_ok(s: &ChartSpec, stem: &str) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("nested/charts"); // also checks the directory gets created
        render(s, &dir, stem).unwrap();
        let png = std::fs::read(dir.join(format!("{stem}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
        let svg = std::fs::read_to_string(dir.join(format!("{stem}.svg"))).unwrap();
        assert!(svg.contains("<svg") && svg.contains(&s.title), "{svg}");
    }

    #[test]
    fn renders_lines_spike_hline_and_markers() {
        let lines = ["p50", "p90", "p99"].iter().zip([10.0, 50.0, 200.0]);
        let mut lines: Vec<Line> = lines.map(|(l, k)| sawtooth(l, k)).collect();
        // A group's p50 dashed in its p99's colour, and a lighter marker for a reaction.
        let mut p50 = sawtooth("east p50", 5.0);
        (p50.colour, p50.dashed) = (Some(2), true);
        lines.push(p50);
        let mut s = spec(lines, false);
        s.markers.push(Marker {
            minor: true,
            ..marker(60.4, "evict us-east-1 +1")
        });
        render_ok(&s, "all");
    }

    #[test]
    fn empty_and_all_none_charts_render() {
        let mut empty = spec(vec![], false);
        (empty.hlines, empty.markers) = (vec![], vec![]);
        render_ok(&empty, "empty");
        let lost = line("lost", vec![(1.0, None), (2.0, None)]);
        render_ok(&spec(vec![lost], true), "lost");
    }

    #[test]
    fn log_scale_renders_and_clamps_non_positive_values() {
        let mut l = sawtooth("p99", 100.0);
        l.points.extend([(170.0, Some(0.0)), (171.0, Some(-5.0))]);
        let mut s = spec(vec![l], true);
        render_ok(&s, "log");
        s.y_range = Some((-1.0, 60_000.0));
        render_ok(&s, "log");
        assert_eq!(y_bounds(&spec(vec![], true)), (1.0, 5500.0));
    }

    #[test]
    fn hostile_inputs_do_not_panic() {
        let p = |x, y| (x, Some(y));
        let (a, b) = ([p(NAN, 1.0), p(1.0, NAN), p(2.0, INF)], [p(3.0, -INF), p(-5.0, 1.0)]);
        let pts = [&a[..], &b, &[p(500.0, 1e300)]].concat();
        let lines = (0..12).map(|i| line(&i.to_string(), pts.clone()));
        let mut s = spec(lines.collect(), false);
        (s.x_range, s.y_range) = ((NAN, INF), Some((10.0, 10.0)));
        let label = String::new();
        s.hlines.push(HLine { y: NAN, label });
        let xs = [0.5, NAN, 0.5, 0.5, 0.99, 1.0, -3.0, INF];
        s.markers.extend(xs.map(|x| marker(x, "an event label")));
        render_ok(&s, "hostile");
        let bad = [(NAN, -4.0), (NAN, -4.0), (1e-300, 1e300)];
        for (log, range) in [false, true, true].into_iter().zip(bad) {
            (s.y_log, s.y_range) = (log, Some(range));
            render_ok(&s, "hostile");
        }
    }

    #[test]
    fn ranges_and_tick_labels_are_sane() {
        assert_eq!(sane_range(NAN, NAN, false), (0.0, 1.0));
        assert_eq!(sane_range(5.0, 2.0, false), (2.0, 5.0));
        assert_eq!(sane_range(-3.0, 100.0, true), (1.0, 100.0));
        assert_eq!(sane_range(0.0, 0.5, true), (0.05, 0.5));
        assert_eq!(sane_range(-1e308, 1e308, false), (0.0, 1.0));
        let ticks: Vec<_> = [1000.0, -0.0, 0.25, 2.5e9].iter().map(fmt_tick).collect();
        assert_eq!(ticks, ["1000", "0", "0.25", "2.5e9"]);
    }

    #[test]
    fn nearby_marker_labels_get_separate_rows() {
        ensure_font().unwrap();
        let mut buf = String::new();
        let root = SVGBackend::with_string(&mut buf, (WIDTH, HEIGHT)).into_drawing_area();
        let placed = marker_labels(&root, &spec(vec![], false), (0.0, 180.0), (110, 985)).unwrap();
        assert_eq!(placed.len(), 2);
        assert_readable(&placed);
        // "restore" right of its line, "kill …" left of its own: one row suffices.
        assert_eq!((placed[0].row, placed[1].row), (0, 0));
        assert!(placed[1].right < placed[1].px && placed[0].left > placed[0].px);
    }

    /// No two labels of a row overlap, and no connector crosses a label below its own row.
    fn assert_readable(placed: &[MarkerLabel]) {
        for a in placed {
            for b in placed.iter().filter(|b| !std::ptr::eq(*b, a)) {
                let apart = a.right < b.left || b.right < a.left;
                assert!(a.row != b.row || apart, "{} overlaps {}", a.label, b.label);
                let crosses = (a.left..=a.right).contains(&b.px);
                assert!(b.row <= a.row || !crosses, "{}'s line crosses {}", b.label, a.label);
            }
        }
    }

    #[test]
    fn crowded_markers_lose_minor_labels_first() {
        ensure_font().unwrap();
        let mut buf = String::new();
        let root = SVGBackend::with_string(&mut buf, (WIDTH, HEIGHT)).into_drawing_area();
        let mut s = spec(vec![], false);
        let minor = |x: f64| Marker {
            minor: true,
            ..marker(x, "evict us-east-1 +2")
        };
        // Six actions two seconds apart, each followed by an eviction: far more than four rows.
        let xs = (0..6).map(|i| 60.0 + 2.0 * f64::from(i));
        s.markers = xs
            .flat_map(|x| [marker(x, "block provider/comcast"), minor(x + 0.4)])
            .collect();
        let placed = marker_labels(&root, &s, (0.0, 180.0), (110, 985)).unwrap();
        assert_eq!(placed.len(), 6);
        assert!(placed.iter().all(|m| !m.minor));
        assert_readable(&placed);
        // One action and its eviction fit: both keep labels.
        s.markers.truncate(2);
        let placed = marker_labels(&root, &s, (0.0, 180.0), (110, 985)).unwrap();
        assert_eq!(placed.len(), 2);
        assert_readable(&placed);
    }
}
