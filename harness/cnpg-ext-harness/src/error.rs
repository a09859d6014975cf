//! Run-level errors and the exit codes users script against ([`Exit`], shared by every
//! cnpg-ext command).

pub use cnpg_ext_exit::Exit;

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("invalid input: {0}")]
    Input(String),
    #[error("environment unusable: {0}")]
    Environment(String),
    /// The run itself failed after the environment was found usable (the container engine
    /// answered its probe, then refused or mangled what the run gave it): exit 1, never 3,
    /// so that no test or script takes it for a missing engine.
    #[error("run failed: {0}")]
    Failed(String),
}

impl HarnessError {
    pub fn exit_code(&self) -> Exit {
        match self {
            HarnessError::Input(_) => Exit::Invalid,
            HarnessError::Environment(_) => Exit::Environment,
            HarnessError::Failed(_) => Exit::Failed,
        }
    }
}

impl From<cnpg_ext_model::InputError> for HarnessError {
    fn from(e: cnpg_ext_model::InputError) -> Self {
        HarnessError::Input(e.to_string())
    }
}

/// Locating, provisioning or copying PostgreSQL fails only for reasons of the machine.
impl From<cnpg_ext_pg::PgError> for HarnessError {
    fn from(e: cnpg_ext_pg::PgError) -> Self {
        HarnessError::Environment(e.to_string())
    }
}
