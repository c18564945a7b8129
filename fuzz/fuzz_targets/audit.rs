//! Audit checkpoints and receipts, and the consistency proofs behind co-signing.
//! The input's layout is documented on [`slidemesh_fuzz::targets::audit`].
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The outcome matters to the seed generator only; here, only a panic is a finding.
    let _ = slidemesh_fuzz::targets::audit(data);
});
