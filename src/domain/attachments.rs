//! What kefu accepts as an attachment and how it serves it back.
//!
//! The type is decided by the file's bytes (magic numbers, via the `infer` crate), never
//! by the name or the `Content-Type` the client declared: a page renamed `cat.png` is
//! HTML to a browser that sniffs. Only the types in [`ALLOWED`] are accepted; plain text
//! is accepted when it is valid UTF-8 without control bytes and does not start like
//! markup. Images that browsers render as pixels only (PNG, JPEG, GIF, WebP) are shown
//! inline; everything else is served with `Content-Disposition: attachment`. SVG and HTML
//! are refused: both can carry script.

/// Accepted types (as sniffed) and whether they are shown inline.
const ALLOWED: &[(&str, bool)] = &[
    ("image/png", true),
    ("image/jpeg", true),
    ("image/gif", true),
    ("image/webp", true),
    ("application/pdf", false),
    ("application/zip", false),
    ("application/gzip", false),
    ("application/x-7z-compressed", false),
    ("application/vnd.rar", false),
    ("application/msword", false),
    ("application/vnd.ms-excel", false),
    ("application/vnd.ms-powerpoint", false),
    (
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        false,
    ),
    (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        false,
    ),
    (
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        false,
    ),
    ("application/vnd.oasis.opendocument.text", false),
    ("application/vnd.oasis.opendocument.spreadsheet", false),
    ("application/vnd.oasis.opendocument.presentation", false),
    ("audio/mpeg", false),
    ("audio/ogg", false),
    ("audio/x-wav", false),
    ("audio/m4a", false),
    ("video/mp4", false),
    ("video/quicktime", false),
    ("video/webm", false),
];

/// Plain text, as stored and served.
pub const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// A file's sniffed type: what kefu stores and serves it as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sniffed {
    pub content_type: &'static str,
    /// Shown inline (image preview); otherwise downloaded.
    pub inline: bool,
}

/// The type of `bytes`, or `None` when kefu does not accept it.
pub fn sniff(bytes: &[u8]) -> Option<Sniffed> {
    if bytes.is_empty() {
        return None;
    }
    if let Some(kind) = infer::get(bytes) {
        let mime = kind.mime_type();
        return ALLOWED
            .iter()
            .find(|(t, _)| *t == mime)
            .map(|(t, inline)| Sniffed {
                content_type: t,
                inline: *inline,
            });
    }
    is_plain_text(bytes).then_some(Sniffed {
        content_type: TEXT_PLAIN,
        inline: false,
    })
}

/// UTF-8 text without control bytes (tab, newlines and form feed aside) that does not
/// start like markup (`<`, after white space and a byte-order mark).
fn is_plain_text(bytes: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    if text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r' | '\x0c'))
    {
        return false;
    }
    let start = text.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    !start.starts_with('<')
}

/// Is a stored content type one kefu shows inline? (Stored types come from [`sniff`];
/// this re-checks on the way out so nothing else is ever served inline.)
pub fn inline_type(content_type: &str) -> bool {
    ALLOWED
        .iter()
        .any(|(t, inline)| *inline && *t == content_type)
}

/// Is a stored content type one kefu serves as itself? Anything else goes out as
/// `application/octet-stream`.
pub fn served_type(content_type: &str) -> &str {
    if content_type == TEXT_PLAIN || ALLOWED.iter().any(|(t, _)| *t == content_type) {
        content_type
    } else {
        "application/octet-stream"
    }
}

/// Longest file name kept, in characters.
pub const MAX_NAME_CHARS: usize = 200;

/// A file name fit to store and show: the last path component of what the client sent,
/// without control characters, at most [`MAX_NAME_CHARS`]; `file` when nothing is left.
pub fn safe_name(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_NAME_CHARS)
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').trim();
    if cleaned.is_empty() {
        "file".to_string()
    } else {
        cleaned.to_string()
    }
}

/// The name with every character outside printable ASCII (and `"` `\`) replaced: the
/// `filename=` fallback beside the UTF-8 `filename*=`.
pub fn ascii_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] =
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";

    #[test]
    fn images_by_their_bytes() {
        assert_eq!(
            sniff(PNG),
            Some(Sniffed {
                content_type: "image/png",
                inline: true
            })
        );
        assert_eq!(
            sniff(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj").map(|s| s.inline),
            Some(false)
        );
    }

    #[test]
    fn markup_and_programs_are_refused() {
        assert_eq!(
            sniff(b"<!DOCTYPE html><html><script>alert(1)</script>"),
            None
        );
        assert_eq!(sniff(b"  <html><body>hi</body></html>"), None);
        assert_eq!(
            sniff(b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>"),
            None
        );
        assert_eq!(sniff(b"<?xml version=\"1.0\"?><svg/>"), None);
        assert_eq!(sniff(b"\xef\xbb\xbf<script>alert(1)</script>"), None);
        assert_eq!(sniff(b"MZ\x90\0\x03\0\0\0\x04\0\0\0\xff\xff\0\0"), None);
        assert_eq!(sniff(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0"), None);
        assert_eq!(sniff(b"binary\0junk"), None);
        assert_eq!(sniff(b""), None);
    }

    #[test]
    fn plain_text_is_a_download() {
        let s = sniff("order 12345, 我要退款\nthanks".as_bytes()).expect("text");
        assert_eq!(s.content_type, TEXT_PLAIN);
        assert!(!s.inline);
    }

    #[test]
    fn only_pixel_images_inline() {
        assert!(inline_type("image/png"));
        assert!(!inline_type("image/svg+xml"));
        assert!(!inline_type("text/html"));
        assert!(!inline_type(TEXT_PLAIN));
        assert_eq!(served_type("text/html"), "application/octet-stream");
        assert_eq!(served_type("application/pdf"), "application/pdf");
    }

    #[test]
    fn names_are_cleaned() {
        assert_eq!(safe_name("../../etc/passwd"), "passwd");
        assert_eq!(safe_name("C:\\Users\\me\\发票.pdf"), "发票.pdf");
        assert_eq!(safe_name("a\u{0}b\nc.txt"), "abc.txt");
        assert_eq!(safe_name(".."), "file");
        assert_eq!(safe_name(""), "file");
        assert_eq!(safe_name(&"x".repeat(500)).chars().count(), MAX_NAME_CHARS);
        assert_eq!(ascii_name("发票 \"a\".pdf"), "__ _a_.pdf");
    }
}
