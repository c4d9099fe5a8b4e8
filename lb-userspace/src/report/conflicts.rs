//! The "ARP conflicts" part of `drlb stats`: other MACs claiming a VIP, as the daemon's conflict
//! monitor found them.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// One offending MAC as `drlb stats` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArpConflictStats {
    pub mac: String,
    /// The backend with this MAC (`198.18.0.12`), or `null` when no backend has it.
    pub backend: Option<String>,
    /// ARP requests sent with a VIP as sender address.
    pub requests: u64,
    /// ARP replies claiming a VIP.
    pub replies: u64,
    /// The VIP of the last such frame.
    pub vip: String,
    pub last_seen_secs_ago: u64,
    /// What it means and what to do.
    pub explanation: String,
}

/// The "ARP conflicts" section of `drlb stats` (empty when there are none).
#[must_use]
pub fn render(conflicts: &[ArpConflictStats]) -> String {
    let mut out = String::new();
    if conflicts.is_empty() {
        return out;
    }
    let _ = writeln!(out, "\nARP conflicts (other MACs claiming a VIP)");
    let _ = writeln!(
        out,
        "  {:<19} {:<15} {:<15} {:>9} {:>9} {:>10}",
        "mac", "backend", "vip", "requests", "replies", "last seen"
    );
    for c in conflicts {
        let _ = writeln!(
            out,
            "  {:<19} {:<15} {:<15} {:>9} {:>9} {:>8}s ago",
            c.mac,
            c.backend.as_deref().unwrap_or("-"),
            c.vip,
            c.requests,
            c.replies,
            c.last_seen_secs_ago
        );
        let _ = writeln!(out, "    {}", c.explanation);
    }
    out
}
