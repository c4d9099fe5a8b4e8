//! Boots a kernel with its initramfs under QEMU (TCG) and keeps the serial console.

use std::{
    fs::File,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

/// The guest's virtio NICs, all on one QEMU hub so that frames between guest namespaces cross
/// virtio devices; guest.sh tells them apart by these MACs (its `mac_of`): client, director,
/// rs1..rs3.
const HUB_NIC_MACS: &[&str] = &[
    "02:d1:00:00:00:01",
    "02:d1:00:00:00:02",
    "02:d1:00:00:00:11",
    "02:d1:00:00:00:12",
    "02:d1:00:00:00:13",
];
/// Room for the benchmark's director: IPv4 and IPv6 flow tables of 1M flows each, beside the
/// guest's own needs (TCG allocates guest memory only as it is touched).
const GUEST_MEMORY_MB: u32 = 2048;
/// CPUs online in the guest while the tests run.
pub const GUEST_CPUS: u32 = 2;
/// CPUs possible in the guest: more than online, as on many servers (128 possible, 8 online),
/// which is where per-CPU map shares sized by possible CPUs go wrong (the flow table's capacity
/// test in tests/tests/program.rs shows it).
pub const GUEST_POSSIBLE_CPUS: u32 = 4;

/// What a boot left: the console's lines, whether QEMU had to be killed, and whether QEMU
/// itself died of a signal (its own assertion, not the guest's doing).
pub struct Console {
    pub lines: Vec<String>,
    pub timed_out: bool,
    pub emulator_crashed: Option<String>,
}

/// Boots `vmlinuz` with `initrd` (and `cmdline` appended to the kernel's); console lines go to `log`, and those `show` picks are also
/// printed with `prefix`. QEMU is killed after `timeout`.
pub fn boot(
    vmlinuz: &Path,
    initrd: &Path,
    cmdline: &str,
    log: &Path,
    timeout: Duration,
    prefix: &str,
    show: fn(&str) -> bool,
) -> Result<Console> {
    let mut cmd = Command::new("qemu-system-x86_64");
    // TCG, always: this machine kind's /dev/kvm is a software hypervisor on which Debian's
    // kernels die with emulation errors (docs: README, "VM tests").
    cmd.args(["-accel", "tcg", "-cpu", "max"])
        .args(["-m", &GUEST_MEMORY_MB.to_string()])
        // All possible CPUs boot; guest.sh takes those beyond `vmtest.online_cpus` offline
        // (QEMU's hot-pluggable CPUs are not counted as possible by these kernels).
        .args(["-smp", &GUEST_POSSIBLE_CPUS.to_string()])
        .args([
            "-nodefaults",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(format!(
            "console=ttyS0 panic=-1 quiet vmtest.online_cpus={GUEST_CPUS} {cmdline}"
        ));
    for (n, mac) in HUB_NIC_MACS.iter().enumerate() {
        cmd.args(["-netdev", &format!("hubport,id=h{n},hubid=0")]);
        // `romfile=`: no option ROM to load, a second less to boot.
        cmd.args([
            "-device",
            &format!("virtio-net-pci,netdev=h{n},mac={mac},romfile="),
        ]);
    }
    // SAFETY: prctl is async-signal-safe and touches nothing of the parent's.
    unsafe {
        cmd.pre_exec(|| {
            // QEMU dies with the thread that started it (Ctrl-C, a killed xtask): no guest is
            // left running in the background.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("could not start qemu-system-x86_64: run `cargo xtask setup`")?;

    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let tx_err = tx.clone();
    thread::spawn(move || forward_lines(stdout, &tx));
    thread::spawn(move || forward_lines(stderr, &tx_err));

    let mut file = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let deadline = Instant::now() + timeout;
    let mut lines = Vec::new();
    let mut timed_out = false;
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) => {
                let line = line.trim_end_matches(['\r', '\n']).to_owned();
                writeln!(file, "{line}")?;
                if show(&line) {
                    println!("{prefix}{line}");
                }
                lines.push(line);
            }
            // Both pipes closed: QEMU has exited.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if Instant::now() >= deadline {
            timed_out = true;
            let _ = child.kill();
            break;
        }
    }
    let status = child.wait().context("waiting for QEMU")?;
    // A guest powers off (QEMU exits 0) or is killed at its deadline; QEMU dying of a signal
    // by itself is QEMU's failure (e.g. TCG's `iotlb_to_section` assertion, seen rarely with
    // several vCPUs), reported with its last line.
    let emulator_crashed = (!timed_out)
        .then(|| std::os::unix::process::ExitStatusExt::signal(&status))
        .flatten()
        .map(|signal| {
            let last = lines
                .iter()
                .rev()
                .find(|l| l.starts_with("qemu-system"))
                .cloned()
                .unwrap_or_default();
            format!("signal {signal}: {last}")
        });
    Ok(Console {
        lines,
        timed_out,
        emulator_crashed,
    })
}

fn forward_lines(from: impl std::io::Read, to: &mpsc::Sender<String>) {
    let mut reader = BufReader::new(from);
    let mut buf = Vec::new();
    // The console is not guaranteed UTF-8 (a panic may print anything): lossy lines.
    while reader.read_until(b'\n', &mut buf).unwrap_or(0) > 0 {
        if to.send(String::from_utf8_lossy(&buf).into_owned()).is_err() {
            return;
        }
        buf.clear();
    }
}
