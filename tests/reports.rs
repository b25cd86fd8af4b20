//! Reports over a known scenario: per day, first response and resolution (median, p90),
//! per agent, per site, CSAT.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};

/// (site, agent, created, first response after s, resolved after s, rating)
type Row<'a> = (
    &'a str,
    Option<&'a str>,
    &'a str,
    Option<i32>,
    Option<i32>,
    Option<i32>,
);

/// Two sites, Alice on Shop A and Bob on Shop B, nine conversations on 10–11 Nov 2026 (one
/// more outside the range). Answers (site A id, site B id).
pub async fn seed_scenario(app: &TestApp) -> (String, String) {
    let a = app.create_site_with(json!({ "name": "Shop A" })).await;
    let b = app.create_site_with(json!({ "name": "Shop B" })).await;
    let alice = app.create_agent("Alice", 10).await;
    let bob = app.create_agent("Bob", 10).await;
    let (a, b) = (id(&a["id"]), id(&b["id"]));
    // (site, agent, created, first response after s, resolved after s, rating)
    let rows: Vec<Row> = vec![
        (
            &a,
            Some(&alice.id),
            "2026-11-10 10:00",
            Some(10),
            Some(100),
            Some(5),
        ),
        (
            &a,
            Some(&alice.id),
            "2026-11-10 10:00",
            Some(20),
            Some(200),
            Some(4),
        ),
        (
            &a,
            Some(&alice.id),
            "2026-11-10 10:00",
            Some(30),
            Some(300),
            None,
        ),
        (
            &a,
            Some(&alice.id),
            "2026-11-10 10:00",
            Some(40),
            None,
            None,
        ),
        (
            &a,
            Some(&alice.id),
            "2026-11-10 10:00",
            Some(50),
            None,
            None,
        ),
        (
            &b,
            Some(&bob.id),
            "2026-11-11 09:00",
            Some(60),
            Some(600),
            Some(2),
        ),
        (
            &b,
            Some(&bob.id),
            "2026-11-11 09:00",
            Some(120),
            Some(600),
            None,
        ),
        (&b, Some(&bob.id), "2026-11-11 09:00", None, Some(900), None),
        (&b, None, "2026-11-11 23:59", None, None, None),
        (
            &a,
            Some(&alice.id),
            "2026-10-01 10:00",
            Some(1),
            Some(1),
            Some(1),
        ),
    ];
    for (i, (site, agent, created, frt, rt, rating)) in rows.into_iter().enumerate() {
        let visitor = uuid::Uuid::new_v4();
        app.sql_exec(&format!(
            "INSERT INTO visitors (id, site_id, token_hash) VALUES ('{visitor}', '{site}', \
             sha256('report{i}'::bytea))"
        ))
        .await;
        let opt_secs = |s: Option<i32>| match s {
            Some(s) => format!("timestamptz '{created}+00' + interval '{s} seconds'"),
            None => "NULL".to_string(),
        };
        let status = match (agent, rt) {
            (_, Some(_)) => "resolved",
            (Some(_), None) => "open",
            (None, None) => "pending",
        };
        app.sql_exec(&format!(
            "WITH c AS (INSERT INTO conversations (id, site_id, visitor_id, assignee_id, status, created_at, \
               updated_at, first_response_at, resolved_at, rating) \
             VALUES (gen_random_uuid(), '{site}', '{visitor}', {}, '{status}', \
               '{created}+00', '{created}+00', {}, {}, {}) RETURNING id, rating) \
             INSERT INTO csat_ratings (conversation_id, rating) \
             SELECT id, rating FROM c WHERE rating IS NOT NULL",
            agent.map(|a| format!("'{a}'")).unwrap_or("NULL".into()),
            opt_secs(frt),
            opt_secs(rt),
            rating.map(|r| r.to_string()).unwrap_or("NULL".into()),
        ))
        .await;
    }
    (a, b)
}

fn close(v: &Value, expected: f64) {
    let got = v.as_f64().unwrap_or_else(|| panic!("{v} is no number"));
    assert!((got - expected).abs() < 0.01, "{got} ≠ {expected}");
}

#[actix_web::test]
async fn the_report_of_a_known_scenario() {
    let app = TestApp::spawn().await;
    let (site_a, site_b) = seed_scenario(&app).await;
    let bob = app.login("bob@kefu.test", AGENT_PASSWORD).await;

    let (s, r) = app
        .get("/api/reports?from=2026-11-10&to=2026-11-11", &bob)
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        r["conversations_per_day"],
        json!([
            { "day": "2026-11-10", "conversations": 5, "resolved": 3 },
            { "day": "2026-11-11", "conversations": 4, "resolved": 3 },
        ])
    );
    let t = &r["totals"];
    assert_eq!(t["conversations"], 9);
    assert_eq!(t["resolved"], 6);
    close(&t["first_response_median_seconds"], 40.0);
    close(&t["first_response_p90_seconds"], 84.0);
    close(&t["resolution_median_seconds"], 450.0);
    close(&t["resolution_p90_seconds"], 750.0);
    close(&t["csat_average"], 11.0 / 3.0);
    assert_eq!(t["csat_count"], 3);

    let agents = r["per_agent"].as_array().unwrap();
    let names: Vec<&str> = agents.iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Alice", "Bob", "Unassigned"]);
    let alice = &agents[0];
    assert_eq!(alice["conversations"], 5);
    close(&alice["first_response_median_seconds"], 30.0);
    close(&alice["first_response_p90_seconds"], 46.0);
    close(&alice["resolution_median_seconds"], 200.0);
    close(&alice["resolution_p90_seconds"], 280.0);
    close(&alice["csat_average"], 4.5);
    let bob_row = &agents[1];
    close(&bob_row["first_response_median_seconds"], 90.0);
    close(&bob_row["resolution_median_seconds"], 600.0);
    close(&bob_row["resolution_p90_seconds"], 840.0);
    close(&bob_row["csat_average"], 2.0);
    assert_eq!(agents[2]["agent_id"], Value::Null);
    assert_eq!(agents[2]["first_response_median_seconds"], Value::Null);

    let sites = r["per_site"].as_array().unwrap();
    assert_eq!(sites[0]["name"], "Shop A");
    assert_eq!(sites[0]["site_id"], site_a.as_str());
    assert_eq!(sites[0]["conversations"], 5);
    assert_eq!(sites[1]["name"], "Shop B");
    assert_eq!(sites[1]["conversations"], 4);
    assert_eq!(sites[1]["resolved"], 3);

    // One site only.
    let (_, r) = app
        .get(
            &format!("/api/reports?from=2026-11-10&to=2026-11-11&site={site_b}"),
            &bob,
        )
        .await;
    assert_eq!(r["totals"]["conversations"], 4);
    assert_eq!(r["per_site"].as_array().unwrap().len(), 1);

    // Bad input.
    for q in [
        "from=2026-13-01",
        "from=2026-11-12&to=2026-11-10",
        "site=x",
        "from=2020-01-01&to=2026-01-01",
    ] {
        let (s, body) = app.get(&format!("/api/reports?{q}"), &bob).await;
        assert_eq!(s, 400, "{q}: {body}");
    }
}
