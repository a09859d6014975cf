//! Extension images into the engine: loaded from archives under run-private names, or pulled
//! by digest, and checked to be the image the harness verified.

use std::path::Path;
use std::sync::Mutex;

use super::engine::{strings, Engine, EngineKind};
use crate::error::HarnessError;
use crate::images::store::ImageStore;
use crate::plumbing::engine::image_store_lock;
use crate::plumbing::supervisor::ImageFault;

/// An extension image this run loaded into the engine (also known to the run's supervisor).
/// `loaded`: the id (bare hex) the engine holds under the reference once loaded and checked.
pub(super) type LoadedImage = crate::plumbing::supervisor::EngineImage;

/// Loads every image of the store from an archive the harness writes (a pulled `@sha256:`
/// reference: pulled by the engine from the same registry); archives are written several at
/// once, loaded one at a time (see [`load_archive`]).
pub(super) fn load_images(
    engine: &Engine,
    run_id: &str,
    store: &ImageStore,
    root: &Path,
    loaded: &Mutex<Vec<LoadedImage>>,
) -> Result<(), HarnessError> {
    let dir = root.join("archives");
    std::fs::create_dir_all(&dir).map_err(|e| HarnessError::Environment(format!("{}: {e}", dir.display())))?;
    let images: Vec<_> = store.all().collect();
    let present = engine.image_ids();
    let results: Vec<Result<(), HarnessError>> = std::thread::scope(|s| {
        let handles: Vec<_> = images
            .iter()
            .enumerate()
            .map(|(n, img)| {
                let dir = &dir;
                let reference = engine_reference(run_id, &img.reference);
                let previous = if reference.contains('@') {
                    // The listing has tags only.
                    held_by_digest(engine, &reference)
                } else {
                    match &present {
                        Some(map) => map.get(&normalize_reference(&reference)).cloned(),
                        None => engine.image_id(&reference),
                    }
                };
                s.spawn(move || load_one(engine, run_id, img, previous, &dir.join(format!("{n}.tar")), loaded))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("image load thread")).collect()
    });
    results.into_iter().collect()
}

/// The name under which the engine holds the image a scenario calls `reference` for this run.
///
/// An image loaded from an archive gets a name private to the run
/// (`localhost/cnpg-ext-run/<pid>-<run>:<hash of the reference>`): runs sharing an engine
/// (two tests of one process, a matrix's cells, two CI jobs on one host) never see, replace or
/// remove each other's images, and a user's image under the scenario's reference is never
/// touched. The mounts name it; what is mounted is checked to be the verified image either
/// way. A `…@sha256:` pin pulled by the engine keeps its own name: only a pull records it.
pub(crate) fn engine_reference(run_id: &str, reference: &str) -> String {
    engine_reference_of(std::process::id(), run_id, reference)
}

/// `engine_reference` as the harness process `pid` names it.
pub fn engine_reference_of(pid: u32, run_id: &str, reference: &str) -> String {
    use sha2::Digest;
    if reference.contains('@') {
        return reference.to_string();
    }
    let hash = hex::encode(sha2::Sha256::digest(reference.as_bytes()));
    format!("localhost/cnpg-ext-run/{pid}-{}:{}", run_id.to_ascii_lowercase(), &hash[..16])
}

pub(super) fn load_one(
    engine: &Engine,
    run_id: &str,
    img: &crate::images::store::StoredImage,
    previous: Option<String>,
    archive: &Path,
    loaded: &Mutex<Vec<LoadedImage>>,
) -> Result<(), HarnessError> {
    // A pulled `…@sha256:` reference is named by its digest, which only a pull from the
    // registry records in the engine; anything else is loaded from an archive of its layout.
    let pull = img.origin == cnpg_ext_model::scenario::ImageOrigin::Pull && img.reference.contains('@');
    let reference = engine_reference(run_id, &img.reference);
    if !pull {
        cnpg_ext_images::write_docker_archive(&img.source, &reference, archive)
            .map_err(|e| HarnessError::Input(format!("image `{}` ({}): {e}", img.reference, img.source.display())))?;
    }
    // Recorded (here and with the supervisor) before loading, so that an interrupted load is
    // cleaned up too, even if the harness dies.
    let mut record = LoadedImage {
        run_id: run_id.to_string(),
        reference: reference.clone(),
        previous: previous.clone(),
        loaded: None,
    };
    crate::plumbing::supervisor::watch_image(&record);
    loaded.lock().unwrap().push(record.clone());
    if pull {
        let mut args = strings(&["pull", "-q"]);
        if engine.kind == EngineKind::Podman && img.insecure_registry {
            args.push("--tls-verify=false".into());
        }
        args.push(img.reference.clone());
        engine.run_sync(&args).map_err(|e| {
            HarnessError::Environment(format!("cannot pull image `{}` into {}: {e}", img.reference, engine.name()))
        })?;
    } else {
        let fault = crate::plumbing::supervisor::image_fault();
        if fault == Some(ImageFault::ArchiveTruncated) {
            truncate_half(archive);
        }
        load_archive(engine, archive).map_err(|e| {
            HarnessError::Failed(format!("cannot load image `{}` into {}: {e}", img.reference, engine.name()))
        })?;
        if fault == Some(ImageFault::ReplacedAfterLoad) {
            replace_under(engine, &reference);
        }
    }
    // Proof of origin: what the engine now holds under the reference — and so what every
    // image mount of it shows — is the image the harness verified, unpacked and judges.
    let (id, engine_manifest) = engine_image(engine, &reference).map_err(|e| {
        HarnessError::Failed(format!("image `{}` is not in {} after loading it: {e}", img.reference, engine.name()))
    })?;
    let verified = (img.config_digest.as_str(), img.manifest_digest.as_str());
    if let Err(e) = same_image(engine.kind, pull, &reference, &id, engine_manifest.as_deref(), verified) {
        return Err(HarnessError::Failed(format!(
            "{e}: a container would mount another image than the one judged; remove it (`{} rmi {}`) and run again",
            engine.name(),
            reference
        )));
    }
    // Recorded for the report, and to give the reference back to a user's image afterwards
    // (bare hex, as `previous` is).
    record.loaded = Some(id.trim_start_matches("sha256:").to_string());
    crate::plumbing::supervisor::watch_image(&record);
    if let Some(l) = loaded.lock().unwrap().iter_mut().find(|l| l.reference == reference) {
        l.loaded = record.loaded.clone();
    }
    if previous.is_some() {
        tracing::warn!(reference = %img.reference, "an image with this reference existed before the run; it is re-tagged back afterwards");
    }
    let _ = std::fs::remove_file(archive);
    Ok(())
}

/// `load -i archive` under the engine's image lock ([`image_store_lock`]), and a load that
/// lost a race in the engine's store anyway (another program removing an image of the same
/// layers) tried again.
fn load_archive(engine: &Engine, archive: &Path) -> Result<String, String> {
    let _store = image_store_lock();
    let args = strings(&["load", "-q", "-i", &archive.display().to_string()]);
    let mut attempt = 1;
    loop {
        match engine.run_sync(&args) {
            Err(e) if attempt < LOAD_ATTEMPTS && lost_store_race(&e) => {
                tracing::warn!(archive = %archive.display(), attempt, "the engine's store lost a race while loading; loading again: {e}");
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Test-only fault (`image-archive-truncated`): the archive cut in half.
fn truncate_half(archive: &Path) {
    let len = std::fs::metadata(archive).map(|m| m.len()).unwrap_or(0);
    if let Err(e) = std::fs::OpenOptions::new().write(true).open(archive).and_then(|f| f.set_len(len / 2)) {
        tracing::warn!("fault injection: truncating {}: {e}", archive.display());
    }
}

/// Test-only fault (`image-replaced-after-load`): the image just loaded removed, and another
/// image the engine holds named `reference` instead.
fn replace_under(engine: &Engine, reference: &str) {
    let _store = image_store_lock();
    let other = engine.image_ids().and_then(|ids| {
        let ours = ids.get(&normalize_reference(reference)).cloned();
        ids.into_values().find(|id| Some(id) != ours.as_ref())
    });
    let Some(other) = other else {
        tracing::warn!("fault injection: the engine holds no other image to put under {reference}");
        return;
    };
    let _ = engine.run_quiet(&strings(&["rmi", reference]));
    if engine.run_quiet(&strings(&["tag", &other, reference])).is_none() {
        tracing::warn!("fault injection: tagging {other} as {reference} failed");
    }
}

/// How many times a load that lost a race in the engine's store is tried.
const LOAD_ATTEMPTS: u32 = 3;

/// Whether an engine error is a race in its image store (the layers removed under the load
/// while it committed the image), not a bad archive.
fn lost_store_race(error: &str) -> bool {
    error.contains("layer not known")
}

/// The engine's image under `reference`: its id and (podman) the digest of the manifest it
/// was stored with.
pub(super) fn engine_image(engine: &Engine, reference: &str) -> Result<(String, Option<String>), String> {
    let format = match engine.kind {
        EngineKind::Podman => "{{.Id}} {{.Digest}}",
        EngineKind::Docker => "{{.Id}}",
    };
    let out = engine.run_sync(&strings(&["image", "inspect", "--format", format, reference]))?;
    let mut words = out.split_whitespace();
    let id = words.next().ok_or_else(|| format!("`image inspect {reference}` printed no id"))?;
    let digest = |w: &str| format!("sha256:{}", w.trim_start_matches("sha256:"));
    Ok((digest(id), words.next().map(digest)))
}

/// Whether the engine's image (`id`, and the manifest digest podman stored it with) is the
/// image the harness verified: the same config (an image id is its config's digest: podman,
/// docker's classic store), or for a pulled image the same manifest (podman's id differs for
/// partially pulled zstd:chunked layers; docker's containerd store names an image by its
/// manifest, or by the index a pin names). Docker's containerd store gives a loaded archive
/// an id of its own making: not comparable, only recorded.
pub(super) fn same_image(
    kind: EngineKind,
    pulled: bool,
    reference: &str,
    id: &str,
    engine_manifest: Option<&str>,
    (config, manifest): (&str, &str),
) -> Result<(), String> {
    let pin = reference.split_once('@').map(|(_, d)| d);
    let same = id == config
        || match kind {
            EngineKind::Podman => pulled && engine_manifest == Some(manifest),
            EngineKind::Docker => !pulled || id == manifest || Some(id) == pin,
        };
    if same {
        Ok(())
    } else {
        Err(format!(
            "image `{reference}` in {} is {id}{}, not the image the harness verified (config {config}, manifest {manifest})",
            kind.name(),
            engine_manifest.map(|m| format!(" (manifest {m})")).unwrap_or_default(),
        ))
    }
}

/// The id of the image the engine holds under the digest reference `reference` itself, if
/// any. Not `image inspect` alone: podman resolves `any/name@sha256:D` to any image whose
/// digest is D, whatever its names (e.g. the same image loaded earlier under a tag); the
/// reference must be among the image's repo digests.
pub(super) fn held_by_digest(engine: &Engine, reference: &str) -> Option<String> {
    let format = "{{.Id}} {{json .RepoDigests}}";
    let out = engine.run_quiet(&strings(&["image", "inspect", "--format", format, reference]))?;
    let (id, digests) = out.trim().split_once(' ')?;
    let digests: Vec<String> = serde_json::from_str(digests).ok()?;
    let wanted = normalize_reference(reference);
    digests.iter().any(|d| normalize_reference(d) == wanted).then(|| id.trim_start_matches("sha256:").to_string())
}

/// `registry/repo:tag` as engines list it (`docker.io/library/` and `:latest` made explicit).
pub(super) fn normalize_reference(r: &str) -> String {
    let last = r.rsplit('/').next().unwrap_or(r);
    let mut out = if last.contains(':') || r.contains('@') { r.to_string() } else { format!("{r}:latest") };
    let first = out.split('/').next().unwrap_or("");
    let has_registry = out.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if !has_registry {
        out = if out.contains('/') { format!("docker.io/{out}") } else { format!("docker.io/library/{out}") };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{lost_store_race, same_image};
    use crate::plumbing::engine::EngineKind;

    const CONFIG: &str = "sha256:c0";
    const MANIFEST: &str = "sha256:m0";
    const PINNED: &str = "127.0.0.1:5000/ext/x@sha256:i0";

    fn check(kind: EngineKind, pulled: bool, id: &str, engine_manifest: Option<&str>) -> Result<(), String> {
        same_image(kind, pulled, PINNED, id, engine_manifest, (CONFIG, MANIFEST))
    }

    #[test]
    fn only_a_race_in_the_store_is_loaded_again() {
        // As podman 5 printed it in CI, two loads of the pgvector archive at once.
        let race = "Error: payload does not match any of the supported image formats:\n * oci: parsing \"localhost/dev/shm/x/0.tar\": invalid reference format\n * docker-archive: committing the finished image: creating image \"2e98\": layer not known";
        assert!(lost_store_race(race));
        for bad in [
            "Error: payload does not match any of the supported image formats:\n * docker-archive: unexpected EOF",
            "no space left on device",
        ] {
            assert!(!lost_store_race(bad), "{bad}");
        }
    }

    #[test]
    fn podman_holds_the_verified_image_when_its_id_is_the_config_digest() {
        assert!(check(EngineKind::Podman, true, CONFIG, Some("sha256:other")).is_ok());
        assert!(check(EngineKind::Podman, false, CONFIG, None).is_ok());
        // A partial (zstd:chunked) pull has an id of its own; the stored manifest decides.
        assert!(check(EngineKind::Podman, true, "sha256:x", Some(MANIFEST)).is_ok());
        // A loaded archive has no registry manifest to fall back on.
        assert!(check(EngineKind::Podman, false, "sha256:x", Some(MANIFEST)).is_err());
        let e = check(EngineKind::Podman, true, "sha256:x", Some("sha256:y")).unwrap_err();
        for part in [PINNED, "podman", "sha256:x", "sha256:y", CONFIG, MANIFEST] {
            assert!(e.contains(part), "{part}: {e}");
        }
    }

    #[test]
    fn docker_ids_may_name_the_manifest_or_the_pinned_index() {
        assert!(check(EngineKind::Docker, true, CONFIG, None).is_ok());
        assert!(check(EngineKind::Docker, true, MANIFEST, None).is_ok());
        assert!(check(EngineKind::Docker, true, "sha256:i0", None).is_ok());
        assert!(check(EngineKind::Docker, true, "sha256:x", None).is_err());
        // A loaded archive: an id docker's containerd store made up, only recorded.
        assert!(check(EngineKind::Docker, false, "sha256:x", None).is_ok());
    }
}
