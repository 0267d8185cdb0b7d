//! Parsing only the parts of a JSON body that something will read (issue 16).
//!
//! Building a `serde_json::Value` for a whole 8.7 KB GitHub payload (a `String` per key and
//! value, a `BTreeMap` per object, then dropping them all) was 9 % of the accept path's CPU,
//! while the shipped GitHub rules read a few dozen paths of it. [`Keep`] is the set of paths a
//! reader needs (the mapping computes it at load, see `mapping/paths.rs`); [`Keep::parse`] builds
//! `Value`s only along them and discards the rest as it goes.
//!
//! **Same answer.** Every kept path finds what a full parse would give: the same `Value` below
//! a kept path, and along the way objects and arrays of the same kind (an array keeps its
//! length, unkept elements are `null`), so a lookup that would fail on an array still fails.
//! Duplicate keys: the last wins, as in `serde_json`.
//!
//! **Same refusals.** The discarded parts are still read through `deserialize_any`, exactly as
//! the full parse reads them: UTF-8, escapes, number ranges and the nesting limit are checked,
//! and an error is raised at the same byte with the same words. `serde::de::IgnoredAny` is not
//! enough for that: `serde_json` skips such values without checking UTF-8, lone surrogates,
//! `1e400` or nesting depth, so a body the full parse refuses with a 400 would be accepted.

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Number, Value};
use std::collections::BTreeMap;
use std::fmt;

/// The paths of a JSON document to keep: every value at the end of an inserted path is kept
/// whole, and only the objects and arrays leading to one are built (pruned).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keep {
    /// Keep this value whole.
    all: bool,
    /// What to keep of an object, by key.
    fields: BTreeMap<String, Keep>,
    /// What to keep of an array, by index: a path segment that reads as an index (`0`, `01`)
    /// reaches an array element the way templates' path lookups do.
    items: BTreeMap<usize, Keep>,
}

impl Keep {
    /// Keep the whole document: [`Keep::parse`] then builds what `serde_json::from_slice` does.
    pub fn everything() -> Keep {
        Keep { all: true, ..Keep::default() }
    }

    /// Keep nothing but the document's top-level shape (add paths with [`Keep::insert`]).
    pub fn nothing() -> Keep {
        Keep::default()
    }

    /// Whether the whole document is kept.
    pub fn is_everything(&self) -> bool {
        self.all
    }

    /// Keeps the value at `path` (object keys or array indices) whole; an empty path keeps
    /// everything.
    pub fn insert<S: AsRef<str>>(&mut self, path: &[S]) {
        if self.all {
            return;
        }
        let Some((first, rest)) = path.split_first() else {
            *self = Keep::everything();
            return;
        };
        let seg = first.as_ref();
        self.fields.entry(seg.to_string()).or_default().insert(rest);
        if let Ok(i) = seg.parse::<usize>() {
            self.items.entry(i).or_default().insert(rest);
        }
    }

    /// Parses `bytes` as one JSON document, building only what this keeps; refuses exactly
    /// what `serde_json::from_slice::<Value>` refuses, with the same error.
    pub fn parse(&self, bytes: &[u8]) -> Result<Value, serde_json::Error> {
        // One UTF-8 check of the whole body, then a parse that trusts it: reading from bytes,
        // serde_json checks every string (key or value) on its own, which was a sixth of the
        // parse. A body that is not UTF-8 is read from bytes, for the full parse's error.
        match std::str::from_utf8(bytes) {
            Ok(text) => self.parse_from(serde_json::Deserializer::from_str(text)),
            Err(_) => self.parse_from(serde_json::Deserializer::from_slice(bytes)),
        }
    }

    fn parse_from<'de, R: serde_json::de::Read<'de>>(
        &self,
        mut de: serde_json::Deserializer<R>,
    ) -> Result<Value, serde_json::Error> {
        let value = Pruned(self).deserialize(&mut de)?;
        de.end()?;
        Ok(value)
    }

    /// Keeps whatever `other` keeps too.
    pub fn merge(&mut self, other: &Keep) {
        if self.all {
            return;
        }
        if other.all {
            *self = Keep::everything();
            return;
        }
        for (k, v) in &other.fields {
            self.fields.entry(k.clone()).or_default().merge(v);
        }
        for (i, v) in &other.items {
            self.items.entry(*i).or_default().merge(v);
        }
    }
}

/// A value to build along `keep`'s paths.
struct Pruned<'k>(&'k Keep);

impl<'de> DeserializeSeed<'de> for Pruned<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        if self.0.all {
            return Value::deserialize(d);
        }
        d.deserialize_any(self)
    }
}

/// Scalars become what `serde_json`'s own `Value` visitor makes of them (they cost nothing to
/// keep); objects and arrays keep only what `keep` lists.
impl<'de> Visitor<'de> for Pruned<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let next = match self.0.items.get(&items.len()) {
                Some(keep) => seq.next_element_seed(Pruned(keep))?,
                // An element nobody reads: checked, then held by a null so indices still count.
                None => seq.next_element_seed(Skip)?.map(|()| Value::Null),
            };
            match next {
                Some(v) => items.push(v),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut fields = Map::new();
        while let Some(key) = map.next_key_seed(Key(&self.0.fields))? {
            match key {
                Some((name, keep)) => {
                    // Insert, not entry: a repeated key keeps its last value, as serde_json does.
                    fields.insert(name, map.next_value_seed(Pruned(keep))?);
                }
                None => map.next_value_seed(Skip)?,
            }
        }
        Ok(Value::Object(fields))
    }
}

/// An object key, read as the full parse reads it; owned only when it is kept.
struct Key<'k>(&'k BTreeMap<String, Keep>);

impl<'de, 'k> DeserializeSeed<'de> for Key<'k> {
    type Value = Option<(String, &'k Keep)>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, 'k> Visitor<'de> for Key<'k> {
    type Value = Option<(String, &'k Keep)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.0.get_key_value(v).map(|(k, keep)| (k.clone(), keep)))
    }
}

/// A value nobody reads: every byte of it is still read and checked as the full parse would
/// (see the module comment), nothing is built.
struct Skip;

impl<'de> DeserializeSeed<'de> for Skip {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Skip)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Keys go through `deserialize_str` as the full parse's `String` keys do.
        while map.next_key_seed(Key(&NO_FIELDS))?.is_some() {
            map.next_value_seed(Skip)?;
        }
        Ok(())
    }
}

static NO_FIELDS: BTreeMap<String, Keep> = BTreeMap::new();

/// [`Keep::everything`] for callers that parse in full.
pub(super) static EVERYTHING: Keep = Keep { all: true, fields: BTreeMap::new(), items: BTreeMap::new() };

#[cfg(test)]
mod tests;
