//! `vitals-agent`: pair a machine with a Vitals hub, then stream its metrics.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use vitals_agent::config::{self, Config, Overrides};
use vitals_agent::transport::{Kind, LinkConfig};
use vitals_agent::{Collector, Options, agent, install, pairing, update};

/// The Vitals agent: per-second host metrics, delivered to a Vitals hub without gaps.
///
/// First pair the machine (`vitals-agent pair --hub https://hub.example`), approve the code
/// in the hub, then `vitals-agent run` (or `install` to run it under systemd).
#[derive(Debug, Parser)]
#[command(name = "vitals-agent", version, propagate_version = true)]
struct Cli {
    /// Configuration file (TOML). Default: /etc/vitals-agent/config.toml as root,
    /// ~/.config/vitals-agent/config.toml otherwise.
    #[arg(long, global = true, env = "VITALS_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Stream metrics to the hub (the default command).
    Run(RunArgs),
    /// Pair this machine with a hub: prints a code and a link to approve it, then stores the
    /// token in the config file (mode 0600).
    Pair {
        /// Hub URL, e.g. https://vitals.example.com
        #[arg(long)]
        hub: String,
        /// Name suggested for this device (default: the hostname).
        #[arg(long)]
        name: Option<String>,
    },
    /// Install and start a systemd service running this agent as an unprivileged user.
    Install {
        /// Service user (created if missing).
        #[arg(long, default_value = "vitals-agent")]
        user: String,
        /// Let the service read Docker's socket (the docker group is root-equivalent).
        #[arg(long)]
        docker: bool,
        /// Enable the service without starting it.
        #[arg(long)]
        no_start: bool,
        /// Only print the unit file.
        #[arg(long)]
        print_unit: bool,
    },
    /// Check the release endpoint now and install a newer version if there is one.
    Update,
    /// Print one sample and the device state as JSON, then exit (diagnostics).
    Sample,
    /// Validate the configuration and exit.
    CheckConfig,
}

#[derive(Debug, Default, clap::Args)]
struct RunArgs {
    /// Hub URL (overrides the config file).
    #[arg(long)]
    hub: Option<String>,
    /// Sampling interval in seconds.
    #[arg(long)]
    interval: Option<f64>,
    /// websocket (default) or http (POST /api/report).
    #[arg(long, value_parser = parse_kind)]
    transport: Option<Kind>,
    /// Spool directory for unacknowledged samples.
    #[arg(long)]
    spool_dir: Option<PathBuf>,
    /// Disable the periodic self-update.
    #[arg(long)]
    no_update: bool,
}

fn parse_kind(s: &str) -> Result<Kind, String> {
    match s {
        "websocket" | "ws" => Ok(Kind::Websocket),
        "http" => Ok(Kind::Http),
        _ => Err("expected websocket or http".into()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_max_level(log_level())
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(real_main(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `RUST_LOG` as a plain level (`error`, `warn`, `info`, `debug`, `trace`); default `info`.
fn log_level() -> tracing::Level {
    std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(tracing::Level::INFO)
}

async fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    let path = cli.config.clone().unwrap_or_else(config::default_path);
    match cli.command.unwrap_or(Cmd::Run(RunArgs::default())) {
        Cmd::Run(a) => run(&path, a).await,
        Cmd::Pair { hub, name } => pair(&path, hub, name).await,
        Cmd::Install {
            user,
            docker,
            no_start,
            print_unit,
        } => {
            let o = install::InstallOptions {
                user,
                docker_group: docker,
                start: !no_start,
                ..install::InstallOptions::default()
            };
            if print_unit {
                print!(
                    "{}",
                    install::unit_file(
                        &o.bin_dir.join("vitals-agent"),
                        &o.config,
                        Some(&o.user),
                        o.docker_group
                    )
                );
                return Ok(ExitCode::SUCCESS);
            }
            config::load(&path, &Overrides::default(), true)
                .context("pair before installing: the service needs a token")?;
            let exe = std::env::current_exe().context("cannot find this binary")?;
            let unit = install::install(&exe, &path, &o)?;
            println!(
                "installed {}; follow it with: journalctl -u vitals-agent -f",
                unit.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Update => {
            let c = config::load(&path, &Overrides::default(), false)?;
            let o = update::UpdateOptions::for_current(
                c.update_url.clone(),
                Some(c.token.clone()).filter(|t| !t.is_empty()),
            )
            .context("cannot find this binary")?;
            match update::check(&o).await? {
                update::Checked::UpToDate { current, latest } => {
                    println!("up to date: running {current}, latest release {latest}")
                }
                update::Checked::Updated { from, to } => {
                    println!("updated {from} -> {to}; restart the agent")
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Sample => {
            let c = config::load(&path, &Overrides::default(), false).ok();
            let mut col = collector(c.as_ref());
            tokio::time::sleep(Duration::from_secs(1)).await;
            let s = col.sample(vitals_agent::collect::now_ms());
            println!("{}", serde_json::to_string_pretty(&s)?);
            println!("{}", serde_json::to_string_pretty(&col.state())?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::CheckConfig => {
            let c = config::load(&path, &Overrides::default(), true)?;
            println!(
                "{} is valid (hub {}, interval {:?}, transport {:?})",
                path.display(),
                c.hub,
                c.interval,
                c.transport
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn collector(c: Option<&Config>) -> Collector {
    let host_id = c
        .and_then(|c| c.host_id.clone())
        .unwrap_or_else(vitals_agent::host_id);
    Collector::with_options(
        host_id,
        Options {
            docker: c.is_none_or(|c| c.docker),
            gpu: c.is_none_or(|c| c.gpu),
            kernel: c.is_none_or(|c| c.kernel_stats),
            ..Options::default()
        },
    )
}

async fn pair(
    path: &std::path::Path,
    hub: String,
    name: Option<String>,
) -> anyhow::Result<ExitCode> {
    let mut file = config::read_file(path)?;
    let host_id = file.host_id.clone().unwrap_or_else(vitals_agent::host_id);
    let o = pairing::PairOptions::new(hub.clone(), host_id, name);
    let got = pairing::pair(&o, |code, link| {
        println!("Pairing code: {}", code.code);
        println!("Approve this machine in the hub: {link}");
        println!(
            "(the code expires at {}; waiting for approval...)",
            code.expires_at
        );
    })
    .await?;
    file.hub = Some(o.hub.clone());
    file.token = Some(got.token);
    file.device_id = Some(got.device_id.clone());
    config::write_file(path, &file).with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "Paired as device {}. Token saved in {} (mode 0600).",
        got.device_id,
        path.display()
    );
    println!(
        "Start streaming with: vitals-agent --config {} run",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

async fn run(path: &std::path::Path, a: RunArgs) -> anyhow::Result<ExitCode> {
    let c = config::load(
        path,
        &Overrides {
            hub: a.hub,
            interval_secs: a.interval,
            transport: a.transport,
            spool_dir: a.spool_dir,
        },
        true,
    )?;
    let col = collector(Some(&c));
    let link = LinkConfig {
        hub: c.hub.clone(),
        token: c.token.clone(),
        host_id: col.host_id().to_string(),
        kind: c.transport,
        interval: c.interval,
    };
    let mut opts = agent::RunOptions::new(link, c.spool_dir.clone());
    opts.spool = vitals_agent::spool::SpoolOptions::new(
        c.spool_max_bytes,
        c.spool_max_age.as_millis() as i64,
    );
    tracing::info!(hub = %c.hub, host_id = %col.host_id(), interval = ?c.interval, spool = %c.spool_dir.display(), "vitals-agent {} starting", vitals_agent::AGENT_VERSION);

    let (updated_tx, updated_rx) = tokio::sync::oneshot::channel();
    if c.update_enabled && !a.no_update {
        match update::UpdateOptions::for_current(c.update_url.clone(), Some(c.token.clone())) {
            Ok(uo) => {
                // Spread checks of a fleet: the first one comes 1-10 minutes after start.
                let first = Duration::from_secs(rand::random_range(60..600));
                let every = c.update_every;
                tokio::spawn(async move {
                    let done = update::periodically(uo, first, every).await;
                    let _ = updated_tx.send(done);
                });
            }
            Err(e) => tracing::warn!("self-update disabled: cannot find this binary: {e}"),
        }
    }
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: spooling and exiting"),
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {
                tracing::info!("terminated: spooling and exiting")
            }
            Ok(u) = updated_rx => tracing::info!("self-update installed ({u:?}): exiting for a restart"),
        }
    };
    match agent::run(col, opts, shutdown).await {
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(agent::RunError::Unauthorized) => {
            eprintln!("error: {}", agent::RunError::Unauthorized);
            Ok(ExitCode::from(install::EXIT_REVOKED as u8))
        }
        Err(e) => Err(e.into()),
    }
}
