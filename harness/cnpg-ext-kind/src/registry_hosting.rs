//! Existing-cluster mode: a registry the cluster advertises as a mirror of upstream hosts.
//!
//! KEP-1755 has clusters advertise their local registry in the ConfigMap
//! `kube-public/local-registry-hosting` (`localRegistryHosting.v1: {host: …}`). The
//! annotation [`MIRRORS_ANNOTATION`] adds what the KEP does not say: that the nodes' container
//! runtime pulls the listed upstream hosts through that registry, under
//! `<registry>/v2/<upstream host>/<path>` (containerd `hosts.toml` with `override_path`, the
//! layout of `--registry` too). `cnpg-ext-harness k8s up` publishes both; given such a
//! cluster, the backend pushes every scenario image there under
//! `<registry>/<upstream host>/<path>:<tag>`, and the manifests keep the references users
//! write. A cluster without the annotation gets nothing pushed (its nodes must pull).

use std::path::PathBuf;

use cnpg_ext_model::backend::BackendError;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;

use crate::errors::kube_error;
use crate::node_mirror::{mirror_target_at, push_archives, MirrorTarget};

pub const HOSTING_NAMESPACE: &str = "kube-public";
pub const HOSTING_CONFIGMAP: &str = "local-registry-hosting";
pub const HOSTING_KEY: &str = "localRegistryHosting.v1";
/// Comma-separated upstream hosts the nodes pull through the advertised registry.
pub const MIRRORS_ANNOTATION: &str = "cnpg-ext-harness.io/mirrors";

/// A registry the cluster's nodes use as a mirror, reachable from here at `host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvertisedMirror {
    /// `localRegistryHosting.v1`'s `host`: how this machine reaches the registry.
    pub host: String,
    /// Upstream registry hosts whose pulls the nodes send there.
    pub mirrors: Vec<String>,
}

impl AdvertisedMirror {
    /// From the ConfigMap: `None` when it carries no mirror annotation (a plain KEP-1755
    /// registry: images there would need other references); an error when it is malformed.
    pub fn from_configmap(cm: &ConfigMap) -> Result<Option<AdvertisedMirror>, BackendError> {
        let Some(list) = cm.metadata.annotations.as_ref().and_then(|a| a.get(MIRRORS_ANNOTATION)) else {
            return Ok(None);
        };
        let bad = |why: String| {
            BackendError::Unusable(format!(
                "ConfigMap {HOSTING_NAMESPACE}/{HOSTING_CONFIGMAP}: {why} (written by `cnpg-ext-harness k8s up`; recreate the node, or remove the annotation {MIRRORS_ANNOTATION})"
            ))
        };
        let text = cm
            .data
            .as_ref()
            .and_then(|d| d.get(HOSTING_KEY))
            .ok_or_else(|| bad(format!("annotation {MIRRORS_ANNOTATION} but no data key {HOSTING_KEY}")))?;
        let v: serde_json::Value = serde_saphyr::from_str(text).map_err(|e| bad(format!("{HOSTING_KEY} is not YAML: {e}")))?;
        let host = v
            .get("host")
            .and_then(serde_json::Value::as_str)
            .filter(|h| !h.trim().is_empty())
            .ok_or_else(|| bad(format!("{HOSTING_KEY} has no `host`")))?;
        let mirrors: Vec<String> =
            list.split(',').map(str::trim).filter(|h| !h.is_empty()).map(String::from).collect();
        if mirrors.is_empty() {
            return Err(bad(format!("annotation {MIRRORS_ANNOTATION} lists no host")));
        }
        Ok(Some(AdvertisedMirror { host: host.trim().to_string(), mirrors }))
    }

    /// Where each image goes; an image of a host not mirrored is an error naming it.
    pub fn targets(&self, images: &[(String, PathBuf)]) -> Result<Vec<(MirrorTarget, PathBuf)>, BackendError> {
        images
            .iter()
            .map(|(reference, archive)| {
                let t = mirror_target_at(reference, &self.host)?;
                if !self.mirrors.iter().any(|m| m == &t.host) {
                    return Err(BackendError::Unusable(format!(
                        "image {reference}: its registry {} is not one the cluster pulls through {} (annotation {MIRRORS_ANNOTATION}: {}); the nodes could not pull it",
                        t.host,
                        self.host,
                        self.mirrors.join(",")
                    )));
                }
                Ok((t, archive.clone()))
            })
            .collect()
    }

    /// Pushes every image (docker archives) to the registry.
    pub async fn push(&self, images: &[(String, PathBuf)]) -> Result<Vec<MirrorTarget>, BackendError> {
        let targets = self.targets(images)?;
        push_archives(&targets).await?;
        Ok(targets.into_iter().map(|(t, _)| t).collect())
    }
}

/// The advertised mirror of the cluster, if it has one.
pub async fn discover(client: &kube::Client) -> Result<Option<AdvertisedMirror>, BackendError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), HOSTING_NAMESPACE);
    let cm = api
        .get_opt(HOSTING_CONFIGMAP)
        .await
        .map_err(|e| kube_error(format!("reading ConfigMap {HOSTING_NAMESPACE}/{HOSTING_CONFIGMAP}"), e))?;
    match cm {
        Some(cm) => AdvertisedMirror::from_configmap(&cm),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cm(annotation: Option<&str>, data: Option<&str>) -> ConfigMap {
        let mut c = ConfigMap::default();
        if let Some(a) = annotation {
            c.metadata.annotations = Some([(MIRRORS_ANNOTATION.to_string(), a.to_string())].into());
        }
        if let Some(d) = data {
            c.data = Some([(HOSTING_KEY.to_string(), d.to_string())].into());
        }
        c
    }

    #[test]
    fn reads_the_advertised_mirror() {
        let m = AdvertisedMirror::from_configmap(&cm(Some("ghcr.io, docker.io"), Some("host: \"127.0.0.1:15000\"\n")))
            .unwrap()
            .unwrap();
        assert_eq!(m.host, "127.0.0.1:15000");
        assert_eq!(m.mirrors, ["ghcr.io", "docker.io"]);
        // A plain KEP-1755 registry: nothing to push to.
        assert_eq!(AdvertisedMirror::from_configmap(&cm(None, Some("host: \"localhost:5001\"\n"))).unwrap(), None);
        // Malformed: said so, naming the ConfigMap.
        for bad in [cm(Some("ghcr.io"), None), cm(Some("ghcr.io"), Some("help: x\n")), cm(Some(" , "), Some("host: a\n"))] {
            let e = AdvertisedMirror::from_configmap(&bad).unwrap_err();
            assert!(e.to_string().contains("kube-public/local-registry-hosting"), "{e}");
        }
    }

    #[test]
    fn images_go_under_their_upstream_host() {
        let m = AdvertisedMirror { host: "127.0.0.1:15000".into(), mirrors: vec!["ghcr.io".into(), "docker.io".into()] };
        let t = m
            .targets(&[
                ("ghcr.io/cloudnative-pg/pgvector:0.8.6-18-trixie".into(), "/a.tar".into()),
                ("busybox:1".into(), "/b.tar".into()),
            ])
            .unwrap();
        assert_eq!(t[0].0.push, "127.0.0.1:15000/ghcr.io/cloudnative-pg/pgvector:0.8.6-18-trixie");
        assert_eq!(t[1].0.push, "127.0.0.1:15000/docker.io/library/busybox:1");
        let e = m.targets(&[("quay.io/x/y:1".into(), "/c.tar".into())]).unwrap_err();
        assert!(e.to_string().contains("quay.io") && e.to_string().contains(MIRRORS_ANNOTATION), "{e}");
    }
}
