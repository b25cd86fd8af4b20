//! The wire contract (SPEC §3, §4): JSON objects sent to and from clients.
//!
//! One serde-tagged enum per direction for WebSocket frames, plus the resource shapes
//! (`Message`, `Conversation`, …) that the HTTP API and the frames share.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SenderType {
    Visitor,
    Agent,
    Bot,
    System,
}

impl SenderType {
    pub fn as_str(self) -> &'static str {
        match self {
            SenderType::Visitor => "visitor",
            SenderType::Agent => "agent",
            SenderType::Bot => "bot",
            SenderType::System => "system",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "visitor" => Some(SenderType::Visitor),
            "agent" => Some(SenderType::Agent),
            "bot" => Some(SenderType::Bot),
            "system" => Some(SenderType::System),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub seq: i64,
    pub sender_type: SenderType,
    pub sender_id: Option<Uuid>,
    pub private: bool,
    pub body: String,
    pub client_msg_id: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Files sent with the message (issue 9). Absent from the JSON when there are none, so
    /// clients that predate attachments see the messages they always saw.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<AttachmentRef>,
}

/// An uploaded file as messages carry it. `url` is the download route; the client adds
/// its credentials (an agent's bearer token, a visitor's `site` and `token` query).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttachmentRef {
    pub id: Uuid,
    pub name: String,
    pub content_type: String,
    pub size: i64,
    pub url: String,
}

/// A label as a conversation carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelRef {
    pub id: Uuid,
    pub name: String,
    pub color: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationStatus {
    Pending,
    Open,
    Resolved,
}

impl ConversationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationStatus::Pending => "pending",
            ConversationStatus::Open => "open",
            ConversationStatus::Resolved => "resolved",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(ConversationStatus::Pending),
            "open" => Some(ConversationStatus::Open),
            "resolved" => Some(ConversationStatus::Resolved),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignee {
    pub id: Uuid,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub id: Uuid,
    pub site_id: Uuid,
    pub visitor_id: Uuid,
    pub assignee: Option<Assignee>,
    pub status: ConversationStatus,
    pub last_seq: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub first_response_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub rating: Option<i16>,
    pub rating_comment: Option<String>,
    /// The conversation's labels, in the inbox list, the single conversation and label
    /// changes; absent (not empty) where a frame does not carry them, so a client keeps
    /// what it knew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<LabelRef>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Visitor {
    pub id: Uuid,
    pub site_id: Uuid,
    pub name: Option<String>,
    pub email: Option<String>,
    pub attributes: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    /// The host site's id of a verified user (identity verification); null for anonymous.
    #[serde(default)]
    pub user_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Agent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Agent => "agent",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Role::Admin),
            "agent" => Some(Role::Agent),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    Online,
    Away,
    Offline,
}

impl AgentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Online => "online",
            AgentStatus::Away => "away",
            AgentStatus::Offline => "offline",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "online" => Some(AgentStatus::Online),
            "away" => Some(AgentStatus::Away),
            "offline" => Some(AgentStatus::Offline),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub status: AgentStatus,
    pub max_open: i32,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Site {
    pub id: Uuid,
    pub name: String,
    pub widget_key: String,
    pub allowed_origins: Vec<String>,
    pub greeting: String,
    pub offline_message: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Weekly schedule in the site's time zone; null: always open.
    #[serde(default)]
    pub business_hours: Option<crate::domain::business_hours::BusinessHours>,
    /// True when the site has an identity secret (the secret itself is never sent).
    #[serde(default)]
    pub identity_verification: bool,
    /// The secret's last characters, so admins can tell which one is in use.
    #[serde(default)]
    pub identity_secret_hint: Option<String>,
}

impl Site {
    /// Within business hours at `now` (always, without a schedule).
    pub fn is_open(&self, now: DateTime<Utc>) -> bool {
        self.business_hours.as_ref().is_none_or(|h| h.is_open(now))
    }
}

// ---------------------------------------------------------------------------------------
// WebSocket frames: client → server (visitor and agent share one enum; agents add
// `conversation_id` and `private`, which visitors may not use).
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type")]
pub enum ClientFrame {
    #[serde(rename = "message.send")]
    MessageSend {
        client_msg_id: String,
        /// May be empty when `attachments` is not.
        #[serde(default)]
        body: String,
        #[serde(default)]
        conversation_id: Option<Uuid>,
        #[serde(default)]
        private: Option<bool>,
        /// Ids of files uploaded beforehand (`POST …/attachments`), at most 10.
        #[serde(default)]
        attachments: Vec<Uuid>,
    },
    #[serde(rename = "resume")]
    Resume {
        #[serde(default)]
        after_seq: i64,
        #[serde(default)]
        conversation_id: Option<Uuid>,
    },
    #[serde(rename = "typing")]
    Typing {
        on: bool,
        #[serde(default)]
        conversation_id: Option<Uuid>,
    },
    #[serde(rename = "read")]
    Read {
        up_to_seq: i64,
        #[serde(default)]
        conversation_id: Option<Uuid>,
    },
    #[serde(rename = "profile.update")]
    ProfileUpdate {
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        email: Option<String>,
        /// Merged into the visitor's attributes (the widget sends page URL, referrer,
        /// language and user agent).
        #[serde(default)]
        attributes: Option<serde_json::Value>,
    },
    #[serde(rename = "rating")]
    Rating {
        score: i64,
        #[serde(default)]
        comment: Option<String>,
    },
    #[serde(rename = "ping")]
    Ping {},
}

/// Why a client frame could not be decoded, and the `client_msg_id` to echo when known.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeError {
    pub message: String,
    pub client_ref: Option<String>,
}

impl ClientFrame {
    /// Decodes one text frame. Never panics, whatever the input.
    pub fn decode(text: &str) -> Result<ClientFrame, DecodeError> {
        match serde_json::from_str::<ClientFrame>(text) {
            Ok(frame) => Ok(frame),
            Err(err) => {
                // Echo the offending client_msg_id when the frame is an object that has one.
                let client_ref = serde_json::from_str::<serde_json::Value>(text)
                    .ok()
                    .and_then(|v| {
                        v.get("client_msg_id")
                            .and_then(|c| c.as_str())
                            .map(|s| s.chars().take(64).collect())
                    });
                let message = if err.is_syntax() || err.is_eof() {
                    "frame is not valid JSON".to_string()
                } else {
                    format!("invalid frame: {err}")
                };
                Err(DecodeError {
                    message,
                    client_ref,
                })
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// WebSocket frames: server → client.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type")]
pub enum ServerFrame<'a> {
    #[serde(rename = "session.welcome")]
    Welcome {
        token: &'a str,
        visitor: &'a Visitor,
        conversation: Option<&'a Conversation>,
        agents_online: bool,
        greeting: &'a str,
        /// False outside the site's business hours: chat still works, replies may wait.
        within_business_hours: bool,
        /// When the site opens next (outside business hours only).
        next_open_at: Option<DateTime<Utc>>,
    },
    #[serde(rename = "agent.welcome")]
    AgentWelcome { agent: &'a Agent },
    #[serde(rename = "message.ack")]
    MessageAck {
        client_msg_id: &'a str,
        message: &'a Message,
    },
    #[serde(rename = "message.created")]
    MessageCreated {
        conversation_id: Uuid,
        message: &'a Message,
    },
    #[serde(rename = "message.history")]
    MessageHistory {
        conversation_id: Option<Uuid>,
        messages: &'a [Message],
        more: bool,
    },
    #[serde(rename = "typing")]
    Typing {
        conversation_id: Uuid,
        on: bool,
        sender_type: SenderType,
        #[serde(skip_serializing_if = "Option::is_none")]
        sender_id: Option<Uuid>,
    },
    #[serde(rename = "message.read")]
    MessageRead {
        conversation_id: Uuid,
        up_to_seq: i64,
        sender_type: SenderType,
        #[serde(skip_serializing_if = "Option::is_none")]
        sender_id: Option<Uuid>,
    },
    #[serde(rename = "visitor.updated")]
    VisitorUpdated { visitor: &'a Visitor },
    #[serde(rename = "rating.ack")]
    RatingAck { conversation_id: Uuid, score: i64 },
    #[serde(rename = "conversation.created")]
    ConversationCreated {
        conversation_id: Uuid,
        conversation: &'a Conversation,
    },
    #[serde(rename = "conversation.updated")]
    ConversationUpdated {
        conversation_id: Uuid,
        conversation: &'a Conversation,
    },
    #[serde(rename = "presence.update")]
    Presence { agent_id: Uuid, status: AgentStatus },
    #[serde(rename = "visitor.online")]
    VisitorOnline {
        visitors: &'a [crate::presence::OnlineVisitor],
    },
    #[serde(rename = "visitor.offline")]
    VisitorOffline { visitor_ids: &'a [Uuid] },
    #[serde(rename = "pong")]
    Pong {},
    #[serde(rename = "error")]
    Error {
        code: crate::error::ErrorCode,
        message: &'a str,
        #[serde(rename = "ref")]
        client_ref: Option<&'a str>,
    },
}

impl ServerFrame<'_> {
    /// Serialises the frame. Serialising these plain structs cannot fail; should it ever,
    /// an `internal` error frame is sent instead of panicking.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            log::error!("frame serialisation failed: {e}");
            r#"{"type":"error","code":"internal","message":"internal error","ref":null}"#
                .to_string()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_client_frame() {
        let f = ClientFrame::decode(r#"{"type":"message.send","client_msg_id":"a1","body":"hi"}"#);
        assert!(matches!(f, Ok(ClientFrame::MessageSend { .. })));
        let id = Uuid::new_v4();
        let f = ClientFrame::decode(&format!(
            r#"{{"type":"message.send","client_msg_id":"a2","attachments":["{id}"]}}"#
        ));
        assert!(
            matches!(&f, Ok(ClientFrame::MessageSend { body, attachments, .. }) if body.is_empty() && attachments == &[id]),
            "{f:?}"
        );
        assert_eq!(
            ClientFrame::decode(r#"{"type":"resume","after_seq":3}"#),
            Ok(ClientFrame::Resume {
                after_seq: 3,
                conversation_id: None
            })
        );
        assert!(matches!(
            ClientFrame::decode(r#"{"type":"ping"}"#),
            Ok(ClientFrame::Ping {})
        ));
        assert!(matches!(
            ClientFrame::decode(r#"{"type":"rating","score":5,"comment":"good"}"#),
            Ok(ClientFrame::Rating { score: 5, .. })
        ));
    }

    #[test]
    fn bad_frames_are_errors_with_ref() {
        let e = ClientFrame::decode(r#"{"type":"message.send","client_msg_id":"x9","body":5}"#)
            .expect_err("wrong type must fail");
        assert_eq!(e.client_ref.as_deref(), Some("x9"));
        assert!(ClientFrame::decode("not json").is_err());
        assert!(ClientFrame::decode(r#"{"type":"nope"}"#).is_err());
        assert!(ClientFrame::decode("[]").is_err());
        assert!(ClientFrame::decode(r#"{"type":"typing","on":"yes"}"#).is_err());
    }

    #[test]
    fn messages_without_files_look_as_before() {
        let m = Message {
            id: Uuid::nil(),
            conversation_id: Uuid::nil(),
            seq: 1,
            sender_type: SenderType::Visitor,
            sender_id: None,
            private: false,
            body: "hi".into(),
            client_msg_id: None,
            created_at: DateTime::<Utc>::MIN_UTC,
            attachments: Vec::new(),
        };
        let v = serde_json::to_value(&m).expect("json");
        assert!(v.get("attachments").is_none(), "{v}");
        let back: Message = serde_json::from_value(v).expect("old shape parses");
        assert_eq!(back, m);
    }

    #[test]
    fn error_frame_shape() {
        let text = ServerFrame::Error {
            code: crate::error::ErrorCode::RateLimited,
            message: "slow down",
            client_ref: Some("c1"),
        }
        .encode();
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["type"], "error");
        assert_eq!(v["code"], "rate_limited");
        assert_eq!(v["ref"], "c1");
    }
}
