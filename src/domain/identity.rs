//! Identity verification: the host page proves that its logged-in user is `user_id` by
//! passing `user_hash = hex(HMAC-SHA256(identity_secret, user_id))`, computed on its server
//! with the site's secret. Free of I/O.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::AppError;

type HmacSha256 = Hmac<Sha256>;

/// Longest `user_id` accepted (the host's own id: a number, a uuid, an email…).
pub const MAX_USER_ID: usize = 255;

/// A fresh identity secret: 256 random bits, hex, with a recognisable prefix.
pub fn new_secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("ks_{}", hex::encode(bytes))
}

/// What an admin may see of a secret after it was generated: its last four characters.
pub fn hint(secret: &str) -> String {
    let tail: String = secret
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("…{tail}")
}

/// `hex(HMAC-SHA256(secret, user_id))`, what the host's server computes.
pub fn sign(secret: &str, user_id: &str) -> String {
    // HMAC takes keys of any length: new_from_slice cannot fail for it.
    match HmacSha256::new_from_slice(secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(user_id.as_bytes());
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// Checks `user_hash` (hex, either case) in constant time.
pub fn verify(secret: &str, user_id: &str, user_hash: &str) -> bool {
    let Ok(given) = hex::decode(user_hash.trim()) else {
        return false;
    };
    let Ok(mut mac) = HmacSha256::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(user_id.as_bytes());
    // verify_slice compares in constant time (subtle).
    mac.verify_slice(&given).is_ok()
}

/// A `user_id` as presented: 1 to [`MAX_USER_ID`] characters, no control characters.
pub fn validate_user_id(user_id: &str) -> Result<&str, AppError> {
    let n = user_id.chars().count();
    if n == 0 || n > MAX_USER_ID || user_id.chars().any(char::is_control) {
        return Err(AppError::bad_request(format!(
            "user_id must be 1 to {MAX_USER_ID} printable characters"
        )));
    }
    Ok(user_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_documented_hmac() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            sign("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(verify(
            "Jefe",
            "what do ya want for nothing?",
            "5BDCC146BF60754E6A042426089575C75A003F089D2739839DEC58B964EC3843"
        ));
    }

    #[test]
    fn forged_or_malformed_hashes_fail() {
        let s = new_secret();
        let good = sign(&s, "user-42");
        assert!(verify(&s, "user-42", &good));
        assert!(!verify(&s, "user-43", &good));
        assert!(!verify("another secret", "user-42", &good));
        assert!(!verify(&s, "user-42", &good[..62]));
        assert!(!verify(&s, "user-42", "not hex"));
        assert!(!verify(&s, "user-42", ""));
    }

    #[test]
    fn hints_and_ids() {
        assert_eq!(hint("ks_abcdef"), "…cdef");
        assert!(validate_user_id("").is_err());
        assert!(validate_user_id("a\nb").is_err());
        assert!(validate_user_id(&"x".repeat(256)).is_err());
        assert!(validate_user_id("客户-7").is_ok());
    }
}
