//! Tests of the Prometheus text parser: the syntax real exporters write (families,
//! comments, escapes, `NaN` and `±Inf`, timestamps, exemplars), malformed lines named by
//! their line number, the word-at-a-time scans against byte-at-a-time ones, and
//! properties: label values round-trip, a line is judged alone whatever came before, and
//! no text makes it panic.
//!
//! Design rule: pages go through [`parse`] and are checked by what it hands the callback,
//! as a caller sees them; properties cover what examples cannot (any text, any label
//! value).

use super::*;
use proptest::prelude::*;

type Owned = (String, Vec<(String, String)>, f64, Option<i64>);

fn all(page: &str) -> Result<Vec<Owned>, ParseError> {
    let mut out = Vec::new();
    parse(page, |s| {
        out.push((
            s.name.to_string(),
            s.labels()
                .map(|(k, v)| (k.to_string(), v.unescaped().into_owned()))
                .collect(),
            s.value,
            s.timestamp_ms,
        ))
    })?;
    Ok(out)
}

fn escape(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', r#"\""#)
        .replace('\n', r"\n")
}

#[test]
fn families_comments_and_values() {
    let page = "# HELP istio_requests_total Requests.\n\
                # TYPE istio_requests_total counter\n\
                istio_requests_total{reporter=\"destination\",response_code=\"200\"} 1234\n\
                \n\
                # a free comment\n\
                # TYPE g gauge\n\
                g NaN\n\
                g{a=\"b\",} +Inf 1700000000000\n\
                g{ a = \"b\" , c=\"\" } -Inf\n\
                untyped_one 3.5e2\r\n\
                h_bucket{le=\"0.5\"} 7 # {trace_id=\"abc\"} 0.3 1700000000.5\n\
                # EOF\n";
    let got = all(page).unwrap();
    assert_eq!(got.len(), 6);
    assert_eq!(got[0].0, "istio_requests_total");
    assert_eq!(
        got[0].1,
        [
            ("reporter".to_string(), "destination".to_string()),
            ("response_code".to_string(), "200".to_string())
        ]
    );
    assert_eq!(got[0].2, 1234.0);
    assert!(got[1].2.is_nan() && got[1].1.is_empty());
    assert_eq!(
        (got[2].2, got[2].3),
        (f64::INFINITY, Some(1_700_000_000_000))
    );
    assert_eq!(got[3].1.len(), 2);
    assert_eq!(got[3].2, f64::NEG_INFINITY);
    assert_eq!(got[4].2, 350.0);
    assert_eq!((got[5].2, got[5].3), (7.0, None));
    let stats = parse(page, |_| {}).unwrap();
    assert_eq!(
        stats,
        PageStats {
            samples: 6,
            families: 2
        }
    );
}

#[test]
fn escaped_label_values() {
    let got = all(r##"m{path="/a \"b\" \\c\nd",x="#\"}"} 1"##).unwrap();
    assert_eq!(got[0].1[0].1, "/a \"b\" \\c\nd");
    assert_eq!(got[0].1[1].1, "#\"}");
}

#[test]
fn timestamps_and_exemplars() {
    let got = all("a 1 -5\nb 2 # {x=\"y\"} 1\nc 3 12 # {} 1 2\n").unwrap();
    assert_eq!(got[0].3, Some(-5));
    assert_eq!(got[1].3, None);
    assert_eq!(got[2].3, Some(12));
}

#[test]
fn malformed_lines_name_their_line() {
    for (page, line) in [
        ("ok 1\nbad{ 1\n", 2),
        ("x{a=\"b\"} one\n", 1),
        ("x{a=b} 1\n", 1),
        ("x{a=\"\\t\"} 1\n", 1),
        ("x{1a=\"b\"} 1\n", 1),
        ("x{a=\"b\"}1\n", 1),
        ("x\n", 1),
        ("x 1 2 3\n", 1),
        ("x 1 nope\n", 1),
        ("\n\n# TYPE x histogramz\n", 3),
        ("# TYPE\n", 1),
        ("{a=\"b\"} 1\n", 1),
        ("<html><body>502 Bad Gateway</body></html>\n", 1),
        ("x{a=\"unterminated} 1\n", 1),
        // Lines that start like a valid previous line are still checked to the end.
        ("x{a=\"b\",c=\"d\"} 1\nx{a=\"b\",c=\"d\",,} 1\n", 2),
        ("x{a=\"b\",c=\"d\"} 1\nx{a=\"b\",c=\"d} 1\n", 2),
        ("x{a=\"b\",c=\"d\"} 1\nx{a=\"b\",c=\"d\"}} 1\n", 2),
    ] {
        let e = all(page).unwrap_err();
        assert_eq!(e.line, line, "{page:?}: {e}");
    }
}

#[test]
fn word_at_a_time_scans_match_byte_at_a_time() {
    for c in 0..=255u8 {
        let w = u64::from_le_bytes([c, b'a', b'Z', b'0', b'_', b'9', c, b'z']);
        let expect = is_label_char(c);
        assert_eq!(name_bytes(w) & 0x80 != 0, expect, "byte {c:#x}");
        assert_eq!(name_bytes(w) & (0x80 << 48) != 0, expect, "byte {c:#x}");
        assert_eq!(name_bytes(w) & (0x80 << 8), 0x80 << 8);
    }
    let text = br#"abc_DEF_0123456789xyz="a\"b" tail-end_of-the.line"#;
    for start in 0..text.len() {
        let naive = (start..text.len())
            .find(|&i| !is_label_char(text[i]))
            .unwrap_or(text.len());
        assert_eq!(name_chars_end(text, start), naive, "from {start}");
        let naive = (start..text.len()).find(|&i| text[i] == b'"' || text[i] == b'\\');
        assert_eq!(find_quote_or_backslash(text, start), naive, "from {start}");
    }
}

#[test]
fn a_long_page_parses() {
    let mut page = String::from("# TYPE big counter\n");
    for i in 0..100_000 {
        page.push_str(&format!("big{{id=\"{i}\",path=\"/p/{i}\"}} {i}\n"));
    }
    let mut sum = 0.0;
    let stats = parse(&page, |s| sum += s.value).unwrap();
    assert_eq!(stats.samples, 100_000);
    assert_eq!(sum, (0..100_000).map(f64::from).sum::<f64>());
}

proptest! {
    #[test]
    fn label_values_round_trip(
        values in proptest::collection::vec("(?s).{0,40}|[\\\\\"\\n{},=# a]{0,20}", 1..5),
        value in proptest::num::f64::ANY,
    ) {
        let labels: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("l{i}=\"{}\"", escape(v)))
            .collect();
        let page = format!("m{{{}}} {value:?}\n", labels.join(","));
        let got = all(&page).unwrap();
        prop_assert_eq!(got.len(), 1);
        let back: Vec<String> = got[0].1.iter().map(|(_, v)| v.clone()).collect();
        prop_assert_eq!(&back, &values);
        prop_assert!(got[0].2 == value || (value.is_nan() && got[0].2.is_nan()));
    }

    #[test]
    fn a_line_is_judged_alone_whatever_came_before(
        shared in "(a=\"[x\\\\\"]{0,3}\",){0,3}",
        first in "[ab_=\",\\\\ ]{0,10}",
        second in "[ab_=\",\\\\ }]{0,10}",
    ) {
        let one = format!("m{{{shared}{first}}} 1\n");
        let two = format!("m{{{shared}{second}}} 2\n");
        let labels = |page: &str| {
            all(page).ok().map(|v| v.into_iter().map(|s| s.1).collect::<Vec<_>>())
        };
        if let Some(mut expect) = labels(&one) {
            let together = labels(&format!("{one}{two}"));
            match labels(&two) {
                Some(alone) => {
                    expect.extend(alone);
                    prop_assert_eq!(together, Some(expect));
                }
                None => prop_assert_eq!(together, None),
            }
        }
    }

    #[test]
    fn arbitrary_text_never_panics(page in "(?s).{0,400}") {
        let _ = parse(&page, |s| { let _ = s.labels().count(); });
    }

    #[test]
    fn arbitrary_prometheus_like_text_never_panics(
        page in "[a-z_{}=\",# \\\\\n0-9.+-]{0,400}",
    ) {
        let _ = parse(&page, |s| {
            for (_, v) in s.labels() { let _ = v.unescaped(); }
        });
    }
}
