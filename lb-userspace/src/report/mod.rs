//! What drlb reports: the `drlb stats` report ([`stats`]), built from plain data and rendered as
//! text or JSON. Reads nothing from the kernel itself.

pub mod stats;
