//! Content negotiation for WADO-RS: which of the representations this node can produce the
//! client accepts. The node never transcodes: frames and instances exist only in the
//! transfer syntax they were stored in, so anything else is 406 with a message saying what
//! is available.

use axum::http::{HeaderMap, StatusCode, header};

use super::super::ApiError;

/// Explicit VR Little Endian: the default transfer syntax of `application/octet-stream` and
/// `application/dicom` when the client names none.
pub const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
const IMPLICIT_LE: &str = "1.2.840.10008.1.2";

/// One media range of an `Accept` header.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaRange {
    pub media_type: String,
    params: Vec<(String, String)>,
    q: f32,
}

impl MediaRange {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The request's media ranges, most preferred first. An absent header is `*/*`.
pub fn ranges(headers: &HeaderMap) -> Vec<MediaRange> {
    let raw = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let mut out: Vec<MediaRange> = split_outside_quotes(&raw, ',')
        .iter()
        .filter_map(|range| parse_media_type(range))
        .filter(|r| r.q > 0.0)
        .collect();
    out.sort_by(|a, b| b.q.total_cmp(&a.q));
    if out.is_empty() {
        out.push(MediaRange {
            media_type: "*/*".into(),
            params: Vec::new(),
            q: 1.0,
        });
    }
    out
}

/// One media type with its parameters (`multipart/related; type="..."; boundary=...`);
/// `q` is taken out of the parameters.
pub fn parse_media_type(text: &str) -> Option<MediaRange> {
    let mut pieces = split_outside_quotes(text, ';').into_iter();
    let media_type = pieces.next()?.trim().to_ascii_lowercase();
    if media_type.is_empty() {
        return None;
    }
    let mut params = Vec::new();
    let mut q = 1.0;
    for piece in pieces {
        let Some((k, v)) = piece.split_once('=') else {
            continue;
        };
        let k = k.trim().to_ascii_lowercase();
        let v = v.trim().trim_matches('"').to_string();
        if k == "q" {
            q = v.parse().unwrap_or(0.0);
        } else {
            params.push((k, v));
        }
    }
    Some(MediaRange {
        media_type,
        params,
        q,
    })
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut quoted = false;
    for c in s.chars() {
        if c == '"' {
            quoted = !quoted;
        }
        if c == sep && !quoted {
            parts.push(String::new());
        } else if let Some(last) = parts.last_mut() {
            last.push(c);
        }
    }
    parts
}

/// The media type of one frame in a transfer syntax, as DICOMweb names it.
pub fn frame_media_type(ts: &str) -> &'static str {
    crate::store::instance::tile_media_type(ts)
}

/// The transfer syntax a media type means when the client names none (PS3.18 8.7.3.5).
fn default_syntax(media_type: &str) -> Option<&'static str> {
    Some(match media_type {
        "application/octet-stream" | "application/dicom" => EXPLICIT_LE,
        "image/jpeg" => "1.2.840.10008.1.2.4.50",
        "image/jp2" => "1.2.840.10008.1.2.4.90",
        "image/jls" => "1.2.840.10008.1.2.4.80",
        "image/dicom-rle" | "image/x-dicom-rle" => "1.2.840.10008.1.2.5",
        "image/jphc" => "1.2.840.10008.1.2.4.201",
        _ => return None,
    })
}

/// Whether `wanted` (a named syntax, `*`, or none for the type's default) is what is stored.
fn syntax_fits(wanted: Option<&str>, part_type: &str, stored: &str) -> bool {
    let native = |ts: &str| ts == EXPLICIT_LE || ts == IMPLICIT_LE;
    match wanted {
        Some("*") => true,
        Some(ts) => ts == stored || (native(ts) && native(stored)),
        None => default_syntax(part_type)
            .is_some_and(|ts| ts == stored || (native(ts) && native(stored))),
    }
}

/// How to send frames: as `multipart/related` parts of `part_type`, or as one bare body.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameFormat {
    pub part_type: &'static str,
    pub multipart: bool,
}

/// Chooses how to send frames stored in `stored` syntax, or 406.
pub fn frames(ranges: &[MediaRange], stored: &str, single: bool) -> Result<FrameFormat, ApiError> {
    let native_type = frame_media_type(stored);
    let ok_type = |t: &str| {
        t == native_type
            || t == "application/octet-stream"
            || (native_type == "image/dicom-rle" && t == "image/x-dicom-rle")
    };
    for range in ranges {
        let ts = range.param("transfer-syntax");
        match range.media_type.as_str() {
            "*/*" | "multipart/*" => {
                return Ok(FrameFormat {
                    part_type: native_type,
                    multipart: true,
                });
            }
            "multipart/related" => match range.param("type") {
                None | Some("*/*") | Some("image/*") => {
                    if ts.is_none_or(|t| syntax_fits(Some(t), native_type, stored)) {
                        return Ok(FrameFormat {
                            part_type: native_type,
                            multipart: true,
                        });
                    }
                }
                Some(t) if ok_type(t) && syntax_fits(ts, t, stored) => {
                    return Ok(FrameFormat {
                        part_type: if t == "application/octet-stream" {
                            "application/octet-stream"
                        } else {
                            native_type
                        },
                        multipart: true,
                    });
                }
                Some(_) => {}
            },
            t if single && ok_type(t) && syntax_fits(ts, t, stored) => {
                return Ok(FrameFormat {
                    part_type: if t == "application/octet-stream" {
                        "application/octet-stream"
                    } else {
                        native_type
                    },
                    multipart: false,
                });
            }
            _ => {}
        }
    }
    Err(not_acceptable(format!(
        "frames of this instance exist only in transfer syntax {stored}; ask for \
         multipart/related; type=\"{native_type}\"; transfer-syntax={stored} (or \
         transfer-syntax=*): this node does not transcode"
    )))
}

/// Whether whole instances (`application/dicom`) in `stored` syntax are acceptable.
pub fn instances(ranges: &[MediaRange], stored: &str) -> Result<(), ApiError> {
    let ok = ranges.iter().any(|r| match r.media_type.as_str() {
        "*/*" | "multipart/*" => true,
        "multipart/related" => match r.param("type") {
            None | Some("application/dicom") => {
                // An unnamed syntax is taken as "as stored": clients that omit it want the
                // file, and this node has no other form of it.
                r.param("transfer-syntax")
                    .is_none_or(|t| syntax_fits(Some(t), "application/dicom", stored))
            }
            Some(_) => false,
        },
        _ => false,
    });
    if ok {
        Ok(())
    } else {
        Err(not_acceptable(format!(
            "instances are available only as multipart/related; type=\"application/dicom\" \
             in transfer syntax {stored} (or transfer-syntax=*): this node does not transcode"
        )))
    }
}

/// Whether a JSON answer (QIDO results, metadata) is acceptable.
pub fn json(ranges: &[MediaRange]) -> Result<(), ApiError> {
    let ok = ranges.iter().any(|r| {
        matches!(
            r.media_type.as_str(),
            "*/*" | "application/*" | "application/dicom+json" | "application/json"
        ) || (r.media_type == "multipart/related"
            && r.param("type") == Some("application/dicom+json"))
    });
    if ok {
        Ok(())
    } else {
        Err(not_acceptable(
            "this node answers in application/dicom+json only (no XML)",
        ))
    }
}

pub fn not_acceptable(message: impl Into<String>) -> ApiError {
    ApiError {
        status: StatusCode::NOT_ACCEPTABLE,
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JPEG: &str = "1.2.840.10008.1.2.4.50";

    fn accept(value: &str) -> Vec<MediaRange> {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, value.parse().unwrap());
        ranges(&headers)
    }

    #[test]
    fn frames_in_the_stored_syntax_are_served() {
        let jpeg =
            r#"multipart/related; type="image/jpeg"; transfer-syntax=1.2.840.10008.1.2.4.50"#;
        assert!(frames(&accept(jpeg), JPEG, false).unwrap().multipart);
        let any = r#"multipart/related; type="application/octet-stream"; transfer-syntax=*"#;
        assert_eq!(
            frames(&accept(any), JPEG, false).unwrap().part_type,
            "application/octet-stream"
        );
        assert!(frames(&accept("*/*"), JPEG, false).is_ok());
        assert!(!frames(&accept("image/jpeg"), JPEG, true).unwrap().multipart);
    }

    #[test]
    fn other_syntaxes_are_not_acceptable() {
        let j2k = r#"multipart/related; type="image/jp2"; transfer-syntax=1.2.840.10008.1.2.4.90"#;
        let err = frames(&accept(j2k), JPEG, false).unwrap_err();
        assert_eq!(err.status, StatusCode::NOT_ACCEPTABLE);
        // The default syntax of octet-stream is uncompressed, which a JPEG slide lacks.
        let raw = r#"multipart/related; type="application/octet-stream""#;
        assert!(frames(&accept(raw), JPEG, false).is_err());
        assert!(frames(&accept(raw), EXPLICIT_LE, false).is_ok());
        // A preferred unavailable range falls back to an acceptable one.
        let both = format!(
            "{j2k}, {}; q=0.5",
            r#"multipart/related; type="image/jpeg""#
        );
        assert!(frames(&accept(&both), JPEG, false).is_ok());
    }

    #[test]
    fn json_and_instances() {
        assert!(json(&accept("application/dicom+json, application/json")).is_ok());
        assert!(json(&accept("application/dicom+xml")).is_err());
        assert!(
            instances(
                &accept(r#"multipart/related; type="application/dicom""#),
                JPEG
            )
            .is_ok()
        );
        assert!(
            instances(
                &accept(r#"multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1"#),
                JPEG
            )
            .is_err()
        );
    }
}
