//! What drlb reports: the `drlb stats` report ([`stats`]) and its ARP conflict section ([`conflicts`]), built from plain data and rendered as
//! text or JSON. Reads nothing from the kernel itself.

pub mod conflicts;
pub mod list;
pub mod prometheus;
pub mod rate;
pub mod stats;
