//! The profile over a hand-written slide whose metadata carries every kind of identifier a
//! scanner and a LIMS write, nested ones and a private attribute included.

use serde_json::json;
use slidemesh_protocol::{
    AssociatedImage, DimensionOrganization, InstanceMeta, Level, OpticalPath, TileId,
};

use super::*;

const PATIENT: &str = "9434765919";
const NAME: &str = "CARTWRIGHT^Edith";
const SPECIMEN: &str = "S26-004711-A1";

fn dataset(sop_uid: &str, image_type: &str) -> String {
    let mut data = json!({
        "00080008": { "vr": "CS", "Value": ["ORIGINAL", "PRIMARY", image_type, "NONE"] },
        "00080016": { "vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.77.1.6"] },
        "00080018": { "vr": "UI", "Value": [sop_uid] },
        "00080020": { "vr": "DA", "Value": ["20260314"] },
        "00080023": { "vr": "DA", "Value": ["20260314"] },
        "0008002A": { "vr": "DT", "Value": ["20260314093000"] },
        "00080050": { "vr": "SH", "Value": ["H26-8812"] },
        "00080080": { "vr": "LO", "Value": ["Leeds General Infirmary"] },
        "00080090": { "vr": "PN", "Value": [{ "Alphabetic": "PATEL^Anil^^Dr" }] },
        "00100010": { "vr": "PN", "Value": [{ "Alphabetic": NAME }] },
        "00100020": { "vr": "LO", "Value": [PATIENT] },
        "00100021": { "vr": "LO", "Value": ["NHS"] },
        "00100030": { "vr": "DA", "Value": ["19470602"] },
        "00100040": { "vr": "CS", "Value": ["F"] },
        "0020000D": { "vr": "UI", "Value": ["1.2.826.0.1.3680043.10.1"] },
        "0020000E": { "vr": "UI", "Value": ["1.2.826.0.1.3680043.10.2"] },
        "00200052": { "vr": "UI", "Value": ["1.2.826.0.1.3680043.10.3"] },
        "00181000": { "vr": "LO", "Value": ["SN-0042"] },
    });
    let specimen = json!({
        "00400512": { "vr": "LO", "Value": [SPECIMEN] },
        "00400560": { "vr": "SQ", "Value": [{
            "00400551": { "vr": "LO", "Value": [SPECIMEN] },
            "00400554": { "vr": "UI", "Value": ["1.2.826.0.1.3680043.10.9"] },
            "00400600": { "vr": "LO", "Value": ["Mrs Cartwright's colon biopsy"] },
            "00400610": { "vr": "SQ", "Value": [{
                "00400612": { "vr": "SQ", "Value": [{
                    "0040A040": { "vr": "CS", "Value": ["TEXT"] },
                    "0040A160": { "vr": "UT", "Value": [SPECIMEN] },
                    "0040A121": { "vr": "DA", "Value": ["20260310"] },
                }] },
            }] },
            "00082228": { "vr": "SQ", "Value": [{
                "00080100": { "vr": "SH", "Value": ["71854001"] },
                "00080102": { "vr": "SH", "Value": ["SCT"] },
                "00080104": { "vr": "LO", "Value": ["Colon"] },
            }] },
        }] },
        "00091010": { "vr": "LO", "Value": ["private: patient's ward 7"] },
        "00480001": { "vr": "FL", "Value": [12.5] },
        "00080019": { "vr": "UI", "Value": ["1.2.826.0.1.3680043.10.77"] },
        "22000002": { "vr": "UT", "Value": ["CARTWRIGHT 9434765919"] },
    });
    for (tag, element) in specimen.as_object().unwrap() {
        data[tag] = element.clone();
    }
    data.to_string()
}

fn manifest(sop_prefix: &str) -> SlideManifest {
    let level_uid = format!("{sop_prefix}.1");
    let label_uid = format!("{sop_prefix}.2");
    let thumb_uid = format!("{sop_prefix}.3");
    let instance = |uid: &str, role, image_type| InstanceMeta {
        sop_instance_uid: uid.to_string(),
        role,
        transfer_syntax_uid: "1.2.840.10008.1.2.4.50".into(),
        object: ObjectId::of(uid.as_bytes()),
        file_len: 1000,
        metadata_json: dataset(uid, image_type),
    };
    let associated = |kind, uid: &str, tile: u8| AssociatedImage {
        kind,
        width: 100,
        height: 100,
        tile_width: 100,
        tile_height: 100,
        tiles: vec![TileId::of(&[tile])],
        instance_uid: uid.to_string(),
    };
    let mut instances = vec![
        instance(&level_uid, InstanceRole::Level(0), "VOLUME"),
        instance(
            &label_uid,
            InstanceRole::Associated(AssociatedKind::Label),
            "LABEL",
        ),
        instance(
            &thumb_uid,
            InstanceRole::Associated(AssociatedKind::Thumbnail),
            "THUMBNAIL",
        ),
    ];
    instances.sort_by(|a, b| a.sop_instance_uid.cmp(&b.sop_instance_uid));
    SlideManifest {
        owner: "RR8".parse().unwrap(),
        study_uid: "1.2.826.0.1.3680043.10.1".into(),
        series_uid: "1.2.826.0.1.3680043.10.2".into(),
        frame_of_reference_uid: Some("1.2.826.0.1.3680043.10.3".into()),
        levels: vec![Level {
            width: 512,
            height: 256,
            tile_width: 256,
            tile_height: 256,
            pixel_spacing_mm: Some([0.00025, 0.00025]),
            focal_planes: 1,
            optical_paths: 1,
            organization: DimensionOrganization::TiledFull,
            tiles: vec![TileId::of(b"a"), TileId::of(b"b")],
            positions: vec![],
            instance_uids: vec![level_uid],
        }],
        associated: vec![
            associated(AssociatedKind::Label, &label_uid, 1),
            associated(AssociatedKind::Thumbnail, &thumb_uid, 2),
        ],
        optical_paths: vec![OpticalPath {
            identifier: "1".into(),
            description: None,
        }],
        instances,
    }
}

fn element<'a>(dataset: &'a Value, path: &[&str]) -> &'a Value {
    let mut at = dataset;
    for (i, tag) in path.iter().enumerate() {
        at = &at[*tag];
        if i + 1 < path.len() {
            at = &at["Value"][0];
        }
    }
    at
}

fn level_dataset(view: &SlideManifest) -> Value {
    let uid = &view.levels[0].instance_uids[0];
    let instance = view
        .instances
        .iter()
        .find(|i| &i.sop_instance_uid == uid)
        .expect("the level's instance is in the view");
    serde_json::from_str(&instance.metadata_json).unwrap()
}

#[test]
fn no_identifier_survives_in_any_form() {
    let key = NodeKey::generate();
    let original = manifest("1.2.826.0.1.3680043.10.100");
    let view = deidentify(&original, &Pseudonyms::for_project(&key, "IRAS 301234")).unwrap();
    let text = serde_json::to_string(&view).unwrap();
    for secret in [
        PATIENT,
        "CARTWRIGHT",
        "19470602",
        "20260314",
        "20260310",
        "H26-8812",
        "Leeds General",
        "PATEL",
        SPECIMEN,
        "SN-0042",
        "Mrs Cartwright",
        "ward 7",
        "1.2.826.0.1.3680043.10",
    ] {
        assert!(!text.contains(secret), "{secret:?} is still in the view");
    }
    // What is not identifying stays: the pyramid, the tiles, the anatomy, the SOP class.
    assert_eq!(view.levels[0].tiles, original.levels[0].tiles);
    let level = level_dataset(&view);
    assert_eq!(
        element(&level, &["00400560", "00082228", "00080104"])["Value"][0],
        "Colon"
    );
    assert_eq!(
        level["00080016"]["Value"][0],
        "1.2.840.10008.5.1.4.1.1.77.1.6"
    );
    assert_eq!(level["00480001"]["Value"][0], 12.5);
}

#[test]
fn the_view_records_the_profile_and_keeps_required_attributes() {
    let key = NodeKey::generate();
    let view = deidentify(&manifest("2.25.7"), &Pseudonyms::for_project(&key, "p")).unwrap();
    let level = level_dataset(&view);
    assert_eq!(level["00120062"]["Value"][0], "YES");
    assert_eq!(
        element(&level, &["00120064", "00080100"])["Value"][0],
        "113100"
    );
    // Type 1 and 2 attributes stay present: dummies or empty.
    assert_eq!(level["00080023"]["Value"][0], "19000101");
    assert_eq!(level["0008002A"]["Value"][0], "19000101000000");
    assert!(level["00080020"].get("Value").is_none());
    assert_eq!(level["00080020"]["vr"], "DA");
    assert!(level["00100040"].get("Value").is_none());
    assert!(level.get("00080080").is_none());
    assert!(level.get("00091010").is_none());
}

#[test]
fn label_and_overview_images_are_dropped_and_uids_stay_consistent() {
    let key = NodeKey::generate();
    let view = deidentify(&manifest("2.25.7"), &Pseudonyms::for_project(&key, "p")).unwrap();
    assert!(view.associated(AssociatedKind::Label).is_none());
    let thumbnail = view.associated(AssociatedKind::Thumbnail).unwrap();
    assert_eq!(view.instances.len(), 2);
    assert!(
        view.instances
            .iter()
            .any(|i| i.sop_instance_uid == thumbnail.instance_uid)
    );
    for instance in &view.instances {
        let data: Value = serde_json::from_str(&instance.metadata_json).unwrap();
        assert_eq!(data["00080018"]["Value"][0], instance.sop_instance_uid);
        assert_eq!(data["0020000D"]["Value"][0], view.study_uid);
        assert_eq!(data["0020000E"]["Value"][0], view.series_uid);
        assert!(instance.sop_instance_uid.starts_with("2.25."));
        assert!(instance.sop_instance_uid.len() <= 64);
    }
    view.validate().unwrap();
}

#[test]
fn pseudonyms_are_stable_within_a_project_and_unlinkable_across_projects() {
    let key = NodeKey::generate();
    let patient_in = |slide: &SlideManifest, project: &str| {
        let view = deidentify(slide, &Pseudonyms::for_project(&key, project)).unwrap();
        let level = level_dataset(&view);
        let id = level["00100020"]["Value"][0].as_str().unwrap().to_string();
        let name = level["00100010"]["Value"][0]["Alphabetic"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(id, name, "name and id carry the same pseudonym");
        let container = level["00400512"]["Value"][0].as_str().unwrap().to_string();
        let nested = element(&level, &["00400560", "00400551"])["Value"][0]
            .as_str()
            .unwrap()
            .to_string();
        let text = element(&level, &["00400560", "00400610", "00400612", "0040A160"])["Value"][0]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(container, nested, "one specimen, one pseudonym");
        assert_eq!(container, text, "one specimen, one pseudonym");
        (id, container, view.slide_id())
    };
    let first = manifest("2.25.7");
    let second_slide_same_patient = manifest("2.25.8");
    let (a, specimen_a, view_a) = patient_in(&first, "IRAS 301234");
    let (again, _, view_again) = patient_in(&first, "IRAS 301234");
    let (same_patient, _, _) = patient_in(&second_slide_same_patient, "IRAS 301234");
    let (b, specimen_b, view_b) = patient_in(&first, "IRAS 999999");
    assert_eq!(a, again);
    assert_eq!(view_a, view_again, "the same view every time");
    assert_eq!(a, same_patient, "stable across a project's slides");
    assert_ne!(a, b, "unlinkable across projects");
    assert_ne!(specimen_a, specimen_b);
    assert_ne!(view_a, view_b);
    // And another owner's key gives other pseudonyms for the same project.
    let other = deidentify(
        &first,
        &Pseudonyms::for_project(&NodeKey::generate(), "IRAS 301234"),
    )
    .unwrap();
    assert_ne!(level_dataset(&other)["00100020"]["Value"][0], a.as_str());
}

#[test]
fn an_associated_image_with_burned_in_text_is_dropped_whatever_its_kind() {
    let key = NodeKey::generate();
    let mut slide = manifest("2.25.7");
    let thumbnail = slide
        .instances
        .iter_mut()
        .find(|i| i.role == InstanceRole::Associated(AssociatedKind::Thumbnail))
        .unwrap();
    let mut data: Value = serde_json::from_str(&thumbnail.metadata_json).unwrap();
    data["00280301"] = json!({ "vr": "CS", "Value": ["YES"] });
    thumbnail.metadata_json = data.to_string();
    let view = deidentify(&slide, &Pseudonyms::for_project(&key, "p")).unwrap();
    assert!(view.associated.is_empty(), "{:?}", view.associated);
    assert_eq!(view.instances.len(), 1);
    view.validate().unwrap();
}
