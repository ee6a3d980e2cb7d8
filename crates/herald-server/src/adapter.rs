//! The adapter seam. The Redis implementation lives in [`redis`]; this file only re-exports
//! it while the seam is being cut (the next commit replaces it with the traits).

pub mod bus;
mod redis;

pub use self::redis::*;
