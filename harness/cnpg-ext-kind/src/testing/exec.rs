//! The canned pod exec of the fake (tests), and its answers to the postmaster probe.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::exec::ExecOutput;
use cnpg_ext_model::backend::BackendError;

use super::FakeApi;

/// Answers the postmaster probe from the pods a fake API serves now.
struct Postmasters {
    api: FakeApi,
    /// Settings of a pod that carries none ([`super::fixtures::SETTINGS`]).
    settings: BTreeMap<String, String>,
}

/// Canned outputs per pod (tests): the last command is recorded.
#[derive(Default)]
pub struct FakeExec {
    pub outputs: Mutex<BTreeMap<String, ExecOutput>>,
    pub calls: Mutex<Vec<(String, String, Vec<String>)>>,
    postmasters: Mutex<Option<Postmasters>>,
}

impl FakeExec {
    pub fn with(pod: &str, stdout: &str) -> Self {
        let f = FakeExec::default();
        f.set(pod, stdout);
        f
    }
    pub fn set(&self, pod: &str, stdout: &str) {
        self.outputs.lock().unwrap().insert(
            pod.to_string(),
            ExecOutput { stdout: stdout.into(), stderr: String::new(), success: true, message: None },
        );
    }

    /// Answers the postmaster probe (`psql`, `crate::postmaster::probe_command`) of a pod
    /// from the pod object `api` serves at that moment ([`super::fixtures::postmaster_of`];
    /// `settings` for a pod that carries none), as a real pod would answer from its
    /// running postmaster; a pod that does not exist fails the way psql does.
    pub fn with_postmasters(api: &FakeApi, settings: BTreeMap<String, String>) -> Self {
        let f = FakeExec::default();
        *f.postmasters.lock().unwrap() = Some(Postmasters { api: api.clone(), settings });
        f
    }
}

#[async_trait::async_trait]
impl crate::exec::PodExec for FakeExec {
    async fn exec(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        command: &[String],
    ) -> Result<ExecOutput, BackendError> {
        self.calls.lock().unwrap().push((pod.to_string(), container.to_string(), command.to_vec()));
        if command.first().map(String::as_str) == Some("psql") {
            if let Some(pm) = self.postmasters.lock().unwrap().as_ref() {
                let path = super::fixtures::pods_path(namespace);
                return Ok(match pm.api.object(&path, pod) {
                    Some(obj) => ExecOutput {
                        stdout: super::fixtures::postmaster_of(&obj, &pm.settings).to_output(),
                        stderr: String::new(),
                        success: true,
                        message: None,
                    },
                    None => ExecOutput {
                        stdout: String::new(),
                        stderr: format!("pods \"{pod}\" not found"),
                        success: false,
                        message: Some("NotFound".into()),
                    },
                });
            }
        }
        self.outputs
            .lock()
            .unwrap()
            .get(pod)
            .cloned()
            .ok_or_else(|| BackendError::Failed(format!("exec in pod {namespace}/{pod}: pod not found (fake)")))
    }
}
