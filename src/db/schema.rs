// @generated-style: kept in step with migrations/ (diesel print-schema layout).

diesel::table! {
    sites (id) {
        id -> Uuid,
        name -> Text,
        widget_key -> Text,
        allowed_origins -> Array<Text>,
        greeting -> Text,
        offline_message -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        business_hours -> Nullable<Jsonb>,
        identity_secret -> Nullable<Text>,
    }
}

diesel::table! {
    visitors (id) {
        id -> Uuid,
        site_id -> Uuid,
        token_hash -> Bytea,
        name -> Nullable<Text>,
        email -> Nullable<Text>,
        attributes -> Jsonb,
        created_at -> Timestamptz,
        last_seen_at -> Timestamptz,
        visit_started_at -> Timestamptz,
        user_id -> Nullable<Text>,
    }
}

diesel::table! {
    visitor_tokens (token_hash) {
        token_hash -> Bytea,
        visitor_id -> Uuid,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    csat_ratings (conversation_id) {
        conversation_id -> Uuid,
        rating -> Int2,
        comment -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    agents (id) {
        id -> Uuid,
        email -> Text,
        name -> Text,
        role -> Text,
        status -> Text,
        max_open -> Int4,
        password_hash -> Text,
        disabled -> Bool,
        last_seen_at -> Nullable<Timestamptz>,
        last_assigned_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    agent_sessions (token_hash) {
        token_hash -> Bytea,
        agent_id -> Uuid,
        created_at -> Timestamptz,
        last_used_at -> Timestamptz,
    }
}

diesel::table! {
    login_failures (id) {
        id -> Int8,
        email -> Text,
        failed_at -> Timestamptz,
    }
}

diesel::table! {
    conversations (id) {
        id -> Uuid,
        site_id -> Uuid,
        visitor_id -> Uuid,
        assignee_id -> Nullable<Uuid>,
        status -> Text,
        last_seq -> Int8,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        queued_at -> Timestamptz,
        first_response_at -> Nullable<Timestamptz>,
        resolved_at -> Nullable<Timestamptz>,
        rating -> Nullable<Int2>,
        rating_comment -> Nullable<Text>,
    }
}

diesel::table! {
    messages (conversation_id, seq) {
        id -> Uuid,
        conversation_id -> Uuid,
        seq -> Int8,
        sender_type -> Text,
        sender_id -> Nullable<Uuid>,
        private -> Bool,
        body -> Text,
        client_msg_id -> Nullable<Text>,
        created_at -> Timestamptz,
        attachments -> Nullable<Jsonb>,
    }
}

// Schema 2 (migrations/2026-11-30-000001_partition_messages): `messages` is partitioned by
// month on `created_at`, its real primary key is (conversation_id, seq, created_at); the key
// below is the column set diesel addresses rows by. Global uniqueness of (conversation_id,
// seq), id and the idempotency key lives in `message_keys`, maintained by triggers.
diesel::table! {
    message_keys (conversation_id, seq) {
        conversation_id -> Uuid,
        seq -> Int8,
        id -> Uuid,
        created_at -> Timestamptz,
        sender_type -> Text,
        sender_id -> Nullable<Uuid>,
        client_msg_id -> Nullable<Text>,
    }
}

// The durable event stream (migrations/2026-12-04-000500_events). `txid` (xid8, which
// diesel has no type for) is left out: it is only ever written by its default and read in
// raw SQL (src/db/events.rs).
diesel::table! {
    events (id) {
        id -> Int8,
        kind -> Text,
        site_id -> Uuid,
        conversation_id -> Nullable<Uuid>,
        payload -> Jsonb,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    event_cursors (name) {
        name -> Text,
        after_id -> Int8,
        updated_at -> Timestamptz,
    }
}

// Issue 9 (migrations/2026-12-04-000600_workflow).
diesel::table! {
    attachments (id) {
        id -> Uuid,
        site_id -> Uuid,
        visitor_id -> Uuid,
        conversation_id -> Nullable<Uuid>,
        uploader_type -> Text,
        uploader_id -> Uuid,
        name -> Text,
        content_type -> Text,
        size -> Int8,
        storage_key -> Text,
        message_id -> Nullable<Uuid>,
        private -> Bool,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    canned_responses (id) {
        id -> Uuid,
        site_id -> Nullable<Uuid>,
        owner_id -> Nullable<Uuid>,
        shortcut -> Text,
        title -> Text,
        body -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    labels (id) {
        id -> Uuid,
        name -> Text,
        color -> Text,
        description -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    conversation_labels (conversation_id, label_id) {
        conversation_id -> Uuid,
        label_id -> Uuid,
        created_at -> Timestamptz,
    }
}

diesel::joinable!(visitors -> sites (site_id));
diesel::joinable!(agent_sessions -> agents (agent_id));
diesel::joinable!(conversations -> sites (site_id));
diesel::joinable!(conversations -> visitors (visitor_id));
diesel::joinable!(conversations -> agents (assignee_id));
diesel::joinable!(messages -> conversations (conversation_id));
diesel::joinable!(conversation_labels -> labels (label_id));
diesel::joinable!(conversation_labels -> conversations (conversation_id));
diesel::joinable!(visitor_tokens -> visitors (visitor_id));
diesel::joinable!(csat_ratings -> conversations (conversation_id));

diesel::allow_tables_to_appear_in_same_query!(
    sites,
    visitors,
    agents,
    agent_sessions,
    login_failures,
    conversations,
    messages,
    message_keys,
    attachments,
    canned_responses,
    labels,
    conversation_labels,
    events,
    event_cursors,
    visitor_tokens,
    csat_ratings,
);
