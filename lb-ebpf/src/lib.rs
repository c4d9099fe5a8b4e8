//! What drlb's XDP objects share: bounds-checked header access ([`parse`]). The objects
//! themselves are the crate's binaries: `drlb` (the director's program, src/main.rs),
//! `drlb-pass` (passes every frame, for veth peers) and `drlb-bench` (the benchmark's programs,
//! never loaded by drlb). Each is its own object, so loading one never creates another's maps.
#![no_std]

pub mod parse;

/// What every object of the crate needs once: its license (the kernel allows GPL-only helpers
/// by it) and a panic handler, which the verifier makes unreachable.
#[macro_export]
macro_rules! object_boilerplate {
    () => {
        #[cfg(not(test))]
        #[panic_handler]
        fn panic(_info: &core::panic::PanicInfo) -> ! {
            // The verifier rejects any path that could panic, so this is never reached.
            loop {}
        }

        #[unsafe(link_section = "license")]
        #[unsafe(no_mangle)]
        static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
    };
}
