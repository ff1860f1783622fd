//! Decoded basic blocks keyed by the physical address of their first byte and the code
//! bitness (owned by EXEC).
//!
//! A block never crosses a 4 KiB page, so it depends on one physical page only: guest or DMA
//! writes to that page (reported by `GuestMemory::take_code_invalidations`) drop every block
//! decoded from it. Blocks are position independent in IP terms (relative branch targets are
//! stored as displacements), so the same physical code reached through another CS:IP alias
//! reuses the block. A direct-mapped table in front of the hash map makes the common lookup
//! two compares.

use std::collections::HashMap;
use std::sync::Arc;

use crate::exec::Decoded;

/// Most instructions per block.
pub(crate) const MAX_BLOCK_INSNS: usize = 64;
/// Blocks kept before the whole cache is dropped and rebuilt.
const MAX_BLOCKS: usize = 1 << 16;
const FAST_SIZE: usize = 4096;

/// One decoded block.
pub(crate) struct Block {
    /// Lookup key ([`block_key`]), `u64::MAX` while the slot is free.
    pub key: u64,
    /// The instructions, shared with the run loop's lookup cache (a block invalidated while
    /// it runs stays alive until that run ends).
    pub insns: Arc<[Decoded]>,
    /// Bytes covered, for the CS-limit check of an aliased entry.
    pub byte_len: u32,
    /// RAM page (RAM offset >> 12) the block was decoded from.
    pub ram_page: u64,
    /// The only RIP this block may run at, or [`ANY_RIP`] when it is position independent.
    pub rip: u64,
}

/// [`Block::rip`] of a block that runs at any RIP.
pub(crate) const ANY_RIP: u64 = u64::MAX;

/// The cache key of code at physical address `phys` executed with `bitness`-bit defaults.
#[inline]
pub(crate) fn block_key(phys: u64, bitness: u32) -> u64 {
    (phys << 2)
        | match bitness {
            16 => 0,
            32 => 1,
            _ => 2,
        }
}

/// Cache of decoded blocks.
pub(crate) struct DecodeCache {
    slab: Vec<Block>,
    free: Vec<u32>,
    map: HashMap<u64, u32>,
    fast: Vec<(u64, u32)>,
    pages: HashMap<u64, Vec<u32>>,
    /// Bumped whenever a block is dropped: lookups cached outside (the run loop's
    /// linear-address table) are valid for one value.
    generation: u64,
}

impl Default for DecodeCache {
    fn default() -> Self {
        DecodeCache {
            slab: Vec::new(),
            free: Vec::new(),
            map: HashMap::new(),
            fast: vec![(u64::MAX, 0); FAST_SIZE],
            pages: HashMap::new(),
            generation: 0,
        }
    }
}

#[inline]
fn fast_slot(key: u64) -> usize {
    ((key >> 2) ^ (key >> 14)) as usize & (FAST_SIZE - 1)
}

impl DecodeCache {
    /// The slab index of the block for `key`.
    #[inline]
    pub(crate) fn lookup(&mut self, key: u64) -> Option<u32> {
        let slot = fast_slot(key);
        let (k, idx) = self.fast[slot];
        if k == key && self.slab[idx as usize].key == key {
            return Some(idx);
        }
        let idx = *self.map.get(&key)?;
        self.fast[slot] = (key, idx);
        Some(idx)
    }

    /// The block at `idx`, if `idx` is live (not stale after a flush or invalidation).
    #[inline]
    pub(crate) fn block(&self, idx: u32) -> Option<&Block> {
        self.slab.get(idx as usize).filter(|b| b.key != u64::MAX)
    }

    /// The generation of the cache contents: changes whenever a block is dropped, so lookups
    /// remembered elsewhere can tell they may be stale.
    #[inline]
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Add a block; returns its slab index.
    pub(crate) fn insert(&mut self, block: Block) -> u32 {
        if self.map.len() >= MAX_BLOCKS {
            self.flush();
        }
        let key = block.key;
        let page = block.ram_page;
        let idx = match self.free.pop() {
            Some(i) => {
                self.slab[i as usize] = block;
                i
            }
            None => {
                self.slab.push(block);
                (self.slab.len() - 1) as u32
            }
        };
        if let Some(old) = self.map.insert(key, idx) {
            self.free_slot(old);
        }
        self.fast[fast_slot(key)] = (key, idx);
        self.pages.entry(page).or_default().push(idx);
        idx
    }

    fn free_slot(&mut self, idx: u32) {
        let b = &mut self.slab[idx as usize];
        if b.key != u64::MAX {
            b.key = u64::MAX;
            b.insns = Arc::from(Vec::new());
            self.free.push(idx);
            self.generation += 1;
        }
    }

    /// Drop every block decoded from RAM page `page` (RAM offset >> 12).
    pub(crate) fn invalidate_page(&mut self, page: u64) {
        let Some(list) = self.pages.remove(&page) else {
            return;
        };
        for idx in list {
            let b = &self.slab[idx as usize];
            if b.key != u64::MAX && b.ram_page == page {
                let key = b.key;
                if self.map.get(&key) == Some(&idx) {
                    self.map.remove(&key);
                }
                self.free_slot(idx);
            }
        }
    }

    /// Drop everything.
    pub(crate) fn flush(&mut self) {
        self.generation += 1;
        self.slab.clear();
        self.free.clear();
        self.map.clear();
        self.pages.clear();
        self.fast.fill((u64::MAX, 0));
    }
}
