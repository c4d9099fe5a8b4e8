//! Long-lived TCP connections through the VIP to the real servers' line echo
//! (`drlb-testsrv tcp-echo`), which answers every line with the server's name: a connection
//! that reaches another server than the one it was opened on is reset there, so "still
//! answers, with the same name" is exactly "kept its real server".

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use crate::{
    netns::{Netns, in_netns},
    testbed::{TCP_ECHO_PORT, VIP},
};

const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection through the VIP and the real server that answered it first.
pub struct Connection {
    pub stream: TcpStream,
    pub served_by: String,
}

/// Sends a line; returns the name in the answer.
pub fn ask(stream: &mut TcpStream) -> Result<String, String> {
    stream
        .write_all(b"who\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| format!("read: {e}"))?;
    if line.is_empty() {
        return Err("connection closed".to_owned());
    }
    Ok(line.trim().to_owned())
}

/// Opens `n` connections from `client` to the VIP's echo port and asks each once.
#[must_use]
pub fn connect(client: &Netns, n: usize) -> Vec<Connection> {
    let vip: SocketAddr = format!("{VIP}:{TCP_ECHO_PORT}")
        .parse()
        .expect("VIP address");
    connect_to(client, vip, n)
}

/// [`connect`] to another address, e.g. the IPv6 VIP's echo port.
#[must_use]
pub fn connect_to(client: &Netns, vip: SocketAddr, n: usize) -> Vec<Connection> {
    in_netns(client, move || {
        (0..n)
            .map(|i| {
                let mut stream = TcpStream::connect_timeout(&vip, IO_TIMEOUT)
                    .unwrap_or_else(|e| panic!("connection {i} to {vip}: {e}"));
                stream
                    .set_read_timeout(Some(IO_TIMEOUT))
                    .expect("read timeout");
                stream
                    .set_write_timeout(Some(IO_TIMEOUT))
                    .expect("write timeout");
                let served_by = ask(&mut stream).unwrap_or_else(|e| panic!("connection {i}: {e}"));
                Connection { stream, served_by }
            })
            .collect()
    })
}

/// Every connection still answers, from the server it was opened on.
#[track_caller]
pub fn assert_all_kept(connections: &mut [Connection], after: &str) {
    for (i, c) in connections.iter_mut().enumerate() {
        match ask(&mut c.stream) {
            Ok(name) => assert_eq!(name, c.served_by, "after {after}: connection {i} moved"),
            Err(e) => panic!(
                "after {after}: connection {i} (on {}) broke: {e}",
                c.served_by
            ),
        }
    }
}
