//! The strict JSON check and the muapi `id`/`status` skim
//! (`intake::json::check`, `intake::muapi::parse`) on arbitrary bodies.
//!
//! Invariants, against serde_json's own tree (`Value`):
//! - the check accepts a body exactly when serde_json parses it and no
//!   object in it has the same key twice (counted independently: entries
//!   as written versus keys left in serde_json's maps);
//! - a refusal of a body serde_json parses names the duplicate key rule;
//! - the skimmed top-level `id` and `status` are what the tree holds;
//! - the muapi parser accepts exactly the objects whose `id` and `status`
//!   are non-empty strings, and returns those strings.
#![no_main]

use std::fmt;

use hookrelay::intake::json::{check, Field};
use hookrelay::intake::muapi;
use libfuzzer_sys::fuzz_target;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

fuzz_target!(|body: &[u8]| {
    let ours = check(body);
    let tree = serde_json::from_slice::<Value>(body);
    match (&ours, &tree) {
        (Ok(_), Err(e)) => panic!("accepted a body serde_json refuses: {e}"),
        (Err(e), Ok(tree)) => {
            let written = entries_as_written(body);
            let kept = keys_in(tree);
            assert!(
                written > kept,
                "refused a body serde_json reads, without a duplicate key: {e}"
            );
            assert!(
                e.to_string().contains("duplicate object key"),
                "refused a body with a duplicate key for another reason: {e}"
            );
        }
        (Ok(top), Ok(tree)) => {
            assert_eq!(
                entries_as_written(body),
                keys_in(tree),
                "accepted a body with a duplicate key"
            );
            assert_eq!(top.object, tree.is_object());
            same_field(top.id.as_ref(), tree.get("id"), "id");
            same_field(top.status.as_ref(), tree.get("status"), "status");
        }
        (Err(_), Err(_)) => {}
    }

    let head = muapi::parse(body);
    let expected = match (&ours, &tree) {
        (Ok(_), Ok(tree)) => {
            // muapi's rules: a non-empty text, within its bound, without
            // control characters.
            let text = |name: &str, max: usize| match tree.get(name) {
                Some(Value::String(s))
                    if !s.is_empty() && s.len() <= max && !s.chars().any(char::is_control) =>
                {
                    Some(s.clone())
                }
                _ => None,
            };
            text("id", hookrelay::intake::muapi::MAX_ID_BYTES)
                .zip(text("status", hookrelay::intake::muapi::MAX_STATUS_BYTES))
        }
        _ => None,
    };
    match (head, expected) {
        (Ok(head), Some((id, status))) => {
            assert_eq!(head.id, id);
            assert_eq!(head.status, status);
            assert_eq!(head.key(), format!("{id}\n{status}"));
        }
        (Err(_), None) => {}
        (Ok(head), None) => panic!("muapi accepted {head:?}, the tree has no id and status"),
        (Err(e), Some(_)) => panic!("muapi refused a body with id and status: {e}"),
    }
});

/// The skimmed field agrees with the tree's value under the same name.
fn same_field(skimmed: Option<&Field<'_>>, value: Option<&Value>, name: &str) {
    match (skimmed, value) {
        (None, None | Some(Value::Null)) => {}
        (Some(Field::Text(s)), Some(Value::String(t))) => assert_eq!(s, t, "{name}"),
        (Some(Field::Other), Some(v)) => assert!(!v.is_string() && !v.is_null(), "{name}: {v}"),
        (skimmed, value) => panic!("{name}: skimmed {skimmed:?}, tree has {value:?}"),
    }
}

/// Object keys left in serde_json's tree, counted over every object.
fn keys_in(value: &Value) -> usize {
    match value {
        Value::Object(map) => map.len() + map.values().map(keys_in).sum::<usize>(),
        Value::Array(items) => items.iter().map(keys_in).sum(),
        _ => 0,
    }
}

/// Object entries as written in the body, counted over every object
/// (without deduplication). Only called on bodies serde_json parsed.
fn entries_as_written(body: &[u8]) -> usize {
    let mut de = serde_json::Deserializer::from_slice(body);
    Counter.deserialize(&mut de).expect("serde_json parsed it")
}

#[derive(Clone, Copy)]
struct Counter;

impl<'de> DeserializeSeed<'de> for Counter {
    type Value = usize;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Counter {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }

    fn visit_bool<E>(self, _: bool) -> Result<usize, E> {
        Ok(0)
    }

    fn visit_i64<E>(self, _: i64) -> Result<usize, E> {
        Ok(0)
    }

    fn visit_u64<E>(self, _: u64) -> Result<usize, E> {
        Ok(0)
    }

    fn visit_f64<E>(self, _: f64) -> Result<usize, E> {
        Ok(0)
    }

    fn visit_str<E>(self, _: &str) -> Result<usize, E> {
        Ok(0)
    }

    fn visit_unit<E>(self) -> Result<usize, E> {
        Ok(0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        let mut n = 0;
        while let Some(inner) = seq.next_element_seed(Counter)? {
            n += inner;
        }
        Ok(n)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
        let mut n = 0;
        while map.next_key::<IgnoredAny>()?.is_some() {
            n += 1 + map.next_value_seed(Counter)?;
        }
        Ok(n)
    }
}
