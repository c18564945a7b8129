//! Who and what a synthetic slide is about: patient, study, specimen, institution and
//! UIDs, all derived from the seed so they are stable across runs.
//!
//! The data is realistic in shape but obviously synthetic: every family name is SYNTH
//! and patient ids are in the NHS test range (999...), which is never issued to people.

use anyhow::bail;

use slidemesh_protocol::TrustCode;

use super::spec::SynthSpec;

/// Given names with the sex recorded for them.
const GIVEN_NAMES: &[(&str, &str)] = &[
    ("ALICE", "F"),
    ("BRIAN", "M"),
    ("CHLOE", "F"),
    ("DAVID", "M"),
    ("ELEANOR", "F"),
    ("FARHAN", "M"),
    ("GRACE", "F"),
    ("HARRY", "M"),
    ("IMOGEN", "F"),
    ("JAMAL", "M"),
    ("KATHERINE", "F"),
    ("LIAM", "M"),
    ("MARGARET", "F"),
    ("NAVEED", "M"),
    ("OLIVIA", "F"),
    ("PETER", "M"),
    ("PRIYA", "F"),
    ("ROBERT", "M"),
    ("SIOBHAN", "F"),
    ("THOMAS", "M"),
    ("UZMA", "F"),
    ("WILLIAM", "M"),
    ("YASMIN", "F"),
    ("ZACHARY", "M"),
];

pub(crate) use slidemesh_node::dicom_build::Code;

const fn sct(value: &'static str, meaning: &'static str) -> Code {
    Code::new(value, "SCT", meaning)
}

/// Anatomic sites a histopathology slide commonly comes from, with the sex a site
/// implies (prostate: male only, breast mostly female; we keep breast female).
const SITES: &[(Code, Option<&str>)] = &[
    (sct("76752008", "Breast"), Some("F")),
    (sct("71854001", "Colon"), None),
    (sct("41216001", "Prostate"), Some("M")),
    (sct("39937001", "Skin"), None),
    (sct("39607008", "Lung"), None),
    (sct("69695003", "Stomach"), None),
];

/// Everything about a slide that is not pixels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SlideMeta {
    pub trust_ods: String,
    pub institution_name: String,
    pub patient_name: String,
    pub patient_id: String,
    pub patient_birth_date: String,
    pub patient_sex: &'static str,
    pub study_date: String,
    pub study_time: String,
    pub acquisition_datetime: String,
    pub accession_number: String,
    pub study_id: String,
    pub container_id: String,
    pub specimen_id: String,
    pub site: Code,
    pub study_uid: String,
    pub series_uid: String,
    pub frame_of_reference_uid: String,
    pub dimension_organization_uid: String,
    pub specimen_uid: String,
    pub device_serial: String,
    /// Seeds the per-instance UIDs.
    uid_seed: u64,
}

/// Institution name for a trust code: the six co-operative trusts by name, any other
/// well-formed ODS code (3 to 5 upper-case letters or digits) generically, so testnets
/// can add members.
pub(crate) fn institution_for(ods: &str) -> anyhow::Result<String> {
    let code: TrustCode = ods.parse()?;
    Ok(code
        .cooperative_name()
        .map(str::to_string)
        .unwrap_or_else(|| format!("NHS organisation {code}")))
}

/// SplitMix64 step: the deterministic random stream behind all metadata.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A 64-bit hash of a seed and a label, for independent streams per purpose.
fn hash(seed: u64, label: &str) -> u64 {
    let mut state = seed ^ 0x736c_6964_656d_7368; // "slidemsh"
    for b in label.bytes() {
        state = splitmix(&mut state) ^ b as u64;
    }
    splitmix(&mut state)
}

/// A UID under the 2.25 root (PS3.5 B.2): the decimal form of a 128-bit UUID, here a
/// version 8 (custom) UUID whose bits come from hashing the seed and a label.
fn uid(seed: u64, label: &str) -> String {
    let hi = hash(seed, label);
    let lo = hash(seed ^ 0x5555_5555_5555_5555, label);
    let mut v = ((hi as u128) << 64) | lo as u128;
    v &= !(0xf_u128 << 76);
    v |= 0x8_u128 << 76; // version 8
    v &= !(0x3_u128 << 62);
    v |= 0x2_u128 << 62; // RFC 4122 variant
    format!("2.25.{v}")
}

/// Proleptic Gregorian date from days since 1970-01-01 (Hinnant's civil_from_days).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn da(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}{m:02}{d:02}")
}

/// A 10-digit NHS-number-shaped id in the test range 999 000 0000 - 999 999 9999, with a
/// valid modulus-11 check digit so validators accept it.
fn nhs_test_number(rng: &mut u64) -> String {
    loop {
        let body = 999_000_000 + splitmix(rng) % 1_000_000;
        let digits: Vec<u32> = body
            .to_string()
            .bytes()
            .map(|b| (b - b'0') as u32)
            .collect();
        let sum: u32 = digits.iter().zip((2..=10).rev()).map(|(d, w)| d * w).sum();
        let check = 11 - sum % 11;
        match check {
            11 => return format!("{body}0"),
            10 => continue, // invalid number, draw again
            c => return format!("{body}{c}"),
        }
    }
}

impl SlideMeta {
    pub(crate) fn from_spec(spec: &SynthSpec) -> anyhow::Result<Self> {
        let seed = spec.seed;
        // UIDs name these exact files: a slide of another size, tiling or encoding from the
        // same seed is a different series, so everything that changes the bytes goes in.
        let uid_seed = hash(
            seed,
            &format!(
                "{}x{}/t{}/q{}/l{:?}/{}/f{}/{}",
                spec.width,
                spec.height,
                spec.tile_size,
                spec.jpeg_quality,
                spec.levels,
                spec.offset_table.as_str(),
                spec.fragments_per_frame,
                spec.trust_ods
            ),
        );
        let institution_name = institution_for(&spec.trust_ods)?;
        let mut rng = hash(seed, "meta");
        let mut pick = |n: usize| (splitmix(&mut rng) % n as u64) as usize;

        let (site, site_sex) = SITES[pick(SITES.len())];
        let names: Vec<&(&str, &str)> = GIVEN_NAMES
            .iter()
            .filter(|(_, sex)| site_sex.is_none_or(|s| s == *sex))
            .collect();
        let &&(given, sex) = names
            .get(pick(names.len()))
            .ok_or_else(|| anyhow::anyhow!("no name fits the anatomic site"))?;
        let initial = (b'A' + pick(26) as u8) as char;

        // Scans between 2023-01-01 (19358) and about 2025-09; patients aged 25 to 90.
        let scan_day = 19_358 + pick(1000) as i64;
        let age_days = (25 * 365 + pick(65 * 365)) as i64;
        let (year, _, _) = civil_from_days(scan_day);
        let (hh, mm, ss) = (8 + pick(10), pick(60), pick(60));
        let accession_seq = pick(100_000);
        let block = (b'A' + pick(6) as u8) as char;
        let slide_no = 1 + pick(9);
        let mut id_rng = hash(seed, "patient-id");
        let patient_id = nhs_test_number(&mut id_rng);
        if !patient_id.starts_with("999") {
            bail!("internal error: patient id {patient_id} left the test range");
        }
        let short_year = year % 100;
        let accession_number = format!("{}{short_year:02}H{accession_seq:05}", spec.trust_ods);
        let container_id = format!("{accession_number}-{block}{slide_no}");
        Ok(SlideMeta {
            trust_ods: spec.trust_ods.clone(),
            institution_name,
            patient_name: format!("SYNTH^{given}^{initial}"),
            patient_id,
            patient_birth_date: da(scan_day - age_days),
            patient_sex: sex,
            study_date: da(scan_day),
            study_time: format!("{hh:02}{mm:02}{ss:02}"),
            acquisition_datetime: format!("{}{hh:02}{mm:02}{ss:02}", da(scan_day)),
            study_id: format!("S{short_year:02}{accession_seq:05}"),
            specimen_id: format!("{accession_number}-{block}"),
            container_id,
            accession_number,
            site,
            study_uid: uid(uid_seed, "study"),
            series_uid: uid(uid_seed, "series"),
            frame_of_reference_uid: uid(uid_seed, "frame-of-reference"),
            dimension_organization_uid: uid(uid_seed, "dimension-organization"),
            specimen_uid: uid(uid_seed, "specimen"),
            device_serial: format!("SYN-{:04}", hash(seed, "scanner") % 10_000),
            uid_seed,
        })
    }

    /// The SOP Instance UID of the instance with the given file stem.
    pub(crate) fn instance_uid(&self, name: &str) -> String {
        uid(self.uid_seed, &format!("instance/{name}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_valid_and_distinct() {
        let a = uid(1, "study");
        let b = uid(1, "series");
        let c = uid(2, "study");
        for u in [&a, &b, &c] {
            assert!(u.len() <= 64, "{u}");
            assert!(u.starts_with("2.25."));
            assert!(!u[5..].starts_with('0'));
            assert!(u[5..].bytes().all(|b| b.is_ascii_digit()));
        }
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, uid(1, "study"));
    }

    #[test]
    fn nhs_numbers_are_test_range_with_valid_check_digit() {
        let mut rng = 5;
        for _ in 0..200 {
            let id = nhs_test_number(&mut rng);
            assert_eq!(id.len(), 10);
            assert!(id.starts_with("999"));
            let d: Vec<u32> = id.bytes().map(|b| (b - b'0') as u32).collect();
            let sum: u32 = (0..9).map(|i| d[i] * (10 - i as u32)).sum();
            assert_eq!((11 - sum % 11) % 11, d[9]);
        }
    }

    #[test]
    fn dates() {
        assert_eq!(da(0), "19700101");
        assert_eq!(da(19_358), "20230101");
        assert_eq!(da(-1), "19691231");
        assert_eq!(da(11_016), "20000229");
    }

    #[test]
    fn metadata_is_deterministic_and_plausible() {
        let spec = SynthSpec::new(9, 1000, 800);
        let a = SlideMeta::from_spec(&spec).unwrap();
        assert_eq!(a, SlideMeta::from_spec(&spec).unwrap());
        assert!(a.patient_name.starts_with("SYNTH^"));
        assert_eq!(a.institution_name, "Leeds Teaching Hospitals NHS Trust");
        assert!(a.accession_number.len() <= 16);
        assert!(a.study_id.len() <= 16);
        assert!(a.patient_birth_date < a.study_date);
        let other = SlideMeta::from_spec(&SynthSpec::new(10, 1000, 800)).unwrap();
        assert_ne!(a.series_uid, other.series_uid);
        assert_eq!(
            institution_for("RAE").unwrap(),
            "Bradford Teaching Hospitals NHS Foundation Trust"
        );
        // ODS codes are case-insensitive; malformed ones are refused.
        assert_eq!(
            institution_for("rr8").unwrap(),
            "Leeds Teaching Hospitals NHS Trust"
        );
        assert!(institution_for("R-8").is_err());
    }
}
