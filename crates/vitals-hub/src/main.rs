//! `vitals-hub`: runs the hub, or administers its data (users, tokens, configuration).

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use vitals_hub::Config;
use vitals_hub::config::FlagOverrides;
use vitals_store::{NewApiToken, NewUser, Role};

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
    /// sqlite:PATH (default: DATA_DIR/vitals.db).
    #[arg(long, global = true, value_name = "URL")]
    database_url: Option<String>,
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

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging();
    let config = load_config(&cli.global)?;
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
    }
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
