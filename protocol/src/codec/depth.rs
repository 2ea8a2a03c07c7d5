//! A nesting limit for serde deserialization, used by the codec (`codec.rs`) around the
//! bincode deserializer.
//!
//! bincode bounds how many bytes a message may claim, but not how deeply it nests. Some
//! wire types are recursive (`Filter::Not(Box<Filter>)`), so without this a hostile
//! 100 kB message of one-byte "Not" tags would recurse once per byte and overflow the
//! stack, which aborts the whole process: one bad peer would take down every session.
//! These wrappers count container levels (struct, sequence, map, enum, option, newtype)
//! on the way down and fail cleanly past a budget. They are format-agnostic: they wrap
//! any `serde::Deserializer`.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};

/// How many more levels may be entered, and where to record that the limit was hit (so
/// the codec can report a typed error instead of the format's stringly one).
#[derive(Clone, Copy)]
pub(crate) struct Budget<'a> {
    /// Levels still allowed below the current one.
    remaining: usize,
    /// Set when a descent was refused.
    tripped: &'a Cell<bool>,
}

impl<'a> Budget<'a> {
    /// A budget of `max` levels; `tripped` is set if it runs out.
    pub(crate) fn new(max: usize, tripped: &'a Cell<bool>) -> Self {
        Self { remaining: max, tripped }
    }

    /// The budget one level down, or an error if there is none left.
    fn descend<E: de::Error>(self) -> Result<Self, E> {
        match self.remaining.checked_sub(1) {
            Some(remaining) => Ok(Self { remaining, tripped: self.tripped }),
            None => {
                self.tripped.set(true);
                Err(E::custom("message nests deeper than the decode depth limit"))
            }
        }
    }
}

/// Deserializes `S` with every nested level counted against the budget.
pub(crate) struct LimitedSeed<'a, S> {
    /// What to deserialize.
    pub(crate) seed: S,
    /// Levels still allowed.
    pub(crate) budget: Budget<'a>,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for LimitedSeed<'_, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        self.seed.deserialize(Limited { inner: deserializer, budget: self.budget })
    }
}

/// A deserializer that hands the budget to every visitor it drives.
struct Limited<'a, D> {
    /// The format's deserializer.
    inner: D,
    /// Levels still allowed.
    budget: Budget<'a>,
}

/// A visitor that charges one level for each container it is handed.
struct LimitedVisitor<'a, V> {
    /// The type's own visitor.
    inner: V,
    /// Levels still allowed.
    budget: Budget<'a>,
}

/// Sequence, map, enum and variant access one level down.
struct LimitedAccess<'a, A> {
    /// The format's access.
    inner: A,
    /// Levels still allowed for the elements.
    budget: Budget<'a>,
}

macro_rules! forward_deserialize {
    ($($method:ident),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
                self.inner.$method(LimitedVisitor { inner: visitor, budget: self.budget })
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Limited<'_, D> {
    type Error = D::Error;

    forward_deserialize!(
        deserialize_any,
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_option,
        deserialize_unit,
        deserialize_seq,
        deserialize_map,
        deserialize_identifier,
        deserialize_ignored_any,
    );

    fn deserialize_unit_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_unit_struct(name, LimitedVisitor { inner: visitor, budget: self.budget })
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_newtype_struct(name, LimitedVisitor { inner: visitor, budget: self.budget })
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_tuple(len, LimitedVisitor { inner: visitor, budget: self.budget })
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_tuple_struct(name, len, LimitedVisitor { inner: visitor, budget: self.budget })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_struct(name, fields, LimitedVisitor { inner: visitor, budget: self.budget })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_enum(name, variants, LimitedVisitor { inner: visitor, budget: self.budget })
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(
            fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
                self.inner.$method(v)
            }
        )*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for LimitedVisitor<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit!(
        visit_bool(bool),
        visit_i8(i8),
        visit_i16(i16),
        visit_i32(i32),
        visit_i64(i64),
        visit_i128(i128),
        visit_u8(u8),
        visit_u16(u16),
        visit_u32(u32),
        visit_u64(u64),
        visit_u128(u128),
        visit_f32(f32),
        visit_f64(f64),
        visit_char(char),
        visit_str(&str),
        visit_borrowed_str(&'de str),
        visit_string(String),
        visit_bytes(&[u8]),
        visit_borrowed_bytes(&'de [u8]),
        visit_byte_buf(Vec<u8>),
    );

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        let budget = self.budget.descend()?;
        self.inner.visit_some(Limited { inner: deserializer, budget })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        let budget = self.budget.descend()?;
        self.inner.visit_newtype_struct(Limited { inner: deserializer, budget })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        let budget = self.budget.descend()?;
        self.inner.visit_seq(LimitedAccess { inner: seq, budget })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let budget = self.budget.descend()?;
        self.inner.visit_map(LimitedAccess { inner: map, budget })
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        let budget = self.budget.descend()?;
        self.inner.visit_enum(LimitedAccess { inner: data, budget })
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for LimitedAccess<'_, A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, A::Error> {
        self.inner.next_element_seed(LimitedSeed { seed, budget: self.budget })
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for LimitedAccess<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, A::Error> {
        self.inner.next_key_seed(LimitedSeed { seed, budget: self.budget })
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.inner.next_value_seed(LimitedSeed { seed, budget: self.budget })
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'a, 'de, A: EnumAccess<'de>> EnumAccess<'de> for LimitedAccess<'a, A> {
    type Error = A::Error;
    type Variant = LimitedAccess<'a, A::Variant>;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self::Variant), A::Error> {
        let (value, variant) = self.inner.variant_seed(LimitedSeed { seed, budget: self.budget })?;
        Ok((value, LimitedAccess { inner: variant, budget: self.budget }))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for LimitedAccess<'_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.inner.newtype_variant_seed(LimitedSeed { seed, budget: self.budget })
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.inner.tuple_variant(len, LimitedVisitor { inner: visitor, budget: self.budget })
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.inner.struct_variant(fields, LimitedVisitor { inner: visitor, budget: self.budget })
    }
}
