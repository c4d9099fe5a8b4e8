//! MAC addresses as drlb prints them.

/// A MAC as drlb prints it everywhere: lower-case, colon-separated.
#[must_use]
pub fn format_mac(mac: [u8; 6]) -> String {
    macaddr::MacAddr6::from(mac).to_string().to_lowercase()
}
