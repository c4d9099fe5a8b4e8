//! The dataplane benchmark, side by side on the same generated traffic: the limit of the
//! testbed (a trivial XDP reflector), drlb (the real daemon), nftables DR and, when the kernel
//! has it, IPVS in DR mode; then the programs' own cost per packet. Writes
//! `target/bench/dataplane.md` and `target/bench/dataplane.svg` and prints the markdown.
//!
//! Run by `cargo xtask bench [--quick]` (needs root); directly:
//! `DRLB_BIN=target/release/drlb cargo bench -p tests --bench dataplane -- [--quick]`.
//! Benchmarks are not tests: nothing here asserts a time; ratios are against baselines
//! measured in the same run. See `tests::bench` for the topology.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use clap::Parser;
use tests::{
    bench::{
        DIRECTOR_MAC, GENERATOR_MAC, Protocol,
        cost::{self, CostParams},
        frames::{MAX_FRAME_LEN, MIN_FRAME_LEN, Stream},
        generator::{Measurement, RunParams},
        report::{Contender, IpvsStatus, Machine, Report, Row, Settings, flows_label},
        topology::Testbed,
    },
    netns::in_netns_scoped,
};

/// The flow counts of every contender's streams, unless `--flows` says otherwise.
const FLOW_COUNTS: [u32; 4] = [1, 1_000, 100_000, 1_000_000];
/// The most flows a stream may have: the flow table is sized for it.
const MAX_FLOWS: u32 = 1_000_000;

fn parse_protocol(text: &str) -> Result<Protocol, String> {
    match text {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        "tcp6" => Ok(Protocol::Tcp6),
        "udp6" => Ok(Protocol::Udp6),
        _ => Err(format!(
            "{text:?} is not a protocol: tcp, udp, tcp6 or udp6 (the same to the IPv6 VIP)"
        )),
    }
}
/// Room for 1M flows in each CPU's share of drlb's LRU flow table (BPF_F_NO_COMMON_LRU gives
/// every possible CPU max_entries / CPUs; here all frames arrive on one CPU).
const MIN_FLOW_TABLE_PER_CPU: u32 = 1 << 20;
/// Frames of the short run each contender gets before its measured runs.
const WARM_UP_FRAMES: u64 = 100_000;
/// A run stops sending after this long.
const RUN_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Parser)]
#[command(about = "drlb dataplane benchmark (needs root)")]
struct Args {
    /// A run of under 3 minutes: 1M frames per run instead of 5M, shorter cost loops.
    #[arg(long)]
    quick: bool,
    /// Frame length as XDP sees it (no FCS).
    #[arg(long, default_value_t = 64)]
    frame_len: usize,
    /// Frames per run (default: 1M with --quick, else 5M); a run sends at least one per flow.
    #[arg(long)]
    frames: Option<u64>,
    /// Rounds per stream; each row is the median round (default 3: the machine may be shared).
    #[arg(long)]
    runs: Option<usize>,
    /// Flow counts to measure, repeatable (default: 1, 1000, 100000 and 1000000).
    #[arg(long = "flows", value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_FLOWS)))]
    flows: Vec<u32>,
    /// Protocols to measure, repeatable: tcp (TCP-like), udp, tcp6 or udp6 (the same over
    /// IPv6; default: all four).
    #[arg(long = "protocol", value_parser = parse_protocol)]
    protocols: Vec<Protocol>,
    /// Frames per live-frames batch (1..=256).
    #[arg(long, default_value_t = 64)]
    batch: u32,
    /// Where the report goes (default: the workspace's target/bench).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The command line to print in the report.
    #[arg(long, default_value = "cargo xtask bench")]
    command: String,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    let args = Args::parse();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("dataplane benchmark skipped: it needs root (run `cargo xtask bench`)");
        return;
    }
    assert!(
        (MIN_FRAME_LEN..=MAX_FRAME_LEN).contains(&args.frame_len),
        "--frame-len must be {MIN_FRAME_LEN}..={MAX_FRAME_LEN}"
    );
    assert!((1..=256).contains(&args.batch), "--batch must be 1..=256");
    let drlb = tests::drlb_binary();
    assert!(
        drlb.is_file(),
        "{} is missing: run `cargo xtask build` (or set DRLB_BIN)",
        drlb.display()
    );
    let started = Instant::now();
    let load_at_start = load_average();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let settings = Settings {
        command: args.command.clone(),
        frame_len: args.frame_len,
        frames: args
            .frames
            .unwrap_or(if args.quick { 1_000_000 } else { 5_000_000 }),
        batch: args.batch,
        runs: args.runs.unwrap_or(3).max(1),
        // The last CPU: the first tends to get the housekeeping.
        cpu: cores - 1,
        flow_table_size: flow_table_size(),
        loop_repeat: if args.quick { 1_000_000 } else { 10_000_000 },
        single_runs: if args.quick { 2_000 } else { 20_000 },
    };
    let params = RunParams {
        batch: settings.batch,
        cpu: settings.cpu,
        deadline: RUN_DEADLINE,
    };

    let mut testbed = Testbed::new();
    eprintln!("dataplane: testbed ready ({:.1?})", started.elapsed());

    let cost_params = CostParams {
        loop_repeat: settings.loop_repeat,
        single_runs: settings.single_runs,
        flow_table_size: settings.flow_table_size,
    };
    let (costs, cost_check) = in_netns_scoped(&testbed.director_ns, || cost::measure(cost_params));
    eprintln!(
        "dataplane: program costs measured ({:.1?})",
        started.elapsed()
    );
    // Also now, not only in the report: they stand even if a traffic run fails below.
    for cost in costs.iter().chain([&cost_check]) {
        eprintln!(
            "dataplane:   {}: {:.1} ns ({})",
            cost.what, cost.ns, cost.action
        );
    }

    let mut bench = Bench {
        testbed: &mut testbed,
        settings: &settings,
        params,
        daemons_started: 0,
        ipvs: IpvsStatus::NotAvailable,
        rows: Vec::new(),
    };
    if bench.testbed.ipvs_available() {
        bench.ipvs = IpvsStatus::Measured;
    }
    // Stream by stream, every contender in turn, so that each ratio compares runs made
    // seconds apart.
    let protocols = if args.protocols.is_empty() {
        Protocol::ALL.to_vec()
    } else {
        args.protocols.clone()
    };
    let flow_counts = if args.flows.is_empty() {
        FLOW_COUNTS.to_vec()
    } else {
        args.flows.clone()
    };
    for &protocol in &protocols {
        for &flows in &flow_counts {
            bench.measure_stream(protocol, flows);
            eprintln!(
                "dataplane: {protocol}, flows {} done ({:.1?})",
                flows_label(flows),
                started.elapsed()
            );
        }
    }
    let Bench { rows, ipvs, .. } = bench;
    drop(testbed);

    let report = Report {
        machine: machine(cores, load_at_start),
        settings,
        flow_counts,
        rows,
        ipvs,
        costs,
        cost_check,
    };
    let markdown = report.markdown();
    let out = args
        .out
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench"));
    std::fs::create_dir_all(&out)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", out.display()));
    let out = out.canonicalize().unwrap_or(out);
    for (name, text) in [
        ("dataplane.md", &markdown),
        ("dataplane.svg", &report.svg()),
    ] {
        let path = out.join(name);
        std::fs::write(&path, text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
    println!("{markdown}");
    println!(
        "Written: {0}/dataplane.md, {0}/dataplane.svg (dataplane benchmark: {1:.0?})",
        out.display(),
        started.elapsed()
    );
}

/// The measuring loop's state: the testbed, the settings and the rows so far.
struct Bench<'a> {
    testbed: &'a mut Testbed,
    settings: &'a Settings,
    params: RunParams,
    daemons_started: u32,
    /// `Measured` while IPVS is available and has not failed to configure.
    ipvs: IpvsStatus,
    rows: Vec<Row>,
}

impl Bench<'_> {
    /// The stream; an IPv6 one's frames are at least as long as its headers (a 64-byte frame
    /// has no room for IPv6 and TCP: those streams send 74-byte frames).
    fn stream(&self, protocol: Protocol, flows: u32) -> Stream {
        let mut stream = Stream {
            protocol,
            flows,
            frame_len: self.settings.frame_len,
            src_mac: GENERATOR_MAC,
            dst_mac: DIRECTOR_MAC,
            vip: protocol.vip(),
            port: protocol.port(),
        };
        stream.frame_len = stream.frame_len.max(stream.min_frame_len());
        stream
    }

    /// `runs` rounds of every contender on one stream; each row gets the median round.
    fn measure_stream(&mut self, protocol: Protocol, flows: u32) {
        let stream = self.stream(protocol, flows);
        let mut runs: BTreeMap<Contender, Vec<Measurement>> = BTreeMap::new();
        for _ in 0..self.settings.runs {
            {
                let _reflector = self.testbed.attach_reflector();
                self.warm_up();
                runs.entry(Contender::Limit)
                    .or_default()
                    .push(self.run("limit", &stream));
            }
            // drlb just started has an empty flow table: the cold run fills it (a run has at
            // least one frame per flow), the warm run finds every flow there.
            self.daemons_started += 1;
            let daemon = self
                .testbed
                .start_drlb(self.settings.flow_table_size, self.daemons_started);
            runs.entry(Contender::DrlbCold)
                .or_default()
                .push(self.run("drlb cold", &stream));
            runs.entry(Contender::DrlbWarm)
                .or_default()
                .push(self.run("drlb warm", &stream));
            daemon.stop();
            {
                let _nftables = self.testbed.install_nftables();
                self.warm_up();
                runs.entry(Contender::Nftables)
                    .or_default()
                    .push(self.run("nftables", &stream));
            }
            if self.ipvs == IpvsStatus::Measured {
                match self.testbed.install_ipvs() {
                    Ok(_ipvs) => {
                        self.warm_up();
                        runs.entry(Contender::Ipvs)
                            .or_default()
                            .push(self.run("IPVS", &stream));
                    }
                    Err(why) => self.ipvs = IpvsStatus::Failed(why),
                }
            }
        }
        for (contender, measurements) in runs {
            self.rows.push(Row {
                contender,
                protocol,
                flows,
                measurement: median(measurements),
            });
        }
    }

    fn run(&mut self, label: &str, stream: &Stream) -> Measurement {
        let frames = self.settings.frames.max(u64::from(stream.flows));
        let m = self
            .testbed
            .generator
            .run(&self.testbed.generator_ns, stream, frames, self.params);
        eprintln!(
            "  {label:<9} {}, flows {}: {:.2} Mpps, {} of {} delivered to {} backend(s){}",
            stream.protocol,
            flows_label(stream.flows),
            m.mpps(),
            m.delivered,
            m.sent,
            m.backends_used(),
            if m.truncated { " (deadline hit)" } else { "" }
        );
        m
    }

    /// A short run whose result is discarded, after a contender is set up: first-use costs
    /// stay out of the measured run. (Not for drlb, whose cold run must find an empty table.)
    fn warm_up(&mut self) {
        let stream = self.stream(Protocol::Udp, 1);
        let _ = self.testbed.generator.run(
            &self.testbed.generator_ns,
            &stream,
            WARM_UP_FRAMES,
            self.params,
        );
    }
}

/// The run with the median rate.
fn median(mut runs: Vec<Measurement>) -> Measurement {
    runs.sort_by(|a, b| a.mpps().total_cmp(&b.mpps()));
    let middle = runs.len() / 2;
    runs.swap_remove(middle)
}

/// The flow table size that gives each possible CPU room for the largest stream.
fn flow_table_size() -> u32 {
    let possible = std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|text| parse_cpu_list(text.trim()))
        .unwrap_or(1);
    (MIN_FLOW_TABLE_PER_CPU * possible).next_power_of_two()
}

/// The number of CPUs in a list like `0-1` or `0,2-3`.
fn parse_cpu_list(text: &str) -> Option<u32> {
    text.split(',').try_fold(0, |n, part| {
        let count = match part.split_once('-') {
            Some((a, b)) => b.parse::<u32>().ok()? - a.parse::<u32>().ok()? + 1,
            None => {
                part.parse::<u32>().ok()?;
                1
            }
        };
        Some(n + count)
    })
}

/// The 1-minute load average: other work on the machine slows every contender alike, but
/// the reader should know it was there.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

fn machine(cores: usize, load_at_start: String) -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, v)| v.trim().to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".to_owned(), |k| k.trim().to_owned());
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or_else(|| "unknown date".to_owned(), |d| d.trim().to_owned());
    Machine {
        cores,
        cpu,
        kernel,
        date,
        load: format!(
            "{load_at_start} at the start, {} at the end",
            load_average()
        ),
    }
}
