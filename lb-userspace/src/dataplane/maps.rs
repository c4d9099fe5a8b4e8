//! Typed access to the program's maps: the only place userspace writes what the data path reads.
//!
//! It follows lb-common's consistency rules: the words the program reads while they change are
//! stored atomically through memory mappings ([`Mapped`]); a hash key is never updated, only
//! inserted and deleted; and before memory the program may still be reading is reused (a
//! deleted key's element, a bank that was live), it waits for a grace period ([`grace::wait`]).
//!
//! Longer than most files on purpose: it is the one writer of the program's maps, and the
//! consistency rules are easier to check when every write is in one place.

use std::collections::{BTreeSet, HashMap as StdHashMap};

use anyhow::{Context as _, Result, bail, ensure};
use aya::{
    Ebpf,
    maps::{
        Array, DevMapHash, HashMap, IterableMap, Map, MapData, MapError, PerCpuArray, PerCpuValues,
    },
};
use lb_common::{
    Addr, AddrWords, BACKEND_FLAG_USABLE, Backend, BackendEntry, Counter, EgressSlot, Event,
    FlowEntry, FlowKey, FlowKey6, ForwardCounter, INTERFACE_FLAG_CHECK_CHECKSUMS, Interface,
    MAGLEV_BLOCK, MAX_BACKENDS_PER_SERVICE, MAX_INTERFACES, MaglevBlock, NO_VIP_SLOT,
    SERVICE_FLAG_LIVE, Service, ServiceKey, ServiceKeyWords, ServiceState, TABLE_BANKS, TableDesc,
    VIP_FILTER_WORDS, VIP_SLOT_COUNT, Verdict, Vip, addr_words, backend_index, interface_slot,
    map_names, service_key_words, table_desc_index, vip_filter_bit_of, vip_slot_word,
};

use super::{
    grace,
    ledger::{BackendRecord, Ledger, ServiceRecord},
    mmap::Mapped,
    pins::PinDir,
};

/// Where a service's Maglev table lives in `MAGLEV` and how it is scheduled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableLayout {
    pub service_id: u32,
    /// First entry of the service's region (`TABLE_BANKS * size` entries).
    pub base: u32,
    /// Entries of one bank.
    pub size: u32,
    /// `SERVICE_FLAG_*` (scheduler, standby).
    pub flags: u32,
}

/// What the dataplane last wrote into each bank of a service's region, so a flip only writes
/// the entries that differ (Maglev moves few entries per change).
struct TableShadow {
    layout: TableLayout,
    banks: [Option<Vec<u32>>; TABLE_BANKS as usize],
}

/// A service the program can see: its key, and the state word last stored for it.
#[derive(Clone, Copy)]
struct LiveService {
    key: ServiceKey,
    state: ServiceState,
}

/// What the program may still be reading although userspace has moved on: cleared by a grace
/// period. Each entry carries the sequence number of the write that made it (its latest), so a
/// grace period another thread waited for clears exactly what was written before it began
/// ([`Dataplane::grace_passed`]).
#[derive(Default)]
struct PendingReuse {
    /// Keys were deleted from SERVICES or VIPS: their elements may be reused by an insert.
    keys_deleted: Option<u64>,
    /// Services whose live bank changed: their other bank may still be read.
    flipped: StdHashMap<u32, u64>,
    /// Table regions were given up (service removed or resized): a new region may overlap them.
    regions_freed: Option<u64>,
}

impl PendingReuse {
    /// Forgets what was written up to `sequence` (a grace period began after it).
    fn clear_up_to(&mut self, sequence: u64) {
        self.keys_deleted = self.keys_deleted.filter(|&s| s > sequence);
        self.regions_freed = self.regions_freed.filter(|&s| s > sequence);
        self.flipped.retain(|_, s| *s > sequence);
    }
}

/// The point in the dataplane's writes a grace period must begin after to cover them
/// ([`Dataplane::grace_token`], [`Dataplane::grace_passed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GraceToken(u64);

impl GraceToken {
    /// Whether a grace period that began after `later` was taken covers what this token
    /// covers.
    #[must_use]
    pub fn precedes(self, later: GraceToken) -> bool {
        self.0 <= later.0
    }
}

pub struct Dataplane {
    services: HashMap<MapData, ServiceKey, u32>,
    service_keys: Array<MapData, ServiceKeyWords>,
    service_states: Mapped,
    tables: Mapped,
    maglev: Mapped,
    backends: Mapped,
    egress_slots: Array<MapData, EgressSlot>,
    // aya reads an LRU hash map through HashMap.
    flows: HashMap<MapData, FlowKey, FlowEntry>,
    flows6: HashMap<MapData, FlowKey6, FlowEntry>,
    vips: HashMap<MapData, Addr, u32>,
    vip_states: Mapped,
    vip_filter: Mapped,
    vip_slots: Mapped,
    vip_addrs: Array<MapData, AddrWords>,
    interfaces: Array<MapData, Interface>,
    egress: DevMapHash<MapData>,
    service_counters: PerCpuArray<MapData, ForwardCounter>,
    backend_counters: PerCpuArray<MapData, ForwardCounter>,
    verdict_counters: PerCpuArray<MapData, Counter>,
    event_counters: PerCpuArray<MapData, Counter>,
    /// Keeps the mapped maps' file descriptors with the mappings.
    _mapped_maps: Vec<MapData>,
    /// The daemon's records beside the maps (region, generation, backend addresses).
    ledger: Ledger,
    /// Interfaces registered in `INTERFACES` by this object (an adopted entry of an interface
    /// drlb no longer runs on may be overwritten).
    registered: BTreeSet<(u32, u16)>,
    shadows: StdHashMap<u32, TableShadow>,
    live: StdHashMap<u32, LiveService>,
    egress_slot_of: Vec<(u32, u16, [u8; 6])>,
    vip_ids: StdHashMap<Addr, u32>,
    pending: PendingReuse,
    /// Counts the writes that leave something pending (see [`PendingReuse`]).
    sequence: u64,
    /// Test hook: fail every write after this many more (see [`Dataplane::fail_writes_after`]).
    writes_left: Option<u32>,
}

fn take<T: TryFrom<Map, Error = MapError>>(ebpf: &mut Ebpf, name: &str) -> Result<T> {
    let map = ebpf
        .take_map(name)
        .with_context(|| format!("the eBPF object has no map {name}"))?;
    T::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
}

/// Takes an array map and maps it into memory.
fn take_mapped(
    ebpf: &mut Ebpf,
    name: &str,
    value_size: usize,
    keep: &mut Vec<MapData>,
) -> Result<Mapped> {
    let map = match ebpf
        .take_map(name)
        .with_context(|| format!("the eBPF object has no map {name}"))?
    {
        Map::Array(data) => data,
        _ => bail!("map {name} is not an array"),
    };
    let mapped = Mapped::new(&map, name, value_size)?;
    keep.push(map);
    Ok(mapped)
}

/// A delete of a key that is not there succeeds: aya reports it as the syscall's ENOENT.
fn ignore_missing(result: Result<(), MapError>) -> Result<(), MapError> {
    match result {
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}

/// A service found in an adopted data plane: its key, where its table lies, and its backends.
#[derive(Clone, Debug)]
pub struct AdoptedService {
    pub key: ServiceKey,
    pub layout: TableLayout,
    pub backends: Vec<AdoptedBackend>,
}

/// A backend found in an adopted data plane: its id, address, and what `BACKENDS` holds for it
/// (`None`: not usable).
#[derive(Clone, Debug)]
pub struct AdoptedBackend {
    pub id: u32,
    pub address: Addr,
    pub published: Option<Backend>,
    /// The live table gives it new flows (unknown, `true`, when the live bank could not be
    /// read).
    pub in_table: bool,
}

impl Dataplane {
    /// Takes ownership of the maps of a loaded program that pins nothing (its records are kept
    /// in memory).
    pub fn take_from(ebpf: &mut Ebpf) -> Result<Self> {
        Self::take_with(ebpf, None)
    }

    /// Takes ownership of the maps of a program loaded with the maps pinned in `pins`, and of
    /// the daemon's records pinned beside them (created if absent).
    pub fn take_pinned(ebpf: &mut Ebpf, pins: &PinDir) -> Result<Self> {
        Self::take_with(ebpf, Some(pins))
    }

    fn take_with(ebpf: &mut Ebpf, pins: Option<&PinDir>) -> Result<Self> {
        let mut keep = Vec::new();
        let u64_size = size_of::<u64>();
        let service_states = take_mapped(ebpf, map_names::SERVICE_STATES, u64_size, &mut keep)?;
        let backends = take_mapped(ebpf, map_names::BACKENDS, u64_size, &mut keep)?;
        let (services, slots) = (service_states.entries(), backends.entries());
        let ledger = match pins {
            Some(pins) => Ledger::open(&pins.maps_dir(), services, slots)?,
            None => Ledger::unpinned(services, slots)?,
        };
        Ok(Self {
            services: take(ebpf, map_names::SERVICES)?,
            service_keys: take(ebpf, map_names::SERVICE_KEYS)?,
            service_states,
            tables: take_mapped(ebpf, map_names::TABLES, u64_size, &mut keep)?,
            maglev: take_mapped(ebpf, map_names::MAGLEV, size_of::<MaglevBlock>(), &mut keep)?,
            backends,
            egress_slots: take(ebpf, map_names::EGRESS_SLOTS)?,
            flows: take(ebpf, map_names::FLOWS)?,
            flows6: take(ebpf, map_names::FLOWS6)?,
            vips: take(ebpf, map_names::VIPS)?,
            vip_states: take_mapped(ebpf, map_names::VIP_STATES, size_of::<u32>(), &mut keep)?,
            vip_filter: take_mapped(ebpf, map_names::VIP_FILTER, u64_size, &mut keep)?,
            vip_slots: take_mapped(ebpf, map_names::VIP_SLOTS, size_of::<u32>(), &mut keep)?,
            vip_addrs: take(ebpf, map_names::VIP_ADDRS)?,
            interfaces: take(ebpf, map_names::INTERFACES)?,
            egress: take(ebpf, map_names::EGRESS)?,
            service_counters: take(ebpf, map_names::SERVICE_COUNTERS)?,
            backend_counters: take(ebpf, map_names::BACKEND_COUNTERS)?,
            verdict_counters: take(ebpf, map_names::VERDICT_COUNTERS)?,
            event_counters: take(ebpf, map_names::EVENT_COUNTERS)?,
            _mapped_maps: keep,
            ledger,
            registered: BTreeSet::new(),
            shadows: StdHashMap::new(),
            live: StdHashMap::new(),
            egress_slot_of: Vec::new(),
            vip_ids: StdHashMap::new(),
            pending: PendingReuse::default(),
            sequence: 0,
            writes_left: None,
        })
    }

    /// Reads what a running data plane holds (pinned by an earlier drlb) into this object's
    /// bookkeeping, and returns its services for the controller. Writes only to finish what
    /// the stopped daemon left half-done (a removal) and the address filter.
    pub fn adopt(&mut self) -> Result<Vec<AdoptedService>> {
        for slot in 0..MAX_INTERFACES {
            let Ok(entry) = self.egress_slots.get(&slot, 0) else {
                break;
            };
            if entry.ifindex == 0 {
                break;
            }
            self.egress_slot_of
                .push((entry.ifindex, entry.vlan, entry.mac));
        }
        for item in self.vips.iter() {
            let (addr, id) = item.context("reading VIPS failed")?;
            self.vip_ids.insert(addr, id);
        }
        let keys: Vec<(ServiceKey, u32)> = self
            .services
            .iter()
            .collect::<Result<_, _>>()
            .context("reading SERVICES failed")?;
        let mut adopted = Vec::new();
        for (key, id) in keys {
            let state = ServiceState::unpack(self.service_states.load_u64(id)?);
            let record = self.ledger.service(id)?;
            if !state.is_live() || record.size == 0 {
                // Left by a daemon that stopped between two writes of a removal: finish it.
                self.remove_service(&key, id)?;
                continue;
            }
            let layout = TableLayout {
                service_id: id,
                base: record.base,
                size: record.size,
                flags: u32::from(state.flags & !SERVICE_FLAG_LIVE),
            };
            let desc = TableDesc::unpack(self.tables.load_u64(table_desc_index(id, state.bank))?);
            let mut banks = [None, None];
            // Trusted only where the record says the live bank lies (a daemon stopped in the
            // middle of moving the table leaves it elsewhere: then it is all written again).
            if desc.size == layout.size
                && desc.base == layout.base + u32::from(state.bank) * layout.size
            {
                let live_bank = (0..desc.size)
                    .map(|slot| {
                        let index = desc.base + slot;
                        self.maglev
                            .load_lane(index / MAGLEV_BLOCK, (index % MAGLEV_BLOCK) as usize)
                    })
                    .collect::<Result<Vec<u32>>>()?;
                banks[usize::from(state.bank)] = Some(live_bank);
            }
            let live_ids: Option<BTreeSet<u32>> = banks[usize::from(state.bank)]
                .as_ref()
                .map(|bank| bank.iter().copied().collect());
            self.shadows.insert(id, TableShadow { layout, banks });
            self.live.insert(id, LiveService { key, state });
            let mut backends = Vec::new();
            for backend_id in 0..MAX_BACKENDS_PER_SERVICE {
                let index = self.backend_slot(id, backend_id)?;
                let record = self.ledger.backend(index)?;
                if record == BackendRecord::default() {
                    continue;
                }
                let entry = BackendEntry::unpack(self.backends.load_u64(index)?);
                let published = entry.is_usable().then(|| {
                    let (ifindex, vlan, src_mac) = self
                        .egress_slot_of
                        .get(usize::from(entry.egress_slot))
                        .copied()
                        .unwrap_or_default();
                    Backend {
                        dst_mac: entry.mac,
                        src_mac,
                        ifindex,
                        vlan,
                    }
                });
                backends.push(AdoptedBackend {
                    id: backend_id,
                    address: record.address,
                    published,
                    in_table: live_ids
                        .as_ref()
                        .is_none_or(|ids| ids.contains(&backend_id)),
                });
            }
            adopted.push(AdoptedService {
                key,
                layout,
                backends,
            });
        }
        // The filter as this build computes it (an older one may have left VIPs only), and
        // the slots (a daemon stopped within `set_vip` may have left one unwritten).
        self.store_vip_filter(None)?;
        self.store_vip_slots()?;
        // A program run the stopped daemon's last writes raced with is over long since; one
        // grace period makes it certain before this daemon reuses anything.
        grace::wait();
        Ok(adopted)
    }

    /// Makes the write after the next `writes` fail (once), as a map write the kernel refuses
    /// would: for tests of what a failed change leaves behind.
    #[doc(hidden)]
    pub fn fail_write_after(&mut self, writes: u32) {
        self.writes_left = Some(writes);
    }

    /// Called before every map write: the failure injected by [`Self::fail_write_after`].
    fn write_allowed(&mut self) -> Result<()> {
        match &mut self.writes_left {
            Some(0) => {
                self.writes_left = None;
                bail!("map write refused (injected failure)")
            }
            Some(left) => {
                *left -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Services the maps have room for, as sized at load.
    #[must_use]
    pub fn service_capacity(&self) -> u32 {
        self.service_states.entries()
    }

    /// Whether `FLOWS6` was created smaller than `FLOWS` (both are sized from the same
    /// `flow_table_size`; the IPv6 one small for a config without IPv6 services).
    pub fn ipv6_flow_table_is_small(&self) -> Result<bool> {
        let entries = |map: &MapData, name: &str| {
            map.info()
                .map(|info| info.max_entries())
                .with_context(|| format!("reading the size of {name} failed"))
        };
        Ok(entries(IterableMap::map(&self.flows6), map_names::FLOWS6)?
            < entries(IterableMap::map(&self.flows), map_names::FLOWS)?)
    }

    /// Entries of the `MAGLEV` array, as sized at load.
    #[must_use]
    pub fn maglev_capacity(&self) -> u32 {
        self.maglev.entries() * MAGLEV_BLOCK
    }

    /// Waits for a grace period if the program may still read memory about to be reused.
    fn settle(&mut self, need: bool) {
        if need {
            grace::wait();
            self.pending = PendingReuse::default();
        }
    }

    /// The next sequence number for something left pending.
    fn next_sequence(&mut self) -> u64 {
        self.sequence += 1;
        self.sequence
    }

    /// Where the writes stand now: a grace period that begins after this call covers them.
    /// Another thread may wait for it ([`grace::wait`]) and report it with
    /// [`Self::grace_passed`], so this one never blocks on it.
    #[must_use]
    pub fn grace_token(&self) -> GraceToken {
        GraceToken(self.sequence)
    }

    /// A grace period began after `token` was taken and has ended: what was pending up to
    /// then may be reused without waiting again.
    pub fn grace_passed(&mut self, token: GraceToken) {
        self.pending.clear_up_to(token.0);
    }

    /// Whether publishing a table of `layout` would first wait for a grace period (its other
    /// bank or region may still be read), so a caller can wait for it elsewhere first.
    #[must_use]
    pub fn publish_needs_grace(&self, layout: TableLayout) -> bool {
        let new_region = self
            .shadows
            .get(&layout.service_id)
            .is_none_or(|s| s.layout.base != layout.base || s.layout.size != layout.size);
        self.pending.flipped.contains_key(&layout.service_id)
            || (new_region && self.pending.regions_freed.is_some())
            || (!self.live.contains_key(&layout.service_id) && self.pending.keys_deleted.is_some())
    }

    /// Registers an interface the program serves: a device it is attached to (`vlan` is
    /// `NO_VLAN`), or VLAN `vlan` on such a device (`ifindex` is the parent's). Frames to its MAC
    /// are ours, and it answers ARP with it. Before the program is attached: the entry never
    /// changes after.
    pub fn set_interface(&mut self, ifindex: u32, vlan: u16, mac: [u8; 6]) -> Result<()> {
        let slot = self.interface_slot(ifindex, vlan);
        if let Ok(existing) = self.interfaces.get(&slot, 0)
            && existing.ifindex == ifindex
            && existing.vlan == vlan
            && existing.mac == mac
        {
            // Adopted as it is: the program may be reading it.
            self.registered.insert((ifindex, vlan));
            return Ok(());
        }
        if let Ok(existing) = self.interfaces.get(&slot, 0)
            && existing.ifindex != 0
            && (existing.ifindex, existing.vlan) != (ifindex, vlan)
            && self.registered.contains(&(existing.ifindex, existing.vlan))
        {
            bail!(
                "interfaces {} (VLAN {}) and {ifindex} (VLAN {vlan}) share entry {slot} of \
                 INTERFACES ({} entries): the map must be loaded with room for both (see \
                 loader::interface_slots)",
                existing.ifindex,
                existing.vlan,
                self.interfaces.len()
            );
        }
        self.write_allowed()?;
        self.interfaces
            .set(
                slot,
                Interface {
                    ifindex,
                    mac,
                    flags: 0,
                    _pad: 0,
                    vlan,
                    _pad2: [0; 2],
                },
                0,
            )
            .context("writing INTERFACES failed")?;
        self.registered.insert((ifindex, vlan));
        Ok(())
    }

    /// The `INTERFACES` entry of (ifindex, VLAN id).
    fn interface_slot(&self, ifindex: u32, vlan: u16) -> u32 {
        interface_slot(ifindex, vlan, self.interfaces.len() - 1)
    }

    /// Makes the program look at the checksum of new flows arriving on a registered interface
    /// (the veth checksum trap, see `Event::BadChecksum`). Before the program is attached.
    pub fn check_checksums_on(&mut self, ifindex: u32, vlan: u16) -> Result<()> {
        let slot = self.interface_slot(ifindex, vlan);
        let mut entry = self
            .interfaces
            .get(&slot, 0)
            .context("reading INTERFACES failed")?;
        ensure!(
            (entry.ifindex, entry.vlan) == (ifindex, vlan),
            "interface {ifindex} (VLAN {vlan}) is not registered"
        );
        if entry.flags & INTERFACE_FLAG_CHECK_CHECKSUMS != 0 {
            return Ok(());
        }
        entry.flags |= INTERFACE_FLAG_CHECK_CHECKSUMS;
        self.write_allowed()?;
        self.interfaces
            .set(slot, entry, 0)
            .context("writing INTERFACES failed")
    }

    /// Lets the program redirect frames to the interface `ifindex` (for backends behind it).
    pub fn set_egress(&mut self, ifindex: u32) -> Result<()> {
        self.write_allowed()?;
        self.egress
            .insert(ifindex, ifindex, None, 0)
            .with_context(|| format!("writing EGRESS for ifindex {ifindex} failed"))
    }

    /// Sets a VIP's flags; a new VIP gets an id, its address, its key and maybe its slot.
    pub fn set_vip(&mut self, addr: Addr, vip: Vip) -> Result<()> {
        if let Some(&id) = self.vip_ids.get(&addr) {
            self.write_allowed()?;
            return self.vip_states.store_u32(id, vip.flags);
        }
        let used: BTreeSet<u32> = self.vip_ids.values().copied().collect();
        let room = self.vip_states.entries();
        let id = (0..room).find(|i| !used.contains(i)).with_context(|| {
            format!("no room for more than {room} VIPs: stop drlb, run `drlb down` and start it again to make room")
        })?;
        self.write_allowed()?;
        // An id (and a `VIPS` element) freed by a removal is reused only once no program run
        // that may have found the removed VIP is left.
        self.settle(self.pending.keys_deleted.is_some());
        self.vip_addrs
            .set(id, addr_words(&addr), 0)
            .context("writing VIP_ADDRS failed")?;
        self.vip_states.store_u32(id, vip.flags)?;
        // Its filter bit before its key: the filter may say "maybe" of a non-VIP, never "no"
        // of a VIP.
        self.store_vip_filter(Some(addr))?;
        self.write_allowed()?;
        self.vips
            .insert(addr, id, 0)
            .context("writing VIPS failed")?;
        self.vip_ids.insert(addr, id);
        self.store_vip_slots()
    }

    /// Stores the `VIP_SLOTS` words that differ from [`vip_slots`] of the VIPs.
    fn store_vip_slots(&mut self) -> Result<()> {
        for (bit, word) in vip_slots(&self.vip_ids) {
            if self.vip_slots.load_u32(bit)? != word {
                self.vip_slots.store_u32(bit, word)?;
            }
        }
        Ok(())
    }

    /// Stores the `VIP_FILTER` words that differ from the bitmap of every VIP and every live
    /// service's address, and `extra` (an address about to become one of them). The program
    /// checks the filter before any lookup, so a service's address needs its bit even if it is
    /// (wrongly) no VIP.
    fn store_vip_filter(&mut self, extra: Option<Addr>) -> Result<()> {
        let addresses: Vec<Addr> = self
            .vip_ids
            .keys()
            .copied()
            .chain(self.live.values().map(|live| live.key.addr))
            .chain(extra)
            .collect();
        let wanted = vip_filter(&addresses);
        for (word, &bits) in (0..).zip(&wanted) {
            if self.vip_filter.load_u64(word)? != bits {
                self.vip_filter.store_u64(word, bits)?;
            }
        }
        Ok(())
    }

    pub fn remove_vip(&mut self, addr: &Addr) -> Result<()> {
        let Some(id) = self.vip_ids.get(addr).copied() else {
            return Ok(());
        };
        self.write_allowed()?;
        // Its slot first (cleared, or handed to a VIP that shares its bit), then its key.
        self.vip_ids.remove(addr);
        if let Err(error) = self.store_vip_slots() {
            self.vip_ids.insert(*addr, id);
            return Err(error);
        }
        ignore_missing(self.vips.remove(addr)).context("removing from VIPS failed")?;
        self.vip_states.store_u32(id, 0)?;
        self.pending.keys_deleted = Some(self.next_sequence());
        self.store_vip_filter(None)
    }

    /// The index of a backend in `BACKENDS`, checked against the bounds that keep it within
    /// its service's range: an id out of range would name another service's backend.
    fn backend_slot(&self, service_id: u32, backend_id: u32) -> Result<u32> {
        let services = self.service_capacity();
        ensure!(
            service_id < services,
            "service id {service_id} is out of range (room for {services} services)"
        );
        ensure!(
            backend_id < MAX_BACKENDS_PER_SERVICE,
            "backend id {backend_id} is out of range (at most {MAX_BACKENDS_PER_SERVICE} per service)"
        );
        Ok(backend_index(service_id, backend_id))
    }

    /// The egress slot for (ifindex, VLAN id, source MAC), written into `EGRESS_SLOTS` the
    /// first time.
    fn egress_slot(&mut self, ifindex: u32, vlan: u16, mac: [u8; 6]) -> Result<u8> {
        if let Some(slot) = self
            .egress_slot_of
            .iter()
            .position(|e| *e == (ifindex, vlan, mac))
        {
            return Ok(u8::try_from(slot).expect("slots are bounded by MAX_INTERFACES"));
        }
        let slot = u32::try_from(self.egress_slot_of.len()).expect("bounded");
        ensure!(
            slot < MAX_INTERFACES,
            "more than {MAX_INTERFACES} egress interfaces"
        );
        self.write_allowed()?;
        self.egress_slots
            .set(slot, EgressSlot { ifindex, mac, vlan }, 0)
            .context("writing EGRESS_SLOTS failed")?;
        self.egress_slot_of.push((ifindex, vlan, mac));
        Ok(u8::try_from(slot).expect("slots are bounded by MAX_INTERFACES"))
    }

    /// Makes a backend reachable by its id (flows and table entries refer to it).
    pub fn set_backend(
        &mut self,
        service_id: u32,
        backend_id: u32,
        backend: &Backend,
    ) -> Result<()> {
        let index = self.backend_slot(service_id, backend_id)?;
        let egress_slot = self.egress_slot(backend.ifindex, backend.vlan, backend.src_mac)?;
        let entry = BackendEntry {
            mac: backend.dst_mac,
            egress_slot,
            flags: BACKEND_FLAG_USABLE,
        };
        self.write_allowed()?;
        self.backends.store_u64(index, entry.pack())
    }

    /// Makes a backend unreachable: its flows are scheduled again on their next packet.
    pub fn remove_backend(&mut self, service_id: u32, backend_id: u32) -> Result<()> {
        let index = self.backend_slot(service_id, backend_id)?;
        self.write_allowed()?;
        self.backends.store_u64(index, 0)
    }

    /// Publishes a service's Maglev table (backend ids; empty: no backend): writes it into the
    /// bank the program is not reading, then makes that bank live with one store of the
    /// service's state word, so the program never sees a half-written table. A new service's
    /// key is inserted last, once its table and state are complete.
    pub fn publish_table(
        &mut self,
        key: &ServiceKey,
        layout: TableLayout,
        table: &[u32],
    ) -> Result<()> {
        let id = layout.service_id;
        let services = self.service_capacity();
        ensure!(
            id < services,
            "service id {id} is out of range (room for {services} services)"
        );
        ensure!(
            table.is_empty() || table.len() == layout.size as usize,
            "a table has {} entries, not {}",
            table.len(),
            layout.size
        );
        ensure!(
            table.iter().all(|&b| b < MAX_BACKENDS_PER_SERVICE),
            "a table names a backend id of {MAX_BACKENDS_PER_SERVICE} or more"
        );
        ensure!(
            u64::from(layout.base) + u64::from(TABLE_BANKS) * u64::from(layout.size)
                <= u64::from(self.maglev_capacity()),
            "the service's table region lies outside MAGLEV"
        );
        let live = self.live.get(&id).copied();
        if let Some(live) = live {
            ensure!(
                live.key == *key,
                "service id {id} belongs to another service"
            );
        }
        if let (Some(live), Some(shadow)) = (live, self.shadows.get(&id))
            && shadow.layout == layout
            && u32::from(live.state.flags) == SERVICE_FLAG_LIVE as u32 | layout.flags
        {
            // The live bank holds this table already (an adopted data plane, or a change that
            // moved no entry): nothing to write.
            let live_bank = &shadow.banks[usize::from(live.state.bank)];
            let desc = TableDesc::unpack(
                self.tables
                    .load_u64(table_desc_index(id, live.state.bank))?,
            );
            let same = if table.is_empty() {
                desc.size == 0
            } else {
                desc.size == layout.size && live_bank.as_deref() == Some(table)
            };
            if same {
                return Ok(());
            }
        }
        let new_region = self
            .shadows
            .get(&id)
            .is_none_or(|s| s.layout.base != layout.base || s.layout.size != layout.size);
        let bank: u8 = live.map_or(0, |l| (l.state.bank + 1) % TABLE_BANKS as u8);
        // The bank about to be written may be read by a run that started before the last flip,
        // and a new region may overlap one given up since the last grace period.
        self.settle(
            self.pending.flipped.contains_key(&id)
                || (new_region && self.pending.regions_freed.is_some()),
        );
        let shadow = self.shadows.entry(id).or_insert_with(|| TableShadow {
            layout,
            banks: [None, None],
        });
        if new_region {
            *shadow = TableShadow {
                layout,
                banks: [None, None],
            };
        }
        shadow.layout = layout;
        // Taken out while written: if a write fails, the bank's contents are unknown.
        let previous = shadow.banks[usize::from(bank)].take();
        let bank_base = layout.base + u32::from(bank) * layout.size;
        if !table.is_empty() {
            for (slot, &backend) in (0..).zip(table) {
                if previous
                    .as_ref()
                    .is_none_or(|p| p[slot as usize] != backend)
                {
                    let index = bank_base + slot;
                    self.write_allowed()?;
                    self.maglev.store_lane(
                        index / MAGLEV_BLOCK,
                        (index % MAGLEV_BLOCK) as usize,
                        backend,
                    )?;
                }
            }
        }
        let written = if table.is_empty() {
            previous
        } else {
            Some(table.to_vec())
        };
        if let Some(shadow) = self.shadows.get_mut(&id) {
            shadow.banks[usize::from(bank)] = written;
        }
        let desc = TableDesc {
            base: bank_base,
            size: if table.is_empty() { 0 } else { layout.size },
        };
        self.write_allowed()?;
        self.tables
            .store_u64(table_desc_index(id, bank), desc.pack())?;
        // The record first: it must describe the region before the program can reach it.
        let record = self.ledger.service(id)?;
        let generation = match live {
            Some(live) => live.state.generation,
            // Never 0: a zeroed flow entry must match no service.
            None => record.next_generation.max(1),
        };
        self.write_allowed()?;
        self.ledger.set_service(
            id,
            ServiceRecord {
                base: layout.base,
                size: layout.size,
                next_generation: if live.is_some() {
                    record.next_generation
                } else {
                    generation.checked_add(1).unwrap_or(1)
                },
                _pad: 0,
            },
        )?;
        let state = ServiceState {
            generation,
            flags: SERVICE_FLAG_LIVE | flags_byte(layout.flags)?,
            bank,
        };
        if live.is_none() {
            // Before the id is live for this key: no reader of this generation ever sees
            // the words half-written.
            self.write_allowed()?;
            self.service_keys
                .set(id, service_key_words(key), 0)
                .context("writing SERVICE_KEYS failed")?;
        }
        self.write_allowed()?;
        self.service_states.store_u64(id, state.pack())?;
        if live.is_some() {
            let sequence = self.next_sequence();
            self.pending.flipped.insert(id, sequence);
        } else {
            // Its address's filter bit before its key (see `store_vip_filter`).
            self.store_vip_filter(Some(key.addr))?;
            self.settle(self.pending.keys_deleted.is_some());
            self.write_allowed()?;
            self.services
                .insert(key, id, 0)
                .context("writing SERVICES failed")?;
        }
        self.live.insert(id, LiveService { key: *key, state });
        Ok(())
    }

    /// Replaces only the flags of a published service (same table, same bank) with one atomic
    /// store: how a director turns standby or active without rewriting any table.
    pub fn set_service_flags(&mut self, key: &ServiceKey, flags: u32) -> Result<()> {
        let Some((id, live)) = self.live.iter().find(|(_, l)| l.key == *key) else {
            return Ok(());
        };
        let state = ServiceState {
            flags: SERVICE_FLAG_LIVE | flags_byte(flags)?,
            ..live.state
        };
        let id = *id;
        self.write_allowed()?;
        self.service_states.store_u64(id, state.pack())?;
        if let Some(live) = self.live.get_mut(&id) {
            live.state = state;
        }
        Ok(())
    }

    /// Removes a service: its key first (new packets pass), then its state (runs that read
    /// the key already see it gone). Its id and region are reused only after a grace period.
    pub fn remove_service(&mut self, key: &ServiceKey, service_id: u32) -> Result<()> {
        self.write_allowed()?;
        ignore_missing(self.services.remove(key)).context("removing from SERVICES failed")?;
        if service_id < self.service_capacity() {
            self.service_states.store_u64(service_id, 0)?;
            // The id's generation goes on counting: flows of this service must not match the
            // next one given the id, across restarts too.
            let record = self.ledger.service(service_id)?;
            self.ledger.set_service(
                service_id,
                ServiceRecord {
                    next_generation: record.next_generation,
                    ..ServiceRecord::default()
                },
            )?;
        }
        self.shadows.remove(&service_id);
        self.live.remove(&service_id);
        let sequence = self.next_sequence();
        self.pending.keys_deleted = Some(sequence);
        self.pending.regions_freed = Some(sequence);
        self.pending.flipped.insert(service_id, sequence);
        self.store_vip_filter(None)
    }

    /// The services the program can see: key and id.
    #[must_use]
    pub fn live_services(&self) -> Vec<(ServiceKey, u32)> {
        self.live.iter().map(|(id, l)| (l.key, *id)).collect()
    }

    /// The VIPs the program knows.
    #[must_use]
    pub fn vips(&self) -> Vec<std::net::IpAddr> {
        self.vip_ids
            .keys()
            .map(|a| crate::net::addr::ip_of(*a))
            .collect()
    }

    /// Clears every `BACKENDS` entry of a service but those of `keep`.
    pub fn remove_backends_except(&mut self, service_id: u32, keep: &BTreeSet<u32>) -> Result<()> {
        for backend_id in 0..MAX_BACKENDS_PER_SERVICE {
            if !keep.contains(&backend_id) {
                let index = self.backend_slot(service_id, backend_id)?;
                if self.backends.load_u64(index)? != 0 {
                    self.write_allowed()?;
                    self.backends.store_u64(index, 0)?;
                }
                // Ids claimed by a change that was rolled back.
                if self.ledger.backend(index)? != BackendRecord::default() {
                    self.ledger.set_backend(index, BackendRecord::default())?;
                }
            }
        }
        Ok(())
    }

    /// The live service entry, as the program sees it.
    pub fn service(&self, key: &ServiceKey) -> Result<Option<Service>> {
        let id = match self.services.get(key, 0) {
            Ok(id) => id,
            Err(MapError::KeyNotFound) => return Ok(None),
            Err(e) => return Err(e).context("reading SERVICES failed"),
        };
        let state = ServiceState::unpack(self.service_states.load_u64(id)?);
        if !state.is_live() {
            return Ok(None);
        }
        let desc = TableDesc::unpack(self.tables.load_u64(table_desc_index(id, state.bank))?);
        let region_base = self.shadows.get(&id).map_or(desc.base, |s| s.layout.base);
        Ok(Some(Service {
            id,
            bank: u32::from(state.bank),
            table_base: region_base,
            table_size: desc.size,
            flags: u32::from(state.flags & !SERVICE_FLAG_LIVE),
        }))
    }

    /// The `BACKENDS` entry of a backend, as the program sees it.
    pub fn backend(&self, service_id: u32, backend_id: u32) -> Result<BackendEntry> {
        let index = self.backend_slot(service_id, backend_id)?;
        Ok(BackendEntry::unpack(self.backends.load_u64(index)?))
    }

    /// The flow table's entry for a 5-tuple.
    pub fn flow(&self, key: &FlowKey) -> Result<Option<FlowEntry>> {
        match self.flows.get(key, 0) {
            Ok(entry) => Ok(Some(entry)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e).context("reading FLOWS failed"),
        }
    }

    /// Writes a flow-table entry as the program would: a test hook, for what the program must
    /// do with entries it did not write (one the LRU recycled under it).
    #[doc(hidden)]
    pub fn set_flow(&mut self, key: &FlowKey, entry: FlowEntry) -> Result<()> {
        self.flows
            .insert(key, entry, 0)
            .context("writing FLOWS failed")
    }

    /// The IPv6 flow table's entry for a 5-tuple.
    pub fn flow6(&self, key: &FlowKey6) -> Result<Option<FlowEntry>> {
        match self.flows6.get(key, 0) {
            Ok(entry) => Ok(Some(entry)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e).context("reading FLOWS6 failed"),
        }
    }

    pub fn verdict_counter(&self, verdict: Verdict) -> Result<Counter> {
        sum(&self.verdict_counters, verdict as u32, add_counters)
    }

    pub fn event_counter(&self, event: Event) -> Result<Counter> {
        sum(&self.event_counters, event as u32, add_counters)
    }

    pub fn service_counter(&self, service_id: u32) -> Result<ForwardCounter> {
        sum(&self.service_counters, service_id, add_forward_counters)
    }

    pub fn backend_counter(&self, service_id: u32, backend_id: u32) -> Result<ForwardCounter> {
        sum(
            &self.backend_counters,
            self.backend_slot(service_id, backend_id)?,
            add_forward_counters,
        )
    }

    /// Zeroes a service's counter, for an id given to a new service.
    pub fn reset_service_counter(&mut self, service_id: u32) -> Result<()> {
        self.write_allowed()?;
        zero(&mut self.service_counters, service_id)
    }

    /// Gives a backend id to the backend at `address`: records it (so a restarted daemon knows
    /// whose the id is) and zeroes its counter. Before anything refers to the id.
    pub fn claim_backend(&mut self, service_id: u32, backend_id: u32, address: Addr) -> Result<()> {
        let index = self.backend_slot(service_id, backend_id)?;
        self.write_allowed()?;
        self.ledger.set_backend(index, BackendRecord { address })?;
        zero(&mut self.backend_counters, index)
    }

    /// Frees a backend id, once nothing refers to it any more.
    pub fn release_backend(&mut self, service_id: u32, backend_id: u32) -> Result<()> {
        let index = self.backend_slot(service_id, backend_id)?;
        self.write_allowed()?;
        self.ledger.set_backend(index, BackendRecord::default())
    }
}

/// The `VIP_FILTER` words for `vips`: the bit of every VIP set, IPv4 or IPv6 (each as the
/// program computes it for its family).
fn vip_filter(vips: &[Addr]) -> [u64; VIP_FILTER_WORDS as usize] {
    let mut words = [0_u64; VIP_FILTER_WORDS as usize];
    for vip in vips {
        let bit = vip_filter_bit_of(*vip);
        words[(bit / 64) as usize] |= 1 << (bit % 64);
    }
    words
}

/// Every `VIP_SLOTS` word for `vips` (address -> id): each filter bit's slot names the VIP of
/// lowest id with that bit, or none. The lowest id, so a VIP keeps its slot while others that
/// share its bit come and go.
fn vip_slots(vips: &StdHashMap<Addr, u32>) -> impl Iterator<Item = (u32, u32)> + use<> {
    let mut words = vec![NO_VIP_SLOT; VIP_SLOT_COUNT as usize];
    for (addr, &id) in vips {
        let slot = &mut words[vip_filter_bit_of(*addr) as usize];
        if *slot == NO_VIP_SLOT || vip_slot_word(id) < *slot {
            *slot = vip_slot_word(id);
        }
    }
    (0..).zip(words)
}

/// The flags of a `TableLayout` as the state word's byte.
fn flags_byte(flags: u32) -> Result<u8> {
    u8::try_from(flags).with_context(|| format!("service flags {flags:#x} do not fit a byte"))
}

/// The sum over all CPUs of one per-CPU counter.
fn sum<T: aya::Pod + Default>(
    map: &PerCpuArray<MapData, T>,
    index: u32,
    add: fn(T, &T) -> T,
) -> Result<T> {
    let per_cpu = map.get(&index, 0).context("reading a counter map failed")?;
    Ok(per_cpu.iter().fold(T::default(), add))
}

fn add_counters(a: Counter, b: &Counter) -> Counter {
    Counter {
        packets: a.packets + b.packets,
        bytes: a.bytes + b.bytes,
    }
}

fn add_forward_counters(a: ForwardCounter, b: &ForwardCounter) -> ForwardCounter {
    ForwardCounter {
        packets: a.packets + b.packets,
        bytes: a.bytes + b.bytes,
        connections: a.connections + b.connections,
    }
}

fn zero<T: aya::Pod + Default>(map: &mut PerCpuArray<MapData, T>, index: u32) -> Result<()> {
    let cpus = map
        .get(&index, 0)
        .context("reading a counter map failed")?
        .len();
    let zeros = PerCpuValues::try_from(vec![T::default(); cpus])?;
    map.set(index, zeros, 0)
        .context("writing a counter map failed")
}

#[cfg(test)]
mod tests {
    use lb_common::{ipv4_mapped, vip_filter_bit, vip_filter_bit_v6};

    use super::*;

    fn has_bit(words: &[u64], addr: [u8; 4]) -> bool {
        let bit = vip_filter_bit(addr);
        words[(bit / 64) as usize] & (1 << (bit % 64)) != 0
    }

    /// A grace period another thread waited for clears what was written before its token,
    /// never what came after (that still needs one).
    #[test]
    fn a_grace_period_clears_only_what_its_token_covers() {
        let mut pending = PendingReuse {
            keys_deleted: Some(2),
            flipped: [(7, 1), (8, 3)].into_iter().collect(),
            regions_freed: Some(3),
        };
        pending.clear_up_to(2);
        assert_eq!(pending.keys_deleted, None);
        assert_eq!(pending.regions_freed, Some(3));
        assert_eq!(pending.flipped.keys().copied().collect::<Vec<_>>(), [8]);
        pending.clear_up_to(3);
        assert!(pending.flipped.is_empty() && pending.regions_freed.is_none());
        assert!(GraceToken(2).precedes(GraceToken(2)));
        assert!(!GraceToken(3).precedes(GraceToken(2)));
    }

    #[test]
    fn the_vip_filter_never_says_no_to_a_vip() {
        let vips: Vec<[u8; 4]> = (0..=255).map(|i| [198, 18, i % 7, i]).collect();
        let words = vip_filter(&vips.iter().map(|v| ipv4_mapped(*v)).collect::<Vec<_>>());
        assert!(vips.iter().all(|v| has_bit(&words, *v)));
        // Few VIPs leave most addresses out: the filter spares their hash lookup.
        let few = vip_filter(&[ipv4_mapped([198, 18, 0, 100])]);
        let passed = (0..=255_u8)
            .filter(|i| !has_bit(&few, [198, 18, 1, *i]))
            .count();
        assert!(passed >= 250, "{passed} of 256 addresses left out");
        assert_eq!(vip_filter(&[]), [0; VIP_FILTER_WORDS as usize]);
    }

    #[test]
    fn the_vip_filter_holds_ipv6_vips_by_their_own_bit() {
        let vips: Vec<Addr> = (0..=255_u8)
            .map(|i| {
                let mut a = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
                a[15] = i;
                a
            })
            .collect();
        let words = vip_filter(&vips);
        for vip in &vips {
            let bit = vip_filter_bit_v6(*vip);
            assert!(
                words[(bit / 64) as usize] & (1 << (bit % 64)) != 0,
                "{vip:?}"
            );
        }
    }

    /// Two VIPs whose filter bits collide, found by search (the bit has 4096 values).
    fn colliding_pair() -> (Addr, Addr) {
        let first = ipv4_mapped([198, 18, 0, 1]);
        let bit = vip_filter_bit_of(first);
        let second = (2..=u16::MAX)
            .map(|i| {
                let [hi, lo] = i.to_be_bytes();
                ipv4_mapped([198, 18, hi, lo])
            })
            .find(|addr| vip_filter_bit_of(*addr) == bit)
            .expect("a colliding address in 198.18.0.0/16");
        (first, second)
    }

    #[test]
    fn each_vip_bit_names_the_vip_of_lowest_id_and_no_other_slot_names_any() {
        let (a, b) = colliding_pair();
        let v6 = [0x20, 0x01, 0, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
        let vips = StdHashMap::from([(a, 7), (b, 3), (v6, 5)]);
        let slots: StdHashMap<u32, u32> = vip_slots(&vips).collect();
        assert_eq!(slots.len(), VIP_SLOT_COUNT as usize);
        // a and b share a bit: the lower id (b's) holds it; a is left to VIPS.
        assert_eq!(slots[&vip_filter_bit_of(a)], vip_slot_word(3));
        assert_eq!(slots[&vip_filter_bit_of(v6)], vip_slot_word(5));
        let named = slots.values().filter(|&&w| w != NO_VIP_SLOT).count();
        assert_eq!(named, 2);
        // Without b, a takes the bit over.
        let slots: StdHashMap<u32, u32> = vip_slots(&StdHashMap::from([(a, 7)])).collect();
        assert_eq!(slots[&vip_filter_bit_of(a)], vip_slot_word(7));
    }

    #[test]
    fn no_vips_leave_every_slot_empty() {
        assert!(vip_slots(&StdHashMap::new()).all(|(_, word)| word == NO_VIP_SLOT));
    }
}
