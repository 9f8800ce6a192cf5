//! Envoy mode: scrape the pod's istio-proxy (or the app's own metrics) every
//! interval and feed the deltas of its request counters into the window.
//!
//! A failed scrape (timeout, refused connection, non-200, a page over the size
//! limit, a page that does not parse) changes nothing in the window: it is
//! counted in `canary_guard_scrape_errors_total{reason}` and shown on
//! `/v1/state`, and the next good scrape counts everything since the last good one.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use super::promtext;
use super::Recorder;
use crate::admin::state::{Problem, ScrapeErrorView, ScrapeView, SharedState};
use crate::domain::counters::{CounterDiff, Delta, Kind, Page, Schema, TooManySeries};

/// Largest page read; a bigger one is refused (reason `too_large`).
pub const MAX_PAGE_BYTES: usize = 16 << 20;

/// Most matching samples (request series and histogram buckets) kept per page
/// (reason `too_many_series` beyond it): bounds the memory of the diff.
pub const MAX_SERIES: usize = 20_000;

/// A series gone from the page this long is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// `/v1/state` problem reason while scrapes fail.
const PROBLEM: &str = "ScrapeFailing";

/// What to scrape and how to read it.
#[derive(Clone, Debug, PartialEq)]
pub struct ScrapeConfig {
    /// The Prometheus endpoint.
    pub url: Uri,
    /// Time between scrapes; also the time one scrape may take.
    pub interval: Duration,
    /// Largest page accepted, in bytes.
    pub max_bytes: usize,
    /// Most matching samples accepted per page.
    pub max_series: usize,
    /// After this long without a good scrape, the next one is a new baseline (the window length).
    pub max_gap: Duration,
    /// Which series count.
    pub schema: Schema,
}

impl ScrapeConfig {
    /// Scrapes of `url` read by `schema` every `interval`, within the page limits; a
    /// gap longer than `window` between good scrapes starts the counts afresh.
    pub fn new(url: Uri, schema: Schema, interval: Duration, window: Duration) -> Self {
        Self {
            url,
            interval,
            max_bytes: MAX_PAGE_BYTES,
            max_series: MAX_SERIES,
            max_gap: window,
            schema,
        }
    }
}

/// Why a scrape failed.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// No complete page within the interval.
    #[error("no complete answer within {}ms", .0.as_millis())]
    Timeout(Duration),
    /// The endpoint could not be reached (refused, unreachable).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The endpoint answered something other than 200.
    #[error("answered HTTP {0}")]
    Status(StatusCode),
    /// The page was over the size limit.
    #[error("page larger than {0} bytes")]
    TooLarge(usize),
    /// The connection broke while reading.
    #[error("reading the page failed: {0}")]
    Transport(String),
    /// Not a Prometheus text page.
    #[error("not a Prometheus text page: {0}")]
    Parse(String),
    /// Too many matching series.
    #[error(transparent)]
    TooManySeries(#[from] TooManySeries),
}

impl ScrapeError {
    /// Every reason, as `canary_guard_scrape_errors_total{reason}` labels it.
    pub const REASONS: [&'static str; 7] = [
        "timeout",
        "connect",
        "status",
        "too_large",
        "transport",
        "parse",
        "too_many_series",
    ];

    /// The metric label for this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            ScrapeError::Timeout(_) => "timeout",
            ScrapeError::Connect(_) => "connect",
            ScrapeError::Status(_) => "status",
            ScrapeError::TooLarge(_) => "too_large",
            ScrapeError::Transport(_) => "transport",
            ScrapeError::Parse(_) => "parse",
            ScrapeError::TooManySeries(_) => "too_many_series",
        }
    }
}

/// Parses a page and counts what changed since the last one `diff` saw.
/// A page that does not parse, or holds too many matching series, changes nothing.
pub fn digest(
    page: &[u8],
    schema: &Schema,
    max_series: usize,
    diff: &mut CounterDiff,
    at: Instant,
) -> Result<Delta, ScrapeError> {
    let text = std::str::from_utf8(page)
        .map_err(|e| ScrapeError::Parse(format!("not UTF-8 text ({e})")))?;
    let mut collected = Page::new(max_series);
    let mut labels: Vec<(&str, Cow<'_, str>)> = Vec::new();
    let mut overflow = None;
    promtext::parse(text, |sample| {
        let offered = match (overflow.is_some(), schema.kind(sample.name)) {
            (false, Some(Kind::Requests)) => {
                labels.clear();
                labels.extend(sample.labels().map(|(k, v)| (k, v.unescaped())));
                collected.offer_requests(schema, sample.label_text(), &labels, sample.value)
            }
            (false, Some(Kind::Bucket)) => {
                let (identity, le) = split_le(&sample);
                collected.offer_bucket(schema, &identity, le, sample.value, || {
                    sample.labels().map(|(k, v)| (k, v.unescaped())).collect()
                })
            }
            _ => Ok(()),
        };
        if let Err(e) = offered {
            overflow = Some(e);
        }
    })
    .map_err(|e| ScrapeError::Parse(e.to_string()))?;
    if let Some(e) = overflow {
        return Err(e.into());
    }
    Ok(diff.apply(at.into_std(), collected))
}

/// A bucket's histogram identity (its label text without `le`) and its `le`.
/// Exporters write `le` last, so the identity is usually a slice of the line.
fn split_le<'a>(sample: &promtext::Sample<'a>) -> (Cow<'a, str>, &'a str) {
    let text = sample.label_text();
    let trimmed = text.trim_end_matches([',', ' ', '\t']);
    // The last value, if it has no escapes: the quote before it opens it.
    let last = trimmed.strip_suffix('"').and_then(|rest| {
        let open = rest.rfind('"')?;
        Some((&rest[..open], &rest[open + 1..]))
    });
    if let Some((before, le)) = last {
        if let Some(before) = before.strip_suffix("le=") {
            // `le` must be a whole name, not the end of another.
            let whole_name = before.is_empty() || before.ends_with([',', ' ', '\t']);
            if whole_name && !le.contains('\\') {
                return (Cow::Borrowed(before.trim_end_matches([',', ' ', '\t'])), le);
            }
        }
    }
    let mut identity = String::with_capacity(text.len());
    let mut le = "";
    for (name, value) in sample.labels() {
        if name == "le" {
            le = value.raw();
        } else {
            identity.push_str(name);
            identity.push_str("=\"");
            identity.push_str(value.raw());
            identity.push_str("\",");
        }
    }
    (Cow::Owned(identity), le)
}

/// Scrapes one endpoint on an interval and feeds the window.
pub struct Scraper {
    config: ScrapeConfig,
    client: Client<HttpConnector, Empty<Bytes>>,
    diff: CounterDiff,
    recorder: Recorder,
    state: SharedState,
    view: ScrapeView,
    /// Whether the last scrape failed.
    failing: bool,
}

impl Scraper {
    /// A scraper feeding `recorder` and reporting on `state`.
    pub fn new(config: ScrapeConfig, recorder: Recorder, state: SharedState) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        recorder.metrics().init_scrape_errors(&ScrapeError::REASONS);
        let view = ScrapeView {
            url: config.url.to_string(),
            ..ScrapeView::default()
        };
        state.write().scrape = Some(view.clone());
        Self {
            diff: CounterDiff::new(config.max_gap, FORGET_AFTER, config.schema.unit),
            config,
            client,
            recorder,
            state,
            view,
            failing: false,
        }
    }

    /// Fetches the page, bounded in time and size.
    async fn fetch(&self) -> Result<Bytes, ScrapeError> {
        let req = Request::get(self.config.url.clone())
            .header(header::ACCEPT, "text/plain; version=0.0.4")
            .body(Empty::new())
            .map_err(|e| ScrapeError::Transport(e.to_string()))?;
        let max = self.config.max_bytes;
        let fetch = async {
            let resp = self.client.request(req).await.map_err(|e| {
                if e.is_connect() {
                    ScrapeError::Connect(source_text(&e))
                } else {
                    ScrapeError::Transport(source_text(&e))
                }
            })?;
            if resp.status() != StatusCode::OK {
                return Err(ScrapeError::Status(resp.status()));
            }
            let declared = resp
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > max as u64) {
                return Err(ScrapeError::TooLarge(max));
            }
            let body = Limited::new(resp.into_body(), max)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<LengthLimitError>() {
                        ScrapeError::TooLarge(max)
                    } else {
                        ScrapeError::Transport(e.to_string())
                    }
                })?;
            Ok(body.to_bytes())
        };
        tokio::time::timeout(self.config.interval, fetch)
            .await
            .map_err(|_| ScrapeError::Timeout(self.config.interval))?
    }

    /// One scrape: fetch, parse, count the deltas into the window and metrics.
    pub async fn scrape_once(&mut self) -> Result<Delta, ScrapeError> {
        let page = self.fetch().await?;
        let delta = digest(
            &page,
            &self.config.schema,
            self.config.max_series,
            &mut self.diff,
            Instant::now(),
        )?;
        if delta.requests > 0 || !delta.latency.is_empty() {
            self.recorder.record_delta(&delta);
        }
        Ok(delta)
    }

    /// Publishes the outcome of a scrape on `/v1/state` and `/metrics`.
    fn report(&mut self, result: &Result<Delta, ScrapeError>) {
        self.view.scrapes += 1;
        let was_failing = std::mem::replace(&mut self.failing, result.is_err());
        let problem = match result {
            Ok(delta) => {
                if was_failing {
                    tracing::info!(url = %self.view.url, "scrapes succeed again");
                }
                self.view.counting = true;
                self.view.series = delta.series;
                self.view.last_success_unix_ms = Some(unix_ms());
                None
            }
            Err(e) => {
                let reason = e.reason();
                self.recorder.metrics().scrape_error(reason);
                self.view.errors += 1;
                let changed =
                    !was_failing || self.view.last_error.as_ref().map(|l| l.reason) != Some(reason);
                if changed {
                    tracing::warn!(url = %self.view.url, reason, error = %e, "scrape failed");
                } else {
                    tracing::debug!(url = %self.view.url, reason, error = %e, "scrape failed");
                }
                self.view.last_error = Some(ScrapeErrorView {
                    reason,
                    message: e.to_string(),
                    unix_ms: unix_ms(),
                });
                Some(Problem {
                    reason: PROBLEM.into(),
                    message: format!(
                        "scraping {} failed ({reason}): {e}; the window gets no samples until a scrape succeeds",
                        self.view.url
                    ),
                })
            }
        };
        let mut state = self.state.write();
        state.scrape = Some(self.view.clone());
        state.problems.retain(|p| p.reason != PROBLEM);
        state.problems.extend(problem);
    }

    /// Scrapes every interval until `shutdown` carries `true`; bumps `scrapes`
    /// after each attempt has been counted and reported.
    pub async fn run(mut self, scrapes: watch::Sender<u64>, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(url = %self.view.url, interval_ms = self.config.interval.as_millis() as u64, "scraping");
        let mut tick = tokio::time::interval(self.config.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            let result = tokio::select! {
                r = self.scrape_once() => r,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            self.report(&result);
            scrapes.send_modify(|n| *n += 1);
        }
    }
}

/// The innermost cause of a client error (hyper's outer message is generic).
fn source_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
    while let Some(s) = inner.source() {
        inner = s;
    }
    inner.to_string()
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests;
