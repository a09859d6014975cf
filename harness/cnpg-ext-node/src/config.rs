//! Every configuration file and command line of the node's components: pure functions of the
//! state directory, snapshot-free but unit-tested for the settings that had to be right.

use std::path::Path;

pub const NODE_NAME: &str = "cnpg-ext-node";

/// The node's address in its network namespace (veth `eth0`).
pub const NODE_IP: &str = "10.250.0.2";
/// The host end of the veth pair.
pub const HOST_IP: &str = "10.250.0.1";
/// Host-side name of the veth pair.
pub const HOST_VETH: &str = "cnpg-k8s-h";
pub const NODE_NET: &str = "10.250.0.0/24";
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// The `kubernetes` service's ClusterIP.
pub const SERVICE_API_IP: &str = "10.96.0.1";
pub const POD_CIDR: &str = "10.244.0.0/24";
pub const API_PORT: u16 = 6443;
pub const REGISTRY_PORT: u16 = 5000;
/// The cgroup (in every v1 hierarchy) the kubelet puts pods under; `down` removes it.
pub const CGROUP_ROOT: &str = "cnpg-ext-k8s";
/// containerd's sandbox image (built from our `pause`, imported before the kubelet starts).
pub const PAUSE_IMAGE: &str = "localhost/cnpg-ext-k8s/pause:v1";
/// The registry hosts containerd mirrors to the node's registry.
pub const MIRRORED_HOSTS: &[&str] = &["ghcr.io", "docker.io", "quay.io", "registry.k8s.io"];

fn p(state: &Path, rel: &str) -> String {
    state.join(rel).display().to_string()
}

/// A kubeconfig with file references into `state/pki`.
pub fn kubeconfig(state: &Path, server: &str, client: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: cnpg-ext-node
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: {client}
  user:
    client-certificate: {crt}
    client-key: {key}
contexts:
- name: cnpg-ext-node
  context:
    cluster: cnpg-ext-node
    user: {client}
current-context: cnpg-ext-node
",
        ca = p(state, "pki/ca.crt"),
        crt = p(state, &format!("pki/{client}.crt")),
        key = p(state, &format!("pki/{client}.key")),
    )
}

/// The in-namespace API server URL.
pub fn internal_server() -> String {
    format!("https://{NODE_IP}:{API_PORT}")
}

pub fn etcd_args(state: &Path) -> Vec<String> {
    vec![
        format!("--data-dir={}", p(state, "etcd")),
        "--listen-client-urls=http://127.0.0.1:2379".into(),
        "--advertise-client-urls=http://127.0.0.1:2379".into(),
        "--listen-peer-urls=http://127.0.0.1:2380".into(),
        "--initial-advertise-peer-urls=http://127.0.0.1:2380".into(),
        "--initial-cluster=default=http://127.0.0.1:2380".into(),
        "--listen-metrics-urls=".into(),
        "--quota-backend-bytes=2147483648".into(),
        "--log-level=warn".into(),
        // A test node: durability across power loss is not wanted, speed on a shared disk is.
        "--unsafe-no-fsync".into(),
    ]
}

pub fn apiserver_args(state: &Path) -> Vec<String> {
    vec![
        "--etcd-servers=http://127.0.0.1:2379".into(),
        format!("--advertise-address={NODE_IP}"),
        "--bind-address=0.0.0.0".into(),
        format!("--secure-port={API_PORT}"),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        format!("--tls-cert-file={}", p(state, "pki/apiserver.crt")),
        format!("--tls-private-key-file={}", p(state, "pki/apiserver.key")),
        format!("--client-ca-file={}", p(state, "pki/ca.crt")),
        format!("--kubelet-client-certificate={}", p(state, "pki/apiserver-kubelet-client.crt")),
        format!("--kubelet-client-key={}", p(state, "pki/apiserver-kubelet-client.key")),
        format!("--kubelet-certificate-authority={}", p(state, "pki/ca.crt")),
        // The node registers its InternalIP; its host name resolves nowhere.
        "--kubelet-preferred-address-types=InternalIP".into(),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
        format!("--service-account-key-file={}", p(state, "pki/sa.pub")),
        format!("--service-account-signing-key-file={}", p(state, "pki/sa.key")),
        "--authorization-mode=Node,RBAC".into(),
        "--allow-privileged=true".into(),
        "--feature-gates=ImageVolume=true".into(),
        "--profiling=false".into(),
        "--endpoint-reconciler-type=lease".into(),
    ]
}

pub fn controller_manager_args(state: &Path) -> Vec<String> {
    vec![
        format!("--kubeconfig={}", p(state, "kubeconfig/controller-manager")),
        format!("--authentication-kubeconfig={}", p(state, "kubeconfig/controller-manager")),
        format!("--authorization-kubeconfig={}", p(state, "kubeconfig/controller-manager")),
        format!("--service-account-private-key-file={}", p(state, "pki/sa.key")),
        format!("--root-ca-file={}", p(state, "pki/ca.crt")),
        format!("--cluster-signing-cert-file={}", p(state, "pki/ca.crt")),
        format!("--cluster-signing-key-file={}", p(state, "pki/ca.key")),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        "--use-service-account-credentials=true".into(),
        "--leader-elect=false".into(),
        "--bind-address=127.0.0.1".into(),
        "--secure-port=10257".into(),
        "--feature-gates=ImageVolume=true".into(),
    ]
}

pub fn scheduler_args(state: &Path) -> Vec<String> {
    vec![
        format!("--kubeconfig={}", p(state, "kubeconfig/scheduler")),
        format!("--authentication-kubeconfig={}", p(state, "kubeconfig/scheduler")),
        format!("--authorization-kubeconfig={}", p(state, "kubeconfig/scheduler")),
        "--leader-elect=false".into(),
        "--bind-address=127.0.0.1".into(),
        "--secure-port=10259".into(),
    ]
}

pub fn containerd_socket(state: &Path) -> String {
    p(state, "containerd/containerd.sock")
}

/// containerd 2.x (config version 3): our state directories, runc from the host (Debian's),
/// cgroupfs, the CNI plugins of Debian's containernetworking-plugins, the registry mirrors
/// in `certs.d`, our pause image as the sandbox.
pub fn containerd_config(state: &Path, runc: &str, cni_bin: &str) -> String {
    format!(
        r#"version = 3
root = "{root}"
state = "{st}"

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[plugins.'io.containerd.internal.v1.opt']
  path = "{opt}"

[plugins.'io.containerd.nri.v1.nri']
  disable = true

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{pause}"
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "{certs}"

[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = false
  # The node runs inside a namespace of a machine whose own processes have their scores; a
  # container may only raise its score, never lower it below containerd's.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["{cni_bin}"]
    conf_dir = "{cni_conf}"
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        SystemdCgroup = false

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"#,
        root = p(state, "containerd/root"),
        st = p(state, "containerd/state"),
        sock = containerd_socket(state),
        opt = p(state, "containerd/opt"),
        pause = PAUSE_IMAGE,
        certs = p(state, "containerd/certs.d"),
        cni_conf = p(state, "cni/net.d"),
    )
}

/// `certs.d/<host>/hosts.toml`: pulls of `<host>/...` are served by the node's registry
/// under `<host>/...` (`override_path`), so two registries' `foo/bar:1` stay apart.
pub fn hosts_toml(host: &str) -> String {
    format!(
        r#"server = "https://{host}"

[host."http://{NODE_IP}:{REGISTRY_PORT}/v2/{host}"]
  capabilities = ["pull", "resolve"]
  override_path = true
"#
    )
}

/// The same for references that name the node's registry itself (`localhost:<port>/...`
/// as pushed from the host through the forwarder).
pub fn hosts_toml_local() -> String {
    format!(
        r#"server = "http://{NODE_IP}:{REGISTRY_PORT}"

[host."http://{NODE_IP}:{REGISTRY_PORT}"]
  capabilities = ["pull", "resolve"]
"#
    )
}

/// The annotation that tells the kind backend (existing-cluster mode) which upstream hosts
/// the node pulls through the advertised registry (same name as
/// `cnpg_ext_kind::registry_hosting::MIRRORS_ANNOTATION`).
pub const MIRRORS_ANNOTATION: &str = "cnpg-ext-harness.io/mirrors";

/// KEP-1755's `kube-public/local-registry-hosting`: the node's registry as the host reaches it
/// (`127.0.0.1:<registry_port>`, the forwarder) and as containerd does, plus
/// [`MIRRORS_ANNOTATION`] listing [`MIRRORED_HOSTS`] (served under `/v2/<host>/...`): how
/// `run --backend kind --kubeconfig <node>` finds where to push the scenario images.
pub fn local_registry_hosting(registry_port: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: local-registry-hosting
  namespace: kube-public
  labels:
    app.kubernetes.io/managed-by: cnpg-ext-node
  annotations:
    {MIRRORS_ANNOTATION}: "{mirrors}"
data:
  localRegistryHosting.v1: |
    host: "127.0.0.1:{registry_port}"
    hostFromContainerRuntime: "{NODE_IP}:{REGISTRY_PORT}"
    help: "docs/k8s-node.md of cnpg-ext-harness"
"#,
        mirrors = MIRRORED_HOSTS.join(",")
    )
}

pub fn cni_conflist(state: &Path) -> String {
    format!(
        r#"{{
  "cniVersion": "1.0.0",
  "name": "cnpg-ext-node",
  "plugins": [
    {{
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {{
        "type": "host-local",
        "dataDir": "{data}",
        "ranges": [[{{ "subnet": "{POD_CIDR}" }}]],
        "routes": [{{ "dst": "0.0.0.0/0" }}]
      }}
    }},
    {{ "type": "portmap", "capabilities": {{ "portMappings": true }} }}
  ]
}}
"#,
        data = p(state, "cni/ipam"),
    )
}

/// KubeletConfiguration: cgroupfs on cgroup v1 (`failCgroupV1: false`), pods under
/// [`CGROUP_ROOT`], every directory in the state directory, CoreDNS on the node IP,
/// `ImageVolume` on.
pub fn kubelet_config(state: &Path) -> String {
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {NODE_IP}
port: 10250
readOnlyPort: 0
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: {ca}
authorization:
  mode: Webhook
tlsCertFile: {crt}
tlsPrivateKeyFile: {key}
cgroupDriver: cgroupfs
cgroupRoot: /{CGROUP_ROOT}
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://{sock}
clusterDomain: cluster.local
clusterDNS:
- {NODE_IP}
resolvConf: {resolv}
podLogsDir: {logs}
staticPodPath: ""
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  imagefs.available: 1%
  nodefs.inodesFree: 1%
protectKernelDefaults: false
makeIPTablesUtilChains: false
featureGates:
  ImageVolume: true
"#,
        ca = p(state, "pki/ca.crt"),
        crt = p(state, "pki/kubelet.crt"),
        key = p(state, "pki/kubelet.key"),
        sock = containerd_socket(state),
        resolv = p(state, "resolv.conf"),
        logs = p(state, "pods-logs"),
    )
}

pub fn kubelet_args(state: &Path) -> Vec<String> {
    vec![
        format!("--config={}", p(state, "kubelet.yaml")),
        format!("--kubeconfig={}", p(state, "kubeconfig/kubelet")),
        format!("--root-dir={}", p(state, "kubelet")),
        format!("--hostname-override={}", NODE_NAME),
        format!("--node-ip={NODE_IP}"),
        "--v=1".into(),
    ]
}

pub fn kube_proxy_config(state: &Path) -> String {
    format!(
        r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: {kc}
mode: iptables
clusterCIDR: {POD_CIDR}
hostnameOverride: {node}
bindAddress: {NODE_IP}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
iptables:
  localhostNodePorts: false
conntrack:
  # The node is a network namespace: the global conntrack table size is not ours to set.
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
"#,
        kc = p(state, "kubeconfig/kube-proxy"),
        node = NODE_NAME,
    )
}

/// CoreDNS on the node IP: the cluster's names from the API server; nothing else resolves
/// (the node has no upstream).
pub fn corefile(state: &Path) -> String {
    format!(
        r#".:53 {{
    bind {NODE_IP}
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kc} cnpg-ext-node
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
}}
"#,
        kc = p(state, "kubeconfig/admin-internal"),
    )
}

/// The registry (Debian's docker-registry, distribution 2.8) on the node IP.
pub fn registry_config(state: &Path) -> String {
    format!(
        r#"version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {dir}
  delete:
    enabled: true
http:
  addr: 0.0.0.0:{REGISTRY_PORT}
"#,
        dir = p(state, "registry"),
    )
}

/// The resolv.conf the kubelet gives pods with `dnsPolicy: Default` (no upstream here).
pub fn resolv_conf() -> String {
    format!("nameserver {NODE_IP}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_runs_on_cgroup_v1_with_image_volumes() {
        let c = kubelet_config(Path::new("/s"));
        assert!(c.contains("failCgroupV1: false"));
        assert!(c.contains("cgroupDriver: cgroupfs"));
        assert!(c.contains("ImageVolume: true"));
        assert!(c.contains("containerRuntimeEndpoint: unix:///s/containerd/containerd.sock"));
        assert!(apiserver_args(Path::new("/s")).contains(&"--feature-gates=ImageVolume=true".to_string()));
    }

    #[test]
    fn containerd_uses_the_hosts_runc_and_our_pause() {
        let c = containerd_config(Path::new("/s"), "/usr/sbin/runc", "/usr/lib/cni");
        assert!(c.contains(r#"BinaryName = "/usr/sbin/runc""#));
        assert!(c.contains("SystemdCgroup = false"));
        assert!(c.contains(&format!(r#"sandbox = "{PAUSE_IMAGE}""#)));
        assert!(c.contains(r#"config_path = "/s/containerd/certs.d""#));
    }

    #[test]
    fn the_registry_is_advertised_with_its_mirrors() {
        let c = local_registry_hosting(15000);
        assert!(c.contains("name: local-registry-hosting\n  namespace: kube-public"));
        assert!(c.contains(r#"cnpg-ext-harness.io/mirrors: "ghcr.io,docker.io,quay.io,registry.k8s.io""#));
        assert!(c.contains(r#"host: "127.0.0.1:15000""#));
    }

    #[test]
    fn mirror_keeps_the_source_host_in_the_path() {
        let h = hosts_toml("ghcr.io");
        assert!(h.contains("http://10.250.0.2:5000/v2/ghcr.io"));
        assert!(h.contains("override_path = true"));
    }
}
