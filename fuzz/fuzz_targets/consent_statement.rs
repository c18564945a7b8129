//! The owner's signed consent statement for a slide.
//! The input's layout is documented on [`slidemesh_fuzz::targets::consent_statement`].
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The outcome matters to the seed generator only; here, only a panic is a finding.
    let _ = slidemesh_fuzz::targets::consent_statement(data);
});
