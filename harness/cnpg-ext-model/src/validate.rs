//! What CloudNativePG refuses in a Cluster's `spec.postgresql.extensions`, release by
//! release, and who refuses it: the CRD schema (the API server), the operator's admission
//! webhook, the operator while reconciling, or Kubernetes itself when the pod is created.
//!
//! The rules follow the operator's source at each release; the differential test (the
//! oracle in `oracle/`) compares what the operator's exported packages accept with this.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;

use crate::cluster::{sanitize_name, ClusterDoc};
use crate::env;
use crate::error::InputError;
use crate::gopath;
use crate::plan::volume_name;
use crate::version::CnpgVersion;

/// Who refuses an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The CRD's OpenAPI schema, enforced by the API server.
    Crd,
    /// The operator's validating admission webhook.
    Webhook,
    /// The operator's reconciler (e.g. catalog resolution).
    Operator,
    /// Kubernetes, when the operator creates the pod (e.g. a volume name over 63 characters).
    Kubernetes,
    /// The harness's own precondition.
    Harness,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Crd => "the CRD schema",
            Source::Webhook => "the operator's admission webhook",
            Source::Operator => "the operator",
            Source::Kubernetes => "Kubernetes (pod creation)",
            Source::Harness => "the harness",
        })
    }
}

/// One refusal: the field, the line of the entry, what is wrong and who says so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    pub field: String,
    pub line: u64,
    pub message: String,
    pub source: Source,
}

impl ClusterDoc {
    /// Checks the Cluster as CloudNativePG `cnpg` would: the first refusal, as an input
    /// error naming the file, line, field and who refuses it.
    pub fn validate(&self, cnpg: CnpgVersion) -> Result<(), InputError> {
        match self.rejections(cnpg).into_iter().next() {
            None => Ok(()),
            Some(r) => Err(InputError::new(
                &self.file,
                Some(r.line),
                r.field,
                format!("{} (refused by {} of CloudNativePG {cnpg})", r.message, r.source),
            )),
        }
    }

    /// Every refusal, in field order.
    pub fn rejections(&self, cnpg: CnpgVersion) -> Vec<Rejection> {
        let c = &self.cluster;
        let mut out = Vec::new();
        let mut reject = |line: u64, field: String, message: String, source: Source| {
            out.push(Rejection { field, line, message, source });
        };
        if c.metadata.name.is_empty() {
            reject(self.line, "metadata.name".into(), "a Cluster needs a name".into(), Source::Crd);
        }
        if c.spec.instances == 0 {
            reject(self.line, "spec.instances".into(), "must be at least 1".into(), Source::Crd);
        }
        if c.spec.postgresql.parameters.contains_key("shared_preload_libraries") {
            reject(
                self.line,
                "spec.postgresql.parameters.shared_preload_libraries".into(),
                "a fixed parameter: list libraries in `spec.postgresql.shared_preload_libraries`".into(),
                Source::Webhook,
            );
        }
        if let Some(image) = c.spec.image_name.as_deref().filter(|_| c.spec.image_catalog_ref.is_none()) {
            if let Err(m) = check_operand_tag(image) {
                reject(self.line, "spec.imageName".into(), m, Source::Operator);
            }
        }
        let exts = &c.spec.postgresql.extensions;
        if !exts.is_empty() && cnpg < CnpgVersion::FIRST_WITH_EXTENSIONS {
            reject(
                self.line,
                "spec.postgresql.extensions".into(),
                format!("CloudNativePG {cnpg} has no image-volume extensions (needs 1.27.0 or later)"),
                Source::Harness,
            );
            return out;
        }
        let catalog = c.spec.image_catalog_ref.is_some() && cnpg.applies_extension_env();
        let mut names = BTreeSet::new();
        let mut volumes = BTreeSet::new();
        for (i, e) in exts.iter().enumerate() {
            let line = self.extension_lines.get(i).copied().unwrap_or(self.line);
            let f = |sub: &str| format!("spec.postgresql.extensions[{i}]{sub}");
            if let Err(m) = check_name(&e.name, cnpg) {
                reject(line, f(".name"), m, Source::Crd);
            }
            if !names.insert(e.name.clone()) {
                reject(line, f(".name"), format!("duplicate extension name `{}`", e.name), Source::Webhook);
                continue;
            }
            let sanitized = sanitize_name(&e.name);
            if !volumes.insert(sanitized.clone()) {
                reject(
                    line,
                    f(".name"),
                    format!("`{}` gives the same volume name as an earlier entry (`_` becomes `-`: `{sanitized}`); rename one of them", e.name),
                    Source::Webhook,
                );
            }
            let volume = volume_name(&e.name, cnpg);
            if volume.len() > 63 {
                reject(
                    line,
                    f(".name"),
                    format!("its pod volume name `{volume}` is longer than 63 characters, so the pod cannot be created; shorten the name"),
                    Source::Kubernetes,
                );
            }
            if e.image.reference.trim().is_empty() && !catalog {
                let hint = if c.spec.image_catalog_ref.is_some() {
                    format!(" (extensions from an image catalog need CloudNativePG 1.29.0 or later; this run models {cnpg})")
                } else {
                    String::new()
                };
                reject(line, f(".image.reference"), format!("an image reference is required{hint}"), Source::Webhook);
            }
            let every = cnpg.checks_every_path_list();
            for (field, list, checked) in [
                ("extension_control_path", &e.extension_control_path, true),
                ("dynamic_library_path", &e.dynamic_library_path, true),
                ("ld_library_path", &e.ld_library_path, every),
                ("bin_path", &e.bin_path, every),
            ] {
                if !checked {
                    continue;
                }
                let mut seen = BTreeSet::new();
                for (j, p) in list.iter().flatten().enumerate() {
                    let at = f(&format!(".{field}[{j}]"));
                    if p.is_empty() {
                        reject(
                            line,
                            at,
                            "empty path; use a directory inside the image, e.g. `share`".into(),
                            Source::Webhook,
                        );
                    } else if !seen.insert(p.as_str()) {
                        reject(line, at, format!("`{p}` is listed twice"), Source::Webhook);
                    } else if every && gopath::clean(p).starts_with("..") {
                        reject(line, at, format!("`{p}` leaves the image directory"), Source::Webhook);
                    }
                }
            }
            if cnpg.applies_extension_env() {
                let mut seen = BTreeSet::new();
                for (j, v) in e.env_vars().iter().enumerate() {
                    let at = |sub: &str| f(&format!(".env[{j}].{sub}"));
                    if env::is_reserved(&v.name) {
                        reject(line, at("name"), format!("`{}` is reserved for the operator", v.name), Source::Webhook);
                    }
                    if let Some((_, field)) = env::DEDICATED.iter().find(|(n, _)| *n == v.name) {
                        reject(
                            line,
                            at("name"),
                            format!("{} must be configured via `{field}`", v.name),
                            Source::Webhook,
                        );
                    }
                    let unknown = env::unknown_placeholders(&v.value);
                    if !unknown.is_empty() {
                        reject(
                            line,
                            at("value"),
                            format!("unsupported placeholder(s): {}; supported: ${{image_root}}", unknown.join(", ")),
                            Source::Webhook,
                        );
                    }
                    if !seen.insert(v.name.as_str()) {
                        reject(line, at("name"), format!("`{}` is set twice", v.name), Source::Webhook);
                    }
                }
            }
        }
        out
    }

    /// What CloudNativePG `cnpg` accepts but ignores (fields and catalog extensions added in
    /// 1.29): a scenario relying on them cannot pass against that release.
    pub fn ignored(&self, cnpg: CnpgVersion) -> Vec<InputError> {
        if cnpg.applies_extension_env() {
            return Vec::new();
        }
        let how = if cnpg.knows_extension_env_fields() {
            "accepted by its schema but ignored"
        } else {
            "unknown to its schema and pruned by the API server"
        };
        let mut out = Vec::new();
        for (i, e) in self.cluster.spec.postgresql.extensions.iter().enumerate() {
            let line = self.extension_lines.get(i).copied();
            for (field, used) in [
                ("bin_path", e.bin_path.as_ref().is_some_and(|v| !v.is_empty())),
                ("env", e.env.as_ref().is_some_and(|v| !v.is_empty())),
            ] {
                if used {
                    out.push(InputError::new(
                        &self.file,
                        line,
                        format!("spec.postgresql.extensions[{i}].{field}"),
                        format!("ignored by CloudNativePG {cnpg} ({how}); it needs 1.29.0 or later"),
                    ));
                }
            }
        }
        out
    }
}

/// The operator reads the PostgreSQL major from the operand image's tag, which must start
/// with a version (`18`, `18.1-minimal-trixie`); a missing tag counts as `latest`.
fn check_operand_tag(image: &str) -> Result<(), String> {
    let name = image.split('@').next().unwrap_or(image);
    let last = name.rsplit('/').next().unwrap_or(name);
    let tag = last.split_once(':').map(|(_, t)| t).unwrap_or("latest");
    if tag.starts_with(|c: char| c.is_ascii_digit()) {
        Ok(())
    } else {
        Err(format!(
            "the operator cannot read a PostgreSQL version from the tag `{tag}` of `{image}`; use a tag that starts with it, e.g. `18-minimal-trixie`"
        ))
    }
}

/// The CRD's name rules: lowercase alphanumerics and `-` (and `_` where the release allows
/// it), starting and ending with an alphanumeric; at most 59 characters where limited.
fn check_name(name: &str, cnpg: CnpgVersion) -> Result<(), String> {
    if name.is_empty() {
        return Err("an extension needs a name".into());
    }
    let underscore_ok = cnpg.allows_underscore_names();
    if let Some(ch) = name
        .chars()
        .find(|&ch| !(ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-' || (ch == '_' && underscore_ok)))
    {
        let hint = if ch == '_' {
            format!(" (underscores need CloudNativePG 1.27.3 / 1.28.1 or later; this run models {cnpg})")
        } else {
            String::new()
        };
        return Err(format!("`{name}` has `{ch}`: use lowercase letters, digits and `-`{hint}"));
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge_ok(name.chars().next()) || !edge_ok(name.chars().last()) {
        return Err(format!("`{name}` must start and end with a letter or digit"));
    }
    if cnpg.limits_name_length() && name.len() > 59 {
        return Err(format!("`{name}` is longer than 59 characters"));
    }
    Ok(())
}
