//! The daemon's own records, pinned beside the program's maps (the program never reads them):
//! what a restarted daemon needs to adopt a running data plane and cannot read from the
//! program's maps. Per service id: its table region and the next generation the id will carry;
//! per backend slot: the backend's address. Written before the program's maps refer to what
//! they describe, cleared after, so they always cover what the program's maps hold.

use std::path::Path;

use anyhow::{Context as _, Result};
use aya::maps::{Array, Map, MapData};
use bytemuck::{Pod, Zeroable};
use lb_common::Addr;

/// Map names of the records (pinned under the same directory as the program's maps).
pub const SERVICE_RECORDS: &str = "DRLB_SERVICE_RECORDS";
pub const BACKEND_RECORDS: &str = "DRLB_BACKEND_RECORDS";

/// A service id's record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ServiceRecord {
    /// First `MAGLEV` entry of the service's region (both banks).
    pub base: u32,
    /// Entries of one bank; 0: the id holds no service.
    pub size: u32,
    /// The generation the next service given this id carries (0: never used, start at 1).
    pub next_generation: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<ServiceRecord>() == 16);

// SAFETY: plain old data, no padding (asserted above).
unsafe impl aya::Pod for ServiceRecord {}

/// A backend slot's record: the backend's address (all zero: the slot is free).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct BackendRecord {
    pub address: Addr,
}
const _: () = assert!(size_of::<BackendRecord>() == 16);

// SAFETY: as above.
unsafe impl aya::Pod for BackendRecord {}

pub struct Ledger {
    services: Array<MapData, ServiceRecord>,
    backends: Array<MapData, BackendRecord>,
}

/// Opens the record map pinned at `path`, or creates it with `entries` and pins it there.
fn open_or_create<V: aya::Pod>(path: &Path, entries: u32) -> Result<Array<MapData, V>> {
    if !path.exists() {
        Array::<MapData, V>::create(entries, 0)
            .with_context(|| format!("creating {} failed", path.display()))?
            .pin(path)
            .with_context(|| format!("pinning {} failed", path.display()))?;
    }
    let data =
        MapData::from_pin(path).with_context(|| format!("opening {} failed", path.display()))?;
    Array::try_from(Map::Array(data))
        .with_context(|| format!("{} is not an array of the right value size", path.display()))
}

impl Ledger {
    /// The records pinned in `dir`, created for `services` service ids and `backends` backend
    /// slots if there are none.
    pub fn open(dir: &Path, services: u32, backends: u32) -> Result<Self> {
        Ok(Self {
            services: open_or_create(&dir.join(SERVICE_RECORDS), services)?,
            backends: open_or_create(&dir.join(BACKEND_RECORDS), backends)?,
        })
    }

    /// Records kept in memory only, for a data plane that is not pinned (tests).
    pub fn unpinned(services: u32, backends: u32) -> Result<Self> {
        Ok(Self {
            services: Array::create(services, 0).context("creating the service records")?,
            backends: Array::create(backends, 0).context("creating the backend records")?,
        })
    }

    pub fn service(&self, id: u32) -> Result<ServiceRecord> {
        self.services
            .get(&id, 0)
            .with_context(|| format!("reading the record of service id {id}"))
    }

    pub fn set_service(&mut self, id: u32, record: ServiceRecord) -> Result<()> {
        self.services
            .set(id, record, 0)
            .with_context(|| format!("writing the record of service id {id}"))
    }

    pub fn backend(&self, index: u32) -> Result<BackendRecord> {
        self.backends
            .get(&index, 0)
            .with_context(|| format!("reading the record of backend slot {index}"))
    }

    pub fn set_backend(&mut self, index: u32, record: BackendRecord) -> Result<()> {
        self.backends
            .set(index, record, 0)
            .with_context(|| format!("writing the record of backend slot {index}"))
    }
}
