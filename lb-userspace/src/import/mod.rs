//! `drlb import keepalived|ipvsadm`: an equivalent drlb.toml from the LVS part of a keepalived
//! configuration or from `ipvsadm-save -n` output. Pure logic: files come through
//! [`source::Source`], the output is text, and every line that could not be translated (or was
//! mapped to the nearest equivalent) is a [`Diagnostic`] for stderr.
//!
//! - [`lexer`]: keepalived's lines and words (includes, conditions, parameters, quotes).
//! - [`parser`]: its statement tree (`keyword args { ... }`).
//! - [`keepalived`]: virtual servers, groups, real servers and checkers to the common model.
//! - [`ipvsadm`]: `-A` / `-a` lines to the common model.
//! - [`translate`]: the common model to drlb services (schedulers, forwarding, backends).
//! - [`output`]: the TOML text, with comments saying where each part came from.

pub mod ipvsadm;
pub mod keepalived;
pub mod lexer;
pub mod output;
pub mod parser;
pub mod source;
pub mod translate;

use std::{fmt, io, path::Path};

pub use lexer::Location;

/// What the user asked for on the command line.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Translate NAT and TUN services to DR where every real server listens on the virtual port.
    pub convert_to_dr: bool,
    /// `[director] interface`; by default the first vrrp_instance's, else "eth0".
    pub interface: Option<String>,
    /// keepalived's config id (`-i`), which decides `@id` lines; undecided lines are reported.
    pub config_id: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Severity {
    /// Not in the output: the import is incomplete (exit status 1).
    LeftOut,
    /// Translated to the nearest equivalent, or information; the output says so in a comment.
    Note,
}

/// A line of the input that was not translated as written, and why.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Diagnostic {
    pub at: Option<Location>,
    pub severity: Severity,
    pub message: String,
}

impl Diagnostic {
    pub fn left_out(at: &Location, message: impl Into<String>) -> Self {
        Self {
            at: Some(at.clone()),
            severity: Severity::LeftOut,
            message: message.into(),
        }
    }

    pub fn note(at: &Location, message: impl Into<String>) -> Self {
        Self {
            at: Some(at.clone()),
            severity: Severity::Note,
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(at) = &self.at {
            write!(f, "{at}: ")?;
        }
        let what = match self.severity {
            Severity::LeftOut => "left out",
            Severity::Note => "note",
        };
        write!(f, "{what}: {}", self.message)
    }
}

/// The translated config and what could not be translated as written.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// A drlb.toml that `Config::parse` accepts.
    pub config: String,
    pub diagnostics: Vec<Diagnostic>,
}

/// Exit status when everything was translated.
pub const EXIT_TRANSLATED: i32 = 0;
/// Exit status when something was left out (the output still holds what was translated).
pub const EXIT_INCOMPLETE: i32 = 1;
/// Exit status when the input cannot be read.
pub const EXIT_UNREADABLE: i32 = 2;

impl Outcome {
    /// 0 when everything was translated, 1 when something was left out.
    #[must_use]
    pub fn exit_code(&self) -> i32 {
        if self.left_out().next().is_some() {
            EXIT_INCOMPLETE
        } else {
            EXIT_TRANSLATED
        }
    }

    pub fn left_out(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::LeftOut)
    }
}

/// Imports a keepalived configuration file (and what it includes). Fails only when `path`
/// itself cannot be read.
pub fn keepalived(
    path: &Path,
    source: &dyn source::Source,
    options: &Options,
) -> io::Result<Outcome> {
    let mut diagnostics = Vec::new();
    let lines = lexer::load(path, source, options.config_id.as_deref(), &mut diagnostics)?;
    let nodes = parser::parse(&lines, &mut diagnostics);
    let lvs = keepalived::read(&nodes, &mut diagnostics);
    let header = format!("drlb import keepalived {}", path.display());
    Ok(finish(&header, lvs, options, diagnostics))
}

/// Imports `ipvsadm-save -n` output; `name` names the input in messages (a file or `<stdin>`).
#[must_use]
pub fn ipvsadm(text: &str, name: &str, options: &Options) -> Outcome {
    let mut diagnostics = Vec::new();
    let lvs = ipvsadm::read(text, name, &mut diagnostics);
    finish(
        &format!("drlb import ipvsadm {name}"),
        lvs,
        options,
        diagnostics,
    )
}

fn finish(
    header: &str,
    lvs: translate::Lvs,
    options: &Options,
    mut diagnostics: Vec<Diagnostic>,
) -> Outcome {
    let mut director = translate::director(&lvs, options, &mut diagnostics);
    let services = translate::services(&lvs, &director, options, &mut diagnostics);
    translate::follow_vrrp(&lvs, &services, &mut director, &mut diagnostics);
    let config = output::render(header, &director, &services);
    // A group's members share their real servers: say each thing once.
    let mut seen = std::collections::HashSet::new();
    diagnostics.retain(|d| seen.insert(d.clone()));
    Outcome {
        config,
        diagnostics,
    }
}

#[cfg(test)]
mod tests;
