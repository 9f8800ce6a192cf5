//! Text to values, for the flags of every subcommand: durations with units
//! and ranges, ratios, URLs, names. Each error says what is accepted, and clap
//! adds the flag and the value.
//!
//! Design rule: one value at a time and no clap types, so any module's flags
//! can use these without depending on the command line; checks across flags
//! are [`crate::cli::RunArgs::resolve`]'s.

use std::time::Duration;

use http::Uri;

use crate::domain::relative::Role;

pub(crate) fn parse_dns_label(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 40
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(s.to_string())
    } else {
        Err("must be 1-40 lowercase letters, digits or '-', starting and ending alphanumeric (it becomes part of Lease names)".into())
    }
}

pub(crate) fn parse_lease_timing(s: &str) -> Result<Duration, String> {
    duration_in(s, ms(1_000), ms(300_000))
}

pub(crate) fn parse_retry_period(s: &str) -> Result<Duration, String> {
    duration_in(s, ms(100), ms(60_000))
}

pub(crate) fn parse_publish_interval(s: &str) -> Result<Duration, String> {
    duration_in(s, ms(100), ms(60_000))
}

/// Parses `250ms`, `2s`, `1.5s`, `1m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("missing unit: write e.g. 250ms, 2s or 1m (got `{s}`)"))?;
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration: write e.g. 250ms, 2s or 1m"))?;
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("unknown unit `{unit}` in `{s}`: use ms, s, m or h")),
    };
    let secs = value * scale;
    if !secs.is_finite() || secs > 86_400.0 * 365.0 {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Formats a duration the way it can be written on the command line.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 60_000 == 0 && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

fn duration_in(s: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < min || d > max {
        return Err(format!(
            "must be between {} and {}",
            fmt_duration(min),
            fmt_duration(max)
        ));
    }
    Ok(d)
}

pub(crate) const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub(crate) fn parse_max_latency(s: &str) -> Result<Duration, String> {
    duration_in(s, ms(1), ms(60_000))
}

pub(crate) fn parse_window(s: &str) -> Result<Duration, String> {
    let d = duration_in(s, ms(5_000), ms(600_000))?;
    if d.subsec_nanos() != 0 {
        return Err("must be a whole number of seconds (the window is made of 1 s slots)".into());
    }
    Ok(d)
}

pub(crate) fn parse_interval(s: &str) -> Result<Duration, String> {
    duration_in(s, ms(100), ms(60_000))
}

pub(crate) fn parse_upstream_timeout(s: &str) -> Result<Duration, String> {
    duration_in(s, ms(0), ms(3_600_000))
}

pub(crate) fn parse_connect_timeout(s: &str) -> Result<Duration, String> {
    duration_in(s, ms(10), ms(60_000))
}

pub(crate) fn parse_header_timeout(s: &str) -> Result<Duration, String> {
    duration_in(s, ms(1_000), ms(300_000))
}

pub(crate) fn parse_drain_timeout(s: &str) -> Result<Duration, String> {
    duration_in(s, ms(0), ms(600_000))
}

pub(crate) fn parse_ratio(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| "must be a number between 0 and 1, e.g. 0.05".to_string())?;
    if !(0.0..=1.0).contains(&v) {
        return Err("must be between 0 and 1, e.g. 0.05 for 5%".into());
    }
    Ok(v)
}

/// Parses `--role`: `canary` or `baseline`.
pub(crate) fn parse_role(s: &str) -> Result<Role, String> {
    match s.trim() {
        "canary" => Ok(Role::Canary),
        "baseline" => Ok(Role::Baseline),
        _ => Err(
            "must be canary (a guard on a canary pod) or baseline (a guard on a stable pod)".into(),
        ),
    }
}

/// Parses percentage points (`0.25` is a quarter of a percentage point) into a ratio.
pub(crate) fn parse_points(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|_| {
        "must be a number of percentage points between 0 and 100, e.g. 0.25".to_string()
    })?;
    if !(0.0..=100.0).contains(&v) {
        return Err("must be between 0 and 100 percentage points, e.g. 0.25".into());
    }
    Ok(v / 100.0)
}

/// Parses a factor of at least 1 (at most 100).
pub(crate) fn parse_factor(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| "must be a number between 1 and 100, e.g. 1.5".to_string())?;
    if !(1.0..=100.0).contains(&v) {
        return Err("must be between 1 and 100, e.g. 1.5 (1 allows no increase)".into());
    }
    Ok(v)
}

pub(crate) fn parse_quantile(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| "must be a number between 0.5 and 0.999, e.g. 0.99".to_string())?;
    if !(0.5..=0.999).contains(&v) {
        return Err("must be between 0.5 and 0.999, e.g. 0.99".into());
    }
    Ok(v)
}

/// Parses a `--confidence` value (0.5..=0.999999).
pub fn parse_confidence(s: &str) -> Result<f64, String> {
    const RANGE: &str = "between 0.5 and 0.999999, e.g. 0.99999";
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("must be a number {RANGE}"))?;
    if !(0.5..=0.999_999).contains(&v) {
        return Err(format!("must be {RANGE}"));
    }
    Ok(v)
}

/// Parses an `http://host:port` base URL (no path, query or userinfo).
pub fn parse_upstream(s: &str) -> Result<Uri, String> {
    let uri: Uri = s
        .parse()
        .map_err(|_| "must be a URL like http://127.0.0.1:8080".to_string())?;
    if uri.scheme_str() != Some("http") {
        return Err("must start with http:// (the app is reached over the pod's loopback)".into());
    }
    let Some(authority) = uri.authority() else {
        return Err("must name a host, like http://127.0.0.1:8080".into());
    };
    if authority.as_str().contains('@') {
        return Err("must not carry credentials".into());
    }
    if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
        return Err("must be a base URL without a path, like http://127.0.0.1:8080".into());
    }
    Ok(uri)
}

pub(crate) fn parse_scrape_interval(s: &str) -> Result<Duration, String> {
    duration_in(s, ms(100), ms(60_000))
}

/// Parses an `http://host:port/path` URL to scrape.
pub(crate) fn parse_scrape_url(s: &str) -> Result<Uri, String> {
    let uri: Uri = s
        .parse()
        .map_err(|_| "must be a URL like http://127.0.0.1:15090/stats/prometheus".to_string())?;
    if uri.scheme_str() != Some("http") {
        return Err("must start with http:// (the endpoint is on the pod's loopback)".into());
    }
    match uri.authority() {
        None => Err("must name a host, like http://127.0.0.1:15090/stats/prometheus".into()),
        Some(a) if a.as_str().contains('@') => Err("must not carry credentials".into()),
        Some(_) => Ok(uri),
    }
}

pub(crate) fn parse_metric_name(s: &str) -> Result<String, String> {
    let mut bytes = s.bytes();
    let ok = bytes
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && bytes.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':');
    if ok {
        Ok(s.to_string())
    } else {
        Err("must be a Prometheus metric name: letters, digits, '_' and ':', not starting with a digit".into())
    }
}

pub(crate) fn parse_label_name(s: &str) -> Result<String, String> {
    let mut bytes = s.bytes();
    let ok = bytes
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && bytes.all(|c| c.is_ascii_alphanumeric() || c == b'_');
    if ok {
        Ok(s.to_string())
    } else {
        Err(
            "must be a Prometheus label name: letters, digits and '_', not starting with a digit"
                .into(),
        )
    }
}

pub(crate) fn parse_label_filter(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| "must be NAME=VALUE, e.g. destination_workload=reviews-v2".to_string())?;
    Ok((parse_label_name(name.trim())?, value.trim().to_string()))
}

pub(crate) fn parse_envoy_label(s: &str) -> Result<(String, String), String> {
    let (name, value) = parse_label_filter(s)?;
    if name == "reporter" && value != "destination" {
        return Err(
            "reporter is always destination: the guard counts the canary's inbound requests".into(),
        );
    }
    Ok((name, value))
}
