//! The control protocol: framed requests and responses, and gossiped announcements.
//! The input's layout is documented on [`slidemesh_fuzz::targets::wire_control`].
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The outcome matters to the seed generator only; here, only a panic is a finding.
    let _ = slidemesh_fuzz::targets::wire_control(data);
});
