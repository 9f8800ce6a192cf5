//! A parser for the Prometheus text exposition format (version 0.0.4), as
//! Envoy and the Prometheus client libraries write it.
//!
//! It accepts what real exporters emit: `# HELP` and `# TYPE` lines (and other
//! comments), untyped families, label values with `\"`, `\\` and `\n` escapes, a
//! trailing comma in the label set, `NaN` and `±Inf` values, optional
//! timestamps, and OpenMetrics exemplars (`# {…} value [timestamp]` after the
//! value), which are ignored. It works on a borrowed page without allocating:
//! samples are handed to a callback with their labels still escaped, and only
//! the labels the caller reads are unescaped. Any malformed line rejects the
//! whole page, as Prometheus does, so a truncated or garbage page is never
//! half-counted. It never panics, whatever the input.

use std::borrow::Cow;

/// Why a page was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What was wrong with it.
    pub reason: &'static str,
}

/// One sample line: `name{labels} value [timestamp]`.
#[derive(Clone, Copy, Debug)]
pub struct Sample<'a> {
    /// The series name, e.g. `istio_requests_total` or `…_bucket`.
    pub name: &'a str,
    /// The text between the braces, already validated.
    labels: &'a str,
    /// The value (`NaN` and `±Inf` included).
    pub value: f64,
    /// The timestamp in milliseconds, if the exporter wrote one.
    pub timestamp_ms: Option<i64>,
}

impl<'a> Sample<'a> {
    /// The label set exactly as written between the braces (empty without braces).
    /// An exporter writes a series' labels the same way on every page.
    pub fn label_text(&self) -> &'a str {
        self.labels
    }

    /// The labels in the order the exporter wrote them.
    pub fn labels(&self) -> Labels<'a> {
        Labels {
            rest: self.labels.as_bytes(),
            text: self.labels,
            at: 0,
        }
    }
}

/// A label value as written on the page, escapes included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LabelValue<'a>(&'a str);

impl<'a> LabelValue<'a> {
    /// The value exactly as written between the quotes.
    pub fn raw(self) -> &'a str {
        self.0
    }

    /// The value with `\\`, `\"` and `\n` unescaped (borrowed when there is nothing to unescape).
    pub fn unescaped(self) -> Cow<'a, str> {
        if !self.0.contains('\\') {
            return Cow::Borrowed(self.0);
        }
        let mut out = String::with_capacity(self.0.len());
        let mut chars = self.0.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        }
        Cow::Owned(out)
    }
}

/// Iterator over a sample's `(name, value)` label pairs.
pub struct Labels<'a> {
    text: &'a str,
    rest: &'a [u8],
    at: usize,
}

impl<'a> Iterator for Labels<'a> {
    type Item = (&'a str, LabelValue<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        // The text was validated by `parse_labels`; re-scan it the same way.
        let b = self.rest;
        let mut i = self.at;
        i = skip_blanks(b, i);
        let name_start = i;
        i = name_chars_end(b, i);
        if i == name_start {
            return None;
        }
        let name = self.text.get(name_start..i)?;
        i = skip_blanks(b, i);
        i = skip_blanks(b, i.checked_add(1)?); // '='
        let value_start = i.checked_add(1)?; // opening quote
        let value_end = scan_value(b, value_start).ok()?;
        let value = self.text.get(value_start..value_end)?;
        i = skip_blanks(b, value_end + 1);
        if b.get(i) == Some(&b',') {
            i += 1;
        }
        self.at = i;
        Some((name, LabelValue(value)))
    }
}

/// What a page held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageStats {
    /// Sample lines.
    pub samples: usize,
    /// `# TYPE` lines.
    pub families: usize,
}

/// Parses `page`, handing every sample to `each` in page order.
///
/// Returns counts of what it read, or the first malformed line. Samples seen
/// before an error have already been handed out: callers that need all or
/// nothing collect first and commit on `Ok`.
pub fn parse<'a>(page: &'a str, mut each: impl FnMut(Sample<'a>)) -> Result<PageStats, ParseError> {
    let mut stats = PageStats::default();
    // The start of the previous sample's label set that was checked already.
    let mut checked = "";
    for (n, line) in page.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let fail = |reason| ParseError {
            line: n + 1,
            reason,
        };
        let b = line.as_bytes();
        let start = skip_blanks(b, 0);
        match b.get(start) {
            None => continue,
            Some(b'#') => {
                if comment(line, start).map_err(fail)? {
                    stats.families += 1;
                }
            }
            Some(_) => {
                each(sample(line, start, &mut checked).map_err(fail)?);
                stats.samples += 1;
            }
        }
    }
    Ok(stats)
}

/// Checks a comment line; `Ok(true)` for a `# TYPE` line.
fn comment(line: &str, start: usize) -> Result<bool, &'static str> {
    let b = line.as_bytes();
    let i = skip_blanks(b, start + 1);
    let word_end = token_end(b, i);
    let keyword = &b[i..word_end];
    if keyword != b"HELP" && keyword != b"TYPE" {
        // Any other comment (including OpenMetrics' `# EOF`) carries nothing.
        return Ok(false);
    }
    let i = skip_blanks(b, word_end);
    let name_end = metric_name_end(b, i);
    if name_end == i || !(name_end == b.len() || is_blank(b[name_end])) {
        return Err("HELP or TYPE without a valid metric name");
    }
    if keyword == b"HELP" {
        return Ok(false);
    }
    let t = skip_blanks(b, name_end);
    let t_end = token_end(b, t);
    if skip_blanks(b, t_end) != b.len() {
        return Err("text after the TYPE");
    }
    match &b[t..t_end] {
        b"counter" | b"gauge" | b"histogram" | b"summary" | b"untyped" | b"unknown"
        | b"gaugehistogram" | b"info" | b"stateset" => Ok(true),
        _ => Err("unknown metric type"),
    }
}

/// Parses a sample line. `checked` holds whole `name="value",` pairs that began
/// the previous line's label set; on success it holds this line's.
fn sample<'a>(
    line: &'a str,
    start: usize,
    checked: &mut &'a str,
) -> Result<Sample<'a>, &'static str> {
    let b = line.as_bytes();
    let name_end = metric_name_end(b, start);
    if name_end == start {
        return Err("expected a metric name");
    }
    let name = &line[start..name_end];
    let mut i = name_end;
    let mut labels = "";
    let brace = skip_blanks(b, name_end);
    if b.get(brace) == Some(&b'{') {
        let (end, pairs_end) = parse_labels(b, brace + 1, checked.as_bytes())?;
        labels = &line[brace + 1..end];
        *checked = &line[brace + 1..pairs_end];
        i = end + 1;
    }
    let value_start = skip_blanks(b, i);
    if value_start == i && value_start < b.len() {
        return Err("expected a blank before the value");
    }
    let value_end = token_end(b, value_start);
    if value_end == value_start {
        return Err("missing value");
    }
    let value = line[value_start..value_end]
        .parse::<f64>()
        .map_err(|_| "value is not a number")?;
    let mut i = skip_blanks(b, value_end);
    let mut timestamp_ms = None;
    if i < b.len() && b[i] != b'#' {
        let end = token_end(b, i);
        timestamp_ms = Some(timestamp(&line[i..end])?);
        i = skip_blanks(b, end);
    }
    match b.get(i) {
        None => {}
        // An exemplar: not ours to use.
        Some(b'#') => {}
        Some(_) => return Err("unexpected text after the value"),
    }
    Ok(Sample {
        name,
        labels,
        value,
        timestamp_ms,
    })
}

/// A timestamp: integer milliseconds (Prometheus) or, leniently, float seconds (OpenMetrics).
fn timestamp(s: &str) -> Result<i64, &'static str> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    match s.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs.abs() < 1e15 => Ok((secs * 1000.0) as i64),
        _ => Err("timestamp is not a number"),
    }
}

/// Validates `name="value",…}` from `i`; returns the index of the closing
/// brace and the end of the last `,` separator.
///
/// If the label set begins with `checked`, pairs already found valid at the
/// start of the previous line, they are not checked again: the buckets of a
/// histogram repeat every label but `le`, so most of a page is skipped this way.
fn parse_labels(b: &[u8], start: usize, checked: &[u8]) -> Result<(usize, usize), &'static str> {
    let known = !checked.is_empty() && b.get(start..).is_some_and(|r| r.starts_with(checked));
    let mut i = if known { start + checked.len() } else { start };
    let mut pairs_end = i;
    loop {
        i = skip_blanks(b, i);
        match b.get(i) {
            None => return Err("unterminated label set"),
            Some(b'}') => return Ok((i, pairs_end)),
            Some(&c) if is_label_start(c) => {}
            Some(_) => return Err("invalid label name"),
        }
        i = name_chars_end(b, i);
        i = skip_blanks(b, i);
        if b.get(i) != Some(&b'=') {
            return Err("expected '=' after a label name");
        }
        i = skip_blanks(b, i + 1);
        if b.get(i) != Some(&b'"') {
            return Err("expected a quoted label value");
        }
        i = scan_value(b, i + 1)? + 1;
        i = skip_blanks(b, i);
        match b.get(i) {
            Some(b',') => {
                i += 1;
                pairs_end = i;
            }
            Some(b'}') => return Ok((i, pairs_end)),
            _ => return Err("expected ',' or '}' after a label value"),
        }
    }
}

/// From just after an opening quote, the index of the closing quote; checks escapes.
fn scan_value(b: &[u8], mut i: usize) -> Result<usize, &'static str> {
    loop {
        i = find_quote_or_backslash(b, i).ok_or("unterminated label value")?;
        if b[i] == b'"' {
            return Ok(i);
        }
        match b.get(i + 1) {
            Some(b'\\' | b'"' | b'n') => i += 2,
            _ => return Err("invalid escape in a label value"),
        }
    }
}

/// The first `"` or `\` at or after `i`, eight bytes at a time: label values are
/// most of a page, and this is where parsing spends its time.
fn find_quote_or_backslash(b: &[u8], mut i: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |w: u64| w.wrapping_sub(ONES) & !w & HIGH;
    while let Some(chunk) = b.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().ok()?);
        // Only the lowest flagged byte is exact; it is the one we want.
        let found =
            has_zero(w ^ (ONES * u64::from(b'"'))) | has_zero(w ^ (ONES * u64::from(b'\\')));
        if found != 0 {
            return Some(i + (found.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    (i..b.len()).find(|&j| b[j] == b'"' || b[j] == b'\\')
}

fn metric_name_end(b: &[u8], start: usize) -> usize {
    match b.get(start) {
        Some(&c) if is_label_start(c) || c == b':' => {}
        _ => return start,
    }
    let mut i = start + 1;
    while i < b.len() && (is_label_char(b[i]) || b[i] == b':') {
        i += 1;
    }
    i
}

/// The end of a run of label-name characters starting at `i`, eight bytes at a
/// time: names are the other half of a page.
fn name_chars_end(b: &[u8], mut i: usize) -> usize {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = b.get(i..i + 8) {
        let Ok(bytes) = chunk.try_into() else { break };
        let valid = name_bytes(u64::from_le_bytes(bytes));
        if valid != HIGH {
            return i + ((!valid & HIGH).trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < b.len() && is_label_char(b[i]) {
        i += 1;
    }
    i
}

/// The high bit of each byte of `w` that is in `[a-zA-Z0-9_]`, exactly (no
/// carry crosses a byte: each is masked to 7 bits first).
fn name_bytes(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let x = w & LOW7;
    // ASCII bytes strictly between `lo` and `hi` (both at most 128).
    let between = |lo: u64, hi: u64| {
        (ONES * (127 + hi)).wrapping_sub(x) & !w & (x + ONES * (127 - lo)) & HIGH
    };
    between(0x2f, 0x3a) | between(0x40, 0x5b) | between(0x5e, 0x60) | between(0x60, 0x7b)
}

fn token_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && !is_blank(b[i]) {
        i += 1;
    }
    i
}

fn skip_blanks(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_blank(b[i]) {
        i += 1;
    }
    i
}

#[inline]
fn is_blank(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

#[inline]
fn is_label_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

#[inline]
fn is_label_char(c: u8) -> bool {
    LABEL_CHARS[usize::from(c)]
}

/// `[a-zA-Z0-9_]` as a table: one load per byte of every label name.
static LABEL_CHARS: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric() || b == b'_';
        c += 1;
    }
    t
};

#[cfg(test)]
mod tests;
