//! The matrix page is a grid at 64 cells: scenarios down, the other axes across with grouped
//! headers, one compact cell each — checked in headless Chromium: the screenshot must show
//! many compact cells side by side on one line, which a page that stacks its cells into one
//! column (or draws one wide card per matrix cell) does not.

mod common;

use std::path::{Path, PathBuf};

use cnpg_ext_harness::matrix::MatrixReport;
use common::*;
use serde_json::json;

/// 2 backends × 2 PostgreSQL × 4 CNPG releases × 2 image builds × 2 scenario sets = 64 cells,
/// four scenarios each; a few failed (with categories), one flaky, one unsupported column.
fn big_report() -> MatrixReport {
    let mut cells = Vec::new();
    let mut n = 0;
    for backend in ["local", "container"] {
        for pg in ["wheel", "pg17"] {
            for cnpg in ["1.27.1", "1.28.4", "1.29.2", "1.30.1"] {
                for img in ["fixture", "upstream"] {
                    for set in ["seed", "upgrade"] {
                        n += 1;
                        let id = format!("{backend}_{pg}_cnpg-{cnpg}_img-{img}_{set}");
                        let unsupported = pg == "pg17";
                        let scenarios: Vec<serde_json::Value> = if unsupported {
                            Vec::new()
                        } else {
                            (0..4)
                                .map(|i| {
                                    let (status, category) = match (n + i) % 11 {
                                        3 => ("failed", Some("missing-shared-library")),
                                        7 => ("failed", Some("assertion")),
                                        9 => ("flaky", Some("timeout")),
                                        _ => ("passed", None),
                                    };
                                    json!({"id": format!("{set}-scenario-{i}"), "status": status, "duration_ms": 900 + i, "category": category})
                                })
                                .collect()
                        };
                        let failed = scenarios.iter().filter(|s| s["status"] == "failed").count();
                        let status = if unsupported {
                            "unsupported"
                        } else if failed > 0 {
                            "failed"
                        } else {
                            "passed"
                        };
                        cells.push(json!({
                            "id": id, "backend": backend,
                            "postgres": {"name": pg, "value": pg},
                            "cnpg": cnpg,
                            "image": {"name": img, "substitute": {}},
                            "scenario_set": {"name": set, "paths": []},
                            "status": status,
                            "reason": if unsupported { Some("unsupported: PostgreSQL < 18 (found PostgreSQL 17.6)") } else { None },
                            "started_at": "2026-12-03T10:00:00+00:00", "duration_ms": 4000,
                            "dir": format!("cells/{id}"),
                            "files": [format!("cells/{id}/index.html"), format!("cells/{id}/output.log")],
                            "scenarios": scenarios,
                        }));
                    }
                }
            }
        }
    }
    let report = json!({
        "kind": "cnpg-ext-harness/matrix", "schema_version": 2, "harness_version": "test",
        "matrix_file": "big.yaml", "started_at": "2026-12-03T10:00:00+00:00", "duration_ms": 1,
        "jobs": 2, "cell_time_ms": 1, "command": ["cnpg-ext-harness", "matrix", "big.yaml"],
        "totals": {"passed": 0, "failed": 0, "unsupported": 0, "error": 0},
        "cells": cells,
    });
    let mut r: MatrixReport = serde_json::from_value(report).unwrap();
    r.totals = MatrixReport::totals_of(&r.cells);
    r
}

fn chromium() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| std::process::Command::new(c).arg("--version").output().map(|o| o.status.success()).unwrap_or(false));
    if found.is_none() {
        cannot_run("chromium is not installed: the matrix grid screenshot", Some("CNPG_EXT_HARNESS_REQUIRE_CHROMIUM"));
    }
    found
}

fn screenshot(chromium: &str, page: &Path, png: &Path, width: u32) {
    let profile = tempfile::tempdir().unwrap();
    let _ = std::fs::remove_file(png);
    let o = std::process::Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"])
        .args(["--disable-component-update", "--disable-sync", "--hide-scrollbars"])
        .arg(format!("--window-size={width},1100"))
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(png.is_file(), "no screenshot: {}", text(&o));
}

/// The most compact cells (a run of a status background 60..=120 px wide) on any one pixel
/// line of the screenshot.
fn most_cells_on_a_line(png: &Path) -> usize {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.line_size / info.width as usize;
    // --pass-bg, --fail-bg, --err-bg (flaky), --unsup-bg of the page's CSS.
    let backgrounds: [[u8; 3]; 4] = [[0xda, 0xfb, 0xe1], [0xff, 0xeb, 0xe9], [0xff, 0xf8, 0xc5], [0xea, 0xee, 0xf2]];
    let mut best = 0;
    for y in 0..info.height as usize {
        let line = &buf[y * info.line_size..(y + 1) * info.line_size];
        let (mut runs, mut len) = (0, 0);
        for x in 0..=info.width as usize {
            let is_bg = x < info.width as usize && {
                let p = &line[x * channels..x * channels + 3];
                backgrounds.iter().any(|b| b == p)
            };
            if is_bg {
                len += 1;
            } else {
                if (60..=120).contains(&len) {
                    runs += 1;
                }
                len = 0;
            }
        }
        best = best.max(runs);
    }
    best
}

#[test]
fn sixty_four_cells_render_as_a_grid_with_grouped_headers() {
    let report = big_report();
    assert_eq!(report.cells.len(), 64);
    let dir: PathBuf = repo().join("target/test-reports/matrix-grid");
    let _ = std::fs::remove_dir_all(&dir);
    cnpg_ext_harness::matrix::write_report(&report, &dir).unwrap();
    let html = std::fs::read_to_string(dir.join("index.html")).unwrap();
    assert!(!html.contains("<script"));
    // Scenarios down (4 per set, 2 sets), 32 columns across; a header row per varying axis,
    // equal neighbours merged: 2 backends, 4 PostgreSQL groups, 16 CNPG groups, 32 images.
    assert_eq!(html.matches("<th class=\"row\">").count(), 8, "one row per scenario");
    assert_eq!(html.matches("<td class=\"g ").count(), 8 * 32, "one compact cell per scenario and column");
    assert_eq!(html.matches("<th class=\"ax\" colspan=\"16\">").count(), 2, "backend headers span 16 columns");
    assert_eq!(html.matches("<th class=\"ax\" colspan=\"8\">").count(), 4, "PostgreSQL headers span 8");
    assert_eq!(html.matches("<th class=\"ax\" colspan=\"2\">").count(), 16, "CNPG headers span 2");
    assert_eq!(html.matches("<th class=\"ax\" colspan=\"1\">").count(), 32, "one images header per column");
    // A failure shows its category and links to its evidence in the cell's page.
    assert!(html.contains("<span class=\"cat\">missing-shared-library</span>"), "category in the cell");
    assert!(html.contains("href=\"cells/local_wheel_cnpg-1.27.1_img-fixture_seed/index.html#seed-scenario-"));
    assert!(html.contains("class=\"g s-flaky\""));
    assert!(html.contains("class=\"g s-unsupported\""));

    let Some(chromium) = chromium() else { return };
    let png = dir.join("index.png");
    screenshot(chromium, &dir.join("index.html"), &png, 1400);
    let side_by_side = most_cells_on_a_line(&png);
    eprintln!("screenshot: {} ({side_by_side} compact cells on one line)", png.display());
    assert!(side_by_side >= 10, "the cells stack instead of forming a grid: {side_by_side} on the fullest line");
}

/// The check itself can fail: the same measurement on a page of stacked cards finds none.
#[test]
fn the_screenshot_check_fails_on_stacked_cells() {
    let Some(chromium) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut html = String::from("<!DOCTYPE html><html><body style=\"background:#fff\">");
    for i in 0..12 {
        html += &format!("<div style=\"background:#dafbe1;width:240px;height:40px;margin:6px\">cell {i}</div>");
    }
    html += "</body></html>";
    std::fs::write(dir.path().join("stacked.html"), html).unwrap();
    let png = dir.path().join("stacked.png");
    screenshot(chromium, &dir.path().join("stacked.html"), &png, 1400);
    assert_eq!(most_cells_on_a_line(&png), 0);
}
