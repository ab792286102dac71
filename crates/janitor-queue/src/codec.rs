//! The identity codec: task arguments are the stored bytes, untouched.

use std::convert::Infallible;

use apalis_core::backend::codec::Codec;

/// Hands the worker the payload exactly as stored. Decoding it (and judging a malformed
/// one) is janitor's job: with the library's JSON codec a payload that does not decode is
/// a backend error, which ends the worker's stream — on every worker that fetches it.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawJson;

impl Codec<Vec<u8>> for RawJson {
    type Error = Infallible;
    type Compact = Vec<u8>;

    fn encode(&self, val: &Vec<u8>) -> Result<Vec<u8>, Infallible> {
        Ok(val.clone())
    }

    fn decode(&self, val: &Vec<u8>) -> Result<Vec<u8>, Infallible> {
        Ok(val.clone())
    }
}
