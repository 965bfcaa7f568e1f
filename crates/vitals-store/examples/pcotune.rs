//! Compression level and delta choices of pco on a database's raw blocks: bytes and encode
//! time per setting. `cargo run --release -p vitals-store --example pcotune -- PATH/vitals.db`.

use std::time::Instant;

use vitals_store::codec::all_integers;
use vitals_store::{SeriesFilter, block};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: pcotune PATH/vitals.db")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let blocks: Vec<Vec<u8>> = rt.block_on(async {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{path}?mode=ro")).await?;
        sqlx::query_scalar("SELECT data FROM sample_blocks LIMIT 200")
            .fetch_all(&pool)
            .await
    })?;
    let frames: Vec<_> = blocks
        .iter()
        .map(|b| block::decode(b, &SeriesFilter::all()))
        .collect::<Result<_, _>>()?;
    let values: usize = frames.iter().map(|f| f.len() * f.series.len()).sum();
    for level in [0usize, 2, 4, 6, 8] {
        for (dname, delta) in [
            ("auto", Some(pco::DeltaSpec::Auto)),
            ("guess", None),
            ("consec1", Some(pco::DeltaSpec::TryConsecutive(1))),
        ] {
            let t = Instant::now();
            let mut bytes = 0usize;
            for f in &frames {
                for col in f.series.values() {
                    let cfg = pco::ChunkConfig::default()
                        .with_compression_level(level)
                        .with_delta_spec(
                            delta
                                .clone()
                                .unwrap_or_else(|| vitals_store::codec::guess_delta(col)),
                        );
                    bytes += if all_integers(col) {
                        let ints: Vec<i64> = col.iter().map(|v| *v as i64).collect();
                        pco::standalone::simple_compress(&ints, &cfg)?.len()
                    } else {
                        pco::standalone::simple_compress(col, &cfg)?.len()
                    };
                }
            }
            let dt = t.elapsed();
            println!(
                "level {level:>2} {dname:>8}: {:.3} B/value, {:.0} ns/value",
                bytes as f64 / values as f64,
                dt.as_nanos() as f64 / values as f64
            );
        }
    }
    Ok(())
}
