//! `kubectl canary-guard`: the binary linked as `kubectl-canary_guard` answers as a kubectl
//! plugin: its usage names kubectl, `status` reads the group, and `status --watch` redraws
//! when the VirtualService changes (only then) and exits 0 on Ctrl-C.

mod support;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use canary_guard_test_api::embedded_api::{PatchType, Resource};
use support::cluster::*;

/// A temporary directory holding `kubectl-canary_guard`, a link to the built binary.
fn plugin_dir(name: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("cg-plugin-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let plugin = dir.join("kubectl-canary_guard");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_canary-guard"), &plugin).unwrap();
    (dir, plugin)
}

#[test]
fn the_linked_binary_speaks_as_kubectl_canary_guard() {
    let (dir, plugin) = plugin_dir("usage");
    let out = Command::new(&plugin).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{help}");
    assert!(help.contains("Usage: kubectl canary-guard"), "{help}");
    assert!(
        help.contains("status") && help.contains("restore"),
        "{help}"
    );
    let out = Command::new(&plugin).arg("status").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("Usage: kubectl canary-guard status"), "{err}");
    // The same binary under its own name keeps its own usage.
    let out = Command::new(env!("CARGO_BIN_EXE_canary-guard"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: canary-guard"));
    std::fs::remove_dir_all(dir).unwrap();
}

fn set_weights(api: &canary_guard_test_api::embedded_api::EmbeddedApi, v1: i64, v2: i64) {
    let mut spec = virtual_service()["spec"].clone();
    spec["http"][0]["route"][0]["weight"] = v1.into();
    spec["http"][0]["route"][1]["weight"] = v2.into();
    api.patch(
        Resource::VirtualServices,
        NS,
        VS,
        PatchType::Merge,
        serde_json::json!({ "spec": spec }),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_watch_redraws_on_change_and_exits_0_on_ctrl_c() {
    let (api, running) = start_api().await;
    let (dir, plugin) = plugin_dir("watch");
    let kubeconfig = kubeconfig(&running, &dir);
    let args = [
        "status",
        "--group",
        "reviews",
        "--virtual-service",
        VS,
        "--canary-subset",
        "v2",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
    ];
    let once = tokio::task::spawn_blocking({
        let (plugin, args) = (plugin.clone(), args.map(String::from));
        move || Command::new(plugin).args(args).output().unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&once.stdout);
    assert!(
        once.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&once.stderr)
    );
    assert!(text.starts_with("group reviews in default:"), "{text}");

    let mut child = Command::new(&plugin)
        .args(args)
        .arg("--watch")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Frames start with the clear-screen sequence; a reader thread hands each one over.
    let (tx, frames) = mpsc::channel::<String>();
    let mut stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut chunk) {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            let mut parts: Vec<&str> = text.split("\x1b[2J\x1b[H").collect();
            // The last part may be incomplete until the next frame or the end.
            let last = parts.pop().unwrap_or_default().to_string();
            for p in parts.into_iter().filter(|p| !p.is_empty()) {
                let _ = tx.send(p.to_string());
            }
            buf = format!("\x1b[2J\x1b[H{last}").into_bytes();
            if last.contains("weights:") && last.ends_with('\n') {
                let _ = tx.send(last);
                buf.clear();
            }
        }
    });
    let next = |what: &str| {
        frames
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("no frame: {what}"))
    };
    let first = next("first");
    assert!(first.contains("=10 (canary)"), "{first}");
    set_weights(&api, 100, 0);
    let second = next("after the change");
    assert!(second.contains("=0 (canary)"), "{second}");
    // Nothing changes now: two more looks draw nothing.
    assert!(
        frames.recv_timeout(Duration::from_millis(2500)).is_err(),
        "redrawn without a change"
    );
    // Ctrl-C, through the shell's own `kill`.
    let killed = Command::new("sh")
        .args(["-c", &format!("kill -INT {}", child.id())])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
    // `restore` through the plugin too: nothing recorded, nothing written.
    let restore = Command::new(&plugin)
        .args(["restore", "--virtual-service", VS, "--kubeconfig"])
        .arg(&kubeconfig)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&restore.stdout);
    assert!(restore.status.success(), "{text}");
    assert!(text.contains("carries no rollback record"), "{text}");
    std::fs::remove_dir_all(dir).unwrap();
}
