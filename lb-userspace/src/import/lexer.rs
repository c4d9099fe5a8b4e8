//! keepalived's configuration lexer: lines, `include` (globs and `{a,b}` braces, relative to
//! the including file), `@id` / `@^id` conditional lines, `$NAME=value` parameters with `$NAME`
//! and `${NAME}` substitution, comments (`#`, `!`) anywhere outside quotes, quoted strings
//! (`"..."`, `'...'`, shell-like: `ab" c"d` is one word), and `{` / `}` as tokens of their own.
//! See keepalived.conf(5), sections "DESCRIPTION", "Quoted strings" and "ADVANCED CONFIGURATION".

use std::{
    collections::HashMap,
    fmt, io,
    path::{Path, PathBuf},
    sync::Arc,
};

use super::{
    Diagnostic,
    source::{Source, expand_braces},
};

/// A line of a file, as `file:line` in messages.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Location {
    pub file: Arc<str>,
    pub line: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Token {
    Word(String),
    Open,
    Close,
}

/// One line's tokens, after includes, conditions and substitution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub at: Location,
    /// `@id` / `@^id` that could not be decided (no config id given): the line is kept and the
    /// translator reports it where it matters.
    pub condition: Option<String>,
    pub tokens: Vec<Token>,
}

/// Deepest include nesting followed; deeper is an error (keepalived files rarely nest past 3).
const MAX_INCLUDE_DEPTH: usize = 16;
/// Substitution passes before a parameter that refers to itself is reported.
const MAX_SUBSTITUTION_ROUNDS: usize = 32;
/// Longest text a line may grow to by substitution (bounds `$A=$A$A` style growth).
const MAX_SUBSTITUTED_LEN: usize = 64 * 1024;
const INCLUDE_KEYWORDS: [&str; 6] = [
    "include", "includer", "includem", "includew", "includeb", "includea",
];

/// Reads `path` and every file it includes. Only an unreadable `path` itself is an error;
/// every other problem becomes a diagnostic.
pub fn load(
    path: &Path,
    source: &dyn Source,
    config_id: Option<&str>,
    diagnostics: &mut Vec<Diagnostic>,
) -> io::Result<Vec<Line>> {
    let text = source.read(path)?;
    let mut lexer = Lexer {
        source,
        config_id,
        params: HashMap::new(),
        diagnostics,
        lines: Vec::new(),
        chain: vec![path.to_owned()],
    };
    lexer.text(&text, &path.display().to_string(), path.parent());
    Ok(lexer.lines)
}

/// Lexes one text on its own (no includes are followed): for tests and fuzzing.
#[must_use]
pub fn lex_str(text: &str, name: &str, diagnostics: &mut Vec<Diagnostic>) -> Vec<Line> {
    struct Nothing;
    impl Source for Nothing {
        fn read(&self, _: &Path) -> io::Result<String> {
            Err(io::Error::new(io::ErrorKind::NotFound, "no files here"))
        }
        fn glob(&self, _: &str) -> io::Result<Vec<PathBuf>> {
            Ok(Vec::new())
        }
    }
    let mut lexer = Lexer {
        source: &Nothing,
        config_id: None,
        params: HashMap::new(),
        diagnostics,
        lines: Vec::new(),
        chain: Vec::new(),
    };
    lexer.text(text, name, None);
    lexer.lines
}

struct Lexer<'a> {
    source: &'a dyn Source,
    config_id: Option<&'a str>,
    params: HashMap<String, String>,
    diagnostics: &'a mut Vec<Diagnostic>,
    lines: Vec<Line>,
    /// The files being read, outermost first: an include of one of them is a loop.
    chain: Vec<PathBuf>,
}

impl Lexer<'_> {
    fn text(&mut self, text: &str, name: &str, dir: Option<&Path>) {
        let file: Arc<str> = name.into();
        let mut physical = text.lines().enumerate();
        while let Some((index, raw)) = physical.next() {
            let at = Location {
                file: file.clone(),
                line: u32::try_from(index + 1).unwrap_or(u32::MAX),
            };
            let trimmed = raw.trim_start();
            if trimmed.is_empty() {
                continue;
            }
            let first = trimmed.split_whitespace().next().unwrap_or_default();
            if INCLUDE_KEYWORDS.contains(&first) {
                self.include(&trimmed[first.len()..], &at, dir);
                continue;
            }
            // Conditional configuration: `@id rest` applies only when the config id is `id`,
            // `@^id rest` only when it is not.
            let (condition, text) = match trimmed.strip_prefix('@') {
                Some(after) => {
                    let (id, rest) = after.split_once(char::is_whitespace).unwrap_or((after, ""));
                    let (negated, id) = id.strip_prefix('^').map_or((false, id), |i| (true, i));
                    match self.config_id {
                        Some(config_id) if (config_id == id) == negated => continue,
                        Some(_) => (None, rest),
                        None => (
                            Some(format!("@{}{id}", if negated { "^" } else { "" })),
                            rest,
                        ),
                    }
                }
                None => (None, trimmed),
            };
            if let Some((name, value)) = definition(text) {
                // A multi-line value continues while lines end with '\'.
                let mut value = value.to_owned();
                while value.ends_with('\\') {
                    value.pop();
                    match physical.next() {
                        Some((_, more)) => {
                            value.push('\n');
                            value.push_str(more);
                        }
                        None => break,
                    }
                }
                match &condition {
                    None => {
                        self.params.insert(name.to_owned(), value);
                    }
                    Some(condition) => self.diagnostics.push(Diagnostic::note(
                        &at,
                        format!(
                            "the definition of ${name} depends on the config id ({condition}) and is not used: pass --config-id ID (keepalived's -i) to decide it"
                        ),
                    )),
                }
                continue;
            }
            let substituted = self.substitute(text, &at);
            for text in substituted.lines() {
                let trimmed = text.trim_start();
                if trimmed.starts_with("~SEQ") || trimmed.starts_with("~LST") {
                    self.diagnostics.push(Diagnostic::left_out(
                        &at,
                        "~SEQ and ~LST blocks are not expanded by drlb import: expand them by hand (keepalived -d prints the expanded configuration)",
                    ));
                    continue;
                }
                let (tokens, problem) = tokenize(text);
                if let Some(problem) = problem {
                    self.diagnostics.push(Diagnostic::note(&at, problem));
                }
                if !tokens.is_empty() {
                    self.lines.push(Line {
                        at: at.clone(),
                        condition: condition.clone(),
                        tokens,
                    });
                }
            }
        }
    }

    fn include(&mut self, rest: &str, at: &Location, dir: Option<&Path>) {
        let words = include_words(rest);
        let Some(pattern) = words.first() else {
            self.diagnostics
                .push(Diagnostic::left_out(at, "include names no file"));
            return;
        };
        if self.chain.len() > MAX_INCLUDE_DEPTH {
            self.diagnostics.push(Diagnostic::left_out(
                at,
                format!("include {pattern}: includes nest deeper than {MAX_INCLUDE_DEPTH} files"),
            ));
            return;
        }
        let full = match dir {
            Some(dir) if !pattern.starts_with('/') => normalize(&dir.join(pattern)),
            _ => pattern.clone(),
        };
        let mut files = Vec::new();
        for expanded in expand_braces(&full) {
            match self.source.glob(&expanded) {
                Ok(found) => files.extend(found),
                Err(e) => self
                    .diagnostics
                    .push(Diagnostic::left_out(at, format!("include {pattern}: {e}"))),
            }
        }
        if files.is_empty() {
            self.diagnostics.push(Diagnostic::note(
                at,
                format!("include {pattern} matches no file"),
            ));
        }
        for file in files {
            if self.chain.contains(&file) {
                self.diagnostics.push(Diagnostic::left_out(
                    at,
                    format!(
                        "include {}: the file includes itself (a loop)",
                        file.display()
                    ),
                ));
                continue;
            }
            match self.source.read(&file) {
                Ok(text) => {
                    self.chain.push(file.clone());
                    self.text(&text, &file.display().to_string(), file.parent());
                    self.chain.pop();
                }
                Err(e) => self.diagnostics.push(Diagnostic::left_out(
                    at,
                    format!(
                        "include {}: cannot read it ({e}); nothing in it is imported",
                        file.display()
                    ),
                )),
            }
        }
    }

    /// Replaces `${NAME}` and `$NAME` (followed by whitespace or the end) by defined values,
    /// again in what a replacement brings, as keepalived does.
    fn substitute(&mut self, text: &str, at: &Location) -> String {
        if self.params.is_empty() || !text.contains('$') {
            return text.to_owned();
        }
        let mut current = text.to_owned();
        for _ in 0..MAX_SUBSTITUTION_ROUNDS {
            let (next, changed) = substitute_once(&current, &self.params);
            if !changed {
                return next;
            }
            if next.len() > MAX_SUBSTITUTED_LEN {
                break;
            }
            current = next;
        }
        self.diagnostics.push(Diagnostic::left_out(
            at,
            "parameter substitution does not end (a parameter refers to itself?): the line is left as written",
        ));
        text.to_owned()
    }
}

/// `a/b/../c/./d` -> `a/c/d`: keepalived changes into the including file's directory, so `..`
/// is taken from there (lexically here, as globs need a plain path).
fn normalize(path: &Path) -> String {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out.display().to_string()
}

/// `$NAME=VALUE` with nothing but whitespace before `$`: (NAME, VALUE).
fn definition(text: &str) -> Option<(&str, &str)> {
    let rest = text.trim_start().strip_prefix('$')?;
    let (name, value) = rest.split_once('=')?;
    is_param_name(name).then_some((name, value))
}

fn is_param_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn substitute_once(text: &str, params: &HashMap<String, String>) -> (String, bool) {
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(braced) = after.strip_prefix('{')
            && let Some(close) = braced.find('}')
            && let Some(value) = params.get(&braced[..close])
        {
            out.push_str(value);
            rest = &braced[close + 1..];
            changed = true;
            continue;
        }
        let name_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let name = &after[..name_len];
        let ends = after[name_len..]
            .chars()
            .next()
            .is_none_or(char::is_whitespace);
        if ends
            && is_param_name(name)
            && let Some(value) = params.get(name)
        {
            out.push_str(value);
            rest = &after[name_len..];
            changed = true;
            continue;
        }
        out.push('$');
        rest = after;
    }
    out.push_str(rest);
    (out, changed)
}

/// Splits a line into words and braces. Returns a problem to report, if any (the tokens are
/// still the best reading of the line).
#[must_use]
pub fn tokenize(text: &str) -> (Vec<Token>, Option<String>) {
    let mut tokens = Vec::new();
    let mut problem = None;
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&c) = chars.peek() else { break };
        match c {
            '#' | '!' => break,
            '{' => {
                chars.next();
                tokens.push(Token::Open);
            }
            '}' => {
                chars.next();
                tokens.push(Token::Close);
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    match c {
                        c if c.is_whitespace() => break,
                        '#' | '!' | '{' | '}' => break,
                        '"' | '\'' => {
                            chars.next();
                            if !read_quoted(&mut chars, c, &mut word) {
                                problem = Some(format!(
                                    "unterminated {c}quote{c}: the string runs to the end of the line"
                                ));
                            }
                        }
                        _ => {
                            word.push(c);
                            chars.next();
                        }
                    }
                }
                tokens.push(Token::Word(word));
            }
        }
    }
    (tokens, problem)
}

/// Reads a quoted string's rest up to its closing `quote`, with shell-like escapes. False when
/// the line ends first.
fn read_quoted(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    quote: char,
    word: &mut String,
) -> bool {
    while let Some(c) = chars.next() {
        match c {
            c if c == quote => return true,
            '\\' => match chars.next() {
                Some('n') => word.push('\n'),
                Some('t') => word.push('\t'),
                Some('r') => word.push('\r'),
                Some(other) => word.push(other),
                None => return false,
            },
            c => word.push(c),
        }
    }
    false
}

/// Words of an include line: braces are part of the pattern there, comments still end it.
fn include_words(text: &str) -> Vec<String> {
    let without_comment = text.split(['#', '!']).next().unwrap_or_default();
    without_comment
        .split_whitespace()
        .map(|w| w.trim_matches(|c| c == '"' || c == '\'').to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{super::source::MemSource, *};
    use proptest::prelude::*;

    fn words(text: &str) -> Vec<String> {
        tokenize(text)
            .0
            .into_iter()
            .map(|t| match t {
                Token::Word(w) => w,
                Token::Open => "{".into(),
                Token::Close => "}".into(),
            })
            .collect()
    }

    #[test]
    fn words_braces_and_comments() {
        assert_eq!(
            words("virtual_server 198.18.0.100 80 {  # the web"),
            ["virtual_server", "198.18.0.100", "80", "{"]
        );
        assert_eq!(words("url { path /x }"), ["url", "{", "path", "/x", "}"]);
        assert_eq!(words("weight 1 ! a comment"), ["weight", "1"]);
        assert_eq!(words("   ! whole line"), Vec::<String>::new());
        assert_eq!(
            words("inhibit_on_failure! no space"),
            ["inhibit_on_failure"]
        );
        assert_eq!(words("}}"), ["}", "}"]);
    }

    #[test]
    fn quoted_strings_are_shell_like() {
        assert_eq!(
            words(r#"misc_path "/bin/check a # b" x"#),
            ["misc_path", "/bin/check a # b", "x"]
        );
        assert_eq!(words(r#"abcd" efg h jkl "mnop"#), ["abcd efg h jkl mnop"]);
        assert_eq!(words(r#"'it''s' "a\"b""#), ["its", "a\"b"]);
        let (tokens, problem) = tokenize(r#"helo_name "foo.bar"#);
        assert_eq!(tokens.len(), 2);
        assert!(problem.unwrap().contains("unterminated"));
    }

    #[test]
    fn parameters_are_substituted_recursively() {
        let mut diagnostics = Vec::new();
        let lines = lex_str(
            "$BASE=198.18.${SUB}\n$SUB=0\n$PORT=80\nvirtual_server ${BASE}.100 $PORT {\n$UNDEF stays\n",
            "t.conf",
            &mut diagnostics,
        );
        assert_eq!(
            lines[0].tokens[1..3],
            [Token::Word("198.18.0.100".into()), Token::Word("80".into())]
        );
        assert_eq!(lines[1].tokens[0], Token::Word("$UNDEF".into()));
        assert_eq!(lines[0].at.line, 4);
        let mut diagnostics = Vec::new();
        let _ = lex_str("$A=$A x\n$A\n", "t.conf", &mut diagnostics);
        assert!(
            diagnostics[0].message.contains("does not end"),
            "{diagnostics:?}"
        );
    }

    #[test]
    fn multi_line_parameters_become_lines() {
        let mut diagnostics = Vec::new();
        let lines = lex_str(
            "$RS=real_server 198.18.0.11 80 { \\\n weight 2 \\\n }\n$RS\n",
            "t.conf",
            &mut diagnostics,
        );
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[1].tokens[0], Token::Word("weight".into()));
    }

    #[test]
    fn conditional_lines_follow_the_config_id() {
        let text = "@a weight 1\n@^a weight 2\nweight 3\n";
        let source = MemSource::new(&[("/k/k.conf", text)]);
        let weights = |id: Option<&str>| {
            let mut d = Vec::new();
            load(Path::new("/k/k.conf"), &source, id, &mut d)
                .unwrap()
                .into_iter()
                .map(|l| (l.condition, l.tokens[1].clone()))
                .collect::<Vec<_>>()
        };
        let w = |s: &str| Token::Word(s.into());
        assert_eq!(weights(Some("a")), [(None, w("1")), (None, w("3"))]);
        assert_eq!(weights(Some("b")), [(None, w("2")), (None, w("3"))]);
        assert_eq!(
            weights(None),
            [
                (Some("@a".into()), w("1")),
                (Some("@^a".into()), w("2")),
                (None, w("3"))
            ]
        );
    }

    #[test]
    fn includes_are_relative_to_the_including_file_and_globbed() {
        let source = MemSource::new(&[
            (
                "/etc/k/keepalived.conf",
                "a 1\ninclude conf.d/*.conf # all\nb 2\n",
            ),
            ("/etc/k/conf.d/x.conf", "x 1\ninclude ../sub/{p,q}.inc\n"),
            ("/etc/k/conf.d/y.conf", "y 1\n"),
            ("/etc/k/sub/p.inc", "p 1\n"),
            ("/etc/k/sub/q.inc", "q 1\ninclude /etc/k/keepalived.conf\n"),
        ]);
        let mut diagnostics = Vec::new();
        let lines = load(
            Path::new("/etc/k/keepalived.conf"),
            &source,
            None,
            &mut diagnostics,
        )
        .unwrap();
        let order: Vec<_> = lines
            .iter()
            .map(|l| match &l.tokens[0] {
                Token::Word(w) => format!("{w}@{}", l.at),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(
            order,
            [
                "a@/etc/k/keepalived.conf:1",
                "x@/etc/k/conf.d/x.conf:1",
                "p@/etc/k/sub/p.inc:1",
                "q@/etc/k/sub/q.inc:1",
                "y@/etc/k/conf.d/y.conf:1",
                "b@/etc/k/keepalived.conf:3",
            ]
        );
        assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
        assert!(diagnostics[0].message.contains("includes itself"));
        assert_eq!(
            diagnostics[0].at.as_ref().unwrap().to_string(),
            "/etc/k/sub/q.inc:2"
        );
    }

    #[test]
    fn an_unreadable_main_file_is_an_error_and_a_missing_include_a_note() {
        let source = MemSource::new(&[("/k.conf", "include /nowhere/*.conf\n")]);
        let mut diagnostics = Vec::new();
        assert!(load(Path::new("/none.conf"), &source, None, &mut diagnostics).is_err());
        load(Path::new("/k.conf"), &source, None, &mut diagnostics).unwrap();
        assert!(diagnostics[0].message.contains("matches no file"));
    }

    proptest! {
        #[test]
        fn the_lexer_never_panics(text in "\\PC*") {
            let mut diagnostics = Vec::new();
            let _ = lex_str(&text, "fuzz", &mut diagnostics);
        }

        #[test]
        fn the_lexer_never_panics_on_keepalived_like_text(
            text in "([a-z_$@^{}\"'!#\\\\ =0-9.]|\n){0,200}"
        ) {
            let mut diagnostics = Vec::new();
            let _ = lex_str(&text, "fuzz", &mut diagnostics);
        }
    }
}
