//! Go's `path/filepath.Clean` and `Join` on Unix paths, written from their documented rules:
//! the operator joins every extension path onto the mount with `filepath.Join`, so the plan
//! must clean paths exactly as it does (`/system` and `./system/` both become
//! `<mount>/system`; `../x` leaves the mount).

/// Lexical cleaning: one separator between elements, `.` removed, `x/..` removed, `..`
/// above the root of a rooted path removed, no trailing separator; `""` becomes `"."`.
pub fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if rooted => {}
                _ => parts.push(".."),
            },
            other => parts.push(other),
        }
    }
    let body = parts.join("/");
    match (rooted, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".to_string(),
        (false, false) => body,
    }
}

/// `filepath.Join`: the non-empty elements joined with `/`, then cleaned; `""` when every
/// element is empty.
pub fn join(elements: &[&str]) -> String {
    let kept: Vec<&str> = elements.iter().copied().filter(|e| !e.is_empty()).collect();
    if kept.is_empty() {
        return String::new();
    }
    clean(&kept.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rstest::rstest]
    #[case("", ".")]
    #[case("/", "/")]
    #[case("a/b/", "a/b")]
    #[case("./a//b/.", "a/b")]
    #[case("a/../..", "..")]
    #[case("../../x", "../../x")]
    #[case("/../x", "/x")]
    #[case("/a/b/../../..", "/")]
    #[case("..foo", "..foo")]
    fn cleans_like_go(#[case] input: &str, #[case] expected: &str) {
        assert_eq!(clean(input), expected);
    }

    #[rstest::rstest]
    #[case("/extensions/x", "share", "/extensions/x/share")]
    #[case("/extensions/x", "/system", "/extensions/x/system")]
    #[case("/extensions/x", "./lib/", "/extensions/x/lib")]
    #[case("/extensions/x", "a/../b", "/extensions/x/b")]
    #[case("/extensions/x", "../y", "/extensions/y")]
    #[case("/extensions/x", "", "/extensions/x")]
    fn joins_like_go(#[case] base: &str, #[case] rel: &str, #[case] expected: &str) {
        assert_eq!(join(&[base, rel]), expected);
    }

    #[test]
    fn join_of_nothing_is_empty() {
        assert_eq!(join(&["", ""]), "");
    }
}
