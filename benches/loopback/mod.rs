//! Shared by the loopback proxy benches: the nginx upstream, the guard, wrk
//! runs and readings of a process's CPU time and memory from /proc.
//!
//! Design rule: only what both `proxy_overhead` and `proxy_peers` use, so that
//! each bench keeps its own measurements and nothing here goes unused.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Prints wrk's numbers in one parseable line; a delay between requests when
/// `WRK_DELAY_MS` is set.
pub const WRK_SCRIPT: &str = r#"
local delay_ms = tonumber(os.getenv("WRK_DELAY_MS") or "0")
if delay_ms > 0 then
  function delay() return delay_ms end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"#;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A scratch directory, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("canary-guard-bench-{}", std::process::id()));
        fs::create_dir_all(dir.join("www")).expect("scratch directory");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A child process killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn nginx_binary() -> String {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("nginx")
        .to_string()
}

/// One nginx worker serving `/small` (3 bytes) and `/64k` (64 KiB).
pub fn start_nginx(dir: &Path, port: u16) -> Proc {
    fs::write(dir.join("www/64k"), vec![b'x'; 64 * 1024]).expect("body file");
    let d = dir.display();
    let conf = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\nworker_rlimit_nofile 16384;\n\
         pid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 8192; }}\n\
         http {{\n access_log off;\n keepalive_requests 10000000;\n keepalive_timeout 120s;\n\
          client_body_temp_path {d}/tmp-body;\n proxy_temp_path {d}/tmp-proxy;\n\
          fastcgi_temp_path {d}/tmp-fcgi;\n uwsgi_temp_path {d}/tmp-uwsgi;\n scgi_temp_path {d}/tmp-scgi;\n\
          server {{\n  listen 127.0.0.1:{port};\n  root {d}/www;\n  default_type application/octet-stream;\n\
           location = /small {{ return 200 \"ok\\n\"; }}\n }}\n}}\n"
    );
    fs::write(dir.join("nginx.conf"), conf).expect("nginx.conf");
    let child = Command::new(nginx_binary())
        .arg("-p")
        .arg(dir)
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
    p
}

pub fn start_guard(upstream: u16) -> (Proc, u16) {
    let (port, admin) = (free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_canary-guard"))
        .args([
            "run",
            "--standalone",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin-listen",
            &format!("127.0.0.1:{admin}"),
            "--upstream",
            &format!("http://127.0.0.1:{upstream}"),
        ])
        .env("CANARY_GUARD_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("canary-guard starts");
    let p = Proc(child);
    wait_for(admin, "/readyz");
    (p, port)
}

/// Waits until `GET path` on the port answers 200.
pub fn wait_for(port: u16, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let req = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
            let mut resp = String::new();
            if s.write_all(req.as_bytes()).is_ok()
                && s.read_to_string(&mut resp).is_ok()
                && resp.starts_with("HTTP/1.1 200")
            {
                return;
            }
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing answered 200 on 127.0.0.1:{port}{path}");
}

/// What one wrk run measured.
#[derive(Clone, Copy)]
pub struct Load {
    pub rps: f64,
    pub requests: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub errors: u64,
}

/// Runs wrk against `url`; with `rate`, `conns` connections share it.
pub fn wrk(
    script: &Path,
    url: &str,
    conns: u32,
    threads: u32,
    secs: u32,
    rate: Option<u32>,
) -> Load {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t",
        &threads.to_string(),
        "-c",
        &conns.to_string(),
        "-d",
        &format!("{secs}s"),
        "-s",
    ])
    .arg(script)
    .arg(url);
    if let Some(rate) = rate {
        cmd.env("WRK_DELAY_MS", (conns * 1000 / rate).to_string());
    }
    let out = cmd.output().expect("wrk runs (is it installed?)");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("wrk printed no result: {text}"));
    let n: Vec<f64> = line
        .split_whitespace()
        .map(|x| x.parse().expect("number"))
        .collect();
    Load {
        rps: n[0] / (n[1] / 1e6),
        requests: n[0],
        p50_us: n[2],
        p99_us: n[3],
        errors: n[4] as u64,
    }
}

/// utime + stime of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    // Fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().expect("utime") + f[12].parse::<f64>().expect("stime");
    ticks / clock_ticks()
}

pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// A `Vm*` line of /proc/<pid>/status, in KiB.
pub fn vm_kib(pid: u32, field: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("/proc/<pid>/status")
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}
