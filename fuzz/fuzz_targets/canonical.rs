//! The canonical decoding of every hashed or signed type.
//! The input's layout is documented on [`slidemesh_fuzz::targets::canonical`].
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The outcome matters to the seed generator only; here, only a panic is a finding.
    let _ = slidemesh_fuzz::targets::canonical(data);
});
