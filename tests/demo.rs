//! `canary-guard demo`: the README's first command.

use std::process::Command;

#[test]
fn demo_rolls_back_a_half_failing_canary_within_five_seconds() {
    let out = Command::new(env!("CARGO_BIN_EXE_canary-guard"))
        .args(["demo", "--json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {}: {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["rolled_back"], true);
    let t = report["time_to_rollback_s"].as_f64().unwrap();
    assert!(t > 0.0 && t <= 5.0, "time to rollback {t}s");
    assert_eq!(
        report["weights_before"],
        serde_json::json!({"v1": 90, "v2": 10})
    );
    assert_eq!(
        report["weights_after"],
        serde_json::json!({"v1": 100, "v2": 0})
    );
    assert!(report["leader"]
        .as_str()
        .unwrap()
        .starts_with("reviews-v2-"));
    assert_eq!(report["rollback_record"]["canaryRevision"], "7c9d5b6f4");
    // The canary's errors stop once the traffic is back on stable.
    assert!(report["requests"]["canary_errors"].as_u64().unwrap() > 0);
}

/// `demo --json` with `args`, which must roll back; its report.
fn demo_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_canary-guard"))
        .args(["demo", "--json"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn demo_with_a_relative_fault_rolls_back_naming_the_baseline() {
    // 4% errors, under the 5% limit, against stable pods at 0.5%; 100 rps to the canary.
    let report = demo_json(&[
        "--fault",
        "relative",
        "--rate",
        "400",
        "--canary-weight",
        "25",
        "--fault-after",
        "2s",
    ]);
    assert_eq!(report["rolled_back"], true);
    assert_eq!(report["fault_ratio"], 0.04);
    let reason = report["rollback_record"]["reason"].as_str().unwrap();
    assert!(reason.contains("vs baseline"), "{reason}");
}

#[test]
fn demo_with_a_latency_fault_rolls_back_too() {
    let report = demo_json(&[
        "--fault",
        "latency",
        "--fault-ratio",
        "0.2",
        "--fault-after",
        "2s",
    ]);
    assert_eq!(report["rolled_back"], true);
    assert!(report["rollback_record"]["reason"]
        .as_str()
        .unwrap()
        .contains("latency"));
}
