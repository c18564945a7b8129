//! Signed rosters, checked as a genesis and as the successor of a held roster.
//! The input's layout is documented on [`slidemesh_fuzz::targets::roster`].
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The outcome matters to the seed generator only; here, only a panic is a finding.
    let _ = slidemesh_fuzz::targets::roster(data);
});
