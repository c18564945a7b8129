//! Tidy checks over the source tree: the dependency direction ARCHITECTURE.md states holds,
//! and every Rust module starts with a `//!` line saying what it owns, so the next engineer
//! can enter any file from its first line.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() && name != "target" && name != "node_modules" {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") && name != "build.rs" {
            out.push(path);
        }
    }
}

#[test]
fn every_module_starts_with_a_doc_comment() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for krate in ["protocol", "node", "tools", "testnet", "tests"] {
        rust_files(&root.join(krate), &mut files);
    }
    assert!(
        files.len() > 30,
        "found only {} files: is the layout still protocol/ node/ tools/ testnet/ tests/?",
        files.len()
    );
    let missing: Vec<String> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            !text
                .lines()
                .find(|l| !l.trim().is_empty())
                .is_some_and(|l| l.starts_with("//!"))
        })
        .map(|f| f.strip_prefix(&root).unwrap_or(f).display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "modules without a leading //! line: {missing:#?}"
    );
}

/// The node's modules, each with the modules it must never reach (`crate::...` paths in
/// code, comments aside). Lower layers know nothing of the ones built on them: the store
/// keeps records and knows nothing of scanning or of the audit log's logic; the network
/// carries bytes and knows nothing of the store, grants, decisions or HTTP; access decides
/// and knows nothing of who asks over which transport.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "store",
        &[
            "ingest",
            "research",
            "audit",
            "access",
            "federation",
            "net",
            "api",
            "consent",
            "server",
            "scrub",
        ],
    ),
    (
        "net",
        &[
            "store",
            "access",
            "consent",
            "audit",
            "federation",
            "api",
            "ingest",
            "server",
        ],
    ),
    ("access", &["federation", "net", "api", "ingest", "server"]),
    ("consent", &["federation", "net", "api", "ingest", "server"]),
    (
        "audit",
        &["access", "federation", "net", "api", "ingest", "server"],
    ),
    ("ingest", &["federation", "net", "api", "access", "server"]),
    (
        "deidentify",
        &["store", "federation", "net", "api", "server"],
    ),
    // Referrals are kept and exchanged through the store's outbox; what decides who may
    // see them, and what delivers them, call in.
    (
        "referrals",
        &["federation", "net", "api", "ingest", "server", "cli"],
    ),
    // Research answers from the store and decides through access; what carries queries
    // between members (federation) and takes them from people (api, cli) calls in.
    (
        "research",
        &["federation", "net", "api", "ingest", "server", "cli"],
    ),
    // The scrub checks what the store holds (an original as ingest hashed it); repairs
    // that need peers are federation's.
    (
        "scrub",
        &["federation", "net", "api", "access", "server", "cli"],
    ),
    ("federation", &["api", "server", "cli"]),
    // The running node is built from the services; only the CLI starts it.
    ("api", &["server", "cli"]),
    ("server", &["cli"]),
];

#[test]
fn node_modules_depend_only_downwards() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../node/src");
    let mut breaches = Vec::new();
    for (module, forbidden) in LAYERS {
        let mut files = Vec::new();
        let dir = src.join(module);
        if dir.is_dir() {
            rust_files(&dir, &mut files);
        }
        let file = src.join(format!("{module}.rs"));
        if file.is_file() {
            files.push(file);
        }
        assert!(!files.is_empty(), "no module {module} in node/src");
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for target in *forbidden {
                    if code.contains(&format!("crate::{target}::"))
                        || code.contains(&format!("crate::{target};"))
                        || code.contains(&format!("crate::{target}::{{"))
                    {
                        breaches.push(format!(
                            "{}:{}: {module} reaches {target}: {}",
                            f.strip_prefix(&src).unwrap().display(),
                            n + 1,
                            line.trim()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        breaches.is_empty(),
        "modules reaching up a layer:\n{}",
        breaches.join("\n")
    );
}

/// The protocol crate is the boundary between nodes: no I/O runtime, network, database or
/// DICOM parser among its dependencies.
#[test]
fn protocol_depends_on_no_runtime_network_database_or_dicom() {
    let manifest = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../protocol/Cargo.toml"),
    )
    .unwrap();
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .expect("protocol has dependencies")
        .split("\n[")
        .next()
        .unwrap();
    for banned in [
        "tokio", "libp2p", "redb", "dicom", "axum", "rustls", "cedar",
    ] {
        assert!(
            !deps.lines().any(|l| l.trim_start().starts_with(banned)),
            "protocol depends on {banned}"
        );
    }
}

/// The testnet runs nodes and the generator as processes, as operators do.
#[test]
fn testnet_links_neither_the_node_nor_the_tools() {
    let manifest = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../testnet/Cargo.toml"),
    )
    .unwrap();
    for banned in ["slidemesh-node", "slidemesh-tools"] {
        assert!(
            !manifest.contains(banned),
            "the testnet depends on {banned}"
        );
    }
}
