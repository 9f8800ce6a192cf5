//! The guard beside its peers: the same nginx upstream reached directly, through
//! `canary-guard run --standalone`, through HAProxy (one thread, `http-reuse
//! always`) and through nginx (one worker, `proxy_pass` to a keep-alive
//! upstream), loaded by wrk (one thread) in interleaved rounds.
//!
//! Design rule: every figure of the guard is set beside the same figure of
//! both peers from the same run, with its ratio to the better peer; nothing is
//! compared across runs. Needs `haproxy`, `nginx` and `wrk` (`scripts/bench`
//! installs them). Prints Markdown table rows; `--quick` runs one short round.

mod loopback;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use loopback::{
    cpu_seconds, free_port, median, nginx_binary, start_guard, start_nginx, vm_kib, wait_for, wrk,
    Proc, Scratch, WRK_SCRIPT,
};

/// The guard's RSS target under 1,000 keep-alive connections, in KiB.
const RSS_TARGET_KIB: f64 = 20.0 * 1024.0;
/// Idle keep-alive connections held open for the memory reading.
const IDLE_CONNECTIONS: usize = 1000;

/// HAProxy with one thread in front of `upstream`, reusing upstream connections.
fn start_haproxy(dir: &Path, upstream: u16) -> (Proc, u16) {
    let port = free_port();
    let conf = dir.join("haproxy.cfg");
    fs::write(
        &conf,
        format!(
            "global\n  nbthread 1\n  maxconn 8192\n\
             defaults\n  mode http\n  timeout connect 2s\n  timeout client 120s\n\
               timeout server 120s\n  timeout http-keep-alive 120s\n  http-reuse always\n\
             frontend peer\n  bind 127.0.0.1:{port}\n  default_backend app\n\
             backend app\n  server app 127.0.0.1:{upstream}\n"
        ),
    )
    .expect("haproxy.cfg");
    // -db: foreground, no master process, so the child is the proxy itself.
    let child = Command::new(binary("haproxy"))
        .arg("-db")
        .arg("-f")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("haproxy starts (is it installed?)");
    let p = Proc(child);
    wait_for(port, "/small");
    (p, port)
}

/// nginx with one worker (no master) proxying to `upstream` over kept-alive connections.
fn start_nginx_proxy(dir: &Path, upstream: u16) -> (Proc, u16) {
    let port = free_port();
    let dir = dir.join("peer-nginx");
    fs::create_dir_all(&dir).expect("nginx proxy directory");
    let d = dir.display();
    let conf = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\nworker_rlimit_nofile 16384;\n\
         pid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 8192; }}\n\
         http {{\n access_log off;\n keepalive_requests 10000000;\n keepalive_timeout 120s;\n\
          client_body_temp_path {d}/tmp-body;\n proxy_temp_path {d}/tmp-proxy;\n\
          fastcgi_temp_path {d}/tmp-fcgi;\n uwsgi_temp_path {d}/tmp-uwsgi;\n scgi_temp_path {d}/tmp-scgi;\n\
          upstream app {{ server 127.0.0.1:{upstream}; keepalive 64; keepalive_requests 10000000; }}\n\
          server {{\n  listen 127.0.0.1:{port};\n\
           location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; }}\n }}\n}}\n"
    );
    fs::write(dir.join("nginx.conf"), conf).expect("nginx.conf");
    let child = Command::new(nginx_binary())
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("nginx starts (is it installed?)");
    let p = Proc(child);
    wait_for(port, "/small");
    (p, port)
}

fn binary(name: &str) -> String {
    let sbin = format!("/usr/sbin/{name}");
    if Path::new(&sbin).exists() {
        sbin
    } else {
        name.to_string()
    }
}

/// The proxies compared, in table order.
const PROXIES: [&str; 3] = ["guard", "HAProxy", "nginx"];

fn start(which: &str, dir: &Path, upstream: u16) -> (Proc, u16) {
    match which {
        "guard" => start_guard(upstream),
        "HAProxy" => start_haproxy(dir, upstream),
        _ => start_nginx_proxy(dir, upstream),
    }
}

/// Opens `n` connections to `port`, each answered once and then left idle.
fn hold_idle(port: u16, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            s.write_all(b"GET /small HTTP/1.1\r\nHost: bench\r\n\r\n")
                .expect("request");
            let mut got = Vec::new();
            let mut buf = [0u8; 512];
            // The upstream answers "ok\n" with a Content-Length: its end is ours.
            while !(got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"ok\n")) {
                let n = s.read(&mut buf).expect("response");
                assert!(n > 0, "closed before the response ended");
                got.extend_from_slice(&buf[..n]);
            }
            s
        })
        .collect()
}

/// `x` divided by the better (lower, or with `higher_is_better` higher) of the peers.
fn ratio(x: f64, peers: [f64; 2], higher_is_better: bool) -> f64 {
    let best = if higher_is_better {
        peers[0].max(peers[1])
    } else {
        peers[0].min(peers[1])
    };
    x / best
}

fn row(measurement: &str, result: String, target: &str, met: Option<bool>) {
    let met = match met {
        Some(true) => "met",
        Some(false) => "**not met**",
        None => "—",
    };
    println!("| peers | {measurement} | {result} | {target} | {met} |");
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, secs) = if quick { (1, 1) } else { (3, 4) };
    let scratch = Scratch::new();
    let script = scratch.0.join("bench.lua");
    fs::write(&script, WRK_SCRIPT).expect("wrk script");
    let upstream = free_port();
    let _nginx = start_nginx(&scratch.0, upstream);

    // Index 0 is direct; 1.. follow PROXIES.
    let mut targets = vec![(None, upstream)];
    for p in PROXIES {
        let (proc_, port) = start(p, &scratch.0, upstream);
        targets.push((Some(proc_), port));
    }
    let n = targets.len();
    let mut p50 = vec![Vec::new(); n];
    let mut p99 = vec![Vec::new(); n];
    let mut rps = vec![Vec::new(); n];
    let mut cpu_per_k = vec![Vec::new(); n];
    let mut errors = 0;
    for round in 0..rounds {
        // Each round starts with a different target, so none always goes first.
        let order: Vec<usize> = (0..n).map(|i| (i + round) % n).collect();
        for &i in &order {
            let url = format!("http://127.0.0.1:{}/small", targets[i].1);
            let one = wrk(&script, &url, 1, 1, secs, None);
            p50[i].push(one.p50_us);
            p99[i].push(one.p99_us);
            errors += one.errors;
        }
        for &i in &order {
            let url = format!("http://127.0.0.1:{}/small", targets[i].1);
            let pid = targets[i].0.as_ref().map(|p| p.0.id());
            let cpu0 = pid.map(cpu_seconds);
            let many = wrk(&script, &url, 32, 1, secs, None);
            if let (Some(pid), Some(cpu0)) = (pid, cpu0) {
                // CPU milliseconds per 1,000 requests.
                cpu_per_k[i].push((cpu_seconds(pid) - cpu0) * 1e6 / many.requests);
            }
            rps[i].push(many.rps);
            errors += many.errors;
        }
    }
    drop(targets);

    // Added latency per round (against that round's direct run), then medians.
    let added =
        |xs: &[Vec<f64>], i: usize| median((0..rounds).map(|r| xs[i][r] - xs[0][r]).collect());
    for (label, xs, judged) in [("p50", &p50, true), ("p99", &p99, false)] {
        let a: Vec<f64> = (1..n).map(|i| added(xs, i)).collect();
        // Ratios of added latency only mean something while both add some.
        let versus = if a[0] > 0.0 && a[1].min(a[2]) > 0.0 {
            format!(
                "guard ÷ better peer {:.2}×",
                ratio(a[0], [a[1], a[2]], false)
            )
        } else {
            "no ratio: the direct runs' own spread was larger".to_string()
        };
        row(
            &format!(
                "added {label} latency, 1 connection, 3 B responses (direct {label} {:.0} µs)",
                median(xs[0].clone())
            ),
            format!(
                "guard {:+.0} µs, HAProxy {:+.0} µs, nginx {:+.0} µs; {versus}",
                a[0], a[1], a[2]
            ),
            if judged {
                "≤ better peer (≤ 1.00×)"
            } else {
                "reported beside the peers"
            },
            judged.then_some(a[0] <= a[1].min(a[2])),
        );
    }
    let t: Vec<f64> = (0..n).map(|i| median(rps[i].clone())).collect();
    let r = ratio(t[1], [t[2], t[3]], true);
    row(
        "throughput, 32 connections, 3 B responses",
        format!(
            "direct {:.1}k, guard {:.1}k, HAProxy {:.1}k, nginx {:.1}k rps; guard ÷ better peer {r:.2}× ({errors} errors)",
            t[0] / 1e3,
            t[1] / 1e3,
            t[2] / 1e3,
            t[3] / 1e3
        ),
        "≥ better peer (≥ 1.00×)",
        Some(r >= 1.0),
    );
    let c: Vec<f64> = (1..n).map(|i| median(cpu_per_k[i].clone())).collect();
    let r = ratio(c[0], [c[1], c[2]], false);
    row(
        "proxy CPU per 1,000 requests (utime + stime, 32-connection runs)",
        format!(
            "guard {:.1} ms, HAProxy {:.1} ms, nginx {:.1} ms; guard ÷ better peer {r:.2}×, ÷ HAProxy {:.2}×",
            c[0],
            c[1],
            c[2],
            c[0] / c[1]
        ),
        "≤ HAProxy",
        Some(c[0] <= c[1]),
    );

    // Memory: each proxy fresh, then holding 1,000 idle keep-alive connections.
    let mut rss = Vec::new();
    for p in PROXIES {
        let (proc_, port) = start(p, &scratch.0, upstream);
        let held = hold_idle(port, IDLE_CONNECTIONS);
        thread::sleep(Duration::from_millis(500));
        rss.push(vm_kib(proc_.0.id(), "VmRSS") as f64);
        drop(held);
    }
    let r = ratio(rss[0], [rss[1], rss[2]], false);
    row(
        "RSS with 1,000 idle keep-alive connections open (each served once)",
        format!(
            "guard {:.1} MiB, HAProxy {:.1} MiB, nginx {:.1} MiB; guard ÷ better peer {r:.2}×",
            rss[0] / 1024.0,
            rss[1] / 1024.0,
            rss[2] / 1024.0
        ),
        "guard ≤ 20 MiB",
        Some(rss[0] <= RSS_TARGET_KIB),
    );
}
