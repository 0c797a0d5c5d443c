//! Shorthands for schemas and for the values Terraform sends, shared by every resource and data
//! source.

use tf_provider::schema::{Attribute, AttributeConstraint, AttributeType, Description};
use tf_provider::value::Value;

pub type Str = Value<String>;
/// A list of strings whose elements may each be unknown while planning (`[var.x, "dev"]`).
pub type Strings = Value<Vec<Value<String>>>;

pub fn string_list() -> AttributeType {
    AttributeType::List(Box::new(AttributeType::String))
}

pub fn string_map() -> AttributeType {
    AttributeType::Map(Box::new(AttributeType::String))
}

fn attribute(attr_type: AttributeType, constraint: AttributeConstraint, doc: &str) -> Attribute {
    Attribute { attr_type, constraint, description: Description::markdown(doc), ..Default::default() }
}

pub fn required(attr_type: AttributeType, doc: &str) -> Attribute {
    attribute(attr_type, AttributeConstraint::Required, doc)
}

pub fn optional(attr_type: AttributeType, doc: &str) -> Attribute {
    attribute(attr_type, AttributeConstraint::Optional, doc)
}

/// Optional, and filled from the server when not configured: server defaults cause no diff.
pub fn optional_computed(attr_type: AttributeType, doc: &str) -> Attribute {
    attribute(attr_type, AttributeConstraint::OptionalComputed, doc)
}

pub fn computed(attr_type: AttributeType, doc: &str) -> Attribute {
    attribute(attr_type, AttributeConstraint::Computed, doc)
}

/// Terraform redacts it from plans and output (it is still in the state file).
pub fn sensitive(mut attribute: Attribute) -> Attribute {
    attribute.sensitive = true;
    attribute
}

/// The strings of a list, `Some(vec![])` for null, `None` while any part is unknown.
pub fn known_strings(value: &Strings) -> Option<Vec<String>> {
    match value {
        Value::Null => Some(vec![]),
        Value::Unknown => None,
        Value::Value(items) => items.iter().map(|item| item.as_ref_option().cloned()).collect(),
    }
}

pub fn strings(items: &[String]) -> Strings {
    Value::Value(items.iter().cloned().map(Value::Value).collect())
}

/// Null (not configured) becomes unknown: "known after apply" in the plan.
pub fn unknown_if_null<T>(value: &mut Value<T>) {
    if value.is_null() {
        *value = Value::Unknown;
    }
}
