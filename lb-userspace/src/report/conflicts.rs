//! The "ARP conflicts" part of `drlb stats`: other MACs claiming a VIP (by ARP, or by NDP for an
//! IPv6 VIP), as the daemon's conflict monitor found them.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// One offending MAC as `drlb stats` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArpConflictStats {
    pub mac: String,
    /// The backend with this MAC (`198.18.0.12`), or `null` when no backend has it.
    pub backend: Option<String>,
    /// ARP requests sent with a VIP as sender address (IPv6: solicitations from a VIP, and
    /// DAD probes for one).
    pub requests: u64,
    /// ARP replies claiming a VIP (IPv6: neighbour advertisements of one).
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
    let _ = writeln!(
        out,
        "\nARP conflicts (other MACs claiming a VIP, by ARP or IPv6 neighbour discovery)"
    );
    // Columns as wide as their longest entry: IPv6 addresses run up to 39 characters.
    let backend_width = column_width(
        conflicts
            .iter()
            .map(|c| c.backend.as_deref().unwrap_or("-")),
    );
    let vip_width = column_width(conflicts.iter().map(|c| c.vip.as_str()));
    let _ = writeln!(
        out,
        "  {:<19} {:<backend_width$} {:<vip_width$} {:>9} {:>9} {:>10}",
        "mac", "backend", "vip", "requests", "replies", "last seen"
    );
    for c in conflicts {
        let _ = writeln!(
            out,
            "  {:<19} {:<backend_width$} {:<vip_width$} {:>9} {:>9} {:>8}s ago",
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

/// The width of a column holding `entries`: the longest, and at least an IPv4 address's.
fn column_width<'a>(entries: impl Iterator<Item = &'a str>) -> usize {
    entries
        .map(str::len)
        .max()
        .unwrap_or(0)
        .max(IPV4_COLUMN_WIDTH)
}

/// The widest IPv4 address (`255.255.255.255`).
const IPV4_COLUMN_WIDTH: usize = 15;

#[cfg(test)]
mod tests {
    use super::*;

    fn conflict(vip: &str, requests: u64) -> ArpConflictStats {
        ArpConflictStats {
            mac: "02:00:00:00:00:12".to_owned(),
            backend: Some("2001:2:0:aaaa:bbbb:cccc:dddd:12".to_owned()),
            requests,
            replies: 0,
            vip: vip.to_owned(),
            last_seen_secs_ago: 1,
            explanation: "explained".to_owned(),
        }
    }

    #[test]
    fn long_ipv6_addresses_keep_the_columns_aligned() {
        let text = render(&[
            conflict("2001:2:0:aaaa:bbbb:cccc:dddd:100", 7),
            conflict("198.18.0.100", 42),
        ]);
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("  ")).collect();
        let header = lines[0];
        let requests_end = header.find("requests").expect("a requests column") + "requests".len();
        for (row, value) in [(lines[1], "7"), (lines[3], "42")] {
            assert_eq!(
                row.get(..requests_end).map(|head| head.ends_with(value)),
                Some(true),
                "the requests value ends where its heading does:\n{header}\n{row}"
            );
            assert!(row.contains(" 2001:2:0:aaaa:bbbb:cccc:dddd:12 "), "{row}");
        }
    }
}
