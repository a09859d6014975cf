//! `run --from-bundle FILE` for a `certify` bundle: the certification again, with the
//! command the bundle recorded, against the image digest it recorded, and whether the
//! verdict reproduced.
//!
//! The image is not in the bundle (only its digest): a registry reference is pulled again
//! pinned to that digest (`repo@sha256:…`); a layout or archive path is certified again if
//! it is still there, and a different digest there is a difference, not a silent pass.

use std::path::{Path, PathBuf};

use clap::Parser;

use crate::certify::CertifyArgs;
use crate::cli::{Cli, Command, RunArgs};
use crate::error::Exit;
use crate::reports::bundle::Bundle;

/// What the bundle's certification said: its verdict and the certified image's digest.
struct Recorded {
    verdict: String,
    digest: String,
}

fn recorded(bundle: &Bundle) -> Recorded {
    let cert: serde_json::Value =
        bundle.files.get("reports/certification.json").and_then(|b| serde_json::from_slice(b).ok()).unwrap_or_default();
    let digest = cert["manifest_digest"]
        .as_str()
        .map(str::to_string)
        .or_else(|| bundle.manifest.images.first().map(|i| i.manifest_digest.clone()))
        .unwrap_or_default();
    Recorded { verdict: bundle.manifest.verdict.clone(), digest }
}

/// The certify arguments of the bundle's recorded command.
fn recorded_args(path: &Path, bundle: &Bundle) -> Result<CertifyArgs, String> {
    match Cli::try_parse_from(&bundle.manifest.command) {
        Ok(Cli { command: Command::Certify(args), .. }) => Ok(args),
        Ok(_) => Err(format!("{}: its command.txt is not a `certify` command", path.display())),
        Err(e) => Err(format!("{}: its recorded command does not parse here: {e}", path.display())),
    }
}

/// `repo@<digest>` for a registry reference with a tag or a digest.
fn pinned(reference: &str, digest: &str) -> String {
    let repo = reference.split('@').next().unwrap_or(reference);
    let name_end = repo.rfind(':').filter(|c| !repo[*c..].contains('/')).unwrap_or(repo.len());
    format!("{}@{digest}", &repo[..name_end])
}

/// Reruns the certification `bundle` (opened from `path`) holds; `run` gives the report
/// directory, the registries and whether to show progress.
pub(crate) async fn rerun(path: &Path, bundle: Bundle, run: &RunArgs) -> Exit {
    let was = recorded(&bundle);
    let mut args = match recorded_args(path, &bundle) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Invalid;
        }
    };
    let image = args.image.display().to_string();
    if cnpg_ext_registry::looks_like_reference(&image) {
        if was.digest.starts_with("sha256:") {
            args.image = PathBuf::from(pinned(&image, &was.digest));
        }
    } else if !args.image.exists() {
        eprintln!(
            "error: {}: the certified image {image} is not here; the bundle records only its digest {} (certify it again where the image is, or push it to a registry and certify the reference)",
            path.display(),
            was.digest
        );
        return Exit::Invalid;
    }
    let scratch = match &run.report_dir {
        Some(_) => None,
        None => match tempfile::Builder::new().prefix("cnpg-ext-recertify-").tempdir() {
            Ok(d) => Some(d),
            Err(e) => {
                eprintln!("error: cannot create a report directory: {e}");
                return Exit::Environment;
            }
        },
    };
    args.report_dir = run.report_dir.clone().unwrap_or_else(|| scratch.as_ref().expect("made").path().to_path_buf());
    args.bundle = None;
    args.no_progress = run.no_progress;
    args.registries = run.registries.clone();
    println!(
        "certifying {} again, from {} (verdict then: {}; image {}; backend {})",
        args.image.display(),
        path.display(),
        was.verdict,
        was.digest,
        args.backend.name()
    );
    let cert = match crate::certify::certify(&args, std::env::args().collect()).await {
        Ok(out) => out.certification,
        Err(e) => {
            eprintln!("error: {e}");
            return e.exit_code();
        }
    };
    let verdict =
        serde_json::to_value(cert.verdict).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
    for r in &cert.reasons {
        println!("  {}", r.replace('\n', "\n  "));
    }
    let mut same = true;
    if verdict == was.verdict {
        println!("  verdict: {verdict} as in the bundle");
    } else {
        same = false;
        println!("  verdict: {} in the bundle, {verdict} now", was.verdict);
    }
    if cert.manifest_digest == was.digest {
        println!("  image: {} as in the bundle", was.digest);
    } else {
        same = false;
        println!("  image: {} in the bundle, {} now", was.digest, cert.manifest_digest);
    }
    if let Some(dir) = &run.report_dir {
        println!("report: {}", dir.join("certification.json").display());
    }
    if same {
        println!("verdict reproduced: {verdict} as in the bundle");
    } else {
        println!("verdict NOT reproduced (differences above)");
    }
    cert.verdict.exit_code()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_reference_is_pinned_to_the_recorded_digest() {
        let d = "sha256:abc";
        assert_eq!(super::pinned("localhost:5000/x/y:1.0", d), "localhost:5000/x/y@sha256:abc");
        assert_eq!(super::pinned("localhost:5000/x/y@sha256:old", d), "localhost:5000/x/y@sha256:abc");
        assert_eq!(super::pinned("ghcr.io/x/y", d), "ghcr.io/x/y@sha256:abc");
    }
}
