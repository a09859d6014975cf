//! `--registry`: the kind config patch, the nodes' `hosts.toml`, the KEP-1755 ConfigMap and
//! every command line, as snapshots; the run path against stand-in `kind`/`docker`/`skopeo`
//! scripts (no registry image can be pulled here, so the real start path never ran).
//!
//! The tests that change `PATH` run in one test function (the environment is per process).

mod common;

use std::path::{Path, PathBuf};

use cnpg_ext_kind::config::{self, check_kind_config, render_kind_config, Topology};
use cnpg_ext_kind::node_mirror::{
    self as registry, engine_push_steps, hosts_toml_local, hosts_toml_mirror, inspect_running_args,
    kind_get_nodes_args, local_registry_hosting, mirror_hosts_files, mirror_target, network_connect_args,
    networks_args, parse_loaded_image, port_args, published_on, remove_args, run_args, select_engine, skopeo_push_args,
    split_reference, start_args, with_registry_patch, write_hosts_toml_args, Engine, EngineCli, RegistryConfig,
};
use cnpg_ext_kind::render::to_yaml;
use cnpg_ext_kind::KindOptions;
use cnpg_ext_model::backend::BackendError;

fn cfg() -> RegistryConfig {
    RegistryConfig::default()
}

#[test]
fn kind_config_with_the_registry_patch() {
    // The generated variant …
    let rendered = render_kind_config("1.33", Topology::Single, true).unwrap();
    assert!(rendered.contains("[plugins.\"io.containerd.grpc.v1.cri\".registry]"));
    assert_eq!(with_registry_patch(&rendered).unwrap(), rendered, "a config that has config_path is left alone");
    let info = check_kind_config(Path::new("kind-1.33-registry.yaml"), &rendered, false).unwrap();
    assert!(info.pinned);
    // … and the patch added to a committed config (what `kind up --registry --config F` uses).
    let committed = std::fs::read_to_string(
        cnpg_ext_kind::kind_config_dir().join(config::config_file_name("1.34", Topology::ThreeNodes)),
    )
    .unwrap();
    let patched = with_registry_patch(&committed).unwrap();
    snap!(insta::assert_snapshot!("registry__kind-1.34-3nodes-patched", patched));
    let info = check_kind_config(Path::new("patched.yaml"), &patched, false).unwrap();
    assert!(info.pinned);
    assert_eq!(info.kind_release.as_deref(), Some("v0.31.0"), "comments are kept");
    assert!(patched.starts_with(&committed));
    assert_eq!(info.images.len(), 3);
    let v: serde_json::Value = serde_saphyr::from_str(&patched).unwrap();
    assert_eq!(v["containerdConfigPatches"][0].as_str().unwrap(), registry::CONTAINERD_PATCH);
    // A config with patches of its own keeps them.
    let own = "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\ncontainerdConfigPatches:\n  - |-\n    [debug]\n      level = \"debug\"\n";
    let v: serde_json::Value = serde_saphyr::from_str(&with_registry_patch(own).unwrap()).unwrap();
    assert_eq!(v["containerdConfigPatches"].as_array().unwrap().len(), 2);
}

#[test]
fn hosts_toml_and_configmap() {
    let c = cfg();
    let mut out = String::new();
    out.push_str(&format!("### {}/{}/hosts.toml\n{}\n", registry::CERTS_D, c.host(), hosts_toml_local(&c)));
    for host in ["ghcr.io", "docker.io", "localhost"] {
        out.push_str(&format!("### {}/{host}/hosts.toml\n{}\n", registry::CERTS_D, hosts_toml_mirror(host, &c)));
    }
    out.push_str(&format!("### kube-public/local-registry-hosting\n{}", to_yaml(&local_registry_hosting(&c))));
    snap!(insta::assert_snapshot!("registry__hosts-toml-and-configmap", out));
    let cm = local_registry_hosting(&c);
    assert_eq!(cm["metadata"]["namespace"], "kube-public");
    let data: serde_json::Value =
        serde_saphyr::from_str(cm["data"]["localRegistryHosting.v1"].as_str().unwrap()).unwrap();
    assert_eq!(data["host"], "localhost:5001");
    assert_eq!(data["hostFromContainerRuntime"], "cnpg-ext-registry:5000");
}

#[test]
fn references_keep_their_registry_host_in_the_mirror() {
    let c = cfg();
    let cases = [
        (
            "ghcr.io/cloudnative-pg/pgvector:0.8.1-18-trixie",
            "ghcr.io",
            "localhost:5001/ghcr.io/cloudnative-pg/pgvector:0.8.1-18-trixie",
        ),
        ("localhost/my-ext:1", "localhost", "localhost:5001/localhost/my-ext:1"),
        ("postgres:18", "docker.io", "localhost:5001/docker.io/library/postgres:18"),
        ("bitnami/redis", "docker.io", "localhost:5001/docker.io/bitnami/redis:latest"),
        (
            "registry.example:5443/team/ext:2",
            "registry.example:5443",
            "localhost:5001/registry.example:5443/team/ext:2",
        ),
    ];
    for (reference, host, push) in cases {
        let t = mirror_target(reference, &c).unwrap();
        assert_eq!((t.host.as_str(), t.push.as_str()), (host, push), "{reference}");
        assert!(t.note.is_none());
    }
    let pinned =
        mirror_target("ghcr.io/x/y@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", &c)
            .unwrap();
    assert_eq!(
        pinned.push,
        "localhost:5001/ghcr.io/x/y:sha256-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    );
    assert!(pinned.note.unwrap().contains("pull by digest"));
    assert!(split_reference(":1").is_err());
    // One hosts.toml per source registry.
    let targets: Vec<_> =
        ["ghcr.io/a/b:1", "ghcr.io/c/d:2", "localhost/e:3"].iter().map(|r| mirror_target(r, &c).unwrap()).collect();
    let files = mirror_hosts_files(&targets, &c);
    assert_eq!(files.iter().map(|(h, _)| h.as_str()).collect::<Vec<_>>(), ["ghcr.io", "localhost"]);
}

fn command_lines(cli: &EngineCli) -> String {
    let c = cfg();
    let target = mirror_target("ghcr.io/cloudnative-pg/pgvector:0.8.1-18-trixie", &c).unwrap();
    let archive = Path::new("/work/store/pgvector.tar");
    let mut lines: Vec<(String, Vec<String>)> = vec![
        ("registry state".into(), inspect_running_args(cli, &c)),
        ("start a new registry".into(), run_args(cli, &c)),
        ("start a stopped registry".into(), start_args(cli, &c)),
        ("where it is published".into(), port_args(cli, &c)),
        ("its networks".into(), networks_args(cli, &c)),
        ("join the kind network".into(), network_connect_args(cli, &c)),
        ("nodes".into(), kind_get_nodes_args("cnpg-ext")),
        (
            "hosts.toml for localhost:5001 (on stdin)".into(),
            write_hosts_toml_args(cli, "cnpg-ext-control-plane", &c.host()),
        ),
        ("hosts.toml for ghcr.io (on stdin)".into(), write_hosts_toml_args(cli, "cnpg-ext-control-plane", "ghcr.io")),
        ("push with skopeo".into(), skopeo_push_args(archive, &target)),
    ];
    for (i, step) in engine_push_steps(cli, archive, &target.reference, &target).into_iter().enumerate() {
        lines.push((format!("push without skopeo, step {}", i + 1), step));
    }
    lines.push(("kind down --registry".into(), remove_args(cli, &c)));
    lines.into_iter().map(|(what, argv)| format!("# {what}\n{argv:?}\n")).collect()
}

#[test]
fn command_lines_docker_and_podman() {
    snap!(insta::assert_snapshot!("registry__commands-docker", command_lines(&EngineCli::new(Engine::Docker, vec![]))));
    snap!(insta::assert_snapshot!(
        "registry__commands-podman",
        command_lines(&EngineCli::new(
            Engine::Podman,
            ["--runtime", "runc", "--cgroup-manager", "cgroupfs"].map(String::from).to_vec()
        ))
    ));
}

#[test]
fn engine_choice_follows_kind() {
    assert_eq!(select_engine(None, true, true).unwrap(), Engine::Docker);
    assert_eq!(select_engine(None, false, true).unwrap(), Engine::Podman);
    assert_eq!(select_engine(Some("podman"), true, true).unwrap(), Engine::Podman);
    let e = select_engine(Some("podman"), true, false).unwrap_err();
    assert!(matches!(&e, BackendError::Unusable(m) if m.contains("KIND_EXPERIMENTAL_PROVIDER=podman")), "{e}");
    assert!(select_engine(Some("nerdctl"), true, true).is_err());
    let none = select_engine(None, false, false).unwrap_err();
    assert!(matches!(&none, BackendError::Unusable(m) if m.contains("no usable docker")), "{none}");
}

#[test]
fn engine_outputs() {
    assert_eq!(parse_loaded_image("Loaded image: ghcr.io/a/b:1\n").as_deref(), Some("ghcr.io/a/b:1"));
    assert_eq!(
        parse_loaded_image("Getting image source signatures\nLoaded image(s): localhost/my-ext:1\n").as_deref(),
        Some("localhost/my-ext:1")
    );
    assert_eq!(parse_loaded_image("nothing"), None);
    assert!(published_on("127.0.0.1:5001\n", 5001));
    assert!(published_on("0.0.0.0:5001\n[::]:5001\n", 5001));
    assert!(!published_on("127.0.0.1:5002\n", 5001));
    assert!(!published_on("", 5001));
}

fn script(dir: &Path, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    // The stand-in's own PATH: the harness looks programs up in the test's PATH only.
    std::fs::write(&p, format!("#!/bin/sh\nPATH=/usr/bin:/bin\n{body}")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn opts(dir: &Path) -> KindOptions {
    KindOptions {
        kind_cluster: Some("cnpg-ext".into()),
        kubeconfig: Some(dir.join("no-such-kubeconfig")),
        registry: true,
        report_dir: dir.join("reports"),
        ..Default::default()
    }
}

/// `prepare` with `registry: true` no longer refuses: without kind or an engine it is exit 3
/// saying what to install; with (stand-in) tools it starts the registry, wires the nodes and
/// goes on to the cluster; images are pushed and mirrored by their own registry host.
#[tokio::test]
async fn prepare_with_registry_needs_kind_and_an_engine_then_wires_the_mirror() {
    let tmp = tempfile::tempdir().unwrap();
    let saved_path = std::env::var_os("PATH");
    std::env::remove_var("KIND_EXPERIMENTAL_PROVIDER");
    std::env::remove_var(registry::ENGINE_FLAGS_ENV);
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();

    // No --kind-cluster: the nodes cannot be configured.
    let mut no_cluster = opts(tmp.path());
    no_cluster.kind_cluster = None;
    let e = cnpg_ext_kind::prepare(&no_cluster).await.err().unwrap();
    assert!(matches!(&e, BackendError::Unusable(m) if m.contains("--registry needs --kind-cluster")), "{e}");

    // Nothing on PATH: kind is missing.
    std::env::set_var("PATH", &empty);
    let e = cnpg_ext_kind::prepare(&opts(tmp.path())).await.err().unwrap();
    assert!(matches!(&e, BackendError::Unusable(m) if m.contains("`kind` is not installed")), "{e}");

    // kind but no engine.
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    script(&bin, "kind", "case \"$1\" in version) echo 'kind v0.31.0 go1.25.5 linux/amd64';; get) echo cnpg-ext-control-plane; echo cnpg-ext-worker;; esac\n");
    std::env::set_var("PATH", &bin);
    let e = cnpg_ext_kind::prepare(&opts(tmp.path())).await.err().unwrap();
    assert!(
        matches!(&e, BackendError::Unusable(m) if m.contains("needs a container engine") && m.contains("no usable docker")),
        "{e}"
    );
    assert_eq!(
        match &e {
            BackendError::Unusable(_) => 3,
            _ => 1,
        },
        3
    );

    // A stand-in docker and skopeo that log their command lines (and stdin of `exec -i`).
    let log = tmp.path().join("log");
    let state = tmp.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let (log_s, state_s) = (log.display(), state.display());
    script(
        &bin,
        "docker",
        &format!(
            r#"printf '%s\n' "docker $*" >> {log_s}
case "$1" in
  info) echo 28.0.4;;
  inspect)
    if [ "$3" = '{{{{.State.Running}}}}' ]; then
      if [ -f {state_s}/running ]; then echo true; else echo 'Error: No such object: cnpg-ext-registry' >&2; exit 1; fi
    else echo '{{"bridge":{{}}}}'; fi;;
  run) touch {state_s}/running; echo 0123abcd;;
  port) echo 127.0.0.1:5001;;
  exec) cat >> {log_s};;
esac
"#
        ),
    );
    script(&bin, "skopeo", &format!("printf '%s\\n' \"skopeo $*\" >> {log_s}\n"));
    let e = cnpg_ext_kind::prepare(&opts(tmp.path())).await.err().unwrap();
    assert!(
        matches!(&e, BackendError::Unusable(m) if m.contains("no-such-kubeconfig")),
        "the registry is ready; the run stops at the (absent) cluster: {e}"
    );
    // Again: the registry is reused, not started twice.
    let reg = registry::prepare_registry(&opts(tmp.path())).await.unwrap();
    let targets = reg
        .push_images(&[
            ("ghcr.io/cloudnative-pg/pgvector:0.8.1-18-trixie".into(), PathBuf::from("/store/pgvector.tar")),
            ("localhost/my-ext:1".into(), PathBuf::from("/store/my-ext.tar")),
        ])
        .await
        .unwrap();
    reg.configure_nodes("cnpg-ext", &mirror_hosts_files(&targets, &reg.cfg)).await.unwrap();
    if let Some(p) = saved_path {
        std::env::set_var("PATH", p);
    }
    let text = std::fs::read_to_string(&log).unwrap().replace(&tmp.path().display().to_string(), "<tmp>");
    snap!(insta::assert_snapshot!("registry__stand-in-run-log", text));
    let runs = text.lines().filter(|l| l.starts_with("docker run")).count();
    assert_eq!(runs, 1, "{text}");
    assert!(text.contains("docker network connect kind cnpg-ext-registry"), "{text}");
}
