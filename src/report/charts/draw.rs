//! One chart from top to bottom: title, marker label rows, the plot, and the legend beside it.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::axes::{sane_range, y_bounds};
use super::markers::{draw_labels, marker_labels};
use super::plot::plot;
use super::spec::ChartSpec;
use super::style::{
    colour, text, HLINE_COLOURS, LEGEND_EXTRA, LEGEND_MIN_W, LEGEND_PX, MARGIN, MARKER_ROW_H, PALETTE, TITLE_PX, WIDTH,
    Y_AREA,
};

/// Draws the whole chart onto any backend, so PNG and SVG share one layout.
pub(super) fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, spec: &ChartSpec) -> DrawResult<(), DB> {
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
    draw_labels(root, spec, xr, (px.start, px.end), py.start)?;
    if label_w > 0 {
        draw_legend(root, spec, (px.end, py.start), label_w as i32)?;
    }
    root.present()
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
