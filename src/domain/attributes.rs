//! Custom attributes on visitors (issue 9): a flat JSON object of strings, numbers and
//! booleans that agents see in the visitor's profile. Set by the widget (`profile.update`,
//! `POST /api/visitor/attributes`, the JS API's `kefu.setAttributes`) and by agents
//! (`PATCH /api/visitors/{id}/attributes`). A patch is merged into what is stored: its
//! keys replace their old values, `null` removes a key, other keys stay.

use serde_json::{Map, Value};

use crate::error::{AppError, AppResult};

/// Most keys a visitor's attributes may hold after a merge.
pub const MAX_KEYS: usize = 50;
/// Longest key, in characters.
pub const MAX_KEY_CHARS: usize = 64;
/// Longest string value, in characters.
pub const MAX_VALUE_CHARS: usize = 1000;

/// Checks a patch's shape: an object whose keys are 1–64 letters, digits, `_`, `-`, `.`
/// or spaces, and whose values are strings (≤ 1000 characters), numbers, booleans or
/// `null` (remove).
pub fn validate_patch(value: Value) -> AppResult<Map<String, Value>> {
    let Value::Object(map) = value else {
        return Err(AppError::bad_request("attributes must be a JSON object"));
    };
    if map.len() > MAX_KEYS {
        return Err(AppError::bad_request(format!(
            "at most {MAX_KEYS} attributes"
        )));
    }
    for (key, v) in &map {
        let n = key.chars().count();
        if n == 0 || n > MAX_KEY_CHARS {
            return Err(AppError::bad_request(format!(
                "attribute names are 1 to {MAX_KEY_CHARS} characters"
            )));
        }
        if !key
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ' '))
        {
            return Err(AppError::bad_request(format!(
                "attribute name {key:?} may hold only letters, digits, '_', '-', '.' and spaces"
            )));
        }
        match v {
            Value::String(s) if s.chars().count() > MAX_VALUE_CHARS => {
                return Err(AppError::bad_request(format!(
                    "attribute {key:?} is longer than {MAX_VALUE_CHARS} characters"
                )))
            }
            Value::String(_) | Value::Number(_) | Value::Bool(_) | Value::Null => {}
            Value::Array(_) | Value::Object(_) => {
                return Err(AppError::bad_request(format!(
                    "attribute {key:?} must be a string, number or boolean"
                )))
            }
        }
    }
    Ok(map)
}

/// `current` with `patch` applied; refuses a result with more than [`MAX_KEYS`] keys.
pub fn merge(current: &Value, patch: &Map<String, Value>) -> AppResult<Value> {
    let mut out = match current {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    for (k, v) in patch {
        if v.is_null() {
            out.remove(k);
        } else {
            out.insert(k.clone(), v.clone());
        }
    }
    if out.len() > MAX_KEYS {
        return Err(AppError::bad_request(format!(
            "a visitor holds at most {MAX_KEYS} attributes"
        )));
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scalars_only() {
        assert!(
            validate_patch(json!({"plan": "pro", "seats": 5, "vip": true, "old": null})).is_ok()
        );
        assert!(validate_patch(json!({"nested": {"a": 1}})).is_err());
        assert!(validate_patch(json!({"list": [1, 2]})).is_err());
        assert!(validate_patch(json!([1])).is_err());
        assert!(validate_patch(json!("x")).is_err());
    }

    #[test]
    fn keys_and_values_are_bounded() {
        assert!(validate_patch(json!({ "": 1 })).is_err());
        assert!(validate_patch(json!({ "k".repeat(65): 1 })).is_err());
        assert!(validate_patch(json!({ "a<b": 1 })).is_err());
        assert!(validate_patch(json!({ "套餐": "专业版" })).is_ok());
        assert!(validate_patch(json!({ "v": "x".repeat(1001) })).is_err());
        assert!(validate_patch(json!({ "v": "x".repeat(1000) })).is_ok());
    }

    #[test]
    fn merge_replaces_removes_and_counts() {
        let cur = json!({"plan": "free", "page_url": "https://a"});
        let patch =
            validate_patch(json!({"plan": "pro", "page_url": null, "seats": 3})).expect("valid");
        assert_eq!(
            merge(&cur, &patch).expect("merge"),
            json!({"plan": "pro", "seats": 3})
        );
        let full: Map<String, Value> = (0..MAX_KEYS).map(|i| (format!("k{i}"), json!(i))).collect();
        let full = Value::Object(full);
        let one_more = validate_patch(json!({"extra": 1})).expect("valid");
        assert!(merge(&full, &one_more).is_err());
        let replace = validate_patch(json!({"k0": 9})).expect("valid");
        assert!(merge(&full, &replace).is_ok());
    }
}
