//! Images in one room: references resolved and pulled from registries ([`pull`]), built or
//! unpacked once per run into a content-addressed store ([`store`]).

pub mod pull;
pub mod store;
