//! A minimal sRGB ICC profile (version 2.1, display class) for the optical path.
//!
//! DICOM requires an ICC profile in the Optical Path Sequence of colour WSI images
//! (PS3.3 C.8.12.5, type 1C) so viewers can manage colour. The pixels are generated as
//! sRGB, so the profile describes sRGB: D50-adapted Rec. 709 primaries and a 2.2 gamma
//! curve. Built byte by byte here because it is a fixed ~500-byte structure and no
//! dependency is worth it; the layout follows ICC.1:2001-04.

/// `v` as an ICC s15Fixed16Number, big-endian.
fn s15f16(v: f64) -> [u8; 4] {
    ((v * 65536.0).round() as i32).to_be_bytes()
}

/// An XYZType tag body.
fn xyz(x: f64, y: f64, z: f64) -> Vec<u8> {
    let mut t = b"XYZ \0\0\0\0".to_vec();
    for v in [x, y, z] {
        t.extend_from_slice(&s15f16(v));
    }
    t
}

/// The profile bytes. Deterministic (the creation date is fixed).
pub(crate) fn srgb_profile() -> Vec<u8> {
    let description = b"slidemesh synthetic sRGB";
    let mut desc = b"desc\0\0\0\0".to_vec();
    desc.extend_from_slice(&(description.len() as u32 + 1).to_be_bytes());
    desc.extend_from_slice(description);
    desc.push(0);
    // Empty Unicode and ScriptCode descriptions (language, count, code, count, 67 bytes).
    desc.extend_from_slice(&[0; 4 + 4 + 2 + 1 + 67]);
    let mut cprt = b"text\0\0\0\0".to_vec();
    cprt.extend_from_slice(b"No copyright, use freely\0");
    // One curve entry: gamma as u8Fixed8Number (2.2 = 0x0233).
    let trc = b"curv\0\0\0\0\0\0\0\x01\x02\x33".to_vec();

    let tags: Vec<(&[u8; 4], Vec<u8>)> = vec![
        (b"desc", desc),
        (b"cprt", cprt),
        (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz(0.4361, 0.2225, 0.0139)),
        (b"gXYZ", xyz(0.3851, 0.7169, 0.0971)),
        (b"bXYZ", xyz(0.1431, 0.0606, 0.7141)),
        (b"rTRC", trc.clone()),
        (b"gTRC", trc.clone()),
        (b"bTRC", trc),
    ];

    // Tag data follows the header (128 bytes) and the tag table, each on a 4-byte
    // boundary.
    let table_len = 4 + 12 * tags.len();
    let mut data = Vec::new();
    let mut table = (tags.len() as u32).to_be_bytes().to_vec();
    for (signature, body) in &tags {
        let offset = 128 + table_len + data.len();
        table.extend_from_slice(*signature);
        table.extend_from_slice(&(offset as u32).to_be_bytes());
        table.extend_from_slice(&(body.len() as u32).to_be_bytes());
        data.extend_from_slice(body);
        while !data.len().is_multiple_of(4) {
            data.push(0);
        }
    }
    let size = 128 + table_len + data.len();

    let mut header = Vec::with_capacity(128);
    header.extend_from_slice(&(size as u32).to_be_bytes());
    header.extend_from_slice(&[0; 4]); // preferred CMM: none
    header.extend_from_slice(&[0x02, 0x10, 0, 0]); // version 2.1
    header.extend_from_slice(b"mntr"); // display device
    header.extend_from_slice(b"RGB ");
    header.extend_from_slice(b"XYZ ");
    for v in [2024u16, 1, 1, 0, 0, 0] {
        header.extend_from_slice(&v.to_be_bytes()); // creation date, fixed
    }
    header.extend_from_slice(b"acsp");
    header.extend_from_slice(&[0; 4 + 4 + 4 + 4 + 8]); // platform, flags, maker, model, attributes
    header.extend_from_slice(&0u32.to_be_bytes()); // perceptual rendering intent
    for v in [0.9642, 1.0, 0.8249] {
        header.extend_from_slice(&s15f16(v)); // PCS illuminant D50
    }
    header.extend_from_slice(&[0; 4]); // creator
    header.resize(128, 0);

    let mut profile = header;
    profile.extend_from_slice(&table);
    profile.extend_from_slice(&data);
    debug_assert_eq!(profile.len(), size);
    profile
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_is_well_formed() {
        let p = srgb_profile();
        assert_eq!(
            u32::from_be_bytes(p[0..4].try_into().unwrap()) as usize,
            p.len()
        );
        assert_eq!(&p[36..40], b"acsp");
        assert_eq!(p.len() % 2, 0, "DICOM OB values are even");
        let count = u32::from_be_bytes(p[128..132].try_into().unwrap()) as usize;
        assert_eq!(count, 9);
        for i in 0..count {
            let e = &p[132 + 12 * i..144 + 12 * i];
            let offset = u32::from_be_bytes(e[4..8].try_into().unwrap()) as usize;
            let len = u32::from_be_bytes(e[8..12].try_into().unwrap()) as usize;
            assert_eq!(offset % 4, 0);
            assert!(offset + len <= p.len());
        }
    }
}
