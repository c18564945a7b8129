//! slidemesh-tools: operator and test tooling around slidemesh nodes.
//!
//! Layout:
//! - [`synth`]: the synthetic slide generator. Deterministic DICOM WSI pyramids (VL Whole
//!   Slide Microscopy, JPEG baseline tiles) with tissue-like content, so tests, demos and
//!   benchmarks have realistic slides without real patient data.
//!
//! The `slidemesh-tools` binary (src/main.rs, one module per subcommand under src/cmd/)
//! is a thin CLI over this library.
//!
//! Architecture invariant: nothing here depends on `slidemesh-node` or
//! `slidemesh-protocol`; the generator produces plain DICOM files, the same input a real
//! scanner gives a node, so ingest is tested against files it had no hand in making.

pub mod synth;
