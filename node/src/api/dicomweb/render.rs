//! Rendered images (PS3.18 8.3.5 "rendered" resources): a frame or single-frame instance as
//! a consumer image. A JPEG baseline frame asked for as JPEG at its own size is sent as
//! stored (no decoding); PNG, or a `viewport` smaller than the frame, decodes it, scales it
//! to fit the viewport (aspect kept) and encodes the answer. Other stored syntaxes would
//! need decoders this node does not have, and are 406.

use std::io::Cursor;

use image::ImageFormat;
use image::imageops::FilterType;

use super::super::ApiError;
use super::accept::{MediaRange, not_acceptable};

/// The media types a rendered resource can be answered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rendered {
    Jpeg,
    Png,
}

impl Rendered {
    pub fn media_type(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
        }
    }
}

/// The first acceptable of JPEG and PNG in the client's order (`*/*` means JPEG).
pub fn negotiate(ranges: &[MediaRange]) -> Result<Rendered, ApiError> {
    ranges
        .iter()
        .find_map(|r| match r.media_type.as_str() {
            "image/jpeg" | "image/*" | "*/*" => Some(Rendered::Jpeg),
            "image/png" => Some(Rendered::Png),
            _ => None,
        })
        .ok_or_else(|| not_acceptable("rendered images are available as image/jpeg or image/png"))
}

/// `viewport=vw,vh[,sx,sy,sw,sh]`: the size to fit the image into (the source region
/// form is accepted, and the whole image is used).
pub fn viewport(pairs: &[(String, String)]) -> Result<Option<(u32, u32)>, ApiError> {
    let Some((_, value)) = pairs.iter().find(|(k, _)| k == "viewport") else {
        return Ok(None);
    };
    let mut numbers = value.split(',').map(|n| n.trim().parse::<u32>());
    match (numbers.next(), numbers.next()) {
        (Some(Ok(w)), Some(Ok(h))) if w > 0 && h > 0 => Ok(Some((w, h))),
        _ => Err(ApiError::bad_request(format!(
            "viewport must be width,height in pixels, not {value:?}"
        ))),
    }
}

/// Renders one stored frame.
pub fn render(
    frame: Vec<u8>,
    transfer_syntax: &str,
    format: Rendered,
    viewport: Option<(u32, u32)>,
) -> Result<Vec<u8>, ApiError> {
    let jpeg = matches!(
        transfer_syntax,
        "1.2.840.10008.1.2.4.50" | "1.2.840.10008.1.2.4.51"
    );
    if !jpeg {
        return Err(not_acceptable(format!(
            "frames stored as {transfer_syntax} need a decoder this node does not have; JPEG \
             baseline frames render"
        )));
    }
    if format == Rendered::Jpeg && viewport.is_none() {
        return Ok(frame);
    }
    let mut image = image::load_from_memory_with_format(&frame, ImageFormat::Jpeg)
        .map_err(|e| ApiError::internal(format!("stored JPEG frame does not decode: {e}")))?;
    if let Some((w, h)) = viewport
        && (w < image.width() || h < image.height())
    {
        image = image.resize(w, h, FilterType::Triangle);
    }
    let mut out = Cursor::new(Vec::new());
    let encoded = match format {
        Rendered::Png => image.write_to(&mut out, ImageFormat::Png),
        Rendered::Jpeg => image.to_rgb8().write_to(&mut out, ImageFormat::Jpeg),
    };
    encoded.map_err(|e| ApiError::internal(format!("cannot encode the rendered image: {e}")))?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 128]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Jpeg).unwrap();
        out.into_inner()
    }

    #[test]
    fn jpeg_at_its_own_size_is_sent_as_stored() {
        let frame = jpeg(64, 32);
        let out = render(
            frame.clone(),
            "1.2.840.10008.1.2.4.50",
            Rendered::Jpeg,
            None,
        )
        .unwrap();
        assert_eq!(out, frame);
    }

    #[test]
    fn png_and_viewport_decode_and_scale() {
        let out = render(
            jpeg(64, 32),
            "1.2.840.10008.1.2.4.50",
            Rendered::Png,
            Some((16, 16)),
        )
        .unwrap();
        let png = image::load_from_memory_with_format(&out, ImageFormat::Png).unwrap();
        assert_eq!((png.width(), png.height()), (16, 8));
    }

    #[test]
    fn other_syntaxes_are_not_acceptable() {
        let err = render(vec![0; 10], "1.2.840.10008.1.2.4.90", Rendered::Png, None).unwrap_err();
        assert_eq!(err.status, axum::http::StatusCode::NOT_ACCEPTABLE);
        assert!(viewport(&[("viewport".into(), "0,5".into())]).is_err());
        assert_eq!(
            viewport(&[("viewport".into(), "512,256,0,0,10,10".into())]).unwrap(),
            Some((512, 256))
        );
    }
}
