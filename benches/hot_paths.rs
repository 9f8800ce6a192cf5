//! Hot paths: the cost of recording one request, and of one leader round over
//! 100 member summaries.
//!
//! Prints Markdown table rows (`| area | measurement | result | target | met |`)
//! for `scripts/bench`. Each figure is the median of several repetitions; pass
//! `--quick` for a smoke run with few iterations.

use std::hint::black_box;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant as WallClock};

use canary_guard::admin::metrics::Metrics;
use canary_guard::domain::judge::{Judge, MemberSample};
use canary_guard::domain::policy::Thresholds;
use canary_guard::domain::relative::Role;
use canary_guard::domain::window::{Outcome, Summary, Window};
use canary_guard::observe::pending::Pending;
use canary_guard::observe::Recorder;
use tokio::time::Instant;

/// Target for one recorded request, in nanoseconds.
const RECORD_TARGET_NS: f64 = 100.0;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn row(measurement: &str, result: String, target: &str, met: Option<bool>) {
    let met = match met {
        Some(true) => "met",
        Some(false) => "**not met**",
        None => "—",
    };
    println!("| hot paths | {measurement} | {result} | {target} | {met} |");
}

/// A latency that walks over a realistic spread of buckets (0.2 ms to ~0.5 s).
fn latency(i: u64) -> Duration {
    Duration::from_micros(200 + (i.wrapping_mul(2_654_435_761) % 500_000))
}

/// Median over `reps` of the nanoseconds each of `threads` threads spends per
/// call of `f` when all of them call it `n` times at once.
fn per_call_ns<F>(threads: usize, n: u64, reps: usize, f: F) -> f64
where
    F: Fn(u64) + Send + Sync + 'static,
{
    let f = Arc::new(f);
    let samples = (0..reps)
        .map(|_| {
            let start = WallClock::now();
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    let f = f.clone();
                    thread::spawn(move || {
                        for i in 0..n {
                            f(black_box(i));
                        }
                    })
                })
                .collect();
            for w in workers {
                w.join().expect("worker thread");
            }
            start.elapsed().as_nanos() as f64 / n as f64
        })
        .collect();
    median(samples)
}

fn record_rows(n: u64, reps: usize) {
    for threads in [1, 2] {
        let threads_label = if threads == 1 {
            "1 thread"
        } else {
            "2 threads"
        };
        let origin = Instant::now().into_std();
        let window = Arc::new(Window::new(Duration::from_secs(30), origin));
        let w = window.clone();
        let ns = per_call_ns(threads, n, reps, move |i| {
            let outcome = if i % 100 == 0 {
                Outcome::Error
            } else {
                Outcome::Success
            };
            w.record(origin, latency(i), outcome);
        });
        row(
            &format!("`Window::record`, {threads_label}, per request"),
            format!("{ns:.0} ns"),
            "≤ 100 ns",
            Some(ns <= RECORD_TARGET_NS),
        );

        let window = Arc::new(Window::new(
            Duration::from_secs(30),
            Instant::now().into_std(),
        ));
        let recorder = Recorder::new(window, Arc::new(Metrics::new()));
        let ns = per_call_ns(threads, n, reps, move |i| {
            let outcome = if i % 100 == 0 {
                Outcome::Error
            } else {
                Outcome::Success
            };
            let mut p = Pending::new(recorder.clone(), Instant::now(), None);
            p.headers();
            p.finish(outcome);
        });
        row(
            &format!(
                "`Pending` from arrival to record (clocks, in-flight registry, window; Prometheus reads the window), {threads_label}, per request"
            ),
            format!("{ns:.0} ns"),
            "≤ 100 ns",
            Some(ns <= RECORD_TARGET_NS),
        );
    }
    let ns = per_call_ns(1, n, reps, |_| {
        black_box(Instant::now());
    });
    row(
        "of which the clock read (`tokio::time::Instant::now`), 1 thread",
        format!("{ns:.0} ns"),
        "—",
        None,
    );
}

/// A member's full 30 s window as it writes it to its lease annotation.
fn member_annotation(seed: u64) -> String {
    let origin = Instant::now().into_std();
    let w = Window::new(Duration::from_secs(30), origin);
    for s in 0..30 {
        for i in 0..50 {
            let k = seed * 10_000 + s * 100 + i;
            let outcome = if k % 97 == 0 {
                Outcome::Error
            } else {
                Outcome::Success
            };
            w.record(origin + Duration::from_secs(s), latency(k), outcome);
        }
    }
    serde_json::to_string(&w.summary(origin + Duration::from_secs(29))).expect("summary serializes")
}

fn leader_rows(reps: usize, rounds: usize) {
    let annotations: Vec<String> = (0..100).map(member_annotation).collect();
    let bytes: usize = annotations.iter().map(String::len).sum();
    let samples: Vec<MemberSample> = annotations
        .iter()
        .enumerate()
        .map(|(i, a)| MemberSample {
            pod: format!("pod-{i}"),
            revision: Some("r1".into()),
            summary: serde_json::from_str(a).expect("summary parses"),
            role: Role::Canary,
        })
        .collect();

    // Merge and read quantiles only.
    let merge_us = median(
        (0..reps)
            .map(|_| {
                let start = WallClock::now();
                for _ in 0..rounds {
                    let mut agg = Summary::empty(30);
                    for s in &samples {
                        agg.merge(black_box(&s.summary));
                    }
                    for q in [0.5, 0.9, 0.99] {
                        black_box(agg.latency_quantile(q));
                    }
                }
                start.elapsed().as_secs_f64() * 1e6 / rounds as f64
            })
            .collect(),
    );
    row(
        "merge 100 member summaries + p50/p90/p99",
        format!("{merge_us:.1} µs"),
        "—",
        None,
    );

    // What the leader does each interval: parse every annotation (as a JSON
    // value, then a summary), then judge the aggregate and each member.
    let parse_us = median(
        (0..reps)
            .map(|_| {
                let start = WallClock::now();
                for _ in 0..rounds {
                    for a in &annotations {
                        let v: serde_json::Value =
                            serde_json::from_str(black_box(a)).expect("json");
                        black_box(serde_json::from_value::<Summary>(v).expect("summary"));
                    }
                }
                start.elapsed().as_secs_f64() * 1e6 / rounds as f64
            })
            .collect(),
    );
    row(
        &format!(
            "leader round: parse 100 member annotations ({} KiB)",
            bytes / 1024
        ),
        format!("{parse_us:.0} µs"),
        "—",
        None,
    );
    let mut judge = Judge::new(Thresholds::default(), true);
    let judge_us = median(
        (0..reps)
            .map(|_| {
                let start = WallClock::now();
                for _ in 0..rounds {
                    black_box(judge.judge(black_box(&samples)));
                }
                start.elapsed().as_secs_f64() * 1e6 / rounds as f64
            })
            .collect(),
    );
    row(
        "leader round: `Judge::judge` of 100 members (aggregate and each member)",
        format!("{judge_us:.0} µs"),
        "—",
        None,
    );

    // What a member's publisher reads every quarter interval.
    let origin = Instant::now().into_std();
    let w = Window::new(Duration::from_secs(30), origin);
    for s in 0..30 {
        for i in 0..100 {
            w.record(
                origin + Duration::from_secs(s),
                latency(s * 100 + i),
                Outcome::Success,
            );
        }
    }
    let now = origin + Duration::from_secs(29);
    let read_us = median(
        (0..reps)
            .map(|_| {
                let start = WallClock::now();
                for _ in 0..rounds {
                    black_box(w.summary(black_box(now)));
                }
                start.elapsed().as_secs_f64() * 1e6 / rounds as f64
            })
            .collect(),
    );
    row(
        "`Window::summary` of a full 30 s window",
        format!("{read_us:.1} µs"),
        "—",
        None,
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (n, reps, rounds) = if quick {
        (200_000, 3, 20)
    } else {
        (5_000_000, 7, 300)
    };
    record_rows(n, reps);
    leader_rows(reps, rounds);
    row(
        "envoy mode: parse + diff of a 5,000-series page",
        "measured by `cargo bench --bench envoy_scrape`".into(),
        "—",
        None,
    );
}
