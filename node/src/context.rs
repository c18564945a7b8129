//! `NodeContext`: an opened node (data directory, configuration, key, store) shared by the
//! CLI commands and the HTTP server, plus start-up housekeeping.

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use slidemesh_protocol::NodeKey;
use tracing::{info, warn};

use crate::config::NodeConfig;
use crate::datadir::DataDir;
use crate::store::Store;
use crate::store::objects::ObjectStore;

/// Unreferenced objects younger than this may belong to an ingest that has not committed
/// yet (in another process), so the sweep leaves them alone.
const ORPHAN_GRACE: Duration = Duration::from_secs(3600);

/// Everything a command needs to act as the node.
pub struct NodeContext {
    pub data: DataDir,
    pub config: NodeConfig,
    pub key: NodeKey,
    pub store: Store,
    pub objects: ObjectStore,
}

impl NodeContext {
    /// Opens an initialised data directory.
    pub fn open(data: DataDir) -> Result<Self> {
        let config = data.load_config()?;
        let key = data.load_key()?;
        let store = Store::open(&data.store_path()).context("cannot open the node's store")?;
        // A data directory from before the research index gets it now, once.
        if let Some(indexed) = crate::research::index_if_missing(&store)
            .context("cannot index the slides' research facts")?
            && indexed > 0
        {
            tracing::info!(slides = indexed, "research facts indexed");
        }
        let objects = ObjectStore::new(data.objects_dir(), data.tmp_dir());
        Ok(Self {
            data,
            config,
            key,
            store,
            objects,
        })
    }

    /// Removes what an interrupted ingest left behind: staging files of dead processes and
    /// objects no committed slide references (older than the grace period).
    pub fn sweep(&self) -> Result<()> {
        let staged = self
            .objects
            .sweep_staging()
            .context("cannot sweep staging folder")?;
        let mut orphans = 0;
        for id in self.objects.list().context("cannot list object store")? {
            if self.store.references_object(&id)? {
                continue;
            }
            let path = self.objects.path(&id);
            let age = std::fs::symlink_metadata(&path)
                .ok()
                .and_then(|m| {
                    use std::os::unix::fs::MetadataExt;
                    let changed =
                        SystemTime::UNIX_EPOCH + Duration::from_secs(m.ctime().max(0) as u64);
                    SystemTime::now().duration_since(changed).ok()
                })
                .unwrap_or_default();
            if age > ORPHAN_GRACE {
                match self.objects.remove(&id) {
                    Ok(()) => orphans += 1,
                    Err(e) => warn!(object = %id, error = %e, "cannot remove orphaned object"),
                }
            }
        }
        if staged + orphans > 0 {
            info!(staged, orphans, "removed leftovers of interrupted ingests");
        }
        Ok(())
    }
}
