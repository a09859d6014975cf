//! The node's PKI, generated in process with rcgen (ECDSA P-256 keys):
//!
//! * `ca.crt/key` — the cluster CA (client CA of the API server and kubelet, signer of the
//!   controller-manager's CSR signer);
//! * `apiserver` — serving certificate for every name the API server is reached by;
//! * `kubelet` — the kubelet's serving certificate;
//! * client certificates: `admin` (system:masters), `controller-manager`, `scheduler`,
//!   `kubelet-client` (`system:node:<node>`), `kube-proxy`, `apiserver-kubelet-client`;
//! * `sa.key` / `sa.pub` — the service-account token key pair.

use crate::config::NODE_NAME;
use crate::util;
use crate::{NodeError, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use std::path::Path;

/// The names and addresses the API server's certificate is valid for.
pub fn apiserver_sans() -> Vec<String> {
    [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "localhost",
        "127.0.0.1",
        crate::config::NODE_IP,
        crate::config::SERVICE_API_IP,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Client certificates: (file stem, common name, organization).
pub const CLIENTS: &[(&str, &str, Option<&str>)] = &[
    ("admin", "kubernetes-admin", Some("system:masters")),
    ("controller-manager", "system:kube-controller-manager", None),
    ("scheduler", "system:kube-scheduler", None),
    ("kubelet-client", "system:node:cnpg-ext-node", Some("system:nodes")),
    ("kube-proxy", "system:kube-proxy", None),
    ("apiserver-kubelet-client", "kube-apiserver-kubelet-client", Some("system:masters")),
];

fn err(what: &str) -> impl Fn(rcgen::Error) -> NodeError + '_ {
    move |e| NodeError::failed(format!("generating {what}: {e}"))
}

fn params(cn: &str, org: Option<&str>, sans: Vec<String>) -> Result<CertificateParams> {
    let mut p = CertificateParams::new(sans).map_err(err(cn))?;
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    if let Some(o) = org {
        p.distinguished_name.push(DnType::OrganizationName, o);
    }
    Ok(p)
}

/// Writes the whole PKI into `dir` (created).
pub fn generate(dir: &Path) -> Result<()> {
    let ca_key = KeyPair::generate().map_err(err("the CA key"))?;
    let mut ca = params("cnpg-ext-node-ca", None, vec![])?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key).map_err(err("the CA"))?;
    util::write(&dir.join("ca.crt"), ca_cert.pem())?;
    util::write(&dir.join("ca.key"), ca_key.serialize_pem())?;
    let issuer = Issuer::new(ca, ca_key);

    let leaf = |stem: &str, p: CertificateParams, server: bool| -> Result<()> {
        let mut p = p;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        p.extended_key_usages = if server {
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth]
        } else {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        };
        let key = KeyPair::generate().map_err(err(stem))?;
        let cert = p.signed_by(&key, &issuer).map_err(err(stem))?;
        util::write(&dir.join(format!("{stem}.crt")), cert.pem())?;
        util::write(&dir.join(format!("{stem}.key")), key.serialize_pem())
    };
    leaf("apiserver", params("kube-apiserver", None, apiserver_sans())?, true)?;
    leaf(
        "kubelet",
        params(NODE_NAME, None, vec![NODE_NAME.into(), crate::config::NODE_IP.into(), "localhost".into()])?,
        true,
    )?;
    for (stem, cn, org) in CLIENTS {
        leaf(stem, params(cn, *org, vec![])?, false)?;
    }
    let sa = KeyPair::generate().map_err(err("the service-account key"))?;
    util::write(&dir.join("sa.key"), sa.serialize_pem())?;
    util::write(&dir.join("sa.pub"), sa.public_key_pem())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_every_file_as_pem() {
        let d = tempfile::tempdir().unwrap();
        generate(d.path()).unwrap();
        let mut stems: Vec<&str> = vec!["ca", "apiserver", "kubelet"];
        stems.extend(CLIENTS.iter().map(|c| c.0));
        for s in stems {
            let crt = std::fs::read_to_string(d.path().join(format!("{s}.crt"))).unwrap();
            assert!(crt.starts_with("-----BEGIN CERTIFICATE-----"), "{s}");
            let key = std::fs::read_to_string(d.path().join(format!("{s}.key"))).unwrap();
            assert!(key.contains("PRIVATE KEY"), "{s}");
        }
        assert!(std::fs::read_to_string(d.path().join("sa.pub")).unwrap().contains("PUBLIC KEY"));
    }
}
