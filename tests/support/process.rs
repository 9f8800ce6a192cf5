//! The `canary-guard` binary as a child process.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A free loopback port (bound, then released for the child to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `canary-guard run --standalone` child and its addresses.
pub struct GuardProcess {
    pub child: Child,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
}

impl GuardProcess {
    /// Starts the binary in front of `app` and waits until `/readyz` answers.
    pub async fn start(app: SocketAddr, extra: &[&str]) -> Self {
        let proxy: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_canary-guard"))
            .args(["run", "--standalone", "--mode", "proxy"])
            .args(["--listen", &proxy.to_string()])
            .args(["--upstream", &format!("http://{app}")])
            .args(["--admin-listen", &admin.to_string()])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let g = Self {
            child,
            proxy,
            admin,
        };
        let url = format!("http://{admin}/readyz");
        for _ in 0..200 {
            if let Ok(r) = super::http1()
                .request(http::Request::get(&url).body(super::empty()).unwrap())
                .await
            {
                if r.status() == 200 {
                    return g;
                }
            }
            // The child is another process: nothing to await but its port.
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("guard did not become ready");
    }

    /// Peak resident memory of the child in KiB (VmHWM).
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Sends SIGTERM, as the kubelet does.
    pub fn terminate(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
}

impl Drop for GuardProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
