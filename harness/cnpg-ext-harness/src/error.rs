//! Run-level errors and the exit codes users script against.

/// 0 every scenario passed.
pub const EXIT_PASSED: i32 = 0;
/// 1 at least one scenario failed.
pub const EXIT_FAILED: i32 = 1;
/// 2 invalid input: a scenario, manifest, fixture or image; the message names the file.
pub const EXIT_INVALID: i32 = 2;
/// 3 the environment cannot run the backend (PostgreSQL < 18, engine missing, ...).
pub const EXIT_ENVIRONMENT: i32 = 3;
/// 130 interrupted (Ctrl-C); everything started was stopped first.
pub const EXIT_INTERRUPTED: i32 = 130;

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("invalid input: {0}")]
    Input(String),
    #[error("environment unusable: {0}")]
    Environment(String),
}

impl HarnessError {
    pub fn exit_code(&self) -> i32 {
        match self {
            HarnessError::Input(_) => EXIT_INVALID,
            HarnessError::Environment(_) => EXIT_ENVIRONMENT,
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
