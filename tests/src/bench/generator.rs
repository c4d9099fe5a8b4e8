//! The traffic generator and the counting sink, loaded together into the generator namespace.
//!
//! A run writes the stream's config, restarts the flow sequence at flow 0, then calls
//! BPF_PROG_TEST_RUN in live-frames mode from a thread that is inside the generator namespace
//! (the kernel looks the ingress ifindex up there) and pinned to one CPU, in chunks so that a
//! run stops at its deadline even if the testbed is slow. The sink's counters, read before and
//! after, say how many frames came back and to which backend.
//!
//! Where the kernel refuses live frames (EPERM before the run starts, seen on a hardened 6.18
//! whatever the program, frame, context or batch), the generator falls back for good to the
//! same frames sent from userspace through a packet socket ([`super::packet_socket`]); every
//! measurement says which way its frames went.

use std::{
    thread,
    time::{Duration, Instant},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, PerCpuArray, PerCpuValues},
    programs::{ProgramError, TestRun as _, TestRunAttrs, TestRunOptions, Xdp, XdpMode},
    sys::SyscallError,
};
use lb_common::bench::{
    GENERATOR_PROGRAM, MAX_BACKENDS, SINK_OTHER, SINK_PROGRAM, SINK_SLOTS, map_names,
};
use lb_userspace::dataplane::loader::BENCH_OBJECT;

use super::GENERATOR_IF;

use super::{
    frames::{Stream, template},
    packet_socket::{PacketSocket, write_flow},
};
use crate::netns::{Netns, ifindex_in_current_netns, in_netns_scoped};

/// Frames per BPF_PROG_TEST_RUN call: the run checks its deadline between calls.
const CHUNK_FRAMES: u32 = 1 << 20;
/// How long delivered frames may keep trickling in after the generator stopped.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(2);
/// The count is final once it has not changed for this long.
const SETTLE_QUIET: Duration = Duration::from_millis(100);
const SETTLE_POLL: Duration = Duration::from_millis(5);
/// `struct xdp_md` (include/uapi/linux/bpf.h): six u32 fields.
const XDP_MD_LEN: usize = 24;
const XDP_MD_DATA_END: usize = 4;
const XDP_MD_INGRESS_IFINDEX: usize = 12;

/// How a run is driven.
#[derive(Clone, Copy, Debug)]
pub struct RunParams {
    /// Frames the kernel builds per live-frames batch (at most 256).
    pub batch: u32,
    /// The CPU the generator thread is pinned to.
    pub cpu: usize,
    /// A run stops sending after this long (the rest of its frames are not sent).
    pub deadline: Duration,
}

/// How the generator put its frames on g0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Injection {
    /// The XDP generator, run by BPF_PROG_TEST_RUN in live-frames mode.
    #[default]
    LiveFrames,
    /// The kernel refused live frames: the same frames from userspace, by an AF_PACKET socket
    /// (slower per frame: syscalls and skbs).
    PacketSocket,
}

/// What one run sent and what came back.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Measurement {
    /// How the frames were sent.
    pub injection: Injection,
    pub sent: u64,
    /// Frames that came back addressed to one of the backends.
    pub delivered: u64,
    /// Frames that came back to any other MAC (e.g. gratuitous ARP): not counted as delivered.
    pub stray: u64,
    /// Delivered frames per backend number.
    pub per_backend: Vec<u64>,
    /// Wall time of the generator's BPF_PROG_TEST_RUN calls.
    pub elapsed: Duration,
    /// The run hit its deadline before sending all its frames.
    pub truncated: bool,
}

impl Measurement {
    /// Delivered frames per second, in millions.
    #[must_use]
    pub fn mpps(&self) -> f64 {
        self.delivered as f64 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }

    /// The share of sent frames that did not come back to a backend.
    #[must_use]
    pub fn loss(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        self.sent.saturating_sub(self.delivered) as f64 / self.sent as f64
    }

    /// Generator wall time per sent frame: the whole path's cost on its CPU.
    #[must_use]
    pub fn ns_per_frame(&self) -> f64 {
        self.elapsed.as_secs_f64() * 1e9 / self.sent.max(1) as f64
    }

    /// How many backends got at least one frame.
    #[must_use]
    pub fn backends_used(&self) -> usize {
        self.per_backend.iter().filter(|&&n| n > 0).count()
    }
}

/// The generator and sink programs; the sink stays attached to the generator's interface
/// while this lives.
pub struct Generator {
    ebpf: Ebpf,
    ifindex: u32,
    /// Set once the kernel has refused live frames: every later run uses it.
    socket: Option<PacketSocket>,
}

impl Generator {
    /// Loads both programs and attaches the sink (natively) to `ifname` in `ns`.
    #[must_use]
    pub fn load(ns: &Netns, ifname: &str) -> Self {
        in_netns_scoped(ns, || {
            let ifindex = ifindex_in_current_netns(ifname).unwrap_or_else(|e| panic!("{e:#}"));
            let mut ebpf = load_object();
            for name in [GENERATOR_PROGRAM, SINK_PROGRAM] {
                xdp(&mut ebpf, name)
                    .load()
                    .unwrap_or_else(|e| panic!("the kernel refused {name}: {e}"));
            }
            xdp(&mut ebpf, SINK_PROGRAM)
                .attach_to_if_index(ifindex, XdpMode::Driver)
                .unwrap_or_else(|e| panic!("attaching {SINK_PROGRAM} to {ifname}: {e}"));
            Self {
                ebpf,
                ifindex,
                socket: None,
            }
        })
    }

    /// Sends `frames` frames of `stream` and counts what comes back.
    pub fn run(
        &mut self,
        ns: &Netns,
        stream: &Stream,
        frames: u64,
        params: RunParams,
    ) -> Measurement {
        let (frame, config) = template(stream);
        Array::<_, lb_common::bench::GeneratorConfig>::try_from(
            self.ebpf
                .map_mut(map_names::GENERATOR_CONFIG)
                .expect("generator config map"),
        )
        .expect("generator config map type")
        .set(0, config, 0)
        .expect("writing the generator config");
        self.restart_sequence();
        let before = self.sink_counts();
        let (injection, (sent, elapsed, truncated)) = if self.socket.is_none() {
            match self.run_live(ns, &frame, frames, params) {
                Ok(result) => (Injection::LiveFrames, result),
                Err(refused) => {
                    eprintln!(
                        "dataplane: the kernel refuses BPF_PROG_TEST_RUN in live-frames mode \
                         ({refused}); sending the same frames through a packet socket on \
                         {GENERATOR_IF} instead (rates are lower than with live frames)"
                    );
                    self.socket = Some(in_netns_scoped(ns, || {
                        PacketSocket::open(self.ifindex).unwrap_or_else(|e| {
                            panic!("opening a packet socket on {GENERATOR_IF}: {e}")
                        })
                    }));
                    (
                        Injection::PacketSocket,
                        self.run_socket(&frame, &config, frames, params),
                    )
                }
            }
        } else {
            (
                Injection::PacketSocket,
                self.run_socket(&frame, &config, frames, params),
            )
        };
        let after = self.settle(&before, sent);
        let per_backend: Vec<u64> = (0..MAX_BACKENDS as usize)
            .map(|b| after[b] - before[b])
            .collect();
        Measurement {
            injection,
            sent,
            delivered: per_backend.iter().sum(),
            stray: after[SINK_OTHER as usize] - before[SINK_OTHER as usize],
            per_backend,
            elapsed,
            truncated,
        }
    }

    /// Sends by the XDP generator in live-frames mode, from a thread in the generator
    /// namespace pinned to `params.cpu`: frames sent, wall time, whether the deadline cut the
    /// run short. Err (nothing sent) if the kernel refuses live frames with EPERM.
    fn run_live(
        &mut self,
        ns: &Netns,
        frame: &[u8],
        frames: u64,
        params: RunParams,
    ) -> Result<(u64, Duration, bool), std::io::Error> {
        let mut ctx = [0u8; XDP_MD_LEN];
        let frame_len = u32::try_from(frame.len()).expect("a frame is short");
        ctx[XDP_MD_DATA_END..XDP_MD_DATA_END + 4].copy_from_slice(&frame_len.to_ne_bytes());
        ctx[XDP_MD_INGRESS_IFINDEX..XDP_MD_INGRESS_IFINDEX + 4]
            .copy_from_slice(&self.ifindex.to_ne_bytes());
        let program = xdp(&mut self.ebpf, GENERATOR_PROGRAM);
        in_netns_scoped(ns, || {
            pin_to_cpu(params.cpu);
            let start = Instant::now();
            let mut sent = 0u64;
            while sent < frames {
                if start.elapsed() >= params.deadline {
                    return Ok((sent, start.elapsed(), true));
                }
                let chunk = u32::try_from((frames - sent).min(u64::from(CHUNK_FRAMES)))
                    .expect("a chunk fits u32");
                let options = TestRunOptions {
                    data_in: Some(frame),
                    ctx_in: Some(&ctx),
                    repeat: chunk,
                    attrs: TestRunAttrs::new().xdp_live_frames(params.batch),
                    ..TestRunOptions::new()
                };
                match program.test_run(options) {
                    Ok(_) => sent += u64::from(chunk),
                    Err(ProgramError::SyscallError(SyscallError { io_error, .. }))
                        if sent == 0 && io_error.raw_os_error() == Some(libc::EPERM) =>
                    {
                        return Err(io_error);
                    }
                    Err(e) => panic!("BPF_PROG_TEST_RUN (live frames) failed: {e:?}"),
                }
            }
            Ok((sent, start.elapsed(), false))
        })
    }

    /// Sends the same frames through the packet socket, `params.batch` per syscall, from a
    /// thread pinned to `params.cpu` (the socket already belongs to the generator namespace).
    fn run_socket(
        &self,
        template: &[u8],
        config: &lb_common::bench::GeneratorConfig,
        frames: u64,
        params: RunParams,
    ) -> (u64, Duration, bool) {
        let socket = self.socket.as_ref().expect("the packet socket is open");
        let flows = u64::from(config.flows);
        thread::scope(|scope| {
            scope
                .spawn(|| {
                    pin_to_cpu(params.cpu);
                    let batch = u64::from(params.batch);
                    let mut buffers: Vec<Vec<u8>> =
                        (0..params.batch.min(u32::try_from(frames).unwrap_or(u32::MAX)))
                            .map(|_| template.to_vec())
                            .collect();
                    let start = Instant::now();
                    let mut sent = 0u64;
                    while sent < frames {
                        if start.elapsed() >= params.deadline {
                            return (sent, start.elapsed(), true);
                        }
                        let count =
                            usize::try_from((frames - sent).min(batch)).expect("a batch is small");
                        for (i, buffer) in buffers[..count].iter_mut().enumerate() {
                            let n = (sent + i as u64) % flows;
                            write_flow(buffer, config, u32::try_from(n).expect("a flow is u32"));
                        }
                        socket.send(&mut buffers[..count]);
                        sent += count as u64;
                    }
                    (sent, start.elapsed(), false)
                })
                .join()
                .expect("the packet-socket sender panicked")
        })
    }

    /// Waits until every sent frame is counted, or the count stops moving; the final counts.
    fn settle(&self, before: &[u64], sent: u64) -> Vec<u64> {
        let delivered =
            |c: &[u64]| -> u64 { (0..MAX_BACKENDS as usize).map(|b| c[b] - before[b]).sum() };
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        let mut last = self.sink_counts();
        let mut quiet_since = Instant::now();
        loop {
            if delivered(&last) >= sent || Instant::now() >= deadline {
                return last;
            }
            thread::sleep(SETTLE_POLL);
            let now = self.sink_counts();
            if now != last {
                quiet_since = Instant::now();
                last = now;
            } else if quiet_since.elapsed() >= SETTLE_QUIET {
                return last;
            }
        }
    }

    /// The sink's counters, summed over CPUs, by slot.
    fn sink_counts(&self) -> Vec<u64> {
        let counters = PerCpuArray::<_, u64>::try_from(
            self.ebpf
                .map(map_names::SINK_COUNTERS)
                .expect("sink counter map"),
        )
        .expect("sink counter map type");
        (0..SINK_SLOTS)
            .map(|slot| {
                counters
                    .get(&slot, 0)
                    .expect("reading the sink counters")
                    .iter()
                    .sum()
            })
            .collect()
    }

    /// Zeroes the per-CPU flow sequence: every run starts with flow 0.
    fn restart_sequence(&mut self) {
        let mut sequence = PerCpuArray::<_, u32>::try_from(
            self.ebpf
                .map_mut(map_names::GENERATOR_SEQUENCE)
                .expect("sequence map"),
        )
        .expect("sequence map type");
        let cpus = sequence.get(&0, 0).expect("reading the sequence").len();
        let zeros = PerCpuValues::try_from(vec![0u32; cpus]).expect("one value per CPU");
        sequence.set(0, zeros, 0).expect("zeroing the sequence");
    }
}

fn xdp<'a>(ebpf: &'a mut Ebpf, name: &str) -> &'a mut Xdp {
    ebpf.program_mut(name)
        .unwrap_or_else(|| panic!("the eBPF object has no program {name}"))
        .try_into()
        .unwrap_or_else(|e| panic!("{name} is not an XDP program: {e}"))
}

/// Pins the calling thread to `cpu`.
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set),
            0,
            "pinning the thread to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The benchmark's own object (generator, sink, reflector and their maps).
fn load_object() -> Ebpf {
    EbpfLoader::new()
        .load(BENCH_OBJECT)
        .unwrap_or_else(|e| panic!("loading the benchmark's eBPF object: {e}"))
}

/// Loads one XDP program of the object and attaches it natively to `ifname` in `ns`; it stays
/// attached while the returned object lives. For the reflector on the director's interface.
#[must_use]
pub fn attach_bench_program(ns: &Netns, ifname: &str, name: &str) -> Ebpf {
    in_netns_scoped(ns, || {
        let ifindex = ifindex_in_current_netns(ifname).unwrap_or_else(|e| panic!("{e:#}"));
        let mut ebpf = load_object();
        let program = xdp(&mut ebpf, name);
        program
            .load()
            .unwrap_or_else(|e| panic!("the kernel refused {name}: {e}"));
        program
            .attach_to_if_index(ifindex, XdpMode::Driver)
            .unwrap_or_else(|e| panic!("attaching {name} to {ifname}: {e}"));
        ebpf
    })
}
