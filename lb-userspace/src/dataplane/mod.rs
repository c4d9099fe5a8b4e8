//! Everything that touches BPF: loading the embedded objects and attaching programs
//! ([`loader`]), and typed access to the program's maps ([`maps`]). Nothing else in drlb calls
//! aya's map or program APIs; this module knows nothing of configs or services by name.

pub mod loader;
pub mod maps;

pub use maps::{Dataplane, TableLayout};
