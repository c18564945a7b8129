//! The object store: original files kept unchanged, named by their BLAKE3.
//!
//! `objects/<first two hex>/<64 hex>`. A file enters through a staging name in `tmp/` and is
//! renamed into place only once complete and synced, so an object path either does not
//! exist or holds the whole file. Objects are written before the redb transaction that
//! references them commits; a crash in between leaves an unreferenced object, which
//! [`ObjectStore::sweep_staging`] and the store's orphan sweep remove, never a reference to
//! a missing file.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use slidemesh_protocol::ObjectId;

use crate::config::KeepOriginals;

/// Why an original could not be placed in the object store.
#[derive(Debug, thiserror::Error)]
#[error("object store: cannot {action} {path}: {source}")]
pub struct ObjectError {
    action: &'static str,
    path: PathBuf,
    #[source]
    source: io::Error,
}

impl ObjectError {
    /// Whether the failure was the disk filling up, which callers report specially.
    pub fn is_disk_full(&self) -> bool {
        self.source.raw_os_error() == Some(28) // ENOSPC
    }
}

fn ctx<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ObjectError + 'a {
    move |source| ObjectError {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// How an object got into the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    AlreadyPresent,
    Linked,
    Copied,
}

/// Original files by content id.
#[derive(Debug, Clone)]
pub struct ObjectStore {
    objects: PathBuf,
    staging: PathBuf,
}

impl ObjectStore {
    pub fn new(objects: PathBuf, staging: PathBuf) -> Self {
        Self { objects, staging }
    }

    /// Where files are written before they are renamed into place (`tmp/`).
    pub fn staging_dir(&self) -> &Path {
        &self.staging
    }

    pub fn path(&self, id: &ObjectId) -> PathBuf {
        let hex = id.to_hex();
        self.objects.join(&hex[..2]).join(hex)
    }

    pub fn contains(&self, id: &ObjectId) -> bool {
        self.path(id).is_file()
    }

    pub fn open(&self, id: &ObjectId) -> Result<File, ObjectError> {
        let path = self.path(id);
        File::open(&path).map_err(ctx("open", &path))
    }

    /// Puts `source` (whose BLAKE3 is `id`, already computed by the caller) into the store.
    pub fn put(
        &self,
        source: &Path,
        id: &ObjectId,
        keep: KeepOriginals,
    ) -> Result<Placement, ObjectError> {
        let dest = self.path(id);
        if dest.is_file() {
            return Ok(Placement::AlreadyPresent);
        }
        let dir = dest.parent().unwrap_or(&self.objects).to_path_buf();
        fs::create_dir_all(&dir).map_err(ctx("create", &dir))?;
        fs::create_dir_all(&self.staging).map_err(ctx("create", &self.staging))?;
        let staged = self
            .staging
            .join(format!("{}.{}", id.to_hex(), std::process::id()));
        let _ = fs::remove_file(&staged);
        let placement = match keep {
            KeepOriginals::Link if fs::hard_link(source, &staged).is_ok() => Placement::Linked,
            _ => {
                copy_synced(source, &staged)?;
                Placement::Copied
            }
        };
        fs::rename(&staged, &dest).map_err(ctx("move into place", &dest))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(ctx("sync", &dir))?;
        Ok(placement)
    }

    /// Removes staging files (and folders of files received over the network) left by
    /// interrupted ingests. A staging name ends in the pid of the process writing it; those
    /// of processes still running are left alone.
    pub fn sweep_staging(&self) -> io::Result<usize> {
        let mut removed = 0;
        let Ok(entries) = fs::read_dir(&self.staging) else {
            return Ok(0);
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.rsplit('.').next())
                .and_then(|p| p.parse::<u32>().ok());
            let alive = pid.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
            if alive {
                continue;
            }
            let gone = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                fs::remove_dir_all(entry.path())
            } else {
                fs::remove_file(entry.path())
            };
            if gone.is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Every object id present on disk (for the orphan sweep).
    pub fn list(&self) -> io::Result<Vec<ObjectId>> {
        let mut ids = Vec::new();
        let Ok(prefixes) = fs::read_dir(&self.objects) else {
            return Ok(ids);
        };
        for prefix in prefixes.flatten() {
            for entry in fs::read_dir(prefix.path())?.flatten() {
                if let Some(id) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
                    ids.push(id);
                }
            }
        }
        Ok(ids)
    }

    pub fn remove(&self, id: &ObjectId) -> io::Result<()> {
        fs::remove_file(self.path(id))
    }
}

fn copy_synced(source: &Path, dest: &Path) -> Result<(), ObjectError> {
    let mut from = File::open(source).map_err(ctx("open", source))?;
    let mut to = File::create(dest).map_err(ctx("create", dest))?;
    io::copy(&mut from, &mut to).map_err(|e| {
        let _ = fs::remove_file(dest);
        ObjectError {
            action: "copy into",
            path: dest.to_path_buf(),
            source: e,
        }
    })?;
    to.sync_all().map_err(ctx("sync", dest))?;
    // Originals are never modified through the store.
    let mut perms = to.metadata().map_err(ctx("stat", dest))?.permissions();
    perms.set_readonly(true);
    fs::set_permissions(dest, perms).map_err(ctx("protect", dest))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_copy_and_link_are_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::new(dir.path().join("objects"), dir.path().join("tmp"));
        let src = dir.path().join("a.dcm");
        fs::write(&src, b"original bytes").unwrap();
        let id = ObjectId::of(b"original bytes");
        assert_eq!(
            store.put(&src, &id, KeepOriginals::Copy).unwrap(),
            Placement::Copied
        );
        assert_eq!(
            store.put(&src, &id, KeepOriginals::Link).unwrap(),
            Placement::AlreadyPresent
        );
        assert_eq!(fs::read(store.path(&id)).unwrap(), b"original bytes");
        assert_eq!(store.list().unwrap(), vec![id]);
        let other = ObjectId::of(b"x");
        fs::write(dir.path().join("b.dcm"), b"x").unwrap();
        assert_eq!(
            store
                .put(&dir.path().join("b.dcm"), &other, KeepOriginals::Link)
                .unwrap(),
            Placement::Linked
        );
        assert_eq!(store.sweep_staging().unwrap(), 0);
    }
}
