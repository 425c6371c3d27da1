use super::axes::{fmt_tick, sane_range, y_bounds};
use super::markers::{marker_labels, MarkerLabel};
use super::style::{ensure_font, HEIGHT, WIDTH};
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

/// A day of per-second points draws as a few thousand, and its one-second spike survives.
#[test]
fn long_series_are_decimated_keeping_spikes() {
    let mut pts: Vec<(f64, Option<f64>)> = (0..86_400).map(|t| (t as f64, Some(70.0))).collect();
    pts[50_000].1 = Some(9_000.0);
    pts[60_000].1 = None;
    let d = super::plot::decimate(&pts, 4000);
    assert!(d.len() <= 4002, "{}", d.len());
    assert!(d.iter().any(|p| p.1 == Some(9_000.0)));
    assert!(d.iter().any(|p| p.1.is_none()), "an undelivered second stays a spike");
    assert!(d.windows(2).all(|w| w[0].0 <= w[1].0), "x order kept");
    let short: Vec<(f64, Option<f64>)> = (0..100).map(|t| (t as f64, Some(1.0))).collect();
    assert_eq!(super::plot::decimate(&short, 4000), short);
}
