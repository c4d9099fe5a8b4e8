//! Where the keepalived reader gets its files: the file system (`FsSource`, used by the CLI) or
//! a map of paths to texts (`MemSource`, for tests). The lexer and parser only see this trait,
//! so they stay pure logic.

use std::{
    collections::BTreeMap,
    io,
    path::{Path, PathBuf},
};

/// Reads files and expands `include` patterns.
pub trait Source {
    /// The file's text (invalid UTF-8 replaced: keepalived reads bytes).
    fn read(&self, path: &Path) -> io::Result<String>;
    /// The existing files matching a glob pattern (after brace expansion), sorted.
    fn glob(&self, pattern: &str) -> io::Result<Vec<PathBuf>>;
}

/// The file system.
pub struct FsSource;

impl Source for FsSource {
    fn read(&self, path: &Path) -> io::Result<String> {
        std::fs::read(path).map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
    }

    fn glob(&self, pattern: &str) -> io::Result<Vec<PathBuf>> {
        let mut found: Vec<PathBuf> = glob::glob(pattern)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?
            .filter_map(Result::ok)
            .filter(|p| p.is_file())
            .collect();
        found.sort();
        Ok(found)
    }
}

/// Files held in memory, for tests.
#[derive(Default)]
pub struct MemSource {
    pub files: BTreeMap<PathBuf, String>,
}

impl MemSource {
    #[must_use]
    pub fn new(files: &[(&str, &str)]) -> Self {
        Self {
            files: files
                .iter()
                .map(|(path, text)| (PathBuf::from(path), (*text).to_owned()))
                .collect(),
        }
    }
}

impl Source for MemSource {
    fn read(&self, path: &Path) -> io::Result<String> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))
    }

    fn glob(&self, pattern: &str) -> io::Result<Vec<PathBuf>> {
        let pattern = glob::Pattern::new(pattern)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        Ok(self
            .files
            .keys()
            .filter(|p| pattern.matches_path(p))
            .cloned()
            .collect())
    }
}

/// Most patterns one `{a,b}` expansion may produce: a bound on what a hostile file can ask for.
const MAX_BRACE_EXPANSIONS: usize = 256;

/// csh-style brace expansion (`a{b,c}d` -> `abd`, `acd`), as keepalived's glob(GLOB_BRACE) does;
/// the glob crate does not. Unbalanced braces are taken literally.
#[must_use]
pub fn expand_braces(pattern: &str) -> Vec<String> {
    let mut out = Vec::new();
    expand_into(pattern, &mut out);
    out
}

fn expand_into(pattern: &str, out: &mut Vec<String>) {
    if out.len() >= MAX_BRACE_EXPANSIONS {
        return;
    }
    let Some((open, close)) = first_brace_pair(pattern) else {
        out.push(pattern.to_owned());
        return;
    };
    let (head, body, tail) = (
        &pattern[..open],
        &pattern[open + 1..close],
        &pattern[close + 1..],
    );
    for alternative in split_top_level(body) {
        expand_into(&format!("{head}{alternative}{tail}"), out);
    }
}

/// The first `{` and its matching `}`, if the pattern has a balanced pair.
fn first_brace_pair(pattern: &str) -> Option<(usize, usize)> {
    let open = pattern.find('{')?;
    let mut depth = 0usize;
    for (i, c) in pattern[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some((open, open + i));
                }
            }
            _ => {}
        }
    }
    None
}

/// Splits at the commas not inside nested braces.
fn split_top_level(body: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&body[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn braces_expand_like_csh() {
        assert_eq!(expand_braces("a.conf"), ["a.conf"]);
        assert_eq!(expand_braces("/x/{a,b}.conf"), ["/x/a.conf", "/x/b.conf"]);
        assert_eq!(
            expand_braces("{foo/{,cat,dog},bar}"),
            ["foo/", "foo/cat", "foo/dog", "bar"]
        );
        assert_eq!(expand_braces("a{b"), ["a{b"]);
    }

    #[test]
    fn memory_globs_match_paths() {
        let source = MemSource::new(&[("/k/conf.d/a.conf", ""), ("/k/conf.d/b.txt", "")]);
        assert_eq!(
            source.glob("/k/conf.d/*.conf").unwrap(),
            [PathBuf::from("/k/conf.d/a.conf")]
        );
    }
}
