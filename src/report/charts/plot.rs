//! Everything inside the plotting area: grid and ticks, marker lines, reference lines and the
//! series themselves.

use std::ops::Range;

use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::axes::fmt_tick;
use super::spec::{ChartSpec, Marker};
use super::style::{colour, text, DESC_PX, HLINE_COLOURS, MARKER_COLOUR, MINOR_MARKER_COLOUR, PALETTE, TICK_PX};

/// Everything inside the plotting area; generic over the y axis type so the linear and
/// logarithmic charts share this code. Returns the plot's pixel ranges for the overlays.
pub(super) fn plot<'a, DB, Y>(
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
        for &(x, y) in decimate(&line.points, MAX_DRAWN).iter() {
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

/// Most points drawn per line: a chart is ~1,000 pixels wide, and a day of per-second points
/// (86,400) would make an SVG of megabytes that looks the same.
const MAX_DRAWN: usize = 4000;

/// At most about `max` points, in x order: each bucket of consecutive points keeps its lowest
/// and highest (undelivered counts as highest), so a spike or a dip of one second still shows;
/// a break (NaN) in a bucket is kept.
pub(super) fn decimate(points: &[(f64, Option<f64>)], max: usize) -> Vec<(f64, Option<f64>)> {
    let per = points.len().div_ceil(max.max(2) / 2);
    if per <= 1 {
        return points.to_vec();
    }
    let key = |y: Option<f64>| y.unwrap_or(f64::INFINITY);
    let mut out = Vec::with_capacity(max + 2);
    for b in points.chunks(per) {
        if let Some(gap) = b.iter().find(|p| p.0.is_nan() || p.1.is_some_and(f64::is_nan)) {
            out.push(*gap);
        }
        let real = b.iter().filter(|p| !(p.0.is_nan() || p.1.is_some_and(f64::is_nan)));
        let lo = real.clone().min_by(|a, c| key(a.1).total_cmp(&key(c.1)));
        let hi = real.max_by(|a, c| key(a.1).total_cmp(&key(c.1)));
        match (lo, hi) {
            (Some(l), Some(h)) if l.0 <= h.0 => out.extend([*l, *h]),
            (Some(l), Some(h)) => out.extend([*h, *l]),
            _ => {}
        }
    }
    out
}
