//! What a chart shows, as its callers describe it: series, reference lines, event markers and
//! axes. Kept apart from the drawing so every drawing step reads one description.

use std::path::PathBuf;

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

/// Label rows above the plot before minor markers lose their labels (their lines stay).
pub const MAX_MARKER_ROWS: usize = 4;
