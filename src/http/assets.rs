//! The browser faces of kefu, embedded in the binary at build time (SPEC §6: no file from
//! the source tree at run time, no Node toolchain):
//!
//! - `GET /` — a demo page embedding the widget for the first site;
//! - `GET /widget.js` — the one-tag embed (launcher, panel in a shadow root);
//! - `GET /chat?site=KEY` — the same chat as a full page (links, mobile);
//! - `GET /console` — the agent console;
//! - `GET /assets/{name}` — the pages' scripts and styles.
//!
//! HTML pages carry a strict Content-Security-Policy: scripts and styles come only from
//! this origin as separate files, never inline, so text a user typed can never run.
//! Static files carry an `ETag` and are revalidated after a short `max-age`, because their
//! URLs are not versioned.

use std::sync::OnceLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};

use crate::error::AppResult;
use crate::state::AppState;

/// CSP of kefu's own pages. `connect-src 'self'` covers same-origin `ws:`/`wss:` (CSP 3).
/// `img-src blob:`: image attachments are fetched with the reader's credentials and shown
/// from blob: URLs (an image element never runs script, whatever the bytes).
const CSP_PAGE: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data: blob:; connect-src 'self'; media-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'self'";
/// The console is never framed (clickjacking of reply/resolve buttons).
const CSP_CONSOLE: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data: blob:; connect-src 'self'; media-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";
/// How long a browser may use a static file before revalidating it with its ETag.
const STATIC_MAX_AGE: &str = "public, max-age=300";

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

/// Everything under `/assets/`, plus the widget script (served at `/widget.js`).
const ASSETS: &[Asset] = &[
    Asset {
        name: "widget.js",
        content_type: JS,
        body: include_str!("../../web/widget.js"),
    },
    Asset {
        name: "console.js",
        content_type: JS,
        body: include_str!("../../web/console.js"),
    },
    Asset {
        name: "console-reports.js",
        content_type: JS,
        body: include_str!("../../web/console-reports.js"),
    },
    Asset {
        name: "console-webhooks.js",
        content_type: JS,
        body: include_str!("../../web/console-webhooks.js"),
    },
    Asset {
        name: "console.css",
        content_type: CSS,
        body: include_str!("../../web/console.css"),
    },
    Asset {
        name: "console-workflow.js",
        content_type: JS,
        body: include_str!("../../web/console-workflow.js"),
    },
    Asset {
        name: "console-workflow.css",
        content_type: CSS,
        body: include_str!("../../web/console-workflow.css"),
    },
    Asset {
        name: "console-hours.js",
        content_type: JS,
        body: include_str!("../../web/console-hours.js"),
    },
    Asset {
        name: "console-hours.css",
        content_type: CSS,
        body: include_str!("../../web/console-hours.css"),
    },
    Asset {
        name: "console-visitors.js",
        content_type: JS,
        body: include_str!("../../web/console-visitors.js"),
    },
    Asset {
        name: "console-visitors.css",
        content_type: CSS,
        body: include_str!("../../web/console-visitors.css"),
    },
    Asset {
        name: "page.css",
        content_type: CSS,
        body: include_str!("../../web/page.css"),
    },
];

const CHAT_HTML: &str = include_str!("../../web/chat.html");
const CONSOLE_HTML: &str = include_str!("../../web/console.html");
const DEMO_HTML: &str = include_str!("../../web/demo.html");
const NO_SITE_HTML: &str = include_str!("../../web/no-site.html");

/// Strong ETags of [`ASSETS`], same order, computed once.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                format!(
                    "\"{}\"",
                    hex::encode(&Sha256::digest(a.body.as_bytes())[..12])
                )
            })
            .collect()
    })
}

fn static_file(req: &HttpRequest, name: &str) -> HttpResponse {
    let Some(i) = ASSETS.iter().position(|a| a.name == name) else {
        return HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body("not found");
    };
    let (asset, etag) = (&ASSETS[i], &etags()[i]);
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut res = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    res.insert_header((header::ETAG, etag.as_str()))
        .insert_header((header::CACHE_CONTROL, STATIC_MAX_AGE))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        // The widget script is loaded by other sites' pages, including isolated ones.
        .insert_header(("Cross-Origin-Resource-Policy", "cross-origin"));
    if fresh {
        res.finish()
    } else {
        res.content_type(asset.content_type).body(asset.body)
    }
}

fn page(body: String, csp: &'static str, cache: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(HTML)
        .insert_header((header::CONTENT_SECURITY_POLICY, csp))
        .insert_header((header::CACHE_CONTROL, cache))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "strict-origin-when-cross-origin"))
        .body(body)
}

/// True when `origin` is kefu's own origin: the page is one kefu served (`/chat`, `/`), so
/// it may use any site whatever the site's `allowed_origins` (which name customers' pages).
pub fn own_page(req: &HttpRequest, origin: Option<&str>) -> bool {
    let Some(origin) = origin else {
        return false;
    };
    let info = req.connection_info();
    let own = format!("{}://{}", info.scheme(), info.host());
    origin
        .trim()
        .trim_end_matches('/')
        .eq_ignore_ascii_case(&own)
}

/// Escapes text for an HTML attribute value or element content.
fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `GET /`: the demo page, with the widget of the first site (the oldest).
pub async fn demo(state: web::Data<AppState>) -> AppResult<HttpResponse> {
    let first = state
        .db
        .run(async |conn| crate::db::sites::list(conn).await)
        .await?
        .into_iter()
        .next();
    let html = match first {
        Some(site) => DEMO_HTML
            .replace("{{SITE_NAME}}", &escape_html(&site.name))
            .replace("{{WIDGET_KEY}}", &escape_html(&site.widget_key)),
        None => NO_SITE_HTML.to_string(),
    };
    Ok(page(html, CSP_PAGE, "no-store"))
}

/// `GET /chat?site=KEY`: static HTML; the widget script reads the key from the URL.
pub async fn chat() -> HttpResponse {
    page(CHAT_HTML.to_string(), CSP_PAGE, "no-cache")
}

/// `GET /console`.
pub async fn console() -> HttpResponse {
    let mut res = page(CONSOLE_HTML.to_string(), CSP_CONSOLE, "no-cache");
    res.headers_mut()
        .insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    res
}

/// `GET /widget.js`.
pub async fn widget_js(req: HttpRequest) -> HttpResponse {
    static_file(&req, "widget.js")
}

/// `GET /assets/{name}`.
pub async fn asset(req: HttpRequest, name: web::Path<String>) -> HttpResponse {
    static_file(&req, &name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// True when the text has an ` onxxx=` attribute.
    fn has_event_handler(html: &str) -> bool {
        html.match_indices(" on").any(|(i, _)| {
            let rest = &html[i + 3..];
            let name_len = rest.chars().take_while(|c| c.is_ascii_alphabetic()).count();
            name_len > 0 && rest[name_len..].trim_start().starts_with('=')
        })
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape_html(r#"<img src=x onerror="alert(1)">&'"#),
            "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn pages_have_no_inline_script_or_style() {
        for html in [CHAT_HTML, CONSOLE_HTML, DEMO_HTML, NO_SITE_HTML] {
            let lower = html.to_ascii_lowercase();
            assert!(!lower.contains("<script>"), "inline script in a page");
            assert!(!lower.contains("<style"), "inline style in a page");
            assert!(!lower.contains(" style="), "style attribute in a page");
            assert!(
                !has_event_handler(&lower),
                "event handler attribute in a page"
            );
        }
    }

    #[test]
    fn own_origin_is_recognised() {
        let req = actix_web::test::TestRequest::default()
            .insert_header(("host", "chat.example.com"))
            .to_http_request();
        assert!(own_page(&req, Some("http://chat.example.com")));
        assert!(own_page(&req, Some("HTTP://Chat.Example.com/")));
        assert!(!own_page(&req, Some("https://shop.example.com")));
        assert!(!own_page(&req, Some("http://chat.example.com.evil.test")));
        assert!(!own_page(&req, None));
    }

    #[test]
    fn every_asset_has_an_etag() {
        assert_eq!(etags().len(), ASSETS.len());
        assert!(etags().iter().all(|e| e.len() == 26));
    }
}
