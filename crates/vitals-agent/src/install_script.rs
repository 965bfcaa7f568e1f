//! The `/install.sh` script the hub serves: downloads the agent binary from the hub itself,
//! checks it against the hub's SHA-256, pairs the machine and installs the systemd unit.
//!
//! The hub calls [`install_script`] with its public URL. The script expects the hub to serve
//! `GET /downloads/vitals-agent-linux-<arch>` (the binary for `uname -m`, e.g. `x86_64`) and
//! `GET /downloads/vitals-agent-linux-<arch>.sha256` (its hex SHA-256). The URL is embedded as a
//! single-quoted shell word, so no character of it can run as shell code.

/// Quotes a string as one POSIX shell word.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The install script for a hub reachable at `hub_url` (e.g. `https://vitals.example.com`).
pub fn install_script(hub_url: &str) -> String {
    let hub = shell_quote(hub_url.trim_end_matches('/'));
    format!(
        r#"#!/bin/sh
# Vitals agent installer. Usage: curl -fsSL HUB/install.sh | sudo sh
# Optional: VITALS_NAME=web-1 to name the device.
set -eu
HUB=${{VITALS_HUB:-{hub}}}
ARCH=$(uname -m)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT INT TERM
fetch() {{
    if command -v curl >/dev/null 2>&1; then curl -fsSL "$1" -o "$2"
    elif command -v wget >/dev/null 2>&1; then wget -qO "$2" "$1"
    else echo "vitals: curl or wget is required" >&2; exit 1; fi
}}
echo "vitals: downloading the agent for $ARCH from $HUB"
fetch "$HUB/downloads/vitals-agent-linux-$ARCH" "$TMP/vitals-agent"
fetch "$HUB/downloads/vitals-agent-linux-$ARCH.sha256" "$TMP/sha256"
WANT=$(cut -c1-64 "$TMP/sha256")
if command -v sha256sum >/dev/null 2>&1; then
    GOT=$(sha256sum "$TMP/vitals-agent" | cut -c1-64)
    if [ "$GOT" != "$WANT" ]; then echo "vitals: checksum mismatch, not installing" >&2; exit 1; fi
fi
chmod 0755 "$TMP/vitals-agent"
if [ "$(id -u)" -ne 0 ]; then
    echo "vitals: run as root to install the service (sudo sh)" >&2
    exit 1
fi
CONF=/etc/vitals-agent/config.toml
if [ -n "${{VITALS_NAME:-}}" ]; then
    "$TMP/vitals-agent" --config "$CONF" pair --hub "$HUB" --name "$VITALS_NAME"
else
    "$TMP/vitals-agent" --config "$CONF" pair --hub "$HUB"
fi
"$TMP/vitals-agent" --config "$CONF" install
echo "vitals: installed; logs: journalctl -u vitals-agent -f"
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_url_cannot_inject_shell() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
        let s = install_script("https://h.example/'; rm -rf / #/");
        assert!(
            s.contains(r"HUB=${VITALS_HUB:-'https://h.example/'\''; rm -rf / #'}"),
            "{s}"
        );
        assert!(s.starts_with("#!/bin/sh\n"));
    }

    /// The script is valid POSIX shell (checked with `sh -n` when a shell is present).
    #[test]
    fn script_parses_with_sh() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("install.sh");
        std::fs::write(&p, install_script("http://127.0.0.1:8080")).expect("write");
        if let Ok(out) = std::process::Command::new("sh").arg("-n").arg(&p).output() {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
