//! The `env` entries of an extension (CloudNativePG 1.29+): which names the operator keeps
//! for itself, and how `${image_root}` placeholders expand (`$${…}` escapes one `$`).

/// Placeholders the operator expands in `env[].value`.
pub const KNOWN_PLACEHOLDERS: &[&str] = &["image_root"];

/// Variables whose value comes from a dedicated field: an `env` entry may not set them.
pub const DEDICATED: &[(&str, &str)] = &[("PATH", "bin_path"), ("LD_LIBRARY_PATH", "ld_library_path")];

/// Names the operator reserves for itself (compared upper-cased): `CNPG_*`, `PG*`,
/// `POD_NAME`, `NAMESPACE`, `CLUSTER_NAME`.
pub fn is_reserved(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    n.starts_with("CNPG_") || n.starts_with("PG") || matches!(n.as_str(), "POD_NAME" | "NAMESPACE" | "CLUSTER_NAME")
}

/// One `$…${name}` occurrence: the run of dollars, the name in braces, and the byte span.
struct Placeholder<'a> {
    start: usize,
    end: usize,
    dollars: usize,
    name: &'a str,
}

/// Every run of one or more `$` followed by `{name}` (name non-empty, without `}`).
fn placeholders(value: &str) -> Vec<Placeholder<'_>> {
    let bytes = value.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i] == b'$' {
            i += 1;
        }
        let dollars = i - start;
        if i < bytes.len() && bytes[i] == b'{' {
            if let Some(close) = value[i + 1..].find('}') {
                if close > 0 {
                    let name = &value[i + 1..i + 1 + close];
                    let end = i + 1 + close + 1;
                    out.push(Placeholder { start, end, dollars, name });
                    i = end;
                    continue;
                }
            }
        }
    }
    out
}

/// Placeholders in `value` the operator does not know (escaped ones ignored), as `${name}`.
pub fn unknown_placeholders(value: &str) -> Vec<String> {
    placeholders(value)
        .into_iter()
        .filter(|p| p.dollars % 2 == 1 && !KNOWN_PLACEHOLDERS.contains(&p.name))
        .map(|p| format!("${{{}}}", p.name))
        .collect()
}

/// Expands `${image_root}` to `image_root` (the extension's mount path); `$$` pairs before
/// braces collapse to one `$`; unknown placeholders stay as written.
pub fn expand(value: &str, image_root: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut last = 0;
    for p in placeholders(value) {
        out.push_str(&value[last..p.start]);
        let kept = "$".repeat(p.dollars / 2);
        let braces = &value[p.start + p.dollars..p.end];
        if p.dollars % 2 == 0 {
            out.push_str(&kept);
            out.push_str(braces);
        } else if p.name == "image_root" {
            out.push_str(&kept);
            out.push_str(image_root);
        } else {
            out.push_str(&value[p.start..p.end]);
        }
        last = p.end;
    }
    out.push_str(&value[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rstest::rstest]
    #[case("${image_root}/share", "/extensions/x/share")]
    #[case("$${image_root}", "${image_root}")]
    #[case("$$${image_root}", "$/extensions/x")]
    #[case("$$$${image_root}", "$${image_root}")]
    #[case("${other}:${image_root}", "${other}:/extensions/x")]
    #[case("plain $HOME ${}", "plain $HOME ${}")]
    fn expands_like_the_operator(#[case] value: &str, #[case] expected: &str) {
        assert_eq!(expand(value, "/extensions/x"), expected);
    }

    #[test]
    fn unknown_placeholders_skip_escaped_ones() {
        assert_eq!(unknown_placeholders("${a} $${b} $$${c} ${image_root}"), vec!["${a}", "${c}"]);
    }

    #[test]
    fn reserved_names() {
        for n in ["PGDATA", "pgdata", "CNPG_X", "POD_NAME", "namespace", "CLUSTER_NAME"] {
            assert!(is_reserved(n), "{n}");
        }
        for n in ["MY_VAR", "GDAL_DATA", "PATH"] {
            assert!(!is_reserved(n), "{n}");
        }
    }
}
