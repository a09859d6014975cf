//! Test support (also used by the harness's CLI tests): a real registry on 127.0.0.1 —
//! Debian's `docker-registry` (distribution 2.8) with a temporary config, optionally behind
//! htpasswd basic auth — and pushes with `skopeo`. Not for production use.
//!
//! A test that cannot run (a tool missing) follows the one skip rule ([`require`], over
//! [`crate::cannot_run`] with [`crate::REQUIRE_REGISTRY`]).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The tools the registry tests need.
pub const TOOLS: &[&str] = &["docker-registry", "skopeo", "htpasswd"];

/// `None` when `tools` are installed; else the skip (a failure under `CI=true` or with
/// `CNPG_EXT_HARNESS_REQUIRE_REGISTRY` set).
pub fn require(tools: &[&str]) -> Option<()> {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !on_path(t)).collect();
    if missing.is_empty() {
        return Some(());
    }
    crate::cannot_run(
        &format!("{} not installed (apt-get install docker-registry skopeo apache2-utils)", missing.join(", ")),
        Some(crate::REQUIRE_REGISTRY),
    );
    None
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file())).unwrap_or(false)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Registry {
    pub addr: String,
    pub root: PathBuf,
    pub creds: Option<(String, String)>,
    /// Token mode: the token server (stopped with the registry) and a valid token.
    pub token: Option<String>,
    /// TLS mode: the CA that signed the registry's certificate for 127.0.0.1.
    pub ca: Option<PathBuf>,
    token_server: Option<TokenServer>,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry; with `creds`, behind htpasswd basic auth.
    pub fn start(creds: Option<(&str, &str)>) -> Registry {
        Self::start_with(creds, false, false)
    }

    /// Starts an anonymous registry serving HTTPS with a certificate for 127.0.0.1 signed by
    /// a throwaway CA (made with `openssl`; see [`Registry::ca`]).
    pub fn start_tls() -> Registry {
        Self::start_with(None, false, true)
    }

    /// Starts a registry behind bearer-token auth: a token server on 127.0.0.1 hands out an
    /// RS256 JWT (signed with `openssl`) for `user`:`pass` over basic auth, and refuses others.
    pub fn start_token(user: &str, pass: &str) -> Registry {
        Self::start_with(Some((user, pass)), true, false)
    }

    fn start_with(creds: Option<(&str, &str)>, token: bool, tls: bool) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("storage");
        std::fs::create_dir_all(&root).unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            root.display()
        );
        let mut ca = None;
        if tls {
            // A CA, and a server certificate for 127.0.0.1 signed by it.
            let d = dir.path();
            self_signed(d, "ca.key", "ca.crt", "cnpg-ext-test-ca");
            openssl(
                &[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    "tls.key",
                    "-out",
                    "tls.csr",
                    "-subj",
                    "/CN=127.0.0.1",
                ],
                d,
            );
            std::fs::write(
                d.join("ext.cnf"),
                "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
            )
            .unwrap();
            openssl(
                &[
                    "x509",
                    "-req",
                    "-in",
                    "tls.csr",
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    "tls.crt",
                    "-days",
                    "2",
                    "-extfile",
                    "ext.cnf",
                ],
                d,
            );
            cfg.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                dir.path().join("tls.crt").display(),
                dir.path().join("tls.key").display()
            ));
            ca = Some(dir.path().join("ca.crt"));
        }
        let mut token_server = None;
        if let (Some((u, p)), true) = (creds, token) {
            let t = TokenServer::start(dir.path(), u, p);
            cfg.push_str(&format!(
                "auth:\n  token:\n    realm: http://{}/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
                t.addr,
                dir.path().join("cert.pem").display()
            ));
            token_server = Some(t);
        } else if let Some((u, p)) = creds {
            let htpasswd = dir.path().join("htpasswd");
            let st = Command::new("htpasswd")
                .args(["-B", "-b", "-c"])
                .arg(&htpasswd)
                .args([u, p])
                .stderr(Stdio::null())
                .status()
                .unwrap();
            assert!(st.success(), "htpasswd failed");
            cfg.push_str(&format!("auth:\n  htpasswd:\n    realm: test\n    path: {}\n", htpasswd.display()));
        }
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry starts");
        let mut reg = Registry {
            addr,
            root,
            creds: creds.map(|(u, p)| (u.to_string(), p.to_string())),
            token: token_server.as_ref().map(|t| t.token.clone()),
            token_server,
            ca,
            child,
            _dir: dir,
        };
        reg.wait_ready();
        reg
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                let log = std::fs::read_to_string(self._dir.path().join("registry.log")).unwrap_or_default();
                panic!("docker-registry exited ({st}): {log}");
            }
            if let Ok(mut s) = TcpStream::connect(&self.addr) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
                let mut buf = [0u8; 12];
                if s.read(&mut buf).map(|n| n > 0).unwrap_or(false) {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("docker-registry did not answer on {} within 20 s", self.addr);
    }

    /// Pushes an OCI layout (every manifest in it with `--all`) as `repo:tag`.
    pub fn push(&self, layout: &Path, repo: &str, tag: &str) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["--insecure-policy", "copy", "-q", "--all", "--dest-tls-verify=false"]);
        if let Some((u, p)) = &self.creds {
            cmd.arg(format!("--dest-creds={u}:{p}"));
        }
        let out = cmd
            .arg(format!("oci:{}", layout.display()))
            .arg(format!("docker://{}/{repo}:{tag}", self.addr))
            .output()
            .unwrap();
        assert!(out.status.success(), "skopeo copy failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The registry's stored copy of a blob (to damage it).
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.root.join("docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(t) = &self.token_server {
            t.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

const SERVICE: &str = "cnpg-ext-test-registry";
const ISSUER: &str = "cnpg-ext-test-issuer";

/// A minimal token endpoint (the distribution token protocol): `GET /token` with the right
/// basic credentials answers `{"token": JWT}`; anything else 401.
struct TokenServer {
    addr: String,
    token: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A self-signed certificate (`cert`) and its RSA key (`key`) in `dir`, valid for two days.
fn self_signed(dir: &Path, key: &str, cert: &str, common_name: &str) {
    let subject = format!("/CN={common_name}");
    let args = [
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", &subject,
    ];
    openssl(&args, dir);
}

impl TokenServer {
    fn start(dir: &Path, user: &str, pass: &str) -> TokenServer {
        use base64::Engine as _;
        // A self-signed issuer certificate: the registry trusts it as its root bundle, and
        // the token carries it in `x5c`.
        self_signed(dir, "key.pem", "cert.pem", "cnpg-ext-test-issuer");
        openssl(&["x509", "-in", "cert.pem", "-outform", "DER", "-out", "cert.der"], dir);
        let der = std::fs::read(dir.join("cert.der")).unwrap();
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [base64::engine::general_purpose::STANDARD.encode(der)]});
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": user, "aud": SERVICE,
            "exp": now + 3600, "nbf": now - 60, "iat": now - 60, "jti": format!("t{now}"),
            "access": [{"type": "repository", "name": "*", "actions": ["pull", "push"]},
                       {"type": "repository", "name": "team/priv", "actions": ["pull", "push"]}],
        });
        let input = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
        std::fs::write(dir.join("jwt.in"), &input).unwrap();
        openssl(&["dgst", "-sha256", "-sign", "key.pem", "-out", "jwt.sig", "jwt.in"], dir);
        let token = format!("{input}.{}", b64url(&std::fs::read(dir.join("jwt.sig")).unwrap()));

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let expected = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")));
        let (t, st) = (token.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((mut c, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = c.set_nonblocking(false);
                let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&req);
                let ok = text.lines().any(|l| {
                    l.split_once(':')
                        .is_some_and(|(name, v)| name.eq_ignore_ascii_case("authorization") && v.trim() == expected)
                });
                let (status, body) = if ok {
                    ("200 OK", serde_json::json!({"token": t, "access_token": t, "expires_in": 3600}).to_string())
                } else {
                    (
                        "401 Unauthorized",
                        r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#.to_string(),
                    )
                };
                let _ = write!(
                    c,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        TokenServer { addr, token, stop }
    }
}

/// A small extension tree: `share/extension/<name>.control` plus `payload` bytes in `lib/`.
pub fn tree(dir: &Path, name: &str, payload: &[u8]) -> PathBuf {
    let t = dir.join(format!("tree-{name}"));
    std::fs::create_dir_all(t.join("share/extension")).unwrap();
    std::fs::create_dir_all(t.join("lib")).unwrap();
    std::fs::write(
        t.join(format!("share/extension/{name}.control")),
        format!("default_version = '1.0'\ncomment = '{name}'\n"),
    )
    .unwrap();
    std::fs::write(t.join(format!("lib/{name}.data")), payload).unwrap();
    t
}

/// A single-platform OCI layout for `arch`.
pub fn layout(dir: &Path, name: &str, arch: &str, payload: &[u8]) -> (PathBuf, String) {
    let t = tree(dir, &format!("{name}-{arch}"), payload);
    let mut opts = cnpg_ext_images::BuildOptions::new(format!("example.org/{name}:1"));
    opts.arch = arch.to_string();
    let out = dir.join(format!("layout-{name}-{arch}"));
    let built = cnpg_ext_images::build_layout(&t, &opts, &out).unwrap();
    (out, built.manifest_digest)
}

/// An OCI layout whose `index.json` names one image index over one image per arch.
pub fn multi_arch_layout(dir: &Path, name: &str, arches: &[&str]) -> PathBuf {
    let out = dir.join(format!("multi-{name}"));
    let blobs = out.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let mut entries = Vec::new();
    for arch in arches {
        let (l, digest) = layout(dir, name, arch, arch.as_bytes());
        for e in std::fs::read_dir(l.join("blobs/sha256")).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), blobs.join(e.file_name())).unwrap();
        }
        let size = std::fs::metadata(blobs.join(digest.trim_start_matches("sha256:"))).unwrap().len();
        entries.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest, "size": size,
            "platform": {"os": "linux", "architecture": arch},
        }));
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    }))
    .unwrap();
    let index_digest = cnpg_ext_images::sha256_digest(&index);
    std::fs::write(blobs.join(index_digest.trim_start_matches("sha256:")), &index).unwrap();
    let top = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": index_digest, "size": index.len(),
        }],
    });
    std::fs::write(out.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    std::fs::write(out.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    out
}
