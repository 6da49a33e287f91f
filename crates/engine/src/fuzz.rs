//! What the in-crate property tests (`fuzz` modules beside the code they test) share.
//!
//! Each runs a CI-sized number of cases in `cargo test`; `RAT_FUZZ_CASES` sets the number
//! for every one of them (the soak run uses 1,000,000, in a release build).

use proptest::prelude::*;

/// Cases per property: `RAT_FUZZ_CASES` if set, else `ci`.
pub(crate) fn cases(ci: u32) -> u32 {
    std::env::var("RAT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ci)
}

/// A proptest config running [`cases`]`(ci)` cases, without writing regression files (a
/// failure prints its minimal input, which goes into a named test).
pub(crate) fn config(ci: u32) -> ProptestConfig {
    ProptestConfig {
        cases: cases(ci),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Bytes as a request head or path might hold them, weighted towards the ones HTTP
/// parsing and percent-decoding care about.
pub(crate) fn tricky_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        6 => proptest::char::range(' ', '~').prop_map(|c| c as u8),
        1 => Just(b'\r'),
        1 => Just(b'\n'),
        1 => Just(b'\0'),
        1 => Just(b'\t'),
        1 => Just(b'%'),
        1 => Just(b'/'),
        1 => Just(b':'),
        1 => any::<u8>(),
    ]
}
