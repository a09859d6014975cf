//! Images in one room: references resolved and pulled from registries ([`pull`]), built or
//! unpacked once per run into a content-addressed store ([`store`]).

pub(crate) mod pull;
pub(crate) mod store;
