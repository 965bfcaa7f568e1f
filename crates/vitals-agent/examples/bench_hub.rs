//! A stand-in hub for benchmarking the agent: the integration tests' fake hub (acks every
//! batch, stores nothing on disk) on a fixed loopback port, printing what it received every
//! 10 s. `cargo run --example bench_hub -- 127.0.0.1:18080` (the port is optional).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut hub = common::FakeHub::start().await;
    if let Some(addr) = std::env::args().nth(1) {
        hub.down().await;
        hub.addr = match addr.parse() {
            Ok(a) => a,
            Err(e) => {
                eprintln!("bad address {addr}: {e}");
                std::process::exit(2);
            }
        };
        hub.up().await;
    }
    println!("{}", hub.url());
    println!("token: {}", common::TOKEN);
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        eprintln!(
            "stored {} samples, received {}, connections {}",
            hub.stored().len(),
            hub.received(),
            hub.connections()
        );
    }
}
