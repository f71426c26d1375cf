//! mpperf's parts: the echo service, the load generator and their packet format.

pub mod echo;
pub mod load;
pub mod packet;
