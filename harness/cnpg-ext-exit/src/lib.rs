//! The exit-code contract of every cnpg-ext command (`cnpg-ext-harness run|list|plan|matrix|
//! certify|kind|image`): one type, so that no binary can mean something else by a number.
//! Users script against these codes; extend, never renumber.

use std::fmt;

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Exit {
    /// 0: everything checked passed (a scenario, every matrix cell, a certification).
    Passed,
    /// 1: at least one scenario, cell or check failed.
    Failed,
    /// 2: invalid input (a scenario, manifest, fixture, matrix file, image or reference); the
    /// message names it.
    Invalid,
    /// 3: the environment cannot run it (PostgreSQL < 18, no usable engine, a registry that
    /// does not answer, nothing ran).
    Environment,
    /// 130: interrupted (Ctrl-C, SIGTERM); everything started was stopped first.
    Interrupted,
}

impl Exit {
    /// Every exit, in the order of its code.
    pub const ALL: [Exit; 5] = [Exit::Passed, Exit::Failed, Exit::Invalid, Exit::Environment, Exit::Interrupted];

    /// The process exit status.
    pub const fn code(self) -> i32 {
        match self {
            Exit::Passed => 0,
            Exit::Failed => 1,
            Exit::Invalid => 2,
            Exit::Environment => 3,
            Exit::Interrupted => 130,
        }
    }

    /// The exit a status stands for, if it is one of the contract's.
    pub fn from_code(code: i32) -> Option<Exit> {
        Exit::ALL.into_iter().find(|e| e.code() == code)
    }

    /// Passed or failed; anything else is not a verdict.
    pub const fn from_passed(passed: bool) -> Exit {
        if passed {
            Exit::Passed
        } else {
            Exit::Failed
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code())
    }
}

impl From<Exit> for i32 {
    fn from(e: Exit) -> i32 {
        e.code()
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code() as u8)
    }
}

/// So that `err.exit_code() == 2` reads as the number a script sees.
impl PartialEq<i32> for Exit {
    fn eq(&self, other: &i32) -> bool {
        self.code() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_documented_ones_and_round_trip() {
        let codes: Vec<i32> = Exit::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(codes, [0, 1, 2, 3, 130]);
        for e in Exit::ALL {
            assert_eq!(Exit::from_code(e.code()), Some(e));
            assert_eq!(e.to_string(), e.code().to_string());
        }
        assert_eq!(Exit::from_code(4), None);
        assert_eq!(Exit::from_passed(false), 1);
    }
}
