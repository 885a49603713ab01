//! A JSON tree read from a request body that borrows its strings from the body (an owned
//! copy only where a string holds an escape) and keeps an object's members in a vector: what
//! the initiation's validation reads, at a fraction of the allocations of a
//! `serde_json::Value` (a `String` per key and string, a `BTreeMap` node per few members).
//!
//! It reads like a `Value`: the same syntax errors (serde_json's parser), a repeated key
//! read as its last occurrence, and, written back ([`serde::Serialize`]), the bytes a
//! `Value` writes (members in key order, a repeated key once). It must never accept a body
//! `serde_json::Value` refuses, or read one differently.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Number;

/// A JSON value borrowing from the text it was read from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    Object(Object<'a>),
}

/// A JSON object's members in the order they were read (a repeated key included).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Object<'a>(Vec<(Cow<'a, str>, Json<'a>)>);

impl<'a> Object<'a> {
    /// The member `key`; of a repeated key the last one, as `serde_json::Value` keeps.
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }

    /// The members in key order, a repeated key once (its last value): a `BTreeMap`'s view.
    fn sorted(&self) -> Vec<&(Cow<'a, str>, Json<'a>)> {
        let mut members: Vec<_> = self.0.iter().rev().collect();
        // Stable: of equal keys the last read stays first, and `dedup_by` keeps the first.
        members.sort_by(|a, b| a.0.cmp(&b.0));
        members.dedup_by(|later, earlier| later.0 == earlier.0);
        members
    }
}

impl<'a> Json<'a> {
    pub fn as_object(&self) -> Option<&Object<'a>> {
        match self {
            Json::Object(o) => Some(o),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Json::Number(n) => n.as_u64(),
            _ => None,
        }
    }

    pub fn is_string(&self) -> bool {
        matches!(self, Json::String(_))
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Json<'de>, E> {
        Ok(Json::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Json<'de>, E> {
        Ok(Json::Number(n.into()))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Json<'de>, E> {
        Ok(Number::from_f64(n).map_or(Json::Null, Json::Number))
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E>(self, s: String) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(s)))
    }

    fn visit_none<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Json<'de>, D::Error> {
        Json::deserialize(d)
    }

    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(Key(key)) = map.next_key()? {
            let value = map.next_value()?;
            members.push((key, value));
        }
        Ok(Json::Object(Object(members)))
    }
}

/// An object key, borrowed when it holds no escape.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }

            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }

            fn visit_string<E: de::Error>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => serializer.serialize_unit(),
            Json::Bool(b) => serializer.serialize_bool(*b),
            Json::Number(n) => n.serialize(serializer),
            Json::String(s) => serializer.serialize_str(s),
            Json::Array(items) => items.serialize(serializer),
            Json::Object(o) => o.serialize(serializer),
        }
    }
}

impl Serialize for Object<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let members = self.sorted();
        let mut map = serializer.serialize_map(Some(members.len()))?;
        for (key, value) in members {
            map.serialize_entry(key.as_ref(), value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const BODIES: [&str; 8] = [
        r#"{"payment":{"amount":"10.00","currency":"EUR","creditor":{"account":{"type":"IBAN","value":"FI1450000120236228"},"name":"Seller"}},"authentication":{"state":"s","redirect_uri":"https://x.example/cb"}}"#,
        r#"{"b":1,"a":[true,false,null,1.5,-3,18446744073709551615],"c":{"z":"\u00e9\n\"q\"","y":{}}}"#,
        r#"{"k":1,"k":{"inner":2},"j":"x","k":"last"}"#,
        r#"  [ 1 , "two" , { "three" : 3 } ]  "#,
        r#""just a string""#,
        r#"12345678901234567890123"#,
        r#"{"":"empty key","\ud83d\ude00":"astral","escaped\"key":"v"}"#,
        r#"{"nested":{"deeper":{"deepest":[{"a":1},{"a":2,"a":3}]}}}"#,
    ];

    #[test]
    fn a_body_reads_and_writes_back_as_a_serde_json_value_does() {
        for body in BODIES {
            let value: Value = serde_json::from_str(body).unwrap();
            let json: Json = serde_json::from_str(body).unwrap();
            assert_eq!(
                serde_json::to_string(&json).unwrap(),
                serde_json::to_string(&value).unwrap(),
                "{body}"
            );
            assert_eq!(
                serde_json::value::to_raw_value(&json).unwrap().get(),
                serde_json::value::to_raw_value(&value).unwrap().get(),
                "{body}"
            );
        }
    }

    #[test]
    fn a_repeated_key_reads_as_its_last_value_like_a_serde_json_value() {
        let json: Json = serde_json::from_str(r#"{"k":1,"k":{"inner":2},"k":"last"}"#).unwrap();
        let object = json.as_object().unwrap();
        assert_eq!(object.get("k").and_then(Json::as_str), Some("last"));
        assert!(object.contains_key("k"));
        assert!(object.get("missing").is_none());
    }

    #[test]
    fn strings_without_escapes_are_borrowed_from_the_body() {
        let body = r#"{"plain":"text","escaped":"a\nb"}"#;
        let json: Json = serde_json::from_str(body).unwrap();
        let object = json.as_object().unwrap();
        assert!(matches!(
            object.get("plain"),
            Some(Json::String(Cow::Borrowed("text")))
        ));
        assert!(matches!(object.get("escaped"), Some(Json::String(Cow::Owned(s))) if s == "a\nb"));
    }

    #[test]
    fn a_body_serde_json_refuses_is_refused_with_the_same_message() {
        for body in [
            "",
            "{",
            r#"{"a":}"#,
            r#"{"a":1,}"#,
            "[1,2",
            "{} trailing",
            r#"{"a":"\x"}"#,
            &format!("{}1{}", "[".repeat(200), "]".repeat(200)),
        ] {
            let value = serde_json::from_str::<Value>(body).unwrap_err().to_string();
            let json = serde_json::from_str::<Json>(body).unwrap_err().to_string();
            assert_eq!(json, value, "{body}");
        }
    }
}
