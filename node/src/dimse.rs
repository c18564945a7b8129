//! A DICOM C-ECHO and C-STORE SCP (dicom-ul), so scanners and PACS can push slides.
//!
//! Each association runs on its own thread. A C-STORE's data set is streamed to a staging
//! file as its PDUs arrive (preamble, file meta, then the received bytes unchanged, so the
//! stored file is exactly what the sender encoded); the instance is acknowledged once the
//! file is on disk. When the association is released (or aborted after some instances were
//! acknowledged), everything received goes through ingest as one batch, so a scanner that
//! sends a slide in one association gets one slide, committed whole.
//!
//! Only Verification and VL Whole Slide Microscopy Image Storage are negotiated: a PACS
//! offering other images has those presentation contexts rejected, as the standard intends.
//! Called and calling AE titles are checked before anything else: the calling title must be
//! in `[dimse] calling_ae_titles`, which must not be empty (an AE title is a name a sender
//! states, not a credential, so the list is a floor, never the only guard: without sign-on the
//! receiver listens on loopback only, see `config::NodeConfig::check_edge`).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use dicom_core::{DataElement, VR, dicom_value};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;
use dicom_ul::association::Association;
use dicom_ul::association::server::{AccessControl, DefaultNegotiation};
use dicom_ul::pdu::{
    AssociationRJServiceUserReason, PDataValue, PDataValueType, PresentationContextResultReason,
    UserIdentity,
};
use dicom_ul::{Pdu, ServerAssociation, ServerAssociationOptions};
use tracing::{info, info_span, warn};

use crate::config::DimseSection;
use crate::ingest::incoming::{Batch, Incoming};

const C_STORE_RQ: u16 = 0x0001;
const C_ECHO_RQ: u16 = 0x0030;
const RESPONSE_BIT: u16 = 0x8000;
const NO_DATA_SET: u16 = 0x0101;
const SUCCESS: u16 = 0x0000;
const OUT_OF_RESOURCES: u16 = 0xA700;
const UNRECOGNIZED_OPERATION: u16 = 0x0211;
/// PDUs up to this size are accepted from senders (larger means fewer round trips).
const MAX_PDU: u32 = 65536;
/// The largest command set accepted: a C-STORE-RQ's is a few hundred bytes.
const MAX_COMMAND: usize = 64 << 10;

/// Who may associate: the called AE title must be ours, and the calling one listed (the list
/// is never empty: [`start`] refuses to listen without one).
#[derive(Clone)]
struct Callers {
    allowed: Vec<String>,
}

impl AccessControl for Callers {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        if called_ae_title.trim() != this_ae_title.trim() {
            warn!(
                called = called_ae_title,
                "association for another AE title refused"
            );
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        if !self.allowed.iter().any(|a| a == calling_ae_title.trim()) {
            warn!(
                calling = calling_ae_title,
                "association from an unlisted AE title refused"
            );
            return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
        }
        Ok(())
    }
}

/// Binds the SCP and serves associations on background threads. Returns the bound address.
pub fn start(config: &DimseSection, listen: &str, incoming: Arc<Incoming>) -> Result<Receiver> {
    anyhow::ensure!(
        !config.calling_ae_titles.is_empty(),
        "a DICOM receiver needs [dimse] calling_ae_titles: the AE titles of the scanners and \
         PACS allowed to send"
    );
    let listener = TcpListener::bind(listen)
        .with_context(|| format!("cannot listen for DICOM associations on {listen}"))?;
    let bound = listener.local_addr()?;
    let options = ServerAssociationOptions::new()
        .ae_title(config.ae_title.clone())
        .ae_access_control(Callers {
            allowed: config.calling_ae_titles.clone(),
        })
        .with_abstract_syntax(uids::VERIFICATION)
        .with_abstract_syntax(uids::VL_WHOLE_SLIDE_MICROSCOPY_IMAGE_STORAGE)
        .max_pdu_length(MAX_PDU)
        // PDUs over the length this node announced are refused, not buffered.
        .strict(true)
        .read_timeout(Duration::from_secs(120));
    info!(%bound, ae_title = %config.ae_title, "DICOM C-STORE SCP listening");
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_seen = stopping.clone();
    let (max_associations, max_bytes) = (
        config.max_associations.max(1),
        config.max_bytes_per_association,
    );
    let active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = active.clone();
    let refused = std::sync::atomic::AtomicU64::new(0);
    std::thread::Builder::new()
        .name("dimse-accept".into())
        .spawn(move || {
            for stream in listener.incoming() {
                if stop_seen.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let stream = match stream {
                    Ok(s) => s,
                    Err(e) => {
                        warn!(error = %e, "cannot accept a DICOM connection");
                        continue;
                    }
                };
                // One thread per association, at most `max_associations` of them.
                let Some(slot) = AssociationSlot::take(&counted, max_associations) else {
                    let refused = refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if refused.is_multiple_of(100) {
                        warn!(
                            max_associations,
                            refused = refused + 1,
                            "DICOM connection closed: [dimse] max_associations in progress"
                        );
                    }
                    continue;
                };
                let options = options.clone();
                let incoming = incoming.clone();
                let stopping = stop_seen.clone();
                let spawned = std::thread::Builder::new()
                    .name("dimse-association".into())
                    .spawn(move || {
                        let _slot = slot;
                        serve_association(stream, &options, &incoming, max_bytes, &stopping);
                    });
                if let Err(e) = spawned {
                    warn!(error = %e, "cannot start a thread for a DICOM association");
                }
            }
        })?;
    Ok(Receiver {
        addr: bound,
        stopping,
        active,
    })
}

/// One association in progress, counted until its thread ends.
struct AssociationSlot(Arc<std::sync::atomic::AtomicUsize>);

impl AssociationSlot {
    fn take(active: &Arc<std::sync::atomic::AtomicUsize>, max: usize) -> Option<Self> {
        use std::sync::atomic::Ordering::SeqCst;
        active
            .fetch_update(SeqCst, SeqCst, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| Self(active.clone()))
    }
}

impl Drop for AssociationSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The running DICOM receiver.
pub struct Receiver {
    /// Where it listens.
    pub addr: SocketAddr,
    stopping: Arc<std::sync::atomic::AtomicBool>,
    /// Associations in progress.
    active: Arc<std::sync::atomic::AtomicUsize>,
}

impl Receiver {
    /// Stops accepting associations and frees the port. Associations in progress end at
    /// their next message, aborted, with the instances they had acknowledged ingested
    /// (a sender was told those are stored); waits (blocking) up to `wait` for them, and
    /// says whether all ended.
    pub fn stop(&self, wait: Duration) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        self.stopping.store(true, SeqCst);
        // The accept loop blocks in accept(): one connection wakes it to see the flag.
        let _ = std::net::TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        let deadline = std::time::Instant::now() + wait;
        while self.active.load(SeqCst) > 0 {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }
}

/// One C-STORE in progress: the staging file its data set is written to.
struct Receiving {
    message_id: u16,
    presentation_context: u8,
    sop_class: String,
    sop_instance: String,
    path: PathBuf,
    file: Option<BufWriter<File>>,
    error: Option<String>,
}

fn serve_association(
    stream: TcpStream,
    options: &ServerAssociationOptions<'static, Callers, DefaultNegotiation>,
    incoming: &Incoming,
    max_bytes: u64,
    stopping: &std::sync::atomic::AtomicBool,
) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let mut association = match options.establish(stream) {
        Ok(a) => a,
        Err(e) => {
            warn!(%peer, error = %e, "DICOM association not established");
            return;
        }
    };
    let calling = association.peer_ae_title().trim().to_string();
    let span = info_span!("dimse_association", %peer, calling = %calling);
    let _guard = span.enter();
    let mut batch = match incoming.batch() {
        Ok(b) => b,
        Err(e) => {
            warn!(error = %e, "cannot create a staging folder; aborting the association");
            let _ = association.abort();
            return;
        }
    };
    let outcome = receive_all(&mut association, &mut batch, &calling, max_bytes, stopping);
    match outcome {
        Ok(()) => {}
        Err(reason) => {
            warn!(%reason, "association ended early");
            let _ = association.abort();
        }
    }
    if batch.is_empty() {
        return;
    }
    let received = batch.len();
    let report = incoming.ingest(batch);
    for slide in &report.slides {
        info!(slide = %slide.slide_id, series = %slide.series_uid, status = ?slide.status, instances = slide.instances, "slide received over DICOM");
    }
    for failure in &report.failures {
        warn!(error = %failure.error, series = ?failure.series_uid, "received instance not ingested");
    }
    info!(
        received,
        slides = report.slides.len(),
        failed = report.failures.len(),
        "association done"
    );
}

/// Runs the association until the peer releases it (Ok) or it breaks (Err). Instances
/// acknowledged before a break stay in the batch; a half-received one is removed.
fn receive_all(
    association: &mut ServerAssociation<TcpStream>,
    batch: &mut Batch,
    calling: &str,
    max_bytes: u64,
    stopping: &std::sync::atomic::AtomicBool,
) -> Result<(), String> {
    let mut command = Vec::new();
    let mut current: Option<Receiving> = None;
    let mut received = 0u64;
    let result = 'receive: loop {
        let pdu = match association.receive() {
            Ok(pdu) => pdu,
            Err(e) => break Err(format!("connection lost: {e}")),
        };
        if stopping.load(std::sync::atomic::Ordering::SeqCst) {
            break Err("the node is shutting down".into());
        }
        match pdu {
            Pdu::PData { data } => {
                received += data.iter().map(|v| v.data.len() as u64).sum::<u64>();
                if received > max_bytes {
                    break Err(format!(
                        "more than {max_bytes} bytes in one association ([dimse] \
                         max_bytes_per_association)"
                    ));
                }
                for pdv in data {
                    if let Err(e) =
                        handle_pdv(association, batch, calling, pdv, &mut command, &mut current)
                    {
                        break 'receive Err(e);
                    }
                }
            }
            Pdu::ReleaseRQ => {
                let _ = association.send(&Pdu::ReleaseRP);
                break Ok(());
            }
            Pdu::AbortRQ { .. } => break Err("aborted by the peer".into()),
            other => break Err(format!("unexpected {}", other.short_description())),
        }
    };
    if let Some(partial) = current {
        let _ = std::fs::remove_file(&partial.path);
    }
    result
}

fn handle_pdv(
    association: &mut ServerAssociation<TcpStream>,
    batch: &mut Batch,
    calling: &str,
    pdv: PDataValue,
    command: &mut Vec<u8>,
    current: &mut Option<Receiving>,
) -> Result<(), String> {
    let context = association
        .presentation_contexts()
        .iter()
        .find(|pc| {
            pc.id == pdv.presentation_context_id
                && pc.reason == PresentationContextResultReason::Acceptance
        })
        .cloned()
        .ok_or_else(|| {
            format!(
                "data on presentation context {} that was not accepted",
                pdv.presentation_context_id
            )
        })?;
    match pdv.value_type {
        PDataValueType::Command => {
            if command.len() + pdv.data.len() > MAX_COMMAND {
                return Err(format!(
                    "command set larger than {MAX_COMMAND} bytes (a real one is a few hundred)"
                ));
            }
            command.extend_from_slice(&pdv.data);
            if !pdv.is_last {
                return Ok(());
            }
            let cmd = read_command(&command[..])?;
            command.clear();
            let u16_of = |tag| cmd.element(tag).ok().and_then(|e| e.uint16().ok());
            let text_of = |tag| {
                cmd.element(tag)
                    .ok()
                    .and_then(|e| e.to_str().ok())
                    .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
                    .unwrap_or_default()
            };
            let field = u16_of(tags::COMMAND_FIELD).ok_or("command without a command field")?;
            let message_id = u16_of(tags::MESSAGE_ID).unwrap_or(0);
            match field {
                C_ECHO_RQ => send_response(
                    association,
                    context.id,
                    C_ECHO_RQ | RESPONSE_BIT,
                    message_id,
                    uids::VERIFICATION,
                    None,
                    SUCCESS,
                ),
                C_STORE_RQ => {
                    let sop_class = text_of(tags::AFFECTED_SOP_CLASS_UID);
                    let sop_instance = text_of(tags::AFFECTED_SOP_INSTANCE_UID);
                    let path = batch.next_path();
                    let transfer_syntax = context.transfer_syntax.trim_end_matches('\0');
                    let (file, error) = match open_part10(
                        &path,
                        &sop_class,
                        &sop_instance,
                        transfer_syntax,
                        calling,
                    ) {
                        Ok(f) => (Some(f), None),
                        Err(e) => (None, Some(e)),
                    };
                    *current = Some(Receiving {
                        message_id,
                        presentation_context: context.id,
                        sop_class,
                        sop_instance,
                        path,
                        file,
                        error,
                    });
                    if u16_of(tags::COMMAND_DATA_SET_TYPE) == Some(NO_DATA_SET) {
                        return finish_store(association, current);
                    }
                    Ok(())
                }
                other => {
                    warn!(
                        command = format!("{other:#06X}"),
                        "unsupported DIMSE command"
                    );
                    send_response(
                        association,
                        context.id,
                        other | RESPONSE_BIT,
                        message_id,
                        &text_of(tags::AFFECTED_SOP_CLASS_UID),
                        None,
                        UNRECOGNIZED_OPERATION,
                    )
                }
            }
        }
        PDataValueType::Data => {
            let receiving = current
                .as_mut()
                .ok_or("data set without a C-STORE command")?;
            if receiving.error.is_none()
                && let Some(file) = receiving.file.as_mut()
                && let Err(e) = file.write_all(&pdv.data)
            {
                receiving.error = Some(format!("cannot write: {e}"));
            }
            if pdv.is_last {
                return finish_store(association, current);
            }
            Ok(())
        }
    }
}

/// Parses a command set (implicit VR little endian, no sequences) after checking that
/// every element's declared length fits in the bytes received: dicom-object would zero-fill
/// a buffer of the declared length (up to 4 GiB) before finding the bytes missing.
fn read_command(bytes: &[u8]) -> Result<InMemDicomObject, String> {
    let mut at = 0usize;
    while at < bytes.len() {
        let header = bytes
            .get(at..at + 8)
            .ok_or("command set ends inside an element header")?;
        let group = u16::from_le_bytes([header[0], header[1]]);
        let element = u16::from_le_bytes([header[2], header[3]]);
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        let left = bytes.len() - at - 8;
        if len > left {
            return Err(format!(
                "command element ({group:04X},{element:04X}) declares {len} bytes but only {left} follow"
            ));
        }
        at += 8 + len;
    }
    let ts = IMPLICIT_VR_LITTLE_ENDIAN.erased();
    InMemDicomObject::read_dataset_with_ts(bytes, &ts)
        .map_err(|e| format!("unreadable command set: {e}"))
}

/// Writes the preamble and file meta group of a Part 10 file; the data set follows as
/// received.
fn open_part10(
    path: &std::path::Path,
    sop_class: &str,
    sop_instance: &str,
    transfer_syntax: &str,
    calling: &str,
) -> Result<BufWriter<File>, String> {
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(sop_class)
        .media_storage_sop_instance_uid(sop_instance)
        .transfer_syntax(transfer_syntax)
        .source_application_entity_title(calling)
        .build()
        .map_err(|e| format!("cannot build file meta: {e}"))?;
    let file = File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(&[0u8; 128])
        .and_then(|_| out.write_all(b"DICM"))
        .map_err(|e| format!("cannot write: {e}"))?;
    meta.write(&mut out)
        .map_err(|e| format!("cannot write file meta: {e}"))?;
    Ok(out)
}

/// Completes the current C-STORE: the file is flushed and synced before success is sent,
/// so an acknowledged instance survives a crash.
fn finish_store(
    association: &mut ServerAssociation<TcpStream>,
    current: &mut Option<Receiving>,
) -> Result<(), String> {
    let Some(mut receiving) = current.take() else {
        return Ok(());
    };
    if receiving.error.is_none()
        && let Some(file) = receiving.file.take()
    {
        let synced = file
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all());
        if let Err(e) = synced {
            receiving.error = Some(format!("cannot write: {e}"));
        }
    }
    let status = match &receiving.error {
        None => SUCCESS,
        Some(e) => {
            warn!(instance = %receiving.sop_instance, error = %e, "instance not stored");
            let _ = std::fs::remove_file(&receiving.path);
            OUT_OF_RESOURCES
        }
    };
    send_response(
        association,
        receiving.presentation_context,
        C_STORE_RQ | RESPONSE_BIT,
        receiving.message_id,
        &receiving.sop_class,
        Some(&receiving.sop_instance),
        status,
    )
}

fn send_response(
    association: &mut ServerAssociation<TcpStream>,
    presentation_context: u8,
    command_field: u16,
    message_id: u16,
    sop_class: &str,
    sop_instance: Option<&str>,
    status: u16,
) -> Result<(), String> {
    let mut elements = vec![
        DataElement::new(
            tags::COMMAND_FIELD,
            VR::US,
            dicom_value!(U16, [command_field]),
        ),
        DataElement::new(
            tags::MESSAGE_ID_BEING_RESPONDED_TO,
            VR::US,
            dicom_value!(U16, [message_id]),
        ),
        DataElement::new(
            tags::COMMAND_DATA_SET_TYPE,
            VR::US,
            dicom_value!(U16, [NO_DATA_SET]),
        ),
        DataElement::new(tags::STATUS, VR::US, dicom_value!(U16, [status])),
        DataElement::new(
            tags::AFFECTED_SOP_CLASS_UID,
            VR::UI,
            dicom_value!(Str, sop_class),
        ),
    ];
    if let Some(instance) = sop_instance {
        elements.push(DataElement::new(
            tags::AFFECTED_SOP_INSTANCE_UID,
            VR::UI,
            dicom_value!(Str, instance),
        ));
    }
    let response = InMemDicomObject::command_from_element_iter(elements);
    let mut bytes = Vec::new();
    response
        .write_dataset_with_ts(&mut bytes, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
        .map_err(|e| format!("cannot encode a response: {e}"))?;
    association
        .send(&Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: presentation_context,
                value_type: PDataValueType::Command,
                is_last: true,
                data: bytes,
            }],
        })
        .map_err(|e| format!("cannot send a response: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An implicit VR little endian element.
    fn element(group: u16, element: u16, value: &[u8], declared: u32) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&group.to_le_bytes());
        out.extend_from_slice(&element.to_le_bytes());
        out.extend_from_slice(&declared.to_le_bytes());
        out.extend_from_slice(value);
        out
    }

    #[test]
    fn command_lengths_are_checked_before_parsing() {
        let field = element(0x0000, 0x0100, &C_ECHO_RQ.to_le_bytes(), 2);
        let cmd = read_command(&field).unwrap();
        assert_eq!(
            cmd.element(tags::COMMAND_FIELD).unwrap().uint16().unwrap(),
            C_ECHO_RQ
        );
        // An Affected SOP Class UID that claims nearly 4 GiB in a 20-byte command.
        let mut lying = field.clone();
        lying.extend(element(0x0000, 0x0002, b"1.2\0", 0xFFFF_FFF0));
        let err = read_command(&lying).unwrap_err();
        assert!(
            err.contains("(0000,0002) declares 4294967280 bytes"),
            "{err}"
        );
        let err = read_command(&field[..6]).unwrap_err();
        assert!(err.contains("element header"), "{err}");
    }
}
