//! Domain rules, free of I/O: message validation, rate limiting, assignment choice.
//! Each is a plain function or value type with unit tests beside it.

pub mod assignment;
pub mod attachments;
pub mod attributes;
pub mod business_hours;
pub mod csat;
pub mod identity;
pub mod limits;
pub mod search;
