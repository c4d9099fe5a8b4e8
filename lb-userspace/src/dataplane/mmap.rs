//! BPF arrays mapped into userspace (BPF_F_MMAPABLE), written with one atomic store per word:
//! the program, reading a word with one load, sees the old value or the new one, never a mix.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    ptr::NonNull,
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
};

use anyhow::{Context as _, Result, ensure};
use aya::maps::MapData;

/// The kernel stores each array element at an 8-byte stride (`round_up(value_size, 8)`).
const ELEMENT_ALIGN: usize = 8;

/// A mapping of a whole BPF array; unmapped on drop (the map itself lives on in the kernel as
/// long as the program or a pin holds it).
pub struct Mapped {
    base: NonNull<u8>,
    len: usize,
    stride: usize,
    entries: u32,
}

// SAFETY: the mapping is plain shared memory; every access goes through atomics or through
// `&mut self` methods, and the pointer stays valid until drop.
unsafe impl Send for Mapped {}
// SAFETY: as above.
unsafe impl Sync for Mapped {}

impl Mapped {
    /// Maps `map`, an array created with BPF_F_MMAPABLE, whose values are `value_size` bytes.
    pub fn new(map: &MapData, name: &str, value_size: usize) -> Result<Self> {
        let info = map
            .info()
            .with_context(|| format!("reading the info of map {name}"))?;
        ensure!(
            info.value_size() as usize == value_size,
            "map {name} has {}-byte values, not {value_size}: the eBPF object does not match this drlb",
            info.value_size()
        );
        let entries = info.max_entries();
        let stride = value_size.next_multiple_of(ELEMENT_ALIGN);
        // SAFETY: sysconf has no preconditions.
        let page =
            usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).context("page size")?;
        let len = (stride * entries as usize).next_multiple_of(page);
        // SAFETY: mapping a BPF map fd as the kernel documents for BPF_F_MMAPABLE arrays; the
        // result is checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        ensure!(
            base != libc::MAP_FAILED,
            "mapping map {name} into memory failed ({}): it must be created with BPF_F_MMAPABLE",
            std::io::Error::last_os_error()
        );
        Ok(Self {
            base: NonNull::new(base.cast()).context("mmap returned a null mapping")?,
            len,
            stride,
            entries,
        })
    }

    #[must_use]
    pub const fn entries(&self) -> u32 {
        self.entries
    }

    fn element(&self, index: u32) -> Result<*mut u8> {
        ensure!(
            index < self.entries,
            "index {index} is outside the map ({} entries)",
            self.entries
        );
        // SAFETY: index < entries, so the offset lies within the mapping.
        Ok(unsafe { self.base.as_ptr().add(index as usize * self.stride) })
    }

    fn word64(&self, index: u32) -> Result<&AtomicU64> {
        let ptr = self.element(index)?;
        // SAFETY: elements are 8-byte aligned (page-aligned base, 8-byte stride) and live as
        // long as the mapping, i.e. as long as `self`.
        Ok(unsafe { AtomicU64::from_ptr(ptr.cast()) })
    }

    fn word32(&self, index: u32) -> Result<&AtomicU32> {
        let ptr = self.element(index)?;
        // SAFETY: as in `word64`.
        Ok(unsafe { AtomicU32::from_ptr(ptr.cast()) })
    }

    /// Stores a 64-bit element with one atomic store.
    pub fn store_u64(&self, index: u32, value: u64) -> Result<()> {
        self.word64(index)?.store(value, Ordering::Release);
        Ok(())
    }

    pub fn load_u64(&self, index: u32) -> Result<u64> {
        Ok(self.word64(index)?.load(Ordering::Acquire))
    }

    /// Stores a 32-bit element with one atomic store.
    pub fn store_u32(&self, index: u32, value: u32) -> Result<()> {
        self.word32(index)?.store(value, Ordering::Release);
        Ok(())
    }

    pub fn load_u32(&self, index: u32) -> Result<u32> {
        Ok(self.word32(index)?.load(Ordering::Acquire))
    }

    /// The `lane`-th u32 of element `index` (arrays of u32 blocks): one atomic store.
    pub fn store_lane(&self, index: u32, lane: usize, value: u32) -> Result<()> {
        ensure!(lane * 4 < self.stride, "lane {lane} is outside the element");
        let ptr = self.element(index)?;
        // SAFETY: lane is within the element; u32-aligned; lives as long as `self`.
        unsafe { AtomicU32::from_ptr(ptr.add(lane * 4).cast()) }.store(value, Ordering::Release);
        Ok(())
    }

    /// The `lane`-th u32 of element `index`, as [`Self::store_lane`] left it.
    pub fn load_lane(&self, index: u32, lane: usize) -> Result<u32> {
        ensure!(lane * 4 < self.stride, "lane {lane} is outside the element");
        let ptr = self.element(index)?;
        // SAFETY: as in `store_lane`.
        Ok(unsafe { AtomicU32::from_ptr(ptr.add(lane * 4).cast()) }.load(Ordering::Acquire))
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped; nothing borrows from it past `self`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}
