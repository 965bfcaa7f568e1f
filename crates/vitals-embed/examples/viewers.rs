//! Load generator for the viewers benchmark: holds N WebSocket viewers on a dashboard's `/ws`
//! for a while and reports how many snapshots they received.
//!
//! ```text
//! cargo run --release -p vitals-embed --example viewers -- --url ws://127.0.0.1:8080/ws --viewers 100 --seconds 60
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser, Debug)]
struct Args {
    /// The dashboard's WebSocket URL.
    #[arg(long)]
    url: String,
    /// How many viewers to hold open.
    #[arg(long, default_value_t = 100)]
    viewers: usize,
    /// How long to hold them, in seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let frames = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let mut sockets = Vec::with_capacity(args.viewers);
    for _ in 0..args.viewers {
        let (ws, _) = tokio_tungstenite::connect_async(args.url.as_str()).await?;
        sockets.push(ws);
    }
    // Tell the caller that every viewer is connected: the measurement window starts now.
    println!("connected {} viewers", args.viewers);
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for mut ws in sockets {
        let (frames, bytes) = (frames.clone(), bytes.clone());
        tasks.push(tokio::spawn(async move {
            while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, ws.next()).await {
                if let Message::Text(t) = msg {
                    frames.fetch_add(1, Relaxed);
                    bytes.fetch_add(t.len() as u64, Relaxed);
                }
            }
            let _ = ws.close(None).await;
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = start.elapsed().as_secs_f64();
    let n = frames.load(Relaxed);
    println!(
        "viewers={} seconds={secs:.1} frames={n} frames_per_viewer_per_sec={:.2} avg_frame_bytes={}",
        args.viewers,
        n as f64 / args.viewers.max(1) as f64 / secs,
        bytes.load(Relaxed).checked_div(n).unwrap_or(0),
    );
    Ok(())
}
