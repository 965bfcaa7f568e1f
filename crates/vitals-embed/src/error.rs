//! The errors the dashboard reports to the application embedding it.

use std::net::SocketAddr;

/// What went wrong while configuring or running the dashboard.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is out of range; the message names the field.
    #[error("invalid dashboard config: {0}")]
    Config(String),
    /// The listening socket could not be opened (port in use, no permission, ...).
    #[error("dashboard cannot listen on {addr}: {source}")]
    Bind {
        /// The address that was asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The HTTP server stopped with an I/O error.
    #[error("dashboard server failed: {0}")]
    Serve(#[source] std::io::Error),
    /// [`crate::Dashboard::spawn`] was called outside a tokio runtime.
    #[error("dashboard spawn needs a tokio runtime: call it from inside one")]
    NoRuntime,
}

/// `Result` with the dashboard's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
