//! The real servers' (and the client's) side of the end-to-end tests and the demo:
//!
//! - `http --listen ADDR... --name NAME`: answers every GET with `200 OK`, body `NAME\n` and
//!   `X-Served-By: NAME` (HTTP/1.1, `Content-Length`, `Connection: close`); `GET /bytes/N`
//!   gets a body of N bytes instead (path-MTU tests).
//! - `udp-echo --listen ADDR... --name NAME`: answers each datagram with `NAME <payload>`.
//! - `udp-client --to ADDR --count N --timeout-ms T`: sends N datagrams, each from a fresh
//!   socket (so a fresh source port), prints each reply on a line; exits 1 if any got none.
//!
//! A listener bound to a specific address answers from that address: an LVS-DR real server
//! listens on the VIP so its UDP replies come from the VIP, not from its own address.
//! The demo embeds this file as a module (`drlb-demo testsrv ...`) so it needs no second binary.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::ExitCode,
    thread,
    time::Duration,
};

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "drlb-testsrv",
    about = "Test servers and client for drlb's end-to-end tests"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Serve HTTP: every GET gets 200 with body "NAME\n" and header X-Served-By: NAME.
    Http {
        /// Address to listen on (repeatable), e.g. 198.18.0.100:8080.
        #[arg(long, required = true)]
        listen: Vec<SocketAddr>,
        #[arg(long)]
        name: String,
    },
    /// Accept TCP connections and answer each line received with "NAME\n", for as long as
    /// the client keeps the connection.
    TcpEcho {
        /// Address to listen on (repeatable), e.g. 198.18.0.100:9000.
        #[arg(long, required = true)]
        listen: Vec<SocketAddr>,
        #[arg(long)]
        name: String,
    },
    /// Answer each datagram with "NAME <payload>".
    UdpEcho {
        /// Address to listen on (repeatable), e.g. 198.18.0.100:5353.
        #[arg(long, required = true)]
        listen: Vec<SocketAddr>,
        #[arg(long)]
        name: String,
    },
    /// Send COUNT datagrams to ADDR, each from a fresh source port, and print the replies.
    UdpClient {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
        count: u32,
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=30_000))]
        timeout_ms: u64,
    },
}

#[allow(
    dead_code,
    reason = "the demo embeds this file and calls `run` instead"
)]
fn main() -> ExitCode {
    run(Cli::parse())
}

pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Mode::Http { listen, name } => serve_each(listen, name, serve_http),
        Mode::UdpEcho { listen, name } => serve_each(listen, name, serve_udp_echo),
        Mode::TcpEcho { listen, name } => serve_each(listen, name, serve_tcp_echo),
        Mode::UdpClient {
            to,
            count,
            timeout_ms,
        } => udp_client(to, count, Duration::from_millis(timeout_ms)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("drlb-testsrv: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `serve` for every address on a thread of its own; returns only if one of them fails.
fn serve_each(
    addrs: Vec<SocketAddr>,
    name: String,
    serve: fn(SocketAddr, String) -> Result<(), String>,
) -> Result<ExitCode, String> {
    let servers: Vec<_> = addrs
        .into_iter()
        .map(|addr| {
            let name = name.clone();
            thread::spawn(move || serve(addr, name))
        })
        .collect();
    for server in servers {
        server
            .join()
            .map_err(|_| "a server thread panicked".to_owned())??;
    }
    Ok(ExitCode::SUCCESS)
}

fn serve_tcp_echo(addr: SocketAddr, name: String) -> Result<(), String> {
    let listener =
        TcpListener::bind(addr).map_err(|e| format!("cannot listen on tcp {addr}: {e}"))?;
    eprintln!("{name}: tcp echo listening on {addr}");
    for stream in listener.incoming().flatten() {
        let name = name.clone();
        thread::spawn(move || {
            let mut reader = std::io::BufReader::new(&stream);
            let mut line = String::new();
            while matches!(std::io::BufRead::read_line(&mut reader, &mut line), Ok(n) if n > 0) {
                line.clear();
                if std::io::Write::write_all(&mut &stream, format!("{name}\n").as_bytes()).is_err()
                {
                    break;
                }
            }
        });
    }
    Ok(())
}

fn serve_http(addr: SocketAddr, name: String) -> Result<(), String> {
    let listener =
        TcpListener::bind(addr).map_err(|e| format!("cannot listen on tcp {addr}: {e}"))?;
    eprintln!("{name}: http listening on {addr}");
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let name = name.clone();
                thread::spawn(move || {
                    if let Err(e) = answer_http(stream, &name) {
                        eprintln!("{name}: http connection failed: {e}");
                    }
                });
            }
            Err(e) => eprintln!("{name}: accept on {addr} failed: {e}"),
        }
    }
    Ok(())
}

/// Reads one request head and answers it, then closes the connection.
fn answer_http(mut stream: TcpStream, name: &str) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::new();
    let mut buf = [0; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let (status, body) = if let Some(len) = bytes_requested(&head) {
        // Large replies, for path-MTU tests: `len` bytes, the name's first byte repeated.
        (
            "200 OK",
            name.chars().next().unwrap_or('x').to_string().repeat(len),
        )
    } else if head.starts_with("GET ") {
        ("200 OK", format!("{name}\n"))
    } else {
        (
            "405 Method Not Allowed",
            format!("{name}: only GET is served\n"),
        )
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Served-By: {name}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes())?;
    stream.shutdown(std::net::Shutdown::Write)
}

/// `GET /bytes/N`: a body of N bytes (at most `MAX_BODY`) is asked for.
fn bytes_requested(head: &str) -> Option<usize> {
    let path = head.strip_prefix("GET /bytes/")?;
    let len: usize = path.split_whitespace().next()?.parse().ok()?;
    (len <= MAX_BODY).then_some(len)
}

/// The largest body `GET /bytes/N` serves.
const MAX_BODY: usize = 16 << 20;
/// The largest UDP datagram (fragmented datagrams are echoed whole).
const MAX_DATAGRAM: usize = 65_535;

fn serve_udp_echo(addr: SocketAddr, name: String) -> Result<(), String> {
    let socket = UdpSocket::bind(addr).map_err(|e| format!("cannot listen on udp {addr}: {e}"))?;
    eprintln!("{name}: udp echo listening on {addr}");
    let mut buf = vec![0; MAX_DATAGRAM];
    loop {
        match socket.recv_from(&mut buf) {
            Ok((n, peer)) => {
                let reply = format!("{name} {}", String::from_utf8_lossy(&buf[..n]));
                if let Err(e) = socket.send_to(reply.as_bytes(), peer) {
                    eprintln!("{name}: reply to {peer} failed: {e}");
                }
            }
            Err(e) => eprintln!("{name}: receive on {addr} failed: {e}"),
        }
    }
}

fn udp_client(to: SocketAddr, count: u32, timeout: Duration) -> Result<ExitCode, String> {
    let mut unanswered = 0;
    for i in 1..=count {
        match udp_request(to, &format!("request {i}"), timeout) {
            Ok(reply) => println!("{reply}"),
            Err(e) => {
                eprintln!("datagram {i} to {to}: {e}");
                unanswered += 1;
            }
        }
    }
    if unanswered > 0 {
        eprintln!("{unanswered} of {count} datagrams got no reply");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// One request from a fresh socket. The socket is connected, so only a reply from `to` itself
/// counts (one from the real server's own address would be refused by the kernel).
fn udp_request(to: SocketAddr, payload: &str, timeout: Duration) -> Result<String, String> {
    let any: SocketAddr = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
        .parse()
        .expect("valid address");
    let socket = UdpSocket::bind(any).map_err(|e| format!("bind failed: {e}"))?;
    socket
        .connect(to)
        .map_err(|e| format!("connect failed: {e}"))?;
    socket
        .set_read_timeout(Some(timeout))
        .map_err(|e| format!("set_read_timeout failed: {e}"))?;
    socket
        .send(payload.as_bytes())
        .map_err(|e| format!("send failed: {e}"))?;
    let mut buf = [0; 2048];
    let n = socket
        .recv(&mut buf)
        .map_err(|e| format!("no reply within {timeout:?}: {e}"))?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}
