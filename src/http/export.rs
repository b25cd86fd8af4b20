//! `GET /api/export/conversations` and `GET /api/export/messages` (admin): CSV or JSON,
//! filtered by site, date range and status, streamed as a chunked response one keyset page
//! at a time — an export of any size never sits in memory whole.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::AuthAgent;
use crate::db::export::{self, ConversationKey, ConversationLine, ExportFilter, MessageLine};
use crate::error::{AppError, AppResult};
use crate::protocol::ConversationStatus;
use crate::state::AppState;

/// Rows read per query.
const PAGE: i64 = 500;
/// Conversations whose messages are read together.
const CONVERSATION_PAGE: i64 = 200;

#[derive(Deserialize)]
pub struct ExportQuery {
    format: Option<String>,
    site: Option<String>,
    status: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Csv,
    Json,
}

/// `2026-12-01` (UTC midnight) or an RFC 3339 time. A bare `to` date includes that day.
fn parse_time(name: &str, raw: &str, end_of_day: bool) -> AppResult<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    let day = NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|_| {
        AppError::bad_request(format!(
            "{name} must be a date (2026-12-01) or an RFC 3339 time"
        ))
    })?;
    let day = if end_of_day {
        day.succ_opt()
    } else {
        Some(day)
    };
    day.and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| AppError::bad_request(format!("{name} is out of range")))
}

fn parse(q: &ExportQuery) -> AppResult<(Format, ExportFilter)> {
    let format = match q.format.as_deref() {
        None | Some("") | Some("csv") => Format::Csv,
        Some("json") => Format::Json,
        Some(_) => return Err(AppError::bad_request("format must be csv or json")),
    };
    let site_id = match q.site.as_deref() {
        None | Some("") => None,
        Some(s) => {
            Some(Uuid::parse_str(s).map_err(|_| AppError::bad_request("site must be a site id"))?)
        }
    };
    let status = match q.status.as_deref() {
        None | Some("") | Some("all") => None,
        Some(s) => Some(
            ConversationStatus::parse(s)
                .ok_or_else(|| AppError::bad_request("status must be pending, open or resolved"))?
                .as_str()
                .to_string(),
        ),
    };
    let from = q
        .from
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| parse_time("from", s, false))
        .transpose()?;
    let to =
        q.to.as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| parse_time("to", s, true))
            .transpose()?;
    if let (Some(f), Some(t)) = (from, to) {
        if f >= t {
            return Err(AppError::bad_request("from must be before to"));
        }
    }
    Ok((
        format,
        ExportFilter {
            site_id,
            status,
            from,
            to,
        },
    ))
}

/// One CSV field: quoted when needed; a leading `= + - @` is defused (spreadsheets would
/// run it as a formula).
fn csv_field(out: &mut String, v: &str) {
    let defuse = v.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote = defuse || v.contains([',', '"', '\n', '\r']);
    if quote {
        out.push('"');
        if defuse {
            out.push('\'');
        }
        out.push_str(&v.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(v);
    }
}

fn csv_line(out: &mut String, fields: &[String]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(out, f);
    }
    out.push_str("\r\n");
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(|x| x.to_string()).unwrap_or_default()
}

fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

trait Line: serde::Serialize {
    const HEADER: &'static [&'static str];
    fn fields(&self) -> Vec<String>;
}

impl Line for ConversationLine {
    const HEADER: &'static [&'static str] = &[
        "id",
        "site_id",
        "site_name",
        "visitor_id",
        "visitor_name",
        "visitor_email",
        "assignee_id",
        "assignee_name",
        "status",
        "messages",
        "created_at",
        "updated_at",
        "first_response_at",
        "resolved_at",
        "rating",
    ];
    fn fields(&self) -> Vec<String> {
        vec![
            self.id.to_string(),
            self.site_id.to_string(),
            self.site_name.clone(),
            self.visitor_id.to_string(),
            opt(&self.visitor_name),
            opt(&self.visitor_email),
            opt(&self.assignee_id),
            opt(&self.assignee_name),
            self.status.clone(),
            self.messages.to_string(),
            time(&self.created_at),
            time(&self.updated_at),
            opt(&self.first_response_at.as_ref().map(time)),
            opt(&self.resolved_at.as_ref().map(time)),
            opt(&self.rating),
        ]
    }
}

impl Line for MessageLine {
    const HEADER: &'static [&'static str] = &[
        "id",
        "conversation_id",
        "seq",
        "sender_type",
        "sender_id",
        "private",
        "body",
        "created_at",
    ];
    fn fields(&self) -> Vec<String> {
        vec![
            self.id.to_string(),
            self.conversation_id.to_string(),
            self.seq.to_string(),
            self.sender_type.clone(),
            opt(&self.sender_id),
            self.private.to_string(),
            self.body.clone(),
            time(&self.created_at),
        ]
    }
}

/// Renders a page of rows; `first`/`last` add the CSV header or the JSON brackets.
fn render<L: Line>(format: Format, rows: &[L], first: bool, last: bool, any_before: bool) -> Bytes {
    let mut out = String::with_capacity(rows.len() * 200 + 64);
    match format {
        Format::Csv => {
            if first {
                let header: Vec<String> = L::HEADER.iter().map(|h| h.to_string()).collect();
                csv_line(&mut out, &header);
            }
            for r in rows {
                csv_line(&mut out, &r.fields());
            }
        }
        Format::Json => {
            if first {
                out.push('[');
            }
            for (i, r) in rows.iter().enumerate() {
                if any_before || i > 0 {
                    out.push(',');
                }
                out.push('\n');
                out.push_str(&serde_json::to_string(r).unwrap_or_else(|_| "null".to_string()));
            }
            if last {
                out.push_str("\n]\n");
            }
        }
    }
    Bytes::from(out)
}

fn streaming(
    format: Format,
    name: &str,
    body: impl futures_util::Stream<Item = Result<Bytes, AppError>> + 'static,
) -> HttpResponse {
    let (content_type, ext) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
        Format::Json => ("application/json", "json"),
    };
    let file = format!("kefu-{name}-{}.{ext}", Utc::now().format("%Y%m%d-%H%M%S"));
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{file}\""),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .streaming(body)
}

struct ConversationsCursor {
    state: AppState,
    filter: ExportFilter,
    format: Format,
    after: Option<ConversationKey>,
    sent: u64,
    done: bool,
}

/// `GET /api/export/conversations?format=csv|json&site=&from=&to=&status=`
pub async fn conversations(
    state: web::Data<AppState>,
    auth: AuthAgent,
    q: web::Query<ExportQuery>,
) -> AppResult<HttpResponse> {
    auth.require_admin()?;
    let (format, filter) = parse(&q)?;
    let start = ConversationsCursor {
        state: state.get_ref().clone(),
        filter,
        format,
        after: None,
        sent: 0,
        done: false,
    };
    let body = futures_util::stream::unfold(start, |mut c| async move {
        if c.done {
            return None;
        }
        let (filter, after) = (c.filter.clone(), c.after);
        let page = c
            .state
            .db
            .run(async |conn| export::conversations_page(conn, &filter, after, PAGE).await)
            .await;
        match page {
            Err(e) => {
                // The status line is long gone: cutting the body short is the signal.
                log::warn!("export of conversations failed midway: {}", e.message);
                c.done = true;
                Some((Err(e), c))
            }
            Ok(rows) => {
                let last = (rows.len() as i64) < PAGE;
                let chunk = render(
                    c.format,
                    &rows,
                    c.sent == 0 && c.after.is_none(),
                    last,
                    c.sent > 0,
                );
                c.sent += rows.len() as u64;
                c.after = rows.last().map(|r| (r.created_at, r.id)).or(c.after);
                c.done = last;
                Some((Ok(chunk), c))
            }
        }
    });
    Ok(streaming(format, "conversations", body))
}

struct MessagesCursor {
    state: AppState,
    filter: ExportFilter,
    format: Format,
    /// Conversations whose messages are being read, and the position among them.
    batch: Vec<Uuid>,
    within: (Uuid, i64),
    after: Option<ConversationKey>,
    conversations_done: bool,
    started: bool,
    sent: u64,
    done: bool,
}

impl MessagesCursor {
    /// The next non-empty page of messages, or `None` at the end.
    async fn next_page(&mut self) -> AppResult<Option<Vec<MessageLine>>> {
        loop {
            if self.batch.is_empty() {
                if self.conversations_done {
                    return Ok(None);
                }
                let (filter, after) = (self.filter.clone(), self.after);
                let keys = self
                    .state
                    .db
                    .run(async |conn| {
                        export::message_conversations_page(conn, &filter, after, CONVERSATION_PAGE)
                            .await
                    })
                    .await?;
                self.conversations_done = (keys.len() as i64) < CONVERSATION_PAGE;
                self.after = keys.last().copied().or(self.after);
                self.batch = keys.into_iter().map(|(_, id)| id).collect();
                self.within = (Uuid::nil(), 0);
                if self.batch.is_empty() {
                    return Ok(None);
                }
            }
            let (filter, batch, within) = (self.filter.clone(), self.batch.clone(), self.within);
            let rows = self
                .state
                .db
                .run(async |conn| export::messages_page(conn, &filter, &batch, within, PAGE).await)
                .await?;
            if (rows.len() as i64) < PAGE {
                self.batch.clear();
            } else if let Some(last) = rows.last() {
                self.within = (last.conversation_id, last.seq);
            }
            if !rows.is_empty() {
                return Ok(Some(rows));
            }
        }
    }
}

/// `GET /api/export/messages?format=csv|json&site=&from=&to=&status=`: the messages (notes
/// included) of the site's conversations with that status, sent within the dates.
pub async fn messages(
    state: web::Data<AppState>,
    auth: AuthAgent,
    q: web::Query<ExportQuery>,
) -> AppResult<HttpResponse> {
    auth.require_admin()?;
    let (format, filter) = parse(&q)?;
    let start = MessagesCursor {
        state: state.get_ref().clone(),
        filter,
        format,
        batch: Vec::new(),
        within: (Uuid::nil(), 0),
        after: None,
        conversations_done: false,
        started: false,
        sent: 0,
        done: false,
    };
    let body = futures_util::stream::unfold(start, |mut c| async move {
        if c.done {
            return None;
        }
        let first = !c.started;
        c.started = true;
        match c.next_page().await {
            Err(e) => {
                log::warn!("export of messages failed midway: {}", e.message);
                c.done = true;
                Some((Err(e), c))
            }
            Ok(None) => {
                c.done = true;
                let empty: [MessageLine; 0] = [];
                Some((Ok(render(c.format, &empty, first, true, c.sent > 0)), c))
            }
            Ok(Some(rows)) => {
                let chunk = render(c.format, &rows, first, false, c.sent > 0);
                c.sent += rows.len() as u64;
                Some((Ok(chunk), c))
            }
        }
    });
    Ok(streaming(format, "messages", body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        let mut s = String::new();
        csv_line(
            &mut s,
            &[
                "plain".into(),
                "a,b".into(),
                "say \"hi\"".into(),
                "two\nlines".into(),
                "=1+1".into(),
                "你好".into(),
            ],
        );
        assert_eq!(
            s,
            "plain,\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\",\"'=1+1\",你好\r\n"
        );
    }

    #[test]
    fn dates() {
        let from = parse_time("from", "2026-12-01", false).expect("date");
        assert_eq!(from.to_rfc3339(), "2026-12-01T00:00:00+00:00");
        let to = parse_time("to", "2026-12-01", true).expect("date");
        assert_eq!(to.to_rfc3339(), "2026-12-02T00:00:00+00:00");
        assert!(parse_time("from", "yesterday", false).is_err());
        assert!(parse_time("from", "2026-12-01T10:00:00+08:00", false).is_ok());
    }
}
