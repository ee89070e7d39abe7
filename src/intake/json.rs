//! The one validity rule for callback bodies, whatever their source.
//!
//! A body is accepted only if it is JSON that any strict parser reads the
//! same way, because it is forwarded byte for byte to subscribers whose
//! parsers may be strict:
//! - UTF-8 throughout, also inside strings hookrelay does not otherwise
//!   read (serde's `IgnoredAny` skips strings unchecked);
//! - no lone surrogate in a `\u` escape;
//! - every number finite as an f64 (`1e400` is refused);
//! - no object with the same key twice (after unescaping: `"key"` and
//!   `"k\u0065y"` are the same key). Parsers disagree on which duplicate
//!   wins, so a filter here and a subscriber there could read different
//!   values: such a body is refused on every route.
//!
//! [`check`] walks the whole body once with serde_json's own parser and
//! builds no tree: values are visited and dropped, strings are borrowed
//! from the body unless they hold escapes. It also returns the top-level
//! `id` and `status` a muapi callback needs, so that source reads its body
//! once.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::IntakeError;

/// A top-level field hookrelay reads.
#[derive(Debug)]
pub enum Field<'a> {
    /// A string, unescaped.
    Text(Cow<'a, str>),
    /// Any other value but `null` (which counts as absent).
    Other,
}

/// What [`check`] found at the top of a valid body.
#[derive(Debug, Default)]
pub struct Top<'a> {
    /// Whether the body is a JSON object.
    pub object: bool,
    /// The top-level `id`, if present and not null.
    pub id: Option<Field<'a>>,
    /// The top-level `status`, if present and not null.
    pub status: Option<Field<'a>>,
}

/// The marker of the one error this module makes itself (serde_json adds
/// the position).
const DUPLICATE: &str = "duplicate object key";

/// Checks that `body` is strictly valid JSON (see the module docs) and
/// returns its top-level `id` and `status`.
pub fn check(body: &[u8]) -> Result<Top<'_>, IntakeError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let top = de
        .deserialize_any(TopVisitor)
        .and_then(|top| de.end().map(|()| top))
        .map_err(|e| {
            let text = e.to_string();
            if text.starts_with(DUPLICATE) {
                IntakeError::Invalid(format!(
                    "body has a {text}: every key of an object must be unique"
                ))
            } else {
                IntakeError::Invalid(format!("body is not valid JSON: {text}"))
            }
        })?;
    Ok(top)
}

struct TopVisitor;

impl<'de> Visitor<'de> for TopVisitor {
    type Value = Top<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top<'de>, A::Error> {
        let mut top = Top {
            object: true,
            ..Top::default()
        };
        let mut keys = Keys::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let slot = match &*key {
                "id" => Some(&mut top.id),
                "status" => Some(&mut top.status),
                _ => None,
            };
            keys.insert::<A::Error>(key)?;
            match slot {
                Some(slot) => *slot = map.next_value_seed(FieldSeed)?,
                None => map.next_value_seed(Valid)?,
            }
        }
        Ok(top)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Top<'de>, A::Error> {
        Valid.visit_seq(seq).map(|()| Top::default())
    }

    fn visit_bool<E>(self, _: bool) -> Result<Top<'de>, E> {
        Ok(Top::default())
    }

    fn visit_i64<E>(self, _: i64) -> Result<Top<'de>, E> {
        Ok(Top::default())
    }

    fn visit_u64<E>(self, _: u64) -> Result<Top<'de>, E> {
        Ok(Top::default())
    }

    fn visit_f64<E>(self, _: f64) -> Result<Top<'de>, E> {
        Ok(Top::default())
    }

    fn visit_str<E>(self, _: &str) -> Result<Top<'de>, E> {
        Ok(Top::default())
    }

    fn visit_unit<E>(self) -> Result<Top<'de>, E> {
        Ok(Top::default())
    }
}

/// Validates one value and keeps nothing of it.
#[derive(Clone, Copy)]
struct Valid;

impl<'de> DeserializeSeed<'de> for Valid {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Valid {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    // serde_json has checked what reaches these: UTF-8 and escapes for
    // strings, a finite f64 for numbers beyond the integers.
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

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Valid)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut keys = Keys::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            keys.insert::<A::Error>(key)?;
            map.next_value_seed(Valid)?;
        }
        Ok(())
    }
}

/// The keys of one object so far: a short list scanned in place (no
/// allocation for the usual small object), a hash set once the object is
/// large (so a body of many keys costs linear time).
#[derive(Default)]
struct Keys<'de> {
    few: [Option<Cow<'de, str>>; FEW_KEYS],
    len: usize,
    many: Option<HashSet<Cow<'de, str>>>,
}

/// Objects up to this many keys are checked by scanning.
const FEW_KEYS: usize = 16;

impl<'de> Keys<'de> {
    fn insert<E: de::Error>(&mut self, key: Cow<'de, str>) -> Result<(), E> {
        let fresh = match &mut self.many {
            Some(many) => many.insert(key),
            None if self.len < FEW_KEYS => {
                let fresh = !self.few[..self.len]
                    .iter()
                    .any(|k| k.as_deref() == Some(&*key));
                self.few[self.len] = Some(key);
                self.len += 1;
                fresh
            }
            None => {
                let mut many: HashSet<Cow<'de, str>> =
                    self.few.iter_mut().filter_map(Option::take).collect();
                let fresh = many.insert(key);
                self.many = Some(many);
                fresh
            }
        };
        if fresh {
            Ok(())
        } else {
            // The key is not quoted: a body may carry secrets.
            Err(E::custom(DUPLICATE))
        }
    }
}

/// Reads an object key, unescaped, borrowed from the body when it can be.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(TextVisitor)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

/// Validates a top-level field's value and keeps it if it is a string.
struct FieldSeed;

impl<'de> DeserializeSeed<'de> for FieldSeed {
    type Value = Option<Field<'de>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(FieldVisitor)
    }
}

struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Option<Field<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Some(Field::Text(Cow::Borrowed(v))))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(Field::Text(Cow::Owned(v.to_owned()))))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Some(Field::Other))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Some(Field::Other))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Some(Field::Other))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Some(Field::Other))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Valid.visit_seq(seq).map(|()| Some(Field::Other))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Valid.visit_map(map).map(|()| Some(Field::Other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(body: &[u8]) -> String {
        check(body).unwrap_err().to_string()
    }

    #[test]
    fn what_serde_would_skip_unchecked_is_refused() {
        // Invalid UTF-8 in a value and in a key nobody reads.
        assert!(error(b"{\"id\":\"-\",\"status\":\"d\",\"\":\"\xce\"}").contains("not valid JSON"));
        assert!(error(b"{\"\xce\":1}").contains("not valid JSON"));
        // Lone surrogates, leading and trailing.
        assert!(error(br#"{"x":"\ud800"}"#).contains("not valid JSON"));
        assert!(error(br#"{"x":"\udc00"}"#).contains("not valid JSON"));
        assert!(error(br#"{"x":"\ud800\u0041"}"#).contains("not valid JSON"));
        // Numbers beyond f64, as decimals and as long integers.
        assert!(error(br#"{"x":[1e400]}"#).contains("not valid JSON"));
        assert!(error(br#"{"x":-1e309}"#).contains("not valid JSON"));
        let long = format!(r#"{{"x":{}}}"#, "9".repeat(400));
        assert!(error(long.as_bytes()).contains("not valid JSON"));
        // Not JSON at all, or not only JSON.
        for body in [
            &b""[..],
            b"   ",
            b"hello",
            b"{",
            b"{} {}",
            b"{\"a\":1,}",
            b"[1,]",
        ] {
            assert!(error(body).contains("not valid JSON"), "{body:?}");
        }
    }

    #[test]
    fn duplicate_keys_are_refused_at_every_depth_and_spelling() {
        let e = error(br#"{"id":"a","id":"a","status":"s"}"#);
        assert!(e.contains("duplicate object key"), "{e}");
        assert!(e.contains("line 1"), "{e}");
        assert!(!e.contains("\"id\""), "quotes the key: {e}");
        assert!(error(br#"{"a":[{"k":1,"k":1}]}"#).contains("duplicate"));
        assert!(error(br#"{"key":1,"k\u0065y":2}"#).contains("duplicate"));
        // Many keys: the hashed path finds the duplicate too.
        let mut many: String = (0..100).map(|i| format!("\"k{i}\":{i},")).collect();
        many.push_str("\"k7\":0");
        assert!(error(format!("{{{many}}}").as_bytes()).contains("duplicate"));
        // The same key in sibling objects is fine.
        assert!(check(br#"{"a":{"k":1},"b":{"k":1},"c":[{"k":1},{"k":2}]}"#).is_ok());
    }

    #[test]
    fn valid_bodies_pass_and_give_their_top_fields() {
        let top = check(
            br#" {"id":"a\"b","status":"completed","e":"\ud83d\ude00","n":123456789012345678901234567890,"m":-0.0e-5,"x":1e-400,"d":[[[{}]]],"t":true,"z":null} "#,
        )
        .unwrap();
        assert!(top.object);
        assert!(matches!(top.id, Some(Field::Text(ref s)) if s == "a\"b"));
        assert!(matches!(
            top.status,
            Some(Field::Text(Cow::Borrowed("completed")))
        ));
        let top = check(br#"{"id":null,"status":5}"#).unwrap();
        assert!(top.id.is_none());
        assert!(matches!(top.status, Some(Field::Other)));
        for body in [&b"[1,{\"a\":2}]"[..], b"\"text\"", b"12", b"null", b"true"] {
            let top = check(body).unwrap();
            assert!(!top.object && top.id.is_none(), "{body:?}");
        }
    }
}
