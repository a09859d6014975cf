//! Every scenario manifest (`scenarios/*/*.yaml` but `scenario.yaml`) through the real
//! operator's admission (CRD schema + CloudNativePG's validating/mutating webhooks) as a
//! server-side dry run, with a negative control the webhook alone refuses. Ignored: needs
//! the real node (uses a running one, else starts one and stops it after). The table of
//! results is printed and written to `target/k8s-webhook-check.md`.

use std::path::{Path, PathBuf};
use std::process::Command;

const REQUIRE: &str = "CNPG_EXT_HARNESS_REQUIRE_K8S";
const NAMESPACE: &str = "cnpg-ext-webhook-check";

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

/// Server-side dry run of `file`: Ok(message) when accepted, Err(message) when refused.
fn dry_run(kubectl: &Path, kubeconfig: &str, file: &Path) -> Result<String, String> {
    let o = Command::new(kubectl)
        .args(["--kubeconfig", kubeconfig, "-n", NAMESPACE, "create", "--dry-run=server", "-f"])
        .arg(file)
        .output()
        .unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)).trim().to_string();
    if o.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

#[test]
#[ignore = "needs the real single-node Kubernetes (root, Go toolchain)"]
fn real_webhook_accepts_every_scenario_manifest() {
    if !nix::unistd::geteuid().is_root() {
        return cannot_run("needs root");
    }
    let paths = cnpg_ext_node::paths::Paths::from_env().unwrap();
    let running = node(&["status"]).status.success();
    if !running {
        let up = node(&["up"]);
        if !up.status.success() {
            let why = String::from_utf8_lossy(&up.stderr).into_owned();
            if up.status.code() == Some(3) {
                return cannot_run(&format!("k8s up: environment unusable: {why}"));
            }
            panic!("k8s up failed: {why}");
        }
    }
    let kubeconfig = paths.state().join("kubeconfig/admin").display().to_string();
    let built = cnpg_ext_node::components::build_all(&paths).unwrap();
    let kubectl = cnpg_ext_node::components::binary(&built, "kubectl");
    let _ = Command::new(&kubectl).args(["--kubeconfig", &kubeconfig, "create", "namespace", NAMESPACE]).output();

    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("scenarios"))
        .unwrap()
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten().map(|f| f.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml") && !p.ends_with("scenario.yaml"))
        .collect();
    files.sort();
    let mut table = String::from("| manifest | admission | message |\n| --- | --- | --- |\n");
    let mut refused = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(repo()).unwrap().display().to_string();
        let (verdict, msg) = match dry_run(&kubectl, &kubeconfig, f) {
            Ok(m) => ("accepted", m),
            Err(m) => {
                refused.push(format!("{rel}: {m}"));
                ("refused", m)
            }
        };
        table.push_str(&format!("| `{rel}` | {verdict} | {} |\n", msg.replace('\n', " ").replace('|', "\\|")));
    }
    // Negative control: only CloudNativePG's webhook refuses a `latest` image tag.
    let control = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        control.path(),
        "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata: {name: latest-tag}\n\
         spec: {instances: 1, imageName: 'ghcr.io/cloudnative-pg/postgresql:latest', storage: {size: 1Gi}}\n",
    )
    .unwrap();
    let negative = dry_run(&kubectl, &kubeconfig, control.path());
    table.push_str(&format!(
        "| negative control (`imageName: …:latest`) | {} |\n",
        match &negative {
            Ok(m) => format!("accepted | {m}"),
            Err(m) => format!("refused | {}", m.replace('\n', " ")),
        }
    ));
    let _ = Command::new(&kubectl)
        .args(["--kubeconfig", &kubeconfig, "delete", "namespace", NAMESPACE, "--wait=false"])
        .output();
    if !running {
        assert!(node(&["down"]).status.success(), "k8s down failed");
    }
    eprintln!("{table}");
    let _ = std::fs::write(repo().join("target/k8s-webhook-check.md"), &table);
    assert!(files.len() >= 19, "expected the scenario manifests, found {}", files.len());
    assert!(refused.is_empty(), "the operator refused:\n{}", refused.join("\n"));
    let refusal = negative.expect_err("the webhook accepted a 'latest' image tag: is it in the path?");
    assert!(refusal.contains("latest"), "unexpected refusal: {refusal}");
}
