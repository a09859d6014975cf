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
.gridwrap{overflow:auto;max-width:100%}
table.grid{border-spacing:2px}
table.grid th.corner{position:sticky;left:0;background:var(--card);z-index:2;text-align:right}
table.grid th.ax{text-align:center;font-weight:600;color:var(--ink);border-bottom:2px solid var(--line);padding:3px 6px}
table.grid th.ax .axn{display:block;font-weight:400;color:var(--muted);font-size:10px;text-transform:uppercase;letter-spacing:.04em}
table.grid th.row{position:sticky;left:0;background:var(--card);z-index:1;text-align:right;padding:2px 8px;font-weight:400}
table.grid th.set{text-align:left;color:var(--muted);padding-top:10px}
td.g{border:1px solid var(--line);border-radius:4px;width:92px;min-width:92px;max-width:92px;height:34px;padding:2px 4px;text-align:center;border-left-width:4px;font-size:11px;line-height:1.2;overflow:hidden}
td.g a{color:inherit;display:block;text-decoration:none}
td.g .st{display:block;font-weight:700;text-transform:uppercase;font-size:10px;letter-spacing:.03em}
td.g .cat{display:block;font-size:10px;color:var(--ink);white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.s-flaky{background:var(--err-bg);border-left-color:var(--err)!important}.s-flaky .st{color:var(--err)}
.s-skipped{background:#f6f8fa;border-left-color:var(--line)!important}.s-skipped .st{color:var(--muted)}
.b-flaky{background:var(--err-bg);color:var(--err);border-color:#f5e0a0}
.d-flaky{background:var(--err)}
.cat-badge{display:inline-block;background:#fff;border:1px solid var(--fail);color:var(--fail);border-radius:4px;padding:0 6px;font-size:11px;font-weight:600;margin-left:6px}
details.ev{margin:4px 0}details.ev summary{cursor:pointer;color:var(--muted);font-size:12px}
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
    let mut out = String::new();
    if let Some(c) = f.category {
        let _ = write!(out, "<div>category <span class=\"cat-badge\">{}</span></div>", esc(c.name()));
    }
    let _ = write!(out, "<pre>{}", esc(&f.locator));
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
    for e in &f.evidence {
        let on = e.instance.as_deref().map(|i| format!(" · {i}")).unwrap_or_default();
        let _ = write!(
            out,
            "<details class=\"ev\" open><summary>evidence: {}{}</summary><pre>{}</pre></details>",
            esc(&e.source),
            esc(&on),
            esc(&e.text)
        );
    }
    out
}

/// The axes that tell cells apart, as `(axis, value)`: backend (with Kubernetes), PostgreSQL,
/// CloudNativePG release, images. Scenario sets are rows.
fn axes_of(c: &CellResult) -> Vec<(&'static str, String)> {
    let backend = match &c.spec.kubernetes {
        Some(k) => format!("{} · {}", c.spec.backend, k.name),
        None => c.spec.backend.clone(),
    };
    let mut v = vec![("backend", backend), ("PostgreSQL", c.spec.postgres.name.clone()), ("CNPG", c.spec.cnpg.clone())];
    if let Some(i) = &c.spec.image {
        v.push(("images", i.name.clone()));
    }
    v
}

/// A grid row: a scenario of a set (or the set itself for a cell that ran none).
#[derive(Clone, PartialEq, Eq)]
struct Row {
    set: String,
    scenario: Option<String>,
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
    if t.flaky > 0 {
        b += &badge("flaky", &format!("{} flaky", t.flaky));
    }
    b += "</div>";
    if let Some(d) = &r.description {
        let _ = write!(b, "<p class=\"muted\">{}</p>", esc(d));
    }

    grid(&mut b, r);

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

/// Scenarios down, the other axes across: one header row per axis that varies, equal
/// neighbours merged (grouped headers), one compact cell per scenario and matrix cell: its
/// status, the category of a failure, a link to its evidence in the cell's own page.
fn grid(b: &mut String, r: &MatrixReport) {
    let cols: Vec<&CellResult> = {
        let mut c: Vec<&CellResult> = r.cells.iter().collect();
        // Group by the axes' values in the order the matrix lists them (stable).
        let order = |x: &CellResult| -> Vec<usize> {
            let ax = axes_of(x);
            ax.iter()
                .enumerate()
                .map(|(i, (_, v))| r.cells.iter().position(|y| axes_of(y)[i].1 == *v).unwrap_or(0))
                .collect()
        };
        c.sort_by_key(|x| order(x));
        // One column per combination of axes; cells of other scenario sets share it.
        c.dedup_by(|a, b| axes_of(a) == axes_of(b));
        c
    };
    let mut rows: Vec<Row> = Vec::new();
    for c in &r.cells {
        if c.scenarios.is_empty() {
            let row = Row { set: c.spec.scenarios.name.clone(), scenario: None };
            let known = rows.iter().any(|x| x.set == row.set);
            if !known {
                rows.push(row);
            }
        }
        for s in &c.scenarios {
            let row = Row { set: c.spec.scenarios.name.clone(), scenario: Some(s.id.clone()) };
            if !rows.contains(&row) {
                // A set first seen without scenarios: its placeholder row gives way.
                rows.retain(|x| !(x.set == row.set && x.scenario.is_none()));
                rows.push(row);
            }
        }
    }
    let n_axes = cols.first().map(|c| axes_of(c).len()).unwrap_or(0);
    let varying: Vec<usize> =
        (0..n_axes).filter(|i| cols.iter().any(|c| axes_of(c)[*i].1 != axes_of(cols[0])[*i].1)).collect();
    let shown: Vec<usize> = if varying.is_empty() { vec![0] } else { varying };
    let sets: BTreeSet<&str> = rows.iter().map(|x| x.set.as_str()).collect();
    let _ = write!(
        b,
        "<section class=\"card\"><h2>Compatibility matrix</h2><p class=\"muted\">{} scenario row(s) × {} column(s){}</p><div class=\"gridwrap\"><table class=\"grid\"><thead>",
        rows.len(),
        cols.len(),
        if sets.len() > 1 { format!(" · {} scenario sets", sets.len()) } else { String::new() }
    );
    for (depth, axis) in shown.iter().enumerate() {
        let name = axes_of(cols[0])[*axis].0;
        let _ = write!(b, "<tr><th class=\"corner\">{}</th>", if depth + 1 == shown.len() { "scenario" } else { "" });
        let mut i = 0;
        while i < cols.len() {
            // Merge neighbours equal on this axis and every axis above it.
            let key =
                |c: &CellResult| -> Vec<String> { shown[..=depth].iter().map(|a| axes_of(c)[*a].1.clone()).collect() };
            let mut j = i + 1;
            while j < cols.len() && key(cols[j]) == key(cols[i]) {
                j += 1;
            }
            let _ = write!(
                b,
                "<th class=\"ax\" colspan=\"{}\"><span class=\"axn\">{}</span>{}</th>",
                j - i,
                esc(name),
                esc(&axes_of(cols[i])[*axis].1)
            );
            i = j;
        }
        b.push_str("</tr>");
    }
    b.push_str("</thead><tbody>");
    let mut last_set = None;
    for row in &rows {
        if sets.len() > 1 && last_set != Some(row.set.as_str()) {
            let _ = write!(b, "<tr><th class=\"set\" colspan=\"{}\">set {}</th></tr>", cols.len() + 1, esc(&row.set));
            last_set = Some(row.set.as_str());
        }
        let label = row.scenario.as_deref().unwrap_or("(no scenario ran)");
        let _ = write!(b, "<tr><th class=\"row\"><code>{}</code></th>", esc(label));
        for col in &cols {
            let cell = r.cells.iter().find(|c| axes_of(c) == axes_of(col) && c.spec.scenarios.name == row.set);
            match cell {
                None => b.push_str("<td class=\"g none\">—</td>"),
                Some(c) => grid_cell(b, c, row.scenario.as_deref()),
            }
        }
        b.push_str("</tr>");
    }
    b.push_str("</tbody></table></div><div class=\"legend\">");
    for s in ["passed", "failed", "flaky", "unsupported", "error", "timeout", "skipped"] {
        let _ = write!(b, "<span><span class=\"dot d-{s}\"></span>{s}</span>");
    }
    b.push_str("</div></section>");
}

fn grid_cell(b: &mut String, c: &CellResult, scenario: Option<&str>) {
    let dir = href(&c.dir);
    let page = if c.files.iter().any(|f| f == &format!("{}/index.html", c.dir)) { "index.html" } else { "summary.md" };
    let found = scenario.and_then(|id| c.scenarios.iter().find(|s| s.id == id));
    let (status, category, link) = match found {
        Some(s) => {
            let category = s.category.or(s.failure.as_ref().and_then(|f| f.category));
            (s.status.clone(), category.map(|x| x.to_string()), format!("{dir}/{page}#{}", href(&s.id)))
        }
        // The cell ran no scenario (unsupported, error, timeout) or not this one.
        None => {
            let st = if c.scenarios.is_empty() { c.status.name().to_string() } else { "skipped".into() };
            (st, None, format!("{dir}/{}", if c.scenarios.is_empty() { "output.log" } else { page }))
        }
    };
    let title = format!(
        "{} · {}{}",
        c.spec.id,
        status,
        if c.scenarios.is_empty() {
            c.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
        } else {
            String::new()
        }
    );
    let _ = write!(
        b,
        "<td class=\"g s-{st}\" title=\"{t}\"><a href=\"{link}\"><span class=\"st\">{st}</span>{cat}</a></td>",
        st = esc(&status),
        t = esc(&title),
        cat = category.map(|x| format!("<span class=\"cat\">{}</span>", esc(&x))).unwrap_or_default(),
    );
}

/// One run: verdict, scenarios with their steps, failures with expected vs actual, the
/// environment and how to reproduce it. `extra` is appended (e.g. certification findings).
pub fn run_page_with(v: &RunView, title: &str, verdict: Option<(&str, &str)>, extra: &str) -> String {
    let mut b = String::with_capacity(4096 + v.scenarios.len() * 600);
    let (passed, failed, skipped, flaky) = (v.count("passed"), v.count("failed"), v.count("skipped"), v.count("flaky"));
    b += "<div class=\"badges\">";
    if let Some((class, text)) = verdict {
        b += &badge(class, text);
    }
    b += &badge("passed", &format!("{passed} passed"));
    b += &badge("failed", &format!("{failed} failed"));
    if skipped > 0 {
        b += &badge("skipped", &format!("{skipped} skipped"));
    }
    if flaky > 0 {
        b += &badge("flaky", &format!("{flaky} flaky"));
    }
    b += "</div>";
    b += extra;
    let failures: Vec<_> = v.scenarios.iter().filter_map(|s| s.failure().map(|f| (s, f))).collect();
    if !failures.is_empty() {
        b += "<section class=\"card\"><h2>Failures</h2>";
        for (s, f) in failures {
            let _ = write!(
                b,
                "<h3 id=\"{id}\"><span class=\"dot d-{st}\"></span>{id}</h3>{}",
                failure_block(&f),
                id = esc(&s.id),
                st = esc(&s.status)
            );
        }
        b += "</section>";
    }
    b += "<section class=\"card\"><h2>Scenarios</h2><table><thead><tr><th>scenario</th><th>status</th><th>time</th><th>steps</th></tr></thead><tbody>";
    for s in &v.scenarios {
        let _ = write!(
            b,
            "<tr><td><code>{}</code><div class=\"muted\">{}</div></td><td><span class=\"dot d-{st}\"></span>{st}{}</td><td>{} ms</td><td>",
            esc(&s.id),
            esc(s.description.as_deref().unwrap_or("")),
            s.category.map(|c| format!(" <span class=\"cat-badge\">{}</span>", esc(c.name()))).unwrap_or_default(),
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
