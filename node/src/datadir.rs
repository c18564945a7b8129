//! The node's data directory: where each file lives, creation by `init`, and the
//! "was this directory ever initialised?" check every other command makes.
//!
//! Layout (see ARCHITECTURE.md):
//! `config.toml` (operator settings), `node.key` (ed25519 secret, mode 0600), `store.redb` (all
//! metadata and indexes), `objects/` (original DICOM files by BLAKE3), `tmp/` (staging).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use slidemesh_protocol::NodeKey;

use crate::config::NodeConfig;

/// Paths inside one node's data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The per-user default: `$XDG_DATA_HOME/slidemesh` or `~/.local/share/slidemesh`.
    pub fn default_root() -> PathBuf {
        if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
            return PathBuf::from(xdg).join("slidemesh");
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        home.join(".local/share/slidemesh")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    pub fn key_path(&self) -> PathBuf {
        self.root.join("node.key")
    }
    pub fn store_path(&self) -> PathBuf {
        self.root.join("store.redb")
    }
    pub fn objects_dir(&self) -> PathBuf {
        self.root.join("objects")
    }
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }
    /// Tiles fetched from peers.
    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("cache")
    }
    /// The trust's consent policy (cedar); `init` writes the default.
    pub fn policy_path(&self) -> PathBuf {
        self.root.join("policy.cedar")
    }

    /// Written by a running `serve` so that other commands can find its HTTP address.
    pub fn serve_info_path(&self) -> PathBuf {
        self.root.join("serve.json")
    }

    /// Creates a new node: identity, store, commented config, empty folders.
    /// Refuses to touch a directory that already holds a node.
    pub fn init(&self, mut config: NodeConfig) -> Result<NodeKey> {
        if self.config_path().exists() {
            bail!(
                "{} already holds a slidemesh node (config.toml exists); choose another --data directory",
                self.root.display()
            );
        }
        fs::create_dir_all(&self.root)
            .with_context(|| format!("cannot create data directory {}", self.root.display()))?;
        for dir in [self.objects_dir(), self.tmp_dir()] {
            fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let key = NodeKey::generate();
        write_private(&self.key_path(), &key.secret_bytes())?;
        config.network.listen.sort_by_key(|a| !a.contains("/quic"));
        write_atomic(
            &self.policy_path(),
            crate::consent::DEFAULT_POLICY.as_bytes(),
        )?;
        // The store is created now rather than by the first command that opens it, so a
        // node's first ingest or serve starts on a ready database.
        crate::store::Store::open(&self.store_path())
            .with_context(|| format!("cannot create {}", self.store_path().display()))?;
        // The config is written last: its presence is what marks the directory initialised.
        write_atomic(&self.config_path(), config.to_commented_toml().as_bytes())?;
        Ok(key)
    }

    /// Fails with a how-to-start message unless `init` ran here.
    pub fn require_initialised(&self) -> Result<()> {
        if !self.config_path().exists() {
            bail!(
                "{} is not a slidemesh data directory (no config.toml); create one with \
                 `slidemesh init --data {} --trust <ODS code>`, or point --data / SLIDEMESH_DATA at an existing one",
                self.root.display(),
                self.root.display()
            );
        }
        Ok(())
    }

    pub fn load_config(&self) -> Result<NodeConfig> {
        self.require_initialised()?;
        NodeConfig::load(&self.config_path())
    }

    pub fn load_key(&self) -> Result<NodeKey> {
        let path = self.key_path();
        let bytes =
            fs::read(&path).with_context(|| format!("cannot read node key {}", path.display()))?;
        let secret: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            anyhow::anyhow!(
                "node key {} is corrupt: expected 32 bytes, found {}",
                path.display(),
                bytes.len()
            )
        })?;
        Ok(NodeKey::from_secret_bytes(secret))
    }
}

/// Writes a secret file readable by the owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.sync_all()
        .with_context(|| format!("cannot sync {}", path.display()))?;
    Ok(())
}

/// Writes a file so that readers see either the old or the new content, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut file =
            fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        file.write_all(bytes)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        file.sync_all()
            .with_context(|| format!("cannot sync {}", tmp.display()))?;
    }
    fs::rename(&tmp, path).with_context(|| format!("cannot move {} into place", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_creates_a_node_once_and_others_require_it() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path().join("node"));
        assert!(
            data.require_initialised()
                .unwrap_err()
                .to_string()
                .contains("slidemesh init")
        );
        let trust: slidemesh_protocol::TrustCode = "RR8".parse().unwrap();
        let key = data
            .init(NodeConfig::new(
                trust.clone(),
                "Leeds".into(),
                "127.0.0.1:0".into(),
            ))
            .unwrap();
        data.require_initialised().unwrap();
        assert_eq!(data.load_key().unwrap().public(), key.public());
        assert_eq!(data.load_config().unwrap().node.trust, trust);
        assert!(
            data.init(NodeConfig::new(
                trust.clone(),
                "Leeds".into(),
                "127.0.0.1:0".into()
            ))
            .is_err()
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(data.key_path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
