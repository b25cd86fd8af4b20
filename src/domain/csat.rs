//! CSAT: the visitor's 1–5 rating of a resolved conversation, with an optional comment.
//! One rating per conversation; it may be given or changed while the conversation is
//! resolved and until a window after its resolution has passed. Free of I/O.

use chrono::{DateTime, Duration, Utc};

use crate::error::AppError;

/// Longest comment, in characters.
pub const MAX_COMMENT_CHARS: usize = 2000;

/// Checks a rating as sent: the score as stored and the trimmed comment (`None` if blank).
pub fn validate(score: i64, comment: Option<&str>) -> Result<(i16, Option<String>), AppError> {
    if !(1..=5).contains(&score) {
        return Err(AppError::bad_request("score must be 1 to 5"));
    }
    let comment = match comment.map(str::trim) {
        Some(c) if c.chars().count() > MAX_COMMENT_CHARS => {
            return Err(AppError::too_large(format!(
                "comment is longer than {MAX_COMMENT_CHARS} characters"
            )))
        }
        Some("") | None => None,
        Some(c) => Some(c.to_string()),
    };
    Ok((score as i16, comment))
}

/// Whether a conversation in `status`, resolved at `resolved_at`, takes a rating at `now`.
pub fn may_rate(
    status: &str,
    resolved_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    window: Duration,
) -> Result<(), AppError> {
    let Some(resolved_at) = resolved_at.filter(|_| status == "resolved") else {
        return Err(AppError::conflict(
            "only a resolved conversation can be rated",
        ));
    };
    if now - resolved_at > window {
        return Err(AppError::conflict(
            "this conversation was resolved too long ago to be rated",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_and_comments() {
        assert_eq!(
            validate(5, Some("  great ")).expect("ok"),
            (5, Some("great".into()))
        );
        assert_eq!(validate(1, Some("   ")).expect("ok"), (1, None));
        assert_eq!(
            validate(0, None).expect_err("low").code.as_str(),
            "bad_request"
        );
        assert_eq!(
            validate(6, None).expect_err("high").code.as_str(),
            "bad_request"
        );
        let long = "x".repeat(MAX_COMMENT_CHARS + 1);
        assert_eq!(
            validate(3, Some(&long)).expect_err("long").code.as_str(),
            "too_large"
        );
    }

    #[test]
    fn only_resolved_and_within_the_window() {
        let now = Utc::now();
        let week = Duration::days(7);
        assert!(may_rate("resolved", Some(now - Duration::days(6)), now, week).is_ok());
        assert!(may_rate("resolved", Some(now - Duration::days(8)), now, week).is_err());
        assert!(may_rate("open", Some(now), now, week).is_err());
        assert!(may_rate("resolved", None, now, week).is_err());
    }
}
