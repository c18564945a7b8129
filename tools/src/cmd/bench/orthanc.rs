//! Orthanc with its DICOMweb plugin as a reference server for benchmarks: started from a
//! generated configuration in a work folder, on a free loopback port, stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::procs::{Server, free_port, require_tool, wait_http};

const PLUGIN: &str = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so";

pub struct Orthanc {
    _server: Server,
    /// `http://127.0.0.1:PORT`; DICOMweb is under `/dicom-web`.
    pub url: String,
}

impl Orthanc {
    /// Starts a fresh Orthanc (its storage under `root`, emptied first) and waits for it.
    pub fn start(root: &Path) -> Result<Self> {
        require_tool("Orthanc", "orthanc orthanc-dicomweb")?;
        if !Path::new(PLUGIN).exists() {
            bail!("{PLUGIN} missing: apt-get install orthanc-dicomweb");
        }
        let _ = std::fs::remove_dir_all(root);
        std::fs::create_dir_all(root)?;
        let port = free_port()?;
        let config = serde_json::json!({
            "Name": "slidemesh-bench",
            "StorageDirectory": root.join("storage"),
            "IndexDirectory": root.join("index"),
            "HttpPort": port,
            "DicomServerEnabled": false,
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": false,
            "HttpCompressionEnabled": false,
            "StorageCompression": false,
            "KeepAlive": true,
            "TcpNoDelay": true,
            "HttpThreadsCount": 50,
            // Answer searches from the index, not by reading files: Orthanc's fastest mode.
            "StorageAccessOnFind": "Never",
            "Plugins": [PLUGIN],
            "DicomWeb": { "Enable": true, "Root": "/dicom-web/" },
        });
        let conf: PathBuf = root.join("orthanc.json");
        std::fs::write(&conf, serde_json::to_vec_pretty(&config)?)?;
        let server = Server {
            child: Command::new("Orthanc")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("cannot start Orthanc")?,
        };
        let url = format!("http://127.0.0.1:{port}");
        wait_http(&format!("{url}/system"), Duration::from_secs(30))?;
        Ok(Self {
            _server: server,
            url,
        })
    }

    /// Stores files through Orthanc's own REST API (`POST /instances`).
    pub fn upload(&self, files: &[PathBuf]) -> Result<()> {
        for file in files {
            let bytes = std::fs::read(file)?;
            ureq::post(&format!("{}/instances", self.url))
                .set("Content-Type", "application/dicom")
                .send_bytes(&bytes)
                .with_context(|| format!("uploading {} to Orthanc", file.display()))?;
        }
        Ok(())
    }
}
