//! HTTPS for the API and web UI (`[http] tls_cert`, `tls_key`): rustls through axum-server.
//!
//! The PEM files are read at start (a pair that does not load refuses to start) and looked
//! at every [`POLL`] afterwards; when either changed (size, time or inode: a rename counts),
//! the pair is loaded again and new connections get the new certificate, without a restart.
//! A pair that does not load (half-replaced, a key that does not match) leaves the last good
//! certificate in use and is tried again at its next change. Nothing here knows about
//! routes or requests.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use axum_server::tls_rustls::RustlsConfig;
use tracing::{info, warn};

/// How often the files are looked at.
pub const POLL: Duration = Duration::from_secs(2);

/// The certificate chain and private key files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What both files looked like: (inode, size, modification time in ns) each, `None` when one
/// cannot be read.
type Stamp = Option<[(u64, u64, i128); 2]>;

impl TlsFiles {
    fn stamp(&self) -> Stamp {
        let one = |p: &PathBuf| {
            std::fs::metadata(p).ok().map(|m| {
                (
                    m.ino(),
                    m.size(),
                    i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
                )
            })
        };
        Some([one(&self.cert)?, one(&self.key)?])
    }

    async fn read(&self) -> Result<(Vec<u8>, Vec<u8>)> {
        let read = |p: PathBuf| async move {
            tokio::fs::read(&p)
                .await
                .with_context(|| format!("cannot read {}", p.display()))
        };
        Ok((
            read(self.cert.clone()).await?,
            read(self.key.clone()).await?,
        ))
    }

    fn describe(&self) -> String {
        format!(
            "[http] tls_cert {} and tls_key {}",
            self.cert.display(),
            self.key.display()
        )
    }

    /// The server's TLS configuration from the files as they are now.
    pub async fn load(&self) -> Result<RustlsConfig> {
        let (cert, key) = self.read().await?;
        RustlsConfig::from_pem(cert, key).await.with_context(|| {
            format!(
                "{} do not make a certificate and its key (PEM; the key must match the first \
                 certificate)",
                self.describe()
            )
        })
    }

    /// Reloads `config` whenever the files change, until the runtime stops.
    pub fn watch(self, config: RustlsConfig) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut seen = self.stamp();
            loop {
                tokio::time::sleep(POLL).await;
                let now = self.stamp();
                if now == seen {
                    continue;
                }
                seen = now;
                let reloaded = match self.read().await {
                    Ok((cert, key)) => config
                        .reload_from_pem(cert, key)
                        .await
                        .context("they do not make a certificate and its key"),
                    Err(e) => Err(e),
                };
                match reloaded {
                    Ok(()) => info!(cert = %self.cert.display(), "TLS certificate reloaded"),
                    Err(e) => warn!(
                        error = format!("{e:#}"),
                        files = self.describe(),
                        "changed TLS files not loaded; the previous certificate stays in use"
                    ),
                }
            }
        })
    }
}
