//! mpbridge's parts: the impairments and the relay loop.

pub mod impair;
pub mod relay;
