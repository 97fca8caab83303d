//! The typed reading of the TOML value: a deserializer whose errors carry the key path, the
//! `section!` macro that declares a section's keys once, and the typing of environment values.
//!
//! A key is declared by one field of one section struct. From that field come, with no list
//! to keep in step: serde's check for unknown keys (`deny_unknown_fields`, whose error lists
//! the fields), missing required keys and value types, the default, and the environment
//! overlay's knowledge of the key and of how to type its value ([`Section::env_value`]).

use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;

use serde::de::value::StringDeserializer;
use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess};
use serde::de::{Expected, Unexpected, Visitor};
use toml::Value;

use super::ConfigError;

/// A section struct declared with [`section!`].
pub(super) trait Section {
    /// `raw`, an environment value for `key`, as the TOML value of the key's type; `None`: the
    /// section has no such key. The error says what is wrong with `raw`.
    fn env_value(key: &str, raw: &str) -> Option<Result<Value, String>>;
}

/// The signature of [`Section::env_value`], for tables of sections.
pub(super) type EnvValueFn = fn(&str, &str) -> Option<Result<Value, String>>;

/// Declares a section struct: each field is a key, with its doc, type and (in sections whose
/// keys all have one) `= default`. The struct derives `Deserialize` with `deny_unknown_fields`
/// and implements [`Section`]. In a section with no defaults, a non-`Option` key is required.
macro_rules! section {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty = $default:expr ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, serde::Deserialize)]
        #[serde(default, deny_unknown_fields)]
        $vis struct $name { $( $(#[$fmeta])* $field: $ty, )* }

        impl Default for $name {
            fn default() -> Self {
                Self { $( $field: $default, )* }
            }
        }

        section!(@env $name { $( $field: $ty ),* });
    };
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        $vis struct $name { $( $(#[$fmeta])* $field: $ty, )* }

        section!(@env $name { $( $field: $ty ),* });
    };
    (@env $name:ident { $( $field:ident : $ty:ty ),* }) => {
        impl $crate::config::de::Section for $name {
            fn env_value(key: &str, raw: &str) -> Option<Result<toml::Value, String>> {
                match key {
                    $( stringify!($field) => {
                        Some(<$ty as $crate::config::de::EnvValue>::from_env(raw))
                    } )*
                    _ => None,
                }
            }
        }
    };
}
pub(super) use section;

/// A key's type, as set from an environment variable (always a string).
pub(super) trait EnvValue {
    /// `raw` as a TOML value of this type; the error says what is wrong with it.
    fn from_env(raw: &str) -> Result<Value, String>;
}

impl EnvValue for String {
    fn from_env(raw: &str) -> Result<Value, String> {
        Ok(Value::String(raw.to_string()))
    }
}

impl EnvValue for i64 {
    fn from_env(raw: &str) -> Result<Value, String> {
        raw.trim()
            .parse()
            .map(Value::Integer)
            .map_err(|_| format!("{raw:?} is not an integer"))
    }
}

impl EnvValue for bool {
    fn from_env(raw: &str) -> Result<Value, String> {
        raw.trim()
            .parse()
            .map(Value::Boolean)
            .map_err(|_| format!("{raw:?} is not a boolean (true or false)"))
    }
}

/// A list is comma-separated, optionally in brackets: `1,2` or `[1, 2]`.
impl<T: EnvValue> EnvValue for Vec<T> {
    fn from_env(raw: &str) -> Result<Value, String> {
        let inner = raw.trim().trim_start_matches('[').trim_end_matches(']');
        inner
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(T::from_env)
            .collect::<Result<_, _>>()
            .map(Value::Array)
    }
}

impl<T: EnvValue> EnvValue for Option<T> {
    fn from_env(raw: &str) -> Result<Value, String> {
        T::from_env(raw)
    }
}

/// An array of tables (`[[port]]`), named as such when the key holds something else.
#[derive(Debug)]
pub(super) struct Entries<T>(pub(super) Vec<T>);

impl<T> Default for Entries<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<'de, T: de::Deserialize<'de>> de::Deserialize<'de> for Entries<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor<T>(PhantomData<T>);
        impl<'de, T: de::Deserialize<'de>> Visitor<'de> for EntriesVisitor<T> {
            type Value = Entries<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of tables ([[...]])")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Entries<T>, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = seq.next_element()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_seq(EntriesVisitor(PhantomData))
    }
}

/// Deserializes `value`; an error names the key inside `value` (`dataplane.workers`,
/// `xconnect[0].b`) and no file yet: [`super::Ctx::deserialize`] completes it.
pub(super) fn from_value<T: de::DeserializeOwned>(value: Value) -> Result<T, ConfigError> {
    T::deserialize(ValueDeserializer(value))
}

/// The serde errors, in the words of the other configuration errors.
impl de::Error for ConfigError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ConfigError::Key {
            file: PathBuf::new(),
            key: String::new(),
            env: None,
            problem: msg.to_string(),
        }
    }

    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        let found = match unexp {
            Unexpected::Signed(_) | Unexpected::Unsigned(_) => "integer".to_string(),
            Unexpected::Float(_) => "float".into(),
            Unexpected::Bool(_) => "boolean".into(),
            Unexpected::Str(_) => "string".into(),
            Unexpected::Seq => "array".into(),
            Unexpected::Map => "table".into(),
            other => other.to_string(),
        };
        let expected = exp.to_string();
        let expected = match expected.as_str() {
            "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" => "an integer",
            "a sequence" => "an array",
            "a map" => "a table",
            s if s.starts_with("struct ") => "a table ([...])",
            s => s,
        };
        Self::custom(format!("must be {expected}, not {found}"))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        Self::custom(format!(
            "unknown key (expected one of: {})",
            expected.join(", ")
        ))
        .within(field)
    }

    fn missing_field(field: &'static str) -> Self {
        Self::custom("is required").within(field)
    }
}

impl ConfigError {
    /// Prefixes the key of a [`ConfigError::Key`] with `outer`, the key (`port`) or index
    /// (`[1]`) that holds it; `""` holds everything.
    pub(super) fn within(mut self, outer: &str) -> Self {
        if let ConfigError::Key { key, .. } = &mut self {
            *key = if outer.is_empty() {
                std::mem::take(key)
            } else if key.is_empty() {
                outer.to_string()
            } else if key.starts_with('[') {
                format!("{outer}{key}")
            } else {
                format!("{outer}.{key}")
            };
        }
        self
    }
}

/// A TOML value as a serde deserializer, its errors [`ConfigError`]s with the key path.
struct ValueDeserializer(Value);

impl<'de> IntoDeserializer<'de, ConfigError> for ValueDeserializer {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> Deserializer<'de> for ValueDeserializer {
    type Error = ConfigError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        match self.0 {
            Value::String(s) => visitor.visit_string(s),
            Value::Integer(i) => visitor.visit_i64(i),
            Value::Float(f) => visitor.visit_f64(f),
            Value::Boolean(b) => visitor.visit_bool(b),
            Value::Datetime(d) => visitor.visit_string(d.to_string()),
            Value::Array(a) => visitor.visit_seq(Seq(a.into_iter().enumerate())),
            Value::Table(t) => visitor.visit_map(Map {
                entries: t.into_iter(),
                value: None,
            }),
        }
    }

    /// A present key is `Some`: TOML has no null.
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        visitor.visit_some(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier
        ignored_any
    }
}

/// An array's elements; an error is prefixed with the element's `[index]`.
struct Seq(std::iter::Enumerate<std::vec::IntoIter<Value>>);

impl<'de> SeqAccess<'de> for Seq {
    type Error = ConfigError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, ConfigError> {
        self.0
            .next()
            .map(|(i, v)| {
                seed.deserialize(ValueDeserializer(v))
                    .map_err(|e| e.within(&format!("[{i}]")))
            })
            .transpose()
    }
}

/// A table's entries; an error in a value is prefixed with its key.
struct Map {
    entries: toml::map::IntoIter,
    /// The entry whose key was just returned.
    value: Option<(String, Value)>,
}

impl<'de> MapAccess<'de> for Map {
    type Error = ConfigError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ConfigError> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        let k = seed.deserialize(StringDeserializer::<ConfigError>::new(key.clone()))?;
        self.value = Some((key, value));
        Ok(Some(k))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, ConfigError> {
        let (key, value) = self
            .value
            .take()
            .ok_or_else(|| <ConfigError as de::Error>::custom("a value without its key"))?;
        seed.deserialize(ValueDeserializer(value))
            .map_err(|e| e.within(&key))
    }
}
