//! ARCHITECTURE.md says imports point down and "never in a circle (between files or
//! rooms)". This test holds every crate under `harness/` to it: it reads the `use` paths and
//! the `crate::…` / `super::…` paths of every source file, resolves each to the file that
//! defines the item (through `pub use` re-exports, globs included: a call through a
//! re-export counts as a call to the file that defines it), and fails on any circle of files.
//! A `pub use` is a passage, not a call; a `mod` declaration is not an import; unit-test
//! modules (`#[cfg(test)] mod tests`) are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

struct Crate {
    name: String,
    files: BTreeMap<Module, String>,
}

#[derive(Debug, Clone)]
struct Use {
    public: bool,
    path: String,
}

fn strip(text: &str) -> String {
    let body = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    body.lines()
        .map(|l| {
            let t = l.trim_start();
            if t.starts_with("//") {
                ""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn load(dir: &Path, name: &str) -> Crate {
    let src = dir.join("src");
    let mut files = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "bin") {
                    stack.push(p);
                }
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = p.strip_prefix(&src).unwrap().with_extension("");
            let mut m: Module = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
            if m.last().is_some_and(|l| l == "mod") {
                m.pop();
            }
            if m == ["main"] {
                continue;
            }
            if m == ["lib"] {
                m.clear();
            }
            files.insert(m, strip(&std::fs::read_to_string(&p).unwrap()));
        }
    }
    Crate { name: name.to_string(), files }
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Every `use …;` of a file, braces expanded.
fn uses(text: &str) -> Vec<Use> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("use ") {
        let before = &rest[..i];
        let line_start = before.rfind('\n').map(|n| n + 1).unwrap_or(0);
        let prefix = before[line_start..].trim();
        let at_statement = prefix.is_empty() || prefix == "pub" || prefix.starts_with("pub(");
        let preceded_ok = before.chars().last().is_none_or(|c| !is_ident(c));
        let after = &rest[i + 4..];
        if at_statement && preceded_ok {
            if let Some(end) = after.find(';') {
                let body = after[..end].replace(['\n', '\t'], " ");
                for path in expand("", &body) {
                    out.push(Use { public: !prefix.is_empty(), path });
                }
                rest = &after[end..];
                continue;
            }
        }
        rest = after;
    }
    out
}

fn expand(prefix: &str, body: &str) -> Vec<String> {
    let body = body.trim();
    if let (Some(open), true) = (body.find('{'), body.ends_with('}')) {
        let pre: String = body[..open].chars().filter(|c| !c.is_whitespace()).collect();
        let inner = &body[open + 1..body.len() - 1];
        let (mut depth, mut cur, mut parts) = (0, String::new(), Vec::new());
        for c in inner.chars() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ => {}
            }
            if c == ',' && depth == 0 {
                parts.push(std::mem::take(&mut cur));
            } else {
                cur.push(c);
            }
        }
        parts.push(cur);
        return parts
            .iter()
            .filter(|p| !p.trim().is_empty())
            .flat_map(|p| expand(&format!("{prefix}{pre}"), p))
            .collect();
    }
    // `path as name`: the path is what is imported.
    let path = body.split(" as ").next().unwrap_or(body);
    let path: String = path.chars().filter(|c| !c.is_whitespace()).collect();
    vec![format!("{prefix}{path}")]
}

/// `crate::…` and `super::…` paths written inline.
fn inline_paths(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(i) = text[from..].find(start) {
            let at = from + i;
            from = at + start.len();
            if text[..at].chars().last().is_some_and(|c| is_ident(c) || c == ':') {
                continue;
            }
            let path: String = text[at..].chars().take_while(|c| is_ident(*c) || *c == ':').collect();
            out.insert(path.trim_end_matches(':').to_string());
        }
    }
    out
}

impl Crate {
    fn defines(&self, m: &Module, name: &str) -> bool {
        let text = &self.files[m];
        ["fn", "struct", "enum", "const", "static", "trait", "type", "union", "macro_rules!"].iter().any(|kw| {
            let needle = format!("{kw} {name}");
            text.match_indices(&needle).any(|(i, _)| {
                let before_ok = text[..i].chars().last().is_none_or(|c| !is_ident(c));
                let after_ok = text[i + needle.len()..].chars().next().is_none_or(|c| !is_ident(c));
                before_ok && after_ok
            })
        })
    }

    fn is_child(&self, m: &Module, name: &str) -> bool {
        let mut c = m.clone();
        c.push(name.to_string());
        self.files.contains_key(&c)
    }

    /// The absolute module path `path` names, seen from `m`.
    fn absolute(&self, m: &Module, path: &str, depth: usize) -> Option<Vec<String>> {
        if depth > 10 {
            return None;
        }
        let seg: Vec<String> = path.split("::").filter(|s| !s.is_empty()).map(str::to_string).collect();
        let first = seg.first()?;
        match first.as_str() {
            "crate" => Some(seg[1..].to_vec()),
            "super" | "self" => {
                let mut cur = m.clone();
                let mut i = 0;
                while i < seg.len() && (seg[i] == "super" || seg[i] == "self") {
                    if seg[i] == "super" {
                        cur.pop();
                    }
                    i += 1;
                }
                cur.extend(seg[i..].iter().cloned());
                Some(cur)
            }
            name if self.is_child(m, name) => {
                let mut cur = m.clone();
                cur.extend(seg.iter().cloned());
                Some(cur)
            }
            name => {
                // A name a plain `use` of `m` brought in.
                for u in uses(&self.files[m]) {
                    if u.path.ends_with("*") {
                        continue;
                    }
                    if u.path.rsplit("::").next() == Some(name) && u.path != path {
                        let mut a = self.absolute(m, &u.path, depth + 1)?;
                        a.extend(seg[1..].iter().cloned());
                        return Some(a);
                    }
                }
                None
            }
        }
    }

    /// The file that defines the item at `path` (following `pub use`).
    fn find(&self, path: &[String], depth: usize) -> Option<Module> {
        if depth > 20 {
            return None;
        }
        let mut n = path.len();
        while !self.files.contains_key(&path[..n]) {
            if n == 0 {
                return None;
            }
            n -= 1;
        }
        let module: Module = path[..n].to_vec();
        let rest = &path[n..];
        let Some(name) = rest.first().filter(|r| *r != "*") else { return Some(module) };
        if self.defines(&module, name) {
            return Some(module);
        }
        for u in uses(&self.files[&module]).into_iter().filter(|u| u.public) {
            let last = u.path.rsplit("::").next().unwrap_or("");
            if last == name {
                if let Some(mut a) = self.absolute(&module, &u.path, 0) {
                    a.extend(rest[1..].iter().cloned());
                    return self.find(&a, depth + 1);
                }
            }
            if last == "*" {
                if let Some(mut a) = self.absolute(&module, u.path.trim_end_matches("::*"), 0) {
                    a.extend(rest.iter().cloned());
                    if let Some(f) = self.find(&a, depth + 1) {
                        if self.defines(&f, name) {
                            return Some(f);
                        }
                    }
                }
            }
        }
        Some(module)
    }

    fn edges(&self) -> BTreeMap<Module, BTreeSet<Module>> {
        let mut edges = BTreeMap::new();
        for (m, text) in &self.files {
            let mut refs: BTreeSet<String> = inline_paths(text);
            for u in uses(text).into_iter().filter(|u| !u.public) {
                let first = u.path.split("::").next().unwrap_or("");
                if matches!(first, "crate" | "super" | "self") || self.is_child(m, first) {
                    refs.insert(u.path);
                }
            }
            let mut to = BTreeSet::new();
            for r in refs {
                let glob = r.ends_with("::*");
                let Some(abs) = self.absolute(m, r.trim_end_matches("::*"), 0) else { continue };
                if glob {
                    // Everything the module holds and hands on.
                    if let Some(target) = self.find(&abs, 0) {
                        for u in uses(&self.files[&target]).into_iter().filter(|u| u.public) {
                            if let Some(b) = self.absolute(&target, u.path.trim_end_matches("::*"), 0) {
                                if let Some(f) = self.find(&b, 0) {
                                    to.insert(f);
                                }
                            }
                        }
                        to.insert(target);
                    }
                } else if let Some(f) = self.find(&abs, 0) {
                    to.insert(f);
                }
            }
            to.remove(m);
            edges.insert(m.clone(), to);
        }
        edges
    }

    /// Every circle (strongly connected set of more than one file), with its arrows.
    fn circles(&self) -> Vec<Vec<(Module, Module)>> {
        circles_of(self.edges())
    }

    /// The same between rooms: a top-level folder of `src/` is one room, a top-level file
    /// another.
    fn room_circles(&self) -> Vec<Vec<(Module, Module)>> {
        let room = |m: &Module| -> Module { m.first().cloned().into_iter().collect() };
        let mut rooms: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
        for (from, tos) in self.edges() {
            let entry = rooms.entry(room(&from)).or_default();
            entry.extend(tos.iter().map(room).filter(|r| *r != room(&from)));
        }
        circles_of(rooms)
    }
}

fn circles_of(edges: BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<(Module, Module)>> {
    {
        let nodes: Vec<&Module> = edges.keys().collect();
        let index: BTreeMap<&Module, usize> = nodes.iter().enumerate().map(|(i, m)| (*m, i)).collect();
        let adj: Vec<Vec<usize>> =
            nodes.iter().map(|m| edges[*m].iter().filter_map(|t| index.get(t).copied()).collect()).collect();
        let comps = tarjan(&adj);
        comps
            .into_iter()
            .filter(|c| c.len() > 1)
            .map(|c| {
                let set: BTreeSet<usize> = c.iter().copied().collect();
                let mut arrows = Vec::new();
                for &a in &c {
                    for &b in &adj[a] {
                        if set.contains(&b) {
                            arrows.push((nodes[a].clone(), nodes[b].clone()));
                        }
                    }
                }
                arrows
            })
            .collect()
    }
}

fn tarjan(adj: &[Vec<usize>]) -> Vec<Vec<usize>> {
    struct S<'a> {
        adj: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(s: &mut S, v: usize) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on[v] = true;
        for i in 0..s.adj[v].len() {
            let w = s.adj[v][i];
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on[w] => s.low[v] = s.low[v].min(iw),
                _ => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on[w] = false;
                comp.push(w);
                if w == v {
                    break;
                }
            }
            s.out.push(comp);
        }
    }
    let n = adj.len();
    let mut s = S {
        adj,
        index: vec![None; n],
        low: vec![0; n],
        on: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(&mut s, v);
        }
    }
    s.out
}

fn show(m: &Module) -> String {
    if m.is_empty() {
        "lib.rs".into()
    } else {
        m.join("/")
    }
}

fn crates() -> Vec<(PathBuf, String)> {
    let harness = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out: Vec<(PathBuf, String)> = std::fs::read_dir(&harness)
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("src").is_dir())
        .map(|e| (e.path(), e.file_name().to_string_lossy().into_owned()))
        .collect();
    out.sort();
    out
}

#[test]
fn no_import_circle_between_the_files_of_any_crate() {
    let all = crates();
    assert!(all.len() >= 6, "found only {:?}", all.iter().map(|c| &c.1).collect::<Vec<_>>());
    let mut problems = Vec::new();
    for (dir, name) in all {
        let c = load(&dir, &name);
        assert!(!c.files.is_empty(), "{name}: no source files read");
        for circle in c.circles() {
            let arrows: Vec<String> = circle.iter().map(|(a, b)| format!("{} -> {}", show(a), show(b))).collect();
            problems.push(format!("{}: {}", c.name, arrows.join(", ")));
        }
    }
    assert!(problems.is_empty(), "import circles (ARCHITECTURE.md: never in a circle):\n{}", problems.join("\n"));
}

#[test]
fn no_import_circle_between_the_rooms_of_any_crate() {
    let mut problems = Vec::new();
    for (dir, name) in crates() {
        let c = load(&dir, &name);
        for circle in c.room_circles() {
            let arrows: Vec<String> = circle.iter().map(|(a, b)| format!("{} -> {}", show(a), show(b))).collect();
            problems.push(format!("{}: {}", c.name, arrows.join(", ")));
        }
    }
    assert!(
        problems.is_empty(),
        "circles between rooms (ARCHITECTURE.md: never in a circle):\n{}",
        problems.join("\n")
    );
}

/// The checker itself finds a circle, also one hidden behind a `pub use` glob.
#[test]
fn the_checker_sees_a_circle_through_a_glob_re_export() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("room")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod room;\npub mod low;\n").unwrap();
    std::fs::write(src.join("room/mod.rs"), "mod run;\npub use run::*;\n").unwrap();
    std::fs::write(src.join("room/run.rs"), "pub fn go() { crate::low::helper(); }\n").unwrap();
    std::fs::write(src.join("low.rs"), "pub fn helper() {}\npub fn back() { crate::room::go(); }\n").unwrap();
    let c = load(dir.path(), "synthetic");
    let circles = c.circles();
    assert_eq!(circles.len(), 1, "{circles:?}");
    let arrows: BTreeSet<(String, String)> = circles[0].iter().map(|(a, b)| (show(a), show(b))).collect();
    assert!(arrows.contains(&("low".into(), "room/run".into())), "the glob re-export is followed: {arrows:?}");
    assert!(arrows.contains(&("room/run".into(), "low".into())), "{arrows:?}");
    // Without the call back, no circle.
    std::fs::write(src.join("low.rs"), "pub fn helper() {}\n").unwrap();
    assert!(load(dir.path(), "synthetic").circles().is_empty());
}
