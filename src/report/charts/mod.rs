//! Line charts for run reports (latency percentiles, SLO compliance), written as PNG for quick
//! viewing and SVG for zooming, both from one drawing routine.
//!
//! Text uses DejaVu Sans compiled into the binary via plotters' `ab_glyph` feature instead of
//! the default `ttf` feature, which links fontconfig/freetype and depends on the host's fonts:
//! charts would differ, or fail, on CI machines and minimal containers. SVG text is emitted as
//! `font-family="sans-serif"`, so viewers use their own face; layout still uses DejaVu metrics.
//!
//! Callers describe a chart with the types of `spec.rs` and call [`render`]. The drawing is
//! split by concern: `draw.rs` lays out one chart top to bottom and draws its legend, `plot.rs`
//! everything inside the plotting area, `markers.rs` the marker labels above it, `axes.rs` the
//! ranges and tick labels, and `style.rs` holds the geometry, font and colours they share.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

mod axes;
mod draw;
mod markers;
mod plot;
mod spec;
mod style;
#[cfg(test)]
mod tests;

use draw::draw;
pub use spec::{ChartError, ChartSpec, HLine, Line, Marker, MAX_MARKER_ROWS};
use style::{ensure_font, HEIGHT, WIDTH};

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
