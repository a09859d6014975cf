// Shared by the test files (each includes it with `mod common;`).
#![allow(dead_code)]

use std::path::Path;

use cnpg_ext_model::cluster::ClusterDoc;
use cnpg_ext_model::Manifest;

pub const CLUSTER_YAML: &str = r#"apiVersion: postgresql.cnpg.io/v1
kind: Cluster
metadata:
  name: c
spec:
  instances: 3
  imageName: ghcr.io/cloudnative-pg/postgresql:18-minimal-trixie
  storage:
    size: 1Gi
  postgresql:
    extensions:
      - name: pgvector
        image:
          reference: ghcr.io/cloudnative-pg/pgvector:0.8.1-18-trixie
      - name: my_ext
        image:
          reference: localhost/my-ext:1
          pullPolicy: Never
        ld_library_path: [system]
"#;

pub fn cluster_doc(yaml: &str) -> ClusterDoc {
    match Manifest::parse(Path::new("cluster.yaml"), yaml).unwrap().remove(0) {
        Manifest::Cluster(c) => c,
        other => panic!("not a Cluster: {other:?}"),
    }
}

#[macro_export]
macro_rules! snap {
    ($($t:tt)*) => {
        insta::with_settings!({snapshot_path => concat!(env!("CARGO_MANIFEST_DIR"), "/../../snapshots/kind"), prepend_module_to_snapshot => false}, {
            $($t)*
        })
    };
}
