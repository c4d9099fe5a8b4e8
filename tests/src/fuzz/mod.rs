//! A differential fuzzer: frames run through the XDP program (BPF_PROG_TEST_RUN) and through
//! the reference model (`crate::model`), and every result is compared: the XDP action, the
//! output frame, and which verdict counter moved by the frame.
//!
//! One thread, inside a throw-away network namespace holding the interfaces the state names
//! (`generate::INTERFACES`) and pinned to one CPU, does everything: the flow table gives
//! each CPU its own LRU share, so the model's "no eviction" holds as long as that share is
//! never more than half full (the program is reloaded, with an empty flow table, before that).
//! A difference is printed (frame hex, state, both results) and kept as a fixture; the program
//! is then reloaded, so one difference does not cascade into the flows of the next frames.

pub mod adapter;
pub mod fixture;
pub mod generate;
pub mod rng;
pub mod subject;

use std::{
    fmt,
    net::IpAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use lb_common::{Counter, Verdict};

use self::{
    fixture::Fixture,
    generate::{FrameSource, IF_A, INTERFACES, Input, change_state, initial_state, summary},
    subject::{Ran, Subject},
};
use crate::{
    bench::generator::pin_to_cpu,
    model::{
        FlowPaths, FlowTuple, Model, Options, Outcome, Remembered, ServiceState, State, flow_tuple,
        hex,
    },
    netns::{Netns, in_netns_scoped},
    packet::{Ipv4Flow, Ipv4Frame, Ipv6Flow, Ipv6Frame, Transport},
};

/// The flow table never has fewer entries than this, nor more than the brief's 4M.
const MIN_FLOW_TABLE: u32 = 1 << 16;
/// Remembered fragmented datagrams at which the program is reloaded (see `flow_table_size`).
const FRAGMENT_REFILL_AT: usize = lb_common::MAX_FRAGMENTED_DATAGRAMS as usize / 2;
const MAX_FLOW_TABLE: u32 = 1 << 22;
/// All counters are compared with what the model expects this often (and at the end).
const COUNTER_CHECKPOINT_FRAMES: u64 = 1 << 16;
/// State changes per thousand frames.
const CHANGE_PER_MILLE: usize = 2;
const PER_MILLE: usize = 1000;
/// Progress lines on long runs.
const PROGRESS_FRAMES: u64 = 1 << 18;

/// How a run is driven.
#[derive(Clone, Debug)]
pub struct Config {
    pub frames: u64,
    pub seed: u64,
    pub options: Options,
    /// Differences are kept as fixtures here (`None`: only printed).
    pub fixture_dir: Option<PathBuf>,
    /// The run stops after this many differences.
    pub max_differences: usize,
    /// The CPU the run is pinned to.
    pub cpu: usize,
}

impl Config {
    #[must_use]
    pub fn new(frames: u64, seed: u64, options: Options) -> Self {
        Self {
            frames,
            seed,
            options,
            fixture_dir: Some(fixture::directory()),
            max_differences: 10,
            cpu: 0,
        }
    }
}

/// A frame on which the program and the model disagree.
#[derive(Clone, Debug)]
pub struct Difference {
    /// Which frame of the run (0-based), with the run's seed: enough to repeat it.
    pub frame_number: u64,
    pub seed: u64,
    pub input: Input,
    pub remembered: Option<(FlowTuple, Remembered)>,
    pub expected: Outcome,
    pub actual: Outcome,
    /// Counters that did not move as exactly one verdict by one frame.
    pub counters_note: Option<String>,
    pub state: State,
    pub fixture: Option<PathBuf>,
}

impl Difference {
    fn comments(&self, options: Options) -> Vec<String> {
        let mut lines = vec![
            format!(
                "drlb fuzz fixture: seed {}, frame {}, require_our_dst_mac = {}",
                self.seed, self.frame_number, options.require_our_dst_mac
            ),
            format!("model:   {}", self.expected),
            format!("program: {}", self.actual),
        ];
        lines.extend(self.counters_note.iter().map(|n| format!("counters: {n}")));
        lines
    }

    /// The difference as a fixture, to keep or replay.
    #[must_use]
    pub fn fixture(&self) -> Fixture {
        Fixture {
            ingress_ifindex: self.input.ingress_ifindex,
            state: self.state.clone(),
            remembered: self.remembered,
            frame: self.input.frame.clone(),
        }
    }
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "DIFFERENCE at frame {} of seed {} ({} bytes from ifindex {}):",
            self.frame_number,
            self.seed,
            self.input.frame.len(),
            self.input.ingress_ifindex
        )?;
        writeln!(f, "  frame:   {}", hex(&self.input.frame))?;
        writeln!(f, "  model:   {}", self.expected)?;
        writeln!(f, "  program: {}", self.actual)?;
        if let Some(note) = &self.counters_note {
            writeln!(f, "  counters: {note}")?;
        }
        writeln!(f, "  flow entry before: {:?}", self.remembered)?;
        writeln!(f, "  state: {}", summary(&self.state))?;
        if let Some(path) = &self.fixture {
            writeln!(f, "  kept as {}", path.display())?;
        }
        Ok(())
    }
}

/// What a run checked and found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub seed: u64,
    /// Frames run through both and compared.
    pub frames: u64,
    /// Frames the kernel refused (shorter than an Ethernet header), as the model predicted.
    pub refused: u64,
    /// Frames per verdict the program gave.
    pub verdicts: [u64; Verdict::COUNT as usize],
    /// Of those, the verdicts of IPv6 frames (ether type 0x86dd, behind at most one tag).
    pub ipv6_verdicts: [u64; Verdict::COUNT as usize],
    pub state_changes: u64,
    /// Program loads (the first, one per flow-table refill, one per difference).
    pub loads: u64,
    pub elapsed: Duration,
    /// The flow-table paths the model took (summed over program loads).
    pub flow_paths: FlowPaths,
    pub differences: Vec<Difference>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rate = self.frames as f64 / self.elapsed.as_secs_f64().max(1e-9);
        writeln!(
            f,
            "fuzz seed {}: {} frames checked in {:.1} s ({rate:.0} frames/s), {} refused by the \
             kernel, {} state changes, {} program loads, {} differences",
            self.seed,
            self.frames,
            self.elapsed.as_secs_f64(),
            self.refused,
            self.state_changes,
            self.loads,
            self.differences.len()
        )?;
        let per_verdict: Vec<String> = Verdict::ALL
            .iter()
            .zip(self.verdicts)
            .map(|(v, n)| format!("{} {n}", v.name()))
            .collect();
        writeln!(f, "verdicts: {}", per_verdict.join(", "))?;
        let per_verdict: Vec<String> = Verdict::ALL
            .iter()
            .zip(self.ipv6_verdicts)
            .map(|(v, n)| format!("{} {n}", v.name()))
            .collect();
        writeln!(f, "of them IPv6: {}", per_verdict.join(", "))?;
        let p = &self.flow_paths;
        writeln!(
            f,
            "flows: {} scheduled, {} kept their backend ({} of them off the table), {} \
             rescheduled as their backend left, {} as their service was replaced",
            p.scheduled,
            p.kept,
            p.kept_off_table,
            p.rescheduled_backend_gone,
            p.rescheduled_service_replaced
        )
    }
}

/// The network namespace a run uses, with the interfaces the fuzz state names.
struct Namespace {
    netns: Netns,
}

impl Namespace {
    fn create() -> Self {
        let netns = Netns::create("fuzz");
        for (name, ifindex, peer, peer_ifindex) in INTERFACES {
            let (index, peer_index) = (ifindex.to_string(), peer_ifindex.to_string());
            netns.ip(&[
                "link",
                "add",
                name,
                "index",
                &index,
                "type",
                "veth",
                "peer",
                "name",
                peer,
                "index",
                &peer_index,
            ]);
        }
        Self { netns }
    }
}

/// Runs `config.frames` frames through the program and the model and compares each. Needs
/// root: it creates a network namespace and loads the program.
pub fn run(config: &Config) -> Result<Report> {
    let ns = Namespace::create();
    in_netns_scoped(&ns.netns, || {
        pin_to_cpu(config.cpu);
        Runner::new(config)?.run()
    })
}

/// The flow table's size for a run: each CPU's share holds at least twice the run's frames,
/// within bounds (the runner reloads the program before a share is half full).
fn flow_table_size(frames: u64) -> Result<u32> {
    let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
    let wanted = frames
        .saturating_mul(2)
        .saturating_mul(cpus as u64)
        .next_power_of_two();
    Ok(u32::try_from(wanted.min(u64::from(MAX_FLOW_TABLE)))
        .expect("bounded by a u32")
        .max(MIN_FLOW_TABLE))
}

struct Runner<'a> {
    config: &'a Config,
    state: State,
    source: FrameSource,
    model: Model,
    subject: Subject,
    /// What the program's verdict counters must hold.
    counters: Vec<Counter>,
    flow_table_size: u32,
    /// The model reloads the program when it remembers this many flows.
    refill_at: usize,
    report: Report,
}

impl<'a> Runner<'a> {
    fn new(config: &'a Config) -> Result<Self> {
        let state = initial_state();
        let flow_table_size = flow_table_size(config.frames)?;
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
        let subject = Subject::load(flow_table_size, &state)?;
        Ok(Self {
            config,
            source: FrameSource::new(config.seed),
            model: Model::new(config.options),
            counters: subject.verdict_counters()?,
            subject,
            state,
            flow_table_size,
            refill_at: usize::try_from(flow_table_size).expect("fits") / cpus / 2,
            report: Report {
                seed: config.seed,
                loads: 1,
                ..Report::default()
            },
        })
    }

    fn run(mut self) -> Result<Report> {
        let start = Instant::now();
        for n in 0..self.config.frames {
            if self.source.rng().chance(CHANGE_PER_MILLE, PER_MILLE) {
                let previous = self.state.clone();
                change_state(self.source.rng(), &mut self.state);
                self.subject.apply(&self.state)?;
                self.model.state_changed(&previous, &self.state);
                self.report.state_changes += 1;
            }
            // FRAGMENTS is one LRU list: at half full nothing is evicted yet.
            if self.model.flow_count() >= self.refill_at
                || self.model.fragment_count() >= FRAGMENT_REFILL_AT
            {
                self.reload()?;
            }
            let input = self.source.next(&self.state);
            self.check(n, input)?;
            if self.report.differences.len() >= self.config.max_differences {
                eprintln!(
                    "fuzz: stopping after {} differences",
                    self.report.differences.len()
                );
                break;
            }
            if (n + 1) % COUNTER_CHECKPOINT_FRAMES == 0 {
                self.checkpoint()?;
            }
            if (n + 1) % PROGRESS_FRAMES == 0 {
                eprintln!(
                    "fuzz: {} frames, {:.0} frames/s, {} differences",
                    n + 1,
                    (n + 1) as f64 / start.elapsed().as_secs_f64(),
                    self.report.differences.len()
                );
            }
        }
        self.checkpoint()?;
        self.tally_flow_paths();
        self.report.elapsed = start.elapsed();
        Ok(self.report)
    }

    /// Adds the model's flow paths to the report (before the model forgets its flows).
    fn tally_flow_paths(&mut self) {
        let (total, now) = (&mut self.report.flow_paths, self.model.flow_paths());
        total.kept += now.kept;
        total.kept_off_table += now.kept_off_table;
        total.scheduled += now.scheduled;
        total.rescheduled_backend_gone += now.rescheduled_backend_gone;
        total.rescheduled_service_replaced += now.rescheduled_service_replaced;
    }

    /// A fresh program and an empty model flow table.
    fn reload(&mut self) -> Result<()> {
        self.tally_flow_paths();
        self.model = Model::new(self.config.options);
        self.subject = Subject::load(self.flow_table_size, &self.state)?;
        self.counters = self.subject.verdict_counters()?;
        self.report.loads += 1;
        Ok(())
    }

    /// Runs one frame through both and records a difference.
    fn check(&mut self, frame_number: u64, input: Input) -> Result<()> {
        let remembered =
            flow_tuple(&input.frame).and_then(|t| self.model.remembered(&t).map(|r| (t, r)));
        let expected = self
            .model
            .process(&self.state, input.ingress_ifindex, &input.frame);
        let ran = self.subject.run(input.ingress_ifindex, &input.frame)?;
        let (actual, counters_note) = observe(
            &self.subject,
            &mut self.counters,
            &expected,
            ran,
            input.frame.len(),
        )?;
        match &actual {
            Outcome::Refused => self.report.refused += 1,
            Outcome::Ran { verdict, .. } => {
                self.report.verdicts[*verdict as usize] += 1;
                if is_ipv6(&input.frame) {
                    self.report.ipv6_verdicts[*verdict as usize] += 1;
                }
            }
        }
        self.report.frames += 1;
        if actual == expected && counters_note.is_none() {
            return Ok(());
        }
        let mut difference = Difference {
            frame_number,
            seed: self.config.seed,
            input,
            remembered,
            expected,
            actual,
            counters_note,
            state: self.state.clone(),
            fixture: None,
        };
        if let Some(dir) = &self.config.fixture_dir {
            let name = format!("seed-{}-frame-{frame_number}", self.config.seed);
            let comments = difference.comments(self.config.options);
            difference.fixture = Some(difference.fixture().save(dir, &name, &comments)?);
        }
        eprintln!("{difference}");
        self.report.differences.push(difference);
        // The two flow tables may now disagree: start both afresh.
        self.reload()
    }

    /// Compares every counter with what the model expects: a frame counted twice, or counted
    /// though the kernel refused it, shows up here.
    fn checkpoint(&mut self) -> Result<()> {
        let now = self.subject.verdict_counters()?;
        if now != self.counters {
            bail!(
                "the verdict counters drifted from the model's count since the last checkpoint \
                 (seed {}, up to frame {}): expected {:?}, program {:?}",
                self.config.seed,
                self.report.frames,
                self.counters,
                now
            );
        }
        Ok(())
    }
}

/// The program's outcome, its verdict read from the counters. Reads only the expected verdict's
/// counter when it moved by exactly this frame; otherwise all of them, and says how they moved
/// when that was not one verdict by one frame.
fn observe(
    subject: &Subject,
    counters: &mut [Counter],
    expected: &Outcome,
    ran: Ran,
    frame_len: usize,
) -> Result<(Outcome, Option<String>)> {
    let (action, output) = match ran {
        Ran::Refused => return Ok((Outcome::Refused, None)),
        Ran::Ran { action, output } => (action, output),
    };
    let bytes = u64::try_from(frame_len).context("a frame length fits u64")?;
    let one_frame = |before: Counter| Counter {
        packets: before.packets + 1,
        bytes: before.bytes + bytes,
    };
    if let Outcome::Ran { verdict, .. } = expected {
        let index = *verdict as usize;
        if subject.verdict_counter(*verdict)? == one_frame(counters[index]) {
            counters[index] = one_frame(counters[index]);
            return Ok((
                Outcome::Ran {
                    action,
                    verdict: *verdict,
                    output,
                },
                None,
            ));
        }
    }
    let now = subject.verdict_counters()?;
    let moved: Vec<(Verdict, Counter, Counter)> = Verdict::ALL
        .iter()
        .zip(counters.iter().zip(&now))
        .filter(|(_, (before, after))| before != after)
        .map(|(&v, (&before, &after))| (v, before, after))
        .collect();
    counters.copy_from_slice(&now);
    let (verdict, note) = match moved.as_slice() {
        [(verdict, before, after)] if *after == one_frame(*before) => (*verdict, None),
        _ => {
            let description: Vec<String> = moved
                .iter()
                .map(|(v, before, after)| {
                    format!(
                        "{} +{} frames/+{} bytes",
                        v.name(),
                        after.packets.wrapping_sub(before.packets),
                        after.bytes.wrapping_sub(before.bytes)
                    )
                })
                .collect();
            let note = format!(
                "expected one verdict +1 frame/+{bytes} bytes, moved: [{}]",
                description.join(", ")
            );
            (moved.first().map_or(Verdict::Aborted, |m| m.0), Some(note))
        }
    };
    Ok((
        Outcome::Ran {
            action,
            verdict,
            output,
        },
        note,
    ))
}

/// Runs a saved fixture again: a fresh program and model holding the fixture's state, the
/// fixture's flow entry recreated, then the frame. `None` when both agree.
pub fn replay(fixture: &Fixture, options: Options) -> Result<Option<Difference>> {
    let ns = Namespace::create();
    in_netns_scoped(&ns.netns, || replay_here(fixture, options))
}

fn replay_here(fixture: &Fixture, options: Options) -> Result<Option<Difference>> {
    let mut model = Model::new(options);
    let setup = match fixture.remembered {
        Some((tuple, remembered)) => priming_state(&fixture.state, tuple, remembered)?,
        None => fixture.state.clone(),
    };
    let mut subject = Subject::load(MIN_FLOW_TABLE, &setup)?;
    let mut counters = subject.verdict_counters()?;
    if let Some((tuple, remembered)) = fixture.remembered {
        let frame = priming_frame(&setup, tuple)?;
        let expected = model.process(&setup, IF_A, &frame);
        let ran = subject.run(IF_A, &frame)?;
        let (actual, note) = observe(&subject, &mut counters, &expected, ran, frame.len())?;
        if actual != expected || note.is_some() || model.remembered(&tuple) != Some(remembered) {
            bail!(
                "recreating the flow entry {remembered:?} of {tuple:?} failed: model {expected}, \
                 program {actual}, {note:?}"
            );
        }
        subject.apply(&fixture.state)?;
        model.state_changed(&setup, &fixture.state);
    }
    let expected = model.process(&fixture.state, fixture.ingress_ifindex, &fixture.frame);
    let ran = subject.run(fixture.ingress_ifindex, &fixture.frame)?;
    let (actual, counters_note) =
        observe(&subject, &mut counters, &expected, ran, fixture.frame.len())?;
    if actual == expected && counters_note.is_none() {
        return Ok(None);
    }
    Ok(Some(Difference {
        frame_number: 0,
        seed: 0,
        input: Input {
            ingress_ifindex: fixture.ingress_ifindex,
            frame: fixture.frame.clone(),
        },
        remembered: fixture.remembered,
        expected,
        actual,
        counters_note,
        state: fixture.state.clone(),
        fixture: None,
    }))
}

/// Whether a frame carries IPv6 (untagged, or behind one 802.1Q tag).
fn is_ipv6(frame: &[u8]) -> bool {
    const ETHERTYPE_AT: usize = 12;
    const TAG_LEN: usize = 4;
    let at = |offset: usize| frame.get(offset..offset + 2).map(|b| [b[0], b[1]]);
    match at(ETHERTYPE_AT) {
        Some([0x86, 0xdd]) => true,
        Some([0x81, 0x00]) => at(ETHERTYPE_AT + TAG_LEN) == Some([0x86, 0xdd]),
        _ => false,
    }
}

/// A state in which any packet of `tuple` is sent to the remembered backend of the remembered
/// service instance, so that one frame makes both flow tables remember exactly that.
fn priming_state(state: &State, tuple: FlowTuple, remembered: Remembered) -> Result<State> {
    let mut setup = state.clone();
    setup.services.retain(|s| {
        s.id != remembered.service_id
            && !(s.vip == tuple.daddr && s.port == tuple.dport && s.protocol == tuple.protocol)
    });
    let target = state
        .services
        .iter()
        .find_map(|s| s.backends.values().flatten().next().copied())
        .context("priming a flow entry needs a backend somewhere in the state")?;
    let target = crate::model::BackendTarget {
        ifindex: IF_A,
        ..target
    };
    setup.services.push(ServiceState {
        id: remembered.service_id,
        vip: tuple.daddr,
        port: tuple.dport,
        protocol: tuple.protocol,
        source_hash: false,
        standby: false,
        table: vec![remembered.backend_id],
        backends: [(remembered.backend_id, Some(target))].into(),
    });
    Ok(setup)
}

/// A valid frame of `tuple` addressed to IF_A's MAC.
fn priming_frame(state: &State, tuple: FlowTuple) -> Result<Vec<u8>> {
    let transport = match tuple.protocol {
        lb_common::IPPROTO_TCP => Transport::Tcp,
        lb_common::IPPROTO_UDP => Transport::Udp,
        other => bail!("a remembered flow of protocol {other}"),
    };
    let dst_mac = *state
        .interfaces
        .get(&IF_A)
        .context("priming needs the interface IF_A registered")?;
    Ok(match (tuple.saddr, tuple.daddr) {
        (IpAddr::V4(saddr), IpAddr::V4(daddr)) => {
            let mut frame = Ipv4Frame::new(Ipv4Flow {
                saddr,
                daddr,
                sport: tuple.sport,
                dport: tuple.dport,
                transport,
            });
            frame.dst_mac = dst_mac;
            frame.build()
        }
        (IpAddr::V6(saddr), IpAddr::V6(daddr)) => {
            let mut frame = Ipv6Frame::new(Ipv6Flow {
                saddr,
                daddr,
                sport: tuple.sport,
                dport: tuple.dport,
                transport,
            });
            frame.dst_mac = dst_mac;
            frame.build()
        }
        _ => bail!("a remembered flow mixes families: {tuple:?}"),
    })
}
