//! `vitals-hub`: runs the hub, or administers its data (users, tokens, configuration).

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use vitals_hub::Config;
use vitals_hub::config::FlagOverrides;
use vitals_hub::transfer::{self, Format};
use vitals_store::{Device, NewApiToken, NewUser, Role, Store};

/// The Vitals hub: a real-time metrics monitor for your machines.
///
/// With no command it serves the dashboard, the HTTP API and the WebSockets on
/// 127.0.0.1:7070, storing into ./vitals-data/vitals.db, and monitors its own host.
/// On first start it prints a one-time link that creates the first admin.
///
/// Configuration comes from defaults, then --config FILE (TOML), then VITALS_* environment
/// variables (VITALS_LISTEN, VITALS_DATA_DIR, ...), then these flags.
#[derive(Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Args, Clone, Default)]
struct Global {
    /// TOML configuration file.
    #[arg(long, global = true, env = "VITALS_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 0.0.0.0:7070 to accept other machines.
    #[arg(long, global = true, value_name = "ADDR")]
    listen: Option<String>,
    /// Folder for the database (default ./vitals-data).
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// sqlite:PATH (default: DATA_DIR/vitals.db) or postgres://USER@HOST/DB, which several
    /// hub replicas can share (see --nats-url).
    #[arg(long, global = true, value_name = "URL")]
    database_url: Option<String>,
    /// nats://HOST:4222: replicas on one PostgreSQL database share live updates through it.
    #[arg(long, global = true, value_name = "URL")]
    nats_url: Option<String>,
    /// URL users reach the hub at, used in printed links.
    #[arg(long, global = true, value_name = "URL")]
    public_url: Option<String>,
    /// PEM certificate chain: serve HTTPS/WSS (with --tls-key).
    #[arg(long, global = true, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, global = true, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Add N simulated devices (labelled as simulated everywhere).
    #[arg(long, global = true, value_name = "N")]
    demo: Option<u32>,
    /// Do not record the hub's own host as a device.
    #[arg(long, global = true)]
    no_self_monitor: bool,
    /// Allow browser requests from this origin too (repeatable).
    #[arg(long = "allowed-origin", global = true, value_name = "ORIGIN")]
    allowed_origins: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub (the default).
    Serve,
    /// Validate the configuration and print it; exits 1 listing every problem.
    CheckConfig,
    /// Manage users.
    #[command(subcommand)]
    User(UserCmd),
    /// Manage API tokens for scripts and applications.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Write a device's raw samples as JSON Lines (lossless) or CSV (a column per series).
    ///
    /// Examples:
    ///   vitals-hub export --device web-1 --from 7d > web-1.jsonl
    ///   vitals-hub export --device web-1 --from 2026-11-01T00:00:00Z --to 2026-11-02T00:00:00Z --format csv --out day.csv
    Export {
        /// Device id or name.
        #[arg(long)]
        device: String,
        /// Start: RFC 3339, Unix milliseconds, or a duration ago (90s, 15m, 12h, 7d). Default: the oldest sample.
        #[arg(long)]
        from: Option<String>,
        /// End (inclusive), in the same forms. Default: now.
        #[arg(long)]
        to: Option<String>,
        #[arg(long, value_enum, default_value = "jsonl")]
        format: FormatArg,
        /// Write here instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Store samples from an export (JSON Lines or CSV) for a device; idempotent: samples
    /// already stored are skipped, so an import can be run again safely.
    ///
    /// Example: vitals-hub import --device web-1 web-1.jsonl
    Import {
        /// Device id or name (it must exist; its host id must match JSON Lines samples).
        #[arg(long)]
        device: String,
        /// Default: from the file name (.csv or else JSON Lines).
        #[arg(long, value_enum)]
        format: Option<FormatArg>,
        /// The file to read.
        file: PathBuf,
    },
    /// Copy everything from a SQLite hub into PostgreSQL (users, tokens, devices, samples,
    /// rollups, alerts, settings), with a progress bar. Idempotent and resumable: run it
    /// again after an interruption and only what is missing is added. Stop the SQLite hub
    /// first, and start no hub on the PostgreSQL database until the copy is done.
    ///
    /// Example:
    ///   vitals-hub migrate --from sqlite:vitals-data/vitals.db --to postgres://vitals@db/vitals
    Migrate {
        /// The SQLite database: sqlite:PATH.
        #[arg(long, value_name = "URL")]
        from: String,
        /// The PostgreSQL database: postgres://USER@HOST/DB (its schema is created or
        /// upgraded first).
        #[arg(long, value_name = "URL")]
        to: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Jsonl,
    Csv,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::Jsonl => Format::Jsonl,
            FormatArg::Csv => Format::Csv,
        }
    }
}

#[derive(Subcommand)]
enum UserCmd {
    /// Add a user; the password is read from standard input (one line).
    ///
    /// Example: echo 's3cret-pass' | vitals-hub user add alice --role viewer
    Add {
        name: String,
        #[arg(long, value_enum)]
        role: RoleArg,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create an API token and print it (shown only once). Use it as
    /// `Authorization: Bearer <token>`.
    Create {
        name: String,
        #[arg(long, value_enum)]
        role: RoleArg,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    Admin,
    Viewer,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Admin => Role::Admin,
            RoleArg::Viewer => Role::Viewer,
        }
    }
}

fn load_config(g: &Global) -> Result<Config> {
    let text = match &g.config {
        Some(p) => Some((
            p.display().to_string(),
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read the config file {}", p.display()))?,
        )),
        None => None,
    };
    let mut flags = FlagOverrides::default();
    if let Some(v) = &g.listen {
        flags.set("listen", v.as_str());
    }
    if let Some(v) = &g.data_dir {
        flags.set("data_dir", v.display().to_string());
    }
    if let Some(v) = &g.database_url {
        flags.set("database_url", v.as_str());
    }
    if let Some(v) = &g.nats_url {
        flags.set("nats_url", v.as_str());
    }
    if let Some(v) = &g.public_url {
        flags.set("public_url", v.as_str());
    }
    if let Some(v) = &g.tls_cert {
        flags.set("tls_cert", v.display().to_string());
    }
    if let Some(v) = &g.tls_key {
        flags.set("tls_key", v.display().to_string());
    }
    if let Some(v) = g.demo {
        flags.set("demo", i64::from(v));
    }
    if g.no_self_monitor {
        flags.set("self_monitor", false);
    }
    if !g.allowed_origins.is_empty() {
        flags.set(
            "allowed_origins",
            toml::Value::Array(
                g.allowed_origins
                    .iter()
                    .map(|o| toml::Value::String(o.clone()))
                    .collect(),
            ),
        );
    }
    Ok(Config::load(
        text.as_ref().map(|(p, t)| (p.as_str(), t.as_str())),
        std::env::vars(),
        &flags,
    )?)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,sqlx=warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// mimalloc keeps freed memory for reuse per thread: ingest allocates and frees many
/// short-lived buffers, which glibc's allocator hands back and faults in again.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    // mimalloc asks for transparent huge pages on its large regions: the resident size then
    // grows in 2 MiB steps for memory the hub barely touches (tens of MiB at a thousand
    // agents). Like most databases, the hub does without them.
    #[cfg(target_os = "linux")]
    let _ = nix::sys::prctl::set_thp_disable(true);
    let cli = Cli::parse();
    init_logging();
    let config = load_config(&cli.global)?;
    // Built after the configuration is read: `workers` sets its size.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_threads())
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(run(cli, config))
}

async fn run(cli: Cli, config: Config) -> Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::CheckConfig => {
            println!("{}", toml::to_string_pretty(&config)?);
            println!("# configuration is valid");
            Ok(())
        }
        Command::User(UserCmd::Add { name, role }) => {
            let password = read_password()?;
            vitals_hub::auth::check_username(&name).map_err(|e| anyhow::anyhow!(e.message))?;
            vitals_hub::auth::check_password(&password).map_err(|e| anyhow::anyhow!(e.message))?;
            let store = vitals_hub::open_store(&config).await?;
            let hash = vitals_hub::auth::hash_password(&password)
                .map_err(|e| anyhow::anyhow!(e.message))?;
            let user = store
                .create_user(NewUser {
                    username: name,
                    role: role.into(),
                    password_hash: hash,
                    now: vitals_hub::now_ms(),
                })
                .await?;
            store.close().await;
            println!(
                "created {} {} ({})",
                user.role.as_str(),
                user.username,
                user.id
            );
            Ok(())
        }
        Command::Token(TokenCmd::Create { name, role }) => {
            if name.trim().is_empty() || name.len() > 100 {
                bail!("a token name is 1 to 100 characters");
            }
            let store = vitals_hub::open_store(&config).await?;
            let token = vitals_hub::auth::new_token(vitals_hub::auth::API_TOKEN_PREFIX);
            store
                .create_api_token(NewApiToken {
                    name,
                    role: role.into(),
                    token_hash: vitals_hub::auth::hash_token(&token),
                    created_by: Some("cli".into()),
                    now: vitals_hub::now_ms(),
                })
                .await?;
            store.close().await;
            println!("{token}");
            Ok(())
        }
        Command::Export {
            device,
            from,
            to,
            format,
            out,
        } => {
            let now = vitals_hub::now_ms();
            let from = match from {
                Some(t) => transfer::parse_time(&t, now).map_err(anyhow::Error::msg)?,
                None => 0,
            };
            let to = match to {
                Some(t) => transfer::parse_time(&t, now).map_err(anyhow::Error::msg)?,
                None => now,
            };
            if from > to {
                bail!("--from is after --to");
            }
            let store = vitals_hub::open_store(&config).await?;
            let dev = find_device(store.as_ref(), &device).await?;
            let progress = progress_bar("samples");
            let mut w: Box<dyn std::io::Write> = match &out {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("cannot create {}", path.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let written = transfer::export(
                store.as_ref(),
                &dev,
                from,
                to,
                format.into(),
                &mut w,
                &progress,
            )
            .await?;
            drop(w);
            progress.finish_and_clear();
            store.close().await;
            eprintln!("exported {written} samples of {} ({})", dev.name, dev.id);
            Ok(())
        }
        Command::Migrate { from, to } => migrate(&from, &to).await,
        Command::Import {
            device,
            format,
            file,
        } => {
            let format: Format = match format {
                Some(f) => f.into(),
                None if file
                    .extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("csv")) =>
                {
                    Format::Csv
                }
                None => Format::Jsonl,
            };
            let f = std::fs::File::open(&file)
                .with_context(|| format!("cannot open {}", file.display()))?;
            let size = f.metadata().map(|m| m.len()).unwrap_or(0);
            let store = vitals_hub::open_store(&config).await?;
            let dev = find_device(store.as_ref(), &device).await?;
            let settings = vitals_hub::settings::Settings::from_stored(&store.settings().await?);
            let now = vitals_hub::now_ms();
            let window = vitals_proto::validate::Window {
                now_ms: now,
                oldest_ms: now - settings.raw_retention_ms(),
            };
            let progress = progress_bar("bytes");
            progress.set_length(size);
            let mut input = std::io::BufReader::new(f);
            let report =
                transfer::import(store.as_ref(), &dev, format, &mut input, window, &progress).await;
            progress.finish_and_clear();
            store.close().await;
            let report = report?;
            eprintln!(
                "read {} samples, stored {} new ({} were stored already) for {} ({}){}",
                report.read,
                report.stored,
                report.read - report.stored,
                dev.name,
                dev.id,
                if report.unknown_series > 0 {
                    format!(
                        "; ignored {} values of unknown series",
                        report.unknown_series
                    )
                } else {
                    String::new()
                }
            );
            Ok(())
        }
    }
}

/// A device by id or exact name.
async fn find_device(store: &dyn Store, key: &str) -> Result<Device> {
    let all = store.list_devices().await?;
    let matches: Vec<&Device> = all
        .iter()
        .map(|d| &d.device)
        .filter(|d| d.id == key || d.name == key)
        .collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => bail!(
            "no device {key:?}; devices: {}",
            all.iter()
                .map(|d| format!("{} ({})", d.device.name, d.device.id))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        many => bail!(
            "{} devices are named {key:?}; give one of their ids: {}",
            many.len(),
            many.iter()
                .map(|d| d.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `vitals-hub migrate`: one progress bar per table, then a summary.
async fn migrate(from: &str, to: &str) -> Result<()> {
    if !from.starts_with("sqlite:") {
        bail!("--from must be a SQLite URL like sqlite:vitals-data/vitals.db (got {from:?})");
    }
    if !(to.starts_with("postgres://") || to.starts_with("postgresql://")) {
        bail!("--to must be a PostgreSQL URL like postgres://user@host/db (got {to:?})");
    }
    let mut bar: Option<(String, indicatif::ProgressBar)> = None;
    let mut progress = |step: &str, done: u64, total: u64| {
        if bar.as_ref().is_none_or(|(s, _)| s != step) {
            if let Some((_, b)) = bar.take() {
                b.finish();
            }
            let b = progress_bar("rows");
            b.set_message(step.to_string());
            b.set_prefix(step.to_string());
            bar = Some((step.to_string(), b));
        }
        if let Some((_, b)) = &bar {
            b.set_length(total);
            b.set_position(done);
        }
    };
    let report = vitals_store::copy::run(from, to, &mut progress)
        .await
        .context("migration stopped; run the same command again to resume")?;
    if let Some((_, b)) = bar.take() {
        b.finish();
    }
    for (table, seen, added) in &report.tables {
        eprintln!("{table:>18}: {seen} read, {added} added");
    }
    eprintln!(
        "done: {} rows added; running it again adds nothing new",
        report.added()
    );
    Ok(())
}

/// A progress bar on standard error (drawn only on a terminal).
fn progress_bar(unit: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(0);
    let template = if unit == "bytes" {
        "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({eta})".to_string()
    } else {
        format!(
            "{{spinner}} {{prefix}} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} {unit} ({{eta}})"
        )
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
        pb.set_style(style);
    }
    pb
}

fn read_password() -> Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("password (input is visible; pipe it to hide it): ");
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let pw = line.trim_end_matches(['\r', '\n']).to_string();
    if pw.is_empty() {
        bail!(
            "no password on standard input; example: echo 'long-password' | vitals-hub user add NAME --role admin"
        );
    }
    Ok(pw)
}

async fn serve(config: Config) -> Result<()> {
    let hub = vitals_hub::start(config).await?;
    if let Some(url) = &hub.setup_url {
        println!();
        println!("  No admin yet. Open this one-time link to create the first admin:");
        println!();
        println!("    {url}");
        println!();
    }
    println!("vitals hub listening on {}", hub.public_url);
    let stop = {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot listen for SIGTERM")?;
        async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
    };
    tokio::select! {
        _ = stop => {
            tracing::info!("stopping: finishing batches in flight");
            hub.shutdown();
        }
    }
    hub.wait().await?;
    Ok(())
}
