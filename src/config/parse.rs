//! Reading the config file into [`RawConfig`] while reporting every key serde refuses.
//!
//! serde stops at its first error, so two misspelled keys would be fixed one `check` at a
//! time. Instead, each refused `key = value` is blanked out of the text (spaces, newlines
//! kept, so every later line and column stays right) and the file is read again; the loop ends
//! when it reads, or when an error points at no single key (then the errors so far stand).

use super::raw::RawConfig;
use std::ops::Range;
use toml_edit::{ImDocument, Item, Table, Value};

/// Most refused keys collected before giving up (each costs one more parse).
const MAX_ERRORS: usize = 50;

/// What the text held: the config read with refused keys left out (if it could be read at
/// all), the text it was read from, and one message per refused key.
pub(super) struct Parsed {
    pub raw: Option<RawConfig>,
    pub text: String,
    pub errors: Vec<String>,
}

/// `Err` is a TOML syntax error: the file is not TOML at all.
pub(super) fn parse(text: &str) -> Result<Parsed, String> {
    if text.parse::<ImDocument<String>>().is_err() {
        // toml's own message quotes the line, which may hold a secret: word it ourselves.
        return Err(match toml::from_str::<toml::Table>(text) {
            Err(e) => super::parse_error(text, &e),
            Ok(_) => "TOML parse error".to_string(),
        });
    }
    let mut text = text.to_string();
    let mut errors = Vec::new();
    while errors.len() < MAX_ERRORS {
        let e = match toml::from_str::<RawConfig>(&text) {
            Ok(raw) => return Ok(Parsed { raw: Some(raw), text, errors }),
            Err(e) => e,
        };
        let span = e.span();
        errors.push(match &span {
            Some(s) => {
                let message = super::value_error(&text, s.start, e.message().trim_end());
                format!("line {}: {message}", super::line_of(&text, s.start))
            }
            None => e.message().trim_end().to_string(),
        });
        let Some(cut) = span.and_then(|s| key_value_at(&text, s.start)) else { break };
        text = blank(&text, cut);
    }
    Ok(Parsed { raw: None, text, errors })
}

/// The extent of the `key = value` whose key or value starts at `at`.
fn key_value_at(text: &str, at: usize) -> Option<Range<usize>> {
    let doc = text.parse::<ImDocument<String>>().ok()?;
    in_table(doc.as_table(), at)
}

fn in_table(t: &Table, at: usize) -> Option<Range<usize>> {
    for (name, _) in t.iter() {
        let (key, item) = t.get_key_value(name)?;
        let found = match item {
            Item::Value(v) => in_value(key.span(), v, at),
            Item::Table(inner) => in_table(inner, at),
            Item::ArrayOfTables(a) => a.iter().find_map(|t| in_table(t, at)),
            Item::None => None,
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

fn in_value(key: Option<Range<usize>>, v: &Value, at: usize) -> Option<Range<usize>> {
    let (key, value) = (key?, v.span()?);
    if key.start == at || value.start == at {
        return Some(key.start..value.end);
    }
    match v {
        Value::InlineTable(t) => t.iter().find_map(|(name, _)| {
            let (k, v) = t.get_key_value(name)?;
            in_value(k.span(), v.as_value()?, at)
        }),
        _ => None,
    }
}

/// `text` with `cut` replaced by spaces (byte for byte, newlines kept). An inline-table
/// entry leaves a comma behind (`{ a = 1, }` would not parse), so the comma after it goes
/// too, or else the one before it.
fn blank(text: &str, cut: Range<usize>) -> String {
    let (mut start, mut end) = (cut.start, cut.end);
    let rest = &text[end..];
    let after = rest.trim_start_matches([' ', '\t']);
    let before = text[..start].trim_end_matches([' ', '\t']);
    if after.starts_with(',') {
        end += rest.len() - after.len() + 1;
    } else if before.ends_with(',') {
        start = before.len() - 1;
    }
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..start]);
    for c in text[start..end].chars() {
        let fill = if c == '\n' { "\n" } else { " " };
        out.push_str(&fill.repeat(if c == '\n' { 1 } else { c.len_utf8() }));
    }
    out.push_str(&text[end..]);
    out
}
