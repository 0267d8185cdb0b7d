//! Tables whose variant is named by one of their keys (`kind`, `scheme`), read so that a
//! refused key keeps its position.
//!
//! serde's `#[serde(tag = "...")]` reads a whole table into a buffer before it knows the
//! variant, and a buffered key has no position: toml would report every refused key at the
//! table's first line, and `parse` could no longer blank it out and read on. Here the keys
//! after the tag go straight from toml into the variant's struct (`deny_unknown_fields`), so
//! toml reports a refused one at its own line. Keys written before the tag have to be
//! buffered; a refused one of those is reported at the table's line.

use serde::de::value::StrDeserializer;
use serde::de::{DeserializeOwned, DeserializeSeed, Error as _, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::marker::PhantomData;

/// A table tagged by [`Tagged::TAG`].
pub trait Tagged: Sized {
    /// The key naming the variant.
    const TAG: &'static str;
    /// The variants' names (a field-less serde enum).
    type Name: DeserializeOwned + Copy;
    /// The keys every variant takes.
    type Common: DeserializeOwned;
    /// One variant's own keys.
    type Kind;
    /// Reads the variant's own keys from `d` (a map without the tag and the common keys).
    fn kind<'de, D: Deserializer<'de>>(name: Self::Name, d: D) -> Result<Self::Kind, D::Error>;
    /// A tag this build does not know, as written (its other keys are not checked).
    fn unknown(written: String) -> Self::Kind;
    fn build(common: Self::Common, kind: Self::Kind) -> Self;
    /// A clearer refusal than "unknown field" for a key that belongs to another variant.
    fn misplaced(name: Self::Name, key: &str) -> Option<String>;
}

/// `T` from a map, for its `Deserialize` impl.
pub fn deserialize<'de, T: Tagged, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    d.deserialize_map(TaggedVisitor::<T>(PhantomData))
}

/// The field names of a `#[derive(Deserialize)]` struct.
pub fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldsProbe(&mut fields));
    fields
}

/// A deserializer that only notes the fields a struct asks for.
struct FieldsProbe<'a>(&'a mut &'static [&'static str]);

impl<'de> Deserializer<'de> for FieldsProbe<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(Self::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(Self::Error::custom("fields noted"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

struct TaggedVisitor<T>(PhantomData<T>);

impl<'de, T: Tagged> Visitor<'de> for TaggedVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "a table with {}", T::TAG)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        let common_keys = fields_of::<T::Common>();
        let mut common = toml::Table::new();
        let mut before = Vec::new();
        let written = loop {
            let Some(key) = map.next_key::<String>()? else { return Err(A::Error::missing_field(T::TAG)) };
            if key == T::TAG {
                break map.next_value::<String>()?;
            }
            let value: toml::Value = map.next_value()?;
            if common_keys.contains(&key.as_str()) {
                common.insert(key, value);
            } else {
                before.push((key, value));
            }
        };
        let known = T::Name::deserialize(StrDeserializer::<serde::de::value::Error>::new(&written)).ok();
        let rest = Rest::<T, A> {
            map,
            before: before.into_iter(),
            pending: None,
            common: &mut common,
            common_keys,
            name: known,
            de: PhantomData,
        };
        let kind = match known {
            Some(name) => T::kind(name, RestDeserializer(rest))?,
            None => {
                IgnoredAny::deserialize(RestDeserializer(rest))?;
                T::unknown(written)
            }
        };
        let common = T::Common::deserialize(toml::Value::Table(common)).map_err(|e| A::Error::custom(e.message()))?;
        Ok(T::build(common, kind))
    }
}

/// The map after the tag, less the common keys (which go to `common`), with the keys read
/// before the tag first.
struct Rest<'a, 'de, T: Tagged, A> {
    map: A,
    before: std::vec::IntoIter<(String, toml::Value)>,
    pending: Option<toml::Value>,
    common: &'a mut toml::Table,
    common_keys: &'static [&'static str],
    name: Option<T::Name>,
    de: PhantomData<&'de ()>,
}

impl<'de, T: Tagged, A: MapAccess<'de>> MapAccess<'de> for Rest<'_, 'de, T, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, mut seed: K) -> Result<Option<K::Value>, A::Error> {
        if let Some((key, value)) = self.before.next() {
            self.pending = Some(value);
            return refuse_misplaced::<T, _, _>(self.name, &key, seed).map(Some);
        }
        loop {
            let router = Router::<T, K> { seed, common_keys: self.common_keys, name: self.name };
            match self.map.next_key_seed(router)? {
                None => return Ok(None),
                Some(Routed::Variant(v)) => return Ok(Some(v)),
                Some(Routed::Common(key, back)) => {
                    self.common.insert(key, self.map.next_value()?);
                    seed = back;
                }
            }
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        match self.pending.take() {
            Some(value) => seed.deserialize(value).map_err(|e| A::Error::custom(e.message())),
            None => self.map.next_value_seed(seed),
        }
    }
}

/// Hands `key` to the variant's field seed, rewording its refusal if the key belongs to
/// another variant.
fn refuse_misplaced<'de, T: Tagged, K: DeserializeSeed<'de>, E: serde::de::Error>(
    name: Option<T::Name>,
    key: &str,
    seed: K,
) -> Result<K::Value, E> {
    seed.deserialize(StrDeserializer::<E>::new(key)).map_err(|e| match name.and_then(|n| T::misplaced(n, key)) {
        Some(message) => E::custom(message),
        None => e,
    })
}

enum Routed<K, V> {
    /// A common key, and the seed to read the next key with.
    Common(String, K),
    Variant(V),
}

/// Reads one key inside toml's own `next_key_seed`, so that a refusal carries the key's span.
struct Router<T: Tagged, K> {
    seed: K,
    common_keys: &'static [&'static str],
    name: Option<T::Name>,
}

impl<'de, T: Tagged, K: DeserializeSeed<'de>> DeserializeSeed<'de> for Router<T, K> {
    type Value = Routed<K, K::Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let key = String::deserialize(d)?;
        if self.common_keys.contains(&key.as_str()) {
            return Ok(Routed::Common(key, self.seed));
        }
        refuse_misplaced::<T, _, D::Error>(self.name, &key, self.seed).map(Routed::Variant)
    }
}

struct RestDeserializer<'a, 'de, T: Tagged, A>(Rest<'a, 'de, T, A>);

impl<'de, T: Tagged, A: MapAccess<'de>> Deserializer<'de> for RestDeserializer<'_, 'de, T, A> {
    type Error = A::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, A::Error> {
        visitor.visit_map(self.0)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}
