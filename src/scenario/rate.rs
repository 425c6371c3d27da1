//! Reading `traffic: rate:` and `traffic: size:` by hand.
//!
//! Both have two shapes (a plain value or a mapping), which serde's untagged enums can only
//! answer with "data did not match any variant". Here each shape is tried on what the YAML
//! actually holds, and a mistake is told what was expected with an example, at the position
//! of the offending value (nested values are read through the same deserializer, so their
//! errors keep their own line and column).

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::model::{Curve, CurveAt, NamedCurve, RateSpec, SizeDist, SizeSpec};
use crate::units::{Dur, Percent, Rate, Size};

/// A YAML number read as the text it would be (`300` as `"300"`), so a value parses one way
/// whether the file quoted it or not.
macro_rules! numbers_as_text {
    ($value:ty) => {
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<$value, E> {
            self.visit_str(&v.to_string())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<$value, E> {
            self.visit_str(&v.to_string())
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<$value, E> {
            self.visit_str(&v.to_string())
        }
    };
}

const RATE_EXAMPLE: &str =
    "a rate such as `300/s`, or `{ peak: 2000/s, curve: black-friday | flat | waves | [[0%, 0.2], [50%, 1]] | [[0s, 50/s], [20s, 300/s]] }`";

impl<'de> Deserialize<'de> for RateSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RateVisitor)
    }
}

struct RateVisitor;

impl<'de> Visitor<'de> for RateVisitor {
    type Value = RateSpec;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(RATE_EXAMPLE)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RateSpec, E> {
        v.parse::<Rate>()
            .map(RateSpec::Constant)
            .map_err(|e| E::custom(format!("{e}; expected {RATE_EXAMPLE}")))
    }

    numbers_as_text!(RateSpec);

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RateSpec, A::Error> {
        let (mut peak, mut curve) = (None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "peak" => peak = Some(map.next_value::<Rate>()?),
                "curve" => curve = Some(map.next_value::<CurveIn>()?),
                other => {
                    return Err(de::Error::custom(format!(
                        "unknown key `{other}` in rate: expected `peak` and `curve`, e.g. {{ peak: 2000/s, curve: black-friday }}"
                    )))
                }
            }
        }
        let Some(curve) = curve else {
            return Err(de::Error::custom(format!(
                "rate: a mapping needs `curve:`; expected {RATE_EXAMPLE}"
            )));
        };
        match (curve, peak) {
            (CurveIn::Rates(points), None) => {
                // Absolute rates: the curve's shape under a peak of its largest rate.
                let top = points.iter().map(|p| p.1 .0).fold(0.0_f64, f64::max);
                let weights = points
                    .into_iter()
                    .map(|(at, r)| (at, if top > 0.0 { r.0 / top } else { 0.0 }))
                    .collect();
                Ok(RateSpec::Curve {
                    peak: Rate(top),
                    curve: Curve::Points(weights),
                })
            }
            (CurveIn::Rates(_), Some(_)) => Err(de::Error::custom(
                "rate: leave out `peak:` with [at, rate] points — their rates are absolute (or give weights: [[0s, 0.2], [20s, 1]])",
            )),
            (_, None) => Err(de::Error::custom(
                "rate: `peak:` is needed with a named curve or weights, e.g. { peak: 2000/s, curve: black-friday }",
            )),
            (CurveIn::Named(n), Some(peak)) => Ok(RateSpec::Curve {
                peak,
                curve: Curve::Named(n),
            }),
            (CurveIn::Weights(w), Some(peak)) => Ok(RateSpec::Curve {
                peak,
                curve: Curve::Points(w),
            }),
        }
    }
}

/// A curve as written: a name, weights, or absolute rates (one kind per curve).
enum CurveIn {
    Named(NamedCurve),
    Weights(Vec<(CurveAt, f64)>),
    Rates(Vec<(CurveAt, Rate)>),
}

const CURVE_EXAMPLE: &str =
    "`black-friday`, `flat`, `waves`, weights `[[0%, 0.2], [50%, 1], [100%, 0.2]]` or rates `[[0s, 50/s], [20s, 300/s]]`";

impl<'de> Deserialize<'de> for CurveIn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CurveVisitor)
    }
}

struct CurveVisitor;

impl<'de> Visitor<'de> for CurveVisitor {
    type Value = CurveIn;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a curve: {CURVE_EXAMPLE}")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<CurveIn, E> {
        let named = match v {
            "flat" => NamedCurve::Flat,
            "black-friday" => NamedCurve::BlackFriday,
            "waves" => NamedCurve::Waves,
            _ => return Err(E::custom(format!("unknown curve `{v}`; expected {CURVE_EXAMPLE}"))),
        };
        Ok(CurveIn::Named(named))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<CurveIn, A::Error> {
        let (mut weights, mut rates) = (Vec::new(), Vec::new());
        while let Some(PointIn(at, value)) = seq.next_element::<PointIn>()? {
            match value {
                PointValue::Weight(w) => weights.push((at, w)),
                PointValue::Rate(r) => rates.push((at, r)),
            }
        }
        match (weights.is_empty(), rates.is_empty()) {
            (_, true) => Ok(CurveIn::Weights(weights)),
            (true, false) => Ok(CurveIn::Rates(rates)),
            (false, false) => Err(de::Error::custom(
                "curve: points mix weights and rates; use one kind, e.g. [[0s, 50/s], [20s, 300/s]]",
            )),
        }
    }
}

/// One `[at, weight]` or `[at, rate]` point.
struct PointIn(CurveAt, PointValue);

enum PointValue {
    Weight(f64),
    Rate(Rate),
}

const POINT_EXAMPLE: &str = "a point `[at, weight]` such as `[50%, 1]` or `[at, rate]` such as `[20s, 300/s]`";

impl<'de> Deserialize<'de> for PointIn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PointVisitor)
    }
}

struct PointVisitor;

impl<'de> Visitor<'de> for PointVisitor {
    type Value = PointIn;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(POINT_EXAMPLE)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PointIn, A::Error> {
        let missing = || de::Error::custom(format!("curve point: expected {POINT_EXAMPLE}"));
        let at = seq.next_element::<AtIn>()?.ok_or_else(missing)?;
        let value = seq.next_element::<ValueIn>()?.ok_or_else(missing)?;
        if seq.next_element::<de::IgnoredAny>()?.is_some() {
            return Err(missing());
        }
        Ok(PointIn(at.0, value.0))
    }
}

/// `30s` (into the window) or `50%` (of it).
struct AtIn(CurveAt);

impl<'de> Deserialize<'de> for AtIn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = de_scalar(d)?;
        let at = if s.trim_end().ends_with('%') {
            s.parse::<Percent>().map(CurveAt::Share).map_err(|e| e.to_string())
        } else {
            s.parse::<Dur>().map(CurveAt::At).map_err(|e| e.to_string())
        };
        at.map(AtIn).map_err(|e| {
            de::Error::custom(format!(
                "{e}; a curve point's time is a duration such as 30s or a share such as 50%"
            ))
        })
    }
}

/// A weight (a bare number) or a rate (`300/s`).
struct ValueIn(PointValue);

impl<'de> Deserialize<'de> for ValueIn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = de_scalar(d)?;
        let v = if s.contains('/') {
            s.parse::<Rate>().map(PointValue::Rate).map_err(|e| e.to_string())
        } else {
            match s.trim().parse::<f64>() {
                Ok(w) if w.is_finite() && w >= 0.0 => Ok(PointValue::Weight(w)),
                _ => Err(format!("`{s}` is neither a weight >= 0 nor a rate")),
            }
        };
        v.map(ValueIn)
            .map_err(|e| de::Error::custom(format!("{e}; expected a weight such as 0.5 or a rate such as 300/s")))
    }
}

/// A YAML scalar (string or number) as text.
fn de_scalar<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct S;
    impl Visitor<'_> for S {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a number or a string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
        numbers_as_text!(String);
    }
    d.deserialize_any(S)
}

const SIZE_EXAMPLE: &str = "a size such as `12KiB`, or `{ dist: lognormal, median: 8KiB, sigma: 1.0, max: 1MiB }` (dist: fixed, uniform or lognormal)";

impl<'de> Deserialize<'de> for SizeSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SizeVisitor)
    }
}

struct SizeVisitor;

impl<'de> Visitor<'de> for SizeVisitor {
    type Value = SizeSpec;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(SIZE_EXAMPLE)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<SizeSpec, E> {
        v.parse::<Size>()
            .map(SizeSpec::Fixed)
            .map_err(|e| E::custom(format!("{e}; expected {SIZE_EXAMPLE}")))
    }

    numbers_as_text!(SizeSpec);

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SizeSpec, A::Error> {
        SizeDist::deserialize(de::value::MapAccessDeserializer::new(map)).map(SizeSpec::Dist)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(yaml: &str) -> Result<RateSpec, String> {
        serde_norway::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn rate_points_are_absolute() {
        let RateSpec::Curve { peak, curve } = rate("{ curve: [[0s, 50/s], [20s, 300/s]] }").unwrap() else {
            panic!("a curve")
        };
        assert_eq!(peak.0, 300.0);
        let Curve::Points(p) = curve else { panic!("points") };
        assert!((p[0].1 - 50.0 / 300.0).abs() < 1e-12 && p[1].1 == 1.0);
    }

    #[test]
    fn mistakes_say_what_was_expected() {
        for (yaml, want) in [
            ("-100/s", "must not be negative"),
            ("{ peak: 300/s, curve: bogus-curve }", "unknown curve `bogus-curve`"),
            (
                "{ peak: 300/s, curve: [[0s, 50/s], [20s, 1]] }",
                "mix weights and rates",
            ),
            (
                "{ peak: 300/s, curve: [[0s, 50/s], [20s, 300/s]] }",
                "leave out `peak:`",
            ),
            ("{ curve: black-friday }", "`peak:` is needed"),
            ("{ peak: 300/s, curve: [[0s]] }", "[at, weight]"),
            ("{ peak: 300/s, curve: [[soon, 1]] }", "duration such as 30s"),
            ("{ peak: 300/s, speed: 2 }", "unknown key `speed`"),
        ] {
            let e = rate(yaml).unwrap_err();
            assert!(e.contains(want), "{yaml}: {e}");
            assert!(!e.contains("did not match any variant"), "{yaml}: {e}");
        }
    }

    #[test]
    fn sizes_fixed_or_distributed() {
        let s: SizeSpec = serde_norway::from_str("12KiB").unwrap();
        assert!(matches!(s, SizeSpec::Fixed(Size(12288))));
        let s: SizeSpec = serde_norway::from_str("{ dist: uniform, min: 1KiB, max: 4KiB }").unwrap();
        assert!(matches!(s, SizeSpec::Dist(SizeDist::Uniform { .. })));
        let e = serde_norway::from_str::<SizeSpec>("twelve").unwrap_err().to_string();
        assert!(e.contains("12KiB") && !e.contains("did not match"), "{e}");
    }
}
