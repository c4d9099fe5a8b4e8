//! Everything that touches BPF: loading the embedded objects and attaching programs
//! ([`loader`]), typed access to the program's maps ([`maps`]), arrays mapped into memory
//! (`mmap`), waiting out the program's runs ([`grace`]), and the pinned data plane that
//! outlives the daemon ([`pins`], with the daemon's records beside it in `ledger`). Nothing else in drlb calls
//! aya's map or program APIs; this module knows nothing of configs or services by name.

pub mod grace;
mod ledger;
pub mod loader;
pub mod maps;
mod mmap;
pub mod offline;
pub mod pins;

pub use maps::{AdoptedBackend, AdoptedService, Dataplane, GraceToken, TableLayout};
