//! A DICOM file's header checked against the file itself before anything is allocated by
//! the numbers in it, and where its pixel data starts.
//!
//! dicom-object reserves and zero-fills each element's value at the length the file
//! declares (up to 4 GiB for a 300-byte element that lies) before reading it, and builds
//! nested sequences by recursion. So no file reaches dicom-object before this walk, which
//! reads no values:
//! 1. the file meta group (explicit VR little endian, PS3.10 7.1), element by element
//!    within its declared group length, keeping only the Transfer Syntax UID;
//! 2. the data set, with dicom-parser's lazy token reader, up to the top-level Pixel Data.
//!
//! Every declared length must fit in what is left of the file, every value before Pixel
//! Data must be at most [`MAX_ELEMENT`] bytes, the header before Pixel Data at most
//! [`MAX_HEADER`] bytes, and sequences may nest at most [`MAX_DEPTH`] deep. A file that
//! breaks one of these is refused with the attribute named ([`ScanError`]); one that passes
//! can be parsed by dicom-object with memory bounded by these caps.
//!
//! This module knows nothing of frames, slides or the store.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek};
use std::rc::Rc;

use dicom_core::Tag;
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_dictionary_std::{StandardDataDictionary, tags};
use dicom_encoding::TransferSyntaxIndex;
use dicom_encoding::decode::Decode;
use dicom_encoding::decode::explicit_le::ExplicitVRLittleEndianDecoder;
use dicom_encoding::transfer_syntax::TransferSyntax;
use dicom_parser::dataset::LazyDataToken;
use dicom_parser::dataset::lazy_read::LazyDataSetReader;
use dicom_parser::stateful::decode::{StatefulDecode, StatefulDecoder};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use super::dicom::ScanError;

/// The largest value accepted for one element before Pixel Data. The largest real ones are
/// Extended Offset Tables (8 bytes per frame: 64 MiB is 8 million frames) and ICC profiles.
pub const MAX_ELEMENT: u64 = 64 << 20;
/// The largest header (data set bytes before Pixel Data) accepted. Per-frame functional
/// groups of a TILED_SPARSE level take about 150 bytes a frame: 64 MiB holds over 400,000
/// frames, more than any one instance real scanners write (they split levels into
/// concatenations). dicom-object keeps the header in memory at several times its size.
pub const MAX_HEADER: u64 = 64 << 20;
/// The deepest nesting of sequences accepted. Real WSI headers nest four or five deep
/// (specimen preparation steps); dicom-object parses nested sequences by recursion.
pub const MAX_DEPTH: usize = 32;
/// The largest file meta group accepted: a few UIDs and names, a few hundred bytes.
const MAX_META: u64 = 64 << 10;
/// Deflated Explicit VR Little Endian: byte positions in the file do not map to the data
/// set, so frames cannot be served by positioned reads (and inflating is unbounded).
const DEFLATED_TS: &str = "1.2.840.10008.1.2.1.99";

/// Where the pixel data's value starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelData {
    /// Native pixel data: `len` bytes from `start`.
    Native { start: u64, len: u64 },
    /// Encapsulated pixel data: its items (the Basic Offset Table's first) from `items_start`.
    Encapsulated { items_start: u64 },
}

/// What the walk learnt about a file whose header passed every check.
pub struct Layout {
    pub file_len: u64,
    pub ts_uid: String,
    pub ts: &'static TransferSyntax,
    /// Where the data set starts (after the file meta group).
    pub dataset_start: u64,
    pub pixel_data: PixelData,
}

/// Walks `file`'s meta group and data set up to Pixel Data, checking every declared length.
pub fn check(file: &File) -> Result<Layout, ScanError> {
    let file_len = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(64 << 10, file);
    reader.rewind()?;
    let (ts_uid, dataset_start) = read_meta(&mut reader, file_len)?;
    if ts_uid == DEFLATED_TS {
        return Err(ScanError::UnsupportedTransferSyntax(format!(
            "{ts_uid} (deflated)"
        )));
    }
    let ts = TransferSyntaxRegistry
        .get(&ts_uid)
        .ok_or_else(|| ScanError::UnsupportedTransferSyntax(format!("{ts_uid} (unknown)")))?;
    reader.seek(io::SeekFrom::Start(dataset_start))?;
    let pixel_data = walk_data_set(reader, file_len, dataset_start, ts, &ts_uid)?;
    Ok(Layout {
        file_len,
        ts_uid,
        ts,
        dataset_start,
        pixel_data,
    })
}

/// An attribute as an operator reads it: its keyword and tag, e.g. `PatientName (0010,0010)`.
pub fn attribute_name(tag: Tag) -> String {
    match StandardDataDictionary.by_tag(tag) {
        Some(entry) => format!("{} {tag}", entry.alias()),
        None => format!("attribute {tag}"),
    }
}

/// Reads the preamble, `DICM` and the file meta group; returns the transfer syntax UID and
/// where the data set starts.
fn read_meta<R: Read>(reader: &mut R, file_len: u64) -> Result<(String, u64), ScanError> {
    let not_dicom =
        || ScanError::NotDicom("no DICM marker at byte 128 (is it a DICOM Part 10 file?)".into());
    let mut preamble = [0u8; 132];
    if file_len < 132 {
        return Err(not_dicom());
    }
    reader.read_exact(&mut preamble)?;
    if &preamble[128..] != b"DICM" {
        return Err(not_dicom());
    }
    let decoder = ExplicitVRLittleEndianDecoder::default();
    let header_error = |e: dicom_encoding::decode::Error| {
        if super::dicom::error_chain_has_eof(&e) {
            ScanError::Truncated("the file meta group")
        } else {
            ScanError::NotDicom(format!(
                "unreadable file meta group: {}",
                super::dicom::error_chain(&e)
            ))
        }
    };
    let (first, _) = decoder.decode_header(reader).map_err(header_error)?;
    if first.tag != tags::FILE_META_INFORMATION_GROUP_LENGTH || first.len.get() != Some(4) {
        return Err(ScanError::NotDicom(format!(
            "the file meta group starts with {} of {} bytes, not FileMetaInformationGroupLength (0002,0000) of 4 bytes",
            attribute_name(first.tag),
            first.len.get().unwrap_or(u32::MAX)
        )));
    }
    let mut value = [0u8; 4];
    reader
        .read_exact(&mut value)
        .map_err(|_| ScanError::Truncated("the file meta group"))?;
    let group_len = u64::from(u32::from_le_bytes(value));
    let meta_start = 132 + 12;
    check_value(
        tags::FILE_META_INFORMATION_GROUP_LENGTH,
        group_len,
        file_len.saturating_sub(meta_start),
        MAX_META,
    )?;
    let mut read = 0u64;
    let mut ts_uid = None;
    while read < group_len {
        let (header, header_len) = decoder.decode_header(reader).map_err(header_error)?;
        let attribute = attribute_name(header.tag);
        let len = header
            .len
            .get()
            .ok_or_else(|| ScanError::InvalidAttribute {
                name: "file meta group",
                problem: format!("{attribute} has an undefined length"),
            })? as u64;
        read += header_len as u64;
        if read + len > group_len {
            return Err(ScanError::InvalidAttribute {
                name: "FileMetaInformationGroupLength",
                problem: format!(
                    "says {group_len} bytes, but {attribute} ends at byte {} of the group",
                    read + len
                ),
            });
        }
        if header.tag == tags::TRANSFER_SYNTAX_UID {
            let mut text = vec![0u8; len as usize];
            reader.read_exact(&mut text)?;
            ts_uid = Some(
                String::from_utf8_lossy(&text)
                    .trim_end_matches(['\0', ' '])
                    .to_string(),
            );
        } else {
            io::copy(&mut reader.by_ref().take(len), &mut io::sink())?;
        }
        read += len;
    }
    let ts_uid = ts_uid
        .filter(|t| !t.is_empty())
        .ok_or(ScanError::MissingAttribute("TransferSyntaxUID"))?;
    Ok((ts_uid, meta_start + group_len))
}

/// A declared value length checked against the bytes left in the file and a cap.
fn check_value(tag: Tag, len: u64, left: u64, cap: u64) -> Result<(), ScanError> {
    if len > left {
        return Err(ScanError::ValueBeyondFile {
            attribute: attribute_name(tag),
            len,
            left,
        });
    }
    if len > cap {
        return Err(ScanError::ValueTooLarge {
            attribute: attribute_name(tag),
            len,
            limit: cap,
        });
    }
    Ok(())
}

/// A reader that counts the bytes taken from it, so the walk knows its file position while
/// the parser owns the reader.
struct Counting<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// Walks the data set with dicom-parser up to the top-level Pixel Data element, checking
/// each element, item and sequence length on the way.
fn walk_data_set<R: Read>(
    reader: R,
    file_len: u64,
    dataset_start: u64,
    ts: &TransferSyntax,
    ts_uid: &str,
) -> Result<PixelData, ScanError> {
    let count = Rc::new(Cell::new(0u64));
    let counting = Counting {
        inner: reader,
        count: count.clone(),
    };
    let decoder = StatefulDecoder::new_with_ts(counting, ts, dataset_start)
        .map_err(|e| ScanError::UnsupportedTransferSyntax(format!("{ts_uid}: {e}")))?;
    let mut tokens = LazyDataSetReader::new(decoder);
    let position = || dataset_start + count.get();
    // The sequence (or pixel sequence) tags we are inside, innermost last.
    let mut open: Vec<Tag> = Vec::new();
    while let Some(token) = tokens.advance() {
        let token = token.map_err(|e| parse_error(&e, "the data set"))?;
        let at = position();
        if at - dataset_start > MAX_HEADER {
            return Err(ScanError::HeaderTooLarge { limit: MAX_HEADER });
        }
        let left = file_len.saturating_sub(at);
        let inside = || open.last().copied().unwrap_or(tags::PIXEL_DATA);
        match token {
            LazyDataToken::SequenceStart { tag, len } => {
                if let Some(len) = len.get() {
                    check_value(tag, len as u64, left, MAX_HEADER)?;
                }
                if open.len() >= MAX_DEPTH {
                    return Err(ScanError::NestedTooDeep {
                        attribute: attribute_name(tag),
                        limit: MAX_DEPTH,
                    });
                }
                open.push(tag);
            }
            LazyDataToken::SequenceEnd => {
                open.pop();
            }
            LazyDataToken::ItemStart { len } => {
                if let Some(len) = len.get() {
                    check_value(inside(), len as u64, left, MAX_HEADER)?;
                }
            }
            LazyDataToken::PixelSequenceStart if open.is_empty() => {
                return Ok(PixelData::Encapsulated { items_start: at });
            }
            // Encapsulated pixel data nested in a sequence (an icon image) is not ours.
            LazyDataToken::PixelSequenceStart => {
                if open.len() >= MAX_DEPTH {
                    return Err(ScanError::NestedTooDeep {
                        attribute: attribute_name(tags::PIXEL_DATA),
                        limit: MAX_DEPTH,
                    });
                }
                open.push(tags::PIXEL_DATA);
            }
            LazyDataToken::LazyValue { header, decoder }
                if open.is_empty() && header.tag == tags::PIXEL_DATA =>
            {
                let len = header.len.get().ok_or_else(|| {
                    ScanError::MalformedPixelData("native pixel data with undefined length".into())
                })? as u64;
                if len > left {
                    return Err(ScanError::ValueBeyondFile {
                        attribute: attribute_name(tags::PIXEL_DATA),
                        len,
                        left,
                    });
                }
                return Ok(PixelData::Native {
                    start: decoder.position(),
                    len,
                });
            }
            LazyDataToken::LazyValue { decoder, header } => {
                let len = header.len.get().unwrap_or(0);
                check_value(header.tag, len as u64, left, MAX_ELEMENT)?;
                decoder
                    .skip_bytes(len)
                    .map_err(|e| parse_error(&e, "a data element"))?;
            }
            LazyDataToken::LazyItemValue { len, decoder } => {
                check_value(inside(), len as u64, left, MAX_ELEMENT)?;
                decoder
                    .skip_bytes(len)
                    .map_err(|e| parse_error(&e, "a sequence item"))?;
            }
            _ => {}
        }
    }
    Err(ScanError::MissingAttribute("PixelData"))
}

/// A parser error as a [`ScanError`]: a short read is a truncated file.
pub(super) fn parse_error(e: &(dyn std::error::Error + 'static), place: &'static str) -> ScanError {
    if super::dicom::error_chain_has_eof(e) {
        ScanError::Truncated(place)
    } else {
        ScanError::MalformedPixelData(super::dicom::error_chain(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_must_fit_the_file_and_the_cap() {
        assert!(check_value(tags::ICC_PROFILE, 100, 100, MAX_ELEMENT).is_ok());
        let beyond = check_value(tags::PATIENT_NAME, 101, 100, MAX_ELEMENT).unwrap_err();
        assert_eq!(
            beyond.to_string(),
            "PatientName (0010,0010) declares a value of 101 bytes but only 100 bytes follow in the file (truncated or crafted)"
        );
        let large =
            check_value(tags::ICC_PROFILE, MAX_ELEMENT + 1, u64::MAX, MAX_ELEMENT).unwrap_err();
        assert!(matches!(large, ScanError::ValueTooLarge { .. }), "{large}");
        assert_eq!(attribute_name(Tag(0x0009, 0x1001)), "attribute (0009,1001)");
    }
}
