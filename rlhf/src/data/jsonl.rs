//! Reading JSONL records (plain, or gzip when the name ends in `.gz`) with errors that name the
//! file and line, and the one switch that decides what a bad line does: fail, or skip and count.

use anyhow::{bail, Context, Result};
use serde_json::{Map, Value};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// How a loader treats bad lines. The default fails on the first one.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LoadOptions {
    /// Skip bad lines (malformed JSON, a missing field, a bad ranking, empty text) and count
    /// them in `Loaded::skipped`, instead of failing on the first.
    pub skip_invalid: bool,
}

/// The records of one or more files, and how many bad lines were skipped (0 unless
/// `skip_invalid`).
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded<T> {
    pub items: Vec<T>,
    pub skipped: usize,
}

impl<T> Loaded<T> {
    /// Concatenate: the items in order, the skip counts summed.
    pub fn extend(&mut self, other: Loaded<T>) {
        self.items.extend(other.items);
        self.skipped += other.skipped;
    }
}

impl<T> Default for Loaded<T> {
    fn default() -> Self {
        Loaded { items: Vec::new(), skipped: 0 }
    }
}

/// Parse every non-blank line of `path` as a JSON object and turn it into records with `parse`,
/// whose `Err(msg)` marks the line bad. Bad lines fail as "`path`:`line`: msg" unless skipped.
/// Blank lines are not records (a trailing newline is common) and are passed over.
pub fn read_records<T>(path: &Path, opts: LoadOptions, mut parse: impl FnMut(&Map<String, Value>) -> Result<T, String>) -> Result<Loaded<T>> {
    let file = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") { Box::new(flate2::read::MultiGzDecoder::new(file)) } else { Box::new(file) };
    let mut out = Loaded::default();
    for (i, line) in BufReader::new(reader).lines().enumerate() {
        let line_no = i + 1;
        // An unreadable line (invalid UTF-8, a corrupt gzip stream) is an IO error, not a record:
        // it always fails, since what follows it cannot be trusted either.
        let line = line.with_context(|| format!("{}:{line_no}: cannot read", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = match serde_json::from_str::<Value>(&line) {
            Ok(Value::Object(obj)) => parse(&obj),
            Ok(_) => Err("not a JSON object".to_string()),
            Err(e) => Err(format!("malformed JSON: {e}")),
        };
        match parsed {
            Ok(item) => out.items.push(item),
            Err(_) if opts.skip_invalid => out.skipped += 1,
            Err(msg) => bail!("{}:{line_no}: {msg}", path.display()),
        }
    }
    Ok(out)
}

/// A required string field that is not empty or only whitespace.
pub(crate) fn text(obj: &Map<String, Value>, key: &str) -> Result<String, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Err(format!("missing field {key:?}")),
        Some(Value::String(s)) if s.trim().is_empty() => Err(format!("field {key:?} is empty")),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("field {key:?} is not a string")),
    }
}

/// A required field of any type.
pub(crate) fn field<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a Value, String> {
    obj.get(key).filter(|v| !v.is_null()).ok_or_else(|| format!("missing field {key:?}"))
}

/// Load several files with the same loader, in order.
pub fn read_all<T>(paths: &[impl AsRef<Path>], opts: LoadOptions, load: impl Fn(&Path, LoadOptions) -> Result<Loaded<T>>) -> Result<Loaded<T>> {
    let mut all = Loaded::default();
    for p in paths {
        all.extend(load(p.as_ref(), opts)?);
    }
    Ok(all)
}
