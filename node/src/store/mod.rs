//! The node's store: redb tables for slides, instances and tile locations, plus the object
//! store of original files ([`objects`]).
//!
//! Architecture invariant: every multi-step change is one redb write transaction, so a crash
//! leaves the old state or the new one. Objects are placed on disk before the transaction
//! that references them, never after.
//!
//! The database is opened in redb's multi-writer mode so that `slidemesh ingest` can commit
//! while `slidemesh serve` runs in another process; the server reads through fresh read
//! transactions and so sees new slides as soon as they commit.
//!
//! Tables are declared once, here, with a version in their names; a change of value layout
//! gets a new table name and a migration.

pub(crate) mod audit;
pub mod cache;
pub mod cohorts;
pub mod consent;
pub mod federation;
pub mod instance;
pub mod lims;
pub mod locations;
pub mod objects;
pub mod reader;
pub mod referrals;
pub mod research;

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{
    ConcurrencyMode, Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle,
};
use serde::{Deserialize, Serialize};
use slidemesh_protocol::{ObjectId, SignedManifest, SlideId, TileId, TrustCode};

use instance::{InstanceRecord, tile_media_type};

/// SlideId -> postcard([`SlideRecord`]).
const SLIDES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("slides_v1");
/// SlideId -> postcard([`SlideSummary`]): what lists need, without decoding manifests.
const SUMMARIES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("slide_summaries_v1");
/// Series Instance UID -> the SlideId currently representing that series.
const SERIES: TableDefinition<&str, &[u8; 32]> = TableDefinition::new("series_v1");
/// (Series UID, SOP Instance UID) -> postcard([`InstanceRecord`]).
const INSTANCES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("instances_v1");
/// TileId -> postcard([`TileLocation`]).
const TILES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("tiles_v1");
/// ObjectId -> file length: the originals this store references.
const OBJECTS: TableDefinition<&[u8; 32], u64> = TableDefinition::new("objects_v1");

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("store database {path}: {source}")]
    Open {
        path: String,
        source: redb::DatabaseError,
    },
    #[error("store: {op}: {source}")]
    Redb {
        op: &'static str,
        source: redb::Error,
    },
    #[error("store: corrupt record in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
}

pub(crate) trait RedbContext<T> {
    fn op(self, op: &'static str) -> Result<T, StoreError>;
}

impl<T, E: Into<redb::Error>> RedbContext<T> for Result<T, E> {
    fn op(self, op: &'static str) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::Redb {
            op,
            source: e.into(),
        })
    }
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(
    table: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt {
        table,
        detail: e.to_string(),
    })
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Our record types contain only postcard-supported serde shapes.
    postcard::to_stdvec(value).expect("store records serialise with postcard")
}

/// Where a slide came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Origin {
    /// Ingested at this node from original files.
    Local,
    /// Owned by another trust and shared with this one under a grant; tiles come from peers.
    Shared,
}

/// A slide as this node holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlideRecord {
    pub signed: SignedManifest,
    pub origin: Origin,
    /// Seconds since the Unix epoch.
    pub stored_at: u64,
}

/// Key facts for lists and the web UI, extracted once at ingest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlideSummary {
    pub owner: TrustCode,
    pub origin: Origin,
    pub series_uid: String,
    pub study_uid: String,
    pub container_id: Option<String>,
    pub stain: Option<String>,
    pub anatomic_site: Option<String>,
    pub acquired: Option<String>,
    pub levels: u32,
    pub width: u32,
    pub height: u32,
    pub tiles: u64,
    pub bytes: u64,
    pub has_label: bool,
    pub has_overview: bool,
    pub has_thumbnail: bool,
}

/// Where a tile's bytes are: one positioned read per range, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TileLocation {
    pub object: ObjectId,
    pub ranges: Vec<(u64, u32)>,
    /// e.g. `image/jpeg`, from the instance's transfer syntax.
    pub media_type: String,
}

impl TileLocation {
    pub fn byte_len(&self) -> u64 {
        self.ranges.iter().map(|r| r.1 as u64).sum()
    }
}

/// What completes a slide's transaction once its instances are written: the new manifest,
/// its summary, and the slide it replaces when a series gained instances.
pub struct SlideCommit {
    pub record: SlideRecord,
    pub summary: SlideSummary,
    pub replaces: Option<SlideId>,
    /// The series' consent, written in the same transaction as the slide.
    pub consent: ConsentUpdate,
    /// The slide's research facts, indexed in the same transaction (own slides).
    pub facts: Option<research::SlideFacts>,
}

/// What a slide commit does to its series' consent record.
pub enum ConsentUpdate {
    /// Leave whatever is recorded (absent means clinical care only).
    Keep,
    /// Record this, replacing what was there (the LIMS's sidecar is authoritative).
    Replace(consent::SlideConsent),
    /// Record this only if nothing is recorded yet (consent coded in the DICOM header).
    IfAbsent(consent::SlideConsent),
}

/// A scanned instance with its store rows already encoded. Ingest prepares these on the
/// scanning threads, while other files still hash, so the slide's write transaction only
/// inserts bytes (encoding and sorting ~32,000 tile rows took a fifth of a 1 GiB ingest's
/// single-threaded tail).
pub struct PreparedInstance {
    pub instance: InstanceRecord,
    row: Vec<u8>,
    /// Tile location rows sorted by tile id, one per distinct tile; each value is the
    /// encoded `TileLocation`, a range of `values`.
    tiles: Vec<(TileId, std::ops::Range<usize>)>,
    values: Vec<u8>,
}

impl PreparedInstance {
    pub fn new(instance: InstanceRecord) -> Self {
        // The instance row and the tile rows are independent; encoding them side by side
        // shortens the single-threaded step at the end of a slide's largest file.
        let (row, (tiles, values)) = rayon::join(|| encode(&instance), || tile_rows(&instance));
        Self {
            row,
            instance,
            tiles,
            values,
        }
    }

    fn tile_rows(&self) -> impl Iterator<Item = (&TileId, &[u8])> + '_ {
        self.tiles
            .iter()
            .map(|(tile, range)| (tile, &self.values[range.clone()]))
    }
}

/// [`TileLocation`] borrowed from the instance it belongs to: encodes to the same bytes
/// without cloning each frame's ranges and media type (a test holds the two together).
#[derive(Serialize)]
struct TileLocationRef<'a> {
    object: &'a ObjectId,
    ranges: &'a [(u64, u32)],
    media_type: &'a str,
}

/// An instance's tile rows sorted by tile id, one per distinct tile, each value a range of
/// the returned bytes.
fn tile_rows(instance: &InstanceRecord) -> (Vec<(TileId, std::ops::Range<usize>)>, Vec<u8>) {
    let media_type = tile_media_type(&instance.transfer_syntax_uid);
    let mut values = Vec::with_capacity(instance.frames.len() * 64);
    let mut tiles = Vec::with_capacity(instance.frames.len());
    for frame in &instance.frames {
        let start = values.len();
        let location = TileLocationRef {
            object: &instance.object,
            ranges: &frame.ranges,
            media_type,
        };
        values =
            postcard::to_extend(&location, values).expect("tile locations serialise with postcard");
        tiles.push((frame.tile, start..values.len()));
    }
    tiles.sort_unstable_by_key(|a| a.0);
    tiles.dedup_by(|a, b| a.0 == b.0);
    (tiles, values)
}

/// A slide's new instances with their tile rows merged into one ascending sequence, a tile
/// in several instances once. Built before the slide's transaction begins, so the write
/// lock is held only for the inserts.
pub struct SlideRows<'a> {
    instances: &'a [&'a PreparedInstance],
    tiles: Vec<(&'a TileId, &'a [u8])>,
}

impl<'a> SlideRows<'a> {
    /// A k-way merge of the instances' sorted tile lists.
    pub fn new(instances: &'a [&'a PreparedInstance]) -> Self {
        let mut lists: Vec<_> = instances.iter().map(|i| i.tile_rows().peekable()).collect();
        let mut heap: std::collections::BinaryHeap<std::cmp::Reverse<(&'a TileId, usize)>> = lists
            .iter_mut()
            .enumerate()
            .filter_map(|(i, list)| list.peek().map(|(tile, _)| std::cmp::Reverse((*tile, i))))
            .collect();
        let mut out: Vec<(&'a TileId, &'a [u8])> =
            Vec::with_capacity(instances.iter().map(|i| i.tiles.len()).sum());
        while let Some(std::cmp::Reverse((_, i))) = heap.pop() {
            let Some(row) = lists[i].next() else { continue };
            if out.last().is_none_or(|last| last.0 != row.0) {
                out.push(row);
            }
            if let Some((tile, _)) = lists[i].peek() {
                heap.push(std::cmp::Reverse((*tile, i)));
            }
        }
        Self {
            instances,
            tiles: out,
        }
    }
}

/// The node's redb database.
pub struct Store {
    pub(crate) db: Database,
}

impl Store {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if !path.exists() {
            Self::create(path)?;
        }
        let db = Database::builder()
            .set_concurrency_mode(ConcurrencyMode::MultiWriter)
            .open(path)
            .map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?;
        let store = Self { db };
        store.ensure_tables()?;
        store.migrate_federation()?;
        store.index_audit_by_slide()?;
        Ok(store)
    }

    /// Creates the database beside its final name with every table, then links it into
    /// place, so a crash during creation never leaves a half-written `store.redb`, and two
    /// processes creating it at once agree on one file.
    fn create(path: &Path) -> Result<(), StoreError> {
        let staged = path.with_extension(format!("new.{}", std::process::id()));
        let _ = std::fs::remove_file(&staged);
        {
            let db = Database::builder()
                .set_concurrency_mode(ConcurrencyMode::MultiWriter)
                .create(&staged)
                .map_err(|source| StoreError::Open {
                    path: staged.display().to_string(),
                    source,
                })?;
            let tx = db.begin_write().op("begin write")?;
            create_tables(&tx)?;
            tx.commit().op("create tables")?;
        }
        let linked = std::fs::hard_link(&staged, path);
        let _ = std::fs::remove_file(&staged);
        match linked {
            Ok(()) => {
                if let Some(dir) = path.parent() {
                    let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
                }
                Ok(())
            }
            // Another process created it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(StoreError::Redb {
                op: "move new database into place",
                source: redb::Error::Io(e),
            }),
        }
    }

    /// Creates tables added since the database was made (a data directory of an older
    /// version), so that readers never meet a missing table.
    fn ensure_tables(&self) -> Result<(), StoreError> {
        let tx = self.db.begin_read().op("begin read")?;
        let names: Vec<String> = tx
            .list_tables()
            .op("list tables")?
            .map(|t| t.name().to_string())
            .collect();
        drop(tx);
        // The count includes tables made outside `create_tables` (the research facts, on
        // the first slide), so the newest table is also looked for by name.
        if names.len() >= TABLE_COUNT && names.iter().any(|n| n == federation::REPLICAS_NAME) {
            return Ok(());
        }
        let tx = self.db.begin_write().op("begin write")?;
        create_tables(&tx)?;
        tx.commit().op("create tables")
    }

    /// Opens the one write transaction a slide is committed in. Ingest opens it once the
    /// slide's originals are in place (copying them can take seconds, and the lock would
    /// stall every other writer, the server's audit log among them), writes the instances
    /// and tile rows while another thread may still sign the manifest, then completes it
    /// with [`SlideWriter::commit`]. Dropped uncommitted, it writes nothing.
    pub fn begin_slide(&self) -> Result<SlideWriter, StoreError> {
        Ok(SlideWriter {
            tx: self.db.begin_write().op("begin ingest transaction")?,
        })
    }

    pub fn slide(&self, id: &SlideId) -> Result<Option<SlideRecord>, StoreError> {
        let tx = self.db.begin_read().op("begin read")?;
        let table = tx.open_table(SLIDES).op("open slides")?;
        table
            .get(id.as_bytes())
            .op("read slide")?
            .map(|v| decode("slides_v1", v.value()))
            .transpose()
    }

    pub fn summaries(&self) -> Result<Vec<(SlideId, SlideSummary)>, StoreError> {
        let tx = self.db.begin_read().op("begin read")?;
        let table = tx.open_table(SUMMARIES).op("open summaries")?;
        let mut out = Vec::new();
        for entry in table.iter().op("list summaries")? {
            let (key, value) = entry.op("list summaries")?;
            out.push((
                SlideId::from_bytes(*key.value()),
                decode("slide_summaries_v1", value.value())?,
            ));
        }
        Ok(out)
    }

    pub fn summary(&self, id: &SlideId) -> Result<Option<SlideSummary>, StoreError> {
        let tx = self.db.begin_read().op("begin read")?;
        let table = tx.open_table(SUMMARIES).op("open summaries")?;
        table
            .get(id.as_bytes())
            .op("read summary")?
            .map(|v| decode("slide_summaries_v1", v.value()))
            .transpose()
    }

    pub fn series_slide(&self, series_uid: &str) -> Result<Option<SlideId>, StoreError> {
        let tx = self.db.begin_read().op("begin read")?;
        let table = tx.open_table(SERIES).op("open series")?;
        Ok(table
            .get(series_uid)
            .op("read series")?
            .map(|v| SlideId::from_bytes(*v.value())))
    }

    /// The instances already stored for a series, so ingest can merge newly arrived ones.
    pub fn series_instances(&self, series_uid: &str) -> Result<Vec<InstanceRecord>, StoreError> {
        let tx = self.db.begin_read().op("begin read")?;
        let table = tx.open_table(INSTANCES).op("open instances")?;
        let mut out = Vec::new();
        for entry in table.range((series_uid, "")..).op("list instances")? {
            let (key, value) = entry.op("list instances")?;
            if key.value().0 != series_uid {
                break;
            }
            out.push(decode("instances_v1", value.value())?);
        }
        Ok(out)
    }

    pub fn tile_location(&self, tile: &TileId) -> Result<Option<TileLocation>, StoreError> {
        let tx = self.db.begin_read().op("begin read")?;
        let table = tx.open_table(TILES).op("open tiles")?;
        table
            .get(tile.as_bytes())
            .op("read tile")?
            .map(|v| decode("tiles_v1", v.value()))
            .transpose()
    }

    /// Whether the store references an original file (objects not referenced are orphans
    /// of an interrupted ingest).
    pub fn references_object(&self, id: &ObjectId) -> Result<bool, StoreError> {
        let tx = self.db.begin_read().op("begin read")?;
        let table = tx.open_table(OBJECTS).op("open objects")?;
        Ok(table.get(id.as_bytes()).op("read object")?.is_some())
    }
}

/// How many tables [`create_tables`] makes.
const TABLE_COUNT: usize = 28;

/// A slide's write transaction (see [`Store::begin_slide`]).
pub struct SlideWriter {
    tx: redb::WriteTransaction,
}

impl SlideWriter {
    /// Writes the instances' rows, the objects they reference, and their tile locations.
    pub fn insert_rows(&mut self, rows: &SlideRows<'_>) -> Result<(), StoreError> {
        let mut instances = self.tx.open_table(INSTANCES).op("open instances")?;
        let mut objects = self.tx.open_table(OBJECTS).op("open objects")?;
        for p in rows.instances {
            let instance = &p.instance;
            instances
                .insert(
                    (
                        instance.series_uid.as_str(),
                        instance.sop_instance_uid.as_str(),
                    ),
                    p.row.as_slice(),
                )
                .op("insert instance")?;
            objects
                .insert(instance.object.as_bytes(), instance.file_len)
                .op("insert object")?;
        }
        let mut table = self.tx.open_table(TILES).op("open tiles")?;
        // Tile locations in key order: B-tree inserts in order touch each page once.
        // A tile already known (the same bytes in another frame or slide) keeps its
        // first location; both are valid places to read it from.
        for &(tile, location) in &rows.tiles {
            // One descent per tile: insert, and in the rare case the tile was already
            // known, put its first location back.
            let previous = table
                .insert(tile.as_bytes(), location)
                .op("insert tile")?
                .map(|old| old.value().to_vec());
            if let Some(previous) = previous {
                table
                    .insert(tile.as_bytes(), previous.as_slice())
                    .op("restore tile")?;
            }
        }
        Ok(())
    }

    /// Writes the slide, its summary, its series' pointer and consent, and commits
    /// everything in this transaction at once.
    pub fn commit(self, commit: SlideCommit) -> Result<SlideId, StoreError> {
        let id = commit.record.signed.slide_id();
        let tx = self.tx;
        {
            let mut slides = tx.open_table(SLIDES).op("open slides")?;
            let mut summaries = tx.open_table(SUMMARIES).op("open summaries")?;
            let mut facts = tx.open_table(research::FACTS).op("open research facts")?;
            if let Some(old) = commit.replaces.filter(|old| *old != id) {
                slides.remove(old.as_bytes()).op("remove replaced slide")?;
                summaries
                    .remove(old.as_bytes())
                    .op("remove replaced summary")?;
                facts
                    .remove(old.as_bytes())
                    .op("remove replaced research facts")?;
            }
            if let Some(new) = &commit.facts {
                facts
                    .insert(id.as_bytes(), encode(new).as_slice())
                    .op("index research facts")?;
            }
            slides
                .insert(id.as_bytes(), encode(&commit.record).as_slice())
                .op("insert slide")?;
            summaries
                .insert(id.as_bytes(), encode(&commit.summary).as_slice())
                .op("insert summary")?;
            let series_uid = commit.summary.series_uid.as_str();
            let mut series = tx.open_table(SERIES).op("open series")?;
            series
                .insert(series_uid, id.as_bytes())
                .op("insert series")?;
            let mut consent = tx.open_table(consent::CONSENT).op("open consent")?;
            match &commit.consent {
                ConsentUpdate::Keep => {}
                ConsentUpdate::Replace(record) => {
                    consent
                        .insert(series_uid, encode(record).as_slice())
                        .op("write consent")?;
                }
                ConsentUpdate::IfAbsent(record) => {
                    if consent.get(series_uid).op("read consent")?.is_none() {
                        consent
                            .insert(series_uid, encode(record).as_slice())
                            .op("write consent")?;
                    }
                }
            }
        }
        research::changed(&tx)?;
        tx.commit().op("commit ingest transaction")?;
        Ok(id)
    }
}

fn create_tables(tx: &redb::WriteTransaction) -> Result<(), StoreError> {
    tx.open_table(SLIDES).op("create tables")?;
    tx.open_table(SUMMARIES).op("create tables")?;
    tx.open_table(SERIES).op("create tables")?;
    tx.open_table(INSTANCES).op("create tables")?;
    tx.open_table(TILES).op("create tables")?;
    tx.open_table(OBJECTS).op("create tables")?;
    tx.open_table(federation::ROSTERS).op("create tables")?;
    tx.open_table(consent::CONSENT).op("create tables")?;
    tx.open_table(audit::ENTRIES).op("create tables")?;
    tx.open_table(audit::LEAVES).op("create tables")?;
    tx.open_table(audit::CHECKPOINTS).op("create tables")?;
    tx.open_table(audit::COSIGNED).op("create tables")?;
    tx.open_table(audit::RECEIPTS).op("create tables")?;
    tx.open_table(audit::BY_SLIDE).op("create tables")?;
    tx.open_table(federation::GRANTS).op("create tables")?;
    tx.open_table(federation::REVOCATIONS).op("create tables")?;
    tx.open_table(federation::REMOTE_SLIDES)
        .op("create tables")?;
    tx.open_table(federation::REPLICAS).op("create tables")?;
    tx.open_table(federation::OUTBOX).op("create tables")?;
    tx.open_table(referrals::REFERRALS).op("create tables")?;
    tx.open_table(referrals::DIRECTORIES).op("create tables")?;
    tx.open_table(referrals::OFFERS).op("create tables")?;
    tx.open_table(lims::LIMS).op("create tables")?;
    tx.open_table(research::BUDGET).op("create tables")?;
    tx.open_table(research::META).op("create tables")?;
    tx.open_table(cohorts::PROJECTS).op("create tables")?;
    tx.open_table(cohorts::PROJECT_GRANTS).op("create tables")?;
    tx.open_table(cohorts::COHORTS).op("create tables")?;
    // research::FACTS is made with its rows (see `store::research`).
    Ok(())
}

/// Seconds since the Unix epoch, for record timestamps.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::instance::{FrameRef, ImageFlavor};
    use super::*;

    fn prepared(uid: &str, object: u8, tiles: &[u8]) -> PreparedInstance {
        PreparedInstance::new(InstanceRecord {
            path: format!("/scans/{uid}.dcm").into(),
            object: ObjectId::from_bytes([object; 32]),
            file_len: 1000,
            sop_instance_uid: uid.into(),
            series_uid: "1.2.3".into(),
            study_uid: "1.2".into(),
            frame_of_reference_uid: None,
            transfer_syntax_uid: "1.2.840.10008.1.2.4.50".into(),
            flavor: ImageFlavor::Volume,
            width: 512,
            height: 512,
            tile_width: 256,
            tile_height: 256,
            pixel_spacing_mm: None,
            focal_planes: 1,
            optical_paths: 1,
            organization: slidemesh_protocol::DimensionOrganization::TiledFull,
            concatenation_uid: None,
            concatenation_offset: 0,
            frames: tiles
                .iter()
                .enumerate()
                .map(|(i, t)| FrameRef {
                    tile: TileId::from_bytes([*t; 32]),
                    ranges: vec![(100 * i as u64, 50)],
                })
                .collect(),
            positions: Vec::new(),
            optical_path_list: Vec::new(),
            metadata_json: "{}".into(),
        })
    }

    #[test]
    fn tile_rows_of_several_instances_merge_in_key_order_once_each() {
        let a = prepared("1.1", 0xa, &[5, 1, 3, 1]);
        let b = prepared("1.2", 0xb, &[4, 3, 9]);
        let instances = [&a, &b];
        let rows = SlideRows::new(&instances);
        let keys: Vec<u8> = rows
            .tiles
            .iter()
            .map(|(tile, _)| tile.as_bytes()[0])
            .collect();
        assert_eq!(keys, [1, 3, 4, 5, 9]);
        for (tile, value) in rows.tiles {
            let location: TileLocation = decode("tiles_v1", value).unwrap();
            let owner = if [4, 9].contains(&tile.as_bytes()[0]) {
                0xb
            } else {
                0xa
            };
            assert_eq!(location.object, ObjectId::from_bytes([owner; 32]));
            assert_eq!(location.media_type, "image/jpeg");
        }
    }

    #[test]
    fn borrowed_tile_locations_encode_as_owned_ones() {
        let object = ObjectId::from_bytes([7; 32]);
        let ranges = vec![(1u64 << 40, 7u32), (300, 65_000)];
        let owned = TileLocation {
            object,
            ranges: ranges.clone(),
            media_type: "image/jp2".into(),
        };
        let borrowed = TileLocationRef {
            object: &object,
            ranges: &ranges,
            media_type: "image/jp2",
        };
        assert_eq!(encode(&owned), encode(&borrowed));
    }

    #[test]
    fn a_slide_writer_dropped_before_commit_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store.redb")).unwrap();
        let a = prepared("1.1", 0xa, &[5, 1]);
        let mut writer = store.begin_slide().unwrap();
        writer.insert_rows(&SlideRows::new(&[&a])).unwrap();
        drop(writer);
        assert_eq!(
            store.tile_location(&TileId::from_bytes([5; 32])).unwrap(),
            None
        );
        assert!(store.series_instances("1.2.3").unwrap().is_empty());
        assert!(!store.references_object(&a.instance.object).unwrap());
    }
}
