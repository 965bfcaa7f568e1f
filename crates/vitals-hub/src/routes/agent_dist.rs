//! Agent distribution: `/install.sh` (one command installs, pairs and starts the agent on a new
//! machine), the agent binaries the hub carries under `/downloads/`, and the release endpoint
//! the agents' self-updater asks (`/api/agent/release`, GitHub's releases API shape).
//!
//! Binaries are looked up in `agent_dir` (default: the folder of the hub's own executable) as
//! `vitals-agent-linux-<arch>`, or `vitals-agent` for the hub's own architecture. Downloads
//! are open (the software is public and the script runs before pairing); the release endpoint
//! needs a device token or a user.

use std::path::PathBuf;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::auth::{Principal, principal_from_headers};
use crate::error::{ApiError, ApiJson, ApiResult};
use crate::state::AppState;

fn agent_dir(state: &AppState) -> Option<PathBuf> {
    state.config.agent_dir.clone().or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(PathBuf::from))
    })
}

fn valid_arch(arch: &str) -> bool {
    !arch.is_empty()
        && arch.len() <= 16
        && arch
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The file carrying the agent for `arch`, if the hub has one.
fn binary_path(state: &AppState, arch: &str) -> Option<PathBuf> {
    if !valid_arch(arch) {
        return None;
    }
    let dir = agent_dir(state)?;
    let named = dir.join(format!("vitals-agent-linux-{arch}"));
    if named.is_file() {
        return Some(named);
    }
    let own = dir.join("vitals-agent");
    (arch == std::env::consts::ARCH && own.is_file()).then_some(own)
}

fn no_binary(arch: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "this hub carries no agent for {arch}; build one with `cargo build -p vitals-agent \
             --profile agent` and place it next to vitals-hub as vitals-agent-linux-{arch}"
        ),
    )
}

/// `GET /install.sh`.
pub async fn install_sh(State(state): State<AppState>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/x-shellscript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        vitals_agent::install_script::install_script(&state.public_url),
    )
        .into_response()
}

/// `GET /downloads/{file}`: `vitals-agent-linux-<arch>` or `vitals-agent-linux-<arch>.sha256`.
pub async fn download(
    State(state): State<AppState>,
    Path(file): Path<String>,
) -> ApiResult<Response> {
    let (name, sum) = match file.strip_suffix(".sha256") {
        Some(n) => (n, true),
        None => (file.as_str(), false),
    };
    let Some(arch) = name.strip_prefix("vitals-agent-linux-") else {
        return Err(ApiError::not_found("download"));
    };
    let path = binary_path(&state, arch).ok_or_else(|| no_binary(arch))?;
    let bytes = tokio::fs::read(&path).await.map_err(ApiError::internal)?;
    if sum {
        let hex = hex_sha256(&bytes);
        return Ok(format!("{hex}  vitals-agent-linux-{arch}\n").into_response());
    }
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        bytes,
    )
        .into_response())
}

fn hex_sha256(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// `GET /api/agent/release`: the agent version this hub carries, as a GitHub release.
pub async fn release(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> ApiResult<impl IntoResponse> {
    match principal_from_headers(&state, &headers).await? {
        Some(Principal::Device(_) | Principal::User(_)) => {}
        None => return Err(ApiError::unauthorized()),
    }
    let mut assets = Vec::new();
    for arch in ["x86_64", "aarch64", "armv7l", "riscv64"] {
        if let Some(path) = binary_path(&state, arch)
            && let Ok(bytes) = tokio::fs::read(&path).await
        {
            assets.push(json!({
                "name": format!("vitals-agent-linux-{arch}"),
                "browser_download_url": format!("{}/downloads/vitals-agent-linux-{arch}", state.public_url),
                "digest": format!("sha256:{}", hex_sha256(&bytes)),
                "size": bytes.len(),
            }));
        }
    }
    Ok(ApiJson(json!({
        "tag_name": format!("v{}", env!("CARGO_PKG_VERSION")),
        "name": format!("Vitals agent {}", env!("CARGO_PKG_VERSION")),
        "draft": false,
        "prerelease": false,
        "assets": assets,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_names_cannot_escape_the_folder() {
        assert!(valid_arch("x86_64"));
        assert!(!valid_arch("../etc"));
        assert!(!valid_arch("x86/64"));
        assert!(!valid_arch(""));
    }
}
