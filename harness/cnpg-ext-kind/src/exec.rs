//! Commands inside instance pods, behind a small trait so that tests can fake them
//! (exec over the websocket API is hard to fake; its output parsing is what matters).


use async_trait::async_trait;
use cnpg_ext_model::backend::BackendError;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams};
use tokio::io::AsyncReadExt;

use crate::errors::kube_error;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecOutput {
    pub stdout: String,
    pub stderr: String,
    /// The command exited 0.
    pub success: bool,
    /// The failure status message, when not successful.
    pub message: Option<String>,
}

#[async_trait]
pub trait PodExec: Send + Sync {
    async fn exec(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        command: &[String],
    ) -> Result<ExecOutput, BackendError>;
}

/// `pods/exec` over the websocket API.
pub struct KubeExec {
    pub client: kube::Client,
}

#[async_trait]
impl PodExec for KubeExec {
    async fn exec(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        command: &[String],
    ) -> Result<ExecOutput, BackendError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let ap = AttachParams::default()
            .container(container)
            .stdin(false)
            .stdout(true)
            .stderr(true);
        let what = format!("exec in pod {namespace}/{pod} (container {container})");
        let mut proc = api
            .exec(pod, command.to_vec(), &ap)
            .await
            .map_err(|e| kube_error(&what, e))?;
        let mut out_r = proc
            .stdout()
            .ok_or_else(|| BackendError::Failed(format!("{what}: no stdout stream")))?;
        let mut err_r = proc
            .stderr()
            .ok_or_else(|| BackendError::Failed(format!("{what}: no stderr stream")))?;
        let status = proc.take_status();
        let (mut out, mut err) = (String::new(), String::new());
        let (r1, r2) = tokio::join!(
            out_r.read_to_string(&mut out),
            err_r.read_to_string(&mut err)
        );
        r1.map_err(|e| BackendError::Failed(format!("{what}: reading stdout: {e}")))?;
        r2.map_err(|e| BackendError::Failed(format!("{what}: reading stderr: {e}")))?;
        let st = match status {
            Some(s) => s.await,
            None => None,
        };
        let _ = proc.join().await;
        let success = st
            .as_ref()
            .is_none_or(|s| s.status.as_deref() == Some("Success"));
        let message = st
            .filter(|_| !success)
            .map(|s| s.message.unwrap_or_default());
        Ok(ExecOutput {
            stdout: out,
            stderr: err,
            success,
            message,
        })
    }
}
