//! An in-memory cache of tile locations in front of the `tiles_v1` table.
//!
//! Serving a tile by id needs its location; reading it from redb costs a read transaction
//! per request, and in multi-writer mode each transaction takes file locks (measured: three
//! `fcntl` calls and a page read per tile). A tile's location never changes once committed
//! (content-addressed, originals are never rewritten), so cached entries cannot go stale.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use slidemesh_protocol::TileId;

use super::{Store, StoreError, TileLocation};

/// Entries kept before the cache is emptied and refilled (about 100 bytes each).
const CAPACITY: usize = 1 << 20;

pub struct LocationCache {
    store: Arc<Store>,
    map: Mutex<HashMap<TileId, Arc<TileLocation>>>,
}

impl LocationCache {
    pub fn new(store: Arc<Store>) -> Self {
        Self {
            store,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The tile's location if it is in memory; never touches the store, so it is safe on
    /// an async thread.
    pub fn cached(&self, tile: &TileId) -> Option<Arc<TileLocation>> {
        self.map.lock().ok().and_then(|m| m.get(tile).cloned())
    }

    /// The tile's location, from memory or the store. Reads the store on a miss: call from
    /// a blocking context.
    pub fn get(&self, tile: &TileId) -> Result<Option<Arc<TileLocation>>, StoreError> {
        if let Some(hit) = self.cached(tile) {
            return Ok(Some(hit));
        }
        let Some(location) = self.store.tile_location(tile)? else {
            return Ok(None);
        };
        let location = Arc::new(location);
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= CAPACITY {
                // Crude but bounded: a full cache starts over and refills with what is hot.
                map.clear();
            }
            map.insert(*tile, location.clone());
        }
        Ok(Some(location))
    }
}
