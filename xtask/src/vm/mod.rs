//! `cargo xtask vm-test [--kernel 6.1|6.12|all]`: the program tests and LVS-DR scenarios (veth,
//! virtio-net, IPVS beside drlb, a director on an 802.1Q trunk) inside QEMU guests running
//! Debian's kernels.
//!
//! The host builds the binaries, fetches and unpacks each kernel package (cached under
//! target/vm/), packs an initramfs per kernel, boots the kernels side by side and judges each
//! guest by its console: the `VMTEST-RC=` marker, the `VMTEST-CHECK` lines and libtest's result
//! lines. What runs inside is tests/vm/guest.sh.

mod initramfs;
mod kernel;
mod qemu;

use std::{
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{TestTotals, drlb_binary, workspace_root};
use initramfs::Shipped;
use kernel::{KERNELS, Kernel};

/// The test binaries shipped into the guest: the BPF_PROG_TEST_RUN program tests, the
/// controller's against real maps, what loading each object allocates, and the map-change
/// stress test (an emulated CPU stalls at any instruction when the host schedules its thread
/// out, so a reader's window is far wider in a guest than on the host).
const PROGRAM_TESTS: &[&str] = &[
    "program",
    "program_arp",
    "program_icmp",
    "program_ipv6",
    "program_ndp",
    "controller",
    "objects",
    "stress",
];
/// The dataplane benchmark (tests/benches/dataplane.rs), run small in the guest so that its
/// IPVS contender runs on a kernel that has IPVS.
const BENCH: &str = "dataplane";
/// The whole guest run is bounded; a guest that has not powered off by then is killed and the
/// run fails with its console's tail. TCG runs the suite in a few minutes.
const GUEST_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// Console lines shown when a guest fails.
const TAIL_LINES: usize = 80;
const RC_MARKER: &str = "VMTEST-RC=";
/// Boots again after QEMU itself died of a signal (never after a guest's failure or timeout).
const EMULATOR_RETRIES: u32 = 1;
const CHECK_PREFIX: &str = "VMTEST-CHECK ";
const ROW_PREFIX: &str = "VMTEST-ROW ";
const BENCH_PREFIX: &str = "VMTEST-BENCH ";
/// What the guest saw that is worth saying but fails nothing.
const NOTE_PREFIX: &str = "VMTEST-NOTE ";

/// The kernels `--kernel` names: one label or `all`.
pub fn kernels(choice: &str) -> Result<Vec<Kernel>> {
    if choice == "all" {
        return Ok(KERNELS.to_vec());
    }
    match KERNELS.iter().find(|k| k.label == choice) {
        Some(kernel) => Ok(vec![*kernel]),
        None => bail!(
            "unknown kernel {choice:?}: choose one of {} or all",
            KERNELS
                .iter()
                .map(|k| k.label)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The parts of the guest's run `--only` can pick (guest.sh knows them by these names).
pub const PARTS: &[&str] = &[
    "program",
    "veth/ipvs",
    "veth/drlb",
    "virtio/ipvs",
    "virtio/drlb",
    "bench",
    "vlan",
];

/// Runs the guests for `kernels` (in parallel) and fails if any of them failed. `only`: one of
/// [`PARTS`] instead of all of them (while working on one).
pub fn run(kernels: &[Kernel], only: Option<&str>) -> Result<()> {
    if let Some(part) = only
        && !PARTS.contains(&part)
    {
        bail!("unknown part {part:?}: choose one of {}", PARTS.join(", "));
    }
    let expects_program_tests = only.is_none_or(|p| p == "program");
    let cmdline = only.map(|p| format!("vmtest.only={p}")).unwrap_or_default();
    let started = Instant::now();
    let binaries = build_binaries()?;
    let cache = workspace_root().join("target/vm");
    let mut guests = Vec::new();
    for kernel in kernels {
        let unpacked = kernel::fetch(kernel, &cache)?;
        let initrd = cache.join(format!("initramfs-{}.cpio.gz", kernel.release));
        initramfs::build(
            &workspace_root(),
            kernel,
            &unpacked,
            &binaries,
            &cache.join("stage").join(kernel.release),
            &initrd,
        )?;
        guests.push((*kernel, unpacked.vmlinuz, initrd));
    }
    println!(
        "vm-test: booting {} under QEMU (TCG, {} vCPUs each of {} possible); consoles in {}",
        guests
            .iter()
            .map(|(k, _, _)| k.release)
            .collect::<Vec<_>>()
            .join(" and "),
        qemu::GUEST_CPUS,
        qemu::GUEST_POSSIBLE_CPUS,
        cache.display()
    );
    let handles: Vec<_> = guests
        .into_iter()
        .map(|(kernel, vmlinuz, initrd)| {
            let log = cache.join(format!("console-{}.log", kernel.label));
            let cmdline = cmdline.clone();
            thread::spawn(move || {
                run_guest(
                    &kernel,
                    &vmlinuz,
                    &initrd,
                    &cmdline,
                    &log,
                    expects_program_tests,
                )
            })
        })
        .collect();
    let mut results = Vec::new();
    for handle in handles {
        results.push(handle.join().expect("a guest thread panicked")?);
    }

    println!();
    for (kernel, report) in &results {
        for row in &report.rows {
            println!("vm-test {}: {row}", kernel.label);
        }
        for row in &report.bench_rows {
            println!(
                "vm-test {}: benchmark (emulated CPU, Mpps | loss | ns/frame | vs limit | vs \
                 nftables): {row}",
                kernel.label
            );
        }
    }
    let mut failed = Vec::new();
    for (kernel, report) in &results {
        println!("{}", report.summary(kernel));
        if !report.passed() {
            failed.push(kernel.label);
        }
    }
    println!(
        "vm-test: {} s in all (emulated CPUs: no figure from a guest compares with a native one)",
        started.elapsed().as_secs()
    );
    if !failed.is_empty() {
        bail!(
            "vm-test failed on {}: see the console tails above and target/vm/console-*.log",
            failed.join(", ")
        );
    }
    Ok(())
}

fn run_guest(
    kernel: &Kernel,
    vmlinuz: &Path,
    initrd: &Path,
    cmdline: &str,
    log: &Path,
    expects_program_tests: bool,
) -> Result<(Kernel, Report)> {
    let started = Instant::now();
    let prefix = format!("[{}] ", kernel.label);
    let mut boots = 0;
    let console = loop {
        boots += 1;
        let console = qemu::boot(
            vmlinuz,
            initrd,
            cmdline,
            log,
            GUEST_TIMEOUT,
            &prefix,
            |line| {
                line.starts_with("VMTEST")
                    || line.starts_with("test result:")
                    || line.starts_with("== ")
            },
        )?;
        match &console.emulator_crashed {
            Some(why) if boots <= EMULATOR_RETRIES => {
                println!(
                    "{prefix}QEMU itself crashed ({why}), not the guest: booting again ({boots} of \
                     {EMULATOR_RETRIES} retries)"
                );
            }
            _ => break console,
        }
    };
    let mut report = judge(&console.lines);
    report.expects_program_tests = expects_program_tests;
    report.timed_out = console.timed_out;
    report.seconds = started.elapsed().as_secs();
    if !report.passed() {
        let from = console.lines.len().saturating_sub(TAIL_LINES);
        println!(
            "{prefix}FAILED; the console's last {} lines (all of it: {}):",
            console.lines.len() - from,
            log.display()
        );
        for line in &console.lines[from..] {
            println!("{prefix}| {line}");
        }
    }
    Ok((*kernel, report))
}

/// The project's binaries the guest runs: drlb, the test server, the program tests and the
/// dataplane benchmark.
fn build_binaries() -> Result<Vec<Shipped>> {
    crate::run(Command::new("cargo").args([
        "build",
        "--release",
        "--package",
        "tests",
        "--bin",
        "drlb-testsrv",
    ]))?;
    let mut shipped = vec![
        Shipped {
            name: "drlb".into(),
            path: drlb_binary(),
        },
        Shipped {
            name: "drlb-testsrv".into(),
            path: workspace_root().join("target/release/drlb-testsrv"),
        },
    ];
    for (name, path) in built_executables("test", PROGRAM_TESTS)? {
        shipped.push(Shipped {
            name: format!("tests/{name}"),
            path,
        });
    }
    for (name, path) in built_executables("bench", &[BENCH])? {
        shipped.push(Shipped { name, path });
    }
    Ok(shipped)
}

/// Builds the `kind` (test or bench) targets `names` of the tests package (release) and
/// returns each one's executable.
fn built_executables(kind: &str, names: &[&str]) -> Result<Vec<(String, PathBuf)>> {
    let mut cmd = Command::new("cargo");
    cmd.args([kind, "--package", "tests", "--no-run"]);
    if kind == "test" {
        // `cargo bench` builds optimised already (and has no --release).
        cmd.arg("--release");
    }
    cmd.args(["--message-format", "json"]);
    for name in names {
        cmd.arg(format!("--{kind}")).arg(name);
    }
    let out = cmd
        .current_dir(workspace_root())
        .output()
        .with_context(|| format!("could not start cargo {kind} --no-run"))?;
    if !out.status.success() {
        bail!(
            "building {names:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let found = executables(&String::from_utf8_lossy(&out.stdout), kind)?;
    let found: Vec<_> = found
        .into_iter()
        .filter(|(name, _)| names.contains(&name.as_str()))
        .collect();
    if found.len() != names.len() {
        bail!("cargo {kind} --no-run did not report every executable of {names:?}: {found:?}");
    }
    Ok(found)
}

/// (target name, executable) of each `kind` (test, bench) target in cargo's JSON messages.
fn executables(json_lines: &str, kind: &str) -> Result<Vec<(String, PathBuf)>> {
    let mut found = Vec::new();
    for line in json_lines.lines().filter(|l| l.starts_with('{')) {
        let message: serde_json::Value =
            serde_json::from_str(line).context("cargo printed a line that is not JSON")?;
        let of_kind = message["target"]["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| k == kind));
        if message["reason"] != "compiler-artifact" || !of_kind {
            continue;
        }
        if let (Some(name), Some(path)) = (
            message["target"]["name"].as_str(),
            message["executable"].as_str(),
        ) {
            found.push((name.to_owned(), PathBuf::from(path)));
        }
    }
    Ok(found)
}

/// What a guest's console says.
#[derive(Default, Debug)]
struct Report {
    /// The exit code in the marker line; `None`: the guest never got there.
    rc: Option<i32>,
    kernel_release: Option<String>,
    checks_ok: usize,
    checks_failed: Vec<String>,
    totals: TestTotals,
    /// The IPVS-beside-drlb table.
    rows: Vec<String>,
    /// The dataplane benchmark's IPVS rows (an emulated CPU's figures).
    bench_rows: Vec<String>,
    notes: Vec<String>,
    timed_out: bool,
    seconds: u64,
    /// Whether the program tests were to run (not so with `--only` another part).
    expects_program_tests: bool,
}

impl Report {
    fn passed(&self) -> bool {
        self.rc == Some(0)
            && self.checks_failed.is_empty()
            && self.totals.failed == 0
            && (self.totals.passed > 0 || !self.expects_program_tests)
            && self.checks_ok > 0
            && !self.timed_out
    }

    /// The one line per kernel.
    fn summary(&self, kernel: &Kernel) -> String {
        let verdict = if self.passed() { "ok" } else { "FAILED" };
        let mut line = format!(
            "vm-test {} ({}): {verdict}; program tests: {} passed, {} failed, {} skipped; \
             scenario checks: {} ok, {} failed; {} s",
            kernel.label,
            self.kernel_release.as_deref().unwrap_or(kernel.release),
            self.totals.passed,
            self.totals.failed,
            self.totals.ignored,
            self.checks_ok,
            self.checks_failed.len(),
            self.seconds
        );
        if self.timed_out {
            line.push_str(&format!("; killed after {} s", GUEST_TIMEOUT.as_secs()));
        } else if self.rc.is_none() {
            line.push_str("; the guest printed no result marker (crash or panic?)");
        }
        for failed in &self.checks_failed {
            line.push_str(&format!("\n    FAIL {failed}"));
        }
        for note in &self.notes {
            line.push_str(&format!("\n    note: {note}"));
        }
        line
    }
}

fn judge(lines: &[String]) -> Report {
    let mut report = Report::default();
    for line in lines {
        report.totals.add(line);
        if let Some(rest) = line.strip_prefix(RC_MARKER) {
            let mut words = rest.split_whitespace();
            report.rc = words.next().and_then(|rc| rc.parse().ok());
            report.kernel_release = words
                .find_map(|w| w.strip_prefix("kernel="))
                .map(str::to_owned);
        } else if let Some(check) = line.strip_prefix(CHECK_PREFIX) {
            match check.strip_prefix("ok ") {
                Some(_) => report.checks_ok += 1,
                None => report
                    .checks_failed
                    .push(check.trim_start_matches("FAIL ").to_owned()),
            }
        } else if let Some(row) = line.strip_prefix(ROW_PREFIX)
            && !report.rows.iter().any(|r| r == row)
        {
            report.rows.push(row.to_owned());
        } else if let Some(row) = line.strip_prefix(BENCH_PREFIX) {
            report.bench_rows.push(row.to_owned());
        } else if let Some(note) = line.strip_prefix(NOTE_PREFIX) {
            report.notes.push(note.to_owned());
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn a_guest_passes_only_with_its_marker_at_zero_and_no_failure() {
        let good = "== program tests: program\n\
                    test result: ok. 17 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n\
                    VMTEST-CHECK ok program tests program\n\
                    VMTEST-ROW veth drlb http/udp: rs1=10/10\n\
                    VMTEST-ROW veth drlb http/udp: rs1=10/10\n\
                    VMTEST-RC=0 kernel=6.1.0-57-cloud-amd64";
        let mut report = judge(&lines(good));
        report.expects_program_tests = true;
        assert!(report.passed(), "{report:?}");
        assert_eq!(report.totals.passed, 17);
        assert_eq!(report.rows.len(), 1, "rows are listed once");
        assert_eq!(
            report.kernel_release.as_deref(),
            Some("6.1.0-57-cloud-amd64")
        );

        let no_marker = judge(&lines(&good.replace("VMTEST-RC=0", "Kernel panic")));
        assert!(!no_marker.passed());
        let failed_check = judge(&lines(&format!(
            "VMTEST-CHECK FAIL veth/drlb: 3 of 30 answered\n{good}"
        )));
        assert!(!failed_check.passed());
        assert_eq!(failed_check.checks_failed, ["veth/drlb: 3 of 30 answered"]);
        let failed_test = judge(&lines(&good.replace("0 failed", "1 failed")));
        assert!(!failed_test.passed());
        let mut no_tests = judge(&lines("VMTEST-CHECK ok something\nVMTEST-RC=0"));
        no_tests.expects_program_tests = true;
        assert!(
            !no_tests.passed(),
            "a guest that ran no program test did not pass"
        );
        no_tests.expects_program_tests = false;
        assert!(no_tests.passed(), "--only a scenario runs no program test");
    }

    #[test]
    fn kernel_choice_is_a_label_or_all() {
        assert_eq!(kernels("all").unwrap().len(), KERNELS.len());
        assert_eq!(kernels("6.1").unwrap()[0].label, "6.1");
        assert!(kernels("5.10").is_err());
    }

    #[test]
    fn executables_come_from_cargo_json() {
        let json = r#"{"reason":"compiler-artifact","target":{"name":"program","kind":["test"]},"executable":"/t/program-abc"}
{"reason":"compiler-artifact","target":{"name":"tests","kind":["lib"]},"executable":null}
{"reason":"compiler-artifact","target":{"name":"dataplane","kind":["bench"]},"executable":"/t/dataplane-abc"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            executables(json, "test").unwrap(),
            [("program".to_owned(), PathBuf::from("/t/program-abc"))]
        );
        assert_eq!(
            executables(json, "bench").unwrap(),
            [("dataplane".to_owned(), PathBuf::from("/t/dataplane-abc"))]
        );
    }
}
