//! The `ferry` command line: run the bridge, or produce its config and registration files.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use ferry::{config::Config, matrix::registration::Registration};

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "A Matrix bridge for WhatsApp, Signal, Telegram and more, in one process"
)]
struct Cli {
    /// The config file.
    #[arg(short, long, default_value = "config.yaml", global = true)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bridge.
    Run,
    /// Print (or write) a fully commented example config.
    GenerateConfig {
        /// Write here instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Write the appservice registration for the homeserver, with fresh tokens.
    GenerateRegistration {
        /// Where to write it (default: appservice.registration from the config).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("ferry {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::GenerateConfig { output } => match output {
            Some(path) => write_new(&path, ferry::config::EXAMPLE),
            None => {
                print!("{}", ferry::config::EXAMPLE);
                ExitCode::SUCCESS
            }
        },
        Command::GenerateRegistration { output } => {
            let Some(config) = load(&cli.config) else {
                return ExitCode::from(2);
            };
            let path = output
                .unwrap_or_else(|| config_dir(&cli.config).join(&config.appservice.registration));
            let registration = Registration::generate(&config);
            let code = write_new(&path, &registration.to_yaml());
            if code == ExitCode::SUCCESS {
                eprintln!(
                    "Wrote {}. Add it to the homeserver's app_service_config_files and restart it.",
                    path.display()
                );
            }
            code
        }
        Command::Migrate => {
            let Some(config) = load(&cli.config) else {
                return ExitCode::from(2);
            };
            runtime(|| async move {
                ferry::db::Db::connect(&config.database).await?;
                eprintln!("Database is up to date.");
                Ok(())
            })
        }
        Command::Run => {
            let Some(config) = load(&cli.config) else {
                return ExitCode::from(2);
            };
            ferry::logging::init(&config.logging);
            let dir = config_dir(&cli.config);
            runtime(|| async move { ferry::app::run(config, &dir).await })
        }
    }
}

fn config_dir(path: &std::path::Path) -> PathBuf {
    path.parent()
        .map(PathBuf::from)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."))
}

fn load(path: &std::path::Path) -> Option<Config> {
    match Config::load(path) {
        Ok(config) => Some(config),
        Err(err) => {
            eprintln!("ferry: {err}");
            None
        }
    }
}

/// Writes a file that may hold secrets: owner-only permissions on Unix.
fn write_new(path: &std::path::Path, text: &str) -> ExitCode {
    let result = (|| -> std::io::Result<()> {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options.open(path)?.write_all(text.as_bytes())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ferry: cannot write {}: {err}", path.display());
            ExitCode::FAILURE
        }
    }
}

fn runtime<F, Fut>(f: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("ferry: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(f()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ferry: {err:#}");
            ExitCode::FAILURE
        }
    }
}
