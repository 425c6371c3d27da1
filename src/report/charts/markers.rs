//! Chaos-action markers' labels in rows above the plot: where each goes, and drawing them with
//! their connectors down to the plot.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::spec::{ChartSpec, Marker, MAX_MARKER_ROWS};
use super::style::{text, MARKER_COLOUR, MARKER_PX, MARKER_ROW_H, MINOR_MARKER_COLOUR};

/// A marker label placed above the plot: line at `px`, text spanning `left..right` in `row`.
pub(super) struct MarkerLabel {
    pub(super) px: i32,
    pub(super) left: i32,
    pub(super) right: i32,
    pub(super) row: usize,
    pub(super) label: String,
    pub(super) minor: bool,
}

/// Draws the labels [`marker_labels`] places over the plot's final x span `px`, each on a white
/// background in its row above the plot's top edge `top`, joined to the plot by a connector at
/// the marker's x.
pub(super) fn draw_labels<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    spec: &ChartSpec,
    xr: (f64, f64),
    px: (i32, i32),
    top: i32,
) -> DrawResult<(), DB> {
    let anchor = Pos::new(HPos::Left, VPos::Center);
    for m in marker_labels(root, spec, xr, px)? {
        let colour = if m.minor { MINOR_MARKER_COLOUR } else { MARKER_COLOUR };
        let y = top - (m.row as i32 + 1) * MARKER_ROW_H;
        let mid = y + MARKER_ROW_H / 2;
        let connector = [(m.px, top), (m.px, mid)];
        root.draw(&PathElement::new(connector, colour))?;
        let bg = [(m.left - 2, y + 2), (m.right + 2, y + MARKER_ROW_H - 2)];
        root.draw(&Rectangle::new(bg, WHITE.filled()))?;
        let style = text(MARKER_PX).color(&colour).pos(anchor);
        root.draw(&Text::new(m.label, (m.left, mid), style))?;
    }
    Ok(())
}

/// Places marker labels into rows above the plot so that nearby events (e.g. "kill" then
/// "restore" seconds apart) overwrite neither each other nor each other's connector lines.
/// Going right to left means labels, which mostly extend rightwards, are placed before the
/// connectors that could cross them. A label goes left of its line when that needs a lower row
/// (a staircase of close actions) or when it would run off the image.
///
/// When that takes more than [`MAX_MARKER_ROWS`] rows, minor markers are left unlabelled (their
/// dotted lines remain) so the actions keep readable labels and the plot keeps its height.
pub(super) fn marker_labels<DB: DrawingBackend>(
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
