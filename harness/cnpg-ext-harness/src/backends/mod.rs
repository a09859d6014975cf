//! Where scenarios run. `kind` (in the `cnpg-ext-kind` crate) has the real operator; `local`
//! and `container` are runtimes under one stand-in operator (`standin`).

pub(crate) mod container;
pub(crate) mod local;
pub(crate) mod standin;
