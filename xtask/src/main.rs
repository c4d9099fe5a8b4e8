//! Project tasks: `cargo xtask setup | build | test | vm-test | demo | bench | fuzz`.
//!
//! Every task that needs the toolchain runs `setup` first, so a fresh machine needs nothing but
//! this repository, rustup and root.

mod setup;
mod vm;

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "drlb project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the project needs (Debian packages, nightly rust-src, bpf-linker). Idempotent.
    Setup,
    /// Set up, then build the release `drlb` binary with the eBPF object embedded.
    Build,
    /// Set up, build, then run every test: host unit tests, BPF_PROG_TEST_RUN program tests,
    /// netns end-to-end tests, then `vm-test --kernel all` (needs root).
    Test {
        /// Extra arguments passed to the test binaries (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Set up, build, then boot Debian's kernels under QEMU and run inside each: the program
    /// tests, an LVS-DR scenario on veth and on virtio-net, and IPVS beside drlb (needs root).
    VmTest {
        /// Which kernel: 6.1 (Debian 12's), 6.12, or all.
        #[arg(long, default_value = "all")]
        kernel: String,
        /// Run one part only: program, veth/ipvs, veth/drlb, virtio/ipvs, virtio/drlb, bench or vlan.
        #[arg(long)]
        only: Option<String>,
    },
    /// Set up, build, then run a live demo on a throw-away netns testbed (needs root).
    Demo,
    /// Set up, build, then run the benchmarks and print their tables (needs root): Maglev and
    /// daemon scheduling, then the dataplane (the testbed's limit, drlb, nftables DR, IPVS),
    /// written to target/bench/dataplane.{md,svg}.
    Bench {
        /// A run of under 3 minutes: 1M frames per run instead of 5M, shorter cost loops.
        #[arg(long)]
        quick: bool,
        /// More options for the dataplane benchmark, e.g. `--flows 1000 --protocol udp
        /// --frame-len 512` (see `cargo bench -p tests --bench dataplane -- --help`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build, then run the differential fuzzer (needs root): frames through the XDP
    /// program (BPF_PROG_TEST_RUN) compared with the reference model; differences are printed
    /// and kept in tests/fuzz-fixtures/.
    Fuzz {
        /// Frames to check.
        #[arg(long, default_value_t = DEFAULT_FUZZ_FRAMES)]
        frames: u64,
        /// The PRNG seed (default: from the clock, printed so the run can be repeated).
        #[arg(long)]
        seed: Option<u64>,
    },
}

/// A full fuzz run: a million frames, about a quarter of a minute here.
const DEFAULT_FUZZ_FRAMES: u64 = 1_000_000;

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::install(),
        Task::Build => {
            setup::install()?;
            build_release()
        }
        Task::Test { args } => {
            require_root("test")?;
            setup::install()?;
            build_release()?;
            run_tests(&args)?;
            if !args.is_empty() {
                println!("vm-test: not run with test arguments (run `cargo xtask vm-test`)");
                return Ok(());
            }
            // The guests after the host's tests: a failure here is about another kernel.
            vm::run(&vm::kernels("all")?, None)
        }
        Task::VmTest { kernel, only } => {
            let kernels = vm::kernels(&kernel)?;
            require_root("vm-test")?;
            setup::install()?;
            build_release()?;
            vm::run(&kernels, only.as_deref())
        }
        Task::Demo => {
            require_root("demo")?;
            setup::install()?;
            build_release()?;
            run_demo()
        }
        Task::Bench { quick, args } => {
            require_root("bench")?;
            setup::install()?;
            build_release()?;
            run_benches(quick, &args)
        }
        Task::Fuzz { frames, seed } => {
            require_root("fuzz")?;
            setup::install()?;
            build_release()?;
            run_fuzz(frames, seed)
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

fn drlb_binary() -> PathBuf {
    workspace_root().join("target/release/drlb")
}

fn require_root(task: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "`cargo xtask {task}` loads XDP programs and creates network namespaces: run it as \
             root (e.g. `sudo -E cargo xtask {task}`)"
        );
    }
    Ok(())
}

/// Runs `cmd` in the workspace root and fails with the command line when it fails.
/// Runs `cmd` in the workspace root, unless it names a directory of its own.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    if cmd.get_current_dir().is_none() {
        cmd.current_dir(workspace_root());
    }
    let status = cmd
        .status()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn build_release() -> Result<()> {
    run(Command::new("cargo").args(["build", "--release", "--package", "lb-userspace"])).context(
        "building drlb failed: if bpf-linker or rust-src is missing, run `cargo xtask setup`",
    )
}

fn run_tests(args: &[String]) -> Result<()> {
    // `--include-ignored` runs the privileged tests (program tests and netns end-to-end), which a
    // plain `cargo test` as a non-root user lists as ignored rather than pretending they passed.
    // One thread: the end-to-end tests share two CPUs and time their traffic.
    let mut child = Command::new("cargo")
        .args([
            "test",
            "--release",
            "--workspace",
            "--exclude",
            "lb-ebpf",
            "--",
        ])
        .args(["--include-ignored", "--test-threads=1"])
        .args(args)
        .env("DRLB_BIN", drlb_binary())
        .current_dir(workspace_root())
        .stdout(Stdio::piped())
        .spawn()
        .context("could not start cargo test")?;
    let mut totals = TestTotals::default();
    for line in BufReader::new(child.stdout.take().expect("piped stdout")).lines() {
        let line = line?;
        println!("{line}");
        totals.add(&line);
    }
    let status = child.wait()?;
    // One closing line over every test binary (cargo's own last line is that of the doc
    // tests, which are few).
    println!(
        "\ntests: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    if !status.success() {
        bail!("cargo test failed with {status}");
    }
    Ok(())
}

/// Sums libtest's `test result: ok. N passed; M failed; K ignored; ...` lines.
#[derive(Default, Debug)]
struct TestTotals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl TestTotals {
    fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(count)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            match what {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                "ignored" => self.ignored += count,
                _ => {}
            }
        }
    }
}

fn run_benches(quick: bool, args: &[String]) -> Result<()> {
    run(Command::new("cargo").args([
        "bench",
        "--quiet",
        "--package",
        "lb-userspace",
        "--bench",
        "scheduling",
    ]))?;
    // The dataplane benchmark writes target/bench/dataplane.{md,svg} and prints the table.
    let command = if quick {
        "cargo xtask bench --quick"
    } else {
        "cargo xtask bench"
    };
    let mut dataplane = Command::new("cargo");
    dataplane
        .args([
            "bench",
            "--quiet",
            "--package",
            "tests",
            "--bench",
            "dataplane",
            "--",
        ])
        .args(["--command", command])
        .env("DRLB_BIN", drlb_binary());
    if quick {
        dataplane.arg("--quick");
    }
    dataplane.args(args);
    run(&mut dataplane)
}

fn run_fuzz(frames: u64, seed: Option<u64>) -> Result<()> {
    let seed = match seed {
        Some(seed) => seed,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .context("the clock is before 1970")?
            .as_secs(),
    };
    println!("fuzz: {frames} frames, seed {seed} (repeat with --frames {frames} --seed {seed})");
    // The suite's fuzz test, with the run's size and seed from the environment.
    run(Command::new("cargo")
        .args([
            "test",
            "--release",
            "--package",
            "tests",
            "--test",
            "fuzz",
            "--",
        ])
        .args([
            "--include-ignored",
            "--exact",
            "fuzz_run_finds_the_program_doing_what_the_model_says",
            "--nocapture",
        ])
        .env("FUZZ_FRAMES", frames.to_string())
        .env("FUZZ_SEED", seed.to_string()))
}

fn run_demo() -> Result<()> {
    run(Command::new("cargo")
        .args([
            "run",
            "--release",
            "--quiet",
            "--package",
            "tests",
            "--bin",
            "drlb-demo",
        ])
        .env("DRLB_BIN", drlb_binary()))
}

#[cfg(test)]
mod tests {
    use super::{Command, TestTotals, run, workspace_root};

    #[test]
    fn run_keeps_a_directory_the_command_names() {
        // vm-test downloads kernel packages into its cache this way (they once landed in the
        // workspace root instead, and the download was reported missing).
        let dir = std::env::temp_dir();
        let expected = dir.canonicalize().unwrap();
        let check = format!("test \"$(pwd -P)\" = '{}'", expected.display());
        run(Command::new("sh").args(["-c", &check]).current_dir(&dir)).unwrap();
        let root = workspace_root().canonicalize().unwrap();
        let check = format!("test \"$(pwd -P)\" = '{}'", root.display());
        run(Command::new("sh").args(["-c", &check])).unwrap();
    }

    #[test]
    fn totals_sum_libtest_result_lines() {
        let mut t = TestTotals::default();
        t.add("test result: ok. 7 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s");
        t.add("test result: FAILED. 9 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.2s");
        t.add("running 3 tests");
        assert_eq!((t.passed, t.failed, t.ignored), (16, 2, 1));
    }
}
