//! Wiring: builds every part from the config and runs the bridge until a signal stops it.

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::Context;

use crate::{
    bridge::Bridge,
    config::{Config, CryptoInputs, DeviceCreation, EncryptionConfig},
    crypto::Crypto,
    db::Db,
    matrix::{appservice, client::MatrixClient, intent::Intents, registration::Registration},
    metrics::Metrics,
    network::{
        Network,
        signal::SignalNetwork,
        sim::SimNetwork,
        telegram::{TelegramConfig, TelegramNetwork},
        whatsapp::WhatsAppNetwork,
    },
};

/// Runs the bridge: returns when SIGINT/SIGTERM arrives (after a clean stop) or on a fatal error.
pub async fn run(config: Config, config_dir: &Path) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let registration_path = config_dir.join(&config.appservice.registration);
    let registration = Registration::load(&registration_path)?;
    let metrics = Metrics::new();
    let db = Db::connect(&config.database)
        .await
        .context("cannot open the database")?;
    let client = MatrixClient::new(
        config.homeserver.address.as_str(),
        &registration.as_token,
        Duration::from_secs(config.bridge.max_retry_seconds),
        metrics.clone(),
    );
    let mut intents = Intents::new(client.clone(), config.bot_user_id());
    let encryption = resolve_encryption(&config, &registration);
    let crypto = if encryption.allow {
        tracing::info!(inputs = ?encryption.inputs, devices = ?encryption.devices, "encryption enabled");
        let (crypto, late) =
            Crypto::new(encryption.clone(), db.clone(), client, config.bot_user_id());
        intents = intents.with_crypto(crypto.clone());
        Some((crypto, late))
    } else {
        None
    };
    let mut networks: Vec<Arc<dyn Network>> = Vec::new();
    if config.networks.sim.enabled {
        networks.push(Arc::new(SimNetwork::new(config.networks.sim.clone())));
    }
    if config.networks.signal.enabled {
        networks.push(Arc::new(SignalNetwork::new(
            config.networks.signal.clone(),
            db.clone(),
        )));
    }
    if config.networks.telegram.enabled {
        networks.push(Arc::new(TelegramNetwork::new(
            TelegramConfig::from_config(&config.networks.telegram),
            db.clone(),
        )));
    }
    if config.networks.whatsapp.enabled {
        networks.push(Arc::new(WhatsAppNetwork::new(
            config.networks.whatsapp.clone(),
            db.clone(),
            config.encryption.pickle_key.expose(),
        )));
    }
    let (bridge, signals) = Bridge::new(
        config.clone(),
        db.clone(),
        intents,
        metrics.clone(),
        networks,
    );

    // Listen first, so the homeserver's retries find us quickly; transactions that arrive now
    // are stored and queued behind the replayed inbox.
    let addr = std::net::SocketAddr::new(config.appservice.hostname, config.appservice.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    bridge.start_sessions().await?;
    bridge.replay_inbox().await?;
    tokio::spawn(bridge.clone().run_sessions(signals));
    tokio::spawn(bridge.clone().run_router());
    let router = appservice::router(
        &registration.hs_token,
        db.clone(),
        Arc::new(bridge.clone()),
        metrics.clone(),
        config.appservice.max_body_bytes,
        encryption.allow && encryption.inputs == CryptoInputs::Push,
    );
    if let Some((crypto, late)) = crypto {
        crypto.start();
        tokio::spawn(route_late_events(bridge.clone(), late));
    }
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown_signal())
            .await
    });
    if config.metrics.enabled {
        let listen = config.metrics.listen;
        tokio::spawn(async move {
            if let Err(err) = metrics.serve(listen).await {
                tracing::error!(%err, %listen, "metrics listener failed");
            }
        });
    }
    tracing::info!(%addr, elapsed_ms = started.elapsed().as_millis() as u64, "ferry is listening");
    let prepare_bridge = bridge.clone();
    tokio::spawn(async move {
        if let Err(err) = prepare_bridge.prepare().await {
            tracing::error!(%err, "cannot set up the bridge bot on the homeserver");
            return;
        }
        if let Some(crypto) = prepare_bridge.intents.crypto()
            && let Err(err) = crypto.prepare().await
        {
            tracing::error!(%err, "cannot set up the bot's encryption device");
        }
    });
    let gauges = bridge.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        if let Err(err) = gauges.count_gauges().await {
            tracing::warn!(%err, "cannot count portals and ghosts for the metrics");
        }
    });
    let prune_db = db.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tick.tick().await;
            if let Err(err) = prune_db.prune_transactions(7 * 24 * 3600 * 1000).await {
                tracing::warn!(%err, "cannot prune old transaction ids");
            }
        }
    });
    server
        .await
        .context("server task")?
        .context("appservice listener failed")?;
    tracing::info!("stopping");
    bridge.stop_sessions().await;
    db.close().await;
    Ok(())
}

/// Settles `auto` in the encryption config from what the registration asks of the homeserver
/// (no requests, so no side effects): crypto inputs are pushed only when the registration has
/// `org.matrix.msc3202` and ephemeral pushes, else they come from `/sync`; devices are made by
/// MSC4190 only when the registration has `io.element.msc4190`, else by appservice login.
fn resolve_encryption(config: &Config, registration: &Registration) -> EncryptionConfig {
    let mut encryption = config.encryption.clone();
    let pushes =
        registration.msc3202 && (registration.receive_ephemeral || registration.push_ephemeral);
    if encryption.inputs == CryptoInputs::Auto {
        encryption.inputs = if pushes {
            CryptoInputs::Push
        } else {
            CryptoInputs::Sync
        };
    }
    if encryption.devices == DeviceCreation::Auto && !registration.msc4190 {
        encryption.devices = DeviceCreation::Login;
    }
    encryption
}

/// Encrypted events whose keys came late, already back in the inbox, are routed to their
/// portal like a new transaction.
async fn route_late_events(
    bridge: Arc<Bridge>,
    mut late: tokio::sync::mpsc::Receiver<Vec<crate::db::inbox::InboxEntry>>,
) {
    use crate::matrix::appservice::AppserviceHandler as _;
    while let Some(entries) = late.recv().await {
        bridge.events(entries).await;
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
