//! `paymux bench` runs and reports: every scenario and floor is in its JSON, with requests made
//! and ratios computed. Numbers are not judged here (no timing assertion in the suite): a tiny
//! run on a busy test machine says nothing about speed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use serde_json::Value;

#[test]
fn a_short_bench_reports_every_scenario_with_its_floor() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_paymux"))
        .args(["bench", "--quick", "--measure-ms", "300", "--warmup-ms", "50"])
        .args(["--callbacks", "40", "--clients", "1,2", "--slow-clients", "8", "--json"])
        .arg(&json)
        .arg("--svg")
        .arg(dir.path().join("bench.svg"))
        .env_remove("PAYMUX_DATABASE_URL")
        .output()
        .expect("the paymux binary runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("scenario") && table.contains("create_floor"), "{table}");

    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(report["machine"]["cores"].as_u64().unwrap() >= 1);
    let rows = report["results"].as_array().unwrap();
    let of = |scenario: &str| rows.iter().filter(|r| r["scenario"] == scenario).collect::<Vec<_>>();
    for floor in ["create_floor", "callback_floor"] {
        assert!(of(floor)[0]["rps"].as_f64().unwrap() > 0.0, "{floor}");
    }
    // Creates: three channels, two client counts, with and without Idempotency-Key.
    let creates = of("create");
    assert_eq!(creates.len(), 3 * 2 * 2, "{creates:?}");
    for r in creates.iter().chain(&of("direct")).chain(&of("callback")).chain(&of("slow_channel")) {
        assert!(r["requests"].as_u64().unwrap() > 0, "a run made no request: {r}");
        assert_eq!(r["errors"], 0, "{r}");
        assert!(r["p50_ms"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["store"] == "sqlite", "{r}");
    }
    for r in creates.iter().chain(&of("callback")) {
        let (rps, floor, ratio) = (r["rps"].as_f64(), r["floor_rps"].as_f64(), r["ratio"].as_f64());
        assert!((ratio.unwrap() - rps.unwrap() / floor.unwrap()).abs() < 1e-9, "{r}");
    }
    // The gateway's added latency is reported against the direct call at the same clients.
    assert!(creates.iter().all(|r| r["added_p50_ms"].is_number()), "{creates:?}");
    assert_eq!(of("open_loop").len(), 3);
    let svg = std::fs::read_to_string(dir.path().join("bench.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("creates/s"), "{svg}");
}
