//! Where scenarios run. `kind` (in the `cnpg-ext-kind` crate) has the real operator; `local`
//! and `container` are runtimes under one stand-in operator (`standin`).

pub mod container;
pub mod local;
pub mod standin;
