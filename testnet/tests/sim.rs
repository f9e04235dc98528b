//! The sim server end to end, over real HTTP and WebSocket connections, as ferry's client and
//! the control API see it (SIM_PROTOCOL.md).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use testnet::sim::SimServer;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(200);

/// A running server and an HTTP client for it.
struct Net {
    server: SimServer,
    http: reqwest::Client,
}

impl Net {
    async fn start() -> Self {
        let server = SimServer::start("127.0.0.1:0")
            .await
            .expect("server starts");
        Self {
            server,
            http: reqwest::Client::new(),
        }
    }

    /// Any call; answers the status and the JSON body (`Null` when there is none).
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.server.url()));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        answer(request).await
    }

    /// A call with a raw body.
    async fn call_raw(
        &self,
        path: &str,
        token: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .post(format!("{}{path}", self.server.url()))
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        answer(request).await
    }

    /// A control call that must succeed.
    async fn control(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, body) = self.call(method, path, None, body).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        body
    }

    async fn user(&self, id: &str) {
        let name = format!("User {id}");
        self.control(
            Method::POST,
            "/control/users",
            Some(json!({"id": id, "name": name})),
        )
        .await;
    }

    async fn dm(&self, a: &str, b: &str) -> Value {
        self.control(Method::POST, "/control/dms", Some(json!({"a": a, "b": b})))
            .await
    }

    async fn group(&self, name: &str, members: &[&str]) -> Value {
        let body = json!({"name": name, "members": members});
        self.control(Method::POST, "/control/groups", Some(body))
            .await
    }

    async fn post(&self, chat_id: &str, sender: &str, text: &str) -> Value {
        let path = format!("/control/chats/{chat_id}/messages");
        self.control(
            Method::POST,
            &path,
            Some(json!({"sender": sender, "text": text})),
        )
        .await
    }

    async fn network(&self, up: bool) {
        self.control(Method::POST, "/control/network", Some(json!({"up": up})))
            .await;
    }

    /// Logs `id` in through the whole flow and answers the token.
    async fn login(&self, id: &str) -> String {
        let (status, started) = self
            .call(
                Method::POST,
                "/v1/login/start",
                None,
                Some(json!({"username": id})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{started}");
        let code = self
            .control(Method::GET, &format!("/control/login-code/{id}"), None)
            .await;
        let body = json!({"flow_id": started["flow_id"], "code": code["code"]});
        let (status, finished) = self
            .call(Method::POST, "/v1/login/finish", None, Some(body))
            .await;
        assert_eq!(status, StatusCode::OK, "{finished}");
        finished["token"].as_str().expect("token").to_owned()
    }

    fn events_url(&self, since: u64) -> String {
        format!(
            "{}/v1/events?since={since}",
            self.server.url().replacen("http", "ws", 1)
        )
    }

    /// Opens the event socket with the bearer header.
    async fn connect(&self, token: &str, since: u64) -> Socket {
        match self.try_connect(&self.events_url(since), Some(token)).await {
            Ok(socket) => socket,
            Err(status) => panic!("event socket refused with {status}"),
        }
    }

    async fn try_connect(&self, url: &str, token: Option<&str>) -> Result<Socket, u16> {
        let mut request = url.into_client_request().expect("request");
        if let Some(token) = token {
            let value = HeaderValue::from_str(&format!("Bearer {token}")).expect("header");
            request.headers_mut().insert("authorization", value);
        }
        match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request)).await {
            Ok(Ok((socket, _))) => Ok(socket),
            Ok(Err(tungstenite::Error::Http(response))) => Err(response.status().as_u16()),
            Ok(Err(error)) => panic!("cannot connect: {error}"),
            Err(_) => panic!("connect timed out"),
        }
    }
}

async fn answer(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("request sent");
    let status = response.status();
    let text = response.text().await.expect("body read");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
    };
    (status, body)
}

/// Asserts an error answer of the protocol's shape.
fn assert_error(answer: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["error"], code, "{}", answer.1);
    assert!(answer.1["message"].is_string(), "{}", answer.1);
}

/// The next event frame, skipping pings and pongs.
async fn next_event(socket: &mut Socket) -> Value {
    loop {
        let frame = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("an event in time")
            .expect("socket open")
            .expect("frame read");
        match frame {
            WsMessage::Text(text) => return serde_json::from_str(&text).expect("JSON event"),
            WsMessage::Ping(_) | WsMessage::Pong(_) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// The next `count` events.
async fn events(socket: &mut Socket, count: usize) -> Vec<Value> {
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        out.push(next_event(socket).await);
    }
    out
}

/// Asserts nothing arrives for a moment.
async fn assert_quiet(socket: &mut Socket) {
    if let Ok(frame) = tokio::time::timeout(QUIET, socket.next()).await {
        panic!("expected no frame, got {frame:?}");
    }
}

/// Waits for the server's close frame and the end of the socket.
async fn expect_close(socket: &mut Socket) -> CloseFrame {
    let frame = tokio::time::timeout(WAIT, socket.next())
        .await
        .expect("close in time")
        .expect("socket open")
        .expect("frame read");
    let WsMessage::Close(Some(close)) = frame else {
        panic!("expected a close frame, got {frame:?}")
    };
    // The socket ends after the close handshake.
    let rest = tokio::time::timeout(WAIT, socket.next())
        .await
        .expect("socket ends in time");
    assert!(matches!(rest, None | Some(Err(_))), "{rest:?}");
    close
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|event| event["seq"].as_u64().expect("seq"))
        .collect()
}

#[tokio::test]
async fn login_with_the_code_from_the_control_api() {
    let net = Net::start().await;
    net.user("bob").await;

    let unknown = net
        .call(
            Method::POST,
            "/v1/login/start",
            None,
            Some(json!({"username": "nobody"})),
        )
        .await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "not_found");

    let (status, started) = net
        .call(
            Method::POST,
            "/v1/login/start",
            None,
            Some(json!({"username": "bob"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(started["code_length"], 6);
    let flow_id = started["flow_id"].as_str().expect("flow_id");
    let code = net
        .control(Method::GET, "/control/login-code/bob", None)
        .await;
    let code = code["code"].as_str().expect("code").to_owned();
    assert_eq!(code.len(), 6);
    assert!(code.bytes().all(|b| b.is_ascii_digit()), "{code}");

    let wrong = if code == "000000" { "000001" } else { "000000" };
    let bad = net
        .call(
            Method::POST,
            "/v1/login/finish",
            None,
            Some(json!({"flow_id": flow_id, "code": wrong})),
        )
        .await;
    assert_error(&bad, StatusCode::UNAUTHORIZED, "bad_code");

    // The flow stayed open: the right code still works.
    let body = json!({"flow_id": flow_id, "code": code});
    let (status, finished) = net
        .call(Method::POST, "/v1/login/finish", None, Some(body.clone()))
        .await;
    assert_eq!(status, StatusCode::OK, "{finished}");
    assert_eq!(finished["user"], json!({"id": "bob", "name": "User bob"}));
    let token = finished["token"].as_str().expect("token");
    assert_eq!(token.len(), 32);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{token}");

    // Now the flow is closed.
    let again = net
        .call(Method::POST, "/v1/login/finish", None, Some(body))
        .await;
    assert_error(&again, StatusCode::NOT_FOUND, "not_found");
    let no_code = net
        .call(Method::GET, "/control/login-code/bob", None, None)
        .await;
    assert_error(&no_code, StatusCode::NOT_FOUND, "not_found");

    let (status, me) = net.call(Method::GET, "/v1/me", Some(token), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me, json!({"id": "bob", "name": "User bob"}));

    let (status, out) = net
        .call(Method::POST, "/v1/logout", Some(token), None)
        .await;
    assert_eq!((status, out), (StatusCode::OK, json!({})));
    let after = net.call(Method::GET, "/v1/me", Some(token), None).await;
    assert_error(&after, StatusCode::UNAUTHORIZED, "unauthorized");
    net.server.shutdown().await;
}

#[tokio::test]
async fn the_newest_login_flow_gives_the_code() {
    let net = Net::start().await;
    net.user("bob").await;
    let start = || {
        net.call(
            Method::POST,
            "/v1/login/start",
            None,
            Some(json!({"username": "bob"})),
        )
    };
    let (_, first) = start().await;
    let (_, second) = start().await;
    let code = net
        .control(Method::GET, "/control/login-code/bob", None)
        .await;
    let body = json!({"flow_id": second["flow_id"], "code": code["code"]});
    let (status, _) = net
        .call(Method::POST, "/v1/login/finish", None, Some(body))
        .await;
    assert_eq!(status, StatusCode::OK);
    // The first flow is still open on its own.
    let code = net
        .control(Method::GET, "/control/login-code/bob", None)
        .await;
    let body = json!({"flow_id": first["flow_id"], "code": code["code"]});
    let (status, _) = net
        .call(Method::POST, "/v1/login/finish", None, Some(body))
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_wrong_or_missing_token_is_401() {
    let net = Net::start().await;
    net.user("bob").await;
    let token = net.login("bob").await;

    for path in ["/v1/me", "/v1/chats", "/v1/chats/c1", "/v1/users/bob"] {
        let missing = net.call(Method::GET, path, None, None).await;
        assert_error(&missing, StatusCode::UNAUTHORIZED, "unauthorized");
        let wrong = net
            .call(Method::GET, path, Some("0123456789abcdef"), None)
            .await;
        assert_error(&wrong, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let send = json!({"txn_id": "t", "text": "x"});
    let wrong = net
        .call(
            Method::POST,
            "/v1/chats/c1/messages",
            Some("nope"),
            Some(send),
        )
        .await;
    assert_error(&wrong, StatusCode::UNAUTHORIZED, "unauthorized");
    let wrong = net
        .call(Method::POST, "/v1/logout", Some("nope"), None)
        .await;
    assert_error(&wrong, StatusCode::UNAUTHORIZED, "unauthorized");

    assert_eq!(
        net.try_connect(&net.events_url(0), None).await.err(),
        Some(401)
    );
    assert_eq!(
        net.try_connect(&net.events_url(0), Some("nope"))
            .await
            .err(),
        Some(401)
    );
    // The `?token=` fallback is checked the same way, and works with a good token.
    let url = format!("{}&token=nope", net.events_url(0));
    assert_eq!(net.try_connect(&url, None).await.err(), Some(401));
    let url = format!("{}&token={token}", net.events_url(0));
    assert!(net.try_connect(&url, None).await.is_ok());
}

#[tokio::test]
async fn chats_are_listed_for_their_members_only() {
    let net = Net::start().await;
    for id in ["alice", "bob", "carol"] {
        net.user(id).await;
    }
    let dm = net.dm("alice", "bob").await;
    assert_eq!(dm["kind"], "dm");
    assert_eq!(dm["name"], Value::Null);
    assert_eq!(
        dm["members"],
        json!([{"id": "alice", "name": "User alice"}, {"id": "bob", "name": "User bob"}])
    );
    // The pair's DM is found again, whichever way round.
    assert_eq!(net.dm("alice", "bob").await["id"], dm["id"]);
    assert_eq!(net.dm("bob", "alice").await["id"], dm["id"]);
    let group = net.group("Team", &["alice", "carol"]).await;
    assert_eq!(group["kind"], "group");
    assert_eq!(group["name"], "Team");
    assert_ne!(group["id"], dm["id"]);

    let alice = net.login("alice").await;
    let bob = net.login("bob").await;
    let carol = net.login("carol").await;

    let (status, chats) = net.call(Method::GET, "/v1/chats", Some(&alice), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(chats, json!({"chats": [dm, group]}));
    let (_, chats) = net.call(Method::GET, "/v1/chats", Some(&bob), None).await;
    assert_eq!(chats, json!({"chats": [dm]}));

    let dm_id = dm["id"].as_str().expect("id");
    let (status, got) = net
        .call(Method::GET, &format!("/v1/chats/{dm_id}"), Some(&bob), None)
        .await;
    assert_eq!((status, got), (StatusCode::OK, dm.clone()));
    let foreign = net
        .call(
            Method::GET,
            &format!("/v1/chats/{dm_id}"),
            Some(&carol),
            None,
        )
        .await;
    assert_error(&foreign, StatusCode::FORBIDDEN, "not_member");
    let missing = net
        .call(Method::GET, "/v1/chats/c999", Some(&carol), None)
        .await;
    assert_error(&missing, StatusCode::NOT_FOUND, "not_found");

    let (status, user) = net
        .call(Method::GET, "/v1/users/carol", Some(&bob), None)
        .await;
    assert_eq!(
        (status, user),
        (StatusCode::OK, json!({"id": "carol", "name": "User carol"}))
    );
    let missing = net
        .call(Method::GET, "/v1/users/nobody", Some(&bob), None)
        .await;
    assert_error(&missing, StatusCode::NOT_FOUND, "not_found");

    // Renaming a user shows in the chats.
    net.control(
        Method::POST,
        "/control/users",
        Some(json!({"id": "bob", "name": "Bob B"})),
    )
    .await;
    let (_, got) = net
        .call(
            Method::GET,
            &format!("/v1/chats/{dm_id}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(got["members"][1], json!({"id": "bob", "name": "Bob B"}));

    let same = net.call(
        Method::POST,
        "/control/dms",
        None,
        Some(json!({"a": "bob", "b": "bob"})),
    );
    assert_error(&same.await, StatusCode::BAD_REQUEST, "bad_request");
    let unknown = net.call(
        Method::POST,
        "/control/dms",
        None,
        Some(json!({"a": "bob", "b": "zed"})),
    );
    assert_error(&unknown.await, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn sending_is_idempotent_per_account_and_txn_id() {
    let net = Net::start().await;
    for id in ["alice", "bob", "carol"] {
        net.user(id).await;
    }
    let dm = net.dm("alice", "bob").await;
    let dm_id = dm["id"].as_str().expect("id");
    let path = format!("/v1/chats/{dm_id}/messages");
    let alice = net.login("alice").await;
    let bob = net.login("bob").await;
    let carol = net.login("carol").await;

    let body = json!({"txn_id": "t1", "text": "hello"});
    let (status, first) = net
        .call(Method::POST, &path, Some(&alice), Some(body.clone()))
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["chat_id"], dm["id"]);
    assert_eq!(first["sender"], "alice");
    assert_eq!(first["text"], "hello");
    assert_eq!(first["txn_id"], "t1");
    assert!(first["ts"].as_u64().expect("ts") > 1_700_000_000_000);
    assert!(first["id"].is_string());

    let (status, repeat) = net
        .call(Method::POST, &path, Some(&alice), Some(body.clone()))
        .await;
    assert_eq!((status, &repeat), (StatusCode::OK, &first));
    let changed = json!({"txn_id": "t1", "text": "something else"});
    let (_, repeat) = net
        .call(Method::POST, &path, Some(&alice), Some(changed))
        .await;
    assert_eq!(repeat, first);

    // The same txn_id from another account is another message.
    let (status, from_bob) = net
        .call(Method::POST, &path, Some(&bob), Some(body.clone()))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(from_bob["id"], first["id"]);
    assert_eq!(from_bob["sender"], "bob");

    let listed = net
        .control(
            Method::GET,
            &format!("/control/chats/{dm_id}/messages"),
            None,
        )
        .await;
    assert_eq!(listed, json!({"messages": [first, from_bob]}));

    let foreign = net
        .call(Method::POST, &path, Some(&carol), Some(body.clone()))
        .await;
    assert_error(&foreign, StatusCode::FORBIDDEN, "not_member");
    let missing = net
        .call(
            Method::POST,
            "/v1/chats/c77/messages",
            Some(&carol),
            Some(body.clone()),
        )
        .await;
    assert_error(&missing, StatusCode::NOT_FOUND, "not_found");

    let pushed = net.post(dm_id, "bob", "from the control API").await;
    assert_eq!(pushed["txn_id"], Value::Null);
    assert_eq!(pushed["sender"], "bob");
    let stranger = net
        .call(
            Method::POST,
            &format!("/control/chats/{dm_id}/messages"),
            None,
            Some(json!({"sender": "carol", "text": "hi"})),
        )
        .await;
    assert_error(&stranger, StatusCode::FORBIDDEN, "not_member");
}

#[tokio::test]
async fn the_event_socket_replays_after_since_then_delivers_live_in_order() {
    let net = Net::start().await;
    net.user("alice").await;
    net.user("bob").await;
    let dm = net.dm("alice", "bob").await;
    let dm_id = dm["id"].as_str().expect("id");
    for text in ["one", "two", "three"] {
        net.post(dm_id, "alice", text).await;
    }
    let bob = net.login("bob").await;
    let alice = net.login("alice").await;

    let mut all = net.connect(&bob, 0).await;
    let replay = events(&mut all, 4).await;
    assert_eq!(seqs(&replay), [1, 2, 3, 4]);
    assert_eq!(replay[0], json!({"seq": 1, "type": "chat", "chat": dm}));
    let texts: Vec<&Value> = replay[1..]
        .iter()
        .map(|event| &event["message"]["text"])
        .collect();
    assert_eq!(texts, ["one", "two", "three"]);
    assert!(replay[1..].iter().all(|event| event["type"] == "message"));
    assert_quiet(&mut all).await;

    let mut later = net.connect(&bob, 2).await;
    assert_eq!(seqs(&events(&mut later, 2).await), [3, 4]);
    let mut caught_up = net.connect(&bob, 4).await;
    assert_quiet(&mut caught_up).await;

    // Acks and unknown frames are accepted and change nothing; pings are answered.
    all.send(WsMessage::text(json!({"ack": 4}).to_string()))
        .await
        .expect("ack sent");
    all.send(WsMessage::text("not json"))
        .await
        .expect("frame sent");
    all.send(WsMessage::Ping(b"hi".to_vec().into()))
        .await
        .expect("ping sent");
    let pong = tokio::time::timeout(WAIT, all.next())
        .await
        .expect("pong in time");
    assert!(
        matches!(pong, Some(Ok(WsMessage::Pong(ref data))) if data.as_ref() == b"hi"),
        "{pong:?}"
    );

    // Live: a client send reaches every socket of every member, the sender's included, in order.
    let mut alice_socket = net.connect(&alice, 4).await;
    for n in 0..20 {
        let body = json!({"txn_id": format!("t{n}"), "text": format!("live {n}")});
        let path = format!("/v1/chats/{dm_id}/messages");
        let (status, _) = net
            .call(Method::POST, &path, Some(&alice), Some(body))
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let expected: Vec<u64> = (5..25).collect();
    for socket in [&mut all, &mut later, &mut caught_up, &mut alice_socket] {
        let live = events(socket, 20).await;
        assert_eq!(seqs(&live), expected);
        assert_eq!(live[19]["message"]["text"], "live 19");
        assert_eq!(live[0]["message"]["sender"], "alice");
        assert_quiet(socket).await;
    }
}

#[tokio::test]
async fn a_long_log_is_replayed_whole_while_new_events_keep_coming() {
    let net = Net::start().await;
    net.user("alice").await;
    net.user("bob").await;
    let dm = net.dm("alice", "bob").await;
    let dm_id = dm["id"].as_str().expect("id").to_owned();
    for n in 0..600 {
        net.server
            .sim()
            .post_message(&dm_id, "alice", &format!("old {n}"))
            .expect("posted");
    }
    let bob = net.login("bob").await;
    let sim = std::sync::Arc::clone(net.server.sim());
    let writer = tokio::spawn(async move {
        for n in 0..300 {
            sim.post_message(&dm_id, "alice", &format!("new {n}"))
                .expect("posted");
            if n % 50 == 0 {
                tokio::task::yield_now().await;
            }
        }
    });
    let mut socket = net.connect(&bob, 0).await;
    let all = events(&mut socket, 901).await;
    writer.await.expect("writer done");
    assert_eq!(seqs(&all), (1..=901).collect::<Vec<u64>>());
    assert_eq!(all[900]["message"]["text"], "new 299");
    assert_quiet(&mut socket).await;
    assert_eq!(
        net.server.sim().events("bob", 0).expect("events").len(),
        901
    );
}

#[tokio::test]
async fn group_membership_changes_are_pushed() {
    let net = Net::start().await;
    for id in ["alice", "bob", "carol"] {
        net.user(id).await;
    }
    let alice = net.login("alice").await;
    let bob = net.login("bob").await;
    let carol = net.login("carol").await;
    let mut alice_socket = net.connect(&alice, 0).await;
    let mut bob_socket = net.connect(&bob, 0).await;
    let mut carol_socket = net.connect(&carol, 0).await;

    let group = net.group("Team", &["alice", "bob", "alice"]).await;
    assert_eq!(group["members"].as_array().expect("members").len(), 2);
    let id = group["id"].as_str().expect("id").to_owned();
    for socket in [&mut alice_socket, &mut bob_socket] {
        assert_eq!(
            next_event(socket).await,
            json!({"seq": 1, "type": "chat", "chat": group})
        );
    }
    assert_quiet(&mut carol_socket).await;

    let members = format!("/control/groups/{id}/members");
    let grown = net
        .control(Method::POST, &members, Some(json!({"user_id": "carol"})))
        .await;
    assert_eq!(
        grown["members"][2],
        json!({"id": "carol", "name": "User carol"})
    );
    assert_eq!(
        next_event(&mut carol_socket).await,
        json!({"seq": 1, "type": "chat", "chat": grown})
    );
    let joined = json!({
        "seq": 2, "type": "member_joined", "chat_id": id,
        "user": {"id": "carol", "name": "User carol"},
    });
    assert_eq!(next_event(&mut alice_socket).await, joined);
    assert_eq!(next_event(&mut bob_socket).await, joined);

    // Adding a member again changes nothing.
    let same = net
        .control(Method::POST, &members, Some(json!({"user_id": "carol"})))
        .await;
    assert_eq!(same, grown);

    let shrunk = net
        .control(Method::DELETE, &format!("{members}/bob"), None)
        .await;
    assert_eq!(shrunk["members"].as_array().expect("members").len(), 2);
    for (socket, seq) in [
        (&mut alice_socket, 3),
        (&mut bob_socket, 3),
        (&mut carol_socket, 2),
    ] {
        let left = json!({"seq": seq, "type": "member_left", "chat_id": id, "user_id": "bob"});
        assert_eq!(next_event(socket).await, left);
    }
    for socket in [&mut alice_socket, &mut bob_socket, &mut carol_socket] {
        assert_quiet(socket).await;
    }
    let (_, chats) = net.call(Method::GET, "/v1/chats", Some(&bob), None).await;
    assert_eq!(chats, json!({"chats": []}));

    let again = net
        .call(Method::DELETE, &format!("{members}/bob"), None, None)
        .await;
    assert_error(&again, StatusCode::FORBIDDEN, "not_member");
    let unknown_user = net
        .call(
            Method::POST,
            &members,
            None,
            Some(json!({"user_id": "zed"})),
        )
        .await;
    assert_error(&unknown_user, StatusCode::NOT_FOUND, "not_found");
    let unknown_group = net.call(
        Method::POST,
        "/control/groups/c42/members",
        None,
        Some(json!({"user_id": "bob"})),
    );
    assert_error(&unknown_group.await, StatusCode::NOT_FOUND, "not_found");
    let dm = net.dm("alice", "bob").await;
    let dm_members = format!("/control/groups/{}/members", dm["id"].as_str().expect("id"));
    let into_dm = net
        .call(
            Method::POST,
            &dm_members,
            None,
            Some(json!({"user_id": "carol"})),
        )
        .await;
    assert_error(&into_dm, StatusCode::BAD_REQUEST, "bad_request");
}

#[tokio::test]
async fn a_network_outage_closes_sockets_and_refuses_client_calls() {
    let net = Net::start().await;
    net.user("alice").await;
    net.user("bob").await;
    let dm = net.dm("alice", "bob").await;
    let dm_id = dm["id"].as_str().expect("id");
    let bob = net.login("bob").await;
    let mut first = net.connect(&bob, 0).await;
    let mut second = net.connect(&bob, 0).await;
    for socket in [&mut first, &mut second] {
        assert_eq!(next_event(socket).await["seq"], 1);
    }

    net.network(false).await;
    for socket in [&mut first, &mut second] {
        assert_eq!(u16::from(expect_close(socket).await.code), 1001);
    }
    let me = net.call(Method::GET, "/v1/me", Some(&bob), None).await;
    assert_error(&me, StatusCode::SERVICE_UNAVAILABLE, "network_down");
    let login = net
        .call(
            Method::POST,
            "/v1/login/start",
            None,
            Some(json!({"username": "bob"})),
        )
        .await;
    assert_error(&login, StatusCode::SERVICE_UNAVAILABLE, "network_down");
    let junk = net.call_raw("/v1/login/finish", None, b"{".to_vec()).await;
    assert_error(&junk, StatusCode::SERVICE_UNAVAILABLE, "network_down");
    assert_eq!(
        net.try_connect(&net.events_url(0), Some(&bob)).await.err(),
        Some(503)
    );

    // The control API keeps working, so the world moves on while the client is cut off.
    net.post(dm_id, "alice", "while you were away").await;

    net.network(true).await;
    let (status, _) = net.call(Method::GET, "/v1/me", Some(&bob), None).await;
    assert_eq!(status, StatusCode::OK);
    let mut back = net.connect(&bob, 1).await;
    let missed = next_event(&mut back).await;
    assert_eq!(missed["seq"], 2);
    assert_eq!(missed["message"]["text"], "while you were away");
}

#[tokio::test]
async fn logout_closes_only_that_tokens_sockets() {
    let net = Net::start().await;
    net.user("alice").await;
    net.user("bob").await;
    let dm = net.dm("alice", "bob").await;
    let first_token = net.login("bob").await;
    let second_token = net.login("bob").await;
    let mut first = net.connect(&first_token, 1).await;
    let mut second = net.connect(&second_token, 1).await;

    let (status, _) = net
        .call(Method::POST, "/v1/logout", Some(&first_token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(u16::from(expect_close(&mut first).await.code), 1008);

    net.post(dm["id"].as_str().expect("id"), "alice", "still here")
        .await;
    assert_eq!(next_event(&mut second).await["seq"], 2);
    assert_eq!(
        net.try_connect(&net.events_url(0), Some(&first_token))
            .await
            .err(),
        Some(401)
    );
}

#[tokio::test]
async fn malformed_requests_answer_400() {
    let net = Net::start().await;
    net.user("bob").await;
    net.user("alice").await;
    let dm = net.dm("alice", "bob").await;
    let token = net.login("bob").await;
    let send_path = format!("/v1/chats/{}/messages", dm["id"].as_str().expect("id"));

    let bodies: [&[u8]; 5] = [
        b"{",
        b"",
        b"[]",
        br#"{"username": 5}"#,
        br#"{"user": "bob"}"#,
    ];
    for body in bodies {
        let answer = net.call_raw("/v1/login/start", None, body.to_vec()).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    }
    let answer = net
        .call_raw("/v1/login/finish", None, br#"{"flow_id": "x"}"#.to_vec())
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    let answer = net
        .call_raw(&send_path, Some(&token), br#"{"text": "no txn"}"#.to_vec())
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    let answer = net.call_raw(
        &send_path,
        Some(&token),
        br#"{"txn_id": "", "text": "x"}"#.to_vec(),
    );
    assert_error(&answer.await, StatusCode::BAD_REQUEST, "bad_request");
    let answer = net
        .call_raw("/control/network", None, br#"{"up": "yes"}"#.to_vec())
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    let answer = net
        .call_raw("/control/groups", None, br#"{"name": "x"}"#.to_vec())
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    for id in ["", "a b", "a/b", &"x".repeat(200)] {
        let answer = net.call_raw(
            "/control/users",
            None,
            json!({"id": id, "name": "N"}).to_string().into_bytes(),
        );
        assert_error(&answer.await, StatusCode::BAD_REQUEST, "bad_request");
    }

    // Limits: text over 64 KiB, bodies over 1 MiB.
    let long = json!({"txn_id": "long", "text": "x".repeat(64 * 1024 + 1)});
    let answer = net
        .call(Method::POST, &send_path, Some(&token), Some(long))
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    let fits = json!({"txn_id": "fits", "text": "x".repeat(64 * 1024)});
    let (status, _) = net
        .call(Method::POST, &send_path, Some(&token), Some(fits))
        .await;
    assert_eq!(status, StatusCode::OK);
    let huge = json!({"txn_id": "huge", "text": "x".repeat(2 * 1024 * 1024)});
    let answer = net
        .call(Method::POST, &send_path, Some(&token), Some(huge))
        .await;
    assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "bad_request");

    let url = net.events_url(0).replace("since=0", "since=minus-one");
    assert_eq!(net.try_connect(&url, Some(&token)).await.err(), Some(400));
    let plain = net
        .call(Method::GET, "/v1/events", Some(&token), None)
        .await;
    assert_error(&plain, StatusCode::BAD_REQUEST, "bad_request");

    let unknown = net
        .call(Method::GET, "/v1/nothing-here", Some(&token), None)
        .await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "not_found");
    let wrong_method = net.call(Method::DELETE, "/v1/me", Some(&token), None).await;
    assert_error(&wrong_method, StatusCode::METHOD_NOT_ALLOWED, "bad_request");
    let bad_escape = net
        .call(Method::GET, "/v1/users/%FF", Some(&token), None)
        .await;
    assert_error(&bad_escape, StatusCode::BAD_REQUEST, "bad_request");
}

#[tokio::test]
async fn shutdown_closes_sockets_and_stops_serving() {
    let net = Net::start().await;
    net.user("bob").await;
    let token = net.login("bob").await;
    let mut socket = net.connect(&token, 0).await;
    let url = net.server.url();
    assert_eq!(url, format!("http://{}", net.server.addr()));

    let Net { server, http } = net;
    server.shutdown().await;
    assert_eq!(u16::from(expect_close(&mut socket).await.code), 1001);
    assert!(http.get(format!("{url}/v1/me")).send().await.is_err());
}
