//! Number formatting and markup escaping shared by the report writers (summary.json,
//! report.md, report.html, junit.xml, the compare table and the charts).
//!
//! One home, because these are the places where the files must agree with each other: a p99
//! rounded one way in summary.json and another on the page, or a duration printed as `1.2 s` in
//! report.md and `1.20 s` in report.html, makes a reader wonder which one is right. The helpers
//! only turn values into text; which value to show and in what words stays with each writer.

use crate::measure::Counts;

/// Rounds to 3 decimals: summary.json and compare.json keep their numbers this short so two
/// runs' files diff cleanly, and report.html rounds the same way so it shows the JSON's digits.
pub fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A number with at most `dp` decimals and no trailing zeros (`1.5`, `12`, `0.25`): for values
/// a person reads next to a unit or a `%`, where `12.000` looks more precise than it is.
pub fn num(x: f64, dp: usize) -> String {
    let s = format!("{x:.dp$}");
    // With no decimal point (`dp` = 0, or inf/NaN) trailing zeros are the integer's own.
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A fraction as a percentage with 3 decimals (`99.870%`): a tenth of a point is already a
/// lot of mail at a 99.9% target, so compliance figures never round that away.
pub fn pct(f: f64) -> String {
    format!("{:.3}%", f * 100.0)
}

/// A delivery time in ms for report tables: ms with one decimal, seconds from 10 s on (where
/// milliseconds stop being readable). `None` is ∞ — mail never delivered — written as
/// `undelivered`, because report.md's tables have no note that explains a bare `∞` while
/// report.html's do.
pub fn ms(v: Option<f64>, undelivered: &str) -> String {
    match v {
        Some(x) if x >= 10_000.0 => format!("{:.1} s", x / 1000.0),
        Some(x) => format!("{x:.1} ms"),
        None => undelivered.into(),
    }
}

/// A fault's detection or recovery time in seconds with ms precision; `none` says what its
/// absence means (no reaction, not recovered), which differs per column.
pub fn secs(v: Option<f64>, none: &str) -> String {
    v.map_or_else(|| none.to_string(), |x| format!("{x:.3} s"))
}

/// The SLO outcome sentence of report.md and report.html (`99.870% of eligible mail delivered
/// within 2000 ms (target 99.00%)`), so both pages say it in the same words and digits.
pub fn slo_sentence(compliance: f64, delivery_ms: f64, target: f64) -> String {
    format!(
        "{} of eligible mail delivered within {delivery_ms} ms (target {:.2}%)",
        pct(compliance),
        target * 100.0
    )
}

/// One sentence on cross-witness consistency, for report.md and report.html.
pub fn contradictions_sentence(k: &crate::measure::Contradictions) -> String {
    match k.total {
        0 => "Witnesses agree: generator, MTA logs, inbox receipts, delivery notices and spools \
              contradict each other on no recipient (contradictions 0)."
            .into(),
        n => format!(
            "Contradictions {n}: the witnesses disagree on {n} recipients ({}).",
            k.describe()
        ),
    }
}

/// The two accounting identities with the run's counts, for report.md and report.html: each
/// page joins them with its own line break.
pub fn identity_equations(c: &Counts) -> [String; 2] {
    [
        format!(
            "generated {} = rejected at submit {} + accepted {}",
            c.generated, c.rejected_at_submit, c.accepted
        ),
        format!(
            "accepted {} = delivered {} + bounced {} + suppressed {} + expired {} + queued {} + lost {}",
            c.accepted, c.delivered, c.bounced, c.suppressed, c.expired, c.queued, c.lost
        ),
    ]
}

/// Escapes text for HTML element content and double- or single-quoted attributes.
///
/// Unlike [`esc_xml`] it leaves control characters alone (a browser shows them or not, the
/// page still parses) and writes `'` as `&#39;`, which every HTML parser knows, where XML
/// has `&apos;`.
pub fn esc_html(s: &str) -> String {
    escape_with(s, |c| (c == '\'').then_some("&#39;"))
}

/// Escapes text for XML 1.0 attribute values and character data (junit.xml). Characters XML
/// 1.0 cannot hold at all (most C0 controls) become U+FFFD, so an SMTP reply with a stray
/// control byte cannot make the file unreadable — an XML parser, unlike an HTML one, rejects
/// the whole document. Newlines and tabs are kept as character references so they survive
/// attribute-value normalisation.
pub fn esc_xml(s: &str) -> String {
    escape_with(s, |c| match c {
        '\'' => Some("&apos;"),
        '\n' => Some("&#10;"),
        '\r' => Some("&#13;"),
        '\t' => Some("&#9;"),
        '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => Some("\u{fffd}"),
        _ => None,
    })
}

/// Escapes XML character data that people read as lines (a junit failure body in a CI log):
/// like [`esc_xml`], but newlines stay literal — character data, unlike an attribute value,
/// keeps them.
pub fn esc_xml_body(s: &str) -> String {
    s.split('\n').map(esc_xml).collect::<Vec<_>>().join("\n")
}

/// The escaping HTML and XML share: `&`, `<`, `>` and `"` as entities; every other character
/// is what `other` makes of it, or itself.
fn escape_with(s: &str, other: impl Fn(char) -> Option<&'static str>) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        let entity = match c {
            '&' => Some("&amp;"),
            '<' => Some("&lt;"),
            '>' => Some("&gt;"),
            '"' => Some("&quot;"),
            c => other(c),
        };
        match entity {
            Some(e) => o.push_str(e),
            None => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_markup_and_quotes() {
        assert_eq!(
            esc_html(r#"<b a="1">'x' & y</b>"#),
            "&lt;b a=&quot;1&quot;&gt;&#39;x&#39; &amp; y&lt;/b&gt;"
        );
    }

    #[test]
    fn xml_escape_covers_markup_quotes_and_controls() {
        assert_eq!(esc_xml("a<b>&\"c\"'d'"), "a&lt;b&gt;&amp;&quot;c&quot;&apos;d&apos;");
        assert_eq!(esc_xml("x\ny\u{1}z"), "x&#10;y\u{fffd}z");
        assert_eq!(esc_xml("∞ ≤ 5 ms"), "∞ ≤ 5 ms");
        assert_eq!(esc_xml_body("a<\nb\tc"), "a&lt;\nb&#9;c");
    }

    #[test]
    fn numbers_read_as_written() {
        assert_eq!(
            [num(12.5, 2), num(12.0, 3), num(100.0, 0), num(0.1234, 2)],
            ["12.5", "12", "100", "0.12"]
        );
        assert_eq!(r3(1.23456), 1.235);
        assert_eq!(pct(0.9987), "99.870%");
        assert_eq!(
            [ms(Some(4.17), "∞"), ms(Some(12_345.0), "∞"), ms(None, "∞")],
            ["4.2 ms", "12.3 s", "∞"]
        );
        assert_eq!([secs(Some(1.5), "none"), secs(None, "none")], ["1.500 s", "none"]);
    }
}
