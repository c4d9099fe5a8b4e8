//! The product's own testbed, `drlb testbed up|down`, driven from Rust: the demo builds its
//! topology with it (issue 18), so what it shows is what users get in CI.
//!
//! [`CliTestbed::up`] runs `drlb testbed up --name NAME` and reads the JSON it prints; dropping
//! the guard runs `drlb testbed down --name NAME` (also after a panic, and also when `up` got
//! only half-way: `down` is idempotent).

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use crate::netns::{Netns, Ran, run_bounded};

/// Where `drlb testbed` keeps each testbed's state (lb-userspace's `testbed::STATE_ROOT`).
pub const STATE_ROOT: &str = "/run/drlb-testbed";
/// The daemon's state directory (its control socket) inside the testbed's.
const DIRECTOR_STATE: &str = "director";
/// `drlb run`'s log inside the testbed's state directory.
const DRLB_LOG: &str = "drlb.log";
/// `up` waits for drlb (30 s at most), `down` for the testbed's processes to stop.
const DRLB_TESTBED_TIMEOUT: Duration = Duration::from_secs(90);

/// One host of the testbed as `up` describes it.
pub struct CliHost {
    /// `client`, `director`, `rs1`, ...: the namespace name without `drlbtb-NAME-`.
    pub role: String,
    /// The testbed's namespace; `down` removes it, not this handle.
    pub ns: Netns,
    pub address: String,
    /// With `up --ipv6`.
    pub address6: Option<String>,
    /// Lower case; empty for the client (`up` does not print its MAC).
    pub mac: String,
}

/// A testbed made by `drlb testbed up`, removed by `drlb testbed down` on drop.
pub struct CliTestbed {
    pub name: String,
    /// The JSON `up` printed.
    pub description: Value,
    pub vip: String,
    /// With `up --ipv6`.
    pub vip6: Option<String>,
    pub client: CliHost,
    pub director: CliHost,
    pub servers: Vec<CliHost>,
    /// `/run/drlb-testbed/NAME`.
    pub state_dir: PathBuf,
}

/// Runs `drlb testbed down --name NAME` on drop.
struct Down(String);

impl Drop for Down {
    fn drop(&mut self) {
        let ran = drlb_testbed(&["down", "--name", &self.0]);
        if !ran.success() {
            eprintln!(
                "warning: removing testbed {} failed; run `drlb testbed down --name {}`: {}",
                self.0,
                self.0,
                ran.describe()
            );
        }
    }
}

fn drlb_testbed(args: &[&str]) -> Ran {
    run_bounded(
        Command::new(crate::drlb_binary())
            .arg("testbed")
            .args(args)
            .stdin(Stdio::null()),
        DRLB_TESTBED_TIMEOUT,
    )
}

impl CliTestbed {
    /// `drlb testbed up --name NAME EXTRA...`; panics with `up`'s output if it fails.
    #[track_caller]
    #[must_use]
    pub fn up(name: &str, extra: &[&str]) -> Self {
        // The guard exists before `up` runs, so whatever `up` leaves is removed.
        let down = Down(name.to_owned());
        let mut args = vec!["up", "--name", name];
        args.extend(extra);
        let ran = drlb_testbed(&args);
        assert!(ran.success(), "drlb testbed up failed: {}", ran.describe());
        let description: Value = serde_json::from_str(&ran.stdout).unwrap_or_else(|e| {
            panic!("drlb testbed up printed invalid JSON ({e}): {}", ran.stdout)
        });
        let host = |role: &str, value: &Value| CliHost {
            role: role.to_owned(),
            ns: Netns::existing(text(value, "netns")),
            address: text(value, "address").to_owned(),
            address6: value["address6"].as_str().map(str::to_owned),
            mac: value["mac"].as_str().unwrap_or_default().to_owned(),
        };
        let servers = description["servers"]
            .as_array()
            .unwrap_or_else(|| panic!("no servers in {description}"))
            .iter()
            .enumerate()
            .map(|(k, value)| host(&format!("rs{}", k + 1), value))
            .collect();
        let testbed = Self {
            name: name.to_owned(),
            vip: text(&description, "vip").to_owned(),
            vip6: description["vip6"].as_str().map(str::to_owned),
            client: host("client", &description["client"]),
            director: host("director", &description["director"]),
            servers,
            state_dir: PathBuf::from(STATE_ROOT).join(name),
            description,
        };
        // From here on the testbed's Drop runs `down`.
        std::mem::forget(down);
        testbed
    }

    /// The state directory `drlb run` on the director uses: pass it as `--state-dir` to
    /// `drlb stats` and the other control commands.
    #[must_use]
    pub fn director_state_dir(&self) -> PathBuf {
        self.state_dir.join(DIRECTOR_STATE)
    }

    /// What `drlb run` on the director logged so far.
    #[must_use]
    pub fn drlb_log(&self) -> String {
        std::fs::read_to_string(self.state_dir.join(DRLB_LOG)).unwrap_or_default()
    }

    /// `drlb ARGS... --state-dir <director state>` in the director's namespace.
    #[must_use]
    pub fn drlb_on_director(&self, args: &[&str]) -> Ran {
        crate::drlb::drlb_in(&self.director.ns, &self.director_state_dir(), args)
    }

    /// The real server with this MAC, if any.
    #[must_use]
    pub fn server_with_mac(&self, mac: &str) -> Option<&CliHost> {
        self.servers.iter().find(|rs| rs.mac == mac)
    }
}

impl Drop for CliTestbed {
    fn drop(&mut self) {
        drop(Down(self.name.clone()));
    }
}

/// The string `key` of a JSON object from `up`; panics naming it when absent.
#[track_caller]
fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key:?} in {value} from drlb testbed up"))
}
