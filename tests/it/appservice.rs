//! The appservice API under hostile or repeated input: tokens, malformed transactions, repeated
//! transaction ids, oversized bodies.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    both_backends,
    common::{Backend, Ferry, Sim, Slot, http, logged_in_user},
};

async fn put_txn(
    slot: &Slot,
    txn: &str,
    token: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (StatusCode, Value) {
    let mut request = http()
        .put(format!("{}/_matrix/app/v1/transactions/{txn}", slot.url()))
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request to ferry");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn text_event(room: &str, sender: &str, event_id: &str, body: &str) -> Value {
    json!({
        "type": "m.room.message", "room_id": room, "sender": sender, "event_id": event_id,
        "origin_server_ts": 1, "content": {"msgtype": "m.text", "body": body}
    })
}

async fn hostile_and_repeated_transactions(backend: Backend) {
    let slot = Slot::claim();
    let sim = Sim::start().await;
    sim.user("alice", "Alice").await;
    sim.user("bob", "Bob").await;
    let dm = sim.dm("alice", "bob").await;
    let _ferry = Ferry::start(&slot, backend, &sim.url()).await;
    let (user, management) = logged_in_user(&slot, &sim, "alice").await;
    let rooms = user.wait_portals(1, &management).await;
    let room = rooms[0].clone();
    let client = http();

    // Tokens: missing -> 401 M_UNAUTHORIZED, wrong -> 403 M_FORBIDDEN, on every endpoint.
    let txn =
        json!({"events": [text_event(&room, &user.user_id, "$forged1", "forged")]}).to_string();
    let (status, body) = put_txn(&slot, "t-noauth", None, txn.clone()).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("M_UNAUTHORIZED"))
    );
    let (status, body) = put_txn(&slot, "t-badauth", Some("wrong-token"), txn.clone()).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::FORBIDDEN, Some("M_FORBIDDEN"))
    );
    let (status, _) = put_txn(
        &slot,
        "t-badauth2",
        Some(&format!("{}x", slot.hs_token)),
        txn,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a token with the right prefix is still wrong"
    );
    for (method, path) in [
        (
            Method::GET,
            format!(
                "/_matrix/app/v1/users/{}",
                crate::common::enc(&slot.ghost("bob"))
            ),
        ),
        (
            Method::GET,
            "/_matrix/app/v1/rooms/%23x%3Alocalhost".to_owned(),
        ),
        (Method::POST, "/_matrix/app/v1/ping".to_owned()),
    ] {
        let response = client
            .request(method.clone(), format!("{}{path}", slot.url()))
            .json(&json!({}))
            .send()
            .await
            .expect("request");
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path} without token"
        );
        let response = client
            .request(method.clone(), format!("{}{path}", slot.url()))
            .bearer_auth("nope")
            .json(&json!({}))
            .send()
            .await
            .expect("request");
        assert_eq!(
            response.status(),
            StatusCode::FORBIDDEN,
            "{method} {path} with a wrong token"
        );
    }

    // Malformed transactions are refused and change nothing.
    for body in [
        "not json",
        "{\"events\": 5}",
        "[1,2,3]",
        "{\"events\": [",
        "",
    ] {
        let (status, reply) = put_txn(
            &slot,
            &format!("t-bad-{}", body.len()),
            Some(&slot.hs_token),
            body,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body:?} -> {reply}");
        assert_eq!(reply["errcode"], "M_BAD_JSON");
    }
    // Oversized body.
    let huge = format!(
        "{{\"events\": [], \"pad\": \"{}\"}}",
        "x".repeat(17 * 1024 * 1024)
    );
    let (status, _) = put_txn(&slot, "t-huge", Some(&slot.hs_token), huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // A bad event among good ones is skipped; the good ones are handled.
    let mixed = json!({"events": [
        {"type": 5},
        "a string",
        {"type": "m.room.message", "room_id": "not-a-room", "sender": "x", "event_id": "$x", "content": {}},
        text_event(&room, &user.user_id, "$good1", "the good one"),
    ]});
    let (status, _) = put_txn(&slot, "t-mixed", Some(&slot.hs_token), mixed.to_string()).await;
    assert_eq!(status, StatusCode::OK);
    sim.wait_message(&dm, "the good event", |s, t| {
        s == "alice" && t == "the good one"
    })
    .await;

    // A repeated transaction (a retry: same id, same events) is answered 200 and not handled
    // again. A reused id with new events (Synapse on SQLite restarts its numbering after a
    // restart) is a new transaction: its events must not be lost.
    let first = json!({"events": [text_event(&room, &user.user_id, "$dup1", "only once")]});
    for _ in 0..3 {
        let (status, _) = put_txn(&slot, "t-dup", Some(&slot.hs_token), first.to_string()).await;
        assert_eq!(status, StatusCode::OK);
    }
    let reused =
        json!({"events": [text_event(&room, &user.user_id, "$dup2", "same id, new event")]});
    let (status, _) = put_txn(&slot, "t-dup", Some(&slot.hs_token), reused.to_string()).await;
    assert_eq!(status, StatusCode::OK);
    sim.wait_message(&dm, "the event of the reused id", |_, t| {
        t == "same id, new event"
    })
    .await;
    // A marker sent after: once it has crossed, everything before it has been handled.
    user.send_text(&room, "marker").await;
    sim.wait_message(&dm, "the marker", |_, t| t == "marker")
        .await;
    let texts: Vec<String> = sim
        .messages(&dm)
        .await
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    assert_eq!(
        texts.iter().filter(|t| *t == "only once").count(),
        1,
        "{texts:?}"
    );
    assert!(!texts.iter().any(|t| t == "forged"), "{texts:?}");

    // User queries: our ghosts exist (created on demand), others do not.
    let ask = |user: String| {
        let client = client.clone();
        let url = format!(
            "{}/_matrix/app/v1/users/{}",
            slot.url(),
            crate::common::enc(&user)
        );
        let token = slot.hs_token.clone();
        async move {
            client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("query")
                .status()
        }
    };
    assert_eq!(ask(slot.ghost("bob")).await, StatusCode::OK);
    assert_eq!(ask(slot.ghost("somebody_new")).await, StatusCode::OK);
    assert_eq!(
        ask("@stranger:localhost".to_owned()).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(ask("not a user id".to_owned()).await, StatusCode::NOT_FOUND);
    let response = client
        .post(format!("{}/_matrix/app/v1/ping", slot.url()))
        .bearer_auth(&slot.hs_token)
        .json(&json!({"transaction_id": "x"}))
        .send()
        .await
        .expect("ping");
    assert_eq!(response.status(), StatusCode::OK);
}
both_backends!(hostile_and_repeated_transactions);
