//! Reading YAML config files — scenarios, rule tables, response tables, node configs — with
//! errors that point at `file:line:col`, and resolution of *shipped* files embedded in the binary.
//!
//! Every config error in mailsurge goes through [`ConfigError`], so `validate`, `run`, `inbox`
//! and `mta` all word problems the same way and all exit 2 for them (SPEC §7). Semantic checks
//! (bad regex, bad threshold) are done inside `Deserialize` impls where possible, so the YAML
//! parser attaches the offending value's position for free.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{DeserializeOwned, Deserializer, Error as _};
use serde::Deserialize;

/// Largest config file read: the biggest shipped one is a few KiB; anything near this is not a
/// mailsurge file (and the YAML parser's cost grows faster than the file).
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// Deepest `[`/`{` nesting and widest indentation a file may have; mailsurge's formats need a
/// handful of levels, and the parser's time grows with the square of the depth.
const MAX_FLOW_DEPTH: usize = 32;
const MAX_INDENT: usize = 256;

/// A config problem with the place it was found.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    /// The file as the user named it (or `shipped:<kind>/<name>` for embedded files).
    pub file: String,
    /// 1-based line and column, when known.
    pub pos: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pos {
            Some((l, c)) => write!(f, "{}:{}:{}: {}", self.file, l, c, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl ConfigError {
    pub fn new(file: impl Into<String>, pos: Option<(usize, usize)>, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.into(),
            pos,
            message: message.into(),
        }
    }
}

/// A config file's text and the name to report it under.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub text: String,
    /// Directory that relative paths inside this file resolve against; `None` for shipped files
    /// (which may only refer to other shipped files).
    pub dir: Option<PathBuf>,
}

impl Source {
    /// Reads a file from disk: a regular file of at most [`MAX_FILE_BYTES`], UTF-8. A FIFO
    /// would hang the read and `/dev/zero` would never end, so neither is opened for reading.
    pub fn read(path: &Path) -> Result<Source, ConfigError> {
        let fail = |m: String| ConfigError::new(path.display().to_string(), None, m);
        let meta = std::fs::metadata(path).map_err(|e| fail(format!("cannot read: {e}")))?;
        if !meta.is_file() {
            return Err(fail(
                "not a regular file (a directory, FIFO or device); expected a YAML file".into(),
            ));
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(fail(format!(
                "{} bytes is larger than a mailsurge file may be (at most {MAX_FILE_BYTES})",
                meta.len()
            )));
        }
        let mut bytes = Vec::new();
        use std::io::Read as _;
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
            .map_err(|e| fail(format!("cannot read: {e}")))?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(fail(format!(
                "larger than a mailsurge file may be (at most {MAX_FILE_BYTES} bytes)"
            )));
        }
        let text = String::from_utf8(bytes).map_err(|e| fail(format!("not UTF-8 text: {e}")))?;
        let dir = path
            .parent()
            .map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p }.to_path_buf());
        Ok(Source {
            name: path.display().to_string(),
            text,
            dir,
        })
    }

    /// Parses the text as `T`, mapping YAML and serde errors to `file:line:col`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        self.check_shape()?;
        serde_norway::from_str(&self.text).map_err(|e| {
            let mut pos = e.location().map(|l| (l.line(), l.column()));
            // serde_norway appends " at line X column Y"; the position is already in front.
            let mut msg = e.to_string();
            if let Some(i) = msg.find(" at line ") {
                msg.truncate(i);
            }
            if msg.contains("repetition limit") {
                // Aliases that expand too far; the parser gives no position, the first alias
                // is where to look.
                pos = pos.or_else(|| self.first_alias());
                msg = "YAML aliases (`*name`) expand too far; mailsurge files need no aliases — write the values out"
                    .into();
            }
            ConfigError::new(self.name.clone(), pos, msg)
        })
    }

    /// Refuses text nested deeper than any mailsurge format needs, before the parser spends
    /// minutes on it: flow collections (`[`, `{`) over [`MAX_FLOW_DEPTH`] deep, or a line
    /// indented past [`MAX_INDENT`] columns.
    fn check_shape(&self) -> Result<(), ConfigError> {
        let mut depth = 0usize;
        for (i, line) in self.text.lines().enumerate() {
            let indent = line.len() - line.trim_start_matches(' ').len();
            if indent > MAX_INDENT {
                return Err(ConfigError::new(
                    self.name.clone(),
                    Some((i + 1, 1)),
                    format!(
                        "indented {indent} columns; a mailsurge file nests a few levels (at most {MAX_INDENT} columns)"
                    ),
                ));
            }
            let mut quote: Option<char> = None;
            for (c, ch) in line.char_indices() {
                match (quote, ch) {
                    (Some(q), _) if ch == q => quote = None,
                    (Some(_), _) => {}
                    (None, '"' | '\'') => quote = Some(ch),
                    (None, '#') if c == 0 || line[..c].ends_with(' ') => break,
                    (None, '[' | '{') => {
                        depth += 1;
                        if depth > MAX_FLOW_DEPTH {
                            return Err(ConfigError::new(
                                self.name.clone(),
                                Some((i + 1, c + 1)),
                                format!("nested deeper than {MAX_FLOW_DEPTH} levels of [ and {{; a mailsurge file needs a few, e.g. curve: [[0s, 1], [10s, 2]]"),
                            ));
                        }
                    }
                    (None, ']' | '}') => depth = depth.saturating_sub(1),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Where the first alias (`*name`, outside quotes and comments) is.
    fn first_alias(&self) -> Option<(usize, usize)> {
        self.text.lines().enumerate().find_map(|(i, l)| {
            let code = l.split(" #").next().unwrap_or(l);
            code.char_indices()
                .find(|&(c, ch)| ch == '*' && (c == 0 || code[..c].ends_with([' ', '[', ',', '{', ':', '-'])))
                .map(|(c, _)| (i + 1, c + 1))
        })
    }

    /// An error at the first occurrence of `needle` at or after line `from_line` (1-based);
    /// used for cross-reference checks that serde cannot see (e.g. a domain mapped to no
    /// provider). Falls back to no position rather than a wrong one.
    pub fn error_at(&self, needle: &str, from_line: usize, message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.name.clone(), self.find(needle, from_line), message)
    }

    /// 1-based (line, col) of `needle` at or after `from_line`.
    pub fn find(&self, needle: &str, from_line: usize) -> Option<(usize, usize)> {
        self.text
            .lines()
            .enumerate()
            .skip(from_line.saturating_sub(1))
            .find_map(|(i, l)| l.find(needle).map(|c| (i + 1, c + 1)))
    }

    /// 1-based line of a top-level key (`traffic:`), to start [`Source::find`] searches in the
    /// right section.
    pub fn top_key_line(&self, key: &str) -> usize {
        let pat = format!("{key}:");
        self.text
            .lines()
            .position(|l| l.starts_with(&pat))
            .map(|i| i + 1)
            .unwrap_or(1)
    }
}

/// Which family of shipped files a bare name refers to (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shipped {
    /// `mock-inboxes/<name>.yaml`
    Inbox,
    /// `scenarios/<name>.yaml`
    Scenario,
}

/// Shipped files embedded at build time so a scenario works from any directory.
const SHIPPED: &[(Shipped, &str, &str)] = &[
    (Shipped::Inbox, "generic", include_str!("../mock-inboxes/generic.yaml")),
    (Shipped::Inbox, "gmail", include_str!("../mock-inboxes/gmail.yaml")),
    (Shipped::Inbox, "yahoo", include_str!("../mock-inboxes/yahoo.yaml")),
    (Shipped::Inbox, "aol", include_str!("../mock-inboxes/aol.yaml")),
    (Shipped::Inbox, "outlook", include_str!("../mock-inboxes/outlook.yaml")),
    (Shipped::Inbox, "icloud", include_str!("../mock-inboxes/icloud.yaml")),
    (Shipped::Inbox, "comcast", include_str!("../mock-inboxes/comcast.yaml")),
    (Shipped::Inbox, "att", include_str!("../mock-inboxes/att.yaml")),
    (
        Shipped::Scenario,
        "deliverability",
        include_str!("../scenarios/deliverability.yaml"),
    ),
];

/// Names of the shipped files of one kind, for error messages.
pub fn shipped_names(kind: Shipped) -> Vec<&'static str> {
    SHIPPED
        .iter()
        .filter(|(k, _, _)| *k == kind)
        .map(|(_, n, _)| *n)
        .collect()
}

/// A reference to another config file as written in a config: a bare name means a shipped file
/// (no `/`, no `.yaml`), anything else a path relative to the referring file's directory.
pub fn resolve(from: &Source, reference: &str, kind: Shipped) -> Result<Source, String> {
    let is_bare = !reference.contains('/') && !reference.ends_with(".yaml") && !reference.ends_with(".yml");
    if is_bare {
        return SHIPPED
            .iter()
            .find(|(k, n, _)| *k == kind && *n == reference)
            .map(|(k, n, text)| Source {
                name: format!(
                    "shipped:{}/{n}.yaml",
                    if *k == Shipped::Inbox {
                        "mock-inboxes"
                    } else {
                        "scenarios"
                    }
                ),
                text: (*text).to_string(),
                dir: None,
            })
            .ok_or_else(|| {
                format!(
                    "`{reference}` is not a shipped file (shipped: {}); use a path such as ./{reference}.yaml",
                    shipped_names(kind).join(", ")
                )
            });
    }
    let dir = from
        .dir
        .as_deref()
        .ok_or_else(|| format!("`{reference}`: a shipped file can only refer to other shipped files"))?;
    let path = dir.join(reference);
    Source::read(&path).map_err(|e| e.message)
}

/// Deserializes a string and converts it with `parse`; a conversion error is reported at the
/// string's own YAML position (that is the point of doing semantic checks inside serde). The
/// conversion runs inside the string's visitor: an error raised after the string came back
/// would get the position of the enclosing mapping instead — wherever the value sits under an
/// `Option`.
pub fn de_parsed<'de, D, T, E>(d: D, parse: impl FnOnce(&str) -> Result<T, E>) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    E: fmt::Display,
{
    struct Parsed<F, T>(F, std::marker::PhantomData<T>);
    impl<'de, F, T, E> serde::de::Visitor<'de> for Parsed<F, T>
    where
        F: FnOnce(&str) -> Result<T, E>,
        E: fmt::Display,
    {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<Er: serde::de::Error>(self, v: &str) -> Result<T, Er> {
            (self.0)(v).map_err(Er::custom)
        }
    }
    d.deserialize_str(Parsed(parse, std::marker::PhantomData))
}

/// Like [`de_parsed`], for values YAML may type as a number (`421`, `0.5`) or a string (`4xx`,
/// `0.5x`).
pub fn de_number_or_string<'de, D, T, E>(d: D, parse: impl FnOnce(&str) -> Result<T, E>) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    E: fmt::Display,
{
    let text = match serde_norway::Value::deserialize(d)? {
        serde_norway::Value::Number(n) => n.to_string(),
        serde_norway::Value::String(s) => s,
        other => {
            return Err(D::Error::custom(format!(
                "expected a number or a string, not {other:?}"
            )))
        }
    };
    parse(&text).map_err(D::Error::custom)
}
