//! `latency.hlog`: delivery-time histograms per 1 s interval in the standard HdrHistogram
//! interval-log format (V2, deflate-compressed), so other HdrHistogram tools can read a run and
//! logs from several hosts can be merged (`mailsurge merge`).
//!
//! Values are microseconds; the max column is in milliseconds (divisor 1000). Two tags:
//! `delivery` (from the intended send time) and `uncorrected` (from submission start).
//! Undelivered mail (+∞ in the report) has no finite value and is not in the log; the report's
//! counts say how much there was.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::serialization::interval_log::{IntervalLogIterator, IntervalLogWriterBuilder, LogEntry, Tag};
use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};
use hdrhistogram::Histogram;

use super::intervals::ByInterval;
use super::latency::Dist;

/// One tagged series of per-second histograms, offsets in seconds from `start`.
pub struct Series<'a> {
    pub tag: &'a str,
    pub intervals: Vec<(f64, &'a Histogram<u64>)>,
}

/// Writes an interval log of histograms in memory (`mailsurge merge`).
pub fn write(path: &Path, start: SystemTime, series: &[Series<'_>]) -> io::Result<()> {
    write_log(path, start, |put| {
        // The log format wants entries in time order; interleave the tagged series by offset.
        let mut all: Vec<(f64, &str, &Histogram<u64>)> = series
            .iter()
            .flat_map(|s| s.intervals.iter().map(move |(t, h)| (*t, s.tag, *h)))
            .collect();
        all.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (t, tag, h) in all {
            put(t, tag, h)?;
        }
        Ok(())
    })
}

/// Writes an interval log of per-second distributions built one second at a time (a run's
/// `latency.hlog`); at each second the series come in the order given.
pub fn write_intervals(path: &Path, start: SystemTime, series: &[(&str, &ByInterval)]) -> io::Result<()> {
    write_log(path, start, |put| {
        let mut cursors: Vec<_> = series.iter().map(|(tag, by)| (*tag, by.cursor())).collect();
        loop {
            let mut any = false;
            for (tag, c) in &mut cursors {
                if let Some((i, d)) = c.next() {
                    any = true;
                    put(i as f64, tag, &d.finite)?;
                }
            }
            if !any {
                return Ok(());
            }
        }
    })
}

/// A histogram for the log: offset in seconds, tag, histogram (empty ones are left out).
type Put<'p> = dyn FnMut(f64, &str, &Histogram<u64>) -> io::Result<()> + 'p;

fn write_log(path: &Path, start: SystemTime, entries: impl FnOnce(&mut Put<'_>) -> io::Result<()>) -> io::Result<()> {
    let mut out = Vec::new();
    let mut ser = V2DeflateSerializer::new();
    {
        let mut w = IntervalLogWriterBuilder::new()
            .add_comment("mailsurge delivery-time histograms, microseconds; max column in milliseconds")
            .with_start_time(start)
            .with_base_time(start)
            .with_max_value_divisor(1000.0)
            .begin_log_with(&mut out, &mut ser)?;
        let mut put = |t: f64, tag: &str, h: &Histogram<u64>| -> io::Result<()> {
            if h.is_empty() {
                return Ok(());
            }
            w.write_histogram(
                h,
                Duration::from_secs_f64(t.max(0.0)),
                Duration::from_secs(1),
                Tag::new(tag),
            )
            .map_err(|e| io::Error::other(format!("{e:?}")))
        };
        entries(&mut put)?;
    }
    crate::files::write(path, out)
}

/// A merged view: per tag, per absolute second (since the epoch), the summed histogram.
pub type Merged = BTreeMap<String, BTreeMap<u64, Histogram<u64>>>;

/// Reads interval logs and sums their histograms by tag and absolute second.
pub fn read_merge(paths: &[&Path]) -> Result<Merged, String> {
    let mut merged: Merged = BTreeMap::new();
    let mut de = Deserializer::new();
    for p in paths {
        let bytes = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
        let (mut start, mut base) = (None, None);
        for entry in IntervalLogIterator::new(&bytes) {
            match entry.map_err(|e| format!("{}: not an interval log: {e:?}", p.display()))? {
                LogEntry::BaseTime(t) => base = Some(t),
                LogEntry::StartTime(t) => start = Some(t),
                LogEntry::Interval(h) => {
                    let base = *base.get_or_insert_with(|| implied_base(start, h.start_timestamp()));
                    let raw = base64_decode(h.encoded_histogram())
                        .ok_or_else(|| format!("{}: bad base64 in an interval", p.display()))?;
                    let hist: Histogram<u64> = de
                        .deserialize(&mut io::Cursor::new(raw))
                        .map_err(|e| format!("{}: cannot decode a histogram: {e:?}", p.display()))?;
                    let second = (base + h.start_timestamp()).as_secs();
                    let tag = h.tag().map_or("", |t| t.as_str()).to_string();
                    let slot = merged
                        .entry(tag)
                        .or_default()
                        .entry(second)
                        .or_insert_with(|| Dist::new().finite);
                    slot.add(&hist).map_err(|e| format!("{}: {e:?}", p.display()))?;
                }
            }
        }
    }
    Ok(merged)
}

/// The base time of a log without a `#[BaseTime: ]` line, decided at its first interval the
/// way HdrHistogram's own readers do (Java `HistogramLogReader`, Python `hdrh.log`): a
/// timestamp more than a year before `#[StartTime: ]` is relative to it, anything else is
/// absolute (seconds since the epoch, base 0) — what writers that never set a base time emit.
fn implied_base(start: Option<Duration>, first_timestamp: Duration) -> Duration {
    const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
    match start {
        Some(s) if first_timestamp + YEAR < s => s,
        _ => Duration::ZERO,
    }
}

/// Writes a merged log (per tag, one interval per absolute second).
pub fn write_merged(path: &Path, merged: &Merged) -> io::Result<()> {
    let Some(first) = merged.values().filter_map(|m| m.keys().next()).min().copied() else {
        return write(path, UNIX_EPOCH, &[]);
    };
    let start = UNIX_EPOCH + Duration::from_secs(first);
    let series: Vec<Series<'_>> = merged
        .iter()
        .map(|(tag, m)| Series {
            tag,
            intervals: m.iter().map(|(s, h)| ((s - first) as f64, h)).collect(),
        })
        .collect();
    write(path, start, &series)
}

/// Standard base64 (the interval log's encoding); whitespace inside is ignored, as in Java's
/// MIME decoder that HdrHistogram's own tools write with.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let bytes: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(bytes).ok()
}

/// The sum of every interval of one tag.
pub fn total(m: &BTreeMap<u64, Histogram<u64>>) -> Histogram<u64> {
    let mut t = Dist::new().finite;
    for h in m.values() {
        // Same bounds by construction.
        let _ = t.add(h);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(values: &[u64]) -> Histogram<u64> {
        let mut h = Dist::new().finite;
        for v in values {
            h.record(*v).unwrap();
        }
        h
    }

    #[test]
    fn write_read_merge_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let (a0, a1) = (hist(&[1000, 2000, 3000]), hist(&[5000]));
        let u0 = hist(&[900]);
        let p1 = dir.path().join("a.hlog");
        write(
            &p1,
            t0,
            &[
                Series {
                    tag: "delivery",
                    intervals: vec![(0.0, &a0), (1.0, &a1)],
                },
                Series {
                    tag: "uncorrected",
                    intervals: vec![(0.0, &u0)],
                },
            ],
        )
        .unwrap();
        let text = std::fs::read_to_string(&p1).unwrap();
        assert!(text.contains("#[StartTime: 1700000000.000"), "{text}");
        assert!(text.contains("Tag=delivery,"), "{text}");
        // A second host, one second later.
        let b = hist(&[7000, 8000]);
        let p2 = dir.path().join("b.hlog");
        write(
            &p2,
            t0 + Duration::from_secs(1),
            &[Series {
                tag: "delivery",
                intervals: vec![(0.0, &b)],
            }],
        )
        .unwrap();
        let m = read_merge(&[&p1, &p2]).unwrap();
        let d = &m["delivery"];
        assert_eq!(d[&1_700_000_000].len(), 3);
        assert_eq!(d[&1_700_000_001].len(), 3, "a1 + b in the same absolute second");
        assert_eq!(total(d).len(), 6);
        assert_eq!(total(&m["uncorrected"]).len(), 1);
        let out = dir.path().join("m.hlog");
        write_merged(&out, &m).unwrap();
        let again = read_merge(&[&out]).unwrap();
        assert_eq!(total(&again["delivery"]).len(), 6);
        assert_eq!(total(&again["delivery"]).max(), total(d).max());
    }

    /// Logs from other writers: absolute timestamps with no `BaseTime` line (HdrHistogram's
    /// default), relative ones with only a `StartTime`, and an explicit `BaseTime: 0`.
    #[test]
    fn reads_base_time_like_hdrhistogram_readers() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("own.hlog");
        let h = hist(&[1000, 2000, 3000]);
        write(
            &own,
            UNIX_EPOCH,
            &[Series {
                tag: "delivery",
                intervals: vec![(0.0, &h)],
            }],
        )
        .unwrap();
        let text = std::fs::read_to_string(&own).unwrap();
        let payload = text.lines().find_map(|l| l.split(',').nth(4)).unwrap();
        let start = "#[StartTime: 1700000000.000 (seconds since epoch), Tue Nov 14 22:13:20 UTC 2023]";
        let cases = [
            ("absolute", format!("{start}\n1700000001.250,1.000,3.000,{payload}\n")),
            ("relative", format!("{start}\n\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n1.250,1.000,3.000,{payload}\n")),
            ("base 0", format!("#[BaseTime: 0.000 (seconds since epoch)]\n{start}\n1700000001.250,1.000,3.000,{payload}\n")),
        ];
        for (name, log) in cases {
            let p = dir.path().join("other.hlog");
            std::fs::write(&p, log).unwrap();
            let m = read_merge(&[&p]).unwrap();
            let seconds: Vec<u64> = m[""].keys().copied().collect();
            assert_eq!(seconds, [1_700_000_001], "{name}");
            assert_eq!(total(&m[""]).len(), 3, "{name}");
        }
    }

    #[test]
    fn base64() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGk=").unwrap(), b"hi");
        assert_eq!(base64_decode("YWJj").unwrap(), b"abc");
        assert!(base64_decode("a$==").is_none());
    }
}
