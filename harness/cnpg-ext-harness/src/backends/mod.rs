//! Where scenarios run. `kind` (in the `cnpg-ext-kind` crate) has the real operator; `local`
//! and `container` are runtimes under one stand-in operator (`standin`).

#[cfg(feature = "container")]
pub(crate) mod container;
pub(crate) mod local;
pub(crate) mod standin;
