//! ferry SIGKILLed in the middle of a two-way burst loses nothing and duplicates nothing.

use std::time::{Duration, Instant};

use crate::{
    both_backends,
    common::{Backend, Ferry, Sim, Slot, WAIT, logged_in_user},
};

const BURST: usize = 200;

async fn sigkill_mid_burst_loses_and_duplicates_nothing(backend: Backend) {
    let slot = Slot::claim();
    let sim = Sim::start().await;
    sim.user("alice", "Alice").await;
    sim.user("bob", "Bob").await;
    let dm = sim.dm("alice", "bob").await;
    let mut ferry = Ferry::start(&slot, backend, &sim.url()).await;
    let (user, management) = logged_in_user(&slot, &sim, "alice").await;
    let room = user.wait_portals(1, &management).await[0].clone();
    let ghost_bob = slot.ghost("bob");
    user.wait_members(&room, "bob's ghost", |m| m.contains(&ghost_bob))
        .await;

    // Both directions at once: bob on sim, the user on Matrix.
    let remote = {
        let url = sim.url();
        let dm = dm.clone();
        tokio::spawn(async move {
            let client = crate::common::http();
            for i in 0..BURST {
                let body = serde_json::json!({"sender": "bob", "text": format!("r{i}")});
                let response = client
                    .post(format!("{url}/control/chats/{dm}/messages"))
                    .json(&body)
                    .send()
                    .await
                    .expect("sim send");
                assert!(response.status().is_success());
            }
        })
    };
    let mut killed = false;
    for i in 0..BURST {
        user.send_text(&room, &format!("m{i}")).await;
        if !killed && i == BURST / 3 {
            ferry.kill();
            killed = true;
            // Keep sending while ferry is down: Synapse queues the transactions.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        if killed && i == BURST / 2 {
            ferry.spawn().await;
        }
    }
    remote.await.expect("remote burst");

    // Everything arrives exactly once, in order, both ways.
    let expected_remote: Vec<String> = (0..BURST).map(|i| format!("r{i}")).collect();
    let expected_matrix: Vec<String> = (0..BURST).map(|i| format!("m{i}")).collect();
    let deadline = Instant::now() + WAIT * 3;
    loop {
        let in_matrix: Vec<String> = user
            .messages(&room)
            .await
            .into_iter()
            .filter(|(s, _, b)| *s == ghost_bob && b.starts_with('r'))
            .map(|(_, _, b)| b)
            .collect();
        let on_sim: Vec<String> = sim
            .messages(&dm)
            .await
            .into_iter()
            .filter(|(s, _)| s == "alice")
            .map(|(_, t)| t)
            .collect();
        if in_matrix.len() >= BURST && on_sim.len() >= BURST {
            assert_eq!(
                in_matrix, expected_remote,
                "sim -> Matrix: every message once, in order"
            );
            assert_eq!(
                on_sim, expected_matrix,
                "Matrix -> sim: every message once, in order"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after restart only {} of {BURST} reached Matrix and {} of {BURST} reached sim\nlog:\n{}",
            in_matrix.len(),
            on_sim.len(),
            ferry.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Nothing more trickles in afterwards (no late duplicates).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let count = user
        .messages(&room)
        .await
        .iter()
        .filter(|(s, _, _)| *s == ghost_bob)
        .count();
    assert_eq!(count, BURST);
    assert_eq!(
        sim.messages(&dm)
            .await
            .iter()
            .filter(|(s, _)| s == "alice")
            .count(),
        BURST
    );
}
both_backends!(sigkill_mid_burst_loses_and_duplicates_nothing);
