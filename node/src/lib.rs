//! slidemesh-node: the program a trust runs.
//!
//! Layout, one module per concern (dependencies point down this list):
//! - [`cli`]: the `slidemesh` operator commands; parses, validates, calls services.
//! - [`server`]: the running node (every service `serve` runs), started in-process and
//!   stopped with a graceful drain.
//! - [`api`]: the HTTP API and embedded web UI (axum); reads the store, never writes it.
//! - [`federation`]: what the node does for peers and for shared slides (grants checked,
//!   manifests and tiles served, remote tiles fetched through the cache), and its
//!   background loops (roster, outbox).
//! - [`referrals`]: referrals of a case's slides to another trust for an opinion: sending,
//!   receiving, each step of their life, both sides' histories; their marks as DICOM.
//! - [`research`]: research queries: each own slide's facts as query fields (indexed at
//!   ingest, joined with the LIMS), this site's answer under its policy and disclosure
//!   control, a query asked of every member at once, and approved projects' cohorts.
//! - [`access`]: who may see or do what: every decision in one pure function (grants,
//!   the owner's cedar policy, roles, the label and identity rules).
//! - [`net`]: the libp2p swarm task and its handle; knows nothing of the store.
//! - [`ingest`]: DICOM WSI files in, signed slides in the store out.
//! - [`scrub`]: re-verifying originals and cached tiles against their ids; repairing a
//!   tile's bytes in place (the copies to repair from come through `federation`).
//! - [`context`]: an opened node (config, key, store) and start-up housekeeping.
//! - [`store`]: redb tables and the object store of original files; tile reads.
//! - [`dicom_json`], [`dicom_build`]: reading DICOM JSON, writing DICOM data sets.
//! - [`config`], [`datadir`]: the operator's settings and the data directory's layout.
//! - [`metrics`]: what the node counts for its operators (Prometheus `/metrics`); any
//!   module may count, none reads it back.
//!
//! Architecture invariant: only `ingest` writes slides to the store, always in one redb
//! transaction per slide; HTTP handlers and the CLI hold handles, never raw tables.

pub mod access;
pub mod api;
pub mod audit;
pub mod cli;
pub mod config;
pub mod consent;
pub mod context;
pub mod datadir;
pub mod deidentify;
pub mod dicom_build;
pub mod dicom_json;
pub mod dimse;
pub mod federation;
pub mod ingest;
pub mod metrics;
pub mod net;
pub mod referrals;
pub mod research;
pub mod scrub;
pub mod server;
pub mod store;
#[cfg(test)]
mod testing;
