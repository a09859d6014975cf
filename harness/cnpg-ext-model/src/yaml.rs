//! YAML parsing with errors that name the file, the line and the field.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::InputError;

/// Turns a serde-saphyr error into an [`InputError`] for `file`.
pub(crate) fn input_error(file: &Path, err: &serde_saphyr::Error) -> InputError {
    let line = err.location().map(|l| l.line()).filter(|l| *l > 0);
    // The rendered message carries a snippet; the first line is the reason.
    let rendered = err.to_string();
    let message = rendered.lines().find(|l| !l.trim().is_empty()).unwrap_or("invalid YAML").trim();
    // Drop serde-saphyr's own "error: line N column M:" prefix: the location is ours to print.
    let message = match message.strip_prefix("error: ").and_then(|m| m.split_once(": ")) {
        Some((loc, rest)) if loc.starts_with("line ") => rest.to_string(),
        _ => message.to_string(),
    };
    let field = field_from_message(&rendered).unwrap_or_else(|| "(document)".to_string());
    InputError::new(file, line, field, message)
}

/// serde messages name unknown or missing fields in backquotes; surface the name as the field.
fn field_from_message(msg: &str) -> Option<String> {
    for marker in ["unknown field `", "missing field `", "unknown variant `", "duplicate field `"] {
        if let Some(start) = msg.find(marker) {
            let rest = &msg[start + marker.len()..];
            if let Some(end) = rest.find('`') {
                return Some(rest[..end].to_string());
            }
        }
    }
    None
}

pub(crate) fn parse<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T, InputError> {
    serde_saphyr::from_str::<T>(text).map_err(|e| input_error(file, &e))
}

pub(crate) fn read(file: &Path) -> Result<String, InputError> {
    std::fs::read_to_string(file).map_err(|e| InputError::new(file, None, "(file)", format!("cannot read: {e}")))
}
