//! Everything that touches BPF: loading the embedded objects and attaching programs
//! ([`loader`]), typed access to the program's maps ([`maps`]), arrays mapped into memory
//! (`mmap`) and waiting out the program's runs ([`grace`]). Nothing else in drlb calls
//! aya's map or program APIs; this module knows nothing of configs or services by name.

pub mod grace;
pub mod loader;
pub mod maps;
mod mmap;

pub use maps::{Dataplane, TableLayout};
