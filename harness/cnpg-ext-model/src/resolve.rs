//! The extension list the operator resolves for a Cluster: from 1.29, a Cluster entry may
//! name an extension its image catalog declares (`images[].extensions` of the entry for
//! `imageCatalogRef.major`) and override it field by field; the result (kept in
//! `status.pgDataImageInfo.extensions`) is what volumes, GUCs and the environment come from.
//! Only the extensions the Cluster names are used.

use crate::cluster::{CatalogDoc, ClusterDoc, ExtensionConfiguration};
use crate::error::InputError;
use crate::version::CnpgVersion;

impl ClusterDoc {
    /// Resolves `spec.postgresql.extensions` against `catalogs` as CloudNativePG `cnpg` does.
    /// Before 1.29 (or without `imageCatalogRef`) that is the Cluster's list as written.
    pub fn resolve_extensions(
        &self,
        catalogs: &[&CatalogDoc],
        cnpg: CnpgVersion,
    ) -> Result<Vec<ExtensionConfiguration>, InputError> {
        let requested = &self.cluster.spec.postgresql.extensions;
        let Some(r) = self.cluster.spec.image_catalog_ref.as_ref() else {
            return Ok(requested.clone());
        };
        // Every release looks the catalog up for the operand image of the requested major.
        let namespace = self.cluster.metadata.namespace.as_deref();
        let Some(catalog) = catalogs.iter().find(|c| c.is_named_by(r, namespace)) else {
            return Err(InputError::new(
                &self.file,
                Some(self.line),
                "spec.imageCatalogRef",
                format!(
                    "{} `{}` is not among the applied manifests; apply it in the same or an earlier step (the operator cannot pick an image without it)",
                    r.kind, r.name
                ),
            ));
        };
        if !catalog.catalog.spec.images.iter().any(|i| i.major == r.major) {
            return Err(InputError::new(
                &self.file,
                Some(self.line),
                "spec.imageCatalogRef.major",
                format!("{} `{}` has no image for major {} (refused by the operator)", r.kind, r.name, r.major),
            ));
        }
        if !cnpg.applies_extension_env() {
            return Ok(requested.clone());
        }
        let declared: Vec<&ExtensionConfiguration> = catalog
            .catalog
            .spec
            .images
            .iter()
            .find(|i| i.major == r.major)
            .map(|i| i.extensions.iter().collect())
            .unwrap_or_default();
        let mut out = Vec::with_capacity(requested.len());
        for (i, e) in requested.iter().enumerate() {
            let line = self.extension_lines.get(i).copied().unwrap_or(self.line);
            let Some(base) = declared.iter().find(|c| c.name == e.name) else {
                if e.image.reference.is_empty() {
                    return Err(InputError::new(
                        &self.file,
                        Some(line),
                        format!("spec.postgresql.extensions[{i}].image.reference"),
                        format!(
                            "`{}` is not declared by {} `{}` for major {} and names no image (refused by the operator)",
                            e.name, r.kind, r.name, r.major
                        ),
                    ));
                }
                out.push(e.clone());
                continue;
            };
            if base.image.reference.is_empty() && e.image.reference.is_empty() {
                return Err(InputError::new(
                    &catalog.file,
                    Some(catalog.line),
                    format!("spec.images[major={}].extensions[{}].image.reference", r.major, e.name),
                    format!("`{}` has an image reference neither in the catalog nor in the Cluster (refused by the operator)", e.name),
                ));
            }
            let mut merged = (*base).clone();
            if !e.image.reference.is_empty() {
                merged.image.reference = e.image.reference.clone();
            }
            if e.image.pull_policy.as_deref().is_some_and(|p| !p.is_empty()) {
                merged.image.pull_policy = e.image.pull_policy.clone();
            }
            let set = |v: &Option<Vec<String>>| v.as_ref().is_some_and(|l| !l.is_empty());
            if set(&e.extension_control_path) {
                merged.extension_control_path = e.extension_control_path.clone();
            }
            if set(&e.dynamic_library_path) {
                merged.dynamic_library_path = e.dynamic_library_path.clone();
            }
            if set(&e.ld_library_path) {
                merged.ld_library_path = e.ld_library_path.clone();
            }
            if set(&e.bin_path) {
                merged.bin_path = e.bin_path.clone();
            }
            if e.env.as_ref().is_some_and(|l| !l.is_empty()) {
                merged.env = e.env.clone();
            }
            out.push(merged);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::cluster::Manifest;
    use crate::CnpgVersion;
    use std::path::Path;

    const DOCS: &str = r#"apiVersion: postgresql.cnpg.io/v1
kind: ClusterImageCatalog
metadata: {name: pg}
spec:
  images:
    - major: 18
      image: example/pg:18
      extensions:
        - name: vector
          image: {reference: example/vector:1}
          extension_control_path: [share, opt]
          env: [{name: A, value: "1"}]
        - name: other
          image: {reference: example/other:1}
---
apiVersion: postgresql.cnpg.io/v1
kind: Cluster
metadata: {name: c}
spec:
  imageCatalogRef: {apiGroup: postgresql.cnpg.io, kind: ClusterImageCatalog, name: pg, major: 18}
  postgresql:
    extensions:
      - name: vector
        extension_control_path: []
        ld_library_path: [system]
      - name: own
        image: {reference: example/own:1}
"#;

    fn resolve(v: CnpgVersion) -> Result<Vec<crate::ExtensionConfiguration>, crate::InputError> {
        let docs = Manifest::parse(Path::new("t.yaml"), DOCS).unwrap();
        let catalogs: Vec<_> =
            docs.iter().filter_map(|d| if let Manifest::Catalog(c) = d { Some(c) } else { None }).collect();
        let cluster = docs.iter().find_map(|d| if let Manifest::Cluster(c) = d { Some(c) } else { None }).unwrap();
        cluster.resolve_extensions(&catalogs, v)
    }

    #[test]
    fn catalog_entries_are_overridden_field_by_field() {
        let exts = resolve(CnpgVersion::new(1, 29, 0)).unwrap();
        assert_eq!(exts.len(), 2, "only the extensions the Cluster names");
        assert_eq!(exts[0].image.reference, "example/vector:1");
        // An explicitly empty list does not override the catalog's.
        assert_eq!(exts[0].extension_control_path, Some(vec!["share".to_string(), "opt".to_string()]));
        assert_eq!(exts[0].ld_library_path, Some(vec!["system".to_string()]));
        assert_eq!(exts[0].env_vars().len(), 1);
        assert_eq!(exts[1].image.reference, "example/own:1");
    }

    #[test]
    fn before_1_29_the_list_is_taken_as_written() {
        let exts = resolve(CnpgVersion::new(1, 28, 2)).unwrap();
        assert_eq!(exts[0].image.reference, "");
    }
}
