//! What every drawing step of a chart shares: the fixed geometry, the embedded font and the
//! colours.

use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;

use super::spec::ChartError;

/// Family name used for every text element. plotters' own defaults (mesh labels, legend)
/// ask for "sans-serif", so registering under that name covers them too.
const FONT: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");

pub(super) const WIDTH: u32 = 1200;
pub(super) const HEIGHT: u32 = 600;
pub(super) const TITLE_PX: u32 = 28;
pub(super) const DESC_PX: u32 = 20;
pub(super) const TICK_PX: u32 = 16;
pub(super) const LEGEND_PX: u32 = 16;
pub(super) const MARKER_PX: u32 = 15;
pub(super) const MARKER_ROW_H: i32 = MARKER_PX as i32 + 7;
pub(super) const MARGIN: u32 = 15;
pub(super) const Y_AREA: u32 = 95;
/// Legend box width beyond its longest label: padding, line sample and gap to the plot.
pub(super) const LEGEND_EXTRA: u32 = 8 * 3 + 28 + 12;
pub(super) const LEGEND_MIN_W: u32 = 200;
/// Tableau-10: colours that stay distinguishable for the ~8 series a report plots.
pub(super) const PALETTE: [u32; 10] = [
    0x1f77b4, 0xff7f0e, 0x2ca02c, 0xd62728, 0x9467bd, 0x8c564b, 0xe377c2, 0x7f7f7f, 0xbcbd22, 0x17becf,
];
/// Reference lines are dark so they stand apart from the data colours.
pub(super) const HLINE_COLOURS: [u32; 3] = [0x000000, 0xaa0000, 0x005a00];
pub(super) const MARKER_COLOUR: RGBColor = RGBColor(90, 90, 90);
pub(super) const MINOR_MARKER_COLOUR: RGBColor = RGBColor(150, 150, 150);

/// Registers the embedded font once per process: plotters keeps a global font table and any
/// text fails with `FontUnavailable` until it is filled.
pub(super) fn ensure_font() -> Result<(), ChartError> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    let register = || {
        plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES)
            .map_err(|_| "DejaVuSans.ttf is not a valid font".to_string())
    };
    let registered = REGISTERED.get_or_init(register).clone();
    registered.map_err(ChartError::Font)
}

/// Picks entry `i` of a hex palette, wrapping so any number of series gets a colour.
pub(super) fn colour(palette: &[u32], i: usize) -> RGBColor {
    let c = palette[i % palette.len()]; // callers pass the non-empty constant palettes
    RGBColor((c >> 16) as u8, (c >> 8) as u8, c as u8)
}

/// Every text element names the font explicitly rather than relying on plotters' defaults.
pub(super) fn text(px: u32) -> TextStyle<'static> {
    TextStyle::from((FONT, px).into_font()).color(&BLACK)
}
