//! Input limits of SPEC §2 and §5 and the visitor send rate limiter.

use std::time::{Duration, Instant};

use crate::error::AppError;

/// Longest message body, in Unicode scalar values, after trimming.
pub const MAX_BODY_CHARS: usize = 4000;
/// Longest `client_msg_id`.
pub const MAX_CLIENT_MSG_ID: usize = 64;
/// Invalid frames in a row before a WebSocket is closed with 1008.
pub const MAX_INVALID_FRAMES_IN_A_ROW: u32 = 20;
/// Refused sends on end before a WebSocket is closed with 1008.
pub const MAX_REFUSED_STREAK: Duration = Duration::from_secs(10);
/// Longest visitor name or email.
pub const MAX_PROFILE_FIELD: usize = 200;
/// Largest visitor `attributes` object in one `profile.update`, as JSON bytes.
pub const MAX_ATTRIBUTES_BYTES: usize = 4096;

/// Trims a message body and checks its length; returns the text to store.
pub fn validate_body(body: &str) -> Result<String, AppError> {
    let trimmed = body.trim();
    let chars = trimmed.chars().count();
    if chars == 0 {
        return Err(AppError::bad_request("body is empty"));
    }
    if chars > MAX_BODY_CHARS {
        return Err(AppError::too_large(format!(
            "body is {chars} characters; the limit is {MAX_BODY_CHARS}"
        )));
    }
    Ok(trimmed.to_string())
}

/// A message body that may be empty because the message carries files.
pub fn validate_body_with_attachments(body: &str, attachments: usize) -> Result<String, AppError> {
    if attachments > 0 && body.trim().is_empty() {
        return Ok(String::new());
    }
    validate_body(body)
}

pub fn validate_client_msg_id(id: &str) -> Result<(), AppError> {
    let n = id.chars().count();
    if n == 0 || n > MAX_CLIENT_MSG_ID {
        return Err(AppError::bad_request(
            "client_msg_id must be 1 to 64 characters",
        ));
    }
    Ok(())
}

/// Optional short profile text: trimmed, empty becomes `None`, bounded length.
pub fn validate_profile_field(name: &str, value: Option<&str>) -> Result<Option<String>, AppError> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) if v.chars().count() > MAX_PROFILE_FIELD => Err(AppError::bad_request(format!(
            "{name} is longer than {MAX_PROFILE_FIELD} characters"
        ))),
        Some(v) => Ok(Some(v.to_string())),
    }
}

/// Visitor attributes (page URL, referrer, language, custom ones) must be a flat JSON
/// object of bounded size ([`super::attributes`]): they are merged into the stored object
/// and shown to agents.
pub fn validate_attributes(
    value: Option<serde_json::Value>,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, AppError> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v @ serde_json::Value::Object(_)) => {
            if v.to_string().len() > MAX_ATTRIBUTES_BYTES {
                return Err(AppError::too_large(format!(
                    "attributes are larger than {MAX_ATTRIBUTES_BYTES} bytes"
                )));
            }
            super::attributes::validate_patch(v).map(Some)
        }
        Some(_) => Err(AppError::bad_request("attributes must be a JSON object")),
    }
}

/// A token bucket: `rate` tokens per second, at most `burst` stored.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        let burst = burst.max(1.0);
        TokenBucket {
            rate: rate.max(0.0),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_bounded_objects() {
        let page = serde_json::json!({"page_url": "https://shop.example/cart"});
        assert_eq!(
            validate_attributes(Some(page.clone())).expect("ok"),
            page.as_object().cloned()
        );
        assert_eq!(validate_attributes(None).expect("ok"), None);
        assert!(validate_attributes(Some(serde_json::json!(["a"]))).is_err());
        let huge = serde_json::json!({"x": "y".repeat(MAX_ATTRIBUTES_BYTES)});
        assert!(validate_attributes(Some(huge)).is_err());
    }

    #[test]
    fn body_is_trimmed_and_bounded() {
        assert_eq!(validate_body("  hi \n").expect("valid"), "hi");
        assert!(validate_body("   ").is_err());
        let max = "字".repeat(MAX_BODY_CHARS);
        assert_eq!(
            validate_body(&max).expect("4000 chars ok").chars().count(),
            4000
        );
        let over = "字".repeat(MAX_BODY_CHARS + 1);
        assert_eq!(
            validate_body(&over).expect_err("too long").code,
            crate::error::ErrorCode::TooLarge
        );
    }

    #[test]
    fn client_msg_id_bounds() {
        assert!(validate_client_msg_id("a").is_ok());
        assert!(validate_client_msg_id(&"x".repeat(64)).is_ok());
        assert!(validate_client_msg_id("").is_err());
        assert!(validate_client_msg_id(&"x".repeat(65)).is_err());
    }

    #[test]
    fn bucket_allows_burst_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(5.0, 20.0, t0);
        for _ in 0..20 {
            assert!(b.try_take(t0));
        }
        assert!(!b.try_take(t0));
        // 1 s later: 5 more.
        let t1 = t0 + Duration::from_secs(1);
        for _ in 0..5 {
            assert!(b.try_take(t1));
        }
        assert!(!b.try_take(t1));
    }
}
