//! A small network-namespace topology builder for the end-to-end tests and the demo.
//!
//! Everything that creates something is a guard that removes it when dropped, also when a test
//! panics: [`Netns`] deletes its namespace, [`Process`] kills its background child, [`Scratch`]
//! removes its directory, [`PassProgram`] detaches its XDP program. Commands run through `ip`
//! (`ip -n NS ...` or `ip netns exec NS ...`), are bounded in time, and a failure panics with the
//! command line, its status, stdout and stderr, so it can be pasted into a shell as printed.
//!
//! Nothing here touches the root namespace: veth pairs are created inside the namespaces.

use std::{
    fmt::Write as _,
    fs,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

/// How long an ordinary command (`ip`, `sysctl`, ...) may take before it counts as hung.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// A name no other run or call uses: `drlb-<pid>-<n>-<role>`.
#[must_use]
pub fn unique_name(role: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "drlb-{}-{}-{role}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

// ---------------------------------------------------------------------------------------------
// Running commands

/// `argv` as a shell-like line, for messages.
fn command_line(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| {
            let a = a.to_string_lossy();
            if a.is_empty()
                || a.contains(|c: char| c.is_whitespace() || "\"'$;&|<>()*?".contains(c))
            {
                format!("'{}'", a.replace('\'', r"'\''"))
            } else {
                a.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a finished command printed, with its command line for messages.
#[derive(Debug)]
pub struct Ran {
    pub line: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    #[must_use]
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The command, its status and everything it printed.
    #[must_use]
    pub fn describe(&self) -> String {
        let mut text = format!("`{}` exited with {}", self.line, self.status);
        for (name, out) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            if out.trim().is_empty() {
                let _ = write!(text, "\n{name}: (empty)");
            } else {
                let _ = write!(text, "\n{name}:\n{}", indent(out));
            }
        }
        text
    }

    /// stdout, or a panic that shows everything when the command failed.
    #[track_caller]
    #[must_use]
    pub fn expect_success(self) -> String {
        assert!(self.success(), "command failed: {}", self.describe());
        self.stdout
    }
}

fn indent(text: &str) -> String {
    text.trim_end()
        .lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `cmd` to completion, killing it (and panicking) if it takes longer than `timeout`.
#[track_caller]
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Ran {
    let line = command_line(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not start `{line}`: {e}"));
    let stdout = drain(child.stdout.take().expect("stdout is piped"));
    let stderr = drain(child.stderr.take().expect("stderr is piped"));
    let status = wait_child(&mut child, timeout);
    let (stdout, stderr) = (
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default(),
    );
    match status {
        Some(status) => Ran {
            line,
            status,
            stdout,
            stderr,
        },
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`{line}` did not finish within {timeout:?} and was killed\nstdout:\n{}\nstderr:\n{}",
                indent(&stdout),
                indent(&stderr)
            );
        }
    }
}

/// Reads a pipe to its end on a thread (so a chatty child cannot block on a full pipe).
fn drain(mut pipe: impl std::io::Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Waits up to `timeout` for `child` to exit.
fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait().expect("waiting for a child failed") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Runs a command in the current (root) namespace: only used for `ip netns add/del`.
#[track_caller]
fn run_host(argv: &[&str]) -> String {
    run_bounded(Command::new(argv[0]).args(&argv[1..]), COMMAND_TIMEOUT).expect_success()
}

// ---------------------------------------------------------------------------------------------
// Waiting

/// Polls `check` every `interval` until it returns `Some`, for at most `timeout`.
pub fn poll_until<T>(
    timeout: Duration,
    interval: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(interval);
    }
}

/// Like [`poll_until`] (every 50 ms), but panics with `what` when the time is up.
#[track_caller]
pub fn wait_for<T>(what: &str, timeout: Duration, check: impl FnMut() -> Option<T>) -> T {
    poll_until(timeout, Duration::from_millis(50), check)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

// ---------------------------------------------------------------------------------------------
// Scratch directories

/// A directory for configs, logs and state, removed on drop. World-readable (mode 0755) so a
/// process running as an unprivileged user can read what is in it.
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    #[must_use]
    pub fn create() -> Self {
        let path = std::env::temp_dir().join(unique_name("scratch"));
        fs::create_dir(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        set_mode(&path, 0o755);
        Self { path }
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `name` (mode 0644) and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path.join(name);
        fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        set_mode(&path, 0o644);
        path
    }

    /// Creates the sub-directory `name` with `mode` and returns its path.
    pub fn subdir(&self, name: &str, mode: u32) -> PathBuf {
        let path = self.path.join(name);
        fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        set_mode(&path, mode);
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
}

// ---------------------------------------------------------------------------------------------
// Namespaces

/// A network namespace, deleted on drop (its interfaces go with it, and a veth's peer with them)
/// unless it is someone else's (see [`Netns::existing`]).
pub struct Netns {
    name: String,
    /// Whether this handle created the namespace and so deletes it on drop.
    owned: bool,
}

impl Netns {
    /// Creates `drlb-<pid>-<n>-<role>` with `lo` up and IPv6 off (no router solicitations or
    /// MLD reports to muddy captures and counters).
    #[must_use]
    pub fn create(role: &str) -> Self {
        let ns = Self {
            name: unique_name(role),
            owned: true,
        };
        run_host(&["ip", "netns", "add", &ns.name]);
        ns.ip(&["link", "set", "lo", "up"]);
        // -e: a kernel without IPv6 has no such keys, which is just as good.
        for key in [
            "net.ipv6.conf.all.disable_ipv6",
            "net.ipv6.conf.default.disable_ipv6",
        ] {
            ns.run(&["sysctl", "-q", "-e", "-w", &format!("{key}=1")]);
        }
        ns
    }

    /// A handle on the namespace `name` that someone else made and removes (e.g. `drlb testbed
    /// up|down`): commands run in it as in one of ours, but dropping it deletes nothing.
    #[must_use]
    pub fn existing(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            owned: false,
        }
    }

    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command running `argv` inside the namespace (`ip netns exec NAME argv...`).
    #[must_use]
    pub fn command<S: AsRef<std::ffi::OsStr>>(&self, argv: &[S]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(argv);
        cmd
    }

    /// Runs `argv` in the namespace; the caller judges the outcome.
    #[track_caller]
    pub fn exec<S: AsRef<std::ffi::OsStr>>(&self, argv: &[S], timeout: Duration) -> Ran {
        run_bounded(&mut self.command(argv), timeout)
    }

    /// Runs `argv` in the namespace and returns its stdout; panics with the details if it fails.
    #[track_caller]
    pub fn run<S: AsRef<std::ffi::OsStr>>(&self, argv: &[S]) -> String {
        self.exec(argv, COMMAND_TIMEOUT).expect_success()
    }

    /// Runs `ip -n NAME args...` and returns its stdout; panics with the details if it fails.
    #[track_caller]
    pub fn ip(&self, args: &[&str]) -> String {
        run_bounded(
            Command::new("ip").args(["-n", &self.name]).args(args),
            COMMAND_TIMEOUT,
        )
        .expect_success()
    }

    #[track_caller]
    pub fn sysctl(&self, key: &str, value: &str) {
        self.run(&["sysctl", "-q", "-w", &format!("{key}={value}")]);
    }

    /// The value of a sysctl in this namespace.
    #[track_caller]
    #[must_use]
    pub fn sysctl_value(&self, key: &str) -> String {
        self.run(&["sysctl", "-n", key]).trim().to_owned()
    }

    /// Sets the LVS-DR real-server ARP sysctls (`arp_ignore=1`, `arp_announce=2`) on `all`,
    /// `lo` and each of `interfaces`: the host then never answers ARP for an address on `lo`
    /// (the VIP) and never uses it as the sender address of its own ARP requests.
    #[track_caller]
    pub fn set_dr_arp_sysctls(&self, interfaces: &[&str]) {
        for conf in ["all", "lo"].iter().chain(interfaces) {
            self.sysctl(&format!("net.ipv4.conf.{conf}.arp_ignore"), "1");
            self.sysctl(&format!("net.ipv4.conf.{conf}.arp_announce"), "2");
        }
    }

    /// Makes `ifname` send complete checksums, as frames on a physical wire have. By default a
    /// veth passes TCP/UDP packets with only a partial checksum (CHECKSUM_PARTIAL, to be finished
    /// "by the NIC"); XDP sees raw frames without that note, so a frame the director forwards
    /// with XDP_TX would reach the real server with a wrong checksum and be dropped.
    #[track_caller]
    pub fn checksum_in_software(&self, ifname: &str) {
        self.run(&["ethtool", "-K", ifname, "tx", "off"]);
    }

    /// Turns IPv6 on (`Netns::create` turns it off) without duplicate address detection, so that
    /// every address, the link-local ones too, is usable at once, and without router
    /// advertisements. Covers interfaces made later and the existing `interfaces`.
    #[track_caller]
    pub fn enable_ipv6(&self, interfaces: &[&str]) {
        let confs: Vec<&str> = ["all", "default"]
            .iter()
            .chain(interfaces)
            .copied()
            .collect();
        // DAD off before IPv6 comes on: the link-local addresses are made at that moment.
        for conf in &confs {
            self.sysctl(&format!("net.ipv6.conf.{conf}.accept_dad"), "0");
            self.sysctl(&format!("net.ipv6.conf.{conf}.accept_ra"), "0");
        }
        for conf in &confs {
            self.sysctl(&format!("net.ipv6.conf.{conf}.disable_ipv6"), "0");
        }
    }

    /// `ip -6 addr add CIDR dev IFNAME nodad`: usable at once.
    #[track_caller]
    pub fn add_address6(&self, ifname: &str, cidr: &str) {
        self.ip(&["-6", "addr", "add", cidr, "dev", ifname, "nodad"]);
    }

    /// The MAC address of `ifname`, lower case (`02:00:00:00:00:01`).
    #[track_caller]
    #[must_use]
    pub fn mac(&self, ifname: &str) -> String {
        let json = self.ip(&["-j", "link", "show", "dev", ifname]);
        let links: serde_json::Value = serde_json::from_str(&json).unwrap_or_else(|e| {
            panic!(
                "`ip -n {} -j link show dev {ifname}` printed invalid JSON ({e}): {json}",
                self.name
            )
        });
        links[0]["address"]
            .as_str()
            .unwrap_or_else(|| panic!("no address for {ifname} in {json}"))
            .to_ascii_lowercase()
    }

    /// `ip link show` of the whole namespace.
    #[track_caller]
    #[must_use]
    pub fn links(&self) -> String {
        self.ip(&["link", "show"])
    }

    /// Starts `argv` in the background inside the namespace; its stdout and stderr go to
    /// `<logs>/<label>.stdout|.stderr`. `ip netns exec` execs the program itself, so the child's
    /// pid is the program's.
    #[track_caller]
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(
        &self,
        label: &str,
        argv: &[S],
        logs: &Path,
    ) -> Process {
        Process::spawn(label, self.command(argv), logs)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let deleted = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::piped())
            .output();
        match deleted {
            Ok(Output { status, .. }) if status.success() => {}
            Ok(Output { stderr, .. }) => {
                eprintln!(
                    "warning: `ip netns del {}` failed: {}",
                    self.name,
                    String::from_utf8_lossy(&stderr).trim()
                );
            }
            Err(e) => eprintln!("warning: could not run `ip netns del {}`: {e}", self.name),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A switch: a bridge in a namespace of its own

/// An L2 switch: bridge `br0` in its own namespace. Hosts are plugged in with [`Switch::connect`].
pub struct Switch {
    pub ns: Netns,
}

/// The bridge's name inside the switch namespace.
pub const BRIDGE: &str = "br0";

impl Switch {
    #[must_use]
    pub fn create() -> Self {
        let ns = Netns::create("switch");
        ns.ip(&[
            "link",
            "add",
            BRIDGE,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ]);
        ns.ip(&["link", "set", BRIDGE, "up"]);
        Self { ns }
    }

    /// Adds another bridge to the switch namespace (a second L2 network).
    #[track_caller]
    pub fn add_bridge(&self, bridge: &str) {
        self.ns.ip(&[
            "link",
            "add",
            bridge,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ]);
        self.ns.ip(&["link", "set", bridge, "up"]);
    }

    /// Plugs `host` into the bridge with a veth pair: `ifname` inside `host` (with `mac` and the
    /// address `cidr`, e.g. `198.18.0.1/24`), `port` on the switch side.
    #[track_caller]
    pub fn connect(&self, host: &Netns, port: &str, ifname: &str, mac: &str, cidr: &str) {
        self.connect_to(BRIDGE, host, port, ifname, mac, cidr);
    }

    /// [`Switch::connect`] to a bridge added with [`Switch::add_bridge`].
    #[track_caller]
    pub fn connect_to(
        &self,
        bridge: &str,
        host: &Netns,
        port: &str,
        ifname: &str,
        mac: &str,
        cidr: &str,
    ) {
        plug_into_bridge(&self.ns, bridge, host, port, ifname, mac, cidr);
    }
}

/// Plugs `host` into `bridge` of namespace `owner` with a veth pair: `ifname` inside `host`
/// (with `mac` and the address `cidr`), `port` on the bridge side in `owner`.
#[track_caller]
pub fn plug_into_bridge(
    owner: &Netns,
    bridge: &str,
    host: &Netns,
    port: &str,
    ifname: &str,
    mac: &str,
    cidr: &str,
) {
    owner.ip(&[
        "link",
        "add",
        port,
        "type",
        "veth",
        "peer",
        "name",
        ifname,
        "netns",
        host.name(),
    ]);
    owner.ip(&["link", "set", port, "master", bridge, "up"]);
    host.ip(&["link", "set", ifname, "address", mac]);
    host.ip(&["addr", "add", cidr, "dev", ifname]);
    host.ip(&["link", "set", ifname, "up"]);
}

// ---------------------------------------------------------------------------------------------
// Background processes

/// A background child, killed on drop (SIGTERM, then SIGKILL after 2 s).
pub struct Process {
    label: String,
    line: String,
    child: Child,
    exited: Option<ExitStatus>,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

impl Process {
    #[track_caller]
    fn spawn(label: &str, mut cmd: Command, logs: &Path) -> Self {
        let line = command_line(&cmd);
        let stdout_path = logs.join(format!("{label}.stdout"));
        let stderr_path = logs.join(format!("{label}.stderr"));
        let create = |p: &Path| {
            fs::File::create(p).unwrap_or_else(|e| panic!("cannot create {}: {e}", p.display()))
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(create(&stdout_path))
            .stderr(create(&stderr_path))
            .spawn()
            .unwrap_or_else(|e| panic!("could not start `{line}`: {e}"));
        Self {
            label: label.to_owned(),
            line,
            child,
            exited: None,
            stdout_path,
            stderr_path,
        }
    }

    #[must_use]
    pub fn label(&self) -> &str {
        &self.label
    }

    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the child printed on stdout so far.
    #[must_use]
    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// What the child printed on stderr so far.
    #[must_use]
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The exit status, if the child has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("waiting for a child failed");
        }
        self.exited
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) unless the child has exited.
    pub fn signal(&mut self, signal: libc::c_int) {
        if self.try_status().is_none() {
            let pid = libc::pid_t::try_from(self.pid()).expect("pid fits pid_t");
            // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
            unsafe { libc::kill(pid, signal) };
        }
    }

    /// Waits up to `timeout` for `text` to appear in the child's stdout or stderr; panics,
    /// showing them, if it does not.
    #[track_caller]
    pub fn expect_output(&self, text: &str, timeout: Duration, what: &str) {
        let seen = poll_until(timeout, Duration::from_millis(100), || {
            (self.stdout() + &self.stderr())
                .contains(text)
                .then_some(())
        });
        assert!(seen.is_some(), "{what}: {}", self.describe());
    }

    /// Waits up to `timeout` for the child to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = wait_child(&mut self.child, timeout);
        }
        self.exited
    }

    /// Sends `signal` and waits up to `timeout` for the exit; panics (after killing the child)
    /// if it does not exit.
    #[track_caller]
    pub fn stop(&mut self, signal: libc::c_int, timeout: Duration) -> ExitStatus {
        self.signal(signal);
        if let Some(status) = self.wait_timeout(timeout) {
            return status;
        }
        self.kill();
        panic!(
            "{} did not exit within {timeout:?} of signal {signal}: {}",
            self.label,
            self.describe()
        );
    }

    fn kill(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
    }

    /// The command line and what the child printed, for messages.
    #[must_use]
    pub fn describe(&self) -> String {
        format!(
            "`{}` ({})\nstdout:\n{}\nstderr:\n{}",
            self.line,
            self.exited
                .map_or_else(|| "running".to_owned(), |s| s.to_string()),
            indent(&self.stdout()),
            indent(&self.stderr())
        )
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            self.signal(libc::SIGTERM);
            if self.wait_timeout(Duration::from_secs(2)).is_none() {
                self.kill();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Packet captures

/// A running `tcpdump` inside a namespace (text output: `-n -e`, one line per frame).
pub struct Capture {
    process: Process,
}

impl Capture {
    /// Starts capturing on `ifname` of `ns` with the pcap `filter`; returns once tcpdump listens.
    #[track_caller]
    pub fn start(ns: &Netns, ifname: &str, filter: &str, label: &str, logs: &Path) -> Self {
        let argv = [
            "tcpdump",
            "-i",
            ifname,
            "-n",
            "-e",
            "-l",
            "--immediate-mode",
            filter,
        ];
        let mut process = ns.spawn(label, &argv, logs);
        let ready = poll_until(Duration::from_secs(10), Duration::from_millis(20), || {
            process.stderr().contains("listening on").then_some(())
        });
        if ready.is_none() {
            process.kill();
            panic!(
                "tcpdump did not start listening within 10 s: {}",
                process.describe()
            );
        }
        Self { process }
    }

    /// Stops the capture (SIGINT, so tcpdump flushes) and returns the captured frames' lines.
    #[track_caller]
    pub fn stop(mut self) -> Vec<String> {
        // Frames still in flight (and in the socket buffer) get a moment to arrive.
        thread::sleep(Duration::from_millis(300));
        let status = self.process.stop(libc::SIGINT, Duration::from_secs(10));
        assert!(
            status.success(),
            "tcpdump failed: {}",
            self.process.describe()
        );
        // tcpdump ends its output with an empty line.
        self.process
            .stdout()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// XDP on a veth peer in another namespace

/// The pass-everything XDP program attached to an interface of some namespace; detached on drop.
/// A veth delivers frames its peer sent with XDP_TX only when it runs an XDP program itself.
pub struct PassProgram {
    _ebpf: aya::Ebpf,
}

impl PassProgram {
    /// Attaches `lb_userspace::dataplane::loader::attach_pass_program` to `ifname` of `ns`, on a thread of
    /// its own that first enters the namespace (a process's other threads stay where they are).
    #[track_caller]
    #[must_use]
    pub fn attach(ns: &Netns, ifname: &str) -> Self {
        let (ns_name, if_name) = (ns.name().to_owned(), ifname.to_owned());
        let attached = thread::spawn(move || -> anyhow::Result<aya::Ebpf> {
            enter_netns(&ns_name)?;
            let ifindex = ifindex_in_current_netns(&if_name)?;
            lb_userspace::dataplane::loader::attach_pass_program(ifindex)
        })
        .join()
        .expect("the attach thread panicked");
        match attached {
            Ok(ebpf) => Self { _ebpf: ebpf },
            Err(e) => panic!(
                "attaching the pass program to {ifname} in {}: {e:#}",
                ns.name()
            ),
        }
    }
}

/// Runs `f` on a thread inside `ns`, e.g. to open sockets there: a socket stays in the
/// namespace it was created in, so the caller can use what `f` returns from anywhere.
#[track_caller]
pub fn in_netns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let name = ns.name().to_owned();
    thread::spawn(move || {
        enter_netns(&name).unwrap_or_else(|e| panic!("{e:#}"));
        f()
    })
    .join()
    .unwrap_or_else(|_| panic!("the thread in {} panicked", ns.name()))
}

/// Like [`in_netns`], for closures that borrow from the caller (e.g. a loaded program that
/// must be attached or run from inside the namespace): the thread is joined before returning.
#[track_caller]
pub fn in_netns_scoped<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> T {
    let name = ns.name();
    thread::scope(|scope| {
        scope
            .spawn(|| {
                enter_netns(name).unwrap_or_else(|e| panic!("{e:#}"));
                f()
            })
            .join()
            .unwrap_or_else(|_| panic!("the thread in {name} panicked"))
    })
}

/// Moves the calling thread into the network namespace `/run/netns/<name>`.
fn enter_netns(name: &str) -> anyhow::Result<()> {
    let path = Path::new("/run/netns").join(name);
    let file = fs::File::open(&path)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    // SAFETY: setns on a valid, open namespace fd; it only changes this thread's namespace.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        anyhow::bail!(
            "setns({}) failed: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// The ifindex of `ifname` in the calling thread's network namespace.
pub fn ifindex_in_current_netns(ifname: &str) -> anyhow::Result<u32> {
    let c_name = std::ffi::CString::new(ifname)?;
    // SAFETY: c_name is a valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(c_name.as_ptr()) } {
        0 => anyhow::bail!("no interface {ifname}: {}", std::io::Error::last_os_error()),
        index => Ok(index),
    }
}
