//! Fixtures: a frame on which the program and the model disagreed, kept as a text file under
//! `tests/fuzz-fixtures/` with everything needed to run it again: the ingress interface, the
//! state, and what the flow table remembered of the frame's flow.
//!
//! ```text
//! # drlb fuzz fixture: seed 42, frame 1234, require_our_dst_mac = false
//! # model:   Tx (tx), 60-byte output ...
//! # program: Pass (pass), 60-byte output ...
//! # ingress: 11
//! # remembered: null | [{"saddr": ...}, {"service_id": 0, "backend_id": 2}]
//! # state: {"interfaces": ...}
//! 020000000f0a0200000000010800450000...   (the frame, 32 bytes per line)
//! ```

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

use crate::model::{FlowTuple, Remembered, State, hex};

/// Where fixtures are kept, in the source tree.
#[must_use]
pub fn directory() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz-fixtures")
}

const EXTENSION: &str = "hex";
const HEX_BYTES_PER_LINE: usize = 32;
const INGRESS: &str = "# ingress: ";
const REMEMBERED: &str = "# remembered: ";
const STATE: &str = "# state: ";

/// A frame, and the state it met.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fixture {
    pub ingress_ifindex: u32,
    pub state: State,
    /// The flow table's entry for the frame's 5-tuple before it ran.
    pub remembered: Option<(FlowTuple, Remembered)>,
    pub frame: Vec<u8>,
}

impl Fixture {
    /// The file's text; `comments` (the seed, what each side gave) go first.
    pub fn to_text(&self, comments: &[String]) -> Result<String> {
        let mut text = String::new();
        for comment in comments {
            for line in comment.lines() {
                text.push_str(&format!("# {line}\n"));
            }
        }
        text.push_str(&format!("{INGRESS}{}\n", self.ingress_ifindex));
        text.push_str(&format!(
            "{REMEMBERED}{}\n",
            serde_json::to_string(&self.remembered).context("serialising a flow entry")?
        ));
        text.push_str(&format!(
            "{STATE}{}\n",
            serde_json::to_string(&self.state).context("serialising a state")?
        ));
        for chunk in self.frame.chunks(HEX_BYTES_PER_LINE) {
            text.push_str(&hex(chunk));
            text.push('\n');
        }
        Ok(text)
    }

    pub fn parse(text: &str) -> Result<Self> {
        let (mut ingress, mut remembered, mut state) = (None, None, None);
        let mut frame = Vec::new();
        for line in text.lines().map(str::trim) {
            if let Some(value) = line.strip_prefix(INGRESS) {
                ingress = Some(value.parse().context("the ingress ifindex")?);
            } else if let Some(value) = line.strip_prefix(REMEMBERED) {
                remembered = Some(serde_json::from_str(value).context("the remembered flow")?);
            } else if let Some(value) = line.strip_prefix(STATE) {
                state = Some(serde_json::from_str(value).context("the state")?);
            } else if !line.starts_with('#') && !line.is_empty() {
                frame.extend(unhex(line)?);
            }
        }
        let (Some(ingress_ifindex), Some(remembered), Some(state)) = (ingress, remembered, state)
        else {
            bail!("a fixture needs lines starting with {INGRESS:?}, {REMEMBERED:?} and {STATE:?}");
        };
        Ok(Self {
            ingress_ifindex,
            state,
            remembered,
            frame,
        })
    }

    /// Writes the fixture as `<dir>/<name>.hex`; returns the path.
    pub fn save(&self, dir: &Path, name: &str, comments: &[String]) -> Result<PathBuf> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{name}.{EXTENSION}"));
        fs::write(&path, self.to_text(comments)?)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

/// Every fixture in `dir`, by path, sorted (none when the directory does not exist).
pub fn load_all(dir: &Path) -> Result<Vec<(PathBuf, Fixture)>> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut paths: Vec<PathBuf> = entries
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("listing {}", dir.display()))?;
    paths.retain(|p| p.extension().is_some_and(|e| e == EXTENSION));
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text =
                fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            let fixture = Fixture::parse(&text)
                .with_context(|| format!("parsing the fixture {}", path.display()))?;
            Ok((path, fixture))
        })
        .collect()
}

fn unhex(line: &str) -> Result<Vec<u8>> {
    if !line.len().is_multiple_of(2) {
        bail!("a hex line has an odd number of digits: {line:?}");
    }
    (0..line.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&line[i..i + 2], 16)
                .with_context(|| format!("not hex: {:?}", &line[i..i + 2]))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzz::generate::initial_state;

    #[test]
    fn a_fixture_reads_back_as_written() {
        let fixture = Fixture {
            ingress_ifindex: 11,
            state: initial_state(),
            remembered: Some((
                FlowTuple {
                    saddr: [198, 19, 0, 1].into(),
                    daddr: [198, 18, 0, 100].into(),
                    sport: 40_000,
                    dport: 8080,
                    protocol: 6,
                },
                Remembered {
                    service_id: 0,
                    backend_id: 3,
                },
            )),
            frame: (0..=70).collect(),
        };
        let text = fixture
            .to_text(&[
                "seed 1, frame 2".to_owned(),
                "model: x\nprogram: y".to_owned(),
            ])
            .expect("serialisable");
        assert_eq!(Fixture::parse(&text).expect("parses"), fixture, "{text}");
    }
}
