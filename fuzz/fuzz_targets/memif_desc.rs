//! Descriptor validation against a mapped region: whatever (region, offset, length) a peer
//! writes, `Regions::resolve` either refuses it or returns a range that lies inside the mapping,
//! which this target then reads in full (a fault would be a crash).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use vwire_mechanisms::memif::shm::{Region, Regions};

const SIZES: [usize; 2] = [4096, 65_536 + 123];

fn regions() -> &'static Regions {
    static R: OnceLock<Regions> = OnceLock::new();
    R.get_or_init(|| Regions(SIZES.iter().map(|&s| Region::create("fuzz", s).expect("memfd")).collect()))
}

fuzz_target!(|data: &[u8]| {
    let regions = regions();
    for d in data.chunks_exact(10) {
        let region = u16::from_le_bytes([d[0], d[1]]);
        let offset = u32::from_le_bytes([d[2], d[3], d[4], d[5]]);
        let len = u32::from_le_bytes([d[6], d[7], d[8], d[9]]);
        if let Some(p) = regions.resolve(region, offset, len) {
            let r = &regions.0[usize::from(region)];
            let start = p as usize - r.base() as usize;
            assert_eq!(start, offset as usize);
            assert!(start + len as usize <= r.len());
            let mut sum = 0u8;
            for i in 0..len as usize {
                // SAFETY: resolve guaranteed [p, p + len) lies inside the mapping.
                sum = sum.wrapping_add(unsafe { p.add(i).read_volatile() });
            }
            std::hint::black_box(sum);
        }
    }
});
