//! Self-contained HTML pages (inline CSS, no scripts, no network) for people who do not read
//! terminals: the matrix grid (`index.html` of a matrix report) and one run (`index.html` of a
//! cell or a certification).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::reports::matrix::{CellResult, CellStatus, MatrixReport};
use crate::reports::view::RunView;

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `6603` → `6.6 s`; `62` → `62 ms`.
pub fn fmt_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 120_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    }
}

/// `2026-11-25T12:40:44.42+00:00` → `2026-11-25 12:40:44`.
fn short_time(rfc3339: &str) -> String {
    let s = rfc3339.replacen('T', " ", 1);
    s.chars().take(19).collect()
}

/// A relative link target: each path segment percent-encoded where needed.
fn href(path: &str) -> String {
    let mut out = String::new();
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-_./~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

const CSS: &str = r#"
:root{--pass:#1a7f37;--pass-bg:#dafbe1;--fail:#cf222e;--fail-bg:#ffebe9;--unsup:#57606a;--unsup-bg:#eaeef2;
--err:#9a6700;--err-bg:#fff8c5;--ink:#1f2328;--muted:#59636e;--line:#d1d9e0;--card:#fff;--page:#f6f8fa}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 -apple-system,BlinkMacSystemFont,"Segoe UI",Helvetica,Arial,sans-serif;color:var(--ink);background:var(--page)}
header{background:#24292f;color:#fff;padding:18px 32px}
header h1{margin:0;font-size:20px;font-weight:600}
header .sub{color:#d0d7de;font-size:13px;margin-top:4px}
main{padding:20px 32px 40px;max-width:1400px}
.badges{display:flex;gap:10px;flex-wrap:wrap;margin:0 0 18px}
.badge{border-radius:999px;padding:4px 12px;font-weight:600;font-size:13px;border:1px solid transparent}
.b-passed{background:var(--pass-bg);color:var(--pass);border-color:#aceebb}
.b-failed{background:var(--fail-bg);color:var(--fail);border-color:#ffcecb}
.b-unsupported{background:var(--unsup-bg);color:var(--unsup);border-color:#d1d9e0}
.b-error{background:var(--err-bg);color:var(--err);border-color:#f5e0a0}
.b-timeout{background:var(--fail-bg);color:var(--fail);border-color:#ffcecb}
.b-skipped{background:var(--unsup-bg);color:var(--unsup)}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:16px 18px;margin:0 0 18px}
h2{font-size:16px;margin:0 0 12px}
h3{font-size:14px;margin:16px 0 6px}
table{border-collapse:separate;border-spacing:0;width:100%}
th,td{text-align:left;vertical-align:top;padding:8px 10px;border-bottom:1px solid var(--line)}
th{font-size:12px;color:var(--muted);font-weight:600;background:#f6f8fa}
table.grid{border-spacing:6px;border-collapse:separate;width:auto}
table.grid th{background:none;border:none;padding:4px 8px;white-space:nowrap}
table.grid th.row{text-align:right;color:var(--ink)}
table.grid th .ax{display:block;font-weight:400;color:var(--muted)}
td.cell{border:1px solid var(--line);border-radius:8px;width:240px;min-width:240px;padding:10px 12px;border-left-width:6px}
td.cell .st{font-weight:700;font-size:13px;text-transform:uppercase;letter-spacing:.03em}
td.cell .meta{color:var(--muted);font-size:12px;margin:2px 0 6px}
td.cell .why{font-size:12px;margin:0 0 6px;max-width:260px}
td.cell a{font-size:12px;margin-right:8px}
td.none{color:var(--muted);text-align:center;border:1px dashed var(--line);border-radius:8px}
.s-passed{background:var(--pass-bg);border-left-color:var(--pass)!important}.s-passed .st{color:var(--pass)}
.s-failed{background:var(--fail-bg);border-left-color:var(--fail)!important}.s-failed .st{color:var(--fail)}
.s-unsupported{background:var(--unsup-bg);border-left-color:var(--unsup)!important}.s-unsupported .st{color:var(--unsup)}
.s-error{background:var(--err-bg);border-left-color:var(--err)!important}.s-error .st{color:var(--err)}
.s-timeout{background:var(--fail-bg);border-left-color:var(--fail)!important}.s-timeout .st{color:var(--fail)}
.dot{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:6px;vertical-align:middle}
.d-passed{background:var(--pass)}.d-failed{background:var(--fail)}.d-unsupported,.d-skipped{background:var(--unsup)}.d-error{background:var(--err)}.d-timeout{background:var(--fail)}
pre{background:#f6f8fa;border:1px solid var(--line);border-radius:6px;padding:10px 12px;overflow:auto;font:12px/1.5 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;white-space:pre-wrap;margin:6px 0}
.exp{color:var(--pass)}.act{color:var(--fail)}
td.id code{white-space:nowrap}
code{font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#eff2f5;padding:1px 4px;border-radius:4px}
a{color:#0969da;text-decoration:none}a:hover{text-decoration:underline}
.legend{display:flex;gap:16px;color:var(--muted);font-size:12px;margin-top:10px}
.muted{color:var(--muted)}
footer{color:var(--muted);font-size:12px;padding:0 32px 24px}
"#;

fn page(title: &str, subtitle: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{t}</title><style>{CSS}</style></head><body><header><h1>{t}</h1><div class=\"sub\">{s}</div></header><main>{body}</main>\
         <footer>cnpg-ext-harness {v} · this page is self-contained: no scripts, no network</footer></body></html>\n",
        t = esc(title),
        s = esc(subtitle),
        v = env!("CARGO_PKG_VERSION"),
    )
}

fn badge(class: &str, text: &str) -> String {
    format!("<span class=\"badge b-{class}\">{}</span>", esc(text))
}

fn failure_block(f: &crate::reports::view::Failure) -> String {
    let mut out = format!("<pre>{}", esc(&f.locator));
    if let (Some(e), Some(a)) = (&f.expected, &f.actual) {
        let _ = write!(
            out,
            "\n<span class=\"exp\">expected: {}</span>\n<span class=\"act\">actual:   {}</span>",
            esc(e),
            esc(a)
        );
    } else if let Some(m) = &f.message {
        let _ = write!(out, "\n<span class=\"act\">error: {}</span>", esc(m));
    }
    out += "</pre>";
    out
}

fn column_label(c: &CellResult) -> (String, String) {
    let backend = match &c.spec.kubernetes {
        Some(k) => format!("{} · {}", c.spec.backend, k.name),
        None => c.spec.backend.clone(),
    };
    (backend, c.spec.postgres.name.clone())
}

fn row_label(c: &CellResult) -> (String, String) {
    (c.spec.scenarios.name.clone(), c.spec.cnpg.clone())
}

/// The matrix page: totals, the grid (rows: scenario set × CNPG release; columns: backend
/// (× Kubernetes) × PostgreSQL), a colour per cell, links to every cell's files, and the
/// failures with expected vs actual.
pub fn matrix_page(r: &MatrixReport) -> String {
    let mut b = String::with_capacity(4096 + r.cells.len() * 1024);
    let t = &r.totals;
    b += "<div class=\"badges\">";
    b += &badge("passed", &format!("{} passed", t.passed));
    b += &badge("failed", &format!("{} failed", t.failed));
    b += &badge("unsupported", &format!("{} unsupported", t.unsupported));
    b += &badge("error", &format!("{} error", t.error));
    if t.timeout > 0 {
        b += &badge("timeout", &format!("{} timeout", t.timeout));
    }
    b += "</div>";
    if let Some(d) = &r.description {
        let _ = write!(b, "<p class=\"muted\">{}</p>", esc(d));
    }

    // Grid.
    let mut cols: Vec<(String, String)> = Vec::new();
    let mut rows: Vec<(String, String)> = Vec::new();
    for c in &r.cells {
        let (cl, rl) = (column_label(c), row_label(c));
        if !cols.contains(&cl) {
            cols.push(cl);
        }
        if !rows.contains(&rl) {
            rows.push(rl);
        }
    }
    b += "<section class=\"card\"><h2>Compatibility matrix</h2><table class=\"grid\"><thead><tr><th></th>";
    for (backend, pg) in &cols {
        let _ = write!(b, "<th>{}<span class=\"ax\">PostgreSQL: {}</span></th>", esc(backend), esc(pg));
    }
    b += "</tr></thead><tbody>";
    for row in &rows {
        let _ = write!(b, "<tr><th class=\"row\">{}<span class=\"ax\">CNPG {}</span></th>", esc(&row.0), esc(&row.1));
        for col in &cols {
            match r.cells.iter().find(|c| &row_label(c) == row && &column_label(c) == col) {
                None => b += "<td class=\"none\">—</td>",
                Some(c) => grid_cell(&mut b, c),
            }
        }
        b += "</tr>";
    }
    b += "</tbody></table><div class=\"legend\">";
    for s in ["passed", "failed", "unsupported", "error", "timeout"] {
        let _ = write!(b, "<span><span class=\"dot d-{s}\"></span>{s}</span>");
    }
    b += "</div></section>";

    // Failures.
    let bad: Vec<&CellResult> = r
        .cells
        .iter()
        .filter(|c| matches!(c.status, CellStatus::Failed | CellStatus::Error | CellStatus::Timeout))
        .collect();
    if !bad.is_empty() {
        b += "<section class=\"card\"><h2>Failures</h2>";
        for c in bad {
            let _ = write!(
                b,
                "<h3 id=\"{id}\"><span class=\"dot d-{s}\"></span>{id} <a href=\"{dir}/summary.md\">summary</a> <a href=\"{dir}/output.log\">log</a></h3>",
                id = esc(&c.spec.id),
                s = c.status.name(),
                dir = href(&c.dir)
            );
            if let Some(reason) = &c.reason {
                let _ = write!(b, "<p>{}</p>", esc(reason));
            }
            for s in c.scenarios.iter() {
                if let Some(f) = &s.failure {
                    let _ = write!(b, "<div><code>{}</code></div>{}", esc(&s.id), failure_block(f));
                }
            }
            let logs: Vec<&String> = c.files.iter().filter(|f| f.contains("/logs/")).collect();
            if !logs.is_empty() {
                b += "<div class=\"muted\">PostgreSQL logs: ";
                for l in logs {
                    let name = l.rsplit_once("/logs/").map(|x| x.1).unwrap_or(l);
                    let _ = write!(b, "<a href=\"{}\">{}</a> ", href(l), esc(name));
                }
                b += "</div>";
            }
        }
        b += "</section>";
    }

    // Every cell.
    b += "<section class=\"card\"><h2>Cells</h2><table><thead><tr><th>cell</th><th>status</th><th>scenarios</th><th>PostgreSQL</th><th>time</th><th>started</th><th>files</th></tr></thead><tbody>";
    for c in &r.cells {
        let scen = if c.scenarios.is_empty() {
            "—".to_string()
        } else {
            format!("{}/{} passed", c.totals.passed, c.scenarios.len())
        };
        let carried = if c.carried_over_from.is_some() { " <span class=\"muted\">(carried over)</span>" } else { "" };
        let _ = write!(
            b,
            "<tr><td class=\"id\"><code>{}</code>{carried}</td><td><span class=\"dot d-{s}\"></span>{s}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"muted\">{}</td><td>",
            esc(&c.spec.id),
            esc(&scen),
            esc(c.postgresql.as_deref().unwrap_or(&c.spec.postgres.value)),
            fmt_ms(c.duration_ms),
            esc(&short_time(&c.started_at)),
            s = c.status.name(),
        );
        for f in &c.files {
            let name = f.strip_prefix(&format!("{}/", c.dir)).unwrap_or(f);
            if name.starts_with("logs/") {
                continue;
            }
            let _ = write!(b, "<a href=\"{}\">{}</a> ", href(f), esc(name));
        }
        b += "</td></tr>";
    }
    b += "</tbody></table></section>";

    let _ = write!(
        b,
        "<section class=\"card\"><h2>Run</h2><table><tr><th>matrix file</th><td><code>{}</code></td></tr><tr><th>command</th><td><code>{}</code></td></tr>\
         <tr><th>started</th><td>{}</td></tr><tr><th>wall time</th><td>{} ms ({} cell(s) at once; cells took {} ms in total)</td></tr>\
         <tr><th>harness</th><td>{} {}</td></tr>{}</table><p class=\"muted\">Aggregate files: <a href=\"report.json\">report.json</a> · <a href=\"junit.xml\">junit.xml</a> · <a href=\"summary.md\">summary.md</a></p></section>",
        esc(&r.matrix_file),
        esc(&r.command.iter().map(|a| crate::plumbing::shell::shell_quote(a)).collect::<Vec<_>>().join(" ")),
        esc(&r.started_at),
        r.duration_ms,
        r.jobs,
        r.cell_time_ms,
        esc(&r.harness_version),
        esc(r.git_revision.as_deref().unwrap_or("")),
        r.rerun_of.as_ref().map(|o| format!("<tr><th>rerun of</th><td><code>{}</code> (failed cells only)</td></tr>", esc(o))).unwrap_or_default(),
    );
    page(
        "CloudNativePG extension compatibility matrix",
        &format!("{} cells · {} · generated {} UTC", r.cells.len(), r.matrix_file, short_time(&r.started_at)),
        &b,
    )
}

fn grid_cell(b: &mut String, c: &CellResult) {
    let s = c.status.name();
    let _ = write!(b, "<td class=\"cell s-{s}\"><div class=\"st\">{s}</div>");
    let meta = if c.scenarios.is_empty() {
        fmt_ms(c.duration_ms)
    } else {
        format!("{}/{} scenarios passed · {}", c.totals.passed, c.scenarios.len(), fmt_ms(c.duration_ms))
    };
    let _ = write!(b, "<div class=\"meta\">{}</div>", esc(&meta));
    match c.status {
        CellStatus::Passed => {}
        CellStatus::Failed => {
            let failed: BTreeSet<&str> =
                c.scenarios.iter().filter(|x| x.status == "failed").map(|x| x.id.as_str()).collect();
            let _ = write!(
                b,
                "<div class=\"why\">failed: {} <a href=\"#{}\">details</a></div>",
                esc(&failed.into_iter().collect::<Vec<_>>().join(", ")),
                esc(&c.spec.id)
            );
        }
        CellStatus::Unsupported | CellStatus::Error | CellStatus::Timeout => {
            let reason = c.reason.as_deref().unwrap_or("");
            let short: String = reason.chars().take(140).collect();
            let more = if reason.chars().count() > 140 { "…" } else { "" };
            let _ = write!(b, "<div class=\"why\">{}{more}</div>", esc(&short));
        }
    }
    let has = |name: &str| c.files.iter().any(|f| f == &format!("{}/{name}", c.dir));
    for (name, label) in
        [("summary.md", "summary"), ("output.log", "log"), ("index.html", "report"), ("junit.xml", "junit")]
    {
        if has(name) {
            let _ = write!(b, "<a href=\"{}/{name}\">{label}</a>", href(&c.dir));
        }
    }
    if c.files.iter().any(|f| f.contains("/logs/")) {
        let _ = write!(b, "<a href=\"#{}\">postgres.log</a>", esc(&c.spec.id));
    }
    b.push_str("</td>");
}

/// One run: verdict, scenarios with their steps, failures with expected vs actual, the
/// environment and how to reproduce it. `extra` is appended (e.g. certification findings).
pub fn run_page_with(v: &RunView, title: &str, verdict: Option<(&str, &str)>, extra: &str) -> String {
    let mut b = String::with_capacity(4096 + v.scenarios.len() * 600);
    let (passed, failed, skipped) = (v.count("passed"), v.count("failed"), v.count("skipped"));
    b += "<div class=\"badges\">";
    if let Some((class, text)) = verdict {
        b += &badge(class, text);
    }
    b += &badge("passed", &format!("{passed} passed"));
    b += &badge("failed", &format!("{failed} failed"));
    if skipped > 0 {
        b += &badge("skipped", &format!("{skipped} skipped"));
    }
    b += "</div>";
    b += extra;
    let failures: Vec<_> = v.scenarios.iter().filter_map(|s| s.failure().map(|f| (s, f))).collect();
    if !failures.is_empty() {
        b += "<section class=\"card\"><h2>Failures</h2>";
        for (s, f) in failures {
            let _ = write!(b, "<h3><span class=\"dot d-failed\"></span>{}</h3>{}", esc(&s.id), failure_block(&f));
        }
        b += "</section>";
    }
    b += "<section class=\"card\"><h2>Scenarios</h2><table><thead><tr><th>scenario</th><th>status</th><th>time</th><th>steps</th></tr></thead><tbody>";
    for s in &v.scenarios {
        let _ = write!(
            b,
            "<tr><td><code>{}</code><div class=\"muted\">{}</div></td><td><span class=\"dot d-{st}\"></span>{st}</td><td>{} ms</td><td>",
            esc(&s.id),
            esc(s.description.as_deref().unwrap_or("")),
            s.duration_ms,
            st = esc(&s.status)
        );
        for step in &s.steps {
            let _ = write!(
                b,
                "<div><span class=\"dot d-{st}\"></span>{}. {} <span class=\"muted\">{} ms</span></div>",
                step.index,
                esc(&step.title),
                step.duration_ms,
                st = esc(&step.status)
            );
        }
        b += "</td></tr>";
    }
    b += "</tbody></table></section>";
    let _ = write!(
        b,
        "<section class=\"card\"><h2>Environment</h2><table><tr><th>backend</th><td>{}</td></tr><tr><th>PostgreSQL</th><td>{} from {}</td></tr>\
         <tr><th>CNPG modelled</th><td>{}</td></tr><tr><th>command</th><td><code>{}</code></td></tr>",
        esc(&v.environment.backend),
        esc(&v.environment.postgresql),
        esc(&v.environment.postgresql_source),
        esc(&v.environment.cnpg_modelled),
        esc(&v.command.iter().map(|a| crate::plumbing::shell::shell_quote(a)).collect::<Vec<_>>().join(" ")),
    );
    for i in &v.images {
        let _ = write!(
            b,
            "<tr><th>image</th><td><code>{}</code> @ <code>{}</code></td></tr>",
            esc(&i.reference),
            esc(&i.manifest_digest)
        );
    }
    b += "</table><p class=\"muted\">Files: <a href=\"report.json\">report.json</a> · <a href=\"junit.xml\">junit.xml</a> · <a href=\"summary.md\">summary.md</a></p></section>";
    page(
        title,
        &format!(
            "{} backend · {} · started {} UTC",
            v.environment.backend,
            v.environment.postgresql,
            short_time(&v.started_at)
        ),
        &b,
    )
}

pub fn run_page(v: &RunView, title: &str) -> String {
    run_page_with(v, title, None, "")
}
