//! The program under test: a loaded instance of drlb's XDP program with its maps, run through
//! BPF_PROG_TEST_RUN with an ingress ifindex of the caller's network namespace.

use anyhow::{Context as _, Result, bail};
use aya::{
    Ebpf,
    programs::{ProgramError, TestRun as _, TestRunOptions},
};
use lb_common::{Counter, Verdict};
use lb_userspace::{
    dataplane::Dataplane,
    dataplane::loader::{self, MapSizes},
};

use super::adapter::{MAGLEV_ENTRIES, load_state};
use crate::model::{State, XdpAction};

/// `struct xdp_md` (include/uapi/linux/bpf.h): six u32 fields; these are the ones set.
const XDP_MD_LEN: usize = 24;
const XDP_MD_DATA_END: usize = 4;
const XDP_MD_INGRESS_IFINDEX: usize = 12;
/// Room in the output buffer beyond the input: a program that grew the frame shows up as a
/// wrong output rather than as ENOSPC.
const OUTPUT_SLACK: usize = 256;

/// What one BPF_PROG_TEST_RUN gave; the verdict is read from the counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ran {
    /// The kernel refused the frame (EINVAL): the program did not run.
    Refused,
    Ran {
        action: XdpAction,
        output: Vec<u8>,
    },
}

pub struct Subject {
    ebpf: Ebpf,
    dataplane: Dataplane,
    /// What the maps hold.
    loaded: State,
    output: Vec<u8>,
}

impl Subject {
    /// A fresh program (empty flow table, zero counters) holding `state`. Must be called from
    /// the namespace whose interfaces `state` names: the devmap checks them.
    pub fn load(flow_table_size: u32, state: &State) -> Result<Self> {
        let sizes = MapSizes {
            maglev_entries: MAGLEV_ENTRIES,
            flow_table_size,
            ..MapSizes::default()
        };
        let mut ebpf = loader::load(sizes).context("loading the XDP program (needs root)")?;
        let mut dataplane = Dataplane::take_from(&mut ebpf).context("taking the program's maps")?;
        load_state(&mut dataplane, None, state).context("writing the fuzz state into the maps")?;
        Ok(Self {
            ebpf,
            dataplane,
            loaded: state.clone(),
            output: Vec::new(),
        })
    }

    /// Makes the maps hold `state` (only what changed is written).
    pub fn apply(&mut self, state: &State) -> Result<()> {
        load_state(&mut self.dataplane, Some(&self.loaded), state)
            .context("writing a state change into the maps")?;
        self.loaded = state.clone();
        Ok(())
    }

    /// Runs one frame as if it arrived on `ingress_ifindex`.
    pub fn run(&mut self, ingress_ifindex: u32, frame: &[u8]) -> Result<Ran> {
        let mut ctx = [0u8; XDP_MD_LEN];
        let data_end = u32::try_from(frame.len()).context("a frame length fits u32")?;
        ctx[XDP_MD_DATA_END..XDP_MD_DATA_END + 4].copy_from_slice(&data_end.to_ne_bytes());
        ctx[XDP_MD_INGRESS_IFINDEX..XDP_MD_INGRESS_IFINDEX + 4]
            .copy_from_slice(&ingress_ifindex.to_ne_bytes());
        self.output.clear();
        self.output.resize(frame.len() + OUTPUT_SLACK, 0);
        let program = loader::program(&mut self.ebpf)?;
        let result = program.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut self.output),
            ctx_in: Some(&ctx),
            ..TestRunOptions::new()
        });
        let result = match result {
            Ok(result) => result,
            Err(e) if is_einval(&e) => return Ok(Ran::Refused),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "BPF_PROG_TEST_RUN failed on a {}-byte frame from ifindex {ingress_ifindex}",
                        frame.len()
                    )
                });
            }
        };
        let Some(action) = XdpAction::from_return_value(result.return_value) else {
            bail!(
                "the program returned {}, not an XDP action",
                result.return_value
            );
        };
        let len = usize::try_from(result.data_size_out).context("an output length fits usize")?;
        Ok(Ran::Ran {
            action,
            output: self.output[..len.min(self.output.len())].to_vec(),
        })
    }

    pub fn verdict_counter(&self, verdict: Verdict) -> Result<Counter> {
        self.dataplane.verdict_counter(verdict)
    }

    /// Every verdict counter, in `Verdict::ALL` order.
    pub fn verdict_counters(&self) -> Result<Vec<Counter>> {
        Verdict::ALL
            .iter()
            .map(|&v| self.verdict_counter(v))
            .collect()
    }
}

fn is_einval(error: &ProgramError) -> bool {
    matches!(error, ProgramError::SyscallError(e) if e.io_error.raw_os_error() == Some(libc::EINVAL))
}
