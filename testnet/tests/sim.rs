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

    /// A client send of `content` (plus `txn_id`) to a chat.
    async fn send(&self, token: &str, chat_id: &str, content: Value) -> (StatusCode, Value) {
        let path = format!("/v1/chats/{chat_id}/messages");
        self.call(Method::POST, &path, Some(token), Some(content))
            .await
    }

    /// A client send that must succeed; answers the message.
    async fn send_ok(&self, token: &str, chat_id: &str, content: Value) -> Value {
        let (status, message) = self.send(token, chat_id, content).await;
        assert_eq!(status, StatusCode::OK, "{message}");
        message
    }

    /// A control post of `content` (plus `sender`) that must succeed; answers the message.
    async fn post_content(&self, chat_id: &str, content: Value) -> Value {
        let path = format!("/control/chats/{chat_id}/messages");
        self.control(Method::POST, &path, Some(content)).await
    }

    /// Any call with a raw body: status, headers and body bytes.
    async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.server.url()))
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body read").to_vec();
        (status, headers, bytes)
    }

    /// Opens the event socket after everything already in `account`'s log, so only what
    /// happens from now on arrives.
    async fn connect_live(&self, token: &str, account: &str) -> Socket {
        let seen = self.server.sim().events(account, 0).expect("account").len() as u64;
        self.connect(token, seen).await
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

/// The `id` of a chat or message.
fn id(value: &Value) -> String {
    value["id"].as_str().expect("id").to_owned()
}

/// Percent-encodes every byte but ASCII letters and digits, for path segments.
fn enc(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The next event of each socket, which must all be `expected` (seqs aside).
async fn expect_everywhere(sockets: &mut [&mut Socket], expected: &Value) {
    for socket in sockets.iter_mut() {
        let mut event = next_event(socket).await;
        assert!(event["seq"].is_u64(), "{event}");
        if let Some(object) = event.as_object_mut() {
            object.remove("seq");
        }
        assert_eq!(&event, expected);
    }
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
    assert_eq!(
        finished["user"],
        json!({"id": "bob", "name": "User bob", "avatar": null})
    );
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
    assert_eq!(me, json!({"id": "bob", "name": "User bob", "avatar": null}));

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
        json!([{"id": "alice", "name": "User alice", "avatar": null}, {"id": "bob", "name": "User bob", "avatar": null}])
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
        (
            StatusCode::OK,
            json!({"id": "carol", "name": "User carol", "avatar": null})
        )
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
    assert_eq!(
        got["members"][1],
        json!({"id": "bob", "name": "Bob B", "avatar": null})
    );

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
        json!({"id": "carol", "name": "User carol", "avatar": null})
    );
    assert_eq!(
        next_event(&mut carol_socket).await,
        json!({"seq": 1, "type": "chat", "chat": grown})
    );
    let joined = json!({
        "seq": 2, "type": "member_joined", "chat_id": id,
        "user": {"id": "carol", "name": "User carol", "avatar": null},
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

/// Two users with a DM, both logged in, both sockets live: (alice, bob, dm id, sockets).
async fn pair(net: &Net) -> (String, String, String, Socket, Socket) {
    net.user("alice").await;
    net.user("bob").await;
    let dm = id(&net.dm("alice", "bob").await);
    let alice = net.login("alice").await;
    let bob = net.login("bob").await;
    let alice_socket = net.connect_live(&alice, "alice").await;
    let bob_socket = net.connect_live(&bob, "bob").await;
    (alice, bob, dm, alice_socket, bob_socket)
}

#[tokio::test]
async fn rich_text_entities_are_echoed_as_given_and_validated() {
    let net = Net::start().await;
    let (alice, _bob, dm, mut alice_socket, mut bob_socket) = pair(&net).await;

    // 26 Unicode scalar values, 30 bytes: offsets count chars.
    let text = "héllo 👋 @bob see https://x";
    let entities = json!([
        {"type": "bold", "offset": 0, "length": 5},
        {"type": "italic", "offset": 6, "length": 1},
        {"type": "mention", "offset": 8, "length": 4, "user_id": "bob"},
        {"type": "link", "offset": 17, "length": 9, "url": "https://x.example/"},
        {"type": "pre", "offset": 0, "length": 26, "language": "text"},
        {"type": "pre", "offset": 0, "length": 1},
        {"type": "code", "offset": 1, "length": 1},
        {"type": "strikethrough", "offset": 2, "length": 1},
        {"type": "underline", "offset": 3, "length": 1},
        {"type": "spoiler", "offset": 4, "length": 1},
        {"type": "blockquote", "offset": 0, "length": 26},
    ]);
    let sent = net
        .send_ok(
            &alice,
            &dm,
            json!({"txn_id": "t1", "text": text, "entities": entities}),
        )
        .await;
    assert_eq!(sent["entities"], entities);
    assert_eq!(sent["text"], text);
    for field in ["reply_to", "media", "location", "contact", "edited_ts"] {
        assert_eq!(sent[field], Value::Null, "{field}");
    }
    assert_eq!(sent["edit_count"], 0);
    let pushed = json!({"type": "message", "message": sent});
    expect_everywhere(&mut [&mut alice_socket, &mut bob_socket], &pushed).await;

    // A message without entities has `[]`; the control API takes them too.
    let plain = net
        .send_ok(&alice, &dm, json!({"txn_id": "t2", "text": "plain"}))
        .await;
    assert_eq!(plain["entities"], json!([]));
    let bold = json!([{"type": "bold", "offset": 0, "length": 2}]);
    let posted = net
        .post_content(
            &dm,
            json!({"sender": "bob", "text": "hi", "entities": bold}),
        )
        .await;
    assert_eq!(posted["entities"], bold);
    for socket in [&mut alice_socket, &mut bob_socket] {
        let got = events(socket, 2).await;
        assert_eq!(got[0]["message"], plain);
        assert_eq!(got[1]["message"], posted);
    }

    // Limits: exactly at them is fine.
    let many: Vec<Value> = (0..1000)
        .map(|n| json!({"type": "bold", "offset": n % 26, "length": 1}))
        .collect();
    let long_url = format!("https://{}", "u".repeat(2048 - 8));
    let fits = [
        json!(many),
        json!([{"type": "link", "offset": 0, "length": 1, "url": long_url}]),
    ];
    for (n, entities) in fits.into_iter().enumerate() {
        let body = json!({"txn_id": format!("fits{n}"), "text": text, "entities": entities});
        net.send_ok(&alice, &dm, body).await;
    }
    for socket in [&mut alice_socket, &mut bob_socket] {
        events(socket, 2).await;
    }

    let mut too_many = many.clone();
    too_many.push(json!({"type": "bold", "offset": 0, "length": 1}));
    let bad = [
        // Inside the text's 30 bytes but beyond its 26 chars.
        json!([{"type": "bold", "offset": 20, "length": 8}]),
        json!([{"type": "bold", "offset": 26, "length": 1}]),
        json!([{"type": "bold", "offset": 0, "length": 0}]),
        json!([{"type": "bold", "offset": u64::MAX, "length": 2}]),
        json!([{"type": "bold", "offset": -1, "length": 2}]),
        json!([{"type": "blink", "offset": 0, "length": 1}]),
        json!([{"type": "link", "offset": 0, "length": 1}]),
        json!([{"type": "link", "offset": 0, "length": 1, "url": ""}]),
        json!([{"type": "link", "offset": 0, "length": 1, "url": format!("{long_url}x")}]),
        json!([{"type": "bold", "offset": 0, "length": 1, "url": "https://a"}]),
        json!([{"type": "mention", "offset": 0, "length": 1}]),
        json!([{"type": "mention", "offset": 0, "length": 1, "user_id": "a b"}]),
        json!([{"type": "italic", "offset": 0, "length": 1, "user_id": "bob"}]),
        json!([{"type": "code", "offset": 0, "length": 1, "language": "c"}]),
        json!([{"type": "pre", "offset": 0, "length": 1, "language": "x".repeat(65)}]),
        json!(too_many),
        json!("bold"),
    ];
    for (n, entities) in bad.into_iter().enumerate() {
        let body = json!({"txn_id": format!("bad{n}"), "text": text, "entities": entities});
        let answer = net.send(&alice, &dm, body).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
        let body = json!({"sender": "bob", "text": text, "entities": entities});
        let answer = net
            .call(
                Method::POST,
                &format!("/control/chats/{dm}/messages"),
                None,
                Some(body),
            )
            .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    }
    // Entities need text: none on an empty one.
    let body = json!({"txn_id": "empty", "text": "", "entities": [{"type": "bold", "offset": 0, "length": 1}]});
    assert_error(
        &net.send(&alice, &dm, body).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    for socket in [&mut alice_socket, &mut bob_socket] {
        assert_quiet(socket).await;
    }
}

#[tokio::test]
async fn replies_name_a_message_of_the_same_chat() {
    let net = Net::start().await;
    let (alice, bob, dm, mut alice_socket, mut bob_socket) = pair(&net).await;
    net.user("carol").await;
    let other = id(&net.dm("alice", "carol").await);
    let elsewhere = net.post(&other, "carol", "elsewhere").await;
    let _ = events(&mut alice_socket, 2).await;

    let first = net.post(&dm, "bob", "question?").await;
    let answer = net
        .send_ok(
            &alice,
            &dm,
            json!({"txn_id": "r1", "text": "answer", "reply_to": first["id"]}),
        )
        .await;
    assert_eq!(answer["reply_to"], first["id"]);
    let control = net
        .post_content(
            &dm,
            json!({"sender": "bob", "text": "thanks", "reply_to": answer["id"]}),
        )
        .await;
    assert_eq!(control["reply_to"], answer["id"]);
    for socket in [&mut alice_socket, &mut bob_socket] {
        let got = events(socket, 3).await;
        assert_eq!(got[1]["message"]["reply_to"], first["id"]);
        assert_eq!(got[2]["message"]["reply_to"], answer["id"]);
    }

    // A message of another chat, an unknown one, a malformed id and a deleted one are 400.
    let path = format!("/control/chats/{dm}/messages/{}?sender=bob", id(&first));
    net.control(Method::DELETE, &path, None).await;
    for (n, target) in [
        id(&elsewhere),
        "m999".into(),
        "m01".into(),
        "x".into(),
        id(&first),
    ]
    .into_iter()
    .enumerate()
    {
        let body = json!({"txn_id": format!("bad{n}"), "text": "re", "reply_to": target});
        assert_error(
            &net.send(&bob, &dm, body).await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        );
        let body = json!({"sender": "bob", "text": "re", "reply_to": target});
        let answer = net
            .call(
                Method::POST,
                &format!("/control/chats/{dm}/messages"),
                None,
                Some(body),
            )
            .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    }
    // Replies to the deleted message keep pointing at it.
    let kept = net
        .control(
            Method::GET,
            &format!("/control/chats/{dm}/messages/{}", id(&answer)),
            None,
        )
        .await;
    assert_eq!(kept["reply_to"], first["id"]);
}

#[tokio::test]
async fn edits_change_own_messages_and_are_pushed() {
    let net = Net::start().await;
    let (alice, bob, dm, mut alice_socket, mut bob_socket) = pair(&net).await;
    let original = net
        .send_ok(&alice, &dm, json!({"txn_id": "e1", "text": "helo"}))
        .await;
    let from_bob = net.post(&dm, "bob", "bob's").await;
    for socket in [&mut alice_socket, &mut bob_socket] {
        events(socket, 2).await;
    }
    let path = format!("/v1/chats/{dm}/messages/{}", id(&original));

    let bold = json!([{"type": "bold", "offset": 0, "length": 5}]);
    let (status, edited) = net
        .call(
            Method::PATCH,
            &path,
            Some(&alice),
            Some(json!({"text": "hello", "entities": bold})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{edited}");
    assert_eq!(edited["text"], "hello");
    assert_eq!(edited["entities"], bold);
    assert_eq!(edited["edit_count"], 1);
    assert_eq!(edited["id"], original["id"]);
    assert_eq!(edited["ts"], original["ts"]);
    assert_eq!(edited["txn_id"], "e1");
    assert!(
        edited["edited_ts"].as_u64().expect("edited_ts") >= original["ts"].as_u64().expect("ts")
    );
    let pushed = json!({"type": "message_edited", "message": edited});
    expect_everywhere(&mut [&mut alice_socket, &mut bob_socket], &pushed).await;

    // A second edit without entities drops them; the control API edits as the sender.
    let (_, again) = net
        .call(
            Method::PATCH,
            &path,
            Some(&alice),
            Some(json!({"text": "hello!"})),
        )
        .await;
    assert_eq!(again["edit_count"], 2);
    assert_eq!(again["entities"], json!([]));
    let control_path = format!("/control/chats/{dm}/messages/{}", id(&from_bob));
    let by_control = net
        .control(
            Method::PATCH,
            &control_path,
            Some(json!({"sender": "bob", "text": "bob's, edited"})),
        )
        .await;
    assert_eq!(by_control["edit_count"], 1);
    for socket in [&mut alice_socket, &mut bob_socket] {
        let got = events(socket, 2).await;
        assert_eq!(
            got[0],
            json!({"seq": got[0]["seq"], "type": "message_edited", "message": again})
        );
        assert_eq!(got[1]["message"], by_control);
    }
    // Listing and fetching show the edit; so does repeating the original send.
    let listed = net
        .control(Method::GET, &format!("/control/chats/{dm}/messages"), None)
        .await;
    assert_eq!(listed["messages"], json!([again, by_control]));
    let (_, fetched) = net.call(Method::GET, &path, Some(&bob), None).await;
    assert_eq!(fetched, again);
    let repeat = net
        .send_ok(&alice, &dm, json!({"txn_id": "e1", "text": "helo"}))
        .await;
    assert_eq!(repeat, again);

    // Only one's own messages: 403 forbidden, both APIs.
    let bobs = format!("/v1/chats/{dm}/messages/{}", id(&from_bob));
    let foreign = net
        .call(
            Method::PATCH,
            &bobs,
            Some(&alice),
            Some(json!({"text": "mine now"})),
        )
        .await;
    assert_error(&foreign, StatusCode::FORBIDDEN, "forbidden");
    let foreign = net
        .call(
            Method::PATCH,
            &control_path,
            None,
            Some(json!({"sender": "alice", "text": "mine now"})),
        )
        .await;
    assert_error(&foreign, StatusCode::FORBIDDEN, "forbidden");
    // Validation against the new text; unknown messages; non-members.
    let bad = json!({"text": "hi", "entities": [{"type": "bold", "offset": 0, "length": 3}]});
    let answer = net
        .call(Method::PATCH, &path, Some(&alice), Some(bad))
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    let answer = net
        .call(
            Method::PATCH,
            &path,
            Some(&alice),
            Some(json!({"entities": []})),
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    let missing = format!("/v1/chats/{dm}/messages/m999");
    let answer = net
        .call(
            Method::PATCH,
            &missing,
            Some(&alice),
            Some(json!({"text": "x"})),
        )
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
    net.user("carol").await;
    let answer = net
        .call(
            Method::PATCH,
            &control_path,
            None,
            Some(json!({"sender": "carol", "text": "x"})),
        )
        .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "not_member");
    let answer = net
        .call(
            Method::PATCH,
            &control_path,
            None,
            Some(json!({"sender": "zed", "text": "x"})),
        )
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "not_found");

    // A location has no text to edit.
    let location = net
        .post_content(
            &dm,
            json!({"sender": "bob", "location": {"lat": 1.5, "lon": 2.5}}),
        )
        .await;
    let answer = net
        .call(
            Method::PATCH,
            &format!("/control/chats/{dm}/messages/{}", id(&location)),
            None,
            Some(json!({"sender": "bob", "text": "x"})),
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");

    // A deleted message cannot be edited.
    let (status, _) = net.call(Method::DELETE, &path, Some(&alice), None).await;
    assert_eq!(status, StatusCode::OK);
    let answer = net
        .call(
            Method::PATCH,
            &path,
            Some(&alice),
            Some(json!({"text": "ghost"})),
        )
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
    for socket in [&mut alice_socket, &mut bob_socket] {
        let got = events(socket, 2).await;
        assert_eq!(got[0]["type"], "message");
        assert_eq!(got[1]["type"], "message_deleted");
        assert_quiet(socket).await;
    }
}

#[tokio::test]
async fn deletes_own_messages_or_as_group_admin() {
    let net = Net::start().await;
    let (alice, _bob, dm, mut alice_socket, mut bob_socket) = pair(&net).await;
    let mine = net
        .send_ok(&alice, &dm, json!({"txn_id": "d1", "text": "oops"}))
        .await;
    let theirs = net.post(&dm, "bob", "keep").await;
    for socket in [&mut alice_socket, &mut bob_socket] {
        events(socket, 2).await;
    }

    let path = format!("/v1/chats/{dm}/messages/{}", id(&mine));
    let (status, answer) = net.call(Method::DELETE, &path, Some(&alice), None).await;
    assert_eq!((status, answer), (StatusCode::OK, json!({})));
    let pushed =
        json!({"type": "message_deleted", "chat_id": dm, "message_id": mine["id"], "by": "alice"});
    expect_everywhere(&mut [&mut alice_socket, &mut bob_socket], &pushed).await;

    // Gone everywhere: listing, fetching, deleting again, reacting.
    let listed = net
        .control(Method::GET, &format!("/control/chats/{dm}/messages"), None)
        .await;
    assert_eq!(listed["messages"], json!([theirs]));
    for (method, path) in [
        (Method::GET, path.clone()),
        (Method::DELETE, path.clone()),
        (Method::PUT, format!("{path}/reactions/{}", enc("👍"))),
    ] {
        let answer = net.call(method, &path, Some(&alice), None).await;
        assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
    }
    // The idempotent send still answers what it created.
    let repeat = net
        .send_ok(&alice, &dm, json!({"txn_id": "d1", "text": "oops"}))
        .await;
    assert_eq!(repeat, mine);

    // Not someone else's in a DM, either API.
    let theirs_path = format!("/v1/chats/{dm}/messages/{}", id(&theirs));
    let answer = net
        .call(Method::DELETE, &theirs_path, Some(&alice), None)
        .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "forbidden");
    let control_path = format!("/control/chats/{dm}/messages/{}", id(&theirs));
    let answer = net
        .call(
            Method::DELETE,
            &format!("{control_path}?sender=alice"),
            None,
            None,
        )
        .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "forbidden");
    let answer = net.call(Method::DELETE, &control_path, None, None).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    let answer = net
        .call(
            Method::DELETE,
            &format!("{control_path}?sender=zed"),
            None,
            None,
        )
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
    let done = net
        .control(Method::DELETE, &format!("{control_path}?sender=bob"), None)
        .await;
    assert_eq!(done, json!({}));
    let pushed =
        json!({"type": "message_deleted", "chat_id": dm, "message_id": theirs["id"], "by": "bob"});
    expect_everywhere(&mut [&mut alice_socket, &mut bob_socket], &pushed).await;

    // In a group the admin (its creator, alice) deletes anyone's message; others cannot.
    net.user("carol").await;
    let group = id(&net.group("Team", &["alice", "bob", "carol"]).await);
    let carols = net.post(&group, "carol", "spam").await;
    let bobs = net.post(&group, "bob", "fine").await;
    let answer = net
        .call(
            Method::DELETE,
            &format!("/control/chats/{group}/messages/{}?sender=carol", id(&bobs)),
            None,
            None,
        )
        .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "forbidden");
    let (status, _) = net
        .call(
            Method::DELETE,
            &format!("/v1/chats/{group}/messages/{}", id(&carols)),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for socket in [&mut alice_socket, &mut bob_socket] {
        let got = events(socket, 4).await;
        assert_eq!(
            got[3],
            json!({
                "seq": got[3]["seq"], "type": "message_deleted", "chat_id": group,
                "message_id": carols["id"], "by": "alice",
            })
        );
        assert_quiet(socket).await;
    }
}

#[tokio::test]
async fn reactions_several_per_user_both_ways() {
    let net = Net::start().await;
    let (alice, bob, dm, mut alice_socket, mut bob_socket) = pair(&net).await;
    let message = net.post(&dm, "bob", "react to me").await;
    for socket in [&mut alice_socket, &mut bob_socket] {
        events(socket, 1).await;
    }
    let mid = id(&message);
    let client = |emoji: &str| format!("/v1/chats/{dm}/messages/{mid}/reactions/{}", enc(emoji));
    let control = |emoji: &str| {
        format!(
            "/control/chats/{dm}/messages/{mid}/reactions/{}",
            enc(emoji)
        )
    };

    let (status, first) = net
        .call(Method::PUT, &client("👍"), Some(&alice), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["reactions"][0]["sender"], "alice");
    assert_eq!(first["reactions"][0]["emoji"], "👍");
    assert!(first["reactions"][0]["ts"].is_u64());
    let pushed = |sender: &str, emoji: &str, removed: bool| {
        json!({"type": "reaction", "chat_id": dm, "message_id": mid, "sender": sender,
               "emoji": emoji, "removed": removed})
    };
    expect_everywhere(
        &mut [&mut alice_socket, &mut bob_socket],
        &pushed("alice", "👍", false),
    )
    .await;

    // Another emoji from the same user is another reaction; the same again changes nothing.
    let (_, second) = net
        .call(Method::PUT, &client("❤️"), Some(&alice), None)
        .await;
    let (_, same) = net
        .call(Method::PUT, &client("❤️"), Some(&alice), None)
        .await;
    assert_eq!(same, second);
    // An unencoded emoji in the path works too (the client encodes it).
    let raw = format!("/v1/chats/{dm}/messages/{mid}/reactions/🎉");
    let (status, _) = net.call(Method::PUT, &raw, Some(&alice), None).await;
    assert_eq!(status, StatusCode::OK);
    let by_bob = net
        .control(Method::PUT, &control("👍"), Some(json!({"sender": "bob"})))
        .await;
    let summary: Vec<(String, String)> = by_bob["reactions"]
        .as_array()
        .expect("reactions")
        .iter()
        .map(|r| {
            (
                r["sender"].as_str().unwrap_or("").into(),
                r["emoji"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("alice", "👍"),
        ("alice", "❤️"),
        ("alice", "🎉"),
        ("bob", "👍"),
    ]
    .iter()
    .map(|(s, e)| ((*s).to_owned(), (*e).to_owned()))
    .collect();
    assert_eq!(summary, expected);
    for socket in [&mut alice_socket, &mut bob_socket] {
        let got = events(socket, 3).await;
        let got: Vec<(&Value, &Value, &Value)> = got
            .iter()
            .map(|e| (&e["sender"], &e["emoji"], &e["removed"]))
            .collect();
        assert_eq!(
            got,
            [
                (&json!("alice"), &json!("❤️"), &json!(false)),
                (&json!("alice"), &json!("🎉"), &json!(false)),
                (&json!("bob"), &json!("👍"), &json!(false)),
            ]
        );
    }
    let listed = net
        .control(
            Method::GET,
            &format!("/control/chats/{dm}/messages/{mid}/reactions"),
            None,
        )
        .await;
    assert_eq!(listed["reactions"], by_bob["reactions"]);
    let (_, seen) = net
        .call(
            Method::GET,
            &format!("/v1/chats/{dm}/messages/{mid}/reactions"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(seen, listed);

    // Removing: client DELETE, control DELETE ?sender=; removing what is not there is quiet.
    let (_, after) = net
        .call(Method::DELETE, &client("❤️"), Some(&alice), None)
        .await;
    assert_eq!(after["reactions"].as_array().expect("list").len(), 3);
    let (_, again) = net
        .call(Method::DELETE, &client("❤️"), Some(&alice), None)
        .await;
    assert_eq!(again, after);
    let after = net
        .control(
            Method::DELETE,
            &format!("{}?sender=bob", control("👍")),
            None,
        )
        .await;
    assert_eq!(after["reactions"].as_array().expect("list").len(), 2);
    for socket in [&mut alice_socket, &mut bob_socket] {
        let got = events(socket, 2).await;
        assert_eq!(got[0]["removed"], true);
        assert_eq!(got[0]["emoji"], "❤️");
        assert_eq!(
            (&got[1]["sender"], &got[1]["removed"]),
            (&json!("bob"), &json!(true))
        );
        assert_quiet(socket).await;
    }

    // Validation: emoji length and characters, the per-user cap, unknown messages, members.
    for emoji in ["x".repeat(65), "a b".into(), "\u{7}".into()] {
        let answer = net
            .call(Method::PUT, &client(&emoji), Some(&alice), None)
            .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    }
    let fits = "x".repeat(64);
    let (status, _) = net
        .call(Method::PUT, &client(&fits), Some(&bob), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    // Bob has that one and 19 more: 20, the most one user may have on a message.
    for n in 0..19 {
        let (status, _) = net
            .call(Method::PUT, &client(&format!("e{n}")), Some(&bob), None)
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let answer = net
        .call(Method::PUT, &client("one-too-many"), Some(&bob), None)
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    let answer = net
        .call(
            Method::PUT,
            &format!("/v1/chats/{dm}/messages/m999/reactions/x"),
            Some(&bob),
            None,
        )
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
    net.user("carol").await;
    let answer = net
        .call(
            Method::PUT,
            &control("👍"),
            None,
            Some(json!({"sender": "carol"})),
        )
        .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "not_member");
    let answer = net
        .call(Method::PUT, &control("👍"), None, Some(json!({})))
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
}

#[tokio::test]
async fn read_receipts_move_forward_and_are_pushed() {
    let net = Net::start().await;
    let (alice, _bob, dm, mut alice_socket, mut bob_socket) = pair(&net).await;
    let first = net.post(&dm, "bob", "one").await;
    let second = net.post(&dm, "bob", "two").await;
    for socket in [&mut alice_socket, &mut bob_socket] {
        events(socket, 2).await;
    }
    let path = format!("/v1/chats/{dm}/read");
    let (status, answer) = net
        .call(
            Method::POST,
            &path,
            Some(&alice),
            Some(json!({"up_to": second["id"]})),
        )
        .await;
    assert_eq!((status, answer), (StatusCode::OK, json!({})));
    let pushed = json!({"type": "read", "chat_id": dm, "user_id": "alice", "up_to": second["id"]});
    expect_everywhere(&mut [&mut alice_socket, &mut bob_socket], &pushed).await;

    // Going back (or staying) changes nothing and pushes nothing.
    for target in [&first, &second] {
        let (status, _) = net
            .call(
                Method::POST,
                &path,
                Some(&alice),
                Some(json!({"up_to": target["id"]})),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    // The control API reads as bob.
    let control = format!("/control/chats/{dm}/read");
    net.control(
        Method::POST,
        &control,
        Some(json!({"sender": "bob", "up_to": first["id"]})),
    )
    .await;
    let pushed = json!({"type": "read", "chat_id": dm, "user_id": "bob", "up_to": first["id"]});
    expect_everywhere(&mut [&mut alice_socket, &mut bob_socket], &pushed).await;
    let markers = net.control(Method::GET, &control, None).await;
    assert_eq!(
        markers,
        json!({"read": {"alice": second["id"], "bob": first["id"]}})
    );

    // An unknown message is 400; a non-member 403; an unknown chat 404.
    let answer = net
        .call(
            Method::POST,
            &path,
            Some(&alice),
            Some(json!({"up_to": "m999"})),
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    net.user("carol").await;
    let answer = net
        .call(
            Method::POST,
            &control,
            None,
            Some(json!({"sender": "carol", "up_to": first["id"]})),
        )
        .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "not_member");
    let answer = net
        .call(
            Method::POST,
            "/v1/chats/c99/read",
            Some(&alice),
            Some(json!({"up_to": "m1"})),
        )
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
    for socket in [&mut alice_socket, &mut bob_socket] {
        assert_quiet(socket).await;
    }
}

#[tokio::test]
async fn typing_is_pushed_on_every_call() {
    let net = Net::start().await;
    let (alice, _bob, dm, mut alice_socket, mut bob_socket) = pair(&net).await;
    let path = format!("/v1/chats/{dm}/typing");
    let control = format!("/control/chats/{dm}/typing");
    for typing in [true, true, false] {
        let (status, answer) = net
            .call(
                Method::POST,
                &path,
                Some(&alice),
                Some(json!({"typing": typing})),
            )
            .await;
        assert_eq!((status, answer), (StatusCode::OK, json!({})));
        let pushed = json!({"type": "typing", "chat_id": dm, "user_id": "alice", "typing": typing});
        expect_everywhere(&mut [&mut alice_socket, &mut bob_socket], &pushed).await;
    }
    net.control(
        Method::POST,
        &control,
        Some(json!({"sender": "bob", "typing": true})),
    )
    .await;
    let pushed = json!({"type": "typing", "chat_id": dm, "user_id": "bob", "typing": true});
    expect_everywhere(&mut [&mut alice_socket, &mut bob_socket], &pushed).await;
    let now = net.control(Method::GET, &control, None).await;
    assert_eq!(now, json!({"typing": ["bob"]}));

    let answer = net
        .call(
            Method::POST,
            &path,
            Some(&alice),
            Some(json!({"typing": "yes"})),
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    net.user("carol").await;
    let answer = net
        .call(
            Method::POST,
            &control,
            None,
            Some(json!({"sender": "carol", "typing": true})),
        )
        .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "not_member");
    for socket in [&mut alice_socket, &mut bob_socket] {
        assert_quiet(socket).await;
    }
}

#[tokio::test]
async fn presence_reaches_everyone_sharing_a_chat() {
    let net = Net::start().await;
    let (alice, _bob, _dm, mut alice_socket, mut bob_socket) = pair(&net).await;
    net.user("carol").await;
    net.user("dave").await;
    net.group("Team", &["bob", "carol"]).await;
    let carol = net.login("carol").await;
    let dave = net.login("dave").await;
    let mut carol_socket = net.connect_live(&carol, "carol").await;
    let mut dave_socket = net.connect_live(&dave, "dave").await;
    events(&mut bob_socket, 1).await;

    let status = net
        .control(Method::GET, "/control/users/alice/presence", None)
        .await;
    assert_eq!(status, json!({"user_id": "alice", "presence": "offline"}));
    let (code, answer) = net
        .call(
            Method::POST,
            "/v1/presence",
            Some(&alice),
            Some(json!({"presence": "online"})),
        )
        .await;
    assert_eq!((code, answer), (StatusCode::OK, json!({})));
    let pushed = json!({"type": "presence", "user_id": "alice", "presence": "online"});
    // Alice herself and bob (their DM); not carol or dave, who share no chat with her.
    expect_everywhere(&mut [&mut alice_socket, &mut bob_socket], &pushed).await;
    // No change, no event.
    net.call(
        Method::POST,
        "/v1/presence",
        Some(&alice),
        Some(json!({"presence": "online"})),
    )
    .await;

    // Bob shares a chat with alice and with carol.
    net.control(
        Method::POST,
        "/control/presence",
        Some(json!({"user_id": "bob", "presence": "online"})),
    )
    .await;
    let pushed = json!({"type": "presence", "user_id": "bob", "presence": "online"});
    expect_everywhere(
        &mut [&mut alice_socket, &mut bob_socket, &mut carol_socket],
        &pushed,
    )
    .await;
    let status = net
        .control(Method::GET, "/control/users/bob/presence", None)
        .await;
    assert_eq!(status["presence"], "online");

    let answer = net
        .call(
            Method::POST,
            "/v1/presence",
            Some(&alice),
            Some(json!({"presence": "away"})),
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    let answer = net
        .call(
            Method::POST,
            "/control/presence",
            None,
            Some(json!({"user_id": "zed", "presence": "online"})),
        )
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
    for socket in [
        &mut alice_socket,
        &mut bob_socket,
        &mut carol_socket,
        &mut dave_socket,
    ] {
        assert_quiet(socket).await;
    }
}

#[tokio::test]
async fn media_uploads_downloads_and_attachments() {
    let net = Net::start().await;
    let (alice, bob, dm, mut alice_socket, mut bob_socket) = pair(&net).await;

    // A 3 MiB upload: over the JSON body limit, under the media one.
    let image: Vec<u8> = (0..3 * 1024 * 1024).map(|n: u32| (n % 251) as u8).collect();
    let (status, _, body) = net
        .raw(
            Method::POST,
            "/v1/media",
            Some(&alice),
            Some("image/png"),
            image.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let info: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(info["size"], image.len());
    assert_eq!(info["content_type"], "image/png");
    let media_id = id(&info);
    let (status, headers, bytes) = net
        .raw(
            Method::GET,
            &format!("/v1/media/{media_id}"),
            Some(&bob),
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(headers["content-length"], image.len().to_string().as_str());
    assert!(bytes == image, "downloaded bytes differ");
    let (status, _, _) = net
        .raw(
            Method::GET,
            &format!("/v1/media/{media_id}"),
            None,
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The control API uploads and downloads from the same store; avatars live there too.
    let (status, _, body) = net
        .raw(
            Method::POST,
            "/control/media",
            None,
            Some("audio/ogg"),
            b"OggS voice".to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let voice: Value = serde_json::from_slice(&body).expect("json");
    let (_, _, bytes) = net
        .raw(
            Method::GET,
            &format!("/v1/media/{}", id(&voice)),
            Some(&bob),
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(bytes, b"OggS voice");
    let (_, _, body) = net
        .raw(
            Method::PUT,
            "/control/users/bob/avatar",
            None,
            Some("image/jpeg"),
            b"face".to_vec(),
        )
        .await;
    let bob_user: Value = serde_json::from_slice(&body).expect("json");
    let avatar = bob_user["avatar"].as_str().expect("avatar");
    let (_, headers, bytes) = net
        .raw(
            Method::GET,
            &format!("/control/media/{avatar}"),
            None,
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(
        (headers["content-type"].to_str().ok(), bytes),
        (Some("image/jpeg"), b"face".to_vec())
    );

    // An image with a caption; the server fills size and content type.
    let caption = json!([{"type": "italic", "offset": 0, "length": 3}]);
    let sent = net
        .send_ok(
            &alice,
            &dm,
            json!({"txn_id": "img", "text": "cat pic", "entities": caption,
                   "media": {"id": media_id, "kind": "image", "name": "cat.png",
                             "width": 640, "height": 480, "size": 1, "content_type": "lies"}}),
        )
        .await;
    assert_eq!(
        sent["media"],
        json!({"id": media_id, "kind": "image", "name": "cat.png", "content_type": "image/png",
               "size": image.len(), "width": 640, "height": 480})
    );
    assert_eq!(sent["text"], "cat pic");
    let voice_message = net
        .post_content(
            &dm,
            json!({"sender": "bob", "media": {"id": voice["id"], "kind": "voice", "name": "v.ogg",
                   "duration_ms": 1500, "waveform": [0, 128, 255]}}),
        )
        .await;
    assert_eq!(voice_message["media"]["waveform"], json!([0, 128, 255]));
    assert_eq!(voice_message["media"]["duration_ms"], 1500);
    assert_eq!(voice_message["text"], "");
    let location = net
        .send_ok(
            &alice,
            &dm,
            json!({"txn_id": "loc", "location": {"lat": 52.52, "lon": 13.405, "name": "Berlin"}}),
        )
        .await;
    assert_eq!(
        location["location"],
        json!({"lat": 52.52, "lon": 13.405, "name": "Berlin"})
    );
    assert_eq!(location["media"], Value::Null);
    let contact = net
        .post_content(
            &dm,
            json!({"sender": "bob", "contact": {"name": "Carol", "phone": "+15550100", "user_id": "carol"}}),
        )
        .await;
    assert_eq!(
        contact["contact"],
        json!({"name": "Carol", "phone": "+15550100", "user_id": "carol"})
    );
    for socket in [&mut alice_socket, &mut bob_socket] {
        let got = events(socket, 4).await;
        let messages: Vec<&Value> = got.iter().map(|e| &e["message"]).collect();
        assert_eq!(messages, [&sent, &voice_message, &location, &contact]);
    }
    for kind in ["video", "audio", "file", "sticker"] {
        let body = json!({"txn_id": kind, "media": {"id": media_id, "kind": kind, "name": "x"}});
        net.send_ok(&alice, &dm, body).await;
    }

    // Bad attachments.
    let bad = [
        json!({"media": {"id": "f999", "kind": "image", "name": "x"}}),
        json!({"media": {"id": media_id, "kind": "hologram", "name": "x"}}),
        json!({"media": {"id": media_id, "kind": "image"}}),
        json!({"media": {"id": media_id, "kind": "voice", "name": "x", "waveform": vec![0; 1025]}}),
        json!({"media": {"id": media_id, "kind": "voice", "name": "x", "waveform": [256]}}),
        json!({"media": {"id": media_id, "kind": "image", "name": "x"}, "location": {"lat": 0, "lon": 0}}),
        json!({"location": {"lat": 0, "lon": 0}, "contact": {"name": "x"}}),
        json!({"text": "words", "location": {"lat": 0, "lon": 0}}),
        json!({"text": "words", "contact": {"name": "x"}}),
        json!({"location": {"lat": 91, "lon": 0}}),
        json!({"location": {"lat": 0, "lon": -180.5}}),
        json!({"location": {"lat": "north", "lon": 0}}),
        json!({"contact": {"name": ""}}),
        json!({"contact": {"name": "x", "phone": "1".repeat(65)}}),
        json!({"contact": {"name": "x", "user_id": "no/slash"}}),
    ];
    for (n, mut content) in bad.into_iter().enumerate() {
        content["txn_id"] = json!(format!("bad{n}"));
        let answer = net.send(&alice, &dm, content).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    }

    // Upload limits: empty, no content type, over 25 MiB.
    let (status, _, _) = net
        .raw(
            Method::POST,
            "/v1/media",
            Some(&alice),
            Some("image/png"),
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, body) = net
        .raw(Method::POST, "/control/media", None, None, b"data".to_vec())
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let body: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(body["error"], "bad_request");
    let huge = vec![0u8; 25 * 1024 * 1024 + 1];
    let (status, _, body) = net
        .raw(
            Method::POST,
            "/v1/media",
            Some(&alice),
            Some("video/mp4"),
            huge,
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(body["error"], "bad_request");
    let answer = net
        .call(Method::GET, "/v1/media/f999", Some(&alice), None)
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn group_settings_admins_and_membership_from_the_client() {
    let net = Net::start().await;
    for user in ["alice", "bob", "carol", "dave"] {
        net.user(user).await;
    }
    let alice = net.login("alice").await;
    let bob = net.login("bob").await;
    let mut alice_socket = net.connect(&alice, 0).await;
    let mut bob_socket = net.connect(&bob, 0).await;

    // Alice creates a group: she is its first member and admin.
    let (status, group) = net
        .call(
            Method::POST,
            "/v1/groups",
            Some(&alice),
            Some(json!({"name": "Plans", "members": ["bob", "alice", "bob"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{group}");
    let members: Vec<&Value> = group["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| &m["id"])
        .collect();
    assert_eq!(members, [&json!("alice"), &json!("bob")]);
    assert_eq!(group["admins"], json!(["alice"]));
    assert_eq!(
        (&group["topic"], &group["avatar"]),
        (&Value::Null, &Value::Null)
    );
    let gid = id(&group);
    expect_everywhere(
        &mut [&mut alice_socket, &mut bob_socket],
        &json!({"type": "chat", "chat": group}),
    )
    .await;

    // Settings: admins only; a change pushes the whole chat to every member.
    let path = format!("/v1/chats/{gid}");
    let (_, _, body) = net
        .raw(
            Method::POST,
            "/v1/media",
            Some(&alice),
            Some("image/png"),
            b"logo".to_vec(),
        )
        .await;
    let logo: Value = serde_json::from_slice(&body).expect("json");
    let (status, changed) = net
        .call(
            Method::PATCH,
            &path,
            Some(&alice),
            Some(json!({"name": "Plans 2", "topic": "what next", "avatar": logo["id"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(
        (&changed["name"], &changed["topic"], &changed["avatar"]),
        (&json!("Plans 2"), &json!("what next"), &logo["id"])
    );
    expect_everywhere(
        &mut [&mut alice_socket, &mut bob_socket],
        &json!({"type": "chat", "chat": changed}),
    )
    .await;
    // Nothing changes: no event. `null` clears, absent keeps.
    let (_, same) = net
        .call(
            Method::PATCH,
            &path,
            Some(&alice),
            Some(json!({"name": "Plans 2"})),
        )
        .await;
    assert_eq!(same, changed);
    let (_, cleared) = net
        .call(
            Method::PATCH,
            &path,
            Some(&alice),
            Some(json!({"topic": null, "avatar": null})),
        )
        .await;
    assert_eq!(
        (&cleared["name"], &cleared["topic"], &cleared["avatar"]),
        (&json!("Plans 2"), &Value::Null, &Value::Null)
    );
    expect_everywhere(
        &mut [&mut alice_socket, &mut bob_socket],
        &json!({"type": "chat", "chat": cleared}),
    )
    .await;

    let answer = net
        .call(
            Method::PATCH,
            &path,
            Some(&bob),
            Some(json!({"name": "Mine"})),
        )
        .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "forbidden");
    for bad in [
        json!({"avatar": "f999"}),
        json!({"topic": "x".repeat(4097)}),
        json!({"name": "a\u{1}"}),
        json!({"name": null}),
    ] {
        let answer = net
            .call(Method::PATCH, &path, Some(&alice), Some(bad))
            .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    }
    let (status, _) = net
        .call(
            Method::PATCH,
            &path,
            Some(&alice),
            Some(json!({"topic": "line one\nline two"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for socket in [&mut alice_socket, &mut bob_socket] {
        events(socket, 1).await;
    }

    // Members: admins add and remove; anyone may leave; non-admins may not kick.
    let members_path = format!("/v1/groups/{gid}/members");
    let answer = net
        .call(
            Method::POST,
            &members_path,
            Some(&bob),
            Some(json!({"user_id": "carol"})),
        )
        .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "forbidden");
    let (status, grown) = net
        .call(
            Method::POST,
            &members_path,
            Some(&alice),
            Some(json!({"user_id": "carol"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(grown["members"].as_array().expect("members").len(), 3);
    for socket in [&mut alice_socket, &mut bob_socket] {
        assert_eq!(next_event(socket).await["type"], "member_joined");
    }
    let answer = net
        .call(
            Method::DELETE,
            &format!("{members_path}/carol"),
            Some(&bob),
            None,
        )
        .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "forbidden");

    // Admins: alice makes bob admin, who may then kick carol.
    let (status, promoted) = net
        .call(
            Method::POST,
            &format!("/v1/groups/{gid}/admins"),
            Some(&alice),
            Some(json!({"user_id": "bob"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(promoted["admins"], json!(["alice", "bob"]));
    expect_everywhere(
        &mut [&mut alice_socket, &mut bob_socket],
        &json!({"type": "chat", "chat": promoted}),
    )
    .await;
    let (status, _) = net
        .call(
            Method::DELETE,
            &format!("{members_path}/carol"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let left = json!({"type": "member_left", "chat_id": gid, "user_id": "carol"});
    expect_everywhere(&mut [&mut alice_socket, &mut bob_socket], &left).await;
    let answer = net
        .call(
            Method::POST,
            &format!("/v1/groups/{gid}/admins"),
            Some(&bob),
            Some(json!({"user_id": "carol"})),
        )
        .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "not_member");
    // Bob unmakes alice, then leaves himself (no longer admin of anything).
    let (_, demoted) = net
        .call(
            Method::DELETE,
            &format!("/v1/groups/{gid}/admins/alice"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(demoted["admins"], json!(["bob"]));
    expect_everywhere(
        &mut [&mut alice_socket, &mut bob_socket],
        &json!({"type": "chat", "chat": demoted}),
    )
    .await;
    let (status, after) = net
        .call(
            Method::DELETE,
            &format!("{members_path}/bob"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(after["admins"], json!([]));
    let left = json!({"type": "member_left", "chat_id": gid, "user_id": "bob"});
    expect_everywhere(&mut [&mut alice_socket, &mut bob_socket], &left).await;

    // DMs: opened (or found) by the client; no settings or members to change there.
    let (status, dm) = net
        .call(
            Method::POST,
            "/v1/dms",
            Some(&alice),
            Some(json!({"user_id": "dave"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((&dm["kind"], &dm["admins"]), (&json!("dm"), &json!([])));
    assert_eq!(next_event(&mut alice_socket).await["chat"], dm);
    let (_, again) = net
        .call(
            Method::POST,
            "/v1/dms",
            Some(&alice),
            Some(json!({"user_id": "dave"})),
        )
        .await;
    assert_eq!(again, dm);
    assert_eq!(net.dm("dave", "alice").await, dm);
    let answer = net
        .call(
            Method::POST,
            "/v1/dms",
            Some(&alice),
            Some(json!({"user_id": "alice"})),
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    let answer = net
        .call(
            Method::POST,
            "/v1/dms",
            Some(&alice),
            Some(json!({"user_id": "zed"})),
        )
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
    let answer = net
        .call(
            Method::PATCH,
            &format!("/v1/chats/{}", id(&dm)),
            Some(&alice),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    let answer = net
        .call(
            Method::POST,
            "/v1/groups",
            Some(&alice),
            Some(json!({"name": "x", "members": ["zed"]})),
        )
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "not_found");

    // Resolving an identifier for "start chat".
    let (status, found) = net
        .call(Method::GET, "/v1/resolve/dave", Some(&alice), None)
        .await;
    assert_eq!(
        (status, found),
        (
            StatusCode::OK,
            json!({"id": "dave", "name": "User dave", "avatar": null})
        )
    );
    let answer = net
        .call(
            Method::GET,
            &format!("/v1/resolve/{}", enc("+15550100")),
            Some(&alice),
            None,
        )
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
    for socket in [&mut alice_socket, &mut bob_socket] {
        assert_quiet(socket).await;
    }
}

#[tokio::test]
async fn group_settings_admins_and_deletion_from_the_control_api() {
    let net = Net::start().await;
    for user in ["alice", "bob", "carol"] {
        net.user(user).await;
    }
    let group = net.group("Team", &["bob", "alice", "carol"]).await;
    // The first listed member created it.
    assert_eq!(group["admins"], json!(["bob"]));
    let gid = id(&group);
    let alice = net.login("alice").await;
    let carol = net.login("carol").await;
    let mut alice_socket = net.connect_live(&alice, "alice").await;
    let mut carol_socket = net.connect_live(&carol, "carol").await;

    let path = format!("/control/chats/{gid}");
    let answer = net
        .call(
            Method::PATCH,
            &path,
            None,
            Some(json!({"sender": "alice", "topic": "t"})),
        )
        .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "forbidden");
    let changed = net
        .control(
            Method::PATCH,
            &path,
            Some(json!({"sender": "bob", "topic": "t"})),
        )
        .await;
    assert_eq!(changed["topic"], "t");
    expect_everywhere(
        &mut [&mut alice_socket, &mut carol_socket],
        &json!({"type": "chat", "chat": changed}),
    )
    .await;
    assert_eq!(net.control(Method::GET, &path, None).await, changed);

    let admins = format!("/control/groups/{gid}/admins");
    let promoted = net
        .control(Method::POST, &admins, Some(json!({"user_id": "alice"})))
        .await;
    assert_eq!(promoted["admins"], json!(["bob", "alice"]));
    expect_everywhere(
        &mut [&mut alice_socket, &mut carol_socket],
        &json!({"type": "chat", "chat": promoted}),
    )
    .await;
    // Already admin / not admin: nothing changes, nothing is pushed.
    assert_eq!(
        net.control(Method::POST, &admins, Some(json!({"user_id": "alice"})))
            .await,
        promoted
    );
    assert_eq!(
        net.control(Method::DELETE, &format!("{admins}/carol"), None)
            .await,
        promoted
    );
    let demoted = net
        .control(Method::DELETE, &format!("{admins}/bob"), None)
        .await;
    assert_eq!(demoted["admins"], json!(["alice"]));
    expect_everywhere(
        &mut [&mut alice_socket, &mut carol_socket],
        &json!({"type": "chat", "chat": demoted}),
    )
    .await;
    net.user("dave").await;
    let answer = net
        .call(
            Method::POST,
            &admins,
            None,
            Some(json!({"user_id": "dave"})),
        )
        .await;
    assert_error(&answer, StatusCode::FORBIDDEN, "not_member");
    let answer = net
        .call(Method::POST, &admins, None, Some(json!({"user_id": "zed"})))
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
    let dm = id(&net.dm("alice", "carol").await);
    let answer = net
        .call(
            Method::POST,
            &format!("/control/groups/{dm}/admins"),
            None,
            Some(json!({"user_id": "alice"})),
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    for socket in [&mut alice_socket, &mut carol_socket] {
        assert_eq!(next_event(socket).await["type"], "chat");
    }

    // Deleting a chat: chat_deleted to every member, then it is gone.
    net.post(&gid, "bob", "last words").await;
    for socket in [&mut alice_socket, &mut carol_socket] {
        next_event(socket).await;
    }
    assert_eq!(net.control(Method::DELETE, &path, None).await, json!({}));
    expect_everywhere(
        &mut [&mut alice_socket, &mut carol_socket],
        &json!({"type": "chat_deleted", "chat_id": gid}),
    )
    .await;
    for (method, path) in [
        (Method::GET, path.clone()),
        (Method::DELETE, path.clone()),
        (Method::GET, format!("{path}/messages")),
    ] {
        let answer = net.call(method, &path, None, None).await;
        assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
    }
    let (_, chats) = net.call(Method::GET, "/v1/chats", Some(&alice), None).await;
    let ids: Vec<&Value> = chats["chats"]
        .as_array()
        .expect("chats")
        .iter()
        .map(|c| &c["id"])
        .collect();
    assert_eq!(ids, [&json!(dm)]);
    // A deleted DM is replaced by a new one with a new id.
    net.control(Method::DELETE, &format!("/control/chats/{dm}"), None)
        .await;
    let fresh = id(&net.dm("alice", "carol").await);
    assert_ne!(fresh, dm);
}

#[tokio::test]
async fn the_rate_limit_answers_429_for_the_next_sends() {
    let net = Net::start().await;
    let (alice, bob, dm, mut alice_socket, _bob_socket) = pair(&net).await;
    let unknown = net
        .call(
            Method::POST,
            "/control/ratelimit",
            None,
            Some(json!({"account": "zed", "count": 1})),
        )
        .await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "not_found");
    net.control(
        Method::POST,
        "/control/ratelimit",
        Some(json!({"account": "alice", "count": 3})),
    )
    .await;

    let response = net
        .http
        .post(format!("{}/v1/chats/{dm}/messages", net.server.url()))
        .bearer_auth(&alice)
        .json(&json!({"txn_id": "r1", "text": "hi"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(body["retry_after_ms"], 200);
    assert!(body["message"].is_string());

    // Reading, typing and the control API are not limited; edits, deletes and reactions are.
    let (status, _) = net.call(Method::GET, "/v1/chats", Some(&alice), None).await;
    assert_eq!(status, StatusCode::OK);
    let m = net.post(&dm, "alice", "via control").await;
    let answer = net
        .call(
            Method::PATCH,
            &format!("/v1/chats/{dm}/messages/{}", id(&m)),
            Some(&alice),
            Some(json!({"text": "x"})),
        )
        .await;
    assert_error(&answer, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let answer = net
        .call(
            Method::PUT,
            &format!("/v1/chats/{dm}/messages/{}/reactions/x", id(&m)),
            Some(&alice),
            None,
        )
        .await;
    assert_error(&answer, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    // Bob is not limited.
    net.send_ok(&bob, &dm, json!({"txn_id": "b1", "text": "fine"}))
        .await;
    // The limit is spent: the retry goes through, once.
    let sent = net
        .send_ok(&alice, &dm, json!({"txn_id": "r1", "text": "hi"}))
        .await;
    let events_now = events(&mut alice_socket, 3).await;
    assert_eq!(events_now[2]["message"], sent);
    assert_quiet(&mut alice_socket).await;

    // count 0 lifts a limit.
    net.control(
        Method::POST,
        "/control/ratelimit",
        Some(json!({"account": "alice", "count": 5})),
    )
    .await;
    net.control(
        Method::POST,
        "/control/ratelimit",
        Some(json!({"account": "alice", "count": 0})),
    )
    .await;
    net.send_ok(&alice, &dm, json!({"txn_id": "r2", "text": "free"}))
        .await;
}

#[tokio::test]
async fn every_member_sees_every_kind_of_event_in_the_same_order() {
    let net = Net::start().await;
    for user in ["alice", "bob", "carol"] {
        net.user(user).await;
    }
    let alice = net.login("alice").await;
    let bob = net.login("bob").await;
    let carol = net.login("carol").await;
    let (_, group) = net
        .call(
            Method::POST,
            "/v1/groups",
            Some(&alice),
            Some(json!({"name": "G", "members": ["bob", "carol"]})),
        )
        .await;
    let gid = id(&group);
    let mut sockets = [
        net.connect(&alice, 0).await,
        net.connect(&bob, 0).await,
        net.connect(&carol, 0).await,
    ];

    // A mix of client and control actions, interleaved.
    let m1 = net
        .send_ok(&alice, &gid, json!({"txn_id": "1", "text": "one"}))
        .await;
    let m1_path = format!("/v1/chats/{gid}/messages/{}", id(&m1));
    net.call(
        Method::PUT,
        &format!("{m1_path}/reactions/{}", enc("👍")),
        Some(&bob),
        None,
    )
    .await;
    net.control(
        Method::POST,
        &format!("/control/chats/{gid}/typing"),
        Some(json!({"sender": "carol", "typing": true})),
    )
    .await;
    let m2 = net
        .post_content(
            &gid,
            json!({"sender": "carol", "text": "two", "reply_to": m1["id"]}),
        )
        .await;
    net.call(
        Method::PATCH,
        &m1_path,
        Some(&alice),
        Some(json!({"text": "one!"})),
    )
    .await;
    net.call(
        Method::POST,
        &format!("/v1/chats/{gid}/read"),
        Some(&bob),
        Some(json!({"up_to": m2["id"]})),
    )
    .await;
    net.call(
        Method::PATCH,
        &format!("/v1/chats/{gid}"),
        Some(&alice),
        Some(json!({"topic": "t"})),
    )
    .await;
    net.call(
        Method::POST,
        "/v1/presence",
        Some(&carol),
        Some(json!({"presence": "online"})),
    )
    .await;
    net.call(
        Method::DELETE,
        &format!("/v1/chats/{gid}/messages/{}", id(&m2)),
        Some(&alice),
        None,
    )
    .await;
    net.control(Method::DELETE, &format!("/control/chats/{gid}"), None)
        .await;

    let expected = [
        "chat",
        "message",
        "reaction",
        "typing",
        "message",
        "message_edited",
        "read",
        "chat",
        "presence",
        "message_deleted",
        "chat_deleted",
    ];
    let mut logs = Vec::new();
    for socket in &mut sockets {
        let got = events(socket, expected.len()).await;
        assert_eq!(
            seqs(&got),
            (1..=expected.len() as u64).collect::<Vec<u64>>()
        );
        let kinds: Vec<&str> = got
            .iter()
            .map(|e| e["type"].as_str().expect("type"))
            .collect();
        assert_eq!(kinds, expected);
        assert_quiet(socket).await;
        logs.push(got);
    }
    // Same events, same order, for everyone (the logs are identical here: same chat only).
    assert_eq!(logs[0], logs[1]);
    assert_eq!(logs[1], logs[2]);
    assert_eq!(logs[0][9]["by"], "alice");
    // The control API shows the same log.
    let page = net
        .control(
            Method::GET,
            "/control/users/bob/events?since=8&limit=2",
            None,
        )
        .await;
    assert_eq!(page["events"], json!(logs[1][8..10]));
    let page = net
        .control(Method::GET, "/control/users/bob/events", None)
        .await;
    assert_eq!(page["events"], json!(logs[1]));
}

#[tokio::test]
async fn history_pages_backwards_for_members() {
    let net = Net::start().await;
    let (alice, _bob, dm, _a, _b) = pair(&net).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(id(&net.post(&dm, "bob", &format!("n{n}")).await));
    }
    let path = format!("/v1/chats/{dm}/messages");
    let texts = |value: &Value| -> Vec<String> {
        value["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| m["text"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    let (_, all) = net.call(Method::GET, &path, Some(&alice), None).await;
    assert_eq!(texts(&all), ["n0", "n1", "n2", "n3", "n4"]);
    let (_, newest) = net
        .call(Method::GET, &format!("{path}?limit=2"), Some(&alice), None)
        .await;
    assert_eq!(texts(&newest), ["n3", "n4"]);
    let (_, older) = net
        .call(
            Method::GET,
            &format!("{path}?limit=2&before={}", ids[3]),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(texts(&older), ["n1", "n2"]);
    let (status, one) = net
        .call(
            Method::GET,
            &format!("{path}/{}", ids[0]),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!((status, &one["text"]), (StatusCode::OK, &json!("n0")));
    let answer = net
        .call(
            Method::GET,
            &format!("{path}?before=m999"),
            Some(&alice),
            None,
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    let answer = net
        .call(Method::GET, &format!("{path}?limit=-1"), Some(&alice), None)
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    net.user("carol").await;
    let carol = net.login("carol").await;
    let answer = net.call(Method::GET, &path, Some(&carol), None).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "not_member");
}
