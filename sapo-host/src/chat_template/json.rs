//! JSON that keeps object keys in document order, as Python's `json.loads`
//! does, so a chat template's `tools | tojson` prints a tool schema in the
//! order its author wrote it (`serde_json`'s map sorts keys in this build).

use std::fmt;
use std::sync::Arc;

use minijinja::value::{Enumerator, Object, ObjectRepr, Value};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A JSON value with object keys in document order. A key given twice keeps
/// its first position and its last value, like a Python dict.
#[derive(Debug, Clone, PartialEq)]
pub enum OrderedJson {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number, integer or float as written (`1` stays an integer, `1.0` a float).
    Number(serde_json::Number),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<OrderedJson>),
    /// An object, keys in document order.
    Object(Vec<(String, OrderedJson)>),
}

impl OrderedJson {
    /// Parses one JSON document; trailing characters other than whitespace are an error.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The value under `key` of an object; `None` for other kinds.
    pub fn get(&self, key: &str) -> Option<&OrderedJson> {
        match self {
            OrderedJson::Object(entries) => entries.iter().find(|(name, _)| name == key).map(|(_, value)| value),
            _ => None,
        }
    }

    /// What the JSON type is called in error messages (`a string`, `a number`…).
    pub fn kind_name(&self) -> &'static str {
        match self {
            OrderedJson::Null => "null",
            OrderedJson::Bool(_) => "a boolean",
            OrderedJson::Number(_) => "a number",
            OrderedJson::String(_) => "a string",
            OrderedJson::Array(_) => "a list",
            OrderedJson::Object(_) => "an object",
        }
    }

    /// The value a template sees: integers stay integers, floats floats,
    /// objects become ordered maps.
    pub fn to_value(&self) -> Value {
        match self {
            OrderedJson::Null => Value::from(()),
            OrderedJson::Bool(flag) => Value::from(*flag),
            OrderedJson::Number(number) => {
                if let Some(integer) = number.as_i64() {
                    Value::from(integer)
                } else if let Some(integer) = number.as_u64() {
                    Value::from(integer)
                } else {
                    Value::from(number.as_f64().unwrap_or(f64::NAN))
                }
            }
            OrderedJson::String(text) => Value::from(text.as_str()),
            OrderedJson::Array(items) => Value::from(items.iter().map(OrderedJson::to_value).collect::<Vec<_>>()),
            OrderedJson::Object(entries) => {
                OrderedMap::value(entries.iter().map(|(key, value)| (key.clone(), value.to_value())).collect())
            }
        }
    }
}

impl<'de> Deserialize<'de> for OrderedJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(OrderedJsonVisitor)
    }
}

struct OrderedJsonVisitor;

impl<'de> Visitor<'de> for OrderedJsonVisitor {
    type Value = OrderedJson;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<OrderedJson, E> {
        Ok(OrderedJson::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<OrderedJson, E> {
        Ok(OrderedJson::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<OrderedJson, E> {
        Ok(OrderedJson::Number(value.into()))
    }

    fn visit_f64<E>(self, value: f64) -> Result<OrderedJson, E> {
        // serde_json only hands over finite floats.
        Ok(serde_json::Number::from_f64(value).map_or(OrderedJson::Null, OrderedJson::Number))
    }

    fn visit_str<E>(self, value: &str) -> Result<OrderedJson, E> {
        Ok(OrderedJson::String(value.to_string()))
    }

    fn visit_string<E>(self, value: String) -> Result<OrderedJson, E> {
        Ok(OrderedJson::String(value))
    }

    fn visit_unit<E>(self) -> Result<OrderedJson, E> {
        Ok(OrderedJson::Null)
    }

    fn visit_none<E>(self) -> Result<OrderedJson, E> {
        Ok(OrderedJson::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OrderedJson, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(OrderedJson::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedJson, A::Error> {
        let mut entries: Vec<(String, OrderedJson)> = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, OrderedJson>()? {
            match entries.iter_mut().find(|(existing, _)| *existing == key) {
                Some(entry) => entry.1 = value,
                None => entries.push((key, value)),
            }
        }
        Ok(OrderedJson::Object(entries))
    }
}

/// A string-keyed map that iterates in insertion order: Python dict
/// semantics for messages and JSON objects inside templates.
#[derive(Debug)]
pub(crate) struct OrderedMap {
    entries: Vec<(String, Value)>,
}

impl OrderedMap {
    /// Wraps `entries` as a template value.
    pub(crate) fn value(entries: Vec<(String, Value)>) -> Value {
        Value::from_object(OrderedMap { entries })
    }
}

impl Object for OrderedMap {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let key = key.as_str()?;
        self.entries.iter().find(|(name, _)| name == key).map(|(_, value)| value.clone())
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.entries.iter().map(|(key, _)| Value::from(key.as_str())).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_keep_document_order_and_python_duplicate_semantics() {
        let parsed = OrderedJson::parse(r#"{"b": 1, "a": [1.0, 2, null], "b": true}"#).unwrap();
        let OrderedJson::Object(entries) = &parsed else { panic!("{parsed:?}") };
        assert_eq!(entries.iter().map(|(key, _)| key.as_str()).collect::<Vec<_>>(), ["b", "a"]);
        assert_eq!(parsed.get("b"), Some(&OrderedJson::Bool(true)));
        let value = parsed.to_value();
        let keys: Vec<String> = value.try_iter().unwrap().map(|key| key.to_string()).collect();
        assert_eq!(keys, ["b", "a"]);
        let list = value.get_item(&Value::from("a")).unwrap();
        assert!(!list.get_item_by_index(0).unwrap().is_integer());
        assert!(list.get_item_by_index(1).unwrap().is_integer());
    }
}
