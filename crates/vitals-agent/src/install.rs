//! `vitals-agent install`: a systemd unit that runs the agent as an unprivileged user.
//!
//! Layout: the binary in `/opt/vitals-agent/vitals-agent` (owned by the service user, so the
//! self-updater can replace it), the config in `/etc/vitals-agent/config.toml` (mode 0600,
//! owned by the service user: it holds the token), the spool in `/var/lib/vitals-agent`
//! (systemd's `StateDirectory`). The unit restarts the agent always (a self-update exits to be
//! restarted) except after exit code 78, the revoked-token exit, to avoid a restart loop.
//! Everything the unit does not need is locked down (`ProtectSystem=strict`, ...): the agent
//! only reads `/proc`, `/sys` and filesystems, and writes its spool and its own binary.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Exit code for a revoked token (EX_CONFIG): systemd must not restart on it.
pub const EXIT_REVOKED: i32 = 78;

/// Where things go.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// Prefix for every path (`/` normally; a temporary directory in tests).
    pub root: PathBuf,
    pub user: String,
    pub bin_dir: PathBuf,
    pub config: PathBuf,
    /// Add the service user to the `docker` group (gives it root-equivalent access to Docker).
    pub docker_group: bool,
    /// Run `useradd`, `chown`, `systemctl`.
    pub system_commands: bool,
    pub start: bool,
}

impl Default for InstallOptions {
    fn default() -> Self {
        InstallOptions {
            root: PathBuf::from("/"),
            user: "vitals-agent".into(),
            bin_dir: PathBuf::from("/opt/vitals-agent"),
            config: PathBuf::from("/etc/vitals-agent/config.toml"),
            docker_group: false,
            system_commands: true,
            start: true,
        }
    }
}

/// Why installation failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("installing a system service needs root (try sudo)")]
    NotRoot,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed: {message}")]
    Command { command: String, message: String },
}

/// The unit file text.
pub fn unit_file(bin: &Path, config: &Path, user: Option<&str>, docker_group: bool) -> String {
    let mut u = String::from(
        "[Unit]\n\
         Description=Vitals monitoring agent\n\
         After=network-online.target\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         Type=simple\n",
    );
    if let Some(user) = user {
        u.push_str(&format!("User={user}\nGroup={user}\n"));
    }
    if docker_group {
        u.push_str("SupplementaryGroups=docker\n");
    }
    let bin_dir = bin.parent().unwrap_or(Path::new("/"));
    u.push_str(&format!(
        "ExecStart={} --config {} run\n\
         Restart=always\n\
         RestartSec=5\n\
         # 78: the hub revoked the token; re-pair instead of restarting in a loop\n\
         RestartPreventExitStatus={EXIT_REVOKED}\n\
         StateDirectory=vitals-agent\n\
         StateDirectoryMode=0700\n\
         Environment=RUST_LOG=info\n\
         NoNewPrivileges=yes\n\
         ProtectSystem=strict\n\
         ReadWritePaths={}\n\
         ProtectHome=read-only\n\
         PrivateTmp=yes\n\
         ProtectControlGroups=yes\n\
         ProtectKernelModules=yes\n\
         RestrictSUIDSGID=yes\n\
         LockPersonality=yes\n\
         MemoryMax=64M\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        bin.display(),
        config.display(),
        bin_dir.display(),
    ));
    u
}

fn under(root: &Path, p: &Path) -> PathBuf {
    root.join(p.strip_prefix("/").unwrap_or(p))
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> InstallError {
    let what = what.into();
    move |source| InstallError::Io { what, source }
}

fn run(cmd: &str, args: &[&str]) -> Result<(), InstallError> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| InstallError::Command {
            command: format!("{cmd} {}", args.join(" ")),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(InstallError::Command {
            command: format!("{cmd} {}", args.join(" ")),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Installs the binary `exe` and the config from `config_src`, writes and enables the unit.
/// Returns the unit path.
pub fn install(exe: &Path, config_src: &Path, o: &InstallOptions) -> Result<PathBuf, InstallError> {
    if o.system_commands && !nix::unistd::geteuid().is_root() {
        return Err(InstallError::NotRoot);
    }
    let mut user = Some(o.user.as_str());
    if o.system_commands
        && nix::unistd::User::from_name(&o.user)
            .ok()
            .flatten()
            .is_none()
        && let Err(e) = run(
            "useradd",
            &[
                "--system",
                "--no-create-home",
                "--home-dir",
                "/var/lib/vitals-agent",
                "--shell",
                "/usr/sbin/nologin",
                &o.user,
            ],
        )
    {
        tracing::warn!(
            "cannot create user {}: {e}; the service will run as root",
            o.user
        );
        user = None;
    }
    let bin = o.bin_dir.join("vitals-agent");
    let bin_at = under(&o.root, &bin);
    std::fs::create_dir_all(under(&o.root, &o.bin_dir))
        .map_err(io("create the binary directory"))?;
    if std::fs::canonicalize(exe).ok() != std::fs::canonicalize(&bin_at).ok() {
        let tmp = bin_at.with_extension("tmp");
        std::fs::copy(exe, &tmp).map_err(io(format!(
            "copy {} to {}",
            exe.display(),
            tmp.display()
        )))?;
        std::fs::rename(&tmp, &bin_at).map_err(io("move the binary into place"))?;
    }
    let cfg_at = under(&o.root, &o.config);
    if std::fs::canonicalize(config_src).ok() != std::fs::canonicalize(&cfg_at).ok() {
        let f = crate::config::read_file(config_src).map_err(|e| InstallError::Io {
            what: e.to_string(),
            source: std::io::Error::other("bad config"),
        })?;
        crate::config::write_file(&cfg_at, &f)
            .map_err(io(format!("write {}", cfg_at.display())))?;
    }
    if o.system_commands
        && let Some(u) = user
    {
        let owner = format!("{u}:{u}");
        run("chown", &["-R", &owner, &o.bin_dir.display().to_string()])?;
        run("chown", &[&owner, &o.config.display().to_string()])?;
    }
    let unit_path = under(
        &o.root,
        Path::new("/etc/systemd/system/vitals-agent.service"),
    );
    if let Some(d) = unit_path.parent() {
        std::fs::create_dir_all(d).map_err(io("create the unit directory"))?;
    }
    std::fs::write(&unit_path, unit_file(&bin, &o.config, user, o.docker_group))
        .map_err(io(format!("write {}", unit_path.display())))?;
    if o.system_commands {
        run("systemctl", &["daemon-reload"])?;
        if o.start {
            run("systemctl", &["enable", "--now", "vitals-agent.service"])?;
        } else {
            run("systemctl", &["enable", "vitals-agent.service"])?;
        }
    }
    Ok(unit_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_runs_unprivileged_and_does_not_loop_on_revocation() {
        let u = unit_file(
            Path::new("/opt/vitals-agent/vitals-agent"),
            Path::new("/etc/vitals-agent/config.toml"),
            Some("vitals-agent"),
            false,
        );
        assert!(u.contains("User=vitals-agent\n"));
        assert!(u.contains(
            "ExecStart=/opt/vitals-agent/vitals-agent --config /etc/vitals-agent/config.toml run\n"
        ));
        assert!(u.contains("RestartPreventExitStatus=78\n"));
        assert!(u.contains("ReadWritePaths=/opt/vitals-agent\n"));
        assert!(!u.contains("SupplementaryGroups"));
    }

    #[test]
    fn installs_into_a_root_prefix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let exe = dir.path().join("agent-bin");
        std::fs::write(&exe, b"binary").expect("write");
        let cfg = dir.path().join("my.toml");
        std::fs::write(&cfg, "hub = \"http://h\"\ntoken = \"t\"\n").expect("write");
        let root = dir.path().join("root");
        let o = InstallOptions {
            root: root.clone(),
            system_commands: false,
            ..InstallOptions::default()
        };
        let unit = install(&exe, &cfg, &o).expect("installs");
        assert!(unit.ends_with("etc/systemd/system/vitals-agent.service"));
        assert_eq!(
            std::fs::read(root.join("opt/vitals-agent/vitals-agent")).expect("bin"),
            b"binary"
        );
        let c =
            crate::config::read_file(&root.join("etc/vitals-agent/config.toml")).expect("config");
        assert_eq!(c.token.as_deref(), Some("t"));
    }
}
