//! Loading: the TOML text becomes a span-keeping document ([`toml::de::DeTable`]), overrides
//! are written into that document, and only then is it deserialized, so an error in an
//! overridden value still names its key and says where the value came from.
//!
//! Spans locate errors: a span inside the file text gives its line; each override gets a
//! sentinel span past the end of the text, so a span there names the environment variable or
//! `--set` flag instead. Deserialization errors carry a span; validation errors carry a key
//! path, which [`Located::locate`] walks in the document to find the line.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::GatewayConfig;

/// Exit status for a refused configuration (`EX_USAGE` of sysexits.h).
pub const EXIT_CONFIG: u8 = 64;

/// Top-level sections, for recognising `GATEWAY_<SECTION>_<KEY>` variables.
const SECTIONS: &[&str] = &[
    "api",
    "limits",
    "operators",
    "routing",
    "subscribers",
    "policy",
    "store",
    "keycloak",
    "metrics",
    "log",
];

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The configuration file (path when loaded from one).
    File(Option<PathBuf>),
    /// An environment variable, by name.
    Env(String),
    /// A `--set` flag, as given.
    Flag(String),
}

/// A refused configuration: which key, where, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// Dotted key path with indices, e.g. `operators[0].binds[1].window` (empty when the
    /// file could not be read at all).
    pub key: String,
    /// 1-based line in the file, when the value is in the file.
    pub line: Option<usize>,
    /// Where the value came from.
    pub origin: Origin,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn at(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            line: None,
            origin: Origin::File(None),
            message: message.into(),
        }
    }

    /// The process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        EXIT_CONFIG
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Origin::File(path) => {
                let path = path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "configuration".into());
                match self.line {
                    Some(line) => write!(f, "{path}:{line}: ")?,
                    None => write!(f, "{path}: ")?,
                }
            }
            Origin::Env(var) => write!(f, "environment variable {var}: ")?,
            Origin::Flag(arg) => write!(f, "--set {arg}: ")?,
        }
        if !self.key.is_empty() {
            write!(f, "key `{}`: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// One value set from outside the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// Key path segments; a numeric segment indexes an array (`operators.0.binds.1.window`).
    pub path: Vec<String>,
    /// The value as text: TOML syntax (`42`, `true`, `["a"]`, `"text"`) or a bare string.
    /// When the key already holds a string in the file, the text is taken as a string as is.
    pub value: String,
    /// Environment variable or flag, for error messages.
    pub origin: Origin,
}

fn split_key(key: &str) -> Option<Vec<String>> {
    // `a[0].b` and `a.0.b` are the same path.
    let normal = key.replace('[', ".").replace(']', "");
    let path: Vec<String> = normal.split('.').map(|s| s.trim().to_owned()).collect();
    if path.iter().any(String::is_empty) {
        None
    } else {
        Some(path)
    }
}

impl Override {
    /// Parse a `--set section.key=value` argument.
    pub fn from_flag(arg: &str) -> Result<Self, ConfigError> {
        let origin = Origin::Flag(arg.to_owned());
        let (key, value) = arg.split_once('=').ok_or_else(|| ConfigError {
            key: String::new(),
            line: None,
            origin: origin.clone(),
            message: "expected section.key=value".into(),
        })?;
        let path = split_key(key.trim()).ok_or_else(|| ConfigError {
            key: key.trim().into(),
            line: None,
            origin: origin.clone(),
            message: "empty segment in key".into(),
        })?;
        Ok(Override {
            path,
            value: value.to_owned(),
            origin,
        })
    }

    /// Overrides from environment variables `GATEWAY_<SECTION>_<KEY>` (case-insensitive;
    /// `__` separates deeper segments: `GATEWAY_OPERATORS__0__BINDS__0__PASSWORD_ENV`).
    /// Variables whose section is not a known one are left alone (so secret variables such
    /// as `GATEWAY_PIN_PEPPER` can share the prefix). Sorted by name for a stable order.
    pub fn from_env(vars: impl IntoIterator<Item = (String, String)>) -> Vec<Self> {
        let mut out: Vec<Override> = vars
            .into_iter()
            .filter_map(|(name, value)| {
                let rest = name.strip_prefix("GATEWAY_")?.to_ascii_lowercase();
                let mut segs: Vec<String> = rest.split("__").map(str::to_owned).collect();
                // A name with no key after its section (`GATEWAY_STORE`) would replace the
                // whole section with a string: such a variable is someone else's, left alone.
                let (section, key) = match segs[0].split_once('_') {
                    Some((s, k)) => (s.to_owned(), Some(k.to_owned())),
                    None if segs.len() > 1 => (segs[0].clone(), None),
                    None => return None,
                };
                if !SECTIONS.contains(&section.as_str()) || key.as_deref() == Some("") {
                    return None;
                }
                segs[0] = section;
                if let Some(k) = key {
                    segs.insert(1, k);
                }
                Some(Override {
                    path: segs,
                    value,
                    origin: Origin::Env(name),
                })
            })
            .collect();
        out.sort_by(|a, b| format!("{:?}", a.origin).cmp(&format!("{:?}", b.origin)));
        out
    }

    /// The key path as written in errors.
    pub fn key(&self) -> String {
        display_path(&self.path)
    }
}

fn display_path(path: &[String]) -> String {
    let mut s = String::new();
    for seg in path {
        if seg.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() {
            s.push('[');
            s.push_str(seg);
            s.push(']');
        } else {
            if !s.is_empty() {
                s.push('.');
            }
            s.push_str(seg);
        }
    }
    s
}

/// The file text and the overrides, to turn spans and key paths into locations.
struct Located<'a> {
    text: &'a str,
    overrides: &'a [Override],
    root: DeTable<'a>,
}

impl Located<'_> {
    /// First sentinel offset: past the end of the text.
    fn base(&self) -> usize {
        self.text.len() + 1
    }

    fn error_at(&self, pos: Option<usize>, key: String, message: String) -> ConfigError {
        match pos {
            Some(p) if p >= self.base() => {
                let i = p - self.base();
                let origin = self
                    .overrides
                    .get(i)
                    .map(|o| o.origin.clone())
                    .unwrap_or(Origin::File(None));
                ConfigError {
                    key,
                    line: None,
                    origin,
                    message,
                }
            }
            Some(p) => ConfigError {
                key,
                line: Some(line_of(self.text, p)),
                origin: Origin::File(None),
                message,
            },
            None => ConfigError {
                key,
                line: None,
                origin: Origin::File(None),
                message,
            },
        }
    }

    /// Locate a validation error's key: the deepest existing part of the path.
    fn locate(&self, key: &str) -> ConfigError {
        let path = split_key(key).unwrap_or_default();
        let mut pos = None;
        let mut table = Some(&self.root);
        let mut value: Option<&DeValue<'_>> = None;
        for seg in &path {
            let next = if let Some(t) = table.take() {
                t.get_key_value(seg.as_str()).map(|(k, v)| {
                    // The key's line, except for an override which owns the value.
                    let at = if v.span().start >= self.base() {
                        v.span().start
                    } else {
                        k.span().start
                    };
                    (at, v.get_ref())
                })
            } else if let Some(DeValue::Array(a)) = value {
                seg.parse::<usize>()
                    .ok()
                    .and_then(|i| a.get(i))
                    .map(|v| (v.span().start, v.get_ref()))
            } else {
                None
            };
            let Some((at, v)) = next else { break };
            pos = Some(at);
            value = Some(v);
            table = match v {
                DeValue::Table(t) => Some(t),
                _ => None,
            };
        }
        self.error_at(pos, key.to_owned(), String::new())
    }
}

fn line_of(text: &str, pos: usize) -> usize {
    let end = pos.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn contains(span: &Range<usize>, pos: usize) -> bool {
    span.contains(&pos) || (span.start == pos && span.end == pos)
}

/// The key path of the deepest entry whose key or value covers `pos`.
fn path_at(value: &DeValue<'_>, pos: usize) -> Option<Vec<String>> {
    match value {
        DeValue::Table(t) => t.iter().find_map(|(k, v)| {
            if let Some(mut sub) = path_at(v.get_ref(), pos) {
                sub.insert(0, k.get_ref().to_string());
                Some(sub)
            } else if contains(&k.span(), pos) || contains(&v.span(), pos) {
                Some(vec![k.get_ref().to_string()])
            } else {
                None
            }
        }),
        DeValue::Array(a) => a.iter().enumerate().find_map(|(i, v)| {
            if let Some(mut sub) = path_at(v.get_ref(), pos) {
                sub.insert(0, i.to_string());
                Some(sub)
            } else if contains(&v.span(), pos) {
                Some(vec![i.to_string()])
            } else {
                None
            }
        }),
        _ => None,
    }
}

/// Give every span in a parsed override value the override's sentinel span.
fn respan<'a>(value: DeValue<'a>, span: &Range<usize>) -> Spanned<DeValue<'a>> {
    let value = match value {
        DeValue::Array(a) => {
            let mut out = toml::de::DeArray::new();
            for v in a.iter() {
                out.push(respan(v.get_ref().clone(), span));
            }
            DeValue::Array(out)
        }
        DeValue::Table(t) => {
            let mut out = DeTable::new();
            for (k, v) in t {
                out.insert(
                    Spanned::new(span.clone(), k.into_inner()),
                    respan(v.into_inner(), span),
                );
            }
            DeValue::Table(out)
        }
        other => other,
    };
    Spanned::new(span.clone(), value)
}

fn override_value<'a>(
    text: &'a str,
    keep_string: bool,
    span: &Range<usize>,
) -> Spanned<DeValue<'a>> {
    if !keep_string {
        if let Ok(v) = DeValue::parse(text) {
            return respan(v.into_inner(), span);
        }
    }
    Spanned::new(span.clone(), DeValue::String(Cow::Borrowed(text)))
}

/// Write `value` at `path` under `node`, creating tables on the way.
fn set<'a>(
    node: &mut DeValue<'a>,
    path: &'a [String],
    value: &'a str,
    span: &Range<usize>,
) -> Result<(), String> {
    let Some((seg, rest)) = path.split_first() else {
        return Err("empty key".into());
    };
    match node {
        DeValue::Table(t) => {
            if rest.is_empty() {
                let keep_string = t.get(seg.as_str()).is_some_and(|v| v.get_ref().is_str());
                let new = override_value(value, keep_string, span);
                match t.get_mut(seg.as_str()) {
                    Some(slot) => *slot = new,
                    None => {
                        t.insert(Spanned::new(span.clone(), Cow::Borrowed(seg.as_str())), new);
                    }
                }
                return Ok(());
            }
            if !t.contains_key(seg.as_str()) {
                t.insert(
                    Spanned::new(span.clone(), Cow::Borrowed(seg.as_str())),
                    Spanned::new(span.clone(), DeValue::Table(DeTable::new())),
                );
            }
            match t.get_mut(seg.as_str()) {
                Some(child) => set(child.get_mut(), rest, value, span),
                None => Err(format!("cannot create `{seg}`")),
            }
        }
        DeValue::Array(a) => {
            let len = a.len();
            let slot = seg
                .parse::<usize>()
                .ok()
                .and_then(|i| a.get_mut(i))
                .ok_or_else(|| format!("index `{seg}` is not one of the {len} array elements"))?;
            if rest.is_empty() {
                let keep_string = slot.get_ref().is_str();
                *slot = override_value(value, keep_string, span);
                Ok(())
            } else {
                set(slot.get_mut(), rest, value, span)
            }
        }
        _ => Err(format!(
            "`{seg}` is under a value that is not a table or array"
        )),
    }
}

/// The key of a syntax error: whatever precedes `=` on its line.
fn syntax_key(text: &str, pos: usize) -> String {
    let start = text[..pos.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("");
    match line.split_once('=') {
        Some((k, _)) => k.trim().to_owned(),
        None => line.trim().to_owned(),
    }
}

impl GatewayConfig {
    /// Read `path`, apply `overrides` in order (environment first, then flags: see
    /// [`Override::from_env`] and [`Override::from_flag`]), deserialize and validate.
    pub fn load(path: &Path, overrides: &[Override]) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            key: String::new(),
            line: None,
            origin: Origin::File(Some(path.to_owned())),
            message: format!("cannot read: {e}"),
        })?;
        Self::from_toml(&text, overrides).map_err(|mut e| {
            if e.origin == Origin::File(None) {
                e.origin = Origin::File(Some(path.to_owned()));
            }
            e
        })
    }

    /// [`GatewayConfig::load`] from text.
    pub fn from_toml(text: &str, overrides: &[Override]) -> Result<Self, ConfigError> {
        let parsed = DeTable::parse(text).map_err(|e| {
            let pos = e.span().map(|s| s.start).unwrap_or(0);
            ConfigError {
                key: syntax_key(text, pos),
                line: Some(line_of(text, pos)),
                origin: Origin::File(None),
                message: format!("TOML syntax: {}", e.message().trim()),
            }
        })?;
        let root_span = parsed.span();
        let mut root = DeValue::Table(parsed.into_inner());
        let base = text.len() + 1;
        for (i, ov) in overrides.iter().enumerate() {
            let span = base + i..base + i + 1;
            set(&mut root, &ov.path, &ov.value, &span).map_err(|message| ConfigError {
                key: ov.key(),
                line: None,
                origin: ov.origin.clone(),
                message,
            })?;
        }
        let DeValue::Table(root) = root else {
            return Err(ConfigError::at("", "document is not a table"));
        };
        let located = Located {
            text,
            overrides,
            root: root.clone(),
        };
        let de = toml::de::Deserializer::from(Spanned::new(root_span.clone(), root));
        let config = GatewayConfig::deserialize(de).map_err(|e| {
            // A span over the whole document (a missing top-level section) has no line.
            let pos = e.span().filter(|s| *s != root_span).map(|s| s.start);
            let mut path = pos
                .and_then(|p| path_at(&DeValue::Table(located.root.clone()), p))
                .unwrap_or_default();
            let message = e.message().trim().to_owned();
            // A missing field is reported on its table; name the field itself.
            if let Some(field) = message
                .strip_prefix("missing field `")
                .and_then(|r| r.split('`').next())
            {
                path.push(field.to_owned());
            }
            located.error_at(pos, display_path(&path), message)
        })?;
        config.validate().map_err(|e| {
            let mut located_err = located.locate(&e.key);
            located_err.message = e.message;
            located_err
        })?;
        Ok(config)
    }
}
