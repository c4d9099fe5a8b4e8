//! What drlb's XDP objects share: bounds-checked header access ([`parse`]). The objects
//! themselves are the crate's binaries: `drlb` (the director's program, src/main.rs),
//! `drlb-pass` (passes every frame, for veth peers) and `drlb-bench` (the benchmark's programs,
//! never loaded by drlb). Each is its own object, so loading one never creates another's maps.
#![no_std]

pub mod parse;
