//! PostgreSQL extension control files (`<ext>.control`): the GUC-file
//! syntax `name = value` / `name = 'quoted'` / `name value`, `#` comments.

use std::collections::BTreeMap;
use std::fmt;

/// Parameters PostgreSQL 18 accepts in a control file.
pub const KNOWN_PARAMETERS: &[&str] = &[
    "directory",
    "default_version",
    "module_pathname",
    "comment",
    "encoding",
    "requires",
    "no_relocate",
    "superuser",
    "trusted",
    "relocatable",
    "schema",
];

const BOOL_PARAMETERS: &[&str] = &["superuser", "trusted", "relocatable"];

/// A parsed control file: parameter → value (last one wins).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControlFile {
    pub params: BTreeMap<String, String>,
}

/// A syntax or semantic error, with its 1-based line (0: whole file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "line {}: {}", self.line, self.message)
        } else {
            f.write_str(&self.message)
        }
    }
}

impl ControlFile {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }
    pub fn default_version(&self) -> Option<&str> {
        self.get("default_version")
    }
    pub fn module_pathname(&self) -> Option<&str> {
        self.get("module_pathname")
    }
    /// The module `module_pathname` names, as a file name without `.so` (`$libdir/vector` →
    /// `vector`).
    pub fn module(&self) -> Option<&str> {
        self.module_pathname().map(module_basename)
    }
    pub fn directory(&self) -> Option<&str> {
        self.get("directory")
    }
    /// `requires`, split on commas.
    pub fn requires(&self) -> Vec<String> {
        self.get("requires")
            .map(|r| r.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default()
    }
}

fn parse_bool(v: &str) -> bool {
    matches!(
        v.to_ascii_lowercase().as_str(),
        "true" | "false" | "on" | "off" | "yes" | "no" | "1" | "0" | "t" | "f" | "y" | "n"
    )
}

/// The module a library path names (`module_pathname`, `probin`, a preload entry): its file
/// name without a `.so` suffix (`$libdir/vector` → `vector`, `/x/lib/greet.so` → `greet`).
pub fn module_basename(path: &str) -> &str {
    let last = path.rsplit('/').next().unwrap_or(path);
    last.strip_suffix(".so").unwrap_or(last)
}

/// Parse control-file text; unknown parameters and non-boolean values of
/// boolean parameters are errors, as in PostgreSQL.
pub fn parse_control(text: &str) -> Result<ControlFile, ControlError> {
    let mut cf = ControlFile::default();
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        let err = |m: String| ControlError { line: lineno, message: m };
        let mut rest = line.trim_start();
        if rest.is_empty() || rest.starts_with('#') {
            continue;
        }
        let name_len = rest
            .char_indices()
            .find(|&(j, c)| !(c.is_ascii_alphanumeric() || c == '_' || (j > 0 && c == '.')))
            .map_or(rest.len(), |(j, _)| j);
        if name_len == 0 || rest.as_bytes()[0].is_ascii_digit() {
            return Err(err(format!("syntax error: expected a parameter name at {rest:?}")));
        }
        let name = rest[..name_len].to_string();
        rest = rest[name_len..].trim_start();
        if let Some(r) = rest.strip_prefix('=') {
            rest = r.trim_start();
        }
        let (value, after) = if let Some(body) = rest.strip_prefix('\'') {
            parse_quoted(body).ok_or_else(|| err(format!("unterminated quoted string for {name}")))?
        } else {
            let end = rest.find(|c: char| c.is_whitespace() || c == '#').unwrap_or(rest.len());
            if end == 0 {
                return Err(err(format!("syntax error: missing value for {name}")));
            }
            (rest[..end].to_string(), &rest[end..])
        };
        let after = after.trim_start();
        if !(after.is_empty() || after.starts_with('#')) {
            return Err(err(format!("syntax error: unexpected {after:?} after the value of {name}")));
        }
        if !KNOWN_PARAMETERS.contains(&name.as_str()) {
            return Err(err(format!("unrecognized parameter {name:?}")));
        }
        if BOOL_PARAMETERS.contains(&name.as_str()) && !parse_bool(&value) {
            return Err(err(format!("parameter {name:?} requires a Boolean value, got {value:?}")));
        }
        cf.params.insert(name, value);
    }
    Ok(cf)
}

/// Parse the body of a quoted string (after the opening quote): `''` and
/// backslash escapes. Returns the value and the text after the closing quote.
fn parse_quoted(body: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\'' => {
                if let Some(&(_, '\'')) = chars.peek() {
                    chars.next();
                    out.push('\'');
                } else {
                    return Some((out, &body[i + 1..]));
                }
            }
            '\\' => {
                let (_, e) = chars.next()?;
                out.push(match e {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    'b' => '\u{8}',
                    'f' => '\u{c}',
                    other => other,
                });
            }
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names() {
        assert_eq!(module_basename("$libdir/vector"), "vector");
        assert_eq!(module_basename("/x/lib/greet.so"), "greet");
        assert_eq!(module_basename("pathprobe"), "pathprobe");
        assert_eq!(module_basename("lib/x.so.so"), "x.so");
        let c = parse_control("module_pathname = '$libdir/vector'\n").unwrap();
        assert_eq!(c.module(), Some("vector"));
    }

    #[test]
    fn parses_pgvector_control() {
        let t = "# vector extension\ncomment = 'vector data type and ivfflat and hnsw access methods'\ndefault_version = '0.8.1'\nmodule_pathname = '$libdir/vector'\nrelocatable = true\n";
        let c = parse_control(t).unwrap();
        assert_eq!(c.default_version(), Some("0.8.1"));
        assert_eq!(c.module_pathname(), Some("$libdir/vector"));
        assert_eq!(c.get("relocatable"), Some("true"));
    }

    #[test]
    fn unquoted_escapes_and_errors() {
        let c = parse_control("default_version 1.0 # x\ncomment = 'it''s \\'ok\\''\n").unwrap();
        assert_eq!(c.default_version(), Some("1.0"));
        assert_eq!(c.get("comment"), Some("it's 'ok'"));
        assert_eq!(parse_control("comment = 'open\n").unwrap_err().line, 1);
        assert!(parse_control("bogus = 1\n").is_err());
        assert!(parse_control("trusted = maybe\n").is_err());
        assert!(parse_control("default_version = '1' junk\n").is_err());
        assert_eq!(parse_control("requires = 'a, b'").unwrap().requires(), vec!["a".to_string(), "b".to_string()]);
    }
}
