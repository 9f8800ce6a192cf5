//! Parse + diff of a 5,000-series istio-proxy page, the work envoy mode does
//! on every scrape. `cargo bench --bench envoy_scrape` prints the median time
//! per page, as wall-clock time and, on Linux, as the CPU time of the thread
//! (which stays meaningful on a busy machine); under `cargo test` it makes one
//! quick pass as a smoke test.

use std::hint::black_box;
use std::time::{Duration, Instant};

use canary_guard::domain::counters::Schema;
use canary_guard::domain::counters::{CounterDiff, LatencyUnit};
use canary_guard::observe::scrape::{digest, MAX_SERIES};

const SERIES: usize = 5_000;
const ENVOY_LE: [&str; 20] = [
    "0.5", "1", "5", "10", "25", "50", "100", "250", "500", "1000", "2500", "5000", "10000",
    "30000", "60000", "300000", "600000", "1800000", "3600000", "+Inf",
];
/// Pages per run, each with higher counters than the one before.
const PAGES: u64 = 8;

/// Istio's label set for a request to the canary from `source`.
fn istio_labels(reporter: &str, source: &str, code: u16) -> String {
    let (app, version) = source.rsplit_once('-').unwrap_or((source, "v1"));
    format!(
        "reporter=\"{reporter}\",source_workload=\"{source}\",source_canonical_service=\"{app}\",\
         source_canonical_revision=\"{version}\",source_workload_namespace=\"default\",\
         source_principal=\"spiffe://cluster.local/ns/default/sa/{app}\",source_app=\"{app}\",\
         source_version=\"{version}\",source_cluster=\"Kubernetes\",destination_workload=\"reviews-v2\",\
         destination_workload_namespace=\"default\",\
         destination_principal=\"spiffe://cluster.local/ns/default/sa/bookinfo-reviews\",\
         destination_app=\"reviews\",destination_version=\"v2\",\
         destination_service=\"reviews.default.svc.cluster.local\",destination_canonical_service=\"reviews\",\
         destination_canonical_revision=\"v2\",destination_service_name=\"reviews\",\
         destination_service_namespace=\"default\",destination_cluster=\"Kubernetes\",\
         request_protocol=\"http\",response_code=\"{code}\",grpc_response_status=\"\",\
         response_flags=\"-\",connection_security_policy=\"mutual_tls\""
    )
}

/// A page of `SERIES` sample lines, of which about `canary` are the canary's
/// inbound requests and latency buckets; the rest are Envoy's own stats and
/// the pod's outbound requests. Counters grow with `step`.
fn page(canary: usize, step: u64) -> String {
    let mut out = String::with_capacity(SERIES * 900);
    let mut lines = 0;
    let mut requests = String::from("# TYPE istio_requests_total counter\n");
    let mut buckets = String::from("# TYPE istio_request_duration_milliseconds histogram\n");
    // Each combination of source and code is one counter and 20 buckets.
    let combos = canary / (1 + ENVOY_LE.len());
    for c in 0..combos {
        let labels = istio_labels(
            "destination",
            &format!("client{}-v{}", c / 4, c % 3),
            [200, 404, 503, 500][c % 4],
        );
        let total = 1_000 + step * (c as u64 + 1);
        requests.push_str(&format!("istio_requests_total{{{labels}}} {total}\n"));
        for (i, le) in ENVOY_LE.iter().enumerate() {
            let cum = total * (i as u64 + 1) / ENVOY_LE.len() as u64;
            buckets.push_str(&format!(
                "istio_request_duration_milliseconds_bucket{{{labels},le=\"{le}\"}} {cum}\n"
            ));
        }
        lines += 1 + ENVOY_LE.len();
    }
    out.push_str(&requests);
    out.push_str(&buckets);
    // The pod's outbound calls, reported by the source: same families, not counted.
    out.push_str("# TYPE istio_request_bytes histogram\n");
    let mut n = 0u64;
    while lines < SERIES {
        if n % 2 == 0 {
            let labels = istio_labels("source", &format!("reviews-v{n}"), 200);
            out.push_str(&format!(
                "istio_request_bytes_bucket{{{labels},le=\"1000\"}} {}\n",
                n * step
            ));
        } else {
            out.push_str(&format!(
                "envoy_cluster_upstream_rq_total{{cluster_name=\"outbound|9080||svc{n}.default.svc.cluster.local\"}} {}\n",
                n * step
            ));
        }
        n += 1;
        lines += 1;
    }
    out
}

/// CPU time this thread has run, from the scheduler's accounting (Linux).
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Milliseconds per page, wall and CPU: medians of `runs` runs of `PAGES` pages each.
fn measure(pages: &[String], runs: usize) -> (f64, Option<f64>) {
    let schema = Schema::istio(&[("destination_workload".into(), "reviews-v2".into())]);
    let per_page = |d: Duration| d.as_secs_f64() * 1e3 / (pages.len() - 1) as f64;
    let (wall, cpu): (Vec<f64>, Vec<Option<f64>>) = (0..runs)
        .map(|_| {
            let mut diff = CounterDiff::new(
                Duration::from_secs(30),
                Duration::from_secs(600),
                LatencyUnit::Milliseconds,
            );
            let t0 = tokio::time::Instant::now();
            // The baseline page is not timed: every timed page is diffed against a previous one.
            digest(pages[0].as_bytes(), &schema, MAX_SERIES, &mut diff, t0).unwrap();
            let cpu = thread_cpu();
            let start = Instant::now();
            for (i, p) in pages[1..].iter().enumerate() {
                let at = t0 + Duration::from_secs(i as u64 + 1);
                let delta = digest(p.as_bytes(), &schema, MAX_SERIES, &mut diff, at).unwrap();
                assert!(delta.requests > 0 || pages.len() == 1);
                black_box(delta);
            }
            let wall = start.elapsed();
            let cpu = cpu
                .zip(thread_cpu())
                .map(|(a, b)| per_page(b.saturating_sub(a)));
            (per_page(wall), cpu)
        })
        .unzip();
    let cpu: Option<Vec<f64>> = cpu.into_iter().collect();
    (median(wall), cpu.map(median))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Test runners list tests first (libtest's protocol): this binary is one
    // smoke test, and no ignored ones.
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            println!("smoke: test");
        }
        return;
    }
    let bench = args.iter().any(|a| a == "--bench");
    let runs = if bench { 31 } else { 1 };
    for (name, canary) in [
        ("every series the canary's", SERIES),
        ("a fifth the canary's", SERIES / 5),
    ] {
        let pages: Vec<String> = (0..=PAGES).map(|step| page(canary, step)).collect();
        let (wall, cpu) = measure(&pages, runs);
        let cpu = cpu.map_or(String::new(), |c| format!(", {c:.3} ms CPU"));
        println!(
            "parse + diff, {SERIES} series ({name}), {:.1} MiB page: {wall:.3} ms/page wall{cpu}, {:.0} ns/series (medians of {runs})",
            pages[1].len() as f64 / (1 << 20) as f64,
            wall * 1e6 / SERIES as f64
        );
    }
}
