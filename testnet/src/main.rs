//! `testnet`: runs one of ferry's network simulators as a process, for the demo and for
//! scripts (integration tests start them in-process through the library instead).

use std::io::Write as _;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use testnet::sim::SimServer;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(version, about = "Simulators of ferry's remote networks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server of `sim`, ferry's built-in simulated network.
    Sim {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:29399")]
        listen: String,
    },
    /// Run the simulator of the signal-cli JSON-RPC daemon (multi-account mode).
    Signal {
        /// JSON-RPC TCP address (`signal-cli daemon --tcp`).
        #[arg(long, default_value = "127.0.0.1:7583")]
        rpc: String,
        /// Control API HTTP address.
        #[arg(long, default_value = "127.0.0.1:7584")]
        control: String,
        /// signal-cli's `--receive-mode`: manual, on-start or on-connection.
        #[arg(long, default_value = "manual")]
        receive_mode: String,
    },
    /// Run the Telegram MTProto simulator (register the sessions' auth keys through
    /// `POST /control/auth_keys`).
    Telegram {
        /// MTProto TCP address (the sessions' DC option).
        #[arg(long, default_value = "127.0.0.1:29443")]
        mtproto: String,
        /// Control API HTTP address.
        #[arg(long, default_value = "127.0.0.1:29444")]
        control: String,
    },
    /// Run the WhatsApp server simulator (clients connect to `ws://CHAT/ws/chat`; contacts and
    /// the user's account are created through the control API). Built with `--features whatsapp`.
    #[cfg(feature = "whatsapp")]
    Whatsapp {
        /// Chat address: the WebSocket at `/ws/chat` and the media host.
        #[arg(long, default_value = "127.0.0.1:29453")]
        chat: String,
        /// Control API HTTP address.
        #[arg(long, default_value = "127.0.0.1:29454")]
        control: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    match Cli::parse().command {
        Command::Sim { listen } => {
            let server = SimServer::start(&listen).await?;
            // Scripts wait for this line on stdout; logs go to stderr.
            let mut stdout = std::io::stdout();
            writeln!(stdout, "sim server listening on {}", server.url())
                .and_then(|()| stdout.flush())
                .context("cannot write to stdout")?;
            shutdown_signal().await?;
            tracing::info!("stopping");
            server.shutdown().await;
        }
        Command::Signal {
            rpc,
            control,
            receive_mode,
        } => {
            let receive_mode = testnet::signal::ReceiveMode::parse(&receive_mode)
                .with_context(|| format!("unknown receive mode {receive_mode}"))?;
            let server = testnet::signal::SignalServer::start_with(testnet::signal::SignalConfig {
                rpc,
                control,
                receive_mode,
            })
            .await?;
            let mut stdout = std::io::stdout();
            writeln!(
                stdout,
                "signal server listening on rpc={} control={}",
                server.rpc_addr(),
                server.control_url()
            )
            .and_then(|()| stdout.flush())
            .context("cannot write to stdout")?;
            shutdown_signal().await?;
            tracing::info!("stopping");
            server.shutdown().await;
        }
        Command::Telegram { mtproto, control } => {
            let server =
                testnet::telegram::TelegramServer::start_with(testnet::telegram::TelegramConfig {
                    mtproto,
                    control,
                })
                .await?;
            let mut stdout = std::io::stdout();
            writeln!(
                stdout,
                "telegram server listening on mtproto={} control={}",
                server.mtproto_addr(),
                server.control_url()
            )
            .and_then(|()| stdout.flush())
            .context("cannot write to stdout")?;
            shutdown_signal().await?;
            tracing::info!("stopping");
            server.shutdown().await;
        }
        #[cfg(feature = "whatsapp")]
        Command::Whatsapp { chat, control } => {
            let server =
                testnet::whatsapp::WhatsAppServer::start_with(testnet::whatsapp::WhatsAppConfig {
                    chat,
                    control,
                })
                .await?;
            let mut stdout = std::io::stdout();
            writeln!(
                stdout,
                "whatsapp server listening on ws={} control={}",
                server.ws_url(),
                server.control_url()
            )
            .and_then(|()| stdout.flush())
            .context("cannot write to stdout")?;
            shutdown_signal().await?;
            tracing::info!("stopping");
            server.shutdown().await;
        }
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("cannot listen for SIGINT")?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
