//! Run-level errors and the exit codes users script against ([`Exit`], shared by every
//! cnpg-ext command).

pub use cnpg_ext_exit::Exit;

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("invalid input: {0}")]
    Input(String),
    #[error("environment unusable: {0}")]
    Environment(String),
}

impl HarnessError {
    pub fn exit_code(&self) -> Exit {
        match self {
            HarnessError::Input(_) => Exit::Invalid,
            HarnessError::Environment(_) => Exit::Environment,
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
